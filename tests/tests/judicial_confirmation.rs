//! 司法确认 through the real suite, on SQLite and PostgreSQL: the court delegates a dispute to
//! the district mediation committee (委派调解), the committee mediates it to an effective
//! agreement on the mediation service, submits the parties' joint application
//! (`ApplyForConfirmation`) on the router route `mediation-to-court-confirmation`, the court's
//! inbox takes the application in, and the court's acceptance, non-acceptance and ruling go
//! back on the transfer to the committee's case.
//!
//! Time is moved as the other scenario tests move it: the agreement's effective time is set
//! into the past in the mediation store (as days passing would); nobody sleeps for days. The
//! Art 372 objection windows are counted from the `known_time` the clerk records.

use std::time::Duration;

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::reason_of;
use fengqiao_proto::common::{DisputeCategory, EvidenceRef, Money, Party, PartyRole};
use fengqiao_proto::courtdiversion as cd;
use fengqiao_proto::courtdiversion::court_diversion_service_client::CourtDiversionServiceClient;
use fengqiao_proto::judicialconfirmation as jc;
use fengqiao_proto::judicialconfirmation::judicial_confirmation_service_client::JudicialConfirmationServiceClient;
use fengqiao_proto::mediation as md;
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    CompleteClockRequest, ConfirmationPackageItem, ConfirmationPackageItemKind as K,
    ListTransfersRequest, Transfer, TransferState,
};
use fengqiao_scenarios::{rid, sign_sample_agreement};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, StoreConfig};
use fengqiao_testkit::{ServiceName, TestSuite, suite_test};
use prost::Message as _;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Jc = JudicialConfirmationServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Court = CourtDiversionServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Med = MediationServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Router = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;
type P = md::ConfirmationProgress;

const COURT: &str = "xigang-court";
const COMMITTEE: &str = "xigang-mediation-committee";
const ROUTE: &str = "routes/mediation-to-court-confirmation";
const DAY: i64 = 86_400_000_000;

fn jc_client(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Jc {
    JudicialConfirmationServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(agency, actor, roles),
    )
}

fn judge(suite: &TestSuite) -> Jc {
    jc_client(suite, COURT, "judge-01", &["judge"])
}

fn clerk(suite: &TestSuite) -> Jc {
    jc_client(suite, COURT, "clerk-01", &["court_clerk"])
}

fn president(suite: &TestSuite) -> Jc {
    jc_client(suite, COURT, "president", &["court_president"])
}

fn diversion(suite: &TestSuite, actor: &str, role: &str) -> Court {
    CourtDiversionServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(COURT, actor, &[role]),
    )
}

/// The committee's director on the mediation service.
fn committee(suite: &TestSuite) -> Med {
    MediationServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(COMMITTEE, "director", &["mediation_admin", "mediator"]),
    )
}

fn committee_router(suite: &TestSuite) -> Router {
    TransferServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(COMMITTEE, "director", &["mediation_admin", "mediator"]),
    )
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

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// Polls `probe` every 100 ms for up to 15 s (delivery is asynchronous).
async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..150 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("waited in vain for: {what}");
}

// ---------------------------------------------------------------------------
// The way to an effective agreement at the committee (委派调解, as in court_diversion.rs)
// ---------------------------------------------------------------------------

async fn mediation_roster(suite: &TestSuite) {
    let mut h = committee(suite);
    h.create_organization(md::CreateOrganizationRequest {
        organization: Some(md::Organization {
            display_name: "西岗区人民调解委员会".into(),
            kind: md::OrganizationKind::Committee as i32,
            region_code: "210203".into(),
            agency: format!("agencies/{COMMITTEE}"),
            ..Default::default()
        }),
        organization_id: COMMITTEE.into(),
        request_id: rid(),
    })
    .await
    .expect("create organisation");
    h.create_mediator(md::CreateMediatorRequest {
        parent: format!("organizations/{COMMITTEE}"),
        mediator: Some(md::Mediator {
            display_name: "人民调解员".into(),
            actor_id: "director".into(),
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

/// A dispute the court delegates to the committee, mediated to an effective agreement
/// (signed by both parties and the mediator, sealed) and ended with it.
async fn agreement(suite: &TestSuite, number: u32) -> md::MediationCase {
    let consent = |p: &str| cd::ConsentRecord {
        party_id: p.into(),
        decision: cd::ConsentDecision::Consented as i32,
        method: cd::ConsentMethod::Written as i32,
        evidence: Some(doc("诉前调解确认书")),
        ..Default::default()
    };
    let c = diversion(suite, "clerk-01", "court_clerk")
        .create_case(cd::CreateCaseRequest {
            pre_filing_case: Some(cd::PreFilingCase {
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
            }),
            consents: vec![consent("p1"), consent("p2")],
            request_id: rid(),
        })
        .await
        .expect("create case")
        .into_inner()
        .pre_filing_case
        .expect("case");
    diversion(suite, "judge-01", "judge")
        .designate_mediator(cd::DesignateMediatorRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            organization: format!("invitedOrganizations/{COMMITTEE}"),
            mediator: format!("invitedOrganizations/{COMMITTEE}/mediators/director"),
            parties_waived_choice: true,
            evidence: Some(doc("放弃选定调解员声明")),
            note: "诉前委派调解".into(),
            request_id: rid(),
        })
        .await
        .expect("designate");
    let mut h = committee(suite);
    let case_id = c.case_id.clone();
    let m = until("the delegation offered to the committee", || {
        let mut h = h.clone();
        let case_id = case_id.clone();
        async move {
            h.list_cases(md::ListCasesRequest {
                case_id,
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .mediation_cases
            .into_iter()
            .find(|m| m.state == md::MediationCaseState::Offered as i32)
        }
    })
    .await;
    let mut m = h
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
        .expect("case");
    committee_router(suite)
        .complete_clock(CompleteClockRequest {
            name: m.transfer.clone(),
            clock: "contact_parties".into(),
            comment: "已电话联系双方当事人".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("contact_parties");
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
    m = h
        .assign_mediator(md::AssignMediatorRequest {
            name: m.name.clone(),
            assignee: Some(md::assign_mediator_request::Assignee::Mediator(format!(
                "organizations/{COMMITTEE}/mediators/invited-01"
            ))),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("assign")
        .into_inner()
        .mediation_case
        .expect("case");
    m = sign_sample_agreement(&mut h, &m).await;
    let m = h
        .end_mediation(md::EndMediationRequest {
            name: m.name.clone(),
            reason: md::EndReason::Agreement as i32,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("end with the agreement")
        .into_inner()
        .mediation_case
        .expect("case");
    assert!(m.agreement.as_ref().is_some_and(|a| a.effective));
    m
}

/// Sets the agreement's effective time `days` days back in the mediation store (as days
/// passing would).
async fn agreement_took_effect_days_ago(suite: &TestSuite, m: &md::MediationCase, days: i64) {
    let store = Store::connect(StoreConfig::new(
        suite.stores[&ServiceName::Mediation].clone(),
    ))
    .await
    .expect("mediation store");
    let id = m.name.trim_start_matches("cases/");
    let row = sqlx::query("SELECT body FROM mediation_cases WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("row");
    let body: Vec<u8> = row.try_get("body").expect("body");
    // Bodies are sealed (issue #14): opened and sealed again with the suite's test key ring.
    let plain = fengqiao_store::seal::open("mediation_cases.body", &body).expect("sealed body");
    let mut c = md::MediationCase::decode(plain.as_slice()).expect("case");
    if let Some(a) = c.agreement.as_mut() {
        a.effective_time = Some(fengqiao_kit::time::to_timestamp(now_micros() - days * DAY));
    }
    sqlx::query("UPDATE mediation_cases SET body = $1 WHERE id = $2")
        .bind(fengqiao_store::seal::seal("mediation_cases.body", &c.encode_to_vec()).expect("seal"))
        .bind(id)
        .execute(store.pool())
        .await
        .expect("update");
    store.close().await;
}

fn item(kind: K, party: &str) -> ConfirmationPackageItem {
    ConfirmationPackageItem {
        kind: kind as i32,
        document: Some(doc("申请材料")),
        party_id: party.into(),
    }
}

/// The committee's joint application for both parties to the district court.
fn application(m: &md::MediationCase, applicants: &[&str]) -> md::ApplyForConfirmationRequest {
    md::ApplyForConfirmationRequest {
        name: m.name.clone(),
        etag: String::new(),
        court: format!("agencies/{COURT}"),
        applicant_party_ids: applicants.iter().map(|s| (*s).to_string()).collect(),
        represented_party_ids: vec![],
        items: vec![
            item(K::Application, ""),
            item(K::IdentityProof, "p1"),
            item(K::ServiceAddress, "p1"),
            item(K::IdentityProof, "p2"),
            item(K::ServiceAddress, "p2"),
        ],
        request_id: rid(),
    }
}

async fn apply(suite: &TestSuite, m: &md::MediationCase) -> md::MediationCase {
    committee(suite)
        .apply_for_confirmation(application(m, &["p1", "p2"]))
        .await
        .expect("joint application")
        .into_inner()
        .mediation_case
        .expect("case")
}

/// The court's application for the case, once the router has delivered it.
async fn received(suite: &TestSuite, case_id: &str) -> jc::ConfirmationApplication {
    let j = judge(suite);
    let case_id = case_id.to_string();
    until("the application at the court", || {
        let mut j = j.clone();
        let case_id = case_id.clone();
        async move {
            j.list_applications(jc::ListApplicationsRequest::default())
                .await
                .ok()?
                .into_inner()
                .applications
                .into_iter()
                .find(|a| a.case_id == case_id)
        }
    })
    .await
}

async fn get_case(suite: &TestSuite, name: &str) -> md::MediationCase {
    committee(suite)
        .get_case(md::GetCaseRequest { name: name.into() })
        .await
        .expect("get case")
        .into_inner()
        .mediation_case
        .expect("case")
}

/// The committee's case once its confirmation shows `p`.
async fn committee_sees(suite: &TestSuite, name: &str, p: P) -> md::ConfirmationStatus {
    until(
        &format!("the committee sees {}", p.as_str_name()),
        || async {
            get_case(suite, name)
                .await
                .confirmation
                .filter(|c| c.progress == p as i32)
        },
    )
    .await
}

async fn confirmation_transfers(suite: &TestSuite, case_id: &str) -> Vec<Transfer> {
    committee_router(suite)
        .list_transfers(ListTransfersRequest {
            case_id: case_id.into(),
            route: ROUTE.into(),
            ..Default::default()
        })
        .await
        .expect("list transfers")
        .into_inner()
        .transfers
}

async fn accept(suite: &TestSuite, a: &jc::ConfirmationApplication, n: u32) {
    let got = clerk(suite)
        .accept_application(jc::AcceptApplicationRequest {
            name: a.name.clone(),
            etag: a.etag.clone(),
            confirmation_number: format!("(2026)辽0203民特调确{n}号"),
            request_id: rid(),
        })
        .await
        .expect("accepted")
        .into_inner()
        .application
        .expect("application");
    assert_eq!(got.state, jc::ApplicationState::UnderReview as i32);
}

fn rule(
    a: &jc::ConfirmationApplication,
    outcome: jc::RulingOutcome,
    ground: &str,
) -> jc::RuleOnApplicationRequest {
    jc::RuleOnApplicationRequest {
        name: a.name.clone(),
        etag: String::new(),
        outcome: outcome as i32,
        ground_code: ground.into(),
        document: Some(doc("民事裁定书")),
        request_id: rid(),
    }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

// One party alone and another court are refused before anything is sent; the joint
// application reaches the court with the agreement's digest; accepted with the 调确 number,
// extended only by the president and never past 10 days, confirmed; the committee sees each
// answer and the ruling on its case; objections after the ruling; the committee never sees
// the court's application (NOT_FOUND).
suite_test!(
    confirmed_and_the_committee_sees_the_ruling_on_its_case,
    |suite| async move {
        mediation_roster(&suite).await;
        let m = agreement(&suite, 1).await;
        let mut h = committee(&suite);

        // 人民调解法 Art 33: one party alone is refused, the article named.
        let e = h
            .apply_for_confirmation(application(&m, &["p1"]))
            .await
            .expect_err("one party alone");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&e).as_deref(), Some("NOT_JOINT_APPLICATION"));
        assert!(e.message().contains("Art 33"), "{}", e.message());
        // 法释〔2011〕5号 Art 2: not the competent court.
        let mut other = application(&m, &["p1", "p2"]);
        other.court = "agencies/xigang-procuratorate".into();
        let e = h
            .apply_for_confirmation(other)
            .await
            .expect_err("wrong court");
        assert_eq!(reason_of(&e).as_deref(), Some("WRONG_COURT"));
        assert!(confirmation_transfers(&suite, &m.case_id).await.is_empty());

        let sent = apply(&suite, &m).await;
        let status = sent.confirmation.clone().expect("confirmation");
        assert_eq!(status.progress, P::Submitted as i32);
        assert_eq!(status.court, format!("agencies/{COURT}"));
        assert_eq!(status.agreement_sha256.len(), 64);

        let a = received(&suite, &m.case_id).await;
        assert_eq!(a.state, jc::ApplicationState::Received as i32);
        assert_eq!(a.transfer, status.transfer);
        assert_eq!(
            a.committee.as_ref().map(|c| c.name.as_str()),
            Some("agencies/xigang-mediation-committee")
        );
        // The court reviews exactly what was signed.
        assert_eq!(
            a.agreement.as_ref().map(|d| d.sha256.as_str()),
            Some(status.agreement_sha256.as_str())
        );
        assert_eq!(a.parties.len(), 2);

        // An agency not party to the application: NOT_FOUND.
        let e = jc_client(&suite, COMMITTEE, "director", &["mediation_admin"])
            .get_application(jc::GetApplicationRequest {
                name: a.name.clone(),
            })
            .await
            .expect_err("not the court");
        assert_eq!(e.code(), Code::NotFound);

        // Another committee: the case and its application are NOT_FOUND to it.
        let mut centre = MediationServiceClient::with_interceptor(
            suite.channel(),
            suite.caller(
                "xigang-jinyaoshi-mediation-centre",
                "centre-head",
                &["mediation_admin", "mediator"],
            ),
        );
        let e = centre
            .apply_for_confirmation(application(&m, &["p1", "p2"]))
            .await
            .expect_err("not its case");
        assert_eq!(e.code(), Code::NotFound);
        let e = centre
            .get_case(md::GetCaseRequest {
                name: m.name.clone(),
            })
            .await
            .expect_err("not its case");
        assert_eq!(e.code(), Code::NotFound);

        accept(&suite, &a, 1).await;
        let s = committee_sees(&suite, &m.name, P::Accepted).await;
        assert_eq!(s.confirmation_number, "(2026)辽0203民特调确1号");

        // 15 + 10 days only with the president's role, never more (2011 rules Art 5).
        let extend = |days| jc::ExtendReviewRequest {
            name: a.name.clone(),
            etag: String::new(),
            days,
            reason: "案情复杂".into(),
            request_id: rid(),
        };
        let e = judge(&suite)
            .extend_review(extend(10))
            .await
            .expect_err("judge");
        assert_eq!(
            reason_of(&e).as_deref(),
            Some("CLOCK_APPROVER_ROLE_REQUIRED")
        );
        president(&suite)
            .extend_review(extend(10))
            .await
            .expect("extended");
        let e = president(&suite)
            .extend_review(extend(1))
            .await
            .expect_err("past 10");
        assert_eq!(reason_of(&e).as_deref(), Some("CLOCK_EXTENSION_TOO_LONG"));

        let ruled = judge(&suite)
            .rule_on_application(rule(&a, jc::RulingOutcome::Confirmed, ""))
            .await
            .expect("ruled")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(ruled.state, jc::ApplicationState::Confirmed as i32);
        assert_eq!(ruled.ruling.and_then(|r| r.fee).map(|f| f.units), Some(0));

        let s = committee_sees(&suite, &m.name, P::Confirmed).await;
        assert_eq!(s.outcome_code, "confirmed_valid");
        assert!(s.ruling_summary.contains("Art 206"), "{}", s.ruling_summary);
        assert_eq!(
            s.ruling_document.map(|d| d.display_name),
            Some("民事裁定书".to_string())
        );
        // The committee's system acknowledges the ruling on arrival: the transfer closes,
        // and the committee's case still shows the ruling.
        let t = until("the committee acknowledges the ruling", || async {
            confirmation_transfers(&suite, &m.case_id)
                .await
                .into_iter()
                .find(|t| t.state == TransferState::Closed as i32)
        })
        .await;
        assert!(
            t.feedback
                .is_some_and(|f| f.outcome_code == "confirmed_valid")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = get_case(&suite, &m.name)
            .await
            .confirmation
            .expect("status");
        assert_eq!(after.progress, P::Confirmed as i32);
        assert_eq!(after.outcome_code, "confirmed_valid");

        // A second application while this one stands: refused, still one transfer.
        let e = h
            .apply_for_confirmation(application(&m, &["p1", "p2"]))
            .await
            .expect_err("again");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(confirmation_transfers(&suite, &m.case_id).await.len(), 1);

        // 民诉法解释 Art 372: a party 16+ days after receiving is refused; an interested
        // person within 6 months is taken.
        let object = |kind: jc::ObjectorKind, days_ago: i64| jc::FileObjectionRequest {
            name: a.name.clone(),
            etag: String::new(),
            objector: kind as i32,
            known_time: Some(fengqiao_kit::time::to_timestamp(
                now_micros() - days_ago * DAY,
            )),
            grounds: "协议损害其权益".into(),
            request_id: rid(),
        };
        let e = clerk(&suite)
            .file_objection(object(jc::ObjectorKind::Party, 17))
            .await
            .expect_err("late");
        assert_eq!(reason_of(&e).as_deref(), Some("OBJECTION_PERIOD_LAPSED"));
        let taken = clerk(&suite)
            .file_objection(object(jc::ObjectorKind::InterestedPerson, 90))
            .await
            .expect("taken")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(taken.objections.len(), 1);

        // 申请执行 (民事诉讼法 Art 206 ¶1): a party's application handed to the enforcement
        // division, recorded once per party; the committee cannot.
        let hand = jc::HandOffForEnforcementRequest {
            name: a.name.clone(),
            etag: String::new(),
            applicant_party_id: "p1".into(),
            document: Some(doc("申请执行书")),
            enforcement_reference: "(2026)辽0203执1号".into(),
            request_id: rid(),
        };
        let e = jc_client(&suite, COMMITTEE, "director", &["court_clerk"])
            .hand_off_for_enforcement(hand.clone())
            .await
            .expect_err("not the court");
        assert_eq!(e.code(), Code::NotFound);
        let handed = clerk(&suite)
            .hand_off_for_enforcement(hand.clone())
            .await
            .expect("handed off")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(handed.state, jc::ApplicationState::Confirmed as i32);
        assert_eq!(handed.enforcement_handoffs.len(), 1);
        assert_eq!(handed.enforcement_handoffs[0].applicant_party_id, "p1");
        let e = clerk(&suite)
            .hand_off_for_enforcement(jc::HandOffForEnforcementRequest {
                request_id: rid(),
                ..hand.clone()
            })
            .await
            .expect_err("the same party twice");
        assert_eq!(e.code(), Code::AlreadyExists);
        let e = judge(&suite)
            .report_non_confirmation(jc::ReportNonConfirmationRequest {
                name: a.name.clone(),
                justice_bureau: "agencies/xigang-justice-bureau".into(),
                document: Some(doc("司法确认情况通报")),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("confirmed: nothing to report");
        assert_eq!(e.code(), Code::FailedPrecondition);

        let stats = clerk(&suite)
            .get_application_statistics(jc::GetApplicationStatisticsRequest::default())
            .await
            .expect("statistics")
            .into_inner();
        assert_eq!((stats.application_count, stats.confirmed_count), (1, 1));
    }
);

// Dismissed (裁定驳回) with an Art 358 ground: the committee sees the outcome and the ground.
suite_test!(
    dismissed_with_an_art_358_ground_shown_to_the_committee,
    |suite| async move {
        mediation_roster(&suite).await;
        let m = agreement(&suite, 2).await;
        apply(&suite, &m).await;
        let a = received(&suite, &m.case_id).await;
        accept(&suite, &a, 2).await;
        // Not one of the six grounds: refused, nothing sent.
        let e = judge(&suite)
            .rule_on_application(rule(&a, jc::RulingOutcome::Dismissed, "no_such_ground"))
            .await
            .expect_err("unknown ground");
        assert_eq!(e.code(), Code::InvalidArgument);
        let ruled = judge(&suite)
            .rule_on_application(rule(&a, jc::RulingOutcome::Dismissed, "not_voluntary"))
            .await
            .expect("dismissed")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(ruled.state, jc::ApplicationState::Dismissed as i32);
        let s = committee_sees(&suite, &m.name, P::Dismissed).await;
        assert_eq!(s.outcome_code, "dismissed");
        assert_eq!(s.dismissal_ground_code, "not_voluntary");
        assert!(s.ruling_summary.contains("Art 358"), "{}", s.ruling_summary);

        // 法释〔2011〕5号 Art 12: the judge reports the non-confirmation to the justice bureau
        // and the committee (a record); a clerk may not; once only; no enforcement of it.
        let report = jc::ReportNonConfirmationRequest {
            name: a.name.clone(),
            etag: String::new(),
            justice_bureau: "agencies/xigang-justice-bureau".into(),
            document: Some(doc("司法确认情况通报")),
            note: "调解协议非自愿达成".into(),
            request_id: rid(),
        };
        let e = clerk(&suite)
            .report_non_confirmation(report.clone())
            .await
            .expect_err("clerk");
        assert_eq!(e.code(), Code::PermissionDenied);
        let reported = judge(&suite)
            .report_non_confirmation(report.clone())
            .await
            .expect("reported")
            .into_inner()
            .application
            .expect("application");
        let r = reported.non_confirmation_report.clone().expect("report");
        let to: Vec<String> = r.recipients.iter().map(|x| x.name.clone()).collect();
        assert_eq!(
            to,
            [
                "agencies/xigang-justice-bureau".to_string(),
                format!("agencies/{COMMITTEE}")
            ]
        );
        assert_eq!(reported.state, jc::ApplicationState::Dismissed as i32);
        // A replay answers the same; a new request is ALREADY_EXISTS.
        let again = judge(&suite)
            .report_non_confirmation(report.clone())
            .await
            .expect("replayed")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(
            again.non_confirmation_report,
            reported.non_confirmation_report
        );
        let e = judge(&suite)
            .report_non_confirmation(jc::ReportNonConfirmationRequest {
                request_id: rid(),
                ..report
            })
            .await
            .expect_err("twice");
        assert_eq!(e.code(), Code::AlreadyExists);
        let e = clerk(&suite)
            .hand_off_for_enforcement(jc::HandOffForEnforcementRequest {
                name: a.name.clone(),
                applicant_party_id: "p1".into(),
                document: Some(doc("申请执行书")),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("dismissed: nothing to enforce");
        assert_eq!(e.code(), Code::FailedPrecondition);
    }
);

// Not accepted (不予受理) with an Art 355 ground: the transfer is declined with it and the
// committee sees the ground; the parties may apply again (a new transfer).
suite_test!(
    not_accepted_with_the_ground_shown_to_the_committee,
    |suite| async move {
        mediation_roster(&suite).await;
        let m = agreement(&suite, 3).await;
        apply(&suite, &m).await;
        let a = received(&suite, &m.case_id).await;
        // A clerk may not decide non-acceptance: the judge does.
        let reject = |ground: &str| jc::RejectApplicationRequest {
            name: a.name.clone(),
            etag: String::new(),
            ground_code: ground.into(),
            request_id: rid(),
        };
        let e = clerk(&suite)
            .reject_application(reject("ownership_confirmation"))
            .await
            .expect_err("clerk");
        assert_eq!(reason_of(&e).as_deref(), Some("ROLE_REQUIRED"));
        let got = judge(&suite)
            .reject_application(reject("ownership_confirmation"))
            .await
            .expect("not accepted")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(got.state, jc::ApplicationState::NotAccepted as i32);
        let s = committee_sees(&suite, &m.name, P::NotAccepted).await;
        let ground = s.rejection.expect("ground");
        assert_eq!(ground.code, "ownership_confirmation");
        assert!(
            ground.description.contains("确权"),
            "{}",
            ground.description
        );
        let t = &confirmation_transfers(&suite, &m.case_id).await[0];
        assert_eq!(t.state, TransferState::Declined as i32);
        // Applying again makes a new transfer.
        let again = apply(&suite, &m).await;
        assert_eq!(
            again.confirmation.map(|c| c.progress),
            Some(P::Submitted as i32)
        );
        assert_eq!(confirmation_transfers(&suite, &m.case_id).await.len(), 2);
    }
);

// 人民调解法 Art 33: 31 days after the agreement took effect the application is refused, the
// article named, nothing sent; on day 30 it is in time at the committee and at the court.
suite_test!(day_31_refused_and_day_30_accepted, |suite| async move {
    mediation_roster(&suite).await;
    let m = agreement(&suite, 4).await;
    // Day 31 after a period whose last day is a working day (民事诉讼法 Art 85 moves a
    // period ending on a holiday to the next working day; then the test goes further back).
    let cal = fengqiao_clock::HolidayCalendar::builtin();
    let mut back = 31;
    while fengqiao_judicial_confirmation::rules::application_deadline(
        now_micros() - back * DAY,
        cal,
    ) > now_micros()
    {
        back += 1;
    }
    agreement_took_effect_days_ago(&suite, &m, back).await;
    let e = committee(&suite)
        .apply_for_confirmation(application(&m, &["p1", "p2"]))
        .await
        .expect_err("day 31");
    assert_eq!(reason_of(&e).as_deref(), Some("APPLICATION_PERIOD_LAPSED"));
    assert!(e.message().contains("Art 33"), "{}", e.message());
    assert!(confirmation_transfers(&suite, &m.case_id).await.is_empty());

    agreement_took_effect_days_ago(&suite, &m, 30).await;
    let sent = apply(&suite, &m).await;
    assert_eq!(
        sent.confirmation.map(|c| c.progress),
        Some(P::Submitted as i32)
    );
    // The court counts to the committee's submission, and takes it in.
    let a = received(&suite, &m.case_id).await;
    assert_eq!(a.state, jc::ApplicationState::Received as i32);
});

// Withdrawal before the decision (撤回申请), under review: the committee sees it withdrawn.
suite_test!(
    withdrawn_under_review_before_the_ruling,
    |suite| async move {
        mediation_roster(&suite).await;
        let m = agreement(&suite, 5).await;
        apply(&suite, &m).await;
        let a = received(&suite, &m.case_id).await;
        accept(&suite, &a, 5).await;
        let w = clerk(&suite)
            .withdraw_application(jc::WithdrawApplicationRequest {
                name: a.name.clone(),
                etag: String::new(),
                request_id: rid(),
            })
            .await
            .expect("withdrawn")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(w.state, jc::ApplicationState::Withdrawn as i32);
        let s = committee_sees(&suite, &m.name, P::Withdrawn).await;
        assert_eq!(s.outcome_code, "withdrawn");
        // After the withdrawal no ruling.
        let e = judge(&suite)
            .rule_on_application(rule(&a, jc::RulingOutcome::Confirmed, ""))
            .await
            .expect_err("withdrawn");
        assert_eq!(e.code(), Code::FailedPrecondition);
    }
);

// Cut off mid-flight (3 ms client deadline: the router call, the local commit, or neither
// may have happened), then retried with the same request_id: one transfer and one
// application; one acceptance; one ruling — the same answer twice.
suite_test!(
    cut_off_calls_are_completed_by_their_retries,
    |suite| async move {
        mediation_roster(&suite).await;
        let m = agreement(&suite, 6).await;
        let msg = application(&m, &["p1", "p2"]);
        let mut req = tonic::Request::new(msg.clone());
        req.set_timeout(Duration::from_millis(3));
        match committee(&suite).apply_for_confirmation(req).await {
            Ok(_) => eprintln!("application not cut off"),
            Err(e) if matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                eprintln!("application cut off mid-flight");
            }
            Err(e) => panic!("unexpected refusal of a cut-off call: {e:?}"),
        }
        assert!(confirmation_transfers(&suite, &m.case_id).await.len() <= 1);
        let first = committee(&suite)
            .apply_for_confirmation(msg.clone())
            .await
            .expect("retry")
            .into_inner()
            .mediation_case
            .expect("case");
        let again = committee(&suite)
            .apply_for_confirmation(msg.clone())
            .await
            .expect("second retry")
            .into_inner()
            .mediation_case
            .expect("case");
        let transfer = first.confirmation.clone().expect("confirmation").transfer;
        assert_eq!(
            again.confirmation.map(|c| c.transfer),
            Some(transfer.clone())
        );
        let all = confirmation_transfers(&suite, &m.case_id).await;
        assert_eq!(all.len(), 1, "one transfer");
        assert_eq!(all[0].name, transfer);
        let a = received(&suite, &m.case_id).await;
        let apps = judge(&suite)
            .list_applications(jc::ListApplicationsRequest::default())
            .await
            .expect("list")
            .into_inner()
            .applications;
        assert_eq!(
            apps.iter().filter(|x| x.case_id == m.case_id).count(),
            1,
            "one application"
        );

        // Acceptance cut off, then retried.
        let acc = jc::AcceptApplicationRequest {
            name: a.name.clone(),
            etag: String::new(),
            confirmation_number: "(2026)辽0203民特调确6号".into(),
            request_id: rid(),
        };
        let mut req = tonic::Request::new(acc.clone());
        req.set_timeout(Duration::from_millis(3));
        match clerk(&suite).accept_application(req).await {
            Ok(_) => {}
            Err(e) if matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) => {}
            Err(e) => panic!("unexpected refusal of a cut-off acceptance: {e:?}"),
        }
        for _ in 0..2 {
            let got = clerk(&suite)
                .accept_application(acc.clone())
                .await
                .expect("accept retried")
                .into_inner()
                .application
                .expect("application");
            assert_eq!(got.state, jc::ApplicationState::UnderReview as i32);
        }
        committee_sees(&suite, &m.name, P::Accepted).await;

        // The ruling cut off, then retried.
        let r = rule(&a, jc::RulingOutcome::Confirmed, "");
        let mut req = tonic::Request::new(r.clone());
        req.set_timeout(Duration::from_millis(3));
        match judge(&suite).rule_on_application(req).await {
            Ok(_) => {}
            Err(e) if matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) => {}
            Err(e) => panic!("unexpected refusal of a cut-off ruling: {e:?}"),
        }
        for _ in 0..2 {
            let got = judge(&suite)
                .rule_on_application(r.clone())
                .await
                .expect("ruling retried")
                .into_inner()
                .application
                .expect("application");
            assert_eq!(got.state, jc::ApplicationState::Confirmed as i32);
        }
        let s = committee_sees(&suite, &m.name, P::Confirmed).await;
        assert_eq!(s.outcome_code, "confirmed_valid");
        let all = confirmation_transfers(&suite, &m.case_id).await;
        assert_eq!(all.len(), 1);
        // The feedback once; the committee's system may already have acknowledged it.
        assert!(
            [TransferState::FeedbackSubmitted, TransferState::Closed]
                .iter()
                .any(|s| *s as i32 == all[0].state),
            "{:?}",
            all[0].state
        );
    }
);

// Withdrawal before acceptance (撤回申请, RECEIVED): recorded by the court; the transfer is not
// accepted, so nothing goes back on it — the committee withdraws its transfer on the router
// and its case shows the application WITHDRAWN; the parties may apply again.
suite_test!(
    withdrawn_before_acceptance_the_committee_withdraws_its_transfer,
    |suite| async move {
        mediation_roster(&suite).await;
        let m = agreement(&suite, 7).await;
        let sent = apply(&suite, &m).await;
        let a = received(&suite, &m.case_id).await;
        let w = clerk(&suite)
            .withdraw_application(jc::WithdrawApplicationRequest {
                name: a.name.clone(),
                etag: String::new(),
                request_id: rid(),
            })
            .await
            .expect("withdrawn")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(w.state, jc::ApplicationState::Withdrawn as i32);
        let t = &confirmation_transfers(&suite, &m.case_id).await[0];
        assert_eq!(
            t.state,
            TransferState::Delivered as i32,
            "not on the router"
        );
        let transfer = sent.confirmation.expect("confirmation").transfer;
        committee_router(&suite)
            .withdraw_transfer(fengqiao_proto::router::WithdrawTransferRequest {
                name: transfer,
                reason: "当事人撤回司法确认申请".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("the committee withdraws its transfer");
        committee_sees(&suite, &m.name, P::Withdrawn).await;
        let again = apply(&suite, &m).await;
        assert_eq!(
            again.confirmation.map(|c| c.progress),
            Some(P::Submitted as i32)
        );
    }
);

// An application the court's intake refuses (here one party alone, sent on the router
// directly, past the committee's own check) is not taken in: the court's system declines the
// transfer with the route's reason `not_joint_application` (人民调解法 Art 33).
suite_test!(
    an_offer_the_court_refuses_is_declined_with_the_routes_reason,
    |suite| async move {
        let case_id = rid();
        let mut pkg = application(
            &md::MediationCase {
                name: "cases/none".into(),
                ..Default::default()
            },
            &["p1"],
        );
        let snapshot = fengqiao_proto::router::CaseSnapshot {
            case_id: case_id.clone(),
            category: DisputeCategory::Neighbourhood as i32,
            summary: "司法确认申请：相邻关系纠纷".into(),
            parties: vec![
                party("p1", PartyRole::Applicant, "王某"),
                party("p2", PartyRole::Respondent, "赵某"),
            ],
            region_code: "210203".into(),
            confirmation: Some(fengqiao_proto::router::ConfirmationPackage {
                agreement: Some(doc("调解协议书")),
                agreement_effective_time: Some(fengqiao_kit::time::to_timestamp(
                    now_micros() - DAY,
                )),
                agreement_party_ids: vec!["p1".into(), "p2".into()],
                applicant_party_ids: std::mem::take(&mut pkg.applicant_party_ids),
                committee_court: format!("agencies/{COURT}"),
                items: std::mem::take(&mut pkg.items),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = committee_router(&suite)
            .create_transfer(fengqiao_proto::router::CreateTransferRequest {
                transfer: Some(Transfer {
                    route: ROUTE.into(),
                    to_agency: Some(fengqiao_proto::common::AgencyRef {
                        name: format!("agencies/{COURT}"),
                        ..Default::default()
                    }),
                    case_snapshot: Some(snapshot),
                    ..Default::default()
                }),
                request_id: rid(),
                submit: true,
            })
            .await
            .expect("created on the router")
            .into_inner()
            .transfer
            .expect("transfer");
        let declined = until("the court's system declines the offer", || async {
            confirmation_transfers(&suite, &case_id)
                .await
                .into_iter()
                .find(|x| x.name == t.name && x.state == TransferState::Declined as i32)
        })
        .await;
        assert_eq!(
            declined.decline.map(|d| d.reason_code),
            Some("not_joint_application".to_string())
        );
        let apps = judge(&suite)
            .list_applications(jc::ListApplicationsRequest::default())
            .await
            .expect("list")
            .into_inner()
            .applications;
        assert!(apps.iter().all(|a| a.case_id != case_id), "not taken in");
    }
);

// ---------------------------------------------------------------------------
// Pre-filing applications (诉前调确): court diversion hands over in-process
// ---------------------------------------------------------------------------

/// The court diversion case `(2026)辽0203诉前调{number}号` once its agreement is filed.
async fn filed_case(suite: &TestSuite, number: u32) -> cd::PreFilingCase {
    let d = diversion(suite, "clerk-01", "court_clerk");
    until("the agreement filed with the court", || {
        let mut d = d.clone();
        async move {
            d.list_cases(cd::ListCasesRequest {
                pre_filing_number: format!("(2026)辽0203诉前调{number}号"),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .pre_filing_cases
            .into_iter()
            .find(|c| c.state == cd::PreFilingCaseState::AgreementFiled as i32)
        }
    })
    .await
}

fn jc_item(kind: jc::PackageItemKind, party: &str) -> jc::PackageItem {
    jc::PackageItem {
        kind: kind as i32,
        document: Some(doc("申请材料")),
        party_id: party.into(),
    }
}

/// The parties' joint application on the court diversion case (诉前调确).
fn pre_filing_application(c: &cd::PreFilingCase, applicants: &[&str]) -> cd::DecideNextStepRequest {
    use jc::PackageItemKind as Pk;
    cd::DecideNextStepRequest {
        name: c.name.clone(),
        etag: String::new(),
        next_step: cd::NextStep::JudicialConfirmation as i32,
        applicant_party_ids: applicants.iter().map(|s| (*s).to_string()).collect(),
        items: vec![
            jc_item(Pk::Application, ""),
            jc_item(Pk::IdentityProof, "p1"),
            jc_item(Pk::ServiceAddress, "p1"),
            jc_item(Pk::IdentityProof, "p2"),
            jc_item(Pk::ServiceAddress, "p2"),
        ],
        request_id: rid(),
        ..Default::default()
    }
}

async fn pre_filing_applications(
    suite: &TestSuite,
    case_id: &str,
) -> Vec<jc::ConfirmationApplication> {
    judge(suite)
        .list_applications(jc::ListApplicationsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .applications
        .into_iter()
        .filter(|a| a.case_id == case_id)
        .collect()
}

async fn diversion_case(suite: &TestSuite, name: &str) -> cd::PreFilingCase {
    diversion(suite, "clerk-01", "court_clerk")
        .get_case(cd::GetCaseRequest { name: name.into() })
        .await
        .expect("get case")
        .into_inner()
        .pre_filing_case
        .expect("case")
}

// 诉前调确: after a delegated mediation ends with a filed agreement, the parties' joint
// application on the court diversion case is handed over in-process to the same court's
// judicial confirmation service (no router transfer) with the filed agreement and its digest;
// one party alone is refused (人民调解法 Art 33); a cut-off call (3 ms) then its retry end in
// exactly one application; it is accepted with a 诉前调确 number only, confirmed, and the court
// diversion case shows the application's state and ruling.
suite_test!(
    a_pre_filing_agreement_is_handed_over_confirmed_and_shown_on_the_diversion_case,
    |suite| async move {
        mediation_roster(&suite).await;
        let _m = agreement(&suite, 41).await;
        let c = filed_case(&suite, 41).await;
        let filed = c.agreement_filing.clone().expect("filing");
        let mut d = diversion(&suite, "clerk-01", "court_clerk");

        // One party alone: refused by the court's intake, the case stays AGREEMENT_FILED.
        let e = d
            .decide_next_step(pre_filing_application(&c, &["p1"]))
            .await
            .expect_err("one party alone");
        assert_eq!(
            reason_of(&e).as_deref(),
            Some("NOT_JOINT_APPLICATION"),
            "{e:?}"
        );
        assert_eq!(
            diversion_case(&suite, &c.name).await.state,
            cd::PreFilingCaseState::AgreementFiled as i32
        );
        assert!(pre_filing_applications(&suite, &c.case_id).await.is_empty());
        // Not another next step with applicants.
        let mut wrong = pre_filing_application(&c, &["p1", "p2"]);
        wrong.next_step = cd::NextStep::MediationDocument as i32;
        let e = d.decide_next_step(wrong).await.expect_err("wrong step");
        assert_eq!(e.code(), Code::InvalidArgument);

        // A stale etag: ABORTED, nothing taken in.
        let mut stale = pre_filing_application(&c, &["p1", "p2"]);
        stale.etag = "\"999\"".into();
        let e = d.decide_next_step(stale).await.expect_err("stale etag");
        assert_eq!(e.code(), Code::Aborted);
        assert!(pre_filing_applications(&suite, &c.case_id).await.is_empty());

        // Cut off mid-flight, then retried with the same request_id: one application.
        let msg = pre_filing_application(&c, &["p1", "p2"]);
        let mut req = tonic::Request::new(msg.clone());
        req.set_timeout(Duration::from_millis(3));
        match d.decide_next_step(req).await {
            Ok(_) => eprintln!("hand-over not cut off"),
            Err(e) if matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                eprintln!("hand-over cut off mid-flight")
            }
            Err(e) => panic!("unexpected refusal of a cut-off call: {e:?}"),
        }
        assert!(pre_filing_applications(&suite, &c.case_id).await.len() <= 1);
        let got = d
            .decide_next_step(msg.clone())
            .await
            .expect("retry")
            .into_inner()
            .pre_filing_case
            .expect("case");
        let again = d
            .decide_next_step(msg.clone())
            .await
            .expect("second retry")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(
            got.state,
            cd::PreFilingCaseState::ConfirmationApplied as i32
        );
        let f = got.agreement_filing.clone().expect("filing");
        assert_eq!(
            again
                .agreement_filing
                .as_ref()
                .map(|f| &f.confirmation_application),
            Some(&f.confirmation_application)
        );
        assert_eq!(f.confirmation_state, jc::ApplicationState::Received as i32);
        let apps = pre_filing_applications(&suite, &c.case_id).await;
        assert_eq!(apps.len(), 1, "exactly one application for the case");
        let a = apps[0].clone();
        assert_eq!(f.confirmation_application, a.name);
        assert_eq!(a.source, jc::ApplicationSource::PreFiling as i32);
        assert_eq!(a.pre_filing_case, c.name);
        assert!(a.transfer.is_empty(), "in-process: no router transfer");
        assert_eq!(a.state, jc::ApplicationState::Received as i32);
        // The court reviews exactly what was filed: the agreement and its digest.
        let agreement = a.agreement.clone().expect("agreement");
        assert_eq!(Some(&agreement), filed.agreement.as_ref());
        assert_eq!(agreement.sha256.len(), 64);
        assert_eq!(
            a.committee.as_ref().map(|x| x.name.as_str()),
            Some(format!("agencies/{COMMITTEE}").as_str())
        );
        // Another application on the decided case: the lifecycle refuses it.
        let e = d
            .decide_next_step(pre_filing_application(&c, &["p1", "p2"]))
            .await
            .expect_err("already decided");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert_eq!(pre_filing_applications(&suite, &c.case_id).await.len(), 1);

        // Accepted with a 诉前调确 number only (2022 statistics rule).
        let mut accept = jc::AcceptApplicationRequest {
            name: a.name.clone(),
            etag: String::new(),
            confirmation_number: "(2026)辽0203民特调确41号".into(),
            request_id: rid(),
        };
        let e = clerk(&suite)
            .accept_application(accept.clone())
            .await
            .expect_err("a 民特调确 number for a pre-filing application");
        assert_eq!(e.code(), Code::InvalidArgument);
        accept.confirmation_number = "(2026)辽0203诉前调确41号".into();
        accept.request_id = rid();
        clerk(&suite)
            .accept_application(accept)
            .await
            .expect("accepted");
        let shown = diversion_case(&suite, &c.name).await;
        let f = shown.agreement_filing.expect("filing");
        assert_eq!(
            f.confirmation_state,
            jc::ApplicationState::UnderReview as i32
        );
        assert_eq!(f.confirmation_number, "(2026)辽0203诉前调确41号");
        assert!(f.confirmation_ruling.is_none());

        // Confirmed: the diversion case shows the ruling.
        let ruled = judge(&suite)
            .rule_on_application(rule(&a, jc::RulingOutcome::Confirmed, ""))
            .await
            .expect("ruled")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(ruled.state, jc::ApplicationState::Confirmed as i32);
        let shown = diversion_case(&suite, &c.name).await;
        let f = shown.agreement_filing.expect("filing");
        assert_eq!(f.confirmation_state, jc::ApplicationState::Confirmed as i32);
        assert_eq!(f.confirmation_ruling, ruled.ruling);
        // The committee that mediated never sees the court's application.
        let e = jc_client(&suite, COMMITTEE, "director", &["mediation_admin"])
            .get_application(jc::GetApplicationRequest {
                name: a.name.clone(),
            })
            .await
            .expect_err("not the court");
        assert_eq!(e.code(), Code::NotFound);
    }
);

/// Sets the end of the court diversion case's mediation (with the agreement: when it took
/// effect) `days` days back in the court's store (as days passing would).
async fn mediation_ended_days_ago(suite: &TestSuite, c: &cd::PreFilingCase, days: i64) {
    let store = Store::connect(StoreConfig::new(
        suite.stores[&ServiceName::CourtDiversion].clone(),
    ))
    .await
    .expect("court store");
    let id = c.name.trim_start_matches("cases/");
    let row = sqlx::query("SELECT body FROM court_cases WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("row");
    let body: Vec<u8> = row.try_get("body").expect("body");
    // The body is sealed (issue #14): opened and sealed again with the column's context.
    let body = fengqiao_store::seal::open("court_cases.body", &body).expect("sealed body");
    let mut case = cd::PreFilingCase::decode(body.as_slice()).expect("case");
    if let Some(e) = case.ending.as_mut() {
        e.end_time = Some(fengqiao_kit::time::to_timestamp(now_micros() - days * DAY));
    }
    let sealed =
        fengqiao_store::seal::seal("court_cases.body", &case.encode_to_vec()).expect("seal");
    sqlx::query("UPDATE court_cases SET body = $1 WHERE id = $2")
        .bind(sealed)
        .bind(id)
        .execute(store.pool())
        .await
        .expect("update");
    store.close().await;
}

// 诉前调确 within 30 days of the agreement taking effect (人民调解法 Art 33): day 31 is
// refused naming the article and the case stays AGREEMENT_FILED; day 30 is taken in.
suite_test!(
    a_pre_filing_application_on_day_31_is_refused_and_on_day_30_taken,
    |suite| async move {
        mediation_roster(&suite).await;
        let _m = agreement(&suite, 42).await;
        let c = filed_case(&suite, 42).await;
        let mut d = diversion(&suite, "clerk-01", "court_clerk");
        // Day 31 after a period whose last day is a working day (民事诉讼法 Art 85 moves a
        // period ending on a holiday to the next working day; then the test goes further back).
        let cal = fengqiao_clock::HolidayCalendar::builtin();
        let mut back = 31;
        while fengqiao_judicial_confirmation::rules::application_deadline(
            now_micros() - back * DAY,
            cal,
        ) > now_micros()
        {
            back += 1;
        }
        mediation_ended_days_ago(&suite, &c, back).await;
        let e = d
            .decide_next_step(pre_filing_application(&c, &["p1", "p2"]))
            .await
            .expect_err("day 31");
        assert_eq!(
            reason_of(&e).as_deref(),
            Some("APPLICATION_PERIOD_LAPSED"),
            "{e:?}"
        );
        assert!(e.message().contains("Art 33"), "{}", e.message());
        assert!(pre_filing_applications(&suite, &c.case_id).await.is_empty());
        assert_eq!(
            diversion_case(&suite, &c.name).await.state,
            cd::PreFilingCaseState::AgreementFiled as i32
        );
        mediation_ended_days_ago(&suite, &c, 30).await;
        let got = d
            .decide_next_step(pre_filing_application(&c, &["p1", "p2"]))
            .await
            .expect("day 30")
            .into_inner()
            .pre_filing_case
            .expect("case");
        assert_eq!(
            got.state,
            cd::PreFilingCaseState::ConfirmationApplied as i32
        );
        assert_eq!(pre_filing_applications(&suite, &c.case_id).await.len(), 1);
    }
);
