//! One truth (issue #9): a mediation case is reconciled from its router transfer.
//!
//! The router is the source of truth of every transfer. The mediation service calls the
//! router first and commits its own case after; when that commit is lost (a cut-off call, a
//! crash), the router's message for the same event reaches the case and brings it in step.
//! Every router message carries the transfer after the event; [`next_state`] is the table
//! that derives the case's transfer-dependent state from it, and [`apply`] fills what the
//! new state needs (case number, decline, termination, escalation) from the transfer. A
//! message is applied only if its event sequence is newer than the one the case reflects
//! (see [`crate::inbox`]), so an old message never reverts a newer case.

use fengqiao_proto::mediation::{
    CaseDecline, CaseFileEntry, CaseFileEntryKind, EndReason, Escalation, MediationCase,
    MediationCaseState as S, Termination,
};
use fengqiao_proto::router::{Transfer, TransferState as T};

use crate::cases::entry;
use crate::store::state_of;
use crate::util::to_timestamp;

/// The case state that follows from the state of its transfer, or `None` when the case
/// stays as it is. Only the transfer's progress moves a case; what happens inside an open
/// mediation (consents, mediator, agreement) is the mediation service's own and never moved
/// by the router. Terminal case states never change.
pub fn next_state(local: S, transfer: T) -> Option<S> {
    let open = matches!(
        local,
        S::Accepted | S::InMediation | S::AgreementPendingSignature
    );
    let offered = local == S::Offered;
    let to = match transfer {
        // 受理: the receiver accepted (AcceptTransfer).
        T::InProgress if offered => S::Accepted,
        // 不予受理.
        T::Declined if offered => S::Declined,
        // 撤回 by the sender before acceptance.
        T::Withdrawn if offered => S::Withdrawn,
        // 逾期退回: the router took the case back on a clock's expiry.
        T::Expired if offered || open => S::Expired,
        // 上报 (人民调解法 Art 25), or escalation on a clock's expiry.
        T::Escalated if offered || open => S::Escalated,
        // The outcome was reported (反馈) and possibly acknowledged (办结); also when the
        // acceptance's own commit was lost as well.
        T::FeedbackSubmitted | T::Closed if offered || open => S::Ended,
        // The case was handed back to the sender (退回) after acceptance.
        T::Returned if open => S::Ended,
        _ => return None,
    };
    (to != local).then_some(to)
}

/// The end reason that a route's feedback outcome code stands for (在线调解规则 Art 25), for a
/// case ended through the router's message rather than its own `EndMediation`.
pub fn end_reason_of(outcome_code: &str) -> EndReason {
    match outcome_code {
        "agreement_reached" => EndReason::Agreement,
        "withdrawn" => EndReason::SettledAndWithdrawn,
        "party_refused" => EndReason::PartyRefusesToContinue,
        _ => EndReason::Other,
    }
}

/// Applies the transfer `t` (after a newer event) to the case: copies the router's feedback
/// clock into `mediation_clock` (pauses, resumes and extensions on the router) and moves the
/// case by [`next_state`], filling what that state needs from the transfer and filing a
/// case-file entry. Returns whether the state changed.
pub fn apply(
    c: &mut MediationCase,
    t: &Transfer,
    reserved_number: &str,
    now: i64,
    out: &mut Vec<CaseFileEntry>,
) -> bool {
    if let Some(k) = &t.feedback_clock {
        c.mediation_clock = Some(k.clone());
    }
    let transfer = T::try_from(t.state).unwrap_or(T::Unspecified);
    let Some(to) = next_state(state_of(c), transfer) else {
        return false;
    };
    if state_of(c) == S::Offered && matches!(to, S::Accepted | S::Ended) {
        // Accepted on the router: publish the number reserved on receipt.
        if c.case_number.is_empty() {
            c.case_number = reserved_number.to_string();
        }
        if c.accept_time.is_none() {
            c.accept_time = Some(to_timestamp(now));
        }
        out.push(entry(
            CaseFileEntryKind::Registration,
            "人民调解受理登记（依移送记录同步）",
            now,
            format!("受理，调解案号 {}", c.case_number),
        ));
    }
    match to {
        S::Declined if c.decline.is_none() => {
            let d = t.decline.clone().unwrap_or_default();
            c.decline = Some(CaseDecline {
                reason_code: d.reason_code,
                reason: d.reason,
                actor: d.actor,
                decline_time: d.decline_time.or(Some(to_timestamp(now))),
            });
        }
        S::Escalated if c.escalation.is_none() => {
            let h = t.handback.clone().unwrap_or_default();
            c.escalation = Some(Escalation {
                reason_code: h.reason_code,
                reason: h.reason,
                to_agency: c
                    .source_agency
                    .as_ref()
                    .map(|a| a.name.clone())
                    .unwrap_or_default(),
                actor: h.actor,
                escalate_time: h.handback_time.or(Some(to_timestamp(now))),
            });
        }
        S::Ended if c.termination.is_none() => {
            let f = t.feedback.clone().unwrap_or_default();
            let (reason, detail) = match &t.handback {
                Some(h) if transfer == T::Returned => (EndReason::Other, h.reason.clone()),
                _ => (end_reason_of(&f.outcome_code), f.summary.clone()),
            };
            c.termination = Some(Termination {
                reason: reason as i32,
                detail,
                outcome_code: f.outcome_code,
                actor: f.submitted_by,
                end_time: f.submit_time.or(Some(to_timestamp(now))),
            });
        }
        _ => {}
    }
    out.push(entry(
        CaseFileEntryKind::Other,
        "依移送记录同步案件状态",
        now,
        format!(
            "{} → {}",
            state_of(c)
                .as_str_name()
                .trim_start_matches("MEDIATION_CASE_STATE_"),
            to.as_str_name().trim_start_matches("MEDIATION_CASE_STATE_")
        ),
    ));
    c.state = to as i32;
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_kit::transfers::TRANSFER_STATES;

    const CASE_STATES: [S; 11] = [
        S::Unspecified,
        S::Offered,
        S::Declined,
        S::Accepted,
        S::InMediation,
        S::AgreementPendingSignature,
        S::Ended,
        S::Escalated,
        S::ConsentRefused,
        S::Withdrawn,
        S::Expired,
    ];
    /// Every (case state, transfer state) pair that changes the case; every other pair is
    /// "no change".
    fn expected(local: S, t: T) -> Option<S> {
        use crate::lifecycle::OPEN;
        let table: &[(&[S], T, S)] = &[
            (&[S::Offered], T::InProgress, S::Accepted),
            (&[S::Offered], T::Declined, S::Declined),
            (&[S::Offered], T::Withdrawn, S::Withdrawn),
            (&[S::Offered], T::Expired, S::Expired),
            (&OPEN, T::Expired, S::Expired),
            (&[S::Offered], T::Escalated, S::Escalated),
            (&OPEN, T::Escalated, S::Escalated),
            (&[S::Offered], T::FeedbackSubmitted, S::Ended),
            (&OPEN, T::FeedbackSubmitted, S::Ended),
            (&[S::Offered], T::Closed, S::Ended),
            (&OPEN, T::Closed, S::Ended),
            (&OPEN, T::Returned, S::Ended),
        ];
        table
            .iter()
            .find(|(from, tt, _)| from.contains(&local) && *tt == t)
            .map(|(_, _, to)| *to)
    }

    #[test]
    fn every_pair_of_the_table() {
        let mut changes = 0;
        for local in CASE_STATES {
            for t in TRANSFER_STATES {
                assert_eq!(
                    next_state(local, t),
                    expected(local, t),
                    "{local:?} × {t:?}"
                );
                changes += usize::from(next_state(local, t).is_some());
            }
        }
        // 1 × 7 changes from OFFERED, 3 × 5 from the open states.
        assert_eq!(changes, 22);
    }

    #[test]
    fn terminal_states_never_move() {
        for local in [
            S::Declined,
            S::Ended,
            S::Escalated,
            S::ConsentRefused,
            S::Withdrawn,
            S::Expired,
        ] {
            for t in TRANSFER_STATES {
                assert_eq!(next_state(local, t), None, "{local:?} × {t:?}");
            }
        }
    }

    fn case(state: S) -> MediationCase {
        MediationCase {
            name: "cases/c1".into(),
            state: state as i32,
            ..Default::default()
        }
    }

    fn transfer(state: T) -> Transfer {
        Transfer {
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn acceptance_publishes_the_reserved_number() {
        let mut c = case(S::Offered);
        let mut out = Vec::new();
        assert!(apply(
            &mut c,
            &transfer(T::InProgress),
            "调〔2026〕0007号",
            5,
            &mut out
        ));
        assert_eq!(state_of(&c), S::Accepted);
        assert_eq!(c.case_number, "调〔2026〕0007号");
        assert!(c.accept_time.is_some());
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn feedback_ends_with_the_transfers_outcome() {
        let mut c = case(S::InMediation);
        let mut t = transfer(T::FeedbackSubmitted);
        t.feedback = Some(fengqiao_proto::router::Feedback {
            outcome_code: "agreement_reached".into(),
            summary: "达成调解协议".into(),
            ..Default::default()
        });
        let mut out = Vec::new();
        assert!(apply(&mut c, &t, "n", 5, &mut out));
        assert_eq!(state_of(&c), S::Ended);
        let term = c.termination.expect("termination");
        assert_eq!(term.outcome_code, "agreement_reached");
        assert_eq!(term.reason, EndReason::Agreement as i32);
        // The case number is not touched after acceptance.
        assert!(c.case_number.is_empty());
    }

    #[test]
    fn the_clock_follows_the_router_even_without_a_state_change() {
        let mut c = case(S::InMediation);
        let mut t = transfer(T::InProgress);
        t.feedback_clock = Some(fengqiao_proto::common::ClockState {
            paused: true,
            ..Default::default()
        });
        let mut out = Vec::new();
        assert!(!apply(&mut c, &t, "n", 5, &mut out));
        assert!(out.is_empty());
        assert_eq!(state_of(&c), S::InMediation);
        assert!(c.mediation_clock.expect("clock").paused);
    }

    #[test]
    fn outcome_codes_map_to_end_reasons() {
        assert_eq!(end_reason_of("agreement_reached"), EndReason::Agreement);
        assert_eq!(end_reason_of("withdrawn"), EndReason::SettledAndWithdrawn);
        assert_eq!(
            end_reason_of("party_refused"),
            EndReason::PartyRefusesToContinue
        );
        assert_eq!(end_reason_of("mediation_failed"), EndReason::Other);
    }
}
