//! The transfer state machine (移送流程), as a plain transition table.
//!
//! ```text
//! DRAFT ──submit──► AWAITING_APPROVAL ──approve (last step)──► APPROVED ──delivered──► DELIVERED
//!   ▲                    │ reject                                  │                     │
//!   └────────────────────┘                                         ├──accept────────────►├──► IN_PROGRESS
//!                                                                  ├──decline───────────►├──► DECLINED
//!  DRAFT / AWAITING_APPROVAL / APPROVED / DELIVERED ──withdraw──► WITHDRAWN
//!  APPROVED / DELIVERED ──acceptance clock expires──► EXPIRED (return) | ESCALATED (escalate)
//!  IN_PROGRESS ──feedback clock expires──► EXPIRED (return) | ESCALATED (escalate)
//!  DELIVERED / IN_PROGRESS ──named clock expires──► EXPIRED (return) | ESCALATED (escalate)
//!  IN_PROGRESS ──complete a named clock──► IN_PROGRESS
//!  IN_PROGRESS ──feedback──► FEEDBACK_SUBMITTED ──acknowledge──► CLOSED
//!  IN_PROGRESS ──return──► RETURNED        IN_PROGRESS ──escalate (人民调解法 Art 25)──► ESCALATED
//! ```
//!
//! A clock whose route says `notify_only` changes no state when it expires: the transfer is
//! marked overdue and both sides are told.
//!
//! Clock operations, investigations and non-final approvals do not change the state but are
//! only allowed in certain states; they are in the table too. Who may act (sender, approver,
//! receiver) is part of each action.

use fengqiao_proto::router::TransferState as S;

/// Which side of a transfer may take an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The sending agency (移送单位).
    Sender,
    /// An approver of the current step (审核 / 审批).
    Approver,
    /// The receiving agency (接收单位).
    Receiver,
    /// The router itself (clocks, delivery).
    System,
}

/// Everything that can happen to a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Edit a draft.
    Update,
    /// Submit a draft for approval (`last` = the route has no steps).
    Submit {
        /// Whether the route has no approval steps, so submission approves at once.
        no_steps: bool,
    },
    /// Approve the current step (`last` = it is the final step).
    Approve {
        /// Whether this is the route's last step.
        last: bool,
    },
    /// Send back to the author.
    Reject,
    /// Withdraw before acceptance.
    Withdraw,
    /// The offer reached the receiver.
    Delivered,
    /// Accept and start work.
    Accept,
    /// Decline with a reason.
    Decline,
    /// Pause, resume or extend a clock.
    Clock,
    /// Record that a named clock's milestone was met (`CompleteClock`), e.g. the parties
    /// contacted (在线调解规则 Art 15).
    CompleteClock,
    /// Ask the sender for supplementary investigation.
    RequestInvestigation,
    /// Answer an investigation request.
    AnswerInvestigation,
    /// Submit the outcome.
    SubmitFeedback,
    /// Confirm the feedback: the loop is closed.
    AcknowledgeFeedback,
    /// Return the accepted case to the sender.
    Return,
    /// Escalate the accepted case to the sender.
    Escalate,
    /// A clock expired (acceptance before acceptance, feedback after) and the route says
    /// return to sender.
    ExpireReturn,
    /// A clock expired and the route says escalate.
    ExpireEscalate,
}

impl Action {
    /// Who may take this action.
    pub fn party(self) -> Party {
        match self {
            Action::Update
            | Action::Submit { .. }
            | Action::Withdraw
            | Action::AnswerInvestigation
            | Action::AcknowledgeFeedback => Party::Sender,
            Action::Approve { .. } | Action::Reject => Party::Approver,
            Action::Accept
            | Action::Decline
            | Action::Clock
            | Action::CompleteClock
            | Action::RequestInvestigation
            | Action::SubmitFeedback
            | Action::Return
            | Action::Escalate => Party::Receiver,
            Action::Delivered | Action::ExpireReturn | Action::ExpireEscalate => Party::System,
        }
    }

    /// A short verb for messages and audit records.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Update => "update",
            Action::Submit { .. } => "submit",
            Action::Approve { .. } => "approve",
            Action::Reject => "reject",
            Action::Withdraw => "withdraw",
            Action::Delivered => "mark delivered",
            Action::Accept => "accept",
            Action::Decline => "decline",
            Action::Clock => "change a clock of",
            Action::CompleteClock => "complete a clock of",
            Action::RequestInvestigation => "request investigation on",
            Action::AnswerInvestigation => "answer investigation on",
            Action::SubmitFeedback => "submit feedback on",
            Action::AcknowledgeFeedback => "acknowledge feedback on",
            Action::Return => "return",
            Action::Escalate => "escalate",
            Action::ExpireReturn | Action::ExpireEscalate => "expire",
        }
    }
}

/// The state after `action` in `state`, or `None` when the action is not allowed there.
pub fn next(state: S, action: Action) -> Option<S> {
    use Action as A;
    Some(match (state, action) {
        (S::Draft, A::Update) => S::Draft,
        (S::Draft, A::Submit { no_steps: false }) => S::AwaitingApproval,
        (S::Draft, A::Submit { no_steps: true }) => S::Approved,
        (S::AwaitingApproval, A::Approve { last: false }) => S::AwaitingApproval,
        (S::AwaitingApproval, A::Approve { last: true }) => S::Approved,
        (S::AwaitingApproval, A::Reject) => S::Draft,
        (S::Draft | S::AwaitingApproval | S::Approved | S::Delivered, A::Withdraw) => S::Withdrawn,
        (S::Approved, A::Delivered) => S::Delivered,
        (S::Approved | S::Delivered, A::Accept) => S::InProgress,
        (S::Approved | S::Delivered, A::Decline) => S::Declined,
        (S::Approved | S::Delivered, A::ExpireReturn) => S::Expired,
        (S::Approved | S::Delivered, A::ExpireEscalate) => S::Escalated,
        (S::InProgress, A::Clock) => S::InProgress,
        // 在线调解规则 Art 15: the milestone (e.g. contacting the parties) is met while the
        // receiver works on the case.
        (S::InProgress, A::CompleteClock) => S::InProgress,
        (S::InProgress, A::RequestInvestigation) => S::InProgress,
        (S::InProgress, A::AnswerInvestigation) => S::InProgress,
        (S::InProgress, A::SubmitFeedback) => S::FeedbackSubmitted,
        (S::FeedbackSubmitted, A::AcknowledgeFeedback) => S::Closed,
        (S::InProgress, A::Return) => S::Returned,
        (S::InProgress, A::Escalate) => S::Escalated,
        // 特邀调解规定 Art 21: the feedback clock ran out; the materials go back to the sender.
        (S::InProgress, A::ExpireReturn) => S::Expired,
        (S::InProgress, A::ExpireEscalate) => S::Escalated,
        _ => return None,
    })
}

/// Whether no action can leave `state`.
pub fn is_terminal(state: S) -> bool {
    matches!(
        state,
        S::Declined | S::Closed | S::Withdrawn | S::Expired | S::Returned | S::Escalated
    )
}

/// The upper-snake name of a state without its prefix, e.g. `IN_PROGRESS`.
pub fn state_name(state: S) -> &'static str {
    state
        .as_str_name()
        .strip_prefix("TRANSFER_STATE_")
        .unwrap_or("UNSPECIFIED")
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;

    const ALL_STATES: [S; 12] = [
        S::Draft,
        S::AwaitingApproval,
        S::Approved,
        S::Delivered,
        S::Declined,
        S::InProgress,
        S::FeedbackSubmitted,
        S::Closed,
        S::Withdrawn,
        S::Expired,
        S::Returned,
        S::Escalated,
    ];

    const ALL_ACTIONS: [Action; 20] = [
        A::Update,
        A::Submit { no_steps: false },
        A::Submit { no_steps: true },
        A::Approve { last: false },
        A::Approve { last: true },
        A::Reject,
        A::Withdraw,
        A::Delivered,
        A::Accept,
        A::Decline,
        A::Clock,
        A::CompleteClock,
        A::RequestInvestigation,
        A::AnswerInvestigation,
        A::SubmitFeedback,
        A::AcknowledgeFeedback,
        A::Return,
        A::Escalate,
        A::ExpireReturn,
        A::ExpireEscalate,
    ];

    /// Every allowed transition, and nothing else: each (state, action) pair not listed here
    /// must be refused.
    const ALLOWED: &[(S, Action, S)] = &[
        (S::Draft, A::Update, S::Draft),
        (S::Draft, A::Submit { no_steps: false }, S::AwaitingApproval),
        (S::Draft, A::Submit { no_steps: true }, S::Approved),
        (S::Draft, A::Withdraw, S::Withdrawn),
        (
            S::AwaitingApproval,
            A::Approve { last: false },
            S::AwaitingApproval,
        ),
        (S::AwaitingApproval, A::Approve { last: true }, S::Approved),
        (S::AwaitingApproval, A::Reject, S::Draft),
        (S::AwaitingApproval, A::Withdraw, S::Withdrawn),
        (S::Approved, A::Delivered, S::Delivered),
        (S::Approved, A::Withdraw, S::Withdrawn),
        (S::Approved, A::Accept, S::InProgress),
        (S::Approved, A::Decline, S::Declined),
        (S::Approved, A::ExpireReturn, S::Expired),
        (S::Approved, A::ExpireEscalate, S::Escalated),
        (S::Delivered, A::Withdraw, S::Withdrawn),
        (S::Delivered, A::Accept, S::InProgress),
        (S::Delivered, A::Decline, S::Declined),
        (S::Delivered, A::ExpireReturn, S::Expired),
        (S::Delivered, A::ExpireEscalate, S::Escalated),
        (S::InProgress, A::Clock, S::InProgress),
        // 在线调解规则 Art 15: a named clock is completed while the case is in progress.
        (S::InProgress, A::CompleteClock, S::InProgress),
        (S::InProgress, A::RequestInvestigation, S::InProgress),
        (S::InProgress, A::AnswerInvestigation, S::InProgress),
        (S::InProgress, A::SubmitFeedback, S::FeedbackSubmitted),
        // 人民调解法 Art 25: a dispute that may intensify is reported back at once.
        (S::InProgress, A::Escalate, S::Escalated),
        // 特邀调解规定 Art 21: a failed delegated mediation goes back with its materials.
        (S::InProgress, A::Return, S::Returned),
        // 特邀调解规定 Art 21: the feedback clock's expiry action is carried out too.
        (S::InProgress, A::ExpireReturn, S::Expired),
        (S::InProgress, A::ExpireEscalate, S::Escalated),
        (S::FeedbackSubmitted, A::AcknowledgeFeedback, S::Closed),
    ];

    #[test]
    fn every_state_action_pair_is_allowed_or_refused_as_the_table_says() {
        fengqiao_kit::lifecycle::assert_table(&ALL_STATES, &ALL_ACTIONS, ALLOWED, next);
    }

    #[test]
    fn terminal_states_refuse_everything() {
        for &s in ALL_STATES.iter().filter(|s| is_terminal(**s)) {
            for &a in &ALL_ACTIONS {
                assert_eq!(next(s, a), None, "{s:?} is terminal but allows {a:?}");
            }
        }
    }

    #[test]
    fn withdrawal_only_before_acceptance() {
        for &s in &ALL_STATES {
            let ok = next(s, A::Withdraw).is_some();
            let before = matches!(
                s,
                S::Draft | S::AwaitingApproval | S::Approved | S::Delivered
            );
            assert_eq!(ok, before, "{s:?}");
        }
    }

    #[test]
    fn parties() {
        assert_eq!(A::Submit { no_steps: false }.party(), Party::Sender);
        assert_eq!(A::Approve { last: true }.party(), Party::Approver);
        assert_eq!(A::Reject.party(), Party::Approver);
        assert_eq!(A::Accept.party(), Party::Receiver);
        assert_eq!(A::SubmitFeedback.party(), Party::Receiver);
        assert_eq!(A::CompleteClock.party(), Party::Receiver);
        assert_eq!(A::AcknowledgeFeedback.party(), Party::Sender);
        assert_eq!(A::AnswerInvestigation.party(), Party::Sender);
        assert_eq!(A::ExpireReturn.party(), Party::System);
        assert_eq!(state_name(S::InProgress), "IN_PROGRESS");
    }

    #[test]
    fn every_clock_expiry_action_has_a_transition_where_its_clock_runs() {
        // The acceptance clock runs while APPROVED / DELIVERED, the feedback clock while
        // IN_PROGRESS: both expiry actions that change the state must be carried out there.
        for s in [S::Approved, S::Delivered, S::InProgress] {
            assert_eq!(next(s, A::ExpireReturn), Some(S::Expired), "{s:?}");
            assert_eq!(next(s, A::ExpireEscalate), Some(S::Escalated), "{s:?}");
        }
        // Once the feedback is in, no clock runs and nothing expires.
        for s in [S::FeedbackSubmitted, S::Draft, S::AwaitingApproval] {
            assert_eq!(next(s, A::ExpireReturn), None, "{s:?}");
            assert_eq!(next(s, A::ExpireEscalate), None, "{s:?}");
        }
    }
}
