//! The application's state machine (司法确认程序), as a plain transition table.
//!
//! ```text
//! RECEIVED ──accept (2011 rules Art 4)──► UNDER_REVIEW ──rule: confirmed (CPL Art 206)──► CONFIRMED
//!    │  └─not accepted (民诉法解释 Art 355)──► NOT_ACCEPTED      └─rule: dismissed (Art 358)──► DISMISSED
//!    └────────── withdraw before the ruling (2011 rules Art 6 / 民诉法解释 Art 356) ──► WITHDRAWN
//! RECEIVED / UNDER_REVIEW: supplementary materials requested / received (clock pause, same state)
//! UNDER_REVIEW: review extended with the president's approval (2011 rules Art 5, same state)
//! CONFIRMED / DISMISSED: objection (民诉法解释 Art 372), enforcement handoff (CONFIRMED only)
//! ```
//!
//! Deadline notifications (the acceptance and review clocks are notify-only) do not change
//! the state and are allowed only where their clock runs; they are in the table too.

use fengqiao_proto::judicialconfirmation::ApplicationState as S;

/// Who takes an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The court (clerk, judge, president).
    Court,
    /// The parties, through the mediation committee and the router.
    Parties,
    /// A deadline of the application (the service's system actor).
    System,
}

/// Everything that can happen to an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The court accepts the application with its 调确 number (2011 rules Art 4).
    Accept,
    /// The court does not accept it, on a ground of 民诉法解释 Art 355.
    Reject,
    /// The court asks for supplementary materials; the running clock pauses.
    RequestSupplement,
    /// The materials arrived; the clock resumes.
    ReceiveSupplement,
    /// The president extends the review by up to 10 days (2011 rules Art 5).
    ExtendReview,
    /// The court confirms the agreement valid (CPL Art 206).
    Confirm,
    /// The court dismisses the application (民诉法解释 Art 358).
    Dismiss,
    /// The parties withdraw before the ruling.
    Withdraw,
    /// A party or an interested person objects to the ruling (民诉法解释 Art 372).
    Object,
    /// A confirmed agreement is handed on for enforcement (申请执行, CPL Art 206 ¶2).
    HandOffForEnforcement,
    /// A non-confirmation is reported to the justice bureau and the committee
    /// (法释〔2011〕5号 Art 12).
    ReportNonConfirmation,
    /// The 3-day acceptance decision is overdue (notification only).
    AcceptanceOverdue,
    /// The review decision is overdue (notification only).
    ReviewOverdue,
}

impl Action {
    /// Who takes this action.
    pub fn side(self) -> Side {
        match self {
            Action::Accept
            | Action::Reject
            | Action::RequestSupplement
            | Action::ReceiveSupplement
            | Action::ExtendReview
            | Action::Confirm
            | Action::Dismiss
            | Action::ReportNonConfirmation => Side::Court,
            Action::Withdraw | Action::Object | Action::HandOffForEnforcement => Side::Parties,
            Action::AcceptanceOverdue | Action::ReviewOverdue => Side::System,
        }
    }

    /// A short verb for messages (`Error::WrongState.action`).
    pub fn verb(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Reject => "refuse to accept",
            Action::RequestSupplement => "request supplementary materials for",
            Action::ReceiveSupplement => "record supplementary materials for",
            Action::ExtendReview => "extend the review of",
            Action::Confirm | Action::Dismiss => "rule on",
            Action::Withdraw => "withdraw",
            Action::Object => "object to the ruling on",
            Action::HandOffForEnforcement => "hand on for enforcement",
            Action::ReportNonConfirmation => "report the non-confirmation of",
            Action::AcceptanceOverdue => "mark acceptance overdue on",
            Action::ReviewOverdue => "mark review overdue on",
        }
    }
}

/// The state after `action` in `state`, or `None` when the action is not allowed there.
pub fn next(state: S, action: Action) -> Option<S> {
    use Action as A;
    Some(match (state, action) {
        // 法释〔2011〕5号 Art 4: accept or not within 3 days of receipt.
        (S::Received, A::Accept) => S::UnderReview,
        // 民诉法解释 Art 355: not accepted on an enumerated ground.
        (S::Received, A::Reject) => S::NotAccepted,
        (S::Received, A::AcceptanceOverdue) => S::Received,
        // 法释〔2011〕5号 Art 6: supplementary statements or materials; the clock pauses.
        (S::Received | S::UnderReview, A::RequestSupplement | A::ReceiveSupplement) => state,
        // 法释〔2011〕5号 Art 5: +10 days with the president's approval.
        (S::UnderReview, A::ExtendReview | A::ReviewOverdue) => S::UnderReview,
        // 民事诉讼法 Art 206 / 民诉法解释 Art 358: the ruling.
        (S::UnderReview, A::Confirm) => S::Confirmed,
        (S::UnderReview, A::Dismiss) => S::Dismissed,
        // Withdrawal before the ruling (民诉法解释 Art 356 ¶2; 法释〔2011〕5号 Art 6).
        (S::Received | S::UnderReview, A::Withdraw) => S::Withdrawn,
        // 民诉法解释 Art 372: objections to a ruling either way.
        (S::Confirmed | S::Dismissed, A::Object) => state,
        // 民事诉讼法 Art 206 ¶1: a confirmed agreement may be enforced on application.
        (S::Confirmed, A::HandOffForEnforcement) => S::Confirmed,
        // 法释〔2011〕5号 Art 12: not accepted or dismissed, reported to the justice bureau and
        // the committee.
        (S::NotAccepted | S::Dismissed, A::ReportNonConfirmation) => state,
        _ => return None,
    })
}

/// Whether no state change can follow (objections and handoffs leave the state unchanged).
pub fn is_final(state: S) -> bool {
    matches!(
        state,
        S::NotAccepted | S::Confirmed | S::Dismissed | S::Withdrawn
    )
}

/// The upper-snake name of a state without its prefix, e.g. `UNDER_REVIEW`.
pub fn state_name(state: S) -> &'static str {
    state
        .as_str_name()
        .strip_prefix("APPLICATION_STATE_")
        .unwrap_or("UNSPECIFIED")
}

/// Every state, `UNSPECIFIED` first.
pub const ALL_STATES: [S; 7] = [
    S::Unspecified,
    S::Received,
    S::UnderReview,
    S::NotAccepted,
    S::Confirmed,
    S::Dismissed,
    S::Withdrawn,
];

/// Every action.
pub const ALL_ACTIONS: [Action; 13] = [
    Action::Accept,
    Action::Reject,
    Action::RequestSupplement,
    Action::ReceiveSupplement,
    Action::ExtendReview,
    Action::Confirm,
    Action::Dismiss,
    Action::Withdraw,
    Action::Object,
    Action::HandOffForEnforcement,
    Action::ReportNonConfirmation,
    Action::AcceptanceOverdue,
    Action::ReviewOverdue,
];

/// `next`, or the kit's `WrongState` naming the resource, its state and the action.
pub fn require(resource: &str, state: S, action: Action) -> Result<S, fengqiao_kit::Error> {
    fengqiao_kit::lifecycle::require(
        resource,
        next(state, action),
        state.as_str_name(),
        action.verb(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;

    /// Every allowed transition, and nothing else: each (state, action) pair not listed here
    /// must be refused.
    const ALLOWED: &[(S, Action, S)] = &[
        (S::Received, A::Accept, S::UnderReview),
        (S::Received, A::Reject, S::NotAccepted),
        (S::Received, A::AcceptanceOverdue, S::Received),
        (S::Received, A::RequestSupplement, S::Received),
        (S::Received, A::ReceiveSupplement, S::Received),
        (S::Received, A::Withdraw, S::Withdrawn),
        (S::UnderReview, A::RequestSupplement, S::UnderReview),
        (S::UnderReview, A::ReceiveSupplement, S::UnderReview),
        (S::UnderReview, A::ExtendReview, S::UnderReview),
        (S::UnderReview, A::ReviewOverdue, S::UnderReview),
        (S::UnderReview, A::Confirm, S::Confirmed),
        (S::UnderReview, A::Dismiss, S::Dismissed),
        (S::UnderReview, A::Withdraw, S::Withdrawn),
        (S::Confirmed, A::Object, S::Confirmed),
        (S::Confirmed, A::HandOffForEnforcement, S::Confirmed),
        (S::Dismissed, A::Object, S::Dismissed),
        (S::NotAccepted, A::ReportNonConfirmation, S::NotAccepted),
        (S::Dismissed, A::ReportNonConfirmation, S::Dismissed),
    ];

    #[test]
    fn every_state_action_pair_is_allowed_or_refused_as_the_table_says() {
        fengqiao_kit::lifecycle::assert_table(&ALL_STATES, &ALL_ACTIONS, ALLOWED, next);
    }

    #[test]
    fn refused_transitions_name_the_state_enum_value_and_the_action() {
        match require("applications/a", S::Confirmed, A::Withdraw) {
            Err(fengqiao_kit::Error::WrongState {
                resource,
                state,
                action,
            }) => {
                assert_eq!(resource, "applications/a");
                assert_eq!(state, "APPLICATION_STATE_CONFIRMED");
                assert_eq!(action, "withdraw");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            require("applications/a", S::Received, A::Accept).ok(),
            Some(S::UnderReview)
        );
    }

    #[test]
    fn final_states_leave_only_objections_and_handoffs() {
        for &s in &ALL_STATES {
            for &a in &ALL_ACTIONS {
                if is_final(s)
                    && let Some(to) = next(s, a)
                {
                    assert_eq!(to, s, "{s:?} + {a:?} leaves a final state");
                    assert!(matches!(
                        a,
                        A::Object | A::HandOffForEnforcement | A::ReportNonConfirmation
                    ));
                }
            }
        }
        assert_eq!(state_name(S::UnderReview), "UNDER_REVIEW");
        assert_eq!(state_name(S::Unspecified), "UNSPECIFIED");
    }

    #[test]
    fn sides_and_verbs_are_defined_for_every_action() {
        for &a in &ALL_ACTIONS {
            assert!(!a.verb().is_empty());
            let _ = a.side();
        }
        assert_eq!(A::Withdraw.side(), Side::Parties);
        assert_eq!(A::ReviewOverdue.side(), Side::System);
        assert_eq!(A::ExtendReview.side(), Side::Court);
        assert_eq!(A::ReportNonConfirmation.side(), Side::Court);
        // The lifecycle and the Art 12 rule agree on what is reportable.
        for &s in &ALL_STATES {
            assert_eq!(
                next(s, A::ReportNonConfirmation).is_some(),
                crate::rules::report_non_confirmation(s),
                "{s:?}"
            );
        }
    }
}
