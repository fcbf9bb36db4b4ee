//! 司法确认 on the committee's side: the parties' joint application for judicial confirmation
//! of an effective agreement, forwarded to the competent court on the router route
//! `mediation-to-court-confirmation`, and the court's answers reflected on the case.
//!
//! The rules are the court's own ([`fengqiao_judicial_confirmation::rules`]), checked here
//! before anything is sent, so the committee is told at once — and the court checks them
//! again on receipt:
//!
//! * joint application of every party to the agreement (人民调解法 Art 33; 民事诉讼法
//!   Art 205);
//! * within 30 days of the agreement taking effect (人民调解法 Art 33; counted per 民事诉讼法
//!   Art 85), the committee's submission time deciding;
//! * to the competent court: the delegating court of a 委派 case, else the basic court of the
//!   committee's area (法释〔2011〕5号 Art 2);
//! * the package of 法释〔2011〕5号 Art 3, and the agreement with the SHA-256 digest of its
//!   exact signed bytes.
//!
//! The pure parts ([`prepare`], [`committee_court`], [`status_from`]) are plain functions;
//! [`crate::cases::Cases::apply_for_confirmation`] and the inbox call them.

use fengqiao_clock::HolidayCalendar;
use fengqiao_judicial_confirmation::rules;
use fengqiao_kit::{FieldViolation, Reason};
use fengqiao_proto::common::{AgencyKind, EvidenceRef, ReasonCode};
use fengqiao_proto::mediation::{
    ApplyForConfirmationRequest, ConfirmationProgress as P, ConfirmationStatus, MediationCase,
};
use fengqiao_proto::router::{Agency, ConfirmationPackage, Transfer, TransferState as T};
use prost::Message as _;

use crate::error::{Error, Result};
use crate::util::{from_timestamp, to_timestamp};

/// The route the application travels on.
pub const ROUTE: &str = "mediation-to-court-confirmation";

/// The dismissal ground's marker in the court's feedback summary (the route has one
/// `dismissed` outcome code; the 民诉法解释 Art 358 ground travels in the summary).
pub const GROUND_MARKER: &str = "ground=";

/// The agreement as it travels: the SHA-256 digest of the exact bytes of the effective,
/// signed agreement record (with its signatures and seal), so the court reviews exactly what
/// was signed.
pub fn agreement_document(case: &MediationCase) -> Option<EvidenceRef> {
    let a = case.agreement.as_ref().filter(|a| a.effective)?;
    let bytes = a.encode_to_vec();
    Some(EvidenceRef {
        display_name: format!("调解协议书 {}", a.agreement_number),
        media_type: "application/x-protobuf; type=fengqiao.mediation.v1.Agreement".into(),
        // A plain SHA-256 the court can check (not the keyed hash of idempotency keys).
        sha256: fengqiao_store::checksum(&bytes),
        uri: format!("{}/agreement", case.name),
        size_bytes: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
    })
}

/// The basic court of the committee's area (法释〔2011〕5号 Art 2): the one active court whose
/// region code is the committee's.
pub fn committee_court(committee: &Agency, courts: &[Agency]) -> Option<String> {
    let mut found = courts.iter().filter(|c| {
        c.active && c.kind == AgencyKind::Court as i32 && c.region_code == committee.region_code
    });
    let first = found.next()?;
    // Two courts of one area: not decidable here.
    found.next().is_none().then(|| first.name.clone())
}

/// The delegating court of a 委派 case: the court that sent the case, if a court did.
pub fn delegating_court(case: &MediationCase) -> Option<String> {
    case.source_agency
        .as_ref()
        .filter(|a| a.kind == AgencyKind::Court as i32)
        .map(|a| a.name.clone())
}

/// Whether the case has an application the court has not finished with (not accepted and
/// withdrawn ones may be made again).
pub fn open_application(case: &MediationCase) -> Option<&ConfirmationStatus> {
    case.confirmation.as_ref().filter(|c| {
        !matches!(
            P::try_from(c.progress).unwrap_or_default(),
            P::NotAccepted | P::Withdrawn
        )
    })
}

/// Whether the court has ruled on the application (CONFIRMED or DISMISSED): final for the
/// committee.
pub fn is_ruled(status: &ConfirmationStatus) -> bool {
    matches!(
        P::try_from(status.progress).unwrap_or_default(),
        P::Confirmed | P::Dismissed
    )
}

/// The refusal of a second application while one is open.
pub fn already_open(case: &MediationCase, open: &ConfirmationStatus) -> Error {
    let p = P::try_from(open.progress).unwrap_or_default();
    Error::WrongState {
        resource: case.name.clone(),
        state: format!("CONFIRMATION_{}", p.as_str_name()),
        action: "apply for judicial confirmation again",
    }
}

/// Checks a joint application on `case` at `now` and builds the package that travels
/// (deterministic: a retry sends the router the same request). Refused: no effective
/// agreement (人民调解法 Art 29/33), one party alone (Art 33), day 31 (Art 33), a court other than the competent one
/// (法释〔2011〕5号 Art 2), an incomplete Art 3 package.
pub fn prepare(
    case: &MediationCase,
    req: &ApplyForConfirmationRequest,
    committee_court: &str,
    now: i64,
    cal: &HolidayCalendar,
) -> Result<ConfirmationPackage> {
    let Some(agreement) = case.agreement.as_ref().filter(|a| a.effective) else {
        return Err(Error::Refused(
            Reason::NoEffectiveAgreement,
            "judicial confirmation needs an effective agreement, signed by every party and \
             the mediator and sealed (人民调解法 Art 29, 33)"
                .into(),
        ));
    };
    let parties: Vec<&str> = agreement
        .parties
        .iter()
        .map(|p| p.party_id.as_str())
        .collect();
    let applicants: Vec<&str> = req.applicant_party_ids.iter().map(String::as_str).collect();
    if let Some(i) = applicants.iter().position(|a| !parties.contains(a)) {
        return Err(FieldViolation::new(
            format!("applicant_party_ids[{i}]"),
            "is not a party to the agreement",
        )
        .into());
    }
    // 人民调解法 Art 33; 民事诉讼法 Art 205: both (all) parties apply together.
    rules::check_joint(&parties, &applicants)?;
    let effective_at = agreement
        .effective_time
        .as_ref()
        .map(from_timestamp)
        .ok_or_else(|| Error::Corrupt("effective agreement without its time".into()))?;
    // 人民调解法 Art 33: within 30 days of taking effect; the submission time decides.
    rules::check_application_period(effective_at, now, cal)?;
    let delegating = delegating_court(case);
    // 法释〔2011〕5号 Art 2.
    rules::check_court(&req.court, committee_court, delegating.as_deref())?;
    let represented: Vec<&str> = req
        .represented_party_ids
        .iter()
        .map(String::as_str)
        .collect();
    let items = fengqiao_judicial_confirmation::routed::package_of(&req.items);
    // 法释〔2011〕5号 Art 3.
    rules::check_package(&agreement.parties, &represented, &items).map_err(|e| match e {
        Error::Invalid(v) => Error::Invalid(
            v.into_iter()
                .map(|f| FieldViolation::new(f.field.replace("package", "items"), f.description))
                .collect(),
        ),
        e => e,
    })?;
    Ok(ConfirmationPackage {
        agreement: agreement_document(case),
        agreement_effective_time: Some(to_timestamp(effective_at)),
        agreement_party_ids: parties.iter().map(|p| (*p).to_string()).collect(),
        applicant_party_ids: req.applicant_party_ids.clone(),
        represented_party_ids: req.represented_party_ids.clone(),
        committee_court: committee_court.to_string(),
        delegating_court: delegating.unwrap_or_default(),
        items: req.items.clone(),
    })
}

/// How far a progress is along: an older router message never moves a case back.
fn rank(p: P) -> u8 {
    match p {
        P::Unspecified => 0,
        P::Submitted => 1,
        P::Accepted => 2,
        P::NotAccepted | P::Confirmed | P::Dismissed | P::Withdrawn => 3,
    }
}

/// The dismissal ground code in a feedback summary (`… ground=<code>`), if any.
pub fn ground_of(summary: &str) -> String {
    summary
        .rsplit_once(GROUND_MARKER)
        .map(|(_, code)| code.trim().to_string())
        .filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .unwrap_or_default()
}

/// The confirmation status that the court's answers on `t` show, starting from `prev`;
/// `None` when `t` is older than what `prev` shows (never moves back). The table:
/// APPROVED / DELIVERED → SUBMITTED; IN_PROGRESS (accepted, with the 调确 number) → ACCEPTED;
/// DECLINED (with the Art 355 ground) → NOT_ACCEPTED; WITHDRAWN → WITHDRAWN;
/// FEEDBACK_SUBMITTED / CLOSED with `confirmed_valid` → CONFIRMED, `dismissed` → DISMISSED
/// (with the Art 358 ground), `withdrawn` → WITHDRAWN.
pub fn status_from(
    prev: Option<&ConfirmationStatus>,
    t: &Transfer,
    now: i64,
) -> Option<ConfirmationStatus> {
    let state = T::try_from(t.state).unwrap_or_default();
    let feedback = t.feedback.clone().unwrap_or_default();
    let progress = match state {
        T::Draft | T::AwaitingApproval | T::Approved | T::Delivered => P::Submitted,
        T::InProgress => P::Accepted,
        T::Declined => P::NotAccepted,
        T::Withdrawn | T::Expired | T::Returned | T::Escalated => P::Withdrawn,
        T::FeedbackSubmitted | T::Closed => match feedback.outcome_code.as_str() {
            "confirmed_valid" => P::Confirmed,
            "dismissed" => P::Dismissed,
            _ => P::Withdrawn,
        },
        T::Unspecified => return None,
    };
    let mut s = prev.cloned().unwrap_or_default();
    let old = P::try_from(s.progress).unwrap_or_default();
    if prev.is_some() && (rank(progress) < rank(old) || (rank(old) == 3 && progress != old)) {
        return None;
    }
    s.transfer = t.name.clone();
    if let Some(to) = &t.to_agency {
        s.court = to.name.clone();
    }
    s.progress = progress as i32;
    if let Some(number) = t
        .case_snapshot
        .as_ref()
        .and_then(|c| c.external_references.get(&s.court))
    {
        s.confirmation_number = number.clone();
    }
    if let Some(d) = &t.decline {
        s.rejection = Some(ReasonCode {
            code: d.reason_code.clone(),
            description: d.reason_description.clone(),
        });
    }
    if matches!(state, T::FeedbackSubmitted | T::Closed) {
        s.outcome_code = feedback.outcome_code.clone();
        s.ruling_summary = feedback.summary.clone();
        s.ruling_document = feedback.documents.first().cloned();
        if progress == P::Dismissed {
            s.dismissal_ground_code = ground_of(&feedback.summary);
        }
    }
    if let Some(a) = t
        .case_snapshot
        .as_ref()
        .and_then(|c| c.confirmation.as_ref())
        .and_then(|p| p.agreement.as_ref())
    {
        s.agreement_sha256 = a.sha256.clone();
    }
    if s.submit_time.is_none() {
        s.submit_time = t.create_time.or(Some(to_timestamp(now)));
    }
    s.update_time = Some(to_timestamp(now));
    Some(s)
}

/// The case-file title of a progress (一案一卷).
pub fn progress_title(progress: i32) -> &'static str {
    match P::try_from(progress).unwrap_or_default() {
        P::Unspecified | P::Submitted => "司法确认申请已转交法院",
        P::Accepted => "法院受理司法确认申请",
        P::NotAccepted => "法院不予受理司法确认申请",
        P::Confirmed => "法院裁定调解协议有效",
        P::Dismissed => "法院裁定驳回司法确认申请",
        P::Withdrawn => "司法确认申请撤回",
    }
}

/// The case-file account of a status (no personal information).
pub fn progress_detail(s: &ConfirmationStatus) -> String {
    let mut out = s.court.clone();
    if !s.confirmation_number.is_empty() {
        out.push_str(&format!("；{}", s.confirmation_number));
    }
    if let Some(r) = &s.rejection {
        out.push_str(&format!("；不予受理理由：{}（{}）", r.description, r.code));
    }
    if !s.ruling_summary.is_empty() {
        out.push_str(&format!("；{}", s.ruling_summary));
    }
    out
}

#[cfg(test)]
mod tests;
