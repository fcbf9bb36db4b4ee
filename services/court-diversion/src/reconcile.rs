//! From router messages to the court's case (one truth, issue #9): the router is the source of
//! truth of each delegation's transfer, and the case follows it. Pure: given the case's state
//! and what the router's transfer shows, the next lifecycle action, applied one at a time
//! until none follows (so a message that skipped steps, e.g. feedback arriving before the
//! acceptance was seen, still walks the table).

use fengqiao_proto::common::ClockState;
use fengqiao_proto::courtdiversion::{EndReason, PreFilingCaseState as S};
use fengqiao_proto::router::{Transfer, TransferState};

use crate::lifecycle::Action;
use crate::rules::{self, RedesignationPolicy};

/// Name of the route's named clock for contacting the parties (在线调解规则 Art 15).
pub const CONTACT_CLOCK: &str = "contact_parties";

/// What the court needs to know of a delegation's transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferView {
    /// The transfer's state.
    pub state: TransferState,
    /// Whether the organisation accepted (the feedback clock started).
    pub accepted: bool,
    /// Whether the contact milestone was recorded (the named clock completed in time).
    pub contacted: bool,
    /// Whether the contact clock expired (在线调解规则 Art 15).
    pub contact_expired: bool,
    /// The ending reason of submitted feedback, if any.
    pub outcome: Option<EndReason>,
}

fn started(c: Option<&ClockState>) -> bool {
    c.is_some_and(|c| c.started_at.is_some())
}

impl TransferView {
    /// The view of a transfer as the router sent it to the court.
    pub fn of(t: &Transfer) -> Self {
        let contact = t
            .clocks
            .iter()
            .find(|c| c.name == CONTACT_CLOCK)
            .and_then(|c| c.state.as_ref());
        let state = TransferState::try_from(t.state).unwrap_or_default();
        TransferView {
            state,
            accepted: started(t.feedback_clock.as_ref()) || contact.is_some(),
            contacted: contact.is_some_and(|c| c.stopped_at.is_some() && !c.expired)
                && state == TransferState::InProgress,
            contact_expired: contact.is_some_and(|c| c.expired),
            outcome: t
                .feedback
                .as_ref()
                .and_then(|f| rules::end_reason_for_outcome(&f.outcome_code)),
        }
    }
}

/// The next action for a case in `local` given the transfer, or `None` when the case is in
/// step. `delegations` is the number of delegations made so far (the current one included).
pub fn next_action(
    local: S,
    t: &TransferView,
    delegations: u32,
    policy: RedesignationPolicy,
) -> Option<Action> {
    use TransferState as T;
    match local {
        S::Delegated => match t.state {
            // 在线调解规则 Art 12: a decline, or no answer in 3 working days.
            T::Declined => Some(policy.on_decline(delegations)),
            T::Expired if !t.accepted => Some(policy.on_acceptance_timeout(delegations)),
            T::InProgress
            | T::FeedbackSubmitted
            | T::Closed
            | T::Returned
            | T::Escalated
            | T::Expired => Some(Action::Accept),
            _ => None,
        },
        S::Contacting => match t.state {
            // 在线调解规则 Art 15: the parties not reached in 3 working days.
            T::Expired if t.contact_expired => Some(Action::ContactExpired),
            T::Expired => Some(Action::MediationExpired),
            T::InProgress if t.contacted => Some(Action::Contacted),
            T::Returned => Some(Action::Returned),
            // An agreement or a suspicion needs the parties reached: contact happened.
            T::Escalated => Some(Action::Contacted),
            T::FeedbackSubmitted | T::Closed => match t.outcome.and_then(rules::end_kind) {
                Some(crate::EndKind::Agreement) => Some(Action::Contacted),
                Some(kind) => Some(Action::End(kind)),
                None => None,
            },
            _ => None,
        },
        S::InMediation => match t.state {
            T::Expired => Some(Action::MediationExpired),
            T::Returned => Some(Action::Returned),
            // 特邀调解规定 Art 18: suspected false mediation is reported to the court.
            T::Escalated => Some(Action::Suspend),
            T::FeedbackSubmitted | T::Closed => {
                t.outcome.and_then(rules::end_kind).map(Action::End)
            }
            _ => None,
        },
        S::Suspended => match t.state {
            T::Expired => Some(Action::MediationExpired),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EndKind;
    use crate::lifecycle::next;

    fn view(state: TransferState) -> TransferView {
        TransferView {
            state,
            accepted: false,
            contacted: false,
            contact_expired: false,
            outcome: None,
        }
    }

    /// Walks the table as the inbox does.
    fn walk(mut local: S, t: &TransferView, n: u32) -> S {
        for _ in 0..8 {
            let Some(a) = next_action(local, t, n, RedesignationPolicy::default()) else {
                break;
            };
            local = next(local, a).unwrap_or_else(|| panic!("{a:?} not allowed in {local:?}"));
        }
        local
    }

    #[test]
    fn decline_and_timeout_redesignate_until_the_limit() {
        let p = RedesignationPolicy::default();
        assert_eq!(
            walk(S::Delegated, &view(TransferState::Declined), 1),
            S::AwaitingDesignation
        );
        assert_eq!(
            walk(S::Delegated, &view(TransferState::Expired), 2),
            S::AwaitingDesignation
        );
        assert_eq!(
            walk(
                S::Delegated,
                &view(TransferState::Declined),
                p.max_delegations
            ),
            S::RegistrationPending
        );
    }

    #[test]
    fn acceptance_contact_and_agreement() {
        let mut t = view(TransferState::InProgress);
        t.accepted = true;
        assert_eq!(walk(S::Delegated, &t, 1), S::Contacting);
        t.contacted = true;
        assert_eq!(walk(S::Delegated, &t, 1), S::InMediation);
        let mut f = view(TransferState::FeedbackSubmitted);
        f.accepted = true;
        f.outcome = Some(EndReason::Agreement);
        // Feedback seen before contact: contact happened, then the agreement is filed.
        assert_eq!(walk(S::Delegated, &f, 1), S::AgreementFiled);
        f.outcome = Some(EndReason::GapTooLarge);
        assert_eq!(walk(S::Contacting, &f, 1), S::RegistrationPending);
        f.outcome = Some(EndReason::SettledAndWithdrawn);
        assert_eq!(walk(S::InMediation, &f, 1), S::Withdrawn);
        assert_eq!(
            rules::end_kind(EndReason::SettledAndWithdrawn),
            Some(EndKind::SettledAndWithdrawn)
        );
    }

    #[test]
    fn expiries_after_acceptance() {
        let mut t = view(TransferState::Expired);
        t.accepted = true;
        t.contact_expired = true;
        assert_eq!(walk(S::Contacting, &t, 1), S::RegistrationPending);
        t.contact_expired = false;
        assert_eq!(walk(S::InMediation, &t, 1), S::RegistrationPending);
        assert_eq!(walk(S::Suspended, &t, 1), S::RegistrationPending);
        assert_eq!(walk(S::Delegated, &t, 1), S::RegistrationPending);
    }

    #[test]
    fn escalation_suspends_and_nothing_moves_a_settled_case() {
        let mut t = view(TransferState::Escalated);
        t.accepted = true;
        assert_eq!(walk(S::Contacting, &t, 1), S::Suspended);
        for s in [
            S::RegistrationPending,
            S::AgreementFiled,
            S::Registered,
            S::ConsentPending,
        ] {
            assert_eq!(walk(s, &t, 1), s);
            assert_eq!(walk(s, &view(TransferState::Declined), 1), s);
        }
        // A delivered, not yet answered delegation stays delegated.
        assert_eq!(
            walk(S::Delegated, &view(TransferState::Delivered), 1),
            S::Delegated
        );
    }
}
