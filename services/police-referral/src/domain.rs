//! The referral's own rules outside the lifecycle table: the state a screening result or a
//! transfer state stands for, the output form of a referral, the content the incident-number
//! idempotency compares and how an investigation task follows the router's investigation.

use fengqiao_kit::time::from_timestamp as from_ts;
use fengqiao_proto::policereferral::*;
use fengqiao_proto::router::{Investigation, Transfer, TransferState};

pub(crate) fn state_name(s: i32) -> String {
    ReferralState::try_from(s)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| "UNKNOWN".into())
}

/// The referral state that follows from the state of its current transfer.
pub fn state_for_transfer(t: TransferState) -> ReferralState {
    use TransferState as T;
    match t {
        T::Unspecified | T::Draft | T::AwaitingApproval => ReferralState::TransferPending,
        T::Approved | T::Delivered | T::InProgress => ReferralState::Transferred,
        T::FeedbackSubmitted => ReferralState::FeedbackReceived,
        T::Closed => ReferralState::Closed,
        T::Declined | T::Expired | T::Returned | T::Escalated => ReferralState::Returned,
        T::Withdrawn => ReferralState::Withdrawn,
    }
}

/// The referral state that follows from a screening result, before any transfer.
pub fn state_for_screening(r: ScreeningResult) -> ReferralState {
    match r {
        ScreeningResult::CivilDispute => ReferralState::ReadyToTransfer,
        ScreeningResult::PublicSecurity | ScreeningResult::Criminal => ReferralState::PoliceMatter,
        ScreeningResult::NeedsReview | ScreeningResult::Unspecified => ReferralState::PendingReview,
    }
}

/// The router event sequence of an answer's transfer (0 when absent).
pub(crate) fn answer_seq(t: Option<&Transfer>) -> u64 {
    t.and_then(|t| t.last_event.as_ref())
        .map_or(0, |e| e.sequence)
}

/// Feedback due time and overdue flag as list columns: overdue counts only while feedback is
/// awaited (TRANSFERRED).
pub(crate) fn feedback_columns(r: &Referral) -> (Option<i64>, i64) {
    let awaiting = r.state == ReferralState::Transferred as i32;
    let f = r.feedback.as_ref();
    let due = f
        .filter(|_| awaiting)
        .and_then(|f| f.due_time.as_ref())
        .map(from_ts);
    let overdue = i64::from(awaiting && f.is_some_and(|f| f.overdue));
    (due, overdue)
}

/// Output form: computes `feedback.overdue` from the due time while feedback is awaited.
pub(crate) fn present(mut r: Referral, now: i64) -> Referral {
    let awaiting = r.state == ReferralState::Transferred as i32;
    if let Some(f) = r.feedback.as_mut()
        && awaiting
        && f.received_time.is_none()
        && f.due_time.as_ref().is_some_and(|d| from_ts(d) < now)
    {
        f.overdue = true;
    }
    r
}

/// The content of a referral that the incident-number idempotency compares: the client's
/// fields, trimmed, output-only fields cleared.
pub(crate) fn normalise(r: &Referral) -> Referral {
    let mut n = r.clone();
    n.name.clear();
    n.case_id.clear();
    n.screening = None;
    n.state = 0;
    n.transfer.clear();
    n.transfer_state = 0;
    n.feedback = None;
    n.create_time = None;
    n.update_time = None;
    n.etag.clear();
    // Output only: the officer is the caller (from the token), not the request body.
    n.officer = None;
    n.incident_number = n.incident_number.trim().to_string();
    n.summary = n.summary.trim().to_string();
    n.on_scene_handling = n.on_scene_handling.trim().to_string();
    for p in n.parties.iter_mut().chain(n.caller.iter_mut()) {
        p.name = p.name.trim().to_string();
        p.id_number = p.id_number.trim().to_ascii_uppercase();
        p.phone = p.phone.trim().to_string();
    }
    n
}

pub(crate) fn apply_investigation(task: &mut InvestigationTask, inv: &Investigation) {
    task.state = inv.state;
    task.answer = inv.answer.clone();
    task.answer_evidence = inv.answer_evidence.clone();
    task.answered_by = inv.answered_by.clone();
    task.answer_time = inv.answer_time;
    if task.questions.is_empty() {
        task.questions = inv.questions.clone();
    }
}
