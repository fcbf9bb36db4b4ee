//! One truth (issue #9) on the police side, on SQLite and PostgreSQL: cut-off calls are
//! completed by their retries with the first answer, an old router message never reverts a
//! newer referral, a reused request id is refused, and intake assigns party UUIDs and takes
//! the officer from the token.
use std::time::Duration;

use fengqiao_kit::error::reason_of;
use fengqiao_proto::common::{Address, DisputeCategory, IdType, Party, PartyRole};
use fengqiao_proto::inbox::agency_inbox_service_client::AgencyInboxServiceClient;
use fengqiao_proto::inbox::{DeliverRequest, Envelope, MessageKind, RecipientSide};
use fengqiao_proto::policereferral::*;
use fengqiao_proto::router::{
    AcceptTransferRequest, ListTransfersRequest, SubmitFeedbackRequest, Transfer, TransferEvent,
    TransferState,
};
use fengqiao_testkit::answers::{Answer as _, Change, Named as _, Refusal as _};
use fengqiao_testkit::services::{
    COMMAND, ROOM, ReferralClient as Client, STATION, approve_steps, cut_off, referrals as client,
    rid, router_envelope, transfer_as as router_transfer, transfer_in_state, transfers as router,
};
use fengqiao_testkit::{TestSuite, suite_test};
use tonic::Code;

/// Polls (100 ms apart) for a record to heal: one redelivery after the router's push
/// backoff (1 s, 2 s, 4 s, … doubling). On a loaded 2-core machine (the whole test suite or a
/// benchmark beside it) a push can fail a few times first, so the bound is generous; the
/// healing itself is what is checked, not its speed.
const HEAL_POLLS: usize = 900;

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

async fn transfers_of_case(suite: &TestSuite, case_id: &str) -> Vec<Transfer> {
    router(suite, STATION, "officer-01", &["officer"])
        .list_transfers(ListTransfersRequest {
            case_id: case_id.into(),
            ..Default::default()
        })
        .await
        .answer("list transfers")
        .transfers
}

/// Waits (bounded: one redelivery) until the referral and its router transfer agree: the
/// referral is in the state `pairs` gives for the transfer's state.
async fn agree(
    suite: &TestSuite,
    o: &mut Client,
    referral: &str,
    transfer_name: &str,
    pairs: &[(TransferState, ReferralState)],
) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut last = (0, 0, 0);
    // Bounded: a redelivery after the router's push backoff (1 s, 2 s, 4 s, …).
    for _ in 0..HEAL_POLLS {
        let t = router_transfer(suite, STATION, transfer_name).await;
        let r = get(o, referral).await.expect("get");
        if pairs
            .iter()
            .any(|(ts, rs)| t.state == *ts as i32 && r.state == *rs as i32)
            && r.transfer_state == t.state
        {
            return;
        }
        last = (t.state, r.state, r.transfer_state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("referral and transfer never agreed: (transfer, referral, seen) = {last:?}");
}

/// Polls the referral until `done` holds (bounded wait).
async fn referral_until(
    c: &mut Client,
    name: &str,
    what: &str,
    done: impl Fn(&Referral) -> bool,
) -> Referral {
    for _ in 0..150 {
        let r = get(c, name).await.expect("get");
        if done(&r) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the referral never reached: {what}");
}

fn draft_request(r: &Referral) -> DraftTransferRequest {
    DraftTransferRequest {
        to_agency: format!("agencies/{ROOM}"),
        note: "110警情，民间纠纷，建议调解".into(),
        submit: true,
        ..Change::change(&r.name, &r.etag)
    }
}

/// Approves both steps and waits until the room has the offer; returns the transfer.
async fn approved_and_delivered(suite: &TestSuite, name: &str) -> Transfer {
    let t = router_transfer(suite, STATION, name).await;
    approve_steps(suite, &t).await;
    transfer_in_state(suite, ROOM, name, TransferState::Delivered).await
}

suite_test!(a_reused_request_id_is_refused, |suite| async move {
    let mut d = dispatch(&suite);
    let id = rid();
    let first = d
        .create_referral(CreateReferralRequest {
            referral: Some(noise_referral("R001")),
            request_id: id.clone(),
        })
        .await
        .answer("create");
    let e = d
        .create_referral(CreateReferralRequest {
            referral: Some(noise_referral("R002")),
            request_id: id.clone(),
        })
        .await
        .refusal(Code::AlreadyExists, "reused");
    assert_eq!(reason_of(&e).as_deref(), Some("REQUEST_ID_REUSED"));
    assert_eq!(count(&mut d, "R002").await, 0);
    // The same request again is the first answer.
    let again = d
        .create_referral(CreateReferralRequest {
            referral: Some(noise_referral("R001")),
            request_id: id,
        })
        .await
        .answer("replay");
    assert_eq!(again, first);
    assert_eq!(count(&mut d, "R001").await, 1);
});

suite_test!(
    intake_assigns_party_uuids_and_the_officer_from_the_token,
    |suite| async move {
        let mut d = dispatch(&suite);
        let mut call = noise_referral("R003");
        call.officer = Some(fengqiao_proto::common::Actor {
            actor_id: "someone-else".into(),
            ..Default::default()
        });
        let r = create(&mut d, call).await.expect("create");
        assert_eq!(r.parties.len(), 2);
        for p in &r.parties {
            assert!(uuid::Uuid::parse_str(&p.party_id).is_ok(), "{}", p.party_id);
        }
        assert_ne!(r.parties[0].party_id, r.parties[1].party_id);
        let officer = r.officer.expect("officer");
        assert_eq!(officer.actor_id, "dispatch-system");
        assert_eq!(officer.agency, format!("agencies/{COMMAND}"));
        assert_eq!(
            get(&mut d, &r.name).await.expect("get").officer,
            Some(officer)
        );
    }
);

suite_test!(
    a_cut_off_draft_is_completed_by_its_retry,
    |suite| async move {
        let mut d = dispatch(&suite);
        let r = create(&mut d, noise_referral("R004"))
            .await
            .expect("create");
        let mut o = officer(&suite);
        let msg = draft_request(&r);
        let mut o2 = o.clone();
        cut_off(async |req| o2.draft_transfer(req).await, &msg).await;
        // Without any client action, the referral links the transfer the router made, if any.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut healed = false;
        for _ in 0..HEAL_POLLS {
            let all = transfers_of_case(&suite, &r.case_id).await;
            let now = get(&mut o, &r.name).await.expect("get");
            healed = match all.as_slice() {
                [] => now.state == ReferralState::ReadyToTransfer as i32,
                [t] => {
                    now.transfer == t.name
                        && now.state == ReferralState::TransferPending as i32
                        && now.transfer_state == t.state
                }
                _ => panic!("two transfers for one draft"),
            };
            if healed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(healed, "referral and router agree after a cut-off draft");
        let first = o.draft_transfer(msg.clone()).await.answer("retry");
        let t = first.transfer.clone().expect("transfer");
        let referral = first.referral.clone().expect("referral");
        assert_eq!(referral.transfer, t.name);
        assert_eq!(referral.state, ReferralState::TransferPending as i32);
        let again = o.draft_transfer(msg.clone()).await.answer("second retry");
        assert_eq!(again, first);
        // One transfer for the case, submitted, and the referral agrees with it.
        let all = transfers_of_case(&suite, &r.case_id).await;
        assert_eq!(all.len(), 1, "one transfer for the case");
        assert_eq!(all[0].state, TransferState::AwaitingApproval as i32);
        let now = get(&mut o, &r.name).await.expect("get");
        assert_eq!(now.transfer, all[0].name);
        assert_eq!(now.transfer_state, all[0].state);
        // A new request id is a second draft: refused, and still one transfer.
        let e = o
            .draft_transfer(DraftTransferRequest {
                request_id: rid(),
                etag: String::new(),
                ..msg
            })
            .await
            .expect_err("second draft");
        assert!(
            matches!(e.code(), Code::FailedPrecondition | Code::AlreadyExists),
            "{e:?}"
        );
        assert_eq!(transfers_of_case(&suite, &r.case_id).await.len(), 1);
    }
);

suite_test!(
    a_cut_off_acknowledgement_is_completed_by_its_retry,
    |suite| async move {
        let mut d = dispatch(&suite);
        let r = create(&mut d, noise_referral("R005"))
            .await
            .expect("create");
        let mut o = officer(&suite);
        let drafted = o.draft_transfer(draft_request(&r)).await.answer("draft");
        let name = drafted.transfer.expect("transfer").name;
        let t = approved_and_delivered(&suite, &name).await;
        let mut room = router(&suite, ROOM, "mediator-01", &["mediator"]);
        let t = room
            .accept_transfer(AcceptTransferRequest {
                receiver_reference: "调〔2026〕0001号".into(),
                comment: "受理".into(),
                ..Change::change(&t.name, &t.etag)
            })
            .await
            .answer_of("accept", |r| r.transfer);
        // Referral.transfer_state follows the transfer (IN_PROGRESS, not APPROVED).
        referral_until(&mut o, &r.name, "IN_PROGRESS", |x| {
            x.transfer_state == TransferState::InProgress as i32
                && x.state == ReferralState::Transferred as i32
        })
        .await;
        room.submit_feedback(SubmitFeedbackRequest {
            outcome_code: "agreement_reached".into(),
            summary: "达成调解协议".into(),
            ..Change::change(&t.name, "")
        })
        .await
        .expect("feedback");
        let fed = referral_until(&mut o, &r.name, "FEEDBACK_RECEIVED", |x| {
            x.state == ReferralState::FeedbackReceived as i32
        })
        .await;
        let msg = AcknowledgeFeedbackRequest {
            comment: "已反馈指挥室".into(),
            ..Change::change(&r.name, &fed.etag)
        };
        let mut o2 = o.clone();
        cut_off(async |req| o2.acknowledge_feedback(req).await, &msg).await;
        agree(
            &suite,
            &mut o,
            &r.name,
            &name,
            &[
                (
                    TransferState::FeedbackSubmitted,
                    ReferralState::FeedbackReceived,
                ),
                (TransferState::Closed, ReferralState::Closed),
            ],
        )
        .await;
        let first = o.acknowledge_feedback(msg.clone()).await.answer("retry");
        let closed = first.referral.clone().expect("referral");
        assert_eq!(closed.state, ReferralState::Closed as i32);
        assert_eq!(closed.transfer_state, TransferState::Closed as i32);
        let again = o.acknowledge_feedback(msg).await.answer("second retry");
        assert_eq!(again, first);
        assert_eq!(
            router_transfer(&suite, STATION, &name).await.state,
            TransferState::Closed as i32
        );
    }
);

/// A router envelope about `t` to `to`, as the router would deliver it.
fn envelope(t: &Transfer, to: &str, kind: MessageKind, seq: u64) -> Envelope {
    let event = TransferEvent {
        sequence: seq,
        ..Default::default()
    };
    router_envelope(t, to, kind, RecipientSide::Approver, event)
}

suite_test!(
    an_old_message_does_not_revert_a_newer_referral,
    |suite| async move {
        let mut d = dispatch(&suite);
        let r = create(&mut d, noise_referral("R006"))
            .await
            .expect("create");
        let mut o = officer(&suite);
        let drafted = o.draft_transfer(draft_request(&r)).await.answer("draft");
        let name = drafted.transfer.expect("transfer").name;
        approved_and_delivered(&suite, &name).await;
        // Nothing happens on the router after delivery until the receiver answers: once the
        // referral shows the router's last state, no message of this transfer is in flight.
        let t = router_transfer(&suite, STATION, &name).await;
        let now = referral_until(
            &mut o,
            &r.name,
            "TRANSFERRED, in step with the router",
            |x| x.state == ReferralState::Transferred as i32 && x.transfer_state == t.state,
        )
        .await;
        let seq = t.last_event.as_ref().expect("last event").sequence;
        // A late "approval required" copy from before the approvals.
        let mut old = t.clone();
        old.state = TransferState::AwaitingApproval as i32;
        let mut inbox = AgencyInboxServiceClient::with_interceptor(
            suite.channel(),
            suite.caller("xigang-justice-bureau", "router", &["router"]),
        );
        inbox
            .deliver(DeliverRequest {
                envelope: Some(envelope(
                    &old,
                    COMMAND,
                    MessageKind::ApprovalRequired,
                    seq - 1,
                )),
            })
            .await
            .expect("delivered");
        let after = get(&mut o, &r.name).await.expect("get");
        assert_eq!(after.state, ReferralState::Transferred as i32);
        assert_eq!(after.etag, now.etag, "an old message changes nothing");
        // The same content as a newer event is applied: the referral follows the router.
        inbox
            .deliver(DeliverRequest {
                envelope: Some(envelope(
                    &old,
                    COMMAND,
                    MessageKind::ApprovalRequired,
                    seq + 1_000_000,
                )),
            })
            .await
            .expect("delivered");
        assert_eq!(
            get(&mut o, &r.name).await.expect("get").state,
            ReferralState::TransferPending as i32
        );
    }
);

suite_test!(
    acknowledging_on_the_router_closes_the_referral,
    |suite| async move {
        let mut d = dispatch(&suite);
        let r = create(&mut d, noise_referral("R007"))
            .await
            .expect("create");
        let mut o = officer(&suite);
        let drafted = o.draft_transfer(draft_request(&r)).await.answer("draft");
        let name = drafted.transfer.expect("transfer").name;
        let t = approved_and_delivered(&suite, &name).await;
        let mut room = router(&suite, ROOM, "mediator-01", &["mediator"]);
        room.accept_transfer(AcceptTransferRequest {
            receiver_reference: "调〔2026〕0002号".into(),
            comment: "受理".into(),
            ..Change::change(&t.name, "")
        })
        .await
        .expect("accept");
        room.submit_feedback(SubmitFeedbackRequest {
            outcome_code: "agreement_reached".into(),
            summary: "达成调解协议".into(),
            ..Change::change(&t.name, "")
        })
        .await
        .expect("feedback");
        referral_until(&mut o, &r.name, "FEEDBACK_RECEIVED", |x| {
            x.state == ReferralState::FeedbackReceived as i32
        })
        .await;
        // The station acknowledges on the router directly, not through this service.
        router(&suite, STATION, "officer-01", &["officer"])
            .acknowledge_feedback(fengqiao_proto::router::AcknowledgeFeedbackRequest {
                comment: "已反馈指挥室".into(),
                ..Change::change(&name, "")
            })
            .await
            .expect("router acknowledgement");
        let closed = referral_until(&mut o, &r.name, "CLOSED", |x| {
            x.state == ReferralState::Closed as i32
        })
        .await;
        assert_eq!(closed.transfer_state, TransferState::Closed as i32);
        assert!(closed.feedback.and_then(|f| f.reported_time).is_some());
        // Acknowledging through the service afterwards is the wrong state, not a second close.
        o.acknowledge_feedback(AcknowledgeFeedbackRequest::named(&r.name))
            .await
            .refusal(Code::FailedPrecondition, "closed already");
    }
);
