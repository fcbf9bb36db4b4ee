use super::*;
use chrono::{FixedOffset, TimeZone};
use fengqiao_proto::judicialconfirmation::PackageItemKind as K;
use fengqiao_testkit::services::bare_parties;

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub(crate) const COURT: &str = "agencies/xigang-court";
pub(crate) const OTHER_COURT: &str = "agencies/zhongshan-court";

pub(crate) fn at(y: i32, m: u32, d: u32, h: u32) -> i64 {
    FixedOffset::east_opt(8 * 3600)
        .expect("offset")
        .with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("time")
        .timestamp_micros()
}

pub(crate) fn cal() -> HolidayCalendar {
    HolidayCalendar::weekdays_only("test")
}

pub(crate) fn doc() -> EvidenceRef {
    EvidenceRef {
        display_name: "调解协议书".into(),
        media_type: "application/pdf".into(),
        sha256: SHA.into(),
        ..EvidenceRef::default()
    }
}

fn item(kind: K, party: &str) -> PackageItem {
    PackageItem {
        kind: kind as i32,
        document: Some(doc()),
        party_id: party.into(),
    }
}

/// The agreement took effect Monday 2 March 2026, 08:00.
fn intake() -> Intake {
    Intake {
        case_id: "c1".into(),
        transfer: "transfers/t1".into(),
        pre_filing_case: String::new(),
        committee: "agencies/xigang-committee".into(),
        committee_court: COURT.into(),
        delegating_court: None,
        source: ApplicationSource::PeoplesMediation,
        parties: bare_parties(&["a", "b"]),
        applicants: vec!["a".into(), "b".into()],
        represented: vec![],
        agreement: Some(doc()),
        agreement_effective_at: at(2026, 3, 2, 8),
        package: vec![
            item(K::Application, ""),
            item(K::IdentityProof, "a"),
            item(K::ServiceAddress, "a"),
            item(K::IdentityProof, "b"),
            item(K::ServiceAddress, "b"),
        ],
        submitted_at: 0,
    }
}

pub(crate) fn received(now: i64) -> Record {
    receive("applications/x", COURT, &intake(), now, &cal()).expect("received")
}

fn reason(r: Result<Record, Error>) -> Option<Reason> {
    match r {
        Err(Error::Refused(reason, _)) => Some(reason),
        Err(Error::Api(e)) => Some(e.reason),
        _ => None,
    }
}

fn is_wrong_state(r: Result<Record, Error>) -> bool {
    matches!(r, Err(Error::WrongState { .. }))
}

#[test]
fn day_30_is_received_day_31_refused_one_party_alone_and_the_wrong_court_too() {
    let c = cal();
    let r = received(at(2026, 4, 1, 16));
    assert_eq!(r.state(), S::Received);
    assert_eq!(r.clocks[0].name, "acceptance");
    assert_eq!(r.application.clocks.len(), 1);
    assert_eq!(
        reason(receive(
            "applications/x",
            COURT,
            &intake(),
            at(2026, 4, 2, 9),
            &c
        )),
        Some(Reason::ApplicationPeriodLapsed)
    );
    let mut alone = intake();
    alone.applicants = vec!["a".into()];
    assert_eq!(
        reason(receive(
            "applications/x",
            COURT,
            &alone,
            at(2026, 3, 3, 9),
            &c
        )),
        Some(Reason::NotJointApplication)
    );
    assert_eq!(
        reason(receive(
            "applications/x",
            OTHER_COURT,
            &intake(),
            at(2026, 3, 3, 9),
            &c
        )),
        Some(Reason::WrongCourt)
    );
    let mut delegated = intake();
    delegated.delegating_court = Some(OTHER_COURT.into());
    assert!(
        receive(
            "applications/x",
            OTHER_COURT,
            &delegated,
            at(2026, 3, 3, 9),
            &c
        )
        .is_ok()
    );
    // 诉前调确: from the court's own court diversion case, the delegating court itself
    // (法释〔2011〕5号 Art 2); not on a transfer, not at another court.
    let mut pre = intake();
    pre.source = ApplicationSource::PreFiling;
    pre.transfer = String::new();
    pre.pre_filing_case = "cases/c1".into();
    pre.delegating_court = Some(COURT.into());
    let taken = receive("applications/x", COURT, &pre, at(2026, 3, 3, 9), &c).expect("pre-filing");
    assert_eq!(taken.state(), S::Received);
    assert_eq!(taken.application.pre_filing_case, "cases/c1");
    assert!(taken.application.transfer.is_empty());
    let mut elsewhere = pre.clone();
    elsewhere.delegating_court = Some(OTHER_COURT.into());
    assert_eq!(
        reason(receive(
            "applications/x",
            COURT,
            &elsewhere,
            at(2026, 3, 3, 9),
            &c
        )),
        Some(Reason::WrongCourt)
    );
    let mut on_transfer = pre.clone();
    on_transfer.transfer = "transfers/t1".into();
    assert!(matches!(
        receive("applications/x", COURT, &on_transfer, at(2026, 3, 3, 9), &c),
        Err(Error::Invalid(_))
    ));
    let mut no_case = pre.clone();
    no_case.pre_filing_case = String::new();
    assert!(matches!(
        receive("applications/x", COURT, &no_case, at(2026, 3, 3, 9), &c),
        Err(Error::Invalid(_))
    ));
    // A pre-filing application is accepted with a 诉前调确 number only (2022 statistics rule).
    assert!(accept(&taken, "(2026)辽0203民特调确1号", at(2026, 3, 3, 10), &c).is_err());
    let accepted =
        accept(&taken, "(2026)辽0203诉前调确1号", at(2026, 3, 3, 10), &c).expect("accept");
    assert_eq!(accepted.state(), S::UnderReview);
    // The committee's submission time counts, not the court's receipt (人民调解法 Art 33):
    // submitted on day 30, received on day 31, in time; submitted on day 31, refused.
    let mut submitted = intake();
    submitted.submitted_at = at(2026, 4, 1, 16);
    let late_receipt = receive("applications/x", COURT, &submitted, at(2026, 4, 2, 9), &c);
    assert_eq!(late_receipt.map(|r| r.state()).ok(), Some(S::Received));
    submitted.submitted_at = at(2026, 4, 2, 9);
    assert_eq!(
        reason(receive(
            "applications/x",
            COURT,
            &submitted,
            at(2026, 4, 2, 10),
            &c
        )),
        Some(Reason::ApplicationPeriodLapsed)
    );
    let mut no_digest = intake();
    no_digest.agreement = None;
    assert!(matches!(
        receive("applications/x", COURT, &no_digest, at(2026, 3, 3, 9), &c),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn accepted_then_confirmed_without_fee() {
    let c = cal();
    let r = received(at(2026, 3, 3, 9));
    assert!(accept(&r, "(2026)辽0203诉前调确1号", at(2026, 3, 4, 9), &c).is_err());
    let r = accept(&r, "(2026)辽0203民特调确12号", at(2026, 3, 4, 9), &c).expect("accepted");
    assert_eq!(r.state(), S::UnderReview);
    assert_eq!(
        r.application.confirmation_number,
        "(2026)辽0203民特调确12号"
    );
    assert!(r.clocks[0].is_stopped());
    assert_eq!(r.clocks[1].name, "review");
    assert!(is_wrong_state(accept(
        &r,
        "(2026)辽0203民特调确13号",
        at(2026, 3, 4, 10),
        &c
    )));
    assert!(
        rule(
            &r,
            RulingOutcome::Confirmed,
            "content_unclear",
            Some(&doc()),
            at(2026, 3, 10, 9),
            &c
        )
        .is_err()
    );
    assert!(
        rule(
            &r,
            RulingOutcome::Confirmed,
            "",
            None,
            at(2026, 3, 10, 9),
            &c
        )
        .is_err()
    );
    let r = rule(
        &r,
        RulingOutcome::Confirmed,
        "",
        Some(&doc()),
        at(2026, 3, 10, 9),
        &c,
    )
    .expect("confirmed");
    assert_eq!(r.state(), S::Confirmed);
    let ruling = r.application.ruling.as_ref().expect("ruling");
    assert_eq!(ruling.fee.as_ref().map(|f| f.units), Some(0));
    assert!(r.clocks.iter().all(Clock::is_stopped));
    assert!(!r.application.overdue);
    assert!(is_wrong_state(withdraw(&r, at(2026, 3, 11, 9), &c)));
    assert_eq!(
        crate::rules::route_outcome(r.state()),
        Some("confirmed_valid")
    );
}

#[test]
fn dismissed_with_an_art_358_ground_and_not_accepted_with_an_art_355_ground() {
    let c = cal();
    let r = received(at(2026, 3, 3, 9));
    assert!(is_wrong_state(rule(
        &r,
        RulingOutcome::Dismissed,
        "not_voluntary",
        Some(&doc()),
        at(2026, 3, 3, 10),
        &c
    )));
    let accepted = accept(&r, "(2026)辽0203民特调确12号", at(2026, 3, 4, 9), &c).expect("accepted");
    assert!(
        rule(
            &accepted,
            RulingOutcome::Dismissed,
            "",
            Some(&doc()),
            at(2026, 3, 5, 9),
            &c
        )
        .is_err()
    );
    assert!(
        rule(
            &accepted,
            RulingOutcome::Dismissed,
            "ownership_confirmation",
            Some(&doc()),
            at(2026, 3, 5, 9),
            &c
        )
        .is_err()
    );
    let d = rule(
        &accepted,
        RulingOutcome::Dismissed,
        "not_voluntary",
        Some(&doc()),
        at(2026, 3, 5, 9),
        &c,
    )
    .expect("dismissed");
    assert_eq!(d.state(), S::Dismissed);
    assert_eq!(ground(&d).map(|g| g.code.as_str()), Some("not_voluntary"));
    assert!(crate::rules::report_non_confirmation(d.state()));

    assert!(is_wrong_state(reject(
        &accepted,
        "ownership_confirmation",
        at(2026, 3, 5, 9),
        &c
    )));
    assert!(reject(&r, "not_voluntary", at(2026, 3, 4, 9), &c).is_err());
    let n = reject(&r, "ownership_confirmation", at(2026, 3, 4, 9), &c).expect("not accepted");
    assert_eq!(n.state(), S::NotAccepted);
    assert_eq!(
        ground(&n).map(|g| g.code.as_str()),
        Some("ownership_confirmation")
    );
    assert!(n.clocks[0].is_stopped());
}

#[test]
fn the_review_extends_by_ten_only_with_the_president_and_never_further() {
    let c = cal();
    let r = received(at(2026, 3, 2, 9));
    assert!(is_wrong_state(extend(
        &r,
        5,
        &["court_president".into()],
        at(2026, 3, 2, 10),
        &c
    )));
    let r = accept(&r, "(2026)辽0203民特调确12号", at(2026, 3, 2, 10), &c).expect("accepted");
    assert_eq!(r.clocks[1].due_at, at(2026, 3, 18, 0));
    assert_eq!(
        reason(extend(&r, 10, &["judge".into()], at(2026, 3, 10, 9), &c)),
        Some(Reason::ClockApproverRoleRequired)
    );
    assert_eq!(
        reason(extend(
            &r,
            11,
            &["court_president".into()],
            at(2026, 3, 10, 9),
            &c
        )),
        Some(Reason::ClockExtensionTooLong)
    );
    let r = extend(&r, 10, &["court_president".into()], at(2026, 3, 10, 9), &c).expect("extended");
    assert_eq!(r.clocks[1].due_at, at(2026, 3, 28, 0));
    assert_eq!(
        reason(extend(
            &r,
            1,
            &["court_president".into()],
            at(2026, 3, 11, 9),
            &c
        )),
        Some(Reason::ClockExtensionTooLong)
    );
    // Never past 30 days from acceptance (民事诉讼法 Art 187).
    assert!(r.clocks[1].due_at <= at(2026, 4, 2, 0));
}

#[test]
fn supplementary_materials_pause_the_decision_clock_and_block_the_ruling() {
    let c = cal();
    let r = received(at(2026, 3, 2, 9));
    let r = accept(&r, "(2026)辽0203民特调确12号", at(2026, 3, 2, 10), &c).expect("accepted");
    assert!(receive_supplement(&r, at(2026, 3, 3, 9), &c).is_err());
    assert!(request_supplement(&r, " ", at(2026, 3, 4, 15), &c).is_err());
    let p = request_supplement(&r, "补充身份证明", at(2026, 3, 4, 15), &c).expect("paused");
    assert!(p.clocks[1].is_paused());
    assert!(p.application.clocks[1].paused);
    assert_eq!(
        reason(rule(
            &p,
            RulingOutcome::Confirmed,
            "",
            Some(&doc()),
            at(2026, 3, 5, 9),
            &c
        )),
        Some(Reason::ClockPaused)
    );
    let p = receive_supplement(&p, at(2026, 3, 9, 11), &c).expect("resumed");
    // 5 days (5–9 March) not counted: day 15 Sunday 22 March → Monday 23 (民事诉讼法 Art 85).
    assert_eq!(p.clocks[1].due_at, at(2026, 3, 24, 0));
    assert!(p.application.supplements[0].receive_time.is_some());
    // The acceptance clock pauses the same way, and acceptance waits for the materials.
    let q = request_supplement(
        &received(at(2026, 3, 2, 9)),
        "补充申请书",
        at(2026, 3, 2, 12),
        &c,
    )
    .expect("paused");
    assert_eq!(
        reason(accept(
            &q,
            "(2026)辽0203民特调确12号",
            at(2026, 3, 3, 9),
            &c
        )),
        Some(Reason::ClockPaused)
    );
}

#[test]
fn withdrawal_before_the_ruling_only() {
    let c = cal();
    let r = received(at(2026, 3, 2, 9));
    let w = withdraw(&r, at(2026, 3, 3, 9), &c).expect("withdrawn");
    assert_eq!(w.state(), S::Withdrawn);
    assert!(w.clocks[0].is_stopped());
    let a = accept(&r, "(2026)辽0203民特调确12号", at(2026, 3, 3, 9), &c).expect("accepted");
    let w = withdraw(&a, at(2026, 3, 5, 9), &c).expect("withdrawn under review");
    assert_eq!(crate::rules::route_outcome(w.state()), Some("withdrawn"));
    assert!(is_wrong_state(withdraw(&w, at(2026, 3, 6, 9), &c)));
}

#[test]
fn a_partys_objection_on_day_16_is_refused_an_interested_persons_within_6_months_taken() {
    let c = cal();
    let r = received(at(2026, 3, 2, 9));
    assert!(is_wrong_state(object(
        &r,
        ObjectorKind::Party,
        at(2026, 3, 2, 9),
        "x",
        at(2026, 3, 3, 9),
        &c
    )));
    let r = accept(&r, "(2026)辽0203民特调确12号", at(2026, 3, 2, 10), &c).expect("accepted");
    let r = rule(
        &r,
        RulingOutcome::Confirmed,
        "",
        Some(&doc()),
        at(2026, 3, 5, 9),
        &c,
    )
    .expect("ruled");
    // The ruling received Monday 9 March: day 15 is Tuesday 24 March, day 16 Wednesday 25.
    let got = at(2026, 3, 9, 10);
    assert!(
        object(
            &r,
            ObjectorKind::Party,
            got,
            "协议非自愿",
            at(2026, 3, 24, 17),
            &c
        )
        .is_ok()
    );
    assert_eq!(
        reason(object(
            &r,
            ObjectorKind::Party,
            got,
            "协议非自愿",
            at(2026, 3, 25, 9),
            &c
        )),
        Some(Reason::ObjectionPeriodLapsed)
    );
    let taken = object(
        &r,
        ObjectorKind::InterestedPerson,
        got,
        "损害案外人权益",
        at(2026, 8, 20, 9),
        &c,
    )
    .expect("interested person within 6 months");
    assert_eq!(taken.application.objections.len(), 1);
    assert_eq!(taken.state(), S::Confirmed);
    assert_eq!(
        reason(object(
            &r,
            ObjectorKind::InterestedPerson,
            got,
            "x",
            at(2026, 9, 10, 9),
            &c
        )),
        Some(Reason::ObjectionPeriodLapsed)
    );
    assert!(object(&r, ObjectorKind::Party, got, " ", at(2026, 3, 10, 9), &c).is_err());
}

#[test]
fn overdue_clocks_notify_without_changing_the_state() {
    let c = cal();
    let mut r = received(at(2026, 3, 2, 9));
    assert!(!sweep(&mut r, at(2026, 3, 5, 23), &c).expect("sweep"));
    assert!(sweep(&mut r, at(2026, 3, 6, 0), &c).expect("sweep"));
    assert_eq!(r.state(), S::Received);
    assert!(r.application.overdue);
    assert!(r.clocks[0].expired);
    assert!(!sweep(&mut r, at(2026, 3, 7, 0), &c).expect("sweep again"));
    // A late acceptance is still recorded; the review clock starts fresh.
    let a = accept(&r, "(2026)辽0203民特调确12号", at(2026, 3, 9, 9), &c).expect("late acceptance");
    assert_eq!(a.state(), S::UnderReview);
    assert!(!a.application.overdue);
}

fn clerk() -> Actor {
    Actor {
        agency: COURT.into(),
        actor_id: "clerk-01".into(),
        ..Default::default()
    }
}

fn confirmed_and_dismissed() -> (Record, Record) {
    let c = cal();
    let r = received(at(2026, 3, 2, 9));
    let r = accept(&r, "(2026)辽0203民特调确12号", at(2026, 3, 2, 10), &c).expect("accepted");
    let confirmed = rule(
        &r,
        RulingOutcome::Confirmed,
        "",
        Some(&doc()),
        at(2026, 3, 5, 9),
        &c,
    )
    .expect("confirmed");
    let dismissed = rule(
        &r,
        RulingOutcome::Dismissed,
        "not_voluntary",
        Some(&doc()),
        at(2026, 3, 5, 9),
        &c,
    )
    .expect("dismissed");
    (confirmed, dismissed)
}

#[test]
fn a_confirmed_agreement_is_handed_off_for_enforcement_once_per_party() {
    let c = cal();
    let (confirmed, dismissed) = confirmed_and_dismissed();
    let now = at(2026, 4, 1, 9);
    let hand = |r: &Record, party: &str, d: Option<&EvidenceRef>| {
        hand_off_for_enforcement(r, party, d, "(2026)辽0203执1号", clerk(), now, &c)
    };
    // 民事诉讼法 Art 206 ¶1: a confirmed agreement only.
    assert!(is_wrong_state(hand(&dismissed, "a", Some(&doc()))));
    assert!(is_wrong_state(hand(
        &received(at(2026, 3, 2, 9)),
        "a",
        Some(&doc())
    )));
    // A party to the agreement, with the application's digest.
    assert!(matches!(
        hand(&confirmed, "x", Some(&doc())),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        hand(&confirmed, "a", None),
        Err(Error::Invalid(_))
    ));
    let mut undigested = doc();
    undigested.sha256 = String::new();
    assert!(matches!(
        hand(&confirmed, "a", Some(&undigested)),
        Err(Error::Invalid(_))
    ));
    let h = hand(&confirmed, "a", Some(&doc())).expect("handed off");
    assert_eq!(h.state(), S::Confirmed, "the state does not change");
    assert_eq!(h.application.enforcement_handoffs.len(), 1);
    let got = &h.application.enforcement_handoffs[0];
    assert_eq!(got.applicant_party_id, "a");
    assert_eq!(got.enforcement_reference, "(2026)辽0203执1号");
    assert_eq!(
        got.recorded_by.as_ref().map(|a| a.actor_id.as_str()),
        Some("clerk-01")
    );
    assert_eq!(got.handoff_time, Some(to_timestamp(now)));
    // Once per party; the other party may too.
    assert_eq!(
        reason(hand(&h, "a", Some(&doc()))),
        Some(Reason::AlreadyExists)
    );
    let both = hand(&h, "b", Some(&doc())).expect("the other party");
    assert_eq!(both.application.enforcement_handoffs.len(), 2);
}

#[test]
fn a_non_confirmation_is_reported_to_the_justice_bureau_and_the_committee_once() {
    let c = cal();
    let (confirmed, dismissed) = confirmed_and_dismissed();
    let now = at(2026, 3, 6, 9);
    let bureau = "agencies/xigang-justice-bureau";
    let report = |r: &Record, b: &str, d: Option<&EvidenceRef>| {
        report_non_confirmation(r, b, d, "协议非自愿", clerk(), now, &c)
    };
    // 法释〔2011〕5号 Art 12: not for a confirmed or undecided application.
    assert!(is_wrong_state(report(&confirmed, bureau, Some(&doc()))));
    assert!(is_wrong_state(report(
        &received(at(2026, 3, 2, 9)),
        bureau,
        Some(&doc())
    )));
    assert!(matches!(
        report(&dismissed, "xigang-justice-bureau", Some(&doc())),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        report(&dismissed, bureau, None),
        Err(Error::Invalid(_))
    ));
    let r = report(&dismissed, bureau, Some(&doc())).expect("reported");
    assert_eq!(r.state(), S::Dismissed, "the state does not change");
    let got = r
        .application
        .non_confirmation_report
        .clone()
        .expect("report");
    let to: Vec<&str> = got.recipients.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(to, [bureau, "agencies/xigang-committee"]);
    assert_eq!(got.report_time, Some(to_timestamp(now)));
    assert_eq!(
        reason(report(&r, bureau, Some(&doc()))),
        Some(Reason::AlreadyExists)
    );
    // Not accepted (民诉法解释 Art 355) is reportable too.
    let not_accepted = reject(
        &received(at(2026, 3, 2, 9)),
        "ownership_confirmation",
        at(2026, 3, 3, 9),
        &c,
    )
    .expect("not accepted");
    assert!(report(&not_accepted, bureau, Some(&doc())).is_ok());
}
