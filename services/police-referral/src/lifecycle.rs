//! The referral lifecycle as a transition table: which of the police's own actions each state
//! allows and where it leads. Changes that follow the router's transfer are in
//! [`crate::reconcile`]; handlers ask [`decide`] and never check states themselves.
//!
//! ```text
//! intake ─► PENDING_REVIEW | READY_TO_TRANSFER | POLICE_MATTER   (by screening)
//!   override screening: any of those, RETURNED or WITHDRAWN ─► by the new result
//!   draft transfer:     READY_TO_TRANSFER | RETURNED | WITHDRAWN ─► TRANSFER_PENDING
//!   (router) ─► TRANSFERRED ─► FEEDBACK_RECEIVED
//!   acknowledge feedback: FEEDBACK_RECEIVED ─► CLOSED
//! ```

use fengqiao_proto::policereferral::{ReferralState as R, ScreeningResult};

use crate::state_for_screening;

/// An action the police service takes on a referral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A reviewer overrides the screening result (治安调解 screening, 公安机关治安调解工作规范
    /// Art 4: only civil disputes go to people's mediation).
    OverrideScreening(ScreeningResult),
    /// The handling station drafts (and submits) the transfer to people's mediation.
    DraftTransfer,
    /// The handling station acknowledges the mediation feedback and reports it back to the
    /// 110 command room (closing the loop, 警调对接).
    AcknowledgeFeedback,
}

impl Action {
    /// The action's name in messages (`… cannot {name}`).
    pub fn name(self) -> &'static str {
        match self {
            Action::OverrideScreening(_) => "override screening",
            Action::DraftTransfer => "draft a transfer",
            Action::AcknowledgeFeedback => "acknowledge feedback",
        }
    }
}

/// What the table says about an action in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed: the referral moves to this state.
    To(R),
    /// The state is the one this action leads to: the call may be the same call retried after
    /// its local commit was lost and the router's messages brought the referral in step, so
    /// the router decides (the same derived request id replays its first answer; a new call is
    /// refused by it).
    MaybeRetried,
    /// Refused: WRONG_STATE.
    Refused,
}

/// The transition table.
pub fn decide(state: R, action: Action) -> Decision {
    use Decision::*;
    match (action, state) {
        // Before a transfer is drafted, or after it came back.
        (
            Action::OverrideScreening(result),
            R::PendingReview | R::ReadyToTransfer | R::PoliceMatter | R::Returned | R::Withdrawn,
        ) => To(state_for_screening(result)),
        // 公安机关治安调解工作规范 Art 4: a civil dispute, not yet out or back again.
        (Action::DraftTransfer, R::ReadyToTransfer | R::Returned | R::Withdrawn) => {
            To(R::TransferPending)
        }
        (Action::DraftTransfer, R::TransferPending | R::Transferred) => MaybeRetried,
        (Action::AcknowledgeFeedback, R::FeedbackReceived) => To(R::Closed),
        (Action::AcknowledgeFeedback, R::Closed) => MaybeRetried,
        _ => Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    const STATES: [R; 10] = [
        R::Unspecified,
        R::PendingReview,
        R::ReadyToTransfer,
        R::PoliceMatter,
        R::TransferPending,
        R::Transferred,
        R::FeedbackReceived,
        R::Closed,
        R::Returned,
        R::Withdrawn,
    ];

    /// Every (state, action) pair, the refused ones included.
    #[test]
    fn the_table() {
        let civil = Action::OverrideScreening(ScreeningResult::CivilDispute);
        let criminal = Action::OverrideScreening(ScreeningResult::Criminal);
        let review = Action::OverrideScreening(ScreeningResult::NeedsReview);
        #[rustfmt::skip]
        let want: [(R, [Decision; 5]); 10] = [
            //                      civil                   criminal             needs review          draft                   acknowledge
            (R::Unspecified,      [Refused,               Refused,              Refused,              Refused,                Refused]),
            (R::PendingReview,    [To(R::ReadyToTransfer), To(R::PoliceMatter), To(R::PendingReview), Refused,                Refused]),
            (R::ReadyToTransfer,  [To(R::ReadyToTransfer), To(R::PoliceMatter), To(R::PendingReview), To(R::TransferPending), Refused]),
            (R::PoliceMatter,     [To(R::ReadyToTransfer), To(R::PoliceMatter), To(R::PendingReview), Refused,                Refused]),
            (R::TransferPending,  [Refused,               Refused,              Refused,              MaybeRetried,           Refused]),
            (R::Transferred,      [Refused,               Refused,              Refused,              MaybeRetried,           Refused]),
            (R::FeedbackReceived, [Refused,               Refused,              Refused,              Refused,                To(R::Closed)]),
            (R::Closed,           [Refused,               Refused,              Refused,              Refused,                MaybeRetried]),
            (R::Returned,         [To(R::ReadyToTransfer), To(R::PoliceMatter), To(R::PendingReview), To(R::TransferPending), Refused]),
            (R::Withdrawn,        [To(R::ReadyToTransfer), To(R::PoliceMatter), To(R::PendingReview), To(R::TransferPending), Refused]),
        ];
        assert_eq!(want.map(|(s, _)| s), STATES, "every state has a row");
        for (state, row) in want {
            let actions = [
                civil,
                criminal,
                review,
                Action::DraftTransfer,
                Action::AcknowledgeFeedback,
            ];
            for (action, expected) in actions.into_iter().zip(row) {
                assert_eq!(decide(state, action), expected, "{state:?} {action:?}");
            }
        }
    }

    /// A reference model: the states the police's own actions may start from, and that an
    /// allowed action never lands in a state the router owns (transferred, feedback) except
    /// through the transfer it drafts.
    #[test]
    fn allowed_actions_never_jump_into_router_owned_states() {
        let results = [
            ScreeningResult::Unspecified,
            ScreeningResult::CivilDispute,
            ScreeningResult::PublicSecurity,
            ScreeningResult::Criminal,
            ScreeningResult::NeedsReview,
        ];
        let mut actions: Vec<Action> = results
            .iter()
            .map(|&r| Action::OverrideScreening(r))
            .collect();
        actions.extend([Action::DraftTransfer, Action::AcknowledgeFeedback]);
        for state in STATES {
            for &action in &actions {
                if let To(next) = decide(state, action) {
                    assert!(
                        !matches!(next, R::Transferred | R::FeedbackReceived | R::Unspecified),
                        "{state:?} {action:?} → {next:?}"
                    );
                    if crate::reconcile::is_bound(state) {
                        // Only acknowledging closes a referral that follows its transfer.
                        assert_eq!((action, next), (Action::AcknowledgeFeedback, R::Closed));
                    }
                }
            }
        }
    }
}
