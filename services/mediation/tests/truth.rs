//! One truth (issue #9) on the mediation side, on SQLite and PostgreSQL: cut-off calls heal
//! and their retries return the first answer, an old router message never reverts a newer
//! case, case numbers stay unique under concurrency, and the case file holds the consent
//! evidence.

use std::time::Duration;

use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::common::{DisputeCategory, EvidenceRef, Party, PartyRole};
use fengqiao_proto::inbox::agency_inbox_service_client::AgencyInboxServiceClient;
use fengqiao_proto::inbox::{DeliverRequest, Envelope, MessageKind};
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::mediation::*;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    ApproveTransferRequest, CaseSnapshot, CreateTransferRequest, GetTransferRequest,
    SubmitTransferRequest, Transfer, TransferState,
};
use fengqiao_testkit::{TestSuite, suite_test};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Router = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Med = MediationServiceClient<InterceptedService<Channel, CallInterceptor>>;

/// Polls (100 ms apart) for a record to heal: one redelivery after the router's push
/// backoff (1 s, 2 s, 4 s, … doubling). On a loaded 2-core machine (the whole test suite or a
/// benchmark beside it) a push can fail a few times first, so the bound is generous; the
/// healing itself is what is checked, not its speed.
const HEAL_POLLS: usize = 900;
const STATION: &str = "xigang-bayilu-station";
const COMMAND: &str = "xigang-110";
const ROOM: &str = "xigang-bayilu-mediation-room";
const ORG: &str = "organizations/bayilu-room";

fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn router(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Router {
    TransferServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

fn med(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Med {
    MediationServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

/// The room head registers the room and three mediators (two for neighbourhood disputes).
async fn roster(suite: &TestSuite) {
    let mut head = med(suite, ROOM, "room-head", &["mediation_admin", "mediator"]);
    head.create_organization(CreateOrganizationRequest {
        organization: Some(Organization {
            display_name: "八一路派出所驻所人民调解室".into(),
            kind: OrganizationKind::StationMediationRoom as i32,
            region_code: "210203".into(),
            agency: format!("agencies/{ROOM}"),
            ..Default::default()
        }),
        organization_id: "bayilu-room".into(),
        request_id: rid(),
    })
    .await
    .expect("create organisation");
    for (id, spec) in [
        ("med-li", MediatorSpecialty::Neighbourhood),
        ("med-wang", MediatorSpecialty::Family),
        ("med-zhang", MediatorSpecialty::Neighbourhood),
    ] {
        head.create_mediator(CreateMediatorRequest {
            parent: ORG.into(),
            mediator: Some(Mediator {
                display_name: format!("调解员{id}"),
                actor_id: id.into(),
                specialties: vec![spec as i32],
                region_code: "210203".into(),
                max_load: 10,
                ..Default::default()
            }),
            mediator_id: id.into(),
            request_id: rid(),
        })
        .await
        .expect("create mediator");
    }
}

fn dispute() -> Transfer {
    Transfer {
        route: "routes/police-to-station-mediation".into(),
        to_agency: Some(fengqiao_proto::common::AgencyRef {
            name: format!("agencies/{ROOM}"),
            ..Default::default()
        }),
        case_snapshot: Some(CaseSnapshot {
            category: DisputeCategory::Neighbourhood as i32,
            summary: "楼上住户夜间噪音扰民，双方发生口角，民警到场劝解后移送调解".into(),
            region_code: "210203".into(),
            parties: vec![
                Party {
                    party_id: "p1".into(),
                    role: PartyRole::Applicant as i32,
                    name: "张某".into(),
                    ..Default::default()
                },
                Party {
                    party_id: "p2".into(),
                    role: PartyRole::Respondent as i32,
                    name: "李某".into(),
                    ..Default::default()
                },
            ],
            evidence: vec![EvidenceRef {
                display_name: "出警记录".into(),
                media_type: "application/pdf".into(),
                uri: "evidence://jingqing/0001".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        note: "110警情，民间纠纷，建议调解".into(),
        ..Default::default()
    }
}

/// Drives a transfer to the room and waits until the mediation case is offered.
async fn offered(suite: &TestSuite) -> (Transfer, MediationCase) {
    let mut officer = router(suite, STATION, "officer-01", &["officer"]);
    let mut reviewer = router(suite, COMMAND, "reviewer-01", &["command_room_reviewer"]);
    let mut chief = router(suite, STATION, "duty-chief-01", &["duty_chief"]);
    let t = officer
        .create_transfer(CreateTransferRequest {
            transfer: Some(dispute()),
            request_id: rid(),
            submit: false,
        })
        .await
        .expect("create")
        .into_inner()
        .transfer
        .expect("t");
    let t = officer
        .submit_transfer(SubmitTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            request_id: rid(),
        })
        .await
        .expect("submit")
        .into_inner()
        .transfer
        .expect("t");
    let t = reviewer
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 0,
            comment: "指挥室审核通过".into(),
            request_id: rid(),
        })
        .await
        .expect("review")
        .into_inner()
        .transfer
        .expect("t");
    let t = chief
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 1,
            comment: "同意移送".into(),
            request_id: rid(),
        })
        .await
        .expect("approve")
        .into_inner()
        .transfer
        .expect("t");
    let case_id = t.case_snapshot.as_ref().expect("snapshot").case_id.clone();
    let mut room = med(suite, ROOM, "mediator-01", &["mediator"]);
    for _ in 0..100 {
        let cases = room
            .list_cases(ListCasesRequest {
                case_id: case_id.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .mediation_cases;
        if let Some(c) = cases.into_iter().next() {
            return (t, c);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the offer never reached the mediation service");
}

fn st(c: &MediationCase) -> MediationCaseState {
    MediationCaseState::try_from(c.state).expect("state")
}

async fn transfer(suite: &TestSuite, name: &str) -> Transfer {
    router(suite, STATION, "officer-01", &["officer"])
        .get_transfer(GetTransferRequest { name: name.into() })
        .await
        .expect("get transfer")
        .into_inner()
        .transfer
        .expect("t")
}

async fn accept(room: &mut Med, c: &MediationCase) -> MediationCase {
    room.accept_case(AcceptCaseRequest {
        name: c.name.clone(),
        etag: c.etag.clone(),
        comment: "属于邻里纠纷，予以受理".into(),
        request_id: rid(),
    })
    .await
    .expect("accept")
    .into_inner()
    .mediation_case
    .expect("case")
}

/// Waits (bounded: one redelivery) until the case and its router transfer agree: the case is
/// in the state `pairs` gives for the transfer's state.
async fn agree(
    suite: &TestSuite,
    room: &mut Med,
    case: &str,
    transfer_name: &str,
    pairs: &[(TransferState, MediationCaseState)],
) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut last = (0, 0);
    // Bounded: a redelivery after the router's push backoff (1 s, 2 s, 4 s, …).
    for _ in 0..HEAL_POLLS {
        let t = transfer(suite, transfer_name).await;
        let c = get_case(room, case).await;
        if pairs
            .iter()
            .any(|(ts, cs)| t.state == *ts as i32 && c.state == *cs as i32)
        {
            return;
        }
        last = (t.state, c.state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("case and transfer never agreed: (transfer, case) = {last:?}");
}

async fn get_case(room: &mut Med, name: &str) -> MediationCase {
    room.get_case(GetCaseRequest { name: name.into() })
        .await
        .expect("get case")
        .into_inner()
        .mediation_case
        .expect("case")
}

/// Sends `msg` once with a client deadline of 3 ms (the call is cut off mid-flight when it
/// takes longer); returns whether it was cut off. Either way the record may or may not have
/// been committed on each side: what follows must hold in every case.
async fn cut_off<M: Clone, R>(
    mut call: impl AsyncFnMut(tonic::Request<M>) -> Result<R, tonic::Status>,
    msg: &M,
) -> bool {
    let mut req = tonic::Request::new(msg.clone());
    req.set_timeout(Duration::from_millis(3));
    match call(req).await {
        Ok(_) => false,
        Err(e) if e.code() == Code::DeadlineExceeded || e.code() == Code::Cancelled => true,
        Err(e) => panic!("unexpected refusal of a cut-off call: {e:?}"),
    }
}

suite_test!(
    a_cut_off_acceptance_is_completed_by_its_retry,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let msg = AcceptCaseRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            comment: "予以受理".into(),
            request_id: rid(),
        };
        let mut r2 = room.clone();
        cut_off(async |req| r2.accept_case(req).await, &msg).await;
        // Without any client action, the case and the transfer agree within one redelivery.
        agree(
            &suite,
            &mut room,
            &c.name,
            &t.name,
            &[
                (TransferState::Delivered, MediationCaseState::Offered),
                (TransferState::InProgress, MediationCaseState::Accepted),
            ],
        )
        .await;
        // The retry with the same request id returns the first answer, whatever the cut left.
        let first = room
            .accept_case(msg.clone())
            .await
            .expect("retry")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(st(&first), MediationCaseState::Accepted);
        assert!(!first.case_number.is_empty());
        let again = room
            .accept_case(msg.clone())
            .await
            .expect("second retry")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(again, first);
        // Router and case agree.
        let tr = transfer(&suite, &t.name).await;
        assert_eq!(tr.state, TransferState::InProgress as i32);
        assert_eq!(
            st(&get_case(&mut room, &c.name).await),
            MediationCaseState::Accepted
        );
        // A new request id on the accepted case is the wrong state, not a second acceptance.
        let e = room
            .accept_case(AcceptCaseRequest {
                request_id: rid(),
                ..msg.clone()
            })
            .await
            .expect_err("accepted already");
        assert_eq!(e.code(), Code::FailedPrecondition);
    }
);

suite_test!(
    a_cut_off_ending_is_completed_by_its_retry,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let c = accept(&mut room, &c).await;
        let msg = EndMediationRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            reason: EndReason::GapTooLarge as i32,
            detail: "双方分歧较大".into(),
            request_id: rid(),
            ..Default::default()
        };
        let mut r2 = room.clone();
        cut_off(async |req| r2.end_mediation(req).await, &msg).await;
        agree(
            &suite,
            &mut room,
            &c.name,
            &t.name,
            &[
                (TransferState::InProgress, MediationCaseState::Accepted),
                (TransferState::FeedbackSubmitted, MediationCaseState::Ended),
            ],
        )
        .await;
        let first = room
            .end_mediation(msg.clone())
            .await
            .expect("retry")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(st(&first), MediationCaseState::Ended);
        let term = first.termination.clone().expect("termination");
        assert_eq!(term.reason, EndReason::GapTooLarge as i32);
        let again = room
            .end_mediation(msg.clone())
            .await
            .expect("second retry")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(again, first);
        let tr = transfer(&suite, &t.name).await;
        assert_eq!(tr.state, TransferState::FeedbackSubmitted as i32);
    }
);

/// A router envelope for the room about `t`, as the router would deliver it.
fn envelope(t: &Transfer, kind: fengqiao_proto::inbox::MessageKind, seq: u64) -> Envelope {
    let event = fengqiao_proto::router::TransferEvent {
        event_id: rid(),
        sequence: seq,
        transfer: t.name.clone(),
        case_id: t
            .case_snapshot
            .as_ref()
            .map(|s| s.case_id.clone())
            .unwrap_or_default(),
        reason_code: "possible_public_security_matter".into(),
        reason: "情况有变".into(),
        ..Default::default()
    };
    let payload = fengqiao_proto::router::TransferMessage {
        event: Some(event),
        transfer: Some(t.clone()),
        investigation: None,
        route: None,
    };
    Envelope {
        message_id: rid(),
        case_id: t
            .case_snapshot
            .as_ref()
            .map(|s| s.case_id.clone())
            .unwrap_or_default(),
        transfer: t.name.clone(),
        kind: kind as i32,
        from_agency: format!("agencies/{STATION}"),
        to_agency: format!("agencies/{ROOM}"),
        payload: prost::Message::encode_to_vec(&payload),
        payload_type: "fengqiao.router.v1.TransferMessage".into(),
        route: t.route.clone(),
        route_version: t.route_version,
        recipient_side: fengqiao_proto::inbox::RecipientSide::Receiver as i32,
        ..Default::default()
    }
}

suite_test!(
    an_old_message_does_not_revert_a_newer_case,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let c = accept(&mut room, &c).await;
        let tr = transfer(&suite, &t.name).await;
        let accepted_seq = tr.last_event.as_ref().expect("last event").sequence;
        let mut inbox = AgencyInboxServiceClient::with_interceptor(
            suite.channel(),
            suite.caller("xigang-justice-bureau", "router", &["router"]),
        );
        // An escalation as it would have looked before the acceptance: older, so no change.
        let mut old = tr.clone();
        old.state = TransferState::Escalated as i32;
        old.feedback_clock = None;
        inbox
            .deliver(DeliverRequest {
                envelope: Some(envelope(
                    &old,
                    MessageKind::TransferEscalated,
                    accepted_seq - 1,
                )),
            })
            .await
            .expect("delivered");
        let now = get_case(&mut room, &c.name).await;
        assert_eq!(st(&now), MediationCaseState::Accepted);
        assert_eq!(now.etag, c.etag, "an old message changes nothing");
        // The same message as a newer event is applied: the case follows the router.
        inbox
            .deliver(DeliverRequest {
                envelope: Some(envelope(
                    &old,
                    MessageKind::TransferEscalated,
                    accepted_seq + 1_000_000,
                )),
            })
            .await
            .expect("delivered");
        assert_eq!(
            st(&get_case(&mut room, &c.name).await),
            MediationCaseState::Escalated
        );
    }
);

suite_test!(
    case_numbers_are_unique_under_concurrency,
    |suite| async move {
        roster(&suite).await;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..60 {
            let suite = suite.clone();
            set.spawn(async move {
                let (_, c) = offered(&suite).await;
                let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
                accept(&mut room, &c).await.case_number
            });
        }
        let mut numbers = std::collections::BTreeSet::new();
        while let Some(n) = set.join_next().await {
            let n = n.expect("task");
            assert!(!n.is_empty());
            numbers.insert(n);
        }
        assert_eq!(numbers.len(), 60, "distinct 调解案号: {numbers:?}");
    }
);

suite_test!(
    the_case_file_holds_the_consent_evidence,
    |suite| async move {
        roster(&suite).await;
        let (_, c) = offered(&suite).await;
        let mut room = med(&suite, ROOM, "mediator-01", &["mediator"]);
        let c = accept(&mut room, &c).await;
        let evidence = EvidenceRef {
            display_name: "人民调解申请书（张某签名）".into(),
            media_type: "application/pdf".into(),
            uri: "evidence://consent/0001".into(),
            ..Default::default()
        };
        room.record_consent(RecordConsentRequest {
            name: c.name.clone(),
            party_id: c.parties[0].party_id.clone(),
            decision: ConsentDecision::Consented as i32,
            method: ConsentMethod::Written as i32,
            evidence: Some(evidence.clone()),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("consent");
        let shown = get_case(&mut room, &c.name).await;
        assert_eq!(shown.consents[0].evidence.as_ref(), Some(&evidence));
        let file = room
            .get_case_file(GetCaseFileRequest {
                name: c.name.clone(),
            })
            .await
            .expect("file")
            .into_inner()
            .case_file
            .expect("file");
        assert!(
            file.entries
                .iter()
                .any(|e| e.document.as_ref() == Some(&evidence)),
            "the consent evidence is in the case file"
        );
    }
);
