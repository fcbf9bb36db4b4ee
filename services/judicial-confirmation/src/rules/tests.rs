use super::*;
use fengqiao_clock::Clock;
use fengqiao_router::routes::RouteCatalog;

/// A CST wall-clock instant in unix µs.
fn at(y: i32, m: u32, d: u32, h: u32) -> i64 {
    cst()
        .with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("valid time")
        .timestamp_micros()
}

fn cal() -> HolidayCalendar {
    HolidayCalendar::weekdays_only("test")
}

fn reason(r: Result<(), Error>) -> Option<Reason> {
    match r {
        Err(Error::Refused(reason, _)) => Some(reason),
        _ => None,
    }
}

fn doc(sha: &str) -> EvidenceRef {
    EvidenceRef {
        display_name: "调解协议书".into(),
        media_type: "application/pdf".into(),
        sha256: sha.into(),
        ..EvidenceRef::default()
    }
}

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn day_30_is_in_time_and_day_31_is_refused_naming_article_33() {
    // Effective Monday 2 March 2026, 10:00: day 30 is Wednesday 1 April.
    let effective = at(2026, 3, 2, 10);
    assert_eq!(application_deadline(effective, &cal()), at(2026, 4, 2, 0));
    assert!(check_application_period(effective, at(2026, 4, 1, 23), &cal()).is_ok());
    let late = check_application_period(effective, at(2026, 4, 2, 0), &cal());
    match &late {
        Err(Error::Refused(Reason::ApplicationPeriodLapsed, msg)) => {
            assert!(msg.contains("人民调解法 Art 33"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // The same day the agreement took effect is fine; before it is not an application.
    assert!(check_application_period(effective, effective, &cal()).is_ok());
    assert!(matches!(
        check_application_period(effective, effective - 1, &cal()),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn an_application_period_ending_on_a_weekend_runs_to_monday() {
    // Effective Thursday 5 March 2026: day 30 is Saturday 4 April → Monday 6 April
    // (民事诉讼法 Art 85).
    let effective = at(2026, 3, 5, 9);
    assert_eq!(application_deadline(effective, &cal()), at(2026, 4, 7, 0));
    assert!(check_application_period(effective, at(2026, 4, 6, 20), &cal()).is_ok());
}

#[test]
fn one_party_alone_is_refused() {
    assert_eq!(
        reason(check_joint(&["a", "b"], &["a"])),
        Some(Reason::NotJointApplication)
    );
    assert_eq!(
        reason(check_joint(&["a", "b", "c"], &["a", "c"])),
        Some(Reason::NotJointApplication)
    );
    assert!(check_joint(&["a", "b"], &["b", "a"]).is_ok());
    assert!(matches!(
        check_joint(&["a"], &["a"]),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn the_competent_court_is_the_delegating_court_or_else_the_committees() {
    assert_eq!(competent_court("agencies/x", None), "agencies/x");
    assert_eq!(competent_court("agencies/x", Some("")), "agencies/x");
    assert_eq!(
        competent_court("agencies/x", Some("agencies/y")),
        "agencies/y"
    );
    assert!(check_court("agencies/x", "agencies/x", None).is_ok());
    assert_eq!(
        reason(check_court("agencies/z", "agencies/x", None)),
        Some(Reason::WrongCourt)
    );
    assert_eq!(
        reason(check_court("agencies/x", "agencies/x", Some("agencies/y"))),
        Some(Reason::WrongCourt)
    );
}

fn item(kind: PackageItemKind, party: &str) -> PackageItem {
    PackageItem {
        kind: kind as i32,
        document: Some(doc(SHA)),
        party_id: party.into(),
    }
}

fn party(id: &str) -> Party {
    Party {
        party_id: id.into(),
        ..Party::default()
    }
}

#[test]
fn the_package_of_article_3_is_complete_for_every_party() {
    use PackageItemKind as K;
    let parties = [party("a"), party("b")];
    let mut package = vec![
        item(K::Application, ""),
        item(K::IdentityProof, "a"),
        item(K::ServiceAddress, "a"),
        item(K::IdentityProof, "b"),
        item(K::ServiceAddress, "b"),
    ];
    assert!(check_package(&parties, &[], &package).is_ok());
    // An agent needs an authorisation.
    assert!(check_package(&parties, &["b"], &package).is_err());
    package.push(item(K::Authorization, "b"));
    assert!(check_package(&parties, &["b"], &package).is_ok());
    // Missing pieces are named by field, without personal information.
    let no_address: Vec<_> = package
        .iter()
        .filter(|i| !(i.kind == K::ServiceAddress as i32 && i.party_id == "b"))
        .cloned()
        .collect();
    match check_package(&parties, &[], &no_address) {
        Err(Error::Invalid(v)) => assert_eq!(v[0].field, "parties[1]"),
        other => panic!("{other:?}"),
    }
    assert!(check_package(&parties, &[], &package[1..]).is_err());
    // Every document carries its digest.
    let mut bad = package.clone();
    bad[0].document = Some(doc("ABC"));
    match check_package(&parties, &[], &bad) {
        Err(Error::Invalid(v)) => assert_eq!(v[0].field, "package[0].document"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn digests_are_lower_case_hex_sha256() {
    assert!(check_digest("agreement", Some(&doc(SHA))).is_ok());
    assert!(check_digest("agreement", Some(&doc(&SHA.to_uppercase()))).is_err());
    assert!(check_digest("agreement", Some(&doc(&SHA[1..]))).is_err());
    assert!(check_digest("agreement", None).is_err());
}

#[test]
fn confirmation_numbers_match_the_source() {
    use ApplicationSource as Src;
    assert!(check_confirmation_number("(2026)辽0203民特调确12号", Src::PeoplesMediation).is_ok());
    assert!(check_confirmation_number("（2026）辽0203诉前调确3号", Src::PreFiling).is_ok());
    assert!(check_confirmation_number("(2026)辽0203诉前调确3号", Src::PeoplesMediation).is_err());
    assert!(check_confirmation_number("(2026)辽0203民特调确12号", Src::PreFiling).is_err());
    assert!(check_confirmation_number("(2026)辽0203民初12号", Src::PeoplesMediation).is_err());
    assert!(check_confirmation_number("", Src::PeoplesMediation).is_err());
    assert!(check_confirmation_number("2026调确12号", Src::PeoplesMediation).is_err());
    assert!(check_confirmation_number("(2026)调确12号", Src::Unspecified).is_err());
}

/// The route as the router ships it (deploy/routes/mediation-to-court-confirmation.v1.toml).
fn route() -> fengqiao_proto::router::Route {
    RouteCatalog::builtin()
        .expect("built-in routes load")
        .current(ROUTE_ID)
        .expect("the confirmation route is built in")
        .clone()
}

#[test]
fn the_art_355_grounds_are_the_routes_decline_reasons() {
    let route = route();
    let mut ours: Vec<&str> = NOT_ACCEPTED_GROUNDS.iter().map(|g| g.code).collect();
    let mut theirs: Vec<&str> = route
        .decline_reasons
        .iter()
        .map(|r| r.code.as_str())
        .collect();
    ours.sort_unstable();
    theirs.sort_unstable();
    assert_eq!(ours, theirs);
    for g in NOT_ACCEPTED_GROUNDS {
        assert_eq!(not_accepted_ground("ground_code", g.code).ok(), Some(g));
        assert!(!g.basis.is_empty());
        assert_eq!(g.to_proto().code, g.code);
    }
    assert!(not_accepted_ground("ground_code", "content_unclear").is_err());
}

#[test]
fn the_art_358_grounds_are_six_and_distinct_from_art_355() {
    for g in DISMISSAL_GROUNDS {
        assert_eq!(dismissal_ground("ground_code", g.code).ok(), Some(g));
        assert!(g.basis.starts_with("民诉法解释 Art 358"));
        assert!(not_accepted_ground("ground_code", g.code).is_err());
    }
    assert!(dismissal_ground("ground_code", "outside_court_scope").is_err());
    assert!(dismissal_ground("ground_code", "").is_err());
}

#[test]
fn final_states_map_to_the_routes_feedback_outcomes() {
    let route = route();
    let codes: Vec<&str> = route
        .feedback_outcomes
        .iter()
        .map(|o| o.code.as_str())
        .collect();
    for s in crate::lifecycle::ALL_STATES {
        if let Some(code) = route_outcome(s) {
            assert!(codes.contains(&code), "{code}");
        }
    }
    assert_eq!(route_outcome(S::Confirmed), Some("confirmed_valid"));
    assert_eq!(route_outcome(S::UnderReview), None);
    assert_eq!(route_outcome(S::NotAccepted), None);
    assert!(report_non_confirmation(S::Dismissed));
    assert!(report_non_confirmation(S::NotAccepted));
    assert!(!report_non_confirmation(S::Confirmed));
    let f = fee();
    assert_eq!((f.units, f.nanos, f.currency_code.as_str()), (0, 0, "CNY"));
}

#[test]
fn the_clock_rules_are_valid_and_agree_with_the_route() {
    assert_eq!(fengqiao_clock::validate_rule(&acceptance_rule()), Ok(()));
    assert_eq!(fengqiao_clock::validate_rule(&review_rule()), Ok(()));
    let route = route();
    let acc = route.acceptance_clock.expect("acceptance clock");
    assert_eq!(
        (acc.unit, acc.length),
        (acceptance_rule().unit, ACCEPTANCE_DAYS)
    );
    let fb = route.feedback_clock.expect("feedback clock");
    let review = review_rule();
    assert_eq!((fb.unit, fb.length), (review.unit, REVIEW_DAYS));
    assert_eq!(fb.max_extension, REVIEW_EXTENSION_DAYS);
    assert_eq!(fb.extension_approver_role, PRESIDENT_ROLE);
    // The router's cap (15 + 10) never passes the special procedure's 30 days.
    assert!(fb.hard_cap <= SPECIAL_PROCEDURE_DAYS);
    assert_eq!(clock_in(S::Received).map(|c| c.0), Some("acceptance"));
    assert_eq!(clock_in(S::UnderReview).map(|c| c.0), Some("review"));
    assert!(clock_in(S::Confirmed).is_none());
}

#[test]
fn the_review_extends_by_ten_only_with_the_presidents_role_and_never_past_30() {
    let c = cal();
    // Accepted Monday 2 March 2026, 10:00: due 24:00 Tuesday 17 March.
    let accepted = at(2026, 3, 2, 10);
    let mut clock = Clock::start("review", &review_rule(), accepted, &c).expect("starts");
    assert_eq!(clock.due_at, at(2026, 3, 18, 0));
    let judge = vec![JUDGE_ROLE.to_owned()];
    let president = vec![PRESIDENT_ROLE.to_owned()];
    let refusal = clock.extend(10, &judge, false, &c).expect_err("judge");
    assert_eq!(refusal.reason(), Reason::ClockApproverRoleRequired);
    let too_long = clock
        .extend(11, &president, false, &c)
        .expect_err("11 days");
    assert_eq!(too_long.reason(), Reason::ClockExtensionTooLong);
    clock.extend(6, &president, false, &c).expect("6 days");
    clock.extend(4, &president, false, &c).expect("4 more");
    // 25 days: Friday 27 March.
    assert_eq!(clock.due_at, at(2026, 3, 28, 0));
    let more = clock.extend(1, &president, false, &c).expect_err("past 10");
    assert_eq!(more.reason(), Reason::ClockExtensionTooLong);
    // Never past the 30 days of 民事诉讼法 Art 187.
    assert!(clock.due_at <= at(2026, 4, 2, 0));
}

#[test]
fn supplementary_materials_pause_the_review_by_the_clock_rule() {
    let c = cal();
    let accepted = at(2026, 3, 2, 10);
    let mut clock = Clock::start("review", &review_rule(), accepted, &c).expect("starts");
    // Asked for on Wednesday 4 March, received Monday 9 March: the days after the pause's
    // first day through its last (5–9 March) are not counted: 5 days, so day 15 moves from
    // Tuesday 17 to Sunday 22 March, which runs to Monday 23 (民事诉讼法 Art 85).
    clock
        .pause(at(2026, 3, 4, 15), PAUSE_SUPPLEMENT)
        .expect("pause");
    assert!(clock.pause(at(2026, 3, 4, 16), PAUSE_SUPPLEMENT).is_err());
    clock.resume(at(2026, 3, 9, 11), &c).expect("resume");
    assert_eq!(clock.due_at, at(2026, 3, 24, 0));
    // A reason that is not the rule's is refused.
    let e = clock
        .pause(at(2026, 3, 10, 9), "appraisal")
        .expect_err("not pausable");
    assert_eq!(e.reason(), Reason::ClockReasonNotPausable);
    // A pause within one day excludes no day.
    let mut same_day =
        Clock::start("acceptance", &acceptance_rule(), accepted, &c).expect("starts");
    let due = same_day.due_at;
    same_day
        .pause(at(2026, 3, 2, 11), PAUSE_SUPPLEMENT)
        .expect("pause");
    same_day.resume(at(2026, 3, 2, 17), &c).expect("resume");
    assert_eq!(same_day.due_at, due);
}

#[test]
fn a_party_objects_within_15_days_an_interested_person_within_6_months() {
    let c = cal();
    // The ruling received Monday 2 March 2026: day 15 is Tuesday 17 March.
    let received = at(2026, 3, 2, 10);
    assert!(check_objection(ObjectorKind::Party, received, at(2026, 3, 17, 16), &c).is_ok());
    match check_objection(ObjectorKind::Party, received, at(2026, 3, 18, 9), &c) {
        Err(Error::Refused(Reason::ObjectionPeriodLapsed, msg)) => {
            assert!(msg.contains("民诉法解释 Art 372"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // An interested person, knowing since 2 March: until 2 September (a Wednesday).
    let ip = ObjectorKind::InterestedPerson;
    assert_eq!(
        objection_deadline(ip, received, &c).ok(),
        Some(at(2026, 9, 3, 0))
    );
    assert!(check_objection(ip, received, at(2026, 3, 18, 9), &c).is_ok());
    assert!(check_objection(ip, received, at(2026, 9, 2, 20), &c).is_ok());
    assert_eq!(
        reason(check_objection(ip, received, at(2026, 9, 3, 0), &c)),
        Some(Reason::ObjectionPeriodLapsed)
    );
    // Six months ending on a Sunday (5 April 2026 → 5 October 2026 is a Monday; use 4 April
    // → 4 October, a Sunday): the window runs to Monday.
    assert_eq!(
        objection_deadline(ip, at(2026, 4, 4, 10), &c).ok(),
        Some(at(2026, 10, 6, 0))
    );
    assert!(check_objection(ObjectorKind::Unspecified, received, received, &c).is_err());
    assert!(matches!(
        check_objection(ip, received, received - 1, &c),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn days_between_counts_fractional_days() {
    assert_eq!(days_between(at(2026, 3, 2, 0), at(2026, 3, 4, 12)), 2.5);
}
