//! Transfers through the router as agency systems drive them, on SQLite and PostgreSQL:
//! the 警调对接 route end to end, and every refusal an agency can run into.

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{DisputeCategory, Party, PartyRole};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::*;
use fengqiao_scenarios::rid;
use fengqiao_testkit::{TestSuite, suite_test};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;

const STATION: &str = "xigang-bayilu-station";
const COMMAND: &str = "xigang-110";
const ROOM: &str = "xigang-bayilu-mediation-room";

fn client(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Client {
    TransferServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

struct Cast {
    officer: Client,
    reviewer: Client,
    chief: Client,
    room: Client,
    court: Client,
}

fn cast(suite: &TestSuite) -> Cast {
    Cast {
        officer: client(suite, STATION, "officer-01", &["officer"]),
        reviewer: client(suite, COMMAND, "reviewer-01", &["command_room_reviewer"]),
        chief: client(suite, STATION, "duty-chief-01", &["duty_chief"]),
        room: client(suite, ROOM, "mediator-01", &["mediator"]),
        court: client(suite, "xigang-court", "judge-01", &["judge"]),
    }
}

fn noise_dispute() -> Transfer {
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
            ..Default::default()
        }),
        note: "110警情，民间纠纷，建议调解".into(),
        ..Default::default()
    }
}

async fn create(c: &mut Client) -> Transfer {
    c.create_transfer(CreateTransferRequest {
        transfer: Some(noise_dispute()),
        request_id: rid(),
        submit: false,
    })
    .await
    .expect("create")
    .into_inner()
    .transfer
    .expect("transfer")
}

fn state(t: &Transfer) -> TransferState {
    TransferState::try_from(t.state).expect("state")
}

/// Drives a new transfer to APPROVED.
async fn approved(c: &mut Cast) -> Transfer {
    let t = create(&mut c.officer).await;
    let t = c
        .officer
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
    let t = c
        .reviewer
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
    c.chief
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
        .expect("t")
}

async fn get(c: &mut Client, name: &str) -> Transfer {
    c.get_transfer(GetTransferRequest { name: name.into() })
        .await
        .expect("get")
        .into_inner()
        .transfer
        .expect("t")
}

suite_test!(a_noise_dispute_goes_round_the_loop, |suite| async move {
    let mut c = cast(&suite);
    let t = create(&mut c.officer).await;
    assert_eq!(state(&t), TransferState::Draft);
    assert_eq!(t.route_version, 2, "the current version of the route");
    assert!(
        t.case_snapshot
            .as_ref()
            .is_some_and(|c| !c.case_id.is_empty())
    );

    let t = approved(&mut c).await;
    let case_id = t.case_snapshot.as_ref().expect("case").case_id.clone();
    assert_eq!(state(&t), TransferState::Approved);
    assert_eq!(t.approvals.len(), 2);
    // The acceptance clock starts on delivery (送达), not on approval.
    assert!(
        t.acceptance_clock.is_none(),
        "acceptance clock before delivery"
    );

    // The mediation room sees it and accepts (受理).
    let seen = get(&mut c.room, &t.name).await;
    let t = c
        .room
        .accept_transfer(AcceptTransferRequest {
            name: seen.name.clone(),
            // No etag: the router may mark the offer DELIVERED at any moment.
            etag: String::new(),
            receiver_reference: "西岗调字〔2026〕001号".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("accept")
        .into_inner()
        .transfer
        .expect("t");
    assert_eq!(state(&t), TransferState::InProgress);
    assert!(t.feedback_clock.is_some());

    // Evidence is thin: supplementary investigation pauses the feedback clock …
    let r = c
        .room
        .request_investigation(RequestInvestigationRequest {
            parent: t.name.clone(),
            etag: t.etag.clone(),
            questions: "请补充调取楼道监控".into(),
            pause_feedback_clock: true,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("request investigation")
        .into_inner();
    let inv = r.investigation.expect("investigation");
    let t = r.transfer.expect("t");
    assert!(t.feedback_clock.as_ref().is_some_and(|c| c.paused));
    // … the station answers, and it runs again.
    let r = c
        .officer
        .answer_investigation(AnswerInvestigationRequest {
            name: inv.name.clone(),
            etag: t.etag.clone(),
            answer: "已调取监控，确认夜间噪音".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("answer")
        .into_inner();
    let t = r.transfer.expect("t");
    assert!(t.feedback_clock.as_ref().is_some_and(|c| !c.paused));

    let t = c
        .room
        .submit_feedback(SubmitFeedbackRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            outcome_code: "agreement_reached".into(),
            summary: "双方达成调解协议，楼上住户承诺22点后不再产生噪音".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("feedback")
        .into_inner()
        .transfer
        .expect("t");
    assert_eq!(state(&t), TransferState::FeedbackSubmitted);

    // The command side sees the outcome; the station closes the loop.
    let t = c
        .officer
        .acknowledge_feedback(AcknowledgeFeedbackRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            comment: "已反馈指挥室".into(),
            request_id: rid(),
        })
        .await
        .expect("ack")
        .into_inner()
        .transfer
        .expect("t");
    assert_eq!(state(&t), TransferState::Closed);

    // The case timeline, as the station sees it.
    let tl = c
        .officer
        .get_case_timeline(GetCaseTimelineRequest {
            case_id: case_id.clone(),
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    let types: Vec<TransferEventType> = tl
        .events
        .iter()
        .map(|e| TransferEventType::try_from(e.event_type).expect("type"))
        .collect();
    use TransferEventType as E;
    for expected in [
        E::Created,
        E::Submitted,
        E::StepApproved,
        E::Approved,
        E::Accepted,
        E::InvestigationRequested,
        E::InvestigationAnswered,
        E::FeedbackSubmitted,
        E::FeedbackAcknowledged,
    ] {
        assert!(
            types.contains(&expected),
            "{expected:?} missing from {types:?}"
        );
    }
    let seqs: Vec<u64> = tl.events.iter().map(|e| e.sequence).collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(seqs, sorted);

    // Another agency sees nothing: the same answer as for a missing transfer.
    let e = c
        .court
        .get_transfer(GetTransferRequest {
            name: t.name.clone(),
        })
        .await
        .expect_err("not theirs");
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .court
        .get_case_timeline(GetCaseTimelineRequest {
            case_id,
            ..Default::default()
        })
        .await
        .expect_err("not theirs");
    assert_eq!(e.code(), Code::NotFound);
});

suite_test!(refusals, |suite| async move {
    let mut c = cast(&suite);
    let t = create(&mut c.officer).await;

    // Wrong state: the sender acknowledges feedback on its own draft.
    let e = c
        .officer
        .acknowledge_feedback(AcknowledgeFeedbackRequest {
            name: t.name.clone(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("no feedback on a draft");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(reason_of(&e).as_deref(), Some("WRONG_STATE"));

    // The receiver cannot see, let alone act on, a transfer not offered to it yet: NOT_FOUND,
    // as for a missing transfer.
    for e in [
        c.room
            .accept_transfer(AcceptTransferRequest {
                name: t.name.clone(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("draft is not offered"),
        c.room
            .submit_transfer(SubmitTransferRequest {
                name: t.name.clone(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("receiver cannot submit"),
    ] {
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }

    // Wrong party: the sender cannot accept its own transfer.
    let e = c
        .officer
        .accept_transfer(AcceptTransferRequest {
            name: t.name.clone(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("sender cannot accept");
    assert_eq!(e.code(), Code::PermissionDenied);

    // Another agency: NOT_FOUND, as for a missing transfer.
    let e = c
        .court
        .withdraw_transfer(WithdrawTransferRequest {
            name: t.name.clone(),
            reason: "x".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("not theirs");
    assert_eq!(e.code(), Code::NotFound);

    // Submit, then approval by the wrong person or role.
    let t = c
        .officer
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
    assert_eq!(state(&t), TransferState::AwaitingApproval);
    let e = c
        .chief
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            step_index: 0,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("the duty chief is not the command room");
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut no_role = client(&suite, COMMAND, "clerk", &[]);
    let e = no_role
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            step_index: 0,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("role required");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(reason_of(&e).as_deref(), Some("ROLE_REQUIRED"));
    let e = c
        .reviewer
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            step_index: 1,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("wrong step");
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Stale etag: ABORTED.
    let e = c
        .reviewer
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            step_index: 0,
            etag: "\"1\"".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("stale etag");
    assert_eq!(e.code(), Code::Aborted);

    // Rejection sends it back to DRAFT with approvals cleared.
    let t = c
        .reviewer
        .reject_transfer(RejectTransferRequest {
            name: t.name.clone(),
            step_index: 0,
            reason: "缺少当事人联系方式".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("reject")
        .into_inner()
        .transfer
        .expect("t");
    assert_eq!(state(&t), TransferState::Draft);
    assert!(t.approvals.is_empty());

    // Idempotency: the same request replayed answers the same; a different body is refused.
    let req = WithdrawTransferRequest {
        name: t.name.clone(),
        etag: t.etag.clone(),
        reason: "当事人已自行和解".into(),
        request_id: rid(),
    };
    let a = c
        .officer
        .withdraw_transfer(req.clone())
        .await
        .expect("withdraw")
        .into_inner();
    let b = c
        .officer
        .withdraw_transfer(req.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(a, b);
    assert_eq!(
        state(a.transfer.as_ref().expect("t")),
        TransferState::Withdrawn
    );
    let e = c
        .officer
        .withdraw_transfer(WithdrawTransferRequest {
            reason: "别的理由".into(),
            ..req
        })
        .await
        .expect_err("reused id");
    assert_eq!(e.code(), Code::AlreadyExists);
    // Terminal: nothing more.
    let e = c
        .officer
        .submit_transfer(SubmitTransferRequest {
            name: t.name.clone(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("withdrawn");
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Decline needs a route reason; with one it is recorded.
    let t = approved(&mut c).await;
    let e = c
        .room
        .decline_transfer(DeclineTransferRequest {
            name: t.name.clone(),
            reason_code: "no_such_reason".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("unknown reason");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_fields_of(&e), vec!["reason_code"]);
    let t = c
        .room
        .decline_transfer(DeclineTransferRequest {
            name: t.name.clone(),
            reason_code: "outside_jurisdiction".into(),
            reason: "不属本调解室辖区".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("decline")
        .into_inner()
        .transfer
        .expect("t");
    assert_eq!(state(&t), TransferState::Declined);
    assert_eq!(
        t.decline.expect("decline").reason_code,
        "outside_jurisdiction"
    );

    // Escalation (人民调解法 Art 25) from IN_PROGRESS.
    let t = approved(&mut c).await;
    let t = c
        .room
        .accept_transfer(AcceptTransferRequest {
            name: t.name.clone(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("accept")
        .into_inner()
        .transfer
        .expect("t");
    let e = c
        .officer
        .escalate_transfer(EscalateTransferRequest {
            name: t.name.clone(),
            reason: "x".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect_err("only the receiver escalates");
    assert_eq!(e.code(), Code::PermissionDenied);
    let t = c
        .room
        .escalate_transfer(EscalateTransferRequest {
            name: t.name.clone(),
            reason_code: "risk_of_escalation".into(),
            reason: "一方扬言报复，有激化可能".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("escalate")
        .into_inner()
        .transfer
        .expect("t");
    assert_eq!(state(&t), TransferState::Escalated);

    // Bad input on create: every bad field named, nothing stored.
    let before = c
        .officer
        .list_transfers(ListTransfersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .transfers
        .len();
    let mut bad = noise_dispute();
    if let Some(case) = bad.case_snapshot.as_mut() {
        case.summary.clear();
        case.region_code = "999999".into();
    }
    let e = c
        .officer
        .create_transfer(CreateTransferRequest {
            transfer: Some(bad),
            request_id: rid(),
            submit: false,
        })
        .await
        .expect_err("invalid");
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut fields = bad_fields_of(&e);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "transfer.case_snapshot.region_code",
            "transfer.case_snapshot.summary"
        ]
    );
    let after = c
        .officer
        .list_transfers(ListTransfersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .transfers
        .len();
    assert_eq!(before, after);

    // A court cannot start a police route.
    let e = c
        .court
        .create_transfer(CreateTransferRequest {
            transfer: Some(noise_dispute()),
            request_id: rid(),
            submit: false,
        })
        .await
        .expect_err("wrong sender kind");
    assert_eq!(e.code(), Code::PermissionDenied);
});

suite_test!(lists_and_watch, |suite| async move {
    use tokio_stream::StreamExt as _;
    let mut c = cast(&suite);
    let mut watch = c
        .room
        .watch_transfers(WatchTransfersRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let t = approved(&mut c).await;
    // The room is the receiver: it sees the events of this transfer from now on.
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("ok");
    let ev = first.event.expect("event");
    assert_eq!(ev.transfer, t.name);

    let incoming = c
        .room
        .list_transfers(ListTransfersRequest {
            direction: TransferDirection::Incoming as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(incoming.transfers.len(), 1);
    // The station's view across directions, a page at a time, newest first.
    create(&mut c.officer).await;
    create(&mut c.officer).await;
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .officer
            .list_transfers(ListTransfersRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.transfers.len() <= 2);
        names.extend(page.transfers.into_iter().map(|t| t.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names.len(), 3, "{names:?}");
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3);
    // The command room approved step 0: it lists the transfer too.
    let approver_view = c
        .reviewer
        .list_transfers(ListTransfersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        approver_view.transfers.len(),
        3,
        "the parent agency approves all three"
    );
    let none = c
        .court
        .list_transfers(ListTransfersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(none.transfers.is_empty());
});
