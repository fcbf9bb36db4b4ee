use super::*;
use chrono::TimeZone;
use fengqiao_kit::Reason;
use fengqiao_proto::admindispute::{ActKind, ClaimKind};
use fengqiao_testkit::services::bare_parties;

pub(crate) const CENTRE: &str = "agencies/xigang-admin-dispute-centre";
pub(crate) const ORGAN: &str = "agencies/xigang-housing-bureau";
pub(crate) const REVIEWER: &str = "agencies/xigang-government";
const DAY: i64 = 86_400_000_000;

pub(crate) fn cal() -> &'static HolidayCalendar {
    HolidayCalendar::builtin()
}

pub(crate) fn at(y: i32, m: u32, d: u32, h: u32) -> i64 {
    chrono::FixedOffset::east_opt(8 * 3600)
        .expect("tz")
        .with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("time")
        .timestamp_micros()
}

pub(crate) fn doc() -> EvidenceRef {
    EvidenceRef {
        display_name: "文书".into(),
        media_type: "application/pdf".into(),
        sha256: "ab".repeat(32),
        ..EvidenceRef::default()
    }
}

pub(crate) fn intake_of(stage: DisputeStage, kinds: &[ClaimKind]) -> Intake {
    Intake {
        case_id: "c1".into(),
        applicants: bare_parties(&["p1", "p2"]),
        act: AdministrativeAct {
            kind: ActKind::Expropriation as i32,
            document_number: "西住建征〔2026〕7号".into(),
            ..AdministrativeAct::default()
        },
        organ: ORGAN.into(),
        reviewing_organ: if stage == DisputeStage::InReview {
            REVIEWER.into()
        } else {
            String::new()
        },
        stage,
        claims: kinds
            .iter()
            .map(|k| Claim {
                kind: *k as i32,
                ..Claim::default()
            })
            .collect(),
        evidence: vec![doc()],
        review_accept_at: None,
        region_code: "210203".into(),
    }
}

pub(crate) fn taken_in(stage: DisputeStage, kinds: &[ClaimKind], now: i64) -> Record {
    intake("disputes/d1", CENTRE, &intake_of(stage, kinds), now, cal()).expect("taken in")
}

/// The deadline of a calendar-day clock of `days` started at `from` (end of the last day,
/// moved past a holiday, by the clock engine's rule).
fn due_after(from: i64, days: u32) -> i64 {
    fengqiao_clock::add_duration(from, fengqiao_clock::ClockUnit::CalendarDay, days, cal())
}

fn consents() -> Vec<String> {
    vec!["p1".into(), "p2".into()]
}

fn review(r: &Record) -> &Clock {
    r.clocks
        .iter()
        .find(|c| c.name == rules::REVIEW_CLOCK)
        .expect("review clock")
}

fn reason(e: Error) -> Reason {
    e.api().reason
}

#[test]
fn intake_decides_the_scope_and_starts_the_review_clock_in_review_only() {
    let t0 = at(2026, 3, 2, 9);
    let r = taken_in(DisputeStage::InReview, &[ClaimKind::Indemnification], t0);
    assert_eq!(r.state(), S::Open);
    assert!(r.dispute.scope.as_ref().expect("scope").mediation_allowed);
    assert_eq!(review(&r).due_at, due_after(t0, 60));
    assert_eq!(r.participants(), [CENTRE, REVIEWER, ORGAN]);
    let before = taken_in(DisputeStage::BeforeReview, &[ClaimKind::Legality], t0);
    assert!(before.clocks.is_empty());
    assert!(
        !before
            .dispute
            .scope
            .as_ref()
            .expect("scope")
            .mediation_allowed
    );
    assert_eq!(before.participants(), [CENTRE, ORGAN]);

    // The review's acceptance time is where the 60 days run from.
    let mut i = intake_of(DisputeStage::InReview, &[ClaimKind::Compensation]);
    i.review_accept_at = Some(t0 - 10 * DAY);
    let r = intake("disputes/d2", CENTRE, &i, t0, cal()).expect("taken in");
    assert_eq!(review(&r).started_at, t0 - 10 * DAY);

    // Refused intakes name the fields.
    i.review_accept_at = Some(t0 + DAY);
    i.reviewing_organ = String::new();
    i.claims.clear();
    i.organ = "xigang".into();
    let e = intake("disputes/d3", CENTRE, &i, t0, cal()).expect_err("bad");
    let fields: Vec<String> = e.api().violations.iter().map(|v| v.field.clone()).collect();
    for f in ["claims", "organ", "reviewing_organ", "review_accept_time"] {
        assert!(fields.iter().any(|x| x == f), "{f} in {fields:?}");
    }
}

#[test]
fn a_compensation_agreement_takes_effect_only_with_the_last_signature_and_the_seal() {
    let t0 = at(2026, 3, 2, 9);
    let r = taken_in(DisputeStage::BeforeReview, &[ClaimKind::Compensation], t0);
    // Consent of every applicant and of the organ is needed.
    let e = start_mediation(&r, &["p1".into()], true, None, t0, cal()).expect_err("p2");
    assert_eq!(reason(e), Reason::PartyConsentRequired);
    let e = start_mediation(&r, &consents(), false, None, t0, cal()).expect_err("organ");
    assert_eq!(reason(e), Reason::PartyConsentRequired);
    let m = start_mediation(&r, &consents(), true, None, t0, cal()).expect("mediating");
    assert_eq!(m.state(), S::Mediating);
    // Nothing to sign before the draft; sign and seal are refused in MEDIATING.
    assert_eq!(
        reason(sign(&m, Some("p1"), t0, cal()).expect_err("no draft")),
        Reason::WrongState
    );
    assert!(draft_agreement(&m, None, t0, cal()).is_err());
    let d = draft_agreement(&m, Some(&doc()), t0, cal()).expect("drafted");
    assert_eq!(d.state(), S::AgreementPending);
    let s1 = sign(&d, Some("p1"), t0 + 1, cal()).expect("p1");
    assert_eq!(
        reason(sign(&s1, Some("p1"), t0 + 2, cal()).expect_err("twice")),
        Reason::AlreadySigned
    );
    assert!(sign(&s1, Some("p9"), t0 + 2, cal()).is_err());
    let s2 = sign(&s1, None, t0 + 2, cal()).expect("organ");
    assert_eq!(
        reason(sign(&s2, None, t0 + 3, cal()).expect_err("twice")),
        Reason::AlreadySigned
    );
    let sealed = seal(&s2, t0 + 3, cal()).expect("sealed");
    assert_eq!(sealed.state(), S::AgreementPending, "p2 has not signed");
    assert!(
        sealed
            .dispute
            .agreement
            .as_ref()
            .expect("a")
            .effective_time
            .is_none()
    );
    assert_eq!(
        reason(seal(&sealed, t0 + 4, cal()).expect_err("twice")),
        Reason::AlreadySigned
    );
    let done = sign(&sealed, Some("p2"), t0 + 5, cal()).expect("last");
    assert_eq!(done.state(), S::Resolved);
    assert_eq!(done.dispute.result(), DisputeResult::MediationAgreement);
    assert_eq!(
        done.dispute.agreement.as_ref().expect("a").effective_time,
        Some(to_timestamp(t0 + 5))
    );
    assert!(done.dispute.close_time.is_some());
    // Final: nothing more.
    assert!(withdraw_consent(&done, Some("p1"), None, t0 + 6, cal()).is_err());

    // The seal may be the last act too.
    let d2 = sign(
        &sign(
            &sign(&d, Some("p1"), t0, cal()).expect("1"),
            Some("p2"),
            t0,
            cal(),
        )
        .expect("2"),
        None,
        t0,
        cal(),
    )
    .expect("organ");
    assert_eq!(d2.state(), S::AgreementPending);
    assert_eq!(
        seal(&d2, t0 + 9, cal()).expect("sealed").state(),
        S::Resolved
    );
}

#[test]
fn outside_article_60_mediation_is_refused_but_coordination_and_correction_close_it() {
    let t0 = at(2026, 3, 2, 9);
    let r = taken_in(
        DisputeStage::InLitigation,
        &[ClaimKind::Legality, ClaimKind::Compensation],
        t0,
    );
    let e = start_mediation(&r, &consents(), true, None, t0, cal()).expect_err("scope");
    let api = e.api();
    assert_eq!(api.reason, Reason::OutsideMediationScope);
    assert!(api.message.contains("行政诉讼法第六十条"));
    assert!(start_coordination(&r, CoordinationMethod::Mediation, t0, cal()).is_err());
    let c = start_coordination(&r, CoordinationMethod::Explanation, t0, cal()).expect("coord");
    assert_eq!(c.state(), S::Coordinating);
    assert!(record_correction(&c, None, t0, cal()).is_err());
    let done = record_correction(&c, Some(&doc()), t0 + DAY, cal()).expect("corrected");
    assert_eq!(done.state(), S::Resolved);
    assert_eq!(done.dispute.result(), DisputeResult::OrganCorrection);
    assert_eq!(done.dispute.method(), CoordinationMethod::Correction);
    assert!(close(&done, DisputeResult::Decided, None, t0, cal()).is_err());
}

#[test]
fn suspension_pauses_the_review_clock_for_exactly_the_suspended_days_and_consent_withdrawal_resumes_it()
 {
    let t0 = at(2026, 3, 2, 9);
    let r = taken_in(DisputeStage::InReview, &[ClaimKind::Discretion], t0);
    let due = review(&r).due_at;
    // In 行政复议 the written suspension notice is required.
    assert!(start_mediation(&r, &consents(), true, None, t0, cal()).is_err());
    let m = start_mediation(
        &r,
        &consents(),
        true,
        Some(&doc()),
        at(2026, 3, 12, 10),
        cal(),
    )
    .expect("suspended");
    assert!(m.dispute.review_suspended);
    assert!(review(&m).is_paused());
    assert_eq!(m.dispute.notices.len(), 1);
    let d = draft_agreement(&m, Some(&doc()), at(2026, 3, 20, 10), cal()).expect("draft");
    // A party backs out before the 调解书 takes effect: the review resumes, notice required.
    assert!(withdraw_consent(&d, Some("p2"), None, at(2026, 3, 27, 10), cal()).is_err());
    let back = withdraw_consent(&d, Some("p2"), Some(&doc()), at(2026, 3, 27, 10), cal())
        .expect("resumed");
    assert_eq!(back.state(), S::Open);
    assert!(!back.dispute.review_suspended);
    assert!(back.dispute.agreement.is_none());
    assert_eq!(back.dispute.notices.len(), 2);
    assert_eq!(back.dispute.notices[1].kind(), ReviewNoticeKind::Resumption);
    let c = review(&back);
    assert!(!c.is_paused());
    // Suspended 12 March, resumed 27 March: the 15 days after the day it began through the
    // day it ended are not counted.
    assert_eq!(c.due_at, due_after(t0, 75));
    assert!(c.due_at > due);
    // The organ decides: CLOSED with the decision; the clock stops.
    let closed = close(
        &back,
        DisputeResult::Decided,
        Some(&doc()),
        at(2026, 4, 1, 9),
        cal(),
    )
    .expect("decided");
    assert_eq!(closed.state(), S::Closed);
    assert!(closed.clocks.iter().all(|c| c.is_stopped()));
    assert!(close(&back, DisputeResult::MediationAgreement, None, t0, cal()).is_err());
    // The organ may back out too.
    let back2 =
        withdraw_consent(&m, None, Some(&doc()), at(2026, 3, 12, 11), cal()).expect("organ");
    // A suspension within one day moves nothing.
    assert_eq!(review(&back2).due_at, due);
    assert!(withdraw_consent(&m, Some("p9"), Some(&doc()), t0, cal()).is_err());
}

#[test]
fn the_review_extends_by_thirty_days_only_with_the_review_heads_approval() {
    let t0 = at(2026, 3, 2, 9);
    let r = taken_in(DisputeStage::InReview, &[ClaimKind::Compensation], t0);
    let due = review(&r).due_at;
    let e = extend_review(&r, 30, &["review_officer".into()], t0, cal()).expect_err("role");
    assert_eq!(reason(e), Reason::ClockApproverRoleRequired);
    let head = vec![rules::REVIEW_HEAD_ROLE.to_owned()];
    assert_eq!(
        reason(extend_review(&r, 31, &head, t0, cal()).expect_err("too long")),
        Reason::ClockExtensionTooLong
    );
    let x = extend_review(&r, 30, &head, t0, cal()).expect("extended");
    assert_eq!(review(&x).due_at, due_after(t0, 90));
    assert!(review(&x).due_at > due);
    let before = taken_in(DisputeStage::BeforeReview, &[ClaimKind::Compensation], t0);
    assert_eq!(
        reason(extend_review(&before, 10, &head, t0, cal()).expect_err("no clock")),
        Reason::ClockNotRunning
    );
    // Past the 60 days the dispute shows overdue and can no longer be extended.
    let mut late = r.clone();
    assert!(!sweep(&mut late, due - 1, cal()).expect("sweep"));
    assert!(!late.dispute.overdue);
    assert!(sweep(&mut late, due, cal()).expect("sweep"));
    assert!(late.dispute.overdue);
    assert!(!sweep(&mut late, due + DAY, cal()).expect("sweep"));
    assert!(extend_review(&late, 10, &head, due + DAY, cal()).is_err());
}

#[test]
fn a_referred_dispute_reports_its_result_once_when_finished() {
    let t0 = at(2026, 3, 2, 9);
    let mut r = taken_in(DisputeStage::InSupervision, &[ClaimKind::Legality], t0);
    r.dispute.procuratorate = Some(ProcuratorateInvolvement {
        procuratorate: agency("agencies/xigang-procuratorate"),
        transfer: "transfers/t1".into(),
        referred_by_procuratorate: true,
        ..ProcuratorateInvolvement::default()
    });
    assert_eq!(
        reason(report_back(&r, t0, cal()).expect_err("open")),
        Reason::WrongState
    );
    let c = start_coordination(&r, CoordinationMethod::Correction, t0, cal()).expect("c");
    let done = record_correction(&c, Some(&doc()), t0, cal()).expect("corrected");
    let (reported, code) = report_back(&done, t0 + 1, cal()).expect("reported");
    assert_eq!(code, "administrative_action_corrected");
    let p = reported.dispute.procuratorate.as_ref().expect("p");
    assert!(p.reported);
    assert_eq!(p.outcome.as_ref().map(|o| o.code.as_str()), Some(code));
    assert_eq!(reported.state(), S::Resolved);
    assert_eq!(
        reason(report_back(&reported, t0 + 2, cal()).expect_err("twice")),
        Reason::AlreadyExists
    );
    // A dispute not referred has nothing to report.
    let own = record_correction(
        &start_coordination(
            &taken_in(DisputeStage::BeforeReview, &[ClaimKind::Legality], t0),
            CoordinationMethod::Correction,
            t0,
            cal(),
        )
        .expect("c"),
        Some(&doc()),
        t0,
        cal(),
    )
    .expect("corrected");
    assert_eq!(
        reason(report_back(&own, t0, cal()).expect_err("not referred")),
        Reason::WrongParty
    );
}

#[test]
fn amended_claims_decide_the_scope_again_while_open_only() {
    let t0 = at(2026, 3, 2, 9);
    let r = taken_in(DisputeStage::InSupervision, &[ClaimKind::Legality], t0);
    assert!(!r.dispute.scope.as_ref().expect("s").mediation_allowed);
    assert!(amend_claims(&r, &[], None, t0, cal()).is_err());
    let claim = Claim {
        kind: ClaimKind::Compensation as i32,
        ..Claim::default()
    };
    let act = AdministrativeAct {
        document_number: "新文号".into(),
        ..AdministrativeAct::default()
    };
    let a = amend_claims(&r, std::slice::from_ref(&claim), Some(&act), t0, cal()).expect("amended");
    assert!(a.dispute.scope.as_ref().expect("s").mediation_allowed);
    assert_eq!(
        a.dispute.act.as_ref().map(|x| x.document_number.as_str()),
        Some("新文号")
    );
    assert!(start_mediation(&a, &consents(), true, None, t0, cal()).is_ok());
    let c = start_coordination(&a, CoordinationMethod::Explanation, t0, cal()).expect("c");
    assert_eq!(
        reason(amend_claims(&c, &[claim], None, t0, cal()).expect_err("under way")),
        Reason::WrongState
    );
}

#[test]
fn settlement_withdraws_the_dispute() {
    let t0 = at(2026, 3, 2, 9);
    let r = taken_in(DisputeStage::InReview, &[ClaimKind::Compensation], t0);
    let m = start_mediation(&r, &consents(), true, Some(&doc()), t0, cal()).expect("m");
    assert!(record_settlement(&m, None, t0, cal()).is_err());
    let w = record_settlement(&m, Some(&doc()), t0 + DAY, cal()).expect("withdrawn");
    assert_eq!(w.state(), S::Withdrawn);
    assert_eq!(w.dispute.result(), DisputeResult::SettledWithdrawn);
    assert!(!w.dispute.review_suspended);
    assert!(w.clocks.iter().all(|c| c.is_stopped()));
    let d = draft_agreement(&m, Some(&doc()), t0, cal()).expect("draft");
    assert_eq!(
        reason(record_settlement(&d, Some(&doc()), t0, cal()).expect_err("pending")),
        Reason::WrongState
    );
}

#[test]
fn the_procuratorate_is_asked_once_its_clock_runs_three_months_and_stops_on_the_answer() {
    let t0 = at(2026, 3, 2, 9);
    let r = taken_in(DisputeStage::InSupervision, &[ClaimKind::Legality], t0);
    let p = "agencies/xigang-procuratorate";
    let a = ask_procuratorate(
        &r,
        p,
        "transfers/t1",
        ProcuratorateRequestKind::Examine,
        t0,
        cal(),
    )
    .expect("asked");
    assert!(a.participants().contains(&p.to_owned()));
    let e = ask_procuratorate(
        &a,
        p,
        "transfers/t2",
        ProcuratorateRequestKind::Examine,
        t0,
        cal(),
    )
    .expect_err("open");
    assert_eq!(reason(e), Reason::OpenTransferExists);
    let acc = procuratorate_accepted(&a, 3, t0 + DAY, cal()).expect("accepted");
    let c = acc
        .clocks
        .iter()
        .find(|c| c.name == rules::PROCURATORATE_CLOCK)
        .expect("clock");
    assert_eq!(c.due_at, due_after(t0 + DAY, 92));
    assert_eq!(
        procuratorate_accepted(&acc, 3, t0 + 2 * DAY, cal()).expect("again"),
        acc
    );
    let outcome = ReasonCode {
        code: "no_supervision_grounds".into(),
        ..ReasonCode::default()
    };
    let ans = procuratorate_answered(&acc, outcome, t0 + 30 * DAY, cal()).expect("answered");
    assert!(ans.clocks.iter().all(|c| c.is_stopped() && !c.expired));
    assert!(!ans.dispute.overdue);
    assert_eq!(
        ans.dispute
            .procuratorate
            .as_ref()
            .and_then(|p| p.outcome.as_ref())
            .map(|o| o.code.as_str()),
        Some("no_supervision_grounds")
    );
    // Answered: it may be asked again.
    assert!(
        ask_procuratorate(
            &ans,
            p,
            "transfers/t3",
            ProcuratorateRequestKind::Participate,
            t0,
            cal()
        )
        .is_ok()
    );
}
