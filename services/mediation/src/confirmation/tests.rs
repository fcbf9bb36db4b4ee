use super::*;
use fengqiao_proto::common::{AgencyRef, Party};
use fengqiao_proto::mediation::Agreement;
use fengqiao_proto::router::{
    CaseSnapshot, ConfirmationPackageItem, ConfirmationPackageItemKind as K, Decline, Feedback,
};
use fengqiao_testkit::services::two_party_package;

const DAY: i64 = 86_400_000_000;
/// 2026-11-02 10:00 CST (a Monday): day 30 is Wednesday 2 December.
const EFFECTIVE: i64 = 1_793_584_800_000_000;
const COURT: &str = "agencies/xigang-court";

fn doc() -> EvidenceRef {
    EvidenceRef {
        display_name: "材料".into(),
        sha256: "ab".repeat(32),
        ..EvidenceRef::default()
    }
}

fn case() -> MediationCase {
    let party = |id: &str| Party {
        party_id: id.into(),
        ..Party::default()
    };
    MediationCase {
        name: "cases/c1".into(),
        agreement: Some(Agreement {
            agreement_number: "西调协〔2026〕1号".into(),
            parties: vec![party("p1"), party("p2")],
            effective: true,
            effective_time: Some(to_timestamp(EFFECTIVE)),
            ..Agreement::default()
        }),
        ..MediationCase::default()
    }
}

fn request(applicants: &[&str]) -> ApplyForConfirmationRequest {
    let item = |kind: K, party: &str| ConfirmationPackageItem {
        kind: kind as i32,
        document: Some(doc()),
        party_id: party.into(),
    };
    ApplyForConfirmationRequest {
        name: "cases/c1".into(),
        court: COURT.into(),
        applicant_party_ids: applicants.iter().map(|s| (*s).to_string()).collect(),
        items: two_party_package(K::Application, K::IdentityProof, K::ServiceAddress, item),
        request_id: "r".into(),
        ..ApplyForConfirmationRequest::default()
    }
}

fn reason(e: Error) -> Option<Reason> {
    match e {
        Error::Refused(r, _) => Some(r),
        _ => None,
    }
}

fn cal() -> &'static HolidayCalendar {
    HolidayCalendar::builtin()
}

#[test]
fn a_joint_application_in_time_to_the_competent_court_travels_with_the_digest() {
    let c = case();
    let p = prepare(&c, &request(&["p1", "p2"]), COURT, EFFECTIVE + DAY, cal());
    let p = p.expect("prepared");
    let sent = p.agreement.clone().unwrap_or_default();
    // SHA-256 of the exact bytes of the signed agreement record.
    let bytes = c.agreement.clone().unwrap_or_default().encode_to_vec();
    assert_eq!(sent.sha256, fengqiao_store::checksum(&bytes));
    assert_eq!(sent.sha256.len(), 64);
    assert_eq!(p.agreement_party_ids, ["p1", "p2"]);
    assert_eq!(p.applicant_party_ids, ["p1", "p2"]);
    assert_eq!(p.committee_court, COURT);
    assert_eq!(p.delegating_court, "");
    assert_eq!(p.items.len(), 5);
}

#[test]
fn one_party_alone_is_refused_citing_art_33() {
    let e = prepare(&case(), &request(&["p1"]), COURT, EFFECTIVE + DAY, cal());
    let e = e.expect_err("one party");
    let text = e.to_string();
    assert!(text.contains("Art 33"), "{text}");
    assert_eq!(reason(e), Some(Reason::NotJointApplication));
    // Someone who is not a party is a bad field.
    let e = prepare(&case(), &request(&["p1", "px"]), COURT, EFFECTIVE, cal());
    assert!(matches!(e, Err(Error::Invalid(_))));
}

#[test]
fn day_30_is_in_time_and_day_31_is_refused_citing_art_33() {
    let day30 = EFFECTIVE + 30 * DAY;
    assert!(prepare(&case(), &request(&["p1", "p2"]), COURT, day30, cal()).is_ok());
    let e =
        prepare(&case(), &request(&["p1", "p2"]), COURT, day30 + DAY, cal()).expect_err("day 31");
    assert!(e.to_string().contains("Art 33"), "{e}");
    assert_eq!(reason(e), Some(Reason::ApplicationPeriodLapsed));
}

#[test]
fn another_court_is_refused_and_a_delegating_court_is_competent() {
    let mut r = request(&["p1", "p2"]);
    r.court = "agencies/other-court".into();
    let e = prepare(&case(), &r, COURT, EFFECTIVE, cal()).expect_err("wrong court");
    assert_eq!(reason(e), Some(Reason::WrongCourt));
    // A 委派 case: the delegating court (法释〔2011〕5号 Art 2).
    let mut c = case();
    c.source_agency = Some(AgencyRef {
        name: "agencies/other-court".into(),
        kind: AgencyKind::Court as i32,
        ..AgencyRef::default()
    });
    let p = prepare(&c, &r, COURT, EFFECTIVE, cal()).expect("delegating court");
    assert_eq!(p.delegating_court, "agencies/other-court");
    let e = prepare(&c, &request(&["p1", "p2"]), COURT, EFFECTIVE, cal());
    assert_eq!(e.err().and_then(reason), Some(Reason::WrongCourt));
}

#[test]
fn no_effective_agreement_or_an_incomplete_package_is_refused() {
    let mut c = case();
    if let Some(a) = c.agreement.as_mut() {
        a.effective = false;
    }
    let e = prepare(&c, &request(&["p1", "p2"]), COURT, EFFECTIVE, cal());
    assert_eq!(e.err().and_then(reason), Some(Reason::NoEffectiveAgreement));
    let mut r = request(&["p1", "p2"]);
    r.items.pop();
    match prepare(&case(), &r, COURT, EFFECTIVE, cal()) {
        Err(Error::Invalid(v)) => assert_eq!(v[0].field, "parties[1]"),
        other => panic!("{other:?}"),
    }
    let mut r = request(&["p1", "p2"]);
    r.items[0].document = None;
    match prepare(&case(), &r, COURT, EFFECTIVE, cal()) {
        Err(Error::Invalid(v)) => assert_eq!(v[0].field, "items[0].document"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_committee_court_is_the_one_court_of_its_area() {
    let agency = |name: &str, kind: AgencyKind, region: &str| Agency {
        name: name.into(),
        kind: kind as i32,
        region_code: region.into(),
        active: true,
        ..Agency::default()
    };
    let committee = agency("agencies/c", AgencyKind::MediationCommittee, "210203");
    let court = agency(COURT, AgencyKind::Court, "210203");
    let other = agency("agencies/o", AgencyKind::Court, "210204");
    assert_eq!(
        committee_court(&committee, &[other.clone(), court.clone()]).as_deref(),
        Some(COURT)
    );
    assert_eq!(
        committee_court(&committee, std::slice::from_ref(&other)),
        None
    );
    let mut second = court.clone();
    second.name = "agencies/second".into();
    assert_eq!(committee_court(&committee, &[court, second]), None);
}

fn transfer(state: T) -> Transfer {
    Transfer {
        name: "transfers/t1".into(),
        state: state as i32,
        to_agency: Some(AgencyRef {
            name: COURT.into(),
            ..AgencyRef::default()
        }),
        case_snapshot: Some(CaseSnapshot {
            external_references: [(COURT.to_string(), "(2026)辽0203民特调确1号".to_string())]
                .into_iter()
                .collect(),
            ..CaseSnapshot::default()
        }),
        ..Transfer::default()
    }
}

fn feedback(outcome: &str, summary: &str) -> Transfer {
    let mut t = transfer(T::FeedbackSubmitted);
    t.feedback = Some(Feedback {
        outcome_code: outcome.into(),
        summary: summary.into(),
        documents: vec![doc()],
        ..Feedback::default()
    });
    t
}

fn progress(s: &Option<ConfirmationStatus>) -> P {
    s.as_ref()
        .map(|s| P::try_from(s.progress).unwrap_or_default())
        .unwrap_or_default()
}

#[test]
fn the_courts_answers_move_the_status_forward_only() {
    let submitted = status_from(None, &transfer(T::Delivered), 1);
    assert_eq!(progress(&submitted), P::Submitted);
    let accepted = status_from(submitted.as_ref(), &transfer(T::InProgress), 2);
    assert_eq!(progress(&accepted), P::Accepted);
    assert_eq!(
        accepted.as_ref().map(|s| s.confirmation_number.as_str()),
        Some("(2026)辽0203民特调确1号")
    );
    // An older message (DELIVERED) never moves it back.
    assert_eq!(
        status_from(accepted.as_ref(), &transfer(T::Delivered), 3),
        None
    );
    let confirmed = status_from(
        accepted.as_ref(),
        &feedback("confirmed_valid", "裁定调解协议有效"),
        4,
    );
    assert_eq!(progress(&confirmed), P::Confirmed);
    assert!(
        confirmed
            .as_ref()
            .is_some_and(|s| s.ruling_document.is_some())
    );
    // A final status never becomes another final status.
    assert_eq!(
        status_from(confirmed.as_ref(), &feedback("dismissed", "x"), 5),
        None
    );
    let mut closed = feedback("confirmed_valid", "裁定调解协议有效");
    closed.state = T::Closed as i32;
    assert_eq!(
        progress(&status_from(confirmed.as_ref(), &closed, 6)),
        P::Confirmed
    );
}

#[test]
fn dismissal_carries_its_art_358_ground_and_a_decline_its_art_355_ground() {
    let d = status_from(
        None,
        &feedback(
            "dismissed",
            "裁定驳回申请：违背公序良俗（民诉法解释 Art 358(3)） ground=against_public_order",
        ),
        1,
    );
    assert_eq!(progress(&d), P::Dismissed);
    assert_eq!(
        d.as_ref().map(|s| s.dismissal_ground_code.as_str()),
        Some("against_public_order")
    );
    let mut t = transfer(T::Declined);
    t.decline = Some(Decline {
        reason_code: "ownership_confirmation".into(),
        reason_description: "调解协议内容涉及物权、知识产权确权".into(),
        ..Decline::default()
    });
    let n = status_from(None, &t, 1);
    assert_eq!(progress(&n), P::NotAccepted);
    assert_eq!(
        n.and_then(|s| s.rejection).map(|r| r.code),
        Some("ownership_confirmation".to_string())
    );
    assert_eq!(
        progress(&status_from(None, &feedback("withdrawn", "撤回"), 1)),
        P::Withdrawn
    );
    assert_eq!(ground_of("no marker"), "");
    assert_eq!(ground_of("ground=Bad Code"), "");
}

#[test]
fn only_unfinished_applications_block_a_new_one() {
    let mut c = case();
    assert!(open_application(&c).is_none());
    let open = [P::Submitted, P::Accepted, P::Confirmed, P::Dismissed].map(|p| (p, true));
    let closed = [P::NotAccepted, P::Withdrawn].map(|p| (p, false));
    for (p, open) in open.into_iter().chain(closed) {
        c.confirmation = Some(ConfirmationStatus {
            progress: p as i32,
            ..ConfirmationStatus::default()
        });
        assert_eq!(open_application(&c).is_some(), open, "{p:?}");
    }
}

#[test]
fn only_a_ruled_application_is_final_for_the_committee() {
    let status = |p: P| ConfirmationStatus {
        progress: p as i32,
        ..Default::default()
    };
    for p in [P::Confirmed, P::Dismissed] {
        assert!(is_ruled(&status(p)), "{p:?}");
    }
    for p in [P::Submitted, P::Accepted, P::NotAccepted, P::Withdrawn] {
        assert!(!is_ruled(&status(p)), "{p:?}");
    }
}
