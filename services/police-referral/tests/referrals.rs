//! The police-referral service through the in-process suite, on SQLite and PostgreSQL: intake,
//! validation, incident-number idempotency, screening and its override, the 移送单 through the
//! router, router messages reflected on the referral, and isolation between stations.

use std::time::Duration;

use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{Address, DisputeCategory, IdType, Party, PartyRole};
use fengqiao_proto::policereferral::*;
use fengqiao_proto::router::{AcceptTransferRequest, GetTransferRequest, TransferState};
use fengqiao_testkit::answers::{Answer as _, Change, Named, Refusal as _};
use fengqiao_testkit::services::{
    COMMAND, ROOM, ReferralClient as Client, STATION, approve_steps, referrals as client,
    transfer_in_state, transfers as router,
};
use fengqiao_testkit::{TestSuite, suite_test};
use tonic::Code;

/// A change applied to a valid referral.
type Mutation = Box<dyn Fn(&mut Referral)>;

const OTHER_STATION: &str = "xigang-xianglujiao-station";

fn dispatch(suite: &TestSuite) -> Client {
    client(suite, COMMAND, "dispatch-system", &["dispatcher"])
}

fn officer(suite: &TestSuite) -> Client {
    client(suite, STATION, "officer-01", &["officer"])
}

fn noise_referral(incident: &str) -> Referral {
    Referral {
        incident_number: incident.into(),
        call_time: Some(prost_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 0,
        }),
        caller: Some(Party {
            name: "王某".into(),
            phone: "13912345678".into(),
            ..Default::default()
        }),
        location: Some(Address {
            region_code: "210203".into(),
            detail: "八一路某小区".into(),
            location: None,
        }),
        category: DisputeCategory::Neighbourhood as i32,
        summary: "楼上住户夜间噪音扰民，双方发生口角".into(),
        parties: vec![
            Party {
                role: PartyRole::Applicant as i32,
                name: "张某".into(),
                id_type: IdType::ResidentIdCard as i32,
                id_number: "11010519491231002X".into(),
                phone: "13812345678".into(),
                ..Default::default()
            },
            Party {
                role: PartyRole::Respondent as i32,
                name: "李某".into(),
                phone: "0411-82345678".into(),
                ..Default::default()
            },
        ],
        on_scene_handling: "民警到场劝解，双方情绪平稳，同意调解".into(),
        police_station: format!("agencies/{STATION}"),
        ..Default::default()
    }
}

async fn create(c: &mut Client, r: Referral) -> Result<Referral, tonic::Status> {
    c.create_referral(CreateReferralRequest {
        referral: Some(r),
        request_id: String::new(),
    })
    .await
    .map(|r| r.into_inner().referral.expect("referral"))
}

async fn get(c: &mut Client, name: &str) -> Result<Referral, tonic::Status> {
    c.get_referral(GetReferralRequest { name: name.into() })
        .await
        .map(|r| r.into_inner().referral.expect("referral"))
}

async fn count(c: &mut Client, incident: &str) -> usize {
    c.list_referrals(ListReferralsRequest {
        incident_number: incident.into(),
        ..Default::default()
    })
    .await
    .answer("list")
    .referrals
    .len()
}

suite_test!(intake_screens_and_is_idempotent, |suite| async move {
    let mut d = dispatch(&suite);
    let r = create(&mut d, noise_referral("J001"))
        .await
        .expect("create");
    assert!(r.name.starts_with("referrals/"));
    assert!(!r.case_id.is_empty());
    let sc = r.screening.clone().expect("screening");
    assert_eq!(sc.result, ScreeningResult::CivilDispute as i32);
    assert_eq!(sc.matched_rule, "category.civil");
    assert_eq!(r.state, ReferralState::ReadyToTransfer as i32);

    // The same push again: one referral, the first answer.
    let again = create(&mut d, noise_referral("J001"))
        .await
        .expect("replay");
    assert_eq!(again.name, r.name);
    assert_eq!(count(&mut d, "J001").await, 1);

    // Different content under the same incident number.
    let mut other = noise_referral("J001");
    other.summary = "另一起纠纷".into();
    let e = create(&mut d, other)
        .await
        .refusal(Code::AlreadyExists, "reused");
    assert_eq!(reason_of(&e).as_deref(), Some("INCIDENT_NUMBER_REUSED"));

    // The station sees it; the dispatch system (creator) sees it; another station does not.
    let mut o = officer(&suite);
    assert_eq!(get(&mut o, &r.name).await.expect("station").name, r.name);
    let mut stranger = client(
        &suite,
        OTHER_STATION,
        "officer-09",
        &["officer", "duty_chief"],
    );
    assert_eq!(
        get(&mut stranger, &r.name).await.expect_err("x").code(),
        Code::NotFound
    );
    assert_eq!(count(&mut stranger, "J001").await, 0);
    stranger
        .get_referral_file(GetReferralFileRequest::named(&r.name))
        .await
        .refusal(Code::NotFound, "file");
    stranger
        .override_screening(OverrideScreeningRequest {
            result: ScreeningResult::Criminal as i32,
            reason: "x".into(),
            ..Named::named(&r.name)
        })
        .await
        .refusal(Code::NotFound, "override");
    stranger
        .draft_transfer(DraftTransferRequest {
            to_agency: format!("agencies/{ROOM}"),
            ..Named::named(&r.name)
        })
        .await
        .refusal(Code::NotFound, "draft");
    // The same incident pushed by the other station is not a way in either.
    let mut theirs = noise_referral("J001");
    theirs.police_station = format!("agencies/{OTHER_STATION}");
    assert_eq!(
        create(&mut stranger, theirs).await.expect_err("x").code(),
        Code::AlreadyExists
    );
});

suite_test!(validation_failures_store_nothing, |suite| async move {
    let mut d = dispatch(&suite);
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "V1",
            Box::new(|r| r.parties[0].id_number = "110105194912310021".into()),
            "referral.parties[0].id_number",
        ),
        ("V2", Box::new(|r| r.parties.clear()), "referral.parties"),
        (
            "V3",
            Box::new(|r| {
                if let Some(l) = r.location.as_mut() {
                    l.region_code = "990101".into();
                }
            }),
            "referral.location.region_code",
        ),
        (
            "V4",
            Box::new(|r| r.parties[1].phone = "12345".into()),
            "referral.parties[1].phone",
        ),
        (
            "V5",
            Box::new(|r| r.parties[0].id_number = "11010519490230002X".into()),
            "referral.parties[0].id_number",
        ),
        ("V6", Box::new(|r| r.summary.clear()), "referral.summary"),
        ("V7", Box::new(|r| r.call_time = None), "referral.call_time"),
    ];
    for (incident, mutate, field) in cases {
        let mut r = noise_referral(incident);
        mutate(&mut r);
        let e = create(&mut d, r).await.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        assert_eq!(bad_fields_of(&e), vec![field.to_string()], "{field}");
        assert_eq!(count(&mut d, incident).await, 0, "{field}");
    }
    let mut r = noise_referral("");
    r.parties[0].phone = "1".into();
    let e = create(&mut d, r).await.expect_err("two");
    assert_eq!(
        bad_fields_of(&e),
        vec!["referral.incident_number", "referral.parties[0].phone"]
    );
    // A station officer may not take in for another station; a mediator not at all.
    let mut o = officer(&suite);
    let mut r = noise_referral("V8");
    r.police_station = format!("agencies/{OTHER_STATION}");
    assert_eq!(
        create(&mut o, r).await.expect_err("x").code(),
        Code::PermissionDenied
    );
    let mut m = client(&suite, STATION, "clerk", &["viewer"]);
    assert_eq!(
        create(&mut m, noise_referral("V9"))
            .await
            .expect_err("x")
            .code(),
        Code::PermissionDenied
    );
});

suite_test!(screening_rules_and_override, |suite| async move {
    let mut d = dispatch(&suite);
    let cases: &[(
        &str,
        DisputeCategory,
        &str,
        ScreeningResult,
        ReferralState,
        &str,
    )] = &[
        (
            "S1",
            DisputeCategory::Neighbourhood,
            "邻里纠纷，一方持刀威胁",
            ScreeningResult::PublicSecurity,
            ReferralState::PoliceMatter,
            "keyword.weapon",
        ),
        (
            "S2",
            DisputeCategory::Neighbourhood,
            "互殴致一方轻伤",
            ScreeningResult::Criminal,
            ReferralState::PoliceMatter,
            "keyword.serious_violence",
        ),
        (
            "S3",
            DisputeCategory::TrafficAccident,
            "两车剐蹭",
            ScreeningResult::NeedsReview,
            ReferralState::PendingReview,
            "",
        ),
        (
            "S4",
            DisputeCategory::ContractDebt,
            "因赌博欠款争执",
            ScreeningResult::PublicSecurity,
            ReferralState::PoliceMatter,
            "keyword.vice",
        ),
    ];
    let mut names = Vec::new();
    for (incident, cat, summary, result, state, rule) in cases {
        let mut r = noise_referral(incident);
        r.category = *cat as i32;
        r.summary = (*summary).into();
        r.on_scene_handling.clear();
        let r = create(&mut d, r).await.expect("create");
        let sc = r.screening.clone().expect("screening");
        assert_eq!(sc.result, *result as i32, "{incident}");
        assert_eq!(sc.matched_rule, *rule, "{incident}");
        assert_eq!(r.state, *state as i32, "{incident}");
        names.push(r);
    }
    let mut o = officer(&suite);
    let review = names[2].clone();
    // A police matter cannot be drafted.
    o.draft_transfer(DraftTransferRequest {
        to_agency: format!("agencies/{ROOM}"),
        ..Named::named(&names[0].name)
    })
    .await
    .refusal(Code::FailedPrecondition, "police matter");
    // Override needs a reason, a decisive result, and the role.
    let bad = o
        .override_screening(OverrideScreeningRequest {
            result: ScreeningResult::NeedsReview as i32,
            ..Named::named(&review.name)
        })
        .await
        .expect_err("bad");
    assert_eq!(bad_fields_of(&bad), vec!["result", "reason"]);
    let mut clerk = client(&suite, STATION, "clerk", &["viewer"]);
    clerk
        .override_screening(OverrideScreeningRequest {
            result: ScreeningResult::CivilDispute as i32,
            reason: "双方均同意调解".into(),
            ..Named::named(&review.name)
        })
        .await
        .refusal(Code::PermissionDenied, "role");
    o.override_screening(OverrideScreeningRequest {
        result: ScreeningResult::CivilDispute as i32,
        reason: "双方均同意调解".into(),
        ..Change::change(&review.name, "stale")
    })
    .await
    .refusal(Code::Aborted, "etag");
    let req = OverrideScreeningRequest {
        result: ScreeningResult::CivilDispute as i32,
        reason: "财产损失轻微，双方均同意调解".into(),
        ..Change::change(&review.name, &review.etag)
    };
    let r = o
        .override_screening(req.clone())
        .await
        .answer_of("override", |r| r.referral);
    let sc = r.screening.clone().expect("sc");
    assert!(sc.overridden);
    assert_eq!(sc.result, ScreeningResult::CivilDispute as i32);
    assert_eq!(sc.automatic_result, ScreeningResult::NeedsReview as i32);
    assert_eq!(sc.overridden_by.expect("by").actor_id, "officer-01");
    assert_eq!(r.state, ReferralState::ReadyToTransfer as i32);
    // Replay with the same request_id answers the same.
    let again = o.override_screening(req).await.answer("replay");
    assert_eq!(again.referral.expect("r").etag, r.etag);
});

suite_test!(transfer_flow_reflects_router, |suite| async move {
    let mut d = dispatch(&suite);
    let r = create(&mut d, noise_referral("T001"))
        .await
        .expect("create");
    let mut o = officer(&suite);
    // The command centre cannot draft for the station.
    d.draft_transfer(DraftTransferRequest {
        to_agency: format!("agencies/{ROOM}"),
        submit: true,
        ..Named::named(&r.name)
    })
    .await
    .refusal(Code::PermissionDenied, "command centre");
    let drafted = o
        .draft_transfer(DraftTransferRequest {
            to_agency: format!("agencies/{ROOM}"),
            note: "110警情，民间纠纷，建议调解".into(),
            submit: true,
            ..Change::change(&r.name, &r.etag)
        })
        .await
        .answer("draft");
    let referral = drafted.referral.expect("referral");
    let transfer = drafted.transfer.expect("transfer");
    assert_eq!(referral.state, ReferralState::TransferPending as i32);
    assert_eq!(referral.transfer, transfer.name);

    let mut station_router = router(&suite, STATION, "officer-01", &["officer"]);
    let t = station_router
        .get_transfer(GetTransferRequest::named(&transfer.name))
        .await
        .answer_of("router get", |r| r.transfer);
    assert_eq!(t.state, TransferState::AwaitingApproval as i32);
    let snap = t.case_snapshot.clone().expect("snapshot");
    assert_eq!(snap.case_id, r.case_id);
    assert_eq!(
        snap.external_references
            .get(&format!("agencies/{STATION}"))
            .map(String::as_str),
        Some("T001")
    );

    // A second draft is refused while one is pending.
    o.draft_transfer(DraftTransferRequest {
        to_agency: format!("agencies/{ROOM}"),
        ..Named::named(&r.name)
    })
    .await
    .refusal(Code::FailedPrecondition, "pending");

    // 指挥室审核, 值班所长审批, then the mediation room accepts.
    let t = approve_steps(&suite, &t).await;
    let t = transfer_in_state(&suite, ROOM, &t.name, TransferState::Delivered).await;
    let mut room = router(&suite, ROOM, "mediator-01", &["mediator"]);
    room.accept_transfer(AcceptTransferRequest {
        receiver_reference: "调字2026第1号".into(),
        comment: "受理".into(),
        ..Change::change(&t.name, &t.etag)
    })
    .await
    .expect("accept");

    let mut seen = None;
    for _ in 0..100 {
        let now = get(&mut o, &r.name).await.expect("get");
        // The offer itself already makes the referral TRANSFERRED; wait for the acceptance.
        if now.state == ReferralState::Transferred as i32
            && now.transfer_state == TransferState::InProgress as i32
        {
            seen = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = seen.expect("referral reflects the acceptance");
    assert_eq!(now.transfer_state, TransferState::InProgress as i32);
    assert!(now.feedback.and_then(|f| f.due_time).is_some());
    // The command centre (creator) sees it too; another station does not.
    assert_eq!(get(&mut d, &r.name).await.expect("cc").state, now.state);
    let mut stranger = client(&suite, OTHER_STATION, "officer-09", &["officer"]);
    assert_eq!(
        get(&mut stranger, &r.name).await.expect_err("x").code(),
        Code::NotFound
    );

    // Not yet feedback: acknowledging is refused.
    o.acknowledge_feedback(AcknowledgeFeedbackRequest::named(&r.name))
        .await
        .refusal(Code::FailedPrecondition, "no feedback");

    let file = o
        .get_referral_file(GetReferralFileRequest::named(&r.name))
        .await
        .answer_of("file", |r| r.referral_file);
    assert!(file.documents.iter().any(|d| d.display_name == "移送单"));
    assert!(file.events.len() >= 4, "events {}", file.events.len());
    let seqs: Vec<u64> = file.events.iter().map(|e| e.sequence).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(seqs, sorted);
});

// One etag format across the suite (`fengqiao_kit::etag`): the version in double quotes, as
// the router and mediation answer; a client may send it with or without the quotes.
suite_test!(
    referral_etags_have_the_suites_one_format,
    |suite| async move {
        let mut d = dispatch(&suite);
        let mut r = noise_referral("ETAG1");
        r.category = DisputeCategory::TrafficAccident as i32;
        r.summary = "两车剐蹭".into();
        r.on_scene_handling.clear();
        let r = create(&mut d, r).await.expect("create");
        assert_eq!(r.state, ReferralState::PendingReview as i32);
        assert_eq!(r.etag, "\"1\"");
        let mut o = officer(&suite);
        let stale = o
            .override_screening(OverrideScreeningRequest {
                result: ScreeningResult::CivilDispute as i32,
                reason: "双方均同意调解".into(),
                ..Change::change(&r.name, "\"7\"")
            })
            .await
            .expect_err("stale etag");
        assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
        // The bare version is the same tag.
        let done = o
            .override_screening(OverrideScreeningRequest {
                result: ScreeningResult::CivilDispute as i32,
                reason: "双方均同意调解".into(),
                ..Change::change(&r.name, "1")
            })
            .await
            .answer_of("bare etag accepted", |r| r.referral);
        assert_eq!(done.etag, "\"2\"");
        assert_eq!(get(&mut o, &r.name).await.expect("get").etag, "\"2\"");
    }
);
