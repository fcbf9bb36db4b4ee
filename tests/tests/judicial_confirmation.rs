//! 司法确认 through the real suite (router, mediation, court diversion and judicial
//! confirmation served together), on SQLite and PostgreSQL.
//!
//! NOT the full "Done when" list of issue #12: the mediation service's sender side
//! (ApplyForConfirmation) and the court's router inbox are not built, so the application is
//! taken in through the service library (`JudicialConfirmation::take_in`, the inbox's entry
//! point) on the court's store, and everything after that goes through the served gRPC API
//! with real tokens. The day-30/31, pause-by-the-rule and Art 372 day counts are tested on
//! the domain (services/judicial-confirmation/src/application/tests.rs) under exact times.

use fengqiao_judicial_confirmation::JudicialConfirmation;
use fengqiao_judicial_confirmation::application::Intake;
use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::reason_of;
use fengqiao_proto::common::{EvidenceRef, Party};
use fengqiao_proto::judicialconfirmation as jc;
use fengqiao_proto::judicialconfirmation::judicial_confirmation_service_client::JudicialConfirmationServiceClient;
use fengqiao_scenarios::rid;
use fengqiao_store::{Store, StoreConfig};
use fengqiao_testkit::{ServiceName, TestSuite, suite_test};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Jc = JudicialConfirmationServiceClient<InterceptedService<Channel, CallInterceptor>>;

const COURT: &str = "xigang-court";
const COMMITTEE: &str = "xigang-mediation-committee";
const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const DAY: i64 = 86_400_000_000;

fn client(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Jc {
    JudicialConfirmationServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(agency, actor, roles),
    )
}

fn doc() -> EvidenceRef {
    EvidenceRef {
        display_name: "调解协议书".into(),
        media_type: "application/pdf".into(),
        sha256: SHA.into(),
        ..EvidenceRef::default()
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

fn intake(transfer: &str) -> Intake {
    use jc::PackageItemKind as K;
    let item = |kind: K, party: &str| jc::PackageItem {
        kind: kind as i32,
        document: Some(doc()),
        party_id: party.into(),
    };
    Intake {
        case_id: rid(),
        transfer: transfer.into(),
        committee: format!("agencies/{COMMITTEE}"),
        committee_court: format!("agencies/{COURT}"),
        delegating_court: None,
        source: jc::ApplicationSource::PeoplesMediation,
        parties: ["p1", "p2"]
            .iter()
            .map(|id| Party {
                party_id: (*id).into(),
                ..Party::default()
            })
            .collect(),
        applicants: vec!["p1".into(), "p2".into()],
        represented: vec![],
        agreement: Some(doc()),
        agreement_effective_at: now_micros() - 3 * DAY,
        package: vec![
            item(K::Application, ""),
            item(K::IdentityProof, "p1"),
            item(K::ServiceAddress, "p1"),
            item(K::IdentityProof, "p2"),
            item(K::ServiceAddress, "p2"),
        ],
    }
}

async fn service(suite: &TestSuite) -> JudicialConfirmation {
    let url = suite.stores[&ServiceName::JudicialConfirmation].clone();
    let store = Store::connect(StoreConfig::new(url))
        .await
        .expect("judicial confirmation store");
    JudicialConfirmation::new(store)
}

suite_test!(
    confirmed_through_the_served_api_with_the_presidents_extension_and_objections,
    |suite| async move {
        let svc = service(&suite).await;
        let court = format!("agencies/{COURT}");
        let a = svc
            .take_in(&court, &intake(&format!("transfers/{}", rid())))
            .await
            .expect("taken in");
        let mut judge = client(&suite, COURT, "judge-01", &["judge"]);
        let mut clerk = client(&suite, COURT, "clerk-01", &["court_clerk"]);
        let mut president = client(&suite, COURT, "president", &["court_president"]);
        let mut committee = client(&suite, COMMITTEE, "director", &["mediation_admin"]);

        // An agency not party to the application: NOT_FOUND.
        let e = committee
            .get_application(jc::GetApplicationRequest {
                name: a.name.clone(),
            })
            .await
            .expect_err("not the court");
        assert_eq!(e.code(), Code::NotFound);

        let acc = clerk
            .accept_application(jc::AcceptApplicationRequest {
                name: a.name.clone(),
                etag: a.etag.clone(),
                confirmation_number: "(2026)辽0203民特调确1号".into(),
                request_id: rid(),
            })
            .await
            .expect("accepted")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(acc.state, jc::ApplicationState::UnderReview as i32);

        // 15 + 10 days only with the president's role, never more.
        let extend = |days| jc::ExtendReviewRequest {
            name: a.name.clone(),
            etag: String::new(),
            days,
            reason: "案情复杂".into(),
            request_id: rid(),
        };
        let e = judge.extend_review(extend(10)).await.expect_err("judge");
        assert_eq!(
            reason_of(&e).as_deref(),
            Some("CLOCK_APPROVER_ROLE_REQUIRED")
        );
        president.extend_review(extend(10)).await.expect("extended");
        let e = president
            .extend_review(extend(1))
            .await
            .expect_err("past 10");
        assert_eq!(reason_of(&e).as_deref(), Some("CLOCK_EXTENSION_TOO_LONG"));

        let ruled = judge
            .rule_on_application(jc::RuleOnApplicationRequest {
                name: a.name.clone(),
                etag: String::new(),
                outcome: jc::RulingOutcome::Confirmed as i32,
                ground_code: String::new(),
                document: Some(doc()),
                request_id: rid(),
            })
            .await
            .expect("ruled")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(ruled.state, jc::ApplicationState::Confirmed as i32);
        assert_eq!(ruled.ruling.and_then(|r| r.fee).map(|f| f.units), Some(0));

        // A party 16+ days after receiving: refused; an interested person within 6 months:
        // taken (民诉法解释 Art 372).
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
        let e = clerk
            .file_objection(object(jc::ObjectorKind::Party, 17))
            .await
            .expect_err("late");
        assert_eq!(reason_of(&e).as_deref(), Some("OBJECTION_PERIOD_LAPSED"));
        let taken = clerk
            .file_objection(object(jc::ObjectorKind::InterestedPerson, 90))
            .await
            .expect("taken")
            .into_inner()
            .application
            .expect("application");
        assert_eq!(taken.objections.len(), 1);

        let stats = clerk
            .get_application_statistics(jc::GetApplicationStatisticsRequest::default())
            .await
            .expect("statistics")
            .into_inner();
        assert_eq!((stats.application_count, stats.confirmed_count), (1, 1));
    }
);
