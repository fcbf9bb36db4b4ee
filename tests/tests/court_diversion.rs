//! 诉前调解 / 委派调解 as the court lives it, on SQLite and PostgreSQL, through the real
//! router and mediation service: the 立案庭 registers a pre-filing case with the parties'
//! consent, the parties choose (or the judge designates) an invited organisation, the
//! delegation travels on `court-to-invited-mediation`, the committee works the case on the
//! mediation service, and the court's case follows the router's messages: filed agreement,
//! or materials back and the 7-day registration decision (民事诉讼法 Art 126).
//!
//! Time is moved as the other scenario tests move it: deadlines are set into the past in the
//! router's store (its timer carries out the expiry) or in the court's deadline table (the
//! court's timer fires it); nobody sleeps for days.

use std::time::Duration;

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{DisputeCategory, EvidenceRef, Money, Party, PartyRole};
use fengqiao_proto::courtdiversion as cd;
use fengqiao_proto::courtdiversion::court_diversion_service_client::CourtDiversionServiceClient;
use fengqiao_proto::mediation as md;
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    CompleteClockRequest, ExtendDeadlineRequest, GetTransferRequest, ListTransfersRequest,
    PauseClockRequest, ResumeClockRequest, Transfer, TransferClock, TransferState,
};
use fengqiao_scenarios::{rid, sign_sample_agreement};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, StoreConfig};
use fengqiao_testkit::{ServiceName, TestSuite, suite_test};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Court = CourtDiversionServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Med = MediationServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Router = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;
type S = cd::PreFilingCaseState;

const COURT: &str = "xigang-court";
/// The district people's mediation committee (first invited organisation).
const COMMITTEE: &str = "xigang-mediation-committee";
/// The 金钥匙 mediation centre (second invited organisation).
const CENTRE: &str = "xigang-jinyaoshi-mediation-centre";
const DAY: i64 = 86_400_000_000;

fn clerk(suite: &TestSuite) -> Court {
    CourtDiversionServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(COURT, "clerk-01", &["court_clerk"]),
    )
}

fn judge(suite: &TestSuite) -> Court {
    CourtDiversionServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(COURT, "judge-01", &["judge"]),
    )
}

fn as_agency(suite: &TestSuite, agency: &str, roles: &[&str]) -> Court {
    CourtDiversionServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(agency, "someone", roles),
    )
}

/// The head of an invited organisation on the mediation service.
fn head(suite: &TestSuite, agency: &str) -> Med {
    let actor = if agency == COMMITTEE {
        "director"
    } else {
        "centre-head"
    };
    MediationServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(agency, actor, &["mediation_admin", "mediator"]),
    )
}

/// The organisation on the router (for the clock acts the mediation service leaves to it).
fn org_router(suite: &TestSuite, agency: &str) -> Router {
    TransferServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(agency, "director", &["mediation_admin", "mediator"]),
    )
}

fn org_name(agency: &str) -> String {
    format!("invitedOrganizations/{agency}")
}

fn mediator_name(agency: &str) -> String {
    let m = if agency == COMMITTEE {
        "director"
    } else {
        "centre-head"
    };
    format!("invitedOrganizations/{agency}/mediators/{m}")
}

fn doc(name: &str) -> EvidenceRef {
    EvidenceRef {
        display_name: name.into(),
        uri: format!("court://docs/{}", rid()),
        media_type: "application/pdf".into(),
        sha256: "ab".repeat(32),
        ..Default::default()
    }
}

fn party(id: &str, role: PartyRole, name: &str) -> Party {
    Party {
        party_id: id.into(),
        role: role as i32,
        name: name.into(),
        ..Default::default()
    }
}

/// A neighbourhood dispute brought to the court: water from upstairs ruined the plaintiff's
/// renovation, 5 000 yuan claimed.
fn dispute(number: u32) -> cd::PreFilingCase {
    cd::PreFilingCase {
        pre_filing_number: format!("(2026)辽0203诉前调{number}号"),
        plaintiffs: vec![party("p1", PartyRole::Applicant, "王某")],
        defendants: vec![party("p2", PartyRole::Respondent, "赵某")],
        claims: vec![cd::Claim {
            description: "判令被告赔偿装修损失".into(),
            amount: Some(Money {
                currency_code: "CNY".into(),
                units: 5000,
                nanos: 0,
            }),
        }],
        category: DisputeCategory::Neighbourhood as i32,
        summary: "楼上水管破裂致楼下装修受损，原告起诉要求赔偿".into(),
        evidence: vec![doc("起诉状")],
        region_code: "210203".into(),
        ..Default::default()
    }
}

fn consent(party: &str, decision: cd::ConsentDecision) -> cd::ConsentRecord {
    cd::ConsentRecord {
        party_id: party.into(),
        decision: decision as i32,
        method: cd::ConsentMethod::Written as i32,
        evidence: Some(doc("诉前调解确认书")),
        ..Default::default()
    }
}

fn st(c: &cd::PreFilingCase) -> S {
    S::try_from(c.state).unwrap_or(S::Unspecified)
}

fn clock<'a>(c: &'a cd::PreFilingCase, name: &str) -> &'a fengqiao_proto::common::ClockState {
    c.clocks
        .iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("clock {name} in {:?}", c.clocks))
}

fn due(k: &fengqiao_proto::common::ClockState) -> i64 {
    fengqiao_kit::time::from_timestamp(k.due_at.as_ref().expect("due_at"))
}

/// The 立案庭 registers the dispute with the given consents.
async fn intake(
    suite: &TestSuite,
    number: u32,
    consents: Vec<cd::ConsentRecord>,
) -> cd::PreFilingCase {
    clerk(suite)
        .create_case(cd::CreateCaseRequest {
            pre_filing_case: Some(dispute(number)),
            consents,
            request_id: rid(),
        })
        .await
        .expect("create case")
        .into_inner()
        .pre_filing_case
        .expect("case")
}

/// Both parties consent at intake (特邀调解规定 Art 11).
async fn consented(suite: &TestSuite, number: u32) -> cd::PreFilingCase {
    let c = intake(
        suite,
        number,
        vec![
            consent("p1", cd::ConsentDecision::Consented),
            consent("p2", cd::ConsentDecision::Consented),
        ],
    )
    .await;
    assert_eq!(st(&c), S::AwaitingJointChoice);
    c
}

async fn get(suite: &TestSuite, name: &str) -> cd::PreFilingCase {
    clerk(suite)
        .get_case(cd::GetCaseRequest { name: name.into() })
        .await
        .expect("get case")
        .into_inner()
        .pre_filing_case
        .expect("case")
}

/// Waits until the court's case satisfies `ok` (the router's message has arrived).
async fn until(
    suite: &TestSuite,
    name: &str,
    what: &str,
    ok: impl Fn(&cd::PreFilingCase) -> bool,
) -> cd::PreFilingCase {
    let mut c = get(suite, name).await;
    for _ in 0..150 {
        if ok(&c) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        c = get(suite, name).await;
    }
    panic!("the court's case never became {what}: {:?}", st(&c));
}

async fn until_state(suite: &TestSuite, name: &str, s: S) -> cd::PreFilingCase {
    until(suite, name, s.as_str_name(), |c| st(c) == s).await
}

/// The judge designates `agency` (the parties waived their joint choice, or it lapsed).
async fn designate(suite: &TestSuite, c: &cd::PreFilingCase, agency: &str) -> cd::PreFilingCase {
    judge(suite)
        .designate_mediator(cd::DesignateMediatorRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            organization: org_name(agency),
            mediator: mediator_name(agency),
            parties_waived_choice: st(c) == S::AwaitingJointChoice,
            evidence: Some(doc("放弃选定调解员声明")),
            note: "诉前委派调解".into(),
            request_id: rid(),
        })
        .await
        .expect("designate")
        .into_inner()
        .pre_filing_case
        .expect("case")
}

/// Registers the organisation and its mediator on the mediation service (its own roster).
async fn mediation_roster(suite: &TestSuite, agency: &str) {
    let mut h = head(suite, agency);
    h.create_organization(md::CreateOrganizationRequest {
        organization: Some(md::Organization {
            display_name: "特邀调解组织".into(),
            kind: md::OrganizationKind::Committee as i32,
            region_code: "210203".into(),
            agency: format!("agencies/{agency}"),
            ..Default::default()
        }),
        organization_id: agency.into(),
        request_id: rid(),
    })
    .await
    .expect("create organisation");
    let actor = if agency == COMMITTEE {
        "director"
    } else {
        "centre-head"
    };
    h.create_mediator(md::CreateMediatorRequest {
        parent: format!("organizations/{agency}"),
        mediator: Some(md::Mediator {
            display_name: "特邀调解员".into(),
            actor_id: actor.into(),
            specialties: vec![md::MediatorSpecialty::Neighbourhood as i32],
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

/// The organisation's mediation case for the court's case, once offered.
async fn offered(suite: &TestSuite, agency: &str, c: &cd::PreFilingCase) -> md::MediationCase {
    let mut h = head(suite, agency);
    for _ in 0..150 {
        let cases = h
            .list_cases(md::ListCasesRequest {
                case_id: c.case_id.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .mediation_cases;
        if let Some(m) = cases
            .into_iter()
            .find(|m| m.state == md::MediationCaseState::Offered as i32)
        {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the delegation never reached {agency}");
}

/// The organisation accepts (受理委派).
async fn accept(suite: &TestSuite, agency: &str, m: &md::MediationCase) -> md::MediationCase {
    head(suite, agency)
        .accept_case(md::AcceptCaseRequest {
            name: m.name.clone(),
            comment: "接受委派".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("accept")
        .into_inner()
        .mediation_case
        .expect("case")
}

/// The mediator reached both parties within 3 working days (在线调解规则 Art 15): the route's
/// named clock is completed on the router.
async fn contacted(suite: &TestSuite, agency: &str, m: &md::MediationCase) {
    org_router(suite, agency)
        .complete_clock(CompleteClockRequest {
            name: m.transfer.clone(),
            clock: "contact_parties".into(),
            comment: "已电话联系双方当事人".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("complete contact_parties");
}

/// Consents and the mediator on the mediation service: IN_MEDIATION there.
async fn mediating(suite: &TestSuite, agency: &str, m: &md::MediationCase) -> md::MediationCase {
    let mut h = head(suite, agency);
    let mut m = m.clone();
    for p in ["p1", "p2"] {
        m = h
            .record_consent(md::RecordConsentRequest {
                name: m.name.clone(),
                party_id: p.into(),
                decision: md::ConsentDecision::Consented as i32,
                method: md::ConsentMethod::Written as i32,
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("consent")
            .into_inner()
            .mediation_case
            .expect("case");
    }
    h.assign_mediator(md::AssignMediatorRequest {
        name: m.name.clone(),
        assignee: Some(md::assign_mediator_request::Assignee::Mediator(format!(
            "organizations/{agency}/mediators/invited-01"
        ))),
        request_id: rid(),
        ..Default::default()
    })
    .await
    .expect("assign")
    .into_inner()
    .mediation_case
    .expect("case")
}

/// The parties agree, sign, and the mediator ends the mediation with the agreement.
async fn agreed(suite: &TestSuite, agency: &str, m: &md::MediationCase) {
    let mut h = head(suite, agency);
    let m = sign_sample_agreement(&mut h, m).await;
    h.end_mediation(md::EndMediationRequest {
        name: m.name.clone(),
        reason: md::EndReason::Agreement as i32,
        request_id: rid(),
        ..Default::default()
    })
    .await
    .expect("end with the agreement");
}

/// From delegation to IN_MEDIATION at the court: accepted, parties contacted.
async fn in_mediation(
    suite: &TestSuite,
    agency: &str,
    c: &cd::PreFilingCase,
) -> (md::MediationCase, cd::PreFilingCase) {
    let m = offered(suite, agency, c).await;
    let m = accept(suite, agency, &m).await;
    let got = until_state(suite, &c.name, S::Contacting).await;
    assert_eq!(
        clock(&got, "contact").unit,
        fengqiao_proto::common::ClockUnit::WorkingDay as i32,
        "在线调解规则 Art 15: 3 working days"
    );
    contacted(suite, agency, &m).await;
    let m = mediating(suite, agency, &m).await;
    let got = until_state(suite, &c.name, S::InMediation).await;
    (m, got)
}

async fn router_store(suite: &TestSuite) -> Store {
    Store::connect(StoreConfig::new(suite.stores[&ServiceName::Router].clone()))
        .await
        .expect("router store")
}

/// Rewrites a stored clock of the transfer in the router's store (as days passing would),
/// and lets its timer look at it now when `due_now`.
async fn move_router_clock(
    suite: &TestSuite,
    transfer: &str,
    column: &str,
    due_now: bool,
    f: impl Fn(&mut serde_json::Value),
) {
    let store = router_store(suite).await;
    let id = transfer.trim_start_matches("transfers/");
    let row = sqlx::query(&format!("SELECT {column} FROM transfers WHERE id = $1"))
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("row");
    let text: String = row.try_get(column).expect("clock");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    match v.as_array_mut() {
        Some(list) => list.iter_mut().for_each(&f),
        None => f(&mut v),
    }
    let q = if due_now {
        format!("UPDATE transfers SET {column} = $1, next_due = 1000000 WHERE id = $2")
    } else {
        format!("UPDATE transfers SET {column} = $1 WHERE id = $2")
    };
    sqlx::query(&q)
        .bind(v.to_string())
        .bind(id)
        .execute(store.pool())
        .await
        .expect("update");
    store.close().await;
}

fn make_due(v: &mut serde_json::Value) {
    v["due_at"] = serde_json::json!(1_000_000);
}

async fn transfer(suite: &TestSuite, name: &str) -> Transfer {
    TransferServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(COURT, "judge-01", &["judge"]),
    )
    .get_transfer(GetTransferRequest { name: name.into() })
    .await
    .expect("get transfer")
    .into_inner()
    .transfer
    .expect("t")
}

// ---------------------------------------------------------------------------
// Done when …
// ---------------------------------------------------------------------------

suite_test!(
    agreed_within_thirty_days_filed_with_the_court_and_next_steps_offered,
    |suite| async move {
        mediation_roster(&suite, COMMITTEE).await;
        let mut watch = clerk(&suite)
            .watch_cases(cd::WatchCasesRequest::default())
            .await
            .expect("watch")
            .into_inner();
        // The roster the parties choose from (特邀调解名册, seeded by the sample district).
        let orgs = clerk(&suite)
            .list_invited_organizations(cd::ListInvitedOrganizationsRequest::default())
            .await
            .expect("roster")
            .into_inner()
            .invited_organizations;
        assert!(
            orgs.iter().any(|o| o.name == org_name(COMMITTEE)),
            "{orgs:?}"
        );
        assert!(orgs.iter().any(|o| o.name == org_name(CENTRE)));

        let c = consented(&suite, 1).await;
        let k = clock(&c, "joint_choice");
        assert_eq!(k.length, 2, "在线调解规则 Art 10: 2 working days");
        // 在线调解规则 Art 10: the parties jointly choose within 2 working days; both take part.
        let e = clerk(&suite)
            .choose_mediator(cd::ChooseMediatorRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                mediator: mediator_name(COMMITTEE),
                chosen_by_party_ids: vec!["p1".into()],
                evidence: Some(doc("选定调解员确认书")),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("one party alone does not choose jointly");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(bad_fields_of(&e), ["chosen_by_party_ids"]);
        let c = clerk(&suite)
            .choose_mediator(cd::ChooseMediatorRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                mediator: mediator_name(COMMITTEE),
                chosen_by_party_ids: vec!["p1".into(), "p2".into()],
                evidence: Some(doc("选定调解员确认书")),
                note: "双方共同选定".into(),
                request_id: rid(),
            })
            .await
            .expect("choose")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&c), S::Delegated);
        let d = &c.delegations[0];
        assert_eq!(d.method, cd::SelectionMethod::JointChoice as i32);
        assert_eq!(d.organization, org_name(COMMITTEE));
        assert!(d.transfer.starts_with("transfers/"));
        assert!(clock(&c, "joint_choice").stopped_at.is_some());

        let (m, got) = in_mediation(&suite, COMMITTEE, &c).await;
        let med = clock(&got, "mediation");
        assert_eq!(
            med.length, 30,
            "在线调解规则 Art 24: 30 days from acceptance"
        );
        agreed(&suite, COMMITTEE, &m).await;

        // 特邀调解规定 Art 19: the agreement is filed and the next steps are offered.
        let c = until_state(&suite, &c.name, S::AgreementFiled).await;
        let end = c.ending.as_ref().expect("ending");
        assert_eq!(end.reason, cd::EndReason::Agreement as i32);
        assert_eq!(end.outcome_code, "agreement_reached");
        let f = c.agreement_filing.as_ref().expect("filing");
        assert_eq!(
            f.offered_next_steps,
            [
                cd::NextStep::JudicialConfirmation as i32,
                cd::NextStep::MediationDocument as i32,
                cd::NextStep::VoluntaryPerformance as i32,
            ]
        );
        assert!(!f.filing_number.is_empty());
        assert_eq!(
            c.delegations[0].result,
            cd::DelegationResult::Accepted as i32
        );
        // The court's system confirmed receipt of the feedback: the transfer is closed.
        let t = c.delegations[0].transfer.clone();
        let mut closed = transfer(&suite, &t).await;
        for _ in 0..100 {
            if state_of(&closed) == TransferState::Closed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            closed = transfer(&suite, &t).await;
        }
        assert_eq!(state_of(&closed), TransferState::Closed);
        // The acknowledgement's message changes nothing here: the etag the clerk holds stays.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(get(&suite, &c.name).await.etag, c.etag);

        // The parties apply for judicial confirmation (诉前调确).
        let c = clerk(&suite)
            .decide_next_step(cd::DecideNextStepRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                next_step: cd::NextStep::JudicialConfirmation as i32,
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("next step")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&c), S::ConfirmationApplied);

        // The court's system saw every step on its watch stream, in order.
        let mut seen = Vec::new();
        while !seen.contains(&(S::ConfirmationApplied as i32)) {
            let msg = tokio::time::timeout(Duration::from_secs(10), watch.message())
                .await
                .expect("watch in time")
                .expect("stream")
                .expect("message");
            if let Some(e) = msg.event
                && e.event_type == cd::CaseEventType::StateChanged as i32
                && e.pre_filing_case == c.name
            {
                seen.push(e.to_state);
            }
        }
        let want: Vec<i32> = [
            S::ConsentPending,
            S::AwaitingJointChoice,
            S::Delegated,
            S::Contacting,
            S::InMediation,
            S::AgreementFiled,
            S::ConfirmationApplied,
        ]
        .iter()
        .map(|s| *s as i32)
        .collect();
        assert_eq!(seen, want);

        // 业绩档案 (特邀调解规定 Art 5–10): the organisation's record.
        let stats = clerk(&suite)
            .get_case_statistics(cd::GetCaseStatisticsRequest {
                start_time: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: 4_000_000_000,
                    nanos: 0,
                }),
                group_by: vec![cd::CaseStatisticsDimension::Organization as i32],
            })
            .await
            .expect("statistics")
            .into_inner();
        let row = stats
            .rows
            .iter()
            .find(|r| r.organization == org_name(COMMITTEE))
            .expect("row");
        assert_eq!((row.case_count, row.agreement_count), (1, 1));
        assert_eq!(row.agreement_rate, 1.0);
    }
);

suite_test!(
    declined_by_the_first_organisation_redesignated_and_agreed,
    |suite| async move {
        mediation_roster(&suite, COMMITTEE).await;
        mediation_roster(&suite, CENTRE).await;
        let c = consented(&suite, 2).await;
        let c = designate(&suite, &c, COMMITTEE).await;
        assert_eq!(st(&c), S::Delegated);
        assert_eq!(
            c.delegations[0].method,
            cd::SelectionMethod::CourtDesignation as i32
        );
        let m = offered(&suite, COMMITTEE, &c).await;
        // 在线调解规则 Art 12: the organisation declines with a reason.
        head(&suite, COMMITTEE)
            .decline_case(md::DeclineCaseRequest {
                name: m.name.clone(),
                reason_code: "outside_specialty".into(),
                reason: "本会暂无相邻关系专业调解员".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("decline");
        let c = until_state(&suite, &c.name, S::AwaitingDesignation).await;
        let d = &c.delegations[0];
        assert_eq!(d.result, cd::DelegationResult::Declined as i32);
        assert_eq!(d.decline_reason_code, "outside_specialty");
        assert!(c.selection.is_none());
        let k = clock(&c, "designation");
        assert!(
            k.stopped_at.is_none(),
            "the court designates within 3 working days"
        );

        // The court designates *another* organisation (Art 12): not the one that declined.
        let e = judge(&suite)
            .designate_mediator(cd::DesignateMediatorRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                organization: org_name(COMMITTEE),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("declined before");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&e).as_deref(), Some("ORGANIZATION_EXCLUDED"));
        // The clerk does not designate: the judge does.
        let e = clerk(&suite)
            .designate_mediator(cd::DesignateMediatorRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                organization: org_name(CENTRE),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("clerk");
        assert_eq!(e.code(), Code::PermissionDenied);

        let c = designate(&suite, &c, CENTRE).await;
        assert_eq!(st(&c), S::Delegated);
        assert_eq!(c.delegations.len(), 2);
        assert_eq!(
            c.delegations[1].method,
            cd::SelectionMethod::Redesignation as i32
        );
        assert_eq!(c.delegations[1].ordinal, 2);
        let (m, _) = in_mediation(&suite, CENTRE, &c).await;
        agreed(&suite, CENTRE, &m).await;
        let c = until_state(&suite, &c.name, S::AgreementFiled).await;
        assert_eq!(
            c.delegations[1].result,
            cd::DelegationResult::Accepted as i32
        );
    }
);

suite_test!(
    no_answer_in_three_working_days_redesignated_automatically,
    |suite| async move {
        mediation_roster(&suite, CENTRE).await;
        let c = consented(&suite, 3).await;
        let c = designate(&suite, &c, COMMITTEE).await;
        let c = until(&suite, &c.name, "acceptance clock running", |c| {
            c.clocks.iter().any(|k| k.name == "acceptance")
        })
        .await;
        let k = clock(&c, "acceptance");
        assert_eq!(
            (k.length, k.unit),
            (3, fengqiao_proto::common::ClockUnit::WorkingDay as i32)
        );
        // Three working days pass without an answer (在线调解规则 Art 12): the court's system
        // designates another organisation on the roster by itself.
        let t = c.delegations[0].transfer.clone();
        move_router_clock(&suite, &t, "acceptance_clock", true, make_due).await;
        let c = until(&suite, &c.name, "re-designated", |c| {
            c.delegations.len() == 2 && st(c) == S::Delegated
        })
        .await;
        assert_eq!(
            c.delegations[0].result,
            cd::DelegationResult::TimedOut as i32
        );
        let d = &c.delegations[1];
        assert_eq!(
            d.organization,
            org_name(CENTRE),
            "the other invited organisation"
        );
        assert_eq!(d.method, cd::SelectionMethod::Redesignation as i32);
        let by = c
            .selection
            .as_ref()
            .and_then(|s| s.selected_by.as_ref())
            .expect("by");
        assert_eq!(by.actor_id, "court-diversion");
        assert!(
            clock(&c, "designation").stopped_at.is_some(),
            "designated at once"
        );
        assert_eq!(
            state_of(&transfer(&suite, &t).await),
            TransferState::Expired
        );
        // The second organisation takes it.
        let m = offered(&suite, CENTRE, &c).await;
        accept(&suite, CENTRE, &m).await;
        until_state(&suite, &c.name, S::Contacting).await;
    }
);

fn state_of(t: &Transfer) -> TransferState {
    TransferState::try_from(t.state).unwrap_or(TransferState::Unspecified)
}

suite_test!(
    the_other_party_unreachable_for_three_working_days_materials_back_then_registered,
    |suite| async move {
        mediation_roster(&suite, COMMITTEE).await;
        let c = consented(&suite, 4).await;
        let c = designate(&suite, &c, COMMITTEE).await;
        let m = offered(&suite, COMMITTEE, &c).await;
        let m = accept(&suite, COMMITTEE, &m).await;
        let c = until_state(&suite, &c.name, S::Contacting).await;
        // 在线调解规则 Art 15: the defendant cannot be reached in 3 working days.
        move_router_clock(&suite, &m.transfer, "named_clocks", true, make_due).await;
        let c = until_state(&suite, &c.name, S::RegistrationPending).await;
        let back = c.materials_return.as_ref().expect("materials back");
        assert_eq!(back.cause, cd::ReturnCause::ContactFailed as i32);
        assert_eq!(back.reason_code, "CLOCK_CONTACT_PARTIES_MISSED");
        // 民事诉讼法 Art 126: the registration decision within 7 days.
        let reg = clock(&c, "registration");
        assert_eq!(reg.length, 7);
        assert!(reg.stopped_at.is_none());
        let started = fengqiao_kit::time::from_timestamp(reg.started_at.as_ref().expect("start"));
        assert!(
            due(reg) >= started + 7 * DAY,
            "7 days (later when the last is a holiday)"
        );
        assert!(!c.overdue);

        // 立案: the judge registers it with the court's case number.
        let e = judge(&suite)
            .register_case(cd::RegisterCaseRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                docket_number: c.pre_filing_number.clone(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("a pre-filing number is not a docket number");
        assert_eq!(bad_fields_of(&e), ["docket_number"]);
        let e = clerk(&suite)
            .register_case(cd::RegisterCaseRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                docket_number: "(2026)辽0203民初1234号".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("the clerk does not register");
        assert_eq!(e.code(), Code::PermissionDenied);
        let c = judge(&suite)
            .register_case(cd::RegisterCaseRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                docket_number: "(2026)辽0203民初1234号".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("register")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&c), S::Registered);
        assert!(clock(&c, "registration").stopped_at.is_some());
        assert_eq!(
            c.registration.as_ref().expect("decision").docket_number,
            "(2026)辽0203民初1234号"
        );
    }
);

suite_test!(
    period_expired_without_consent_returned_with_consent_extended_up_to_the_cap,
    |suite| async move {
        mediation_roster(&suite, COMMITTEE).await;
        // A: the 30 days run out and the parties did not agree to extend (Art 25).
        let a = designate(&suite, &consented(&suite, 5).await, COMMITTEE).await;
        let (ma, _) = in_mediation(&suite, COMMITTEE, &a).await;
        move_router_clock(&suite, &ma.transfer, "feedback_clock", true, make_due).await;
        let a = until_state(&suite, &a.name, S::RegistrationPending).await;
        assert_eq!(
            a.materials_return.as_ref().expect("back").cause,
            cd::ReturnCause::PeriodExpired as i32
        );
        assert_eq!(
            a.ending.as_ref().expect("ending").reason,
            cd::EndReason::PeriodExpired as i32
        );
        assert!(clock(&a, "registration").stopped_at.is_none());

        // B: every party consents to extend (特邀调解规定 Art 27): 20 days, then 10; the cap
        // (30 more, 60 in all, local practice on the route) refuses a day more.
        let b = designate(&suite, &consented(&suite, 6).await, COMMITTEE).await;
        let (mb, b) = in_mediation(&suite, COMMITTEE, &b).await;
        let before = due(clock(&b, "mediation"));
        let mut r = org_router(&suite, COMMITTEE);
        let extend = |days: u32| ExtendDeadlineRequest {
            name: mb.transfer.clone(),
            clock: TransferClock::Feedback as i32,
            length: days,
            reason: "双方同意延长调解期限".into(),
            consenting_party_ids: vec!["p1".into(), "p2".into()],
            request_id: rid(),
            ..Default::default()
        };
        r.extend_deadline(extend(20)).await.expect("extend 20");
        let b = until(&suite, &b.name, "extended", |c| c.extensions.len() == 1).await;
        assert_eq!(b.extensions[0].days, 20);
        let start = fengqiao_kit::time::from_timestamp(
            clock(&b, "mediation").started_at.as_ref().expect("start"),
        );
        // Calendar days; a period ending on a holiday runs to the next working day
        // (民事诉讼法 Art 85).
        let days = |n| {
            fengqiao_clock::add_duration(
                start,
                fengqiao_clock::ClockUnit::CalendarDay,
                n,
                fengqiao_clock::HolidayCalendar::builtin(),
            )
        };
        assert_eq!(before, days(30));
        assert_eq!(due(clock(&b, "mediation")), days(50));
        let e = r
            .extend_deadline(extend(11))
            .await
            .expect_err("beyond the cap");
        assert_eq!(e.code(), Code::FailedPrecondition);
        r.extend_deadline(extend(10)).await.expect("extend 10");
        let b = until(&suite, &b.name, "extended twice", |c| {
            c.extensions.len() == 2
        })
        .await;
        let k = clock(&b, "mediation");
        assert_eq!(k.extended_by, 30);
        assert_eq!(due(k), days(60));
        // The hard cap of 60 days holds: the deadline is at it and no further extension fits.
        assert_eq!(
            fengqiao_kit::time::from_timestamp(k.hard_cap_at.as_ref().expect("cap")),
            days(60)
        );
        let e = r.extend_deadline(extend(1)).await.expect_err("at the cap");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(st(&b), S::InMediation);
    }
);

suite_test!(
    an_appraisal_pause_of_n_days_moves_the_deadline_by_n_counted_days,
    |suite| async move {
        const N: i64 = 5;
        mediation_roster(&suite, COMMITTEE).await;
        let c = designate(&suite, &consented(&suite, 7).await, COMMITTEE).await;
        let (m, c) = in_mediation(&suite, COMMITTEE, &c).await;
        let unpaused = due(clock(&c, "mediation"));
        let mut r = org_router(&suite, COMMITTEE);
        // 在线调解规则 Art 26: a 鉴定 of the repair cost; its time is not counted.
        r.pause_clock(PauseClockRequest {
            name: m.transfer.clone(),
            clock: TransferClock::Feedback as i32,
            reason_code: "appraisal".into(),
            reason: "房屋修缮费用鉴定".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("pause");
        let c = until(&suite, &c.name, "paused", |c| clock(c, "mediation").paused).await;
        assert_eq!(c.appraisals.len(), 1);
        // The case was accepted N days ago and the appraisal began that day: move the clock
        // and the pause back N days (the unpaused deadline with it).
        move_router_clock(&suite, &m.transfer, "feedback_clock", false, |v| {
            for f in ["started_at", "due_at", "paused_at"] {
                let t = v[f].as_i64().expect("time");
                v[f] = serde_json::json!(t - N * DAY);
            }
        })
        .await;
        r.resume_clock(ResumeClockRequest {
            name: m.transfer.clone(),
            clock: TransferClock::Feedback as i32,
            comment: "鉴定意见已送达".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("resume");
        let c = until(&suite, &c.name, "resumed", |c| {
            !clock(c, "mediation").paused
        })
        .await;
        // The N paused days are not counted: the deadline of a period that began N days ago
        // moved by exactly N days, back to where it was.
        assert_eq!(due(clock(&c, "mediation")), (unpaused - N * DAY) + N * DAY);
        let a = &c.appraisals[0];
        assert!(a.start_time.is_some() && a.end_time.is_some(), "{a:?}");
        let t = transfer(&suite, &m.transfer).await;
        assert_eq!(
            fengqiao_kit::time::from_timestamp(
                t.feedback_clock
                    .expect("clock")
                    .due_at
                    .as_ref()
                    .expect("due")
            ),
            unpaused
        );
    }
);

suite_test!(
    without_consent_the_case_goes_straight_to_registration,
    |suite| async move {
        // At intake: the defendant refuses pre-filing mediation (特邀调解规定 Art 11).
        let c = intake(
            &suite,
            8,
            vec![
                consent("p1", cd::ConsentDecision::Consented),
                consent("p2", cd::ConsentDecision::Refused),
            ],
        )
        .await;
        assert_eq!(st(&c), S::RegistrationPending);
        assert_eq!(
            c.materials_return.as_ref().expect("why").cause,
            cd::ReturnCause::NoConsent as i32
        );
        assert!(clock(&c, "registration").stopped_at.is_none());
        // No delegation without consent.
        let e = judge(&suite)
            .designate_mediator(cd::DesignateMediatorRequest {
                name: c.name.clone(),
                organization: org_name(COMMITTEE),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("no consent");
        assert_eq!(e.code(), Code::FailedPrecondition);

        // Later: consent asked after intake; the plaintiff agrees, the defendant refuses.
        let d = intake(&suite, 9, vec![]).await;
        assert_eq!(st(&d), S::ConsentPending);
        let d = clerk(&suite)
            .record_consent(cd::RecordConsentRequest {
                name: d.name.clone(),
                etag: d.etag.clone(),
                consent: Some(consent("p1", cd::ConsentDecision::Consented)),
                request_id: rid(),
            })
            .await
            .expect("consent")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&d), S::ConsentPending);
        let e = clerk(&suite)
            .record_consent(cd::RecordConsentRequest {
                name: d.name.clone(),
                etag: d.etag.clone(),
                consent: Some(consent("p1", cd::ConsentDecision::Refused)),
                request_id: rid(),
            })
            .await
            .expect_err("a decision is final");
        assert_eq!(e.code(), Code::FailedPrecondition);
        let d = clerk(&suite)
            .record_consent(cd::RecordConsentRequest {
                name: d.name.clone(),
                etag: d.etag.clone(),
                consent: Some(consent("p2", cd::ConsentDecision::Refused)),
                request_id: rid(),
            })
            .await
            .expect("refusal")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&d), S::RegistrationPending);

        // A refusal of registration needs the reasoned ruling (民事诉讼法 Art 126).
        let e = judge(&suite)
            .refuse_registration(cd::RefuseRegistrationRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                reason: "不属于人民法院受理民事诉讼的范围".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("no ruling");
        assert_eq!(bad_fields_of(&e), ["ruling"]);
        let c = judge(&suite)
            .refuse_registration(cd::RefuseRegistrationRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                reason: "不属于人民法院受理民事诉讼的范围".into(),
                ruling: Some(doc("不予受理裁定书")),
                request_id: rid(),
            })
            .await
            .expect("refuse")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&c), S::RegistrationRefused);
    }
);

suite_test!(
    the_registration_clock_expires_and_the_court_is_told,
    |suite| async move {
        let c = intake(
            &suite,
            10,
            vec![consent("p2", cd::ConsentDecision::Refused)],
        )
        .await;
        assert_eq!(st(&c), S::RegistrationPending);
        let mut watch = clerk(&suite)
            .watch_cases(cd::WatchCasesRequest {
                pre_filing_case: c.name.clone(),
                event_types: vec![cd::CaseEventType::Overdue as i32],
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        // Seven days pass without 立案 or a ruling: the court's own deadline falls due.
        let store = Store::connect(StoreConfig::new(
            suite.stores[&ServiceName::CourtDiversion].clone(),
        ))
        .await
        .expect("court store");
        let moved = sqlx::query(
            "UPDATE deadlines SET due_at = 1000000 WHERE owner = 'court_diversion' AND key = $1",
        )
        .bind(format!("{}/registration", c.name))
        .execute(store.pool())
        .await
        .expect("move")
        .rows_affected();
        assert_eq!(moved, 1);
        store.close().await;

        let msg = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let m = watch.message().await.expect("stream").expect("message");
                if m.event.is_some() {
                    return m;
                }
            }
        })
        .await
        .expect("the court is told in time");
        let e = msg.event.expect("event");
        assert_eq!(e.clock, "registration");
        assert_eq!(e.reason_code, "REGISTRATION_OVERDUE");
        assert_eq!(e.to_state, S::RegistrationPending as i32);
        let c = get(&suite, &c.name).await;
        assert!(c.overdue);
        assert!(clock(&c, "registration").expired);
        // The court's overdue view lists it.
        let list = clerk(&suite)
            .list_cases(cd::ListCasesRequest {
                overdue_only: true,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .pre_filing_cases;
        let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [c.name.as_str()]);
        // It can still be registered late.
        let c = judge(&suite)
            .register_case(cd::RegisterCaseRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                docket_number: "(2026)辽0203民初99号".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("register late")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&c), S::Registered);
        assert!(!c.overdue);
    }
);

suite_test!(
    another_court_a_police_station_or_a_committee_not_party_gets_not_found,
    |suite| async move {
        let c = designate(&suite, &consented(&suite, 11).await, COMMITTEE).await;
        for (agency, roles) in [
            ("zhongshan-court", &["court_clerk", "judge"][..]),
            ("xigang-bayilu-station", &["officer"][..]),
            (CENTRE, &["mediation_admin", "mediator"][..]),
        ] {
            let mut other = as_agency(&suite, agency, roles);
            let e = other
                .get_case(cd::GetCaseRequest {
                    name: c.name.clone(),
                })
                .await
                .expect_err("not theirs");
            assert_eq!(e.code(), Code::NotFound, "{agency}");
            let e = other
                .record_consent(cd::RecordConsentRequest {
                    name: c.name.clone(),
                    consent: Some(consent("p1", cd::ConsentDecision::Consented)),
                    request_id: rid(),
                    ..Default::default()
                })
                .await
                .expect_err("not theirs");
            assert!(
                matches!(e.code(), Code::NotFound | Code::PermissionDenied),
                "{agency}: {e:?}"
            );
            let listed = other
                .list_cases(cd::ListCasesRequest::default())
                .await
                .expect("list")
                .into_inner()
                .pre_filing_cases;
            assert!(listed.is_empty(), "{agency}");
        }
        // The same name that does not exist at all: the same answer.
        let e = clerk(&suite)
            .get_case(cd::GetCaseRequest {
                name: format!("cases/{}", uuid::Uuid::new_v4()),
            })
            .await
            .expect_err("missing");
        assert_eq!(e.code(), Code::NotFound);
    }
);

suite_test!(
    intake_validates_like_police_intake_and_replays,
    |suite| async move {
        let mut bad = dispute(12);
        bad.defendants[0].id_type = fengqiao_proto::common::IdType::ResidentIdCard as i32;
        bad.defendants[0].id_number = "210203199001011230".into();
        bad.evidence[0].sha256.clear();
        let e = clerk(&suite)
            .create_case(cd::CreateCaseRequest {
                pre_filing_case: Some(bad),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("bad");
        assert_eq!(e.code(), Code::InvalidArgument);
        let fields = bad_fields_of(&e);
        assert!(
            fields.contains(&"pre_filing_case.defendants[0].id_number".to_string()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"pre_filing_case.evidence[0].sha256".to_string()),
            "{fields:?}"
        );
        assert!(
            !format!("{e:?}").contains("210203199001011230"),
            "no ID numbers in errors"
        );

        let req = cd::CreateCaseRequest {
            pre_filing_case: Some(dispute(13)),
            consents: vec![],
            request_id: rid(),
        };
        let a = clerk(&suite)
            .create_case(req.clone())
            .await
            .expect("create")
            .into_inner();
        let b = clerk(&suite)
            .create_case(req.clone())
            .await
            .expect("replay")
            .into_inner();
        assert_eq!(a, b);
        let mut other = dispute(13);
        other.summary = "另一纠纷".into();
        let e = clerk(&suite)
            .create_case(cd::CreateCaseRequest {
                pre_filing_case: Some(other),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("number taken");
        assert_eq!(e.code(), Code::AlreadyExists);
        assert_eq!(reason_of(&e).as_deref(), Some("PRE_FILING_NUMBER_REUSED"));
        let e = judge(&suite)
            .create_case(cd::CreateCaseRequest {
                pre_filing_case: Some(dispute(14)),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("judge does not register intake");
        assert_eq!(e.code(), Code::PermissionDenied);
    }
);

suite_test!(
    suspected_false_mediation_suspends_and_the_judge_confirms,
    |suite| async move {
        mediation_roster(&suite, COMMITTEE).await;
        let c = designate(&suite, &consented(&suite, 15).await, COMMITTEE).await;
        let (m, _) = in_mediation(&suite, COMMITTEE, &c).await;
        // 特邀调解规定 Art 18: the mediator suspects collusion and reports to the court.
        head(&suite, COMMITTEE)
            .escalate_case(md::EscalateCaseRequest {
                name: m.name.clone(),
                reason_code: "suspected_false_mediation".into(),
                reason: "双方陈述高度一致且损害第三人利益".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("escalate");
        let c = until_state(&suite, &c.name, S::Suspended).await;
        let sp = c.suspension.as_ref().expect("suspension");
        assert!(sp.suspend_time.is_some());
        // The clerk does not review; the judge does, with reasons.
        let review = |resolution: cd::SuspensionResolution| cd::ResolveSuspensionRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            resolution: resolution as i32,
            reason: "经审查，双方恶意串通损害案外人利益".into(),
            request_id: rid(),
        };
        let e = clerk(&suite)
            .resolve_suspension(review(cd::SuspensionResolution::Confirmed))
            .await
            .expect_err("clerk");
        assert_eq!(e.code(), Code::PermissionDenied);
        let c = judge(&suite)
            .resolve_suspension(review(cd::SuspensionResolution::Confirmed))
            .await
            .expect("confirm")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&c), S::RegistrationPending);
        assert_eq!(
            c.materials_return.as_ref().expect("back").cause,
            cd::ReturnCause::FalseMediation as i32
        );
        assert_eq!(
            c.suspension.as_ref().expect("suspension").resolution,
            cd::SuspensionResolution::Confirmed as i32
        );
        assert!(clock(&c, "registration").stopped_at.is_none());
        // A second review is the wrong state.
        let e = judge(&suite)
            .resolve_suspension(cd::ResolveSuspensionRequest {
                etag: c.etag.clone(),
                ..review(cd::SuspensionResolution::Confirmed)
            })
            .await
            .expect_err("not suspended");
        assert_eq!(e.code(), Code::FailedPrecondition);
    }
);

suite_test!(
    a_pending_delegation_is_withdrawn_on_the_router,
    |suite| async move {
        let c = designate(&suite, &consented(&suite, 16).await, COMMITTEE).await;
        let t = c.delegations[0].transfer.clone();
        let c = clerk(&suite)
            .withdraw_case(cd::WithdrawCaseRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                reason: "原告撤回起诉".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("withdraw")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&c), S::Withdrawn);
        assert_eq!(
            c.delegations[0].result,
            cd::DelegationResult::Withdrawn as i32
        );
        assert_eq!(
            state_of(&transfer(&suite, &t).await),
            TransferState::Withdrawn
        );
        // Terminal: nothing more.
        let e = judge(&suite)
            .register_case(cd::RegisterCaseRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                docket_number: "(2026)辽0203民初7号".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("withdrawn");
        assert_eq!(e.code(), Code::FailedPrecondition);
    }
);

suite_test!(
    the_court_administrator_keeps_the_roster,
    |suite| async move {
        let mut admin = as_agency(&suite, COURT, &["court_admin"]);
        // 特邀调解规定 Art 5–8: the court adds an invited organisation and a mediator.
        let o = admin
            .create_invited_organization(cd::CreateInvitedOrganizationRequest {
                invited_organization: Some(cd::InvitedOrganization {
                    display_name: "西岗区物业纠纷调解委员会".into(),
                    agency: "agencies/xigang-bayilu-mediation-room".into(),
                    specialties: vec![DisputeCategory::PropertyManagement as i32],
                    region_code: "210203".into(),
                    active: true,
                    ..Default::default()
                }),
                invited_organization_id: "property-committee".into(),
                request_id: rid(),
            })
            .await
            .expect("create organisation")
            .into_inner()
            .invited_organization
            .expect("org");
        assert_eq!(o.name, "invitedOrganizations/property-committee");
        let m = admin
            .create_invited_mediator(cd::CreateInvitedMediatorRequest {
                parent: o.name.clone(),
                invited_mediator: Some(cd::InvitedMediator {
                    display_name: "特邀调解员".into(),
                    actor_id: "room-head".into(),
                    region_code: "210203".into(),
                    active: true,
                    ..Default::default()
                }),
                invited_mediator_id: "room-head".into(),
                request_id: rid(),
            })
            .await
            .expect("create mediator")
            .into_inner()
            .invited_mediator
            .expect("mediator");
        // The clerk does not keep the roster.
        let e = clerk(&suite)
            .update_invited_organization(cd::UpdateInvitedOrganizationRequest {
                invited_organization: Some(o.clone()),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["active".into()],
                }),
                request_id: rid(),
            })
            .await
            .expect_err("clerk");
        assert_eq!(e.code(), Code::PermissionDenied);
        // The committee leaves the roster (no longer 在册有效); a stale etag is ABORTED.
        let off = |etag: &str| cd::UpdateInvitedOrganizationRequest {
            invited_organization: Some(cd::InvitedOrganization {
                name: org_name(COMMITTEE),
                active: false,
                etag: etag.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["active".into()],
            }),
            request_id: rid(),
        };
        let e = admin
            .update_invited_organization(off("\"99\""))
            .await
            .expect_err("stale");
        assert_eq!(e.code(), Code::Aborted);
        let current = admin
            .get_invited_organization(cd::GetInvitedOrganizationRequest {
                name: org_name(COMMITTEE),
            })
            .await
            .expect("get")
            .into_inner()
            .invited_organization
            .expect("org");
        let updated = admin
            .update_invited_organization(off(&current.etag))
            .await
            .expect("deactivate")
            .into_inner()
            .invited_organization
            .expect("org");
        assert!(!updated.active);
        assert_ne!(updated.etag, current.etag);
        let m = admin
            .update_invited_mediator(cd::UpdateInvitedMediatorRequest {
                invited_mediator: Some(cd::InvitedMediator {
                    max_load: 5,
                    ..m.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["max_load".into()],
                }),
                request_id: rid(),
            })
            .await
            .expect("mediator")
            .into_inner()
            .invited_mediator
            .expect("mediator");
        assert_eq!(m.max_load, 5);
        // An organisation off the roster is not designated.
        let c = consented(&suite, 17).await;
        let e = judge(&suite)
            .designate_mediator(cd::DesignateMediatorRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                organization: org_name(COMMITTEE),
                parties_waived_choice: true,
                evidence: Some(doc("放弃选定声明")),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("inactive");
        assert_eq!(e.code(), Code::InvalidArgument);
        let active = clerk(&suite)
            .list_invited_organizations(cd::ListInvitedOrganizationsRequest {
                active: Some(true),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .invited_organizations;
        let names: Vec<&str> = active.iter().map(|o| o.name.as_str()).collect();
        // Ordered by resource name.
        assert_eq!(
            names,
            [
                "invitedOrganizations/property-committee",
                org_name(CENTRE).as_str()
            ]
        );
    }
);

/// Transfers of the case on the router, as the court sees them.
async fn transfers_of_case(suite: &TestSuite, case_id: &str) -> Vec<Transfer> {
    TransferServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(COURT, "judge-01", &["judge"]),
    )
    .list_transfers(ListTransfersRequest {
        case_id: case_id.into(),
        ..Default::default()
    })
    .await
    .expect("list transfers")
    .into_inner()
    .transfers
}

// A designation cut off mid-flight (client deadline 3 ms: the router call, the court's commit,
// or neither may have happened) is completed by its retry with the same request_id: one
// transfer on the router, the court's case DELEGATED on it, and the retry answers the same
// thing twice. A new request id is a second designation: refused, still one transfer.
suite_test!(
    a_cut_off_designation_is_completed_by_its_retry,
    |suite| async move {
        let c = consented(&suite, 90).await;
        let msg = cd::DesignateMediatorRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            organization: org_name(COMMITTEE),
            mediator: mediator_name(COMMITTEE),
            parties_waived_choice: true,
            evidence: Some(doc("放弃选定调解员声明")),
            note: "诉前委派调解".into(),
            request_id: rid(),
        };
        let mut req = tonic::Request::new(msg.clone());
        req.set_timeout(Duration::from_millis(3));
        let cut = match judge(&suite).designate_mediator(req).await {
            Ok(_) => false,
            Err(e) if matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) => true,
            Err(e) => panic!("unexpected refusal of a cut-off call: {e:?}"),
        };
        eprintln!("designation cut off mid-flight: {cut}");
        // Never two transfers, whatever was cut.
        assert!(transfers_of_case(&suite, &c.case_id).await.len() <= 1);
        let first = judge(&suite)
            .designate_mediator(msg.clone())
            .await
            .expect("retry")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(st(&first), S::Delegated);
        let again = judge(&suite)
            .designate_mediator(msg.clone())
            .await
            .expect("second retry")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(again.name, first.name);
        assert_eq!(st(&again), S::Delegated);
        assert_eq!(again.delegations, first.delegations);
        let all = transfers_of_case(&suite, &c.case_id).await;
        assert_eq!(all.len(), 1, "one transfer for the case");
        let linked: Vec<&str> = first
            .delegations
            .iter()
            .map(|d| d.transfer.as_str())
            .collect();
        assert_eq!(
            linked,
            vec![all[0].name.as_str()],
            "the case names the router's transfer"
        );
        // The court's case and the router agree once the router's messages have arrived.
        let now = until(&suite, &c.name, "in step with the router", |x| {
            st(x) == S::Delegated && x.delegations.len() == 1
        })
        .await;
        assert_eq!(now.delegations[0].transfer, all[0].name);
        // A new request id is a second designation: refused, and still one transfer.
        let e = judge(&suite)
            .designate_mediator(cd::DesignateMediatorRequest {
                request_id: rid(),
                etag: String::new(),
                ..msg
            })
            .await
            .expect_err("second designation");
        assert!(
            matches!(e.code(), Code::FailedPrecondition | Code::AlreadyExists),
            "{e:?}"
        );
        assert_eq!(transfers_of_case(&suite, &c.case_id).await.len(), 1);
    }
);
