//! One truth (issue #9): a referral is reconciled from its router transfer.
//!
//! The router is the source of truth of every transfer. The police service calls the router
//! first and commits its referral after; when that commit is lost (a cut-off call, a crash),
//! the router's message for the same event reaches the referral and brings it in step. A
//! message is applied only if its event sequence (`TransferEvent.sequence`, one order across
//! the router) is newer than the one the referral reflects, so an old message never reverts a
//! newer referral. These are the pure rules; the inbox applies them.

use fengqiao_proto::policereferral::ReferralState as R;
use fengqiao_proto::router::TransferState as T;

use crate::state_for_transfer;

/// Whether the referral's state follows a transfer (drafted, out, back with feedback, closed).
/// The other states are the police's own (screening, or the transfer came back).
pub fn is_bound(local: R) -> bool {
    matches!(
        local,
        R::TransferPending | R::Transferred | R::FeedbackReceived | R::Closed
    )
}

/// Whether a transfer state hands the case back to the police (it is over without feedback).
pub fn is_handback(t: T) -> bool {
    matches!(
        t,
        T::Declined | T::Expired | T::Returned | T::Escalated | T::Withdrawn
    )
}

/// The referral state that follows from a newer message of the referral's transfer, or
/// `None` when the referral stays as it is. A transfer that is under way always decides the
/// state (it also heals a referral whose own commit of the draft was lost); a transfer that
/// went back to the police moves only a referral that still follows it, so the police's own
/// later decision (an override of screening after the return) is never reverted.
pub fn next_state(local: R, transfer: T) -> Option<R> {
    if transfer == T::Unspecified || (is_handback(transfer) && !is_bound(local)) {
        return None;
    }
    let to = state_for_transfer(transfer);
    (to != local).then_some(to)
}

/// Whether a message about `message_transfer` is about the referral's transfer, adopting it
/// when the referral does not link it yet: a referral without a transfer, or whose transfer is
/// over, adopts a transfer that is under way (its own draft whose local commit was lost).
pub fn is_current(linked: &str, local: R, message_transfer: &str, transfer_state: T) -> bool {
    !message_transfer.is_empty()
        && (linked == message_transfer
            || ((linked.is_empty() || !is_bound(local))
                && !is_handback(transfer_state)
                && transfer_state != T::Unspecified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_kit::transfers::TRANSFER_STATES;

    const LOCAL: [R; 10] = [
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
    /// The state each transfer state stands for, written out (not derived from the code).
    fn stands_for(t: T) -> Option<R> {
        Some(match t {
            T::Unspecified => return None,
            T::Draft | T::AwaitingApproval => R::TransferPending,
            T::Approved | T::Delivered | T::InProgress => R::Transferred,
            T::FeedbackSubmitted => R::FeedbackReceived,
            T::Closed => R::Closed,
            T::Declined | T::Expired | T::Returned | T::Escalated => R::Returned,
            T::Withdrawn => R::Withdrawn,
        })
    }

    #[test]
    fn every_pair_of_the_table() {
        let bound = [
            R::TransferPending,
            R::Transferred,
            R::FeedbackReceived,
            R::Closed,
        ];
        let handback = [
            T::Declined,
            T::Expired,
            T::Returned,
            T::Escalated,
            T::Withdrawn,
        ];
        for local in LOCAL {
            for t in TRANSFER_STATES {
                let want = match stands_for(t) {
                    None => None,
                    Some(_) if handback.contains(&t) && !bound.contains(&local) => None,
                    Some(s) if s == local => None,
                    Some(s) => Some(s),
                };
                assert_eq!(next_state(local, t), want, "{local:?} × {t:?}");
            }
        }
    }

    #[test]
    fn the_cases_of_the_issue() {
        // Transfer accepted: the referral follows (and its transfer_state is IN_PROGRESS).
        assert_eq!(
            next_state(R::TransferPending, T::InProgress),
            Some(R::Transferred)
        );
        // Acknowledged on the router directly: the referral closes.
        assert_eq!(next_state(R::FeedbackReceived, T::Closed), Some(R::Closed));
        // A lost draft commit heals.
        assert_eq!(
            next_state(R::ReadyToTransfer, T::AwaitingApproval),
            Some(R::TransferPending)
        );
        // Nothing more to do.
        assert_eq!(next_state(R::Closed, T::Closed), None);
        // An override of screening after a return is the police's own.
        assert_eq!(next_state(R::PoliceMatter, T::Returned), None);
    }

    #[test]
    fn adoption_of_a_transfer() {
        let t = "transfers/t2";
        assert!(is_current(t, R::Transferred, t, T::Closed));
        // Not linked yet: a lost draft commit.
        assert!(is_current("", R::ReadyToTransfer, t, T::AwaitingApproval));
        // The earlier transfer came back; the new one is under way.
        assert!(is_current("transfers/t1", R::Returned, t, T::Approved));
        // A transfer that is over is never adopted (a late message of an old transfer).
        assert!(!is_current("transfers/t1", R::Returned, t, T::Returned));
        // The referral follows another transfer that is under way.
        assert!(!is_current(
            "transfers/t1",
            R::TransferPending,
            t,
            T::AwaitingApproval
        ));
        assert!(!is_current("", R::ReadyToTransfer, "", T::Draft));
    }
}
