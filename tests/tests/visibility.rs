//! Who sees a transfer, and who may approve it, on SQLite and PostgreSQL (#9 §4):
//! the receiving agency sees nothing before the offer; approving another step than the one
//! awaiting approval is the wrong state, whoever asks; one person may not approve two steps
//! even when holding tokens of two units of one organisation.

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::reason_of;
use fengqiao_proto::common::{DisputeCategory, Party, PartyRole};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::*;
use fengqiao_scenarios::rid;
use fengqiao_testkit::{ISSUER, TestSuite, suite_test};
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

/// A client whose token names the natural person acting (claim `person`).
fn person(suite: &TestSuite, agency: &str, actor: &str, role: &str, who: &str) -> Client {
    let mut claims =
        fengqiao_kit::auth::claims(ISSUER, &format!("agencies/{agency}"), actor, &[role], 3600);
    claims.person = Some(who.to_string());
    let token = suite.key().sign(&claims);
    TransferServiceClient::with_interceptor(suite.channel(), CallInterceptor::new(Some(token)))
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
            summary: "邻里漏水纠纷，民警到场后移送调解".into(),
            region_code: "210203".into(),
            parties: vec![
                Party {
                    role: PartyRole::Applicant as i32,
                    name: "张某".into(),
                    ..Default::default()
                },
                Party {
                    role: PartyRole::Respondent as i32,
                    name: "李某".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        note: "民间纠纷，建议调解".into(),
        ..Default::default()
    }
}

/// A new transfer, created and submitted: step 0 (指挥室审核) awaits approval.
async fn submitted(officer: &mut Client) -> Transfer {
    officer
        .create_transfer(CreateTransferRequest {
            transfer: Some(dispute()),
            request_id: rid(),
            submit: true,
        })
        .await
        .expect("create and submit")
        .into_inner()
        .transfer
        .expect("transfer")
}

async fn approve(c: &mut Client, t: &Transfer, step: u32) -> Result<Transfer, tonic::Status> {
    c.approve_transfer(ApproveTransferRequest {
        name: t.name.clone(),
        etag: String::new(),
        step_index: step,
        comment: "同意".into(),
        request_id: rid(),
    })
    .await
    .map(|r| r.into_inner().transfer.expect("transfer"))
}

fn case_id(t: &Transfer) -> String {
    t.case_snapshot
        .as_ref()
        .map(|c| c.case_id.clone())
        .unwrap_or_default()
}

suite_test!(
    the_receiver_sees_nothing_before_the_offer,
    |suite| async move {
        let mut officer = client(&suite, STATION, "officer-01", &["officer"]);
        let mut reviewer = client(&suite, COMMAND, "reviewer-01", &["command_room_reviewer"]);
        let mut chief = client(&suite, STATION, "duty-chief-01", &["duty_chief"]);
        let mut room = client(&suite, ROOM, "mediator-01", &["mediator"]);
        let t = submitted(&mut officer).await;
        assert_eq!(t.state, TransferState::AwaitingApproval as i32);

        let incoming = || ListTransfersRequest {
            direction: TransferDirection::Incoming as i32,
            ..Default::default()
        };
        let hidden = |t: &Transfer| {
            let name = t.name.clone();
            move |l: &ListTransfersResponse| l.transfers.iter().all(|x| x.name != name)
        };
        // Awaiting approval: not readable, not listed, no timeline for the receiver.
        let e = room
            .get_transfer(GetTransferRequest {
                name: t.name.clone(),
            })
            .await
            .expect_err("not offered yet");
        assert_eq!(e.code(), Code::NotFound);
        let l = room
            .list_transfers(incoming())
            .await
            .expect("list")
            .into_inner();
        assert!(hidden(&t)(&l), "listed before the offer");
        let e = room
            .get_case_timeline(GetCaseTimelineRequest {
                case_id: case_id(&t),
                ..Default::default()
            })
            .await
            .expect_err("no timeline before the offer");
        assert_eq!(e.code(), Code::NotFound);
        // The sender and the approver do see it.
        assert!(
            reviewer
                .get_transfer(GetTransferRequest {
                    name: t.name.clone()
                })
                .await
                .is_ok()
        );

        approve(&mut reviewer, &t, 0).await.expect("step 0");
        // Still awaiting the duty chief: still nothing for the receiver.
        let e = room
            .get_transfer(GetTransferRequest {
                name: t.name.clone(),
            })
            .await
            .expect_err("not offered yet");
        assert_eq!(e.code(), Code::NotFound);

        let offered = approve(&mut chief, &t, 1).await.expect("step 1");
        assert_eq!(offered.state, TransferState::Approved as i32);
        let seen = room
            .get_transfer(GetTransferRequest {
                name: t.name.clone(),
            })
            .await
            .expect("offered: visible")
            .into_inner()
            .transfer
            .expect("transfer");
        assert_eq!(seen.name, t.name);
        let l = room
            .list_transfers(incoming())
            .await
            .expect("list")
            .into_inner();
        assert!(!hidden(&t)(&l), "listed once offered");
        let tl = room
            .get_case_timeline(GetCaseTimelineRequest {
                case_id: case_id(&t),
                ..Default::default()
            })
            .await
            .expect("timeline once offered")
            .into_inner();
        // From the offer on: no CREATED, SUBMITTED or STEP_APPROVED event.
        assert!(!tl.events.is_empty());
        for e in &tl.events {
            assert!(
                e.to_state != TransferState::Draft as i32
                    && e.to_state != TransferState::AwaitingApproval as i32,
                "receiver saw a pre-offer event: {e:?}"
            );
        }

        // Withdrawn before any offer: the receiver never sees it.
        let t2 = submitted(&mut officer).await;
        officer
            .withdraw_transfer(WithdrawTransferRequest {
                name: t2.name.clone(),
                reason: "当事人已自行和解".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("withdraw");
        let e = room
            .get_transfer(GetTransferRequest {
                name: t2.name.clone(),
            })
            .await
            .expect_err("withdrawn before the offer");
        assert_eq!(e.code(), Code::NotFound);
        let l = room
            .list_transfers(ListTransfersRequest {
                direction: TransferDirection::Incoming as i32,
                states: vec![TransferState::Withdrawn as i32],
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert!(l.transfers.iter().all(|x| x.name != t2.name));
    }
);

suite_test!(
    approving_another_step_is_the_wrong_state,
    |suite| async move {
        let mut officer = client(&suite, STATION, "officer-01", &["officer"]);
        let mut chief = client(&suite, STATION, "duty-chief-01", &["duty_chief"]);
        let t = submitted(&mut officer).await;
        // Step 0 awaits the command room; the duty chief asks for step 1.
        let e = approve(&mut chief, &t, 1)
            .await
            .expect_err("step 0 pending");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert_eq!(reason_of(&e).as_deref(), Some("WRONG_STATE"));
        // Step 0 by the wrong agency is still refused as not theirs.
        let e = approve(&mut chief, &t, 0)
            .await
            .expect_err("not the command room");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
);

suite_test!(one_person_cannot_approve_two_steps, |suite| async move {
    let mut officer = client(&suite, STATION, "officer-01", &["officer"]);
    // One officer (警号 021234) holding a command-room token and a station token with
    // different actor ids.
    let mut as_reviewer = person(
        &suite,
        COMMAND,
        "cmd-021234",
        "command_room_reviewer",
        "021234",
    );
    let mut as_chief = person(&suite, STATION, "stn-021234", "duty_chief", "021234");
    let t = submitted(&mut officer).await;
    approve(&mut as_reviewer, &t, 0).await.expect("step 0");
    let e = approve(&mut as_chief, &t, 1)
        .await
        .expect_err("same person");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(reason_of(&e).as_deref(), Some("SAME_APPROVER"));

    // Without a person claim the actor id is the person, across the two units.
    let t = submitted(&mut officer).await;
    let mut reviewer = client(&suite, COMMAND, "officer-77", &["command_room_reviewer"]);
    let mut chief_same_id = client(&suite, STATION, "officer-77", &["duty_chief"]);
    approve(&mut reviewer, &t, 0).await.expect("step 0");
    let e = approve(&mut chief_same_id, &t, 1)
        .await
        .expect_err("same actor id in both units");
    assert_eq!(reason_of(&e).as_deref(), Some("SAME_APPROVER"));

    // Another person approves step 1.
    let mut chief = person(&suite, STATION, "stn-030001", "duty_chief", "030001");
    let done = approve(&mut chief, &t, 1).await.expect("another person");
    assert_eq!(done.state, TransferState::Approved as i32);
    let approvers: Vec<String> = done
        .approvals
        .iter()
        .filter_map(|a| a.approver.as_ref().map(|p| p.person.clone()))
        .collect();
    assert_eq!(
        approvers,
        vec!["officer-77".to_string(), "030001".to_string()]
    );
});
