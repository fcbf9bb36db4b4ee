//! 委派调解 (court-to-invited-mediation) end to end, on SQLite and PostgreSQL: the court
//! delegates a pre-filing case to the district mediation committee, the mediation service
//! takes its outcome and escalation codes from the route the transfer pinned (not from the
//! 警调对接 route), and the router shows the court route's codes.

use std::time::Duration;

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{AgencyRef, DisputeCategory, Party, PartyRole};
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::mediation::*;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    CaseSnapshot, CreateTransferRequest, GetTransferRequest, SubmitTransferRequest, Transfer,
    TransferState,
};
use fengqiao_scenarios::{rid, sign_sample_agreement};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, StoreConfig};
use fengqiao_testkit::{ServiceName, TestSuite, suite_test};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Router = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Med = MediationServiceClient<InterceptedService<Channel, CallInterceptor>>;

const COURT: &str = "xigang-court";
const COMMITTEE: &str = "xigang-mediation-committee";
const ORG: &str = "organizations/xigang-committee";

fn court(suite: &TestSuite) -> Router {
    TransferServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(COURT, "judge-01", &["judge"]),
    )
}

fn committee(suite: &TestSuite) -> Med {
    MediationServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(COMMITTEE, "director", &["mediation_admin", "mediator"]),
    )
}

fn st(c: &MediationCase) -> MediationCaseState {
    MediationCaseState::try_from(c.state).unwrap_or(MediationCaseState::Unspecified)
}

/// The committee registers itself and one mediator for neighbourhood disputes.
async fn roster(suite: &TestSuite) {
    let mut head = committee(suite);
    head.create_organization(CreateOrganizationRequest {
        organization: Some(Organization {
            display_name: "西岗区人民调解委员会".into(),
            kind: OrganizationKind::Committee as i32,
            region_code: "210203".into(),
            agency: format!("agencies/{COMMITTEE}"),
            ..Default::default()
        }),
        organization_id: "xigang-committee".into(),
        request_id: rid(),
    })
    .await
    .expect("create organisation");
    head.create_mediator(CreateMediatorRequest {
        parent: ORG.into(),
        mediator: Some(Mediator {
            display_name: "特邀调解员".into(),
            actor_id: "director".into(),
            specialties: vec![MediatorSpecialty::Neighbourhood as i32],
            region_code: "210203".into(),
            max_load: 10,
            ..Default::default()
        }),
        mediator_id: "invited-01".into(),
        request_id: rid(),
    })
    .await
    .expect("create mediator");
}

fn delegated_case() -> Transfer {
    Transfer {
        route: "routes/court-to-invited-mediation".into(),
        to_agency: Some(AgencyRef {
            name: format!("agencies/{COMMITTEE}"),
            ..Default::default()
        }),
        case_snapshot: Some(CaseSnapshot {
            category: DisputeCategory::Neighbourhood as i32,
            summary: "楼上漏水致楼下装修受损，原告起诉要求赔偿，立案前委派调解".into(),
            region_code: "210203".into(),
            parties: vec![
                Party {
                    party_id: "p1".into(),
                    role: PartyRole::Applicant as i32,
                    name: "王某".into(),
                    ..Default::default()
                },
                Party {
                    party_id: "p2".into(),
                    role: PartyRole::Respondent as i32,
                    name: "赵某".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        note: "诉前委派调解".into(),
        ..Default::default()
    }
}

/// The court delegates a case (no approval steps: offered on submission); waits until the
/// mediation service holds it.
async fn delegated(suite: &TestSuite) -> (Transfer, MediationCase) {
    let mut judge = court(suite);
    let t = judge
        .create_transfer(CreateTransferRequest {
            transfer: Some(delegated_case()),
            request_id: rid(),
            submit: false,
        })
        .await
        .expect("create")
        .into_inner()
        .transfer
        .expect("t");
    assert_eq!(t.route_version, 3, "v3: the contact_parties named clock");
    let t = judge
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
    let case_id = t.case_snapshot.as_ref().expect("snapshot").case_id.clone();
    let mut med = committee(suite);
    for _ in 0..100 {
        let cases = med
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
    panic!("the delegation never reached the mediation service");
}

/// Accepts, records both parties' consent and assigns the mediator: IN_MEDIATION.
async fn in_mediation(med: &mut Med, c: &MediationCase) -> MediationCase {
    let mut c = med
        .accept_case(AcceptCaseRequest {
            name: c.name.clone(),
            comment: "接受委派".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("accept")
        .into_inner()
        .mediation_case
        .expect("case");
    for p in ["p1", "p2"] {
        c = med
            .record_consent(RecordConsentRequest {
                name: c.name.clone(),
                party_id: p.into(),
                decision: ConsentDecision::Consented as i32,
                method: ConsentMethod::Written as i32,
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("consent")
            .into_inner()
            .mediation_case
            .expect("case");
    }
    let c = med
        .assign_mediator(AssignMediatorRequest {
            name: c.name.clone(),
            assignee: Some(assign_mediator_request::Assignee::Mediator(format!(
                "{ORG}/mediators/invited-01"
            ))),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("assign")
        .into_inner()
        .mediation_case
        .expect("case");
    assert_eq!(st(&c), MediationCaseState::InMediation);
    c
}

async fn transfer(suite: &TestSuite, name: &str) -> Transfer {
    court(suite)
        .get_transfer(GetTransferRequest { name: name.into() })
        .await
        .expect("get transfer")
        .into_inner()
        .transfer
        .expect("t")
}

suite_test!(
    a_delegated_case_ends_with_an_agreement_on_the_court_route,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = delegated(&suite).await;
        assert_eq!(st(&c), MediationCaseState::Offered);
        let mut med = committee(&suite);
        let c = in_mediation(&mut med, &c).await;

        // The police route's escalation code is not the court route's: refused before the
        // router is called, nothing changes.
        let e = med
            .escalate_case(EscalateCaseRequest {
                name: c.name.clone(),
                reason_code: "risk_of_escalation".into(),
                reason: "双方情绪激动".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("not a court-route escalation reason");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(bad_fields_of(&e), ["reason_code"]);
        assert_eq!(
            state_of(&transfer(&suite, &t.name).await),
            TransferState::InProgress
        );

        let c = sign_sample_agreement(&mut med, &c).await;
        let c = med
            .end_mediation(EndMediationRequest {
                name: c.name.clone(),
                reason: EndReason::Agreement as i32,
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("end with the agreement")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(st(&c), MediationCaseState::Ended);
        let term = c.termination.expect("termination");
        assert_eq!(term.outcome_code, "agreement_reached");

        let got = transfer(&suite, &t.name).await;
        assert_eq!(state_of(&got), TransferState::FeedbackSubmitted);
        let f = got.feedback.expect("feedback");
        assert_eq!(f.outcome_code, "agreement_reached");
        assert_eq!(
            f.outcome_description, "调解成功，达成调解协议",
            "the court route's text"
        );
    }
);

fn state_of(t: &Transfer) -> TransferState {
    TransferState::try_from(t.state).unwrap_or(TransferState::Unspecified)
}

suite_test!(
    a_delegated_case_with_an_unreachable_party_ends_with_the_court_routes_code,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = delegated(&suite).await;
        let mut med = committee(&suite);
        let c = in_mediation(&mut med, &c).await;
        // 在线调解规则 Art 25: the party cannot be reached. The 警调对接 route has no code for
        // it (mediation_failed); the court route has party_unreachable.
        let c = med
            .end_mediation(EndMediationRequest {
                name: c.name.clone(),
                reason: EndReason::Unreachable as i32,
                detail: "多次电话、短信联系被告未果".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("end: unreachable")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(st(&c), MediationCaseState::Ended);
        assert_eq!(
            c.termination.expect("termination").outcome_code,
            "party_unreachable"
        );
        let got = transfer(&suite, &t.name).await;
        assert_eq!(state_of(&got), TransferState::FeedbackSubmitted);
        let f = got.feedback.expect("feedback");
        assert_eq!(f.outcome_code, "party_unreachable");
        assert_eq!(f.outcome_description, "无法联系当事人");
    }
);

suite_test!(
    a_delegated_case_is_escalated_with_the_court_routes_reason,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = delegated(&suite).await;
        let mut med = committee(&suite);
        let c = in_mediation(&mut med, &c).await;
        // 特邀调解规定 Art 18: suspected false mediation is reported to the court.
        let c = med
            .escalate_case(EscalateCaseRequest {
                name: c.name.clone(),
                reason_code: "suspected_false_mediation".into(),
                reason: "双方陈述高度一致且损害第三人利益".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("escalate")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(st(&c), MediationCaseState::Escalated);
        assert_eq!(
            c.escalation.expect("escalation").to_agency,
            format!("agencies/{COURT}")
        );
        let got = transfer(&suite, &t.name).await;
        assert_eq!(state_of(&got), TransferState::Escalated);
        let h = got.handback.expect("handback");
        assert_eq!(h.reason_code, "suspected_false_mediation");
        assert!(
            h.reason_description.contains("特邀调解规定第十八条"),
            "{h:?}"
        );
        // Once escalated, nothing more is reported.
        let e = med
            .end_mediation(EndMediationRequest {
                name: c.name.clone(),
                reason: EndReason::GapTooLarge as i32,
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("escalated");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(reason_of(&e).is_some());
    }
);

/// Moves the transfer's feedback clock deadline into the past in the router's store, as
/// thirty days passing would; the router's timer (every second) then carries out the expiry.
async fn feedback_deadline_passes(suite: &TestSuite, transfer: &str) {
    let url = suite.stores[&ServiceName::Router].clone();
    let store = Store::connect(StoreConfig::new(url))
        .await
        .expect("router store");
    let id = transfer.trim_start_matches("transfers/");
    let row = sqlx::query("SELECT feedback_clock FROM transfers WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("row");
    let clock: String = row.try_get("feedback_clock").expect("clock");
    let at = clock.find("\"due_at\":").expect("due_at") + "\"due_at\":".len();
    let end = at
        + clock[at..]
            .find(|ch: char| !ch.is_ascii_digit())
            .expect("number");
    let moved = format!("{}1000000{}", &clock[..at], &clock[end..]);
    sqlx::query("UPDATE transfers SET feedback_clock = $1, next_due = 1000000 WHERE id = $2")
        .bind(moved)
        .bind(id)
        .execute(store.pool())
        .await
        .expect("update");
    store.close().await;
}

suite_test!(
    an_expired_mediation_period_sends_the_materials_back_to_the_court,
    |suite| async move {
        roster(&suite).await;
        let (t, c) = delegated(&suite).await;
        let mut med = committee(&suite);
        let c = in_mediation(&mut med, &c).await;
        feedback_deadline_passes(&suite, &t.name).await;
        // 特邀调解规定 Art 21: the route's expiry action (return_to_sender) is carried out.
        let mut got = transfer(&suite, &t.name).await;
        for _ in 0..100 {
            if state_of(&got) == TransferState::Expired {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            got = transfer(&suite, &t.name).await;
        }
        assert_eq!(state_of(&got), TransferState::Expired);
        let h = got.handback.expect("handback");
        assert_eq!(h.reason_code, "FEEDBACK_DEADLINE_MISSED");
        assert!(h.reason_description.contains("退回"), "{h:?}");
        // The mediation case follows: it is no longer open.
        let mut case = c.clone();
        for _ in 0..100 {
            case = med
                .get_case(GetCaseRequest {
                    name: c.name.clone(),
                })
                .await
                .expect("get case")
                .into_inner()
                .mediation_case
                .expect("case");
            if st(&case) == MediationCaseState::Expired {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(st(&case), MediationCaseState::Expired);
    }
);
