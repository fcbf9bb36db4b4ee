//! Refused calls to the court and dispute services leave a `denied` row in the service's own
//! access log (issue #14 §1: denials audited in every service; 个人信息保护法 Art 51), through
//! the real server's guard, on SQLite and PostgreSQL: an unauthenticated call and a call by a
//! role the method does not allow.

use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::admindispute::GetDisputeRequest;
use fengqiao_proto::admindispute::admin_dispute_service_client::AdminDisputeServiceClient;
use fengqiao_proto::courtdiversion::court_diversion_service_client::CourtDiversionServiceClient;
use fengqiao_proto::courtdiversion::{CreateCaseRequest, GetCaseRequest};
use fengqiao_proto::judicialconfirmation::GetApplicationRequest;
use fengqiao_proto::judicialconfirmation::judicial_confirmation_service_client::JudicialConfirmationServiceClient;
use fengqiao_scenarios::rid;
use fengqiao_store::access::{self, Outcome};
use fengqiao_store::{Store, StoreConfig};
use fengqiao_testkit::{ServiceName, TestSuite, suite_test};
use tonic::Code;

async fn denials(suite: &TestSuite, service: ServiceName) -> Vec<access::Access> {
    let store = Store::connect(StoreConfig::new(suite.stores[&service].clone()))
        .await
        .expect("store");
    let rows = access::recent(&store, None, 20).await.expect("access log");
    store.close().await;
    rows.into_iter()
        .filter(|r| r.outcome == Outcome::Denied)
        .collect()
}

fn anonymous() -> CallInterceptor {
    CallInterceptor::new(None)
}

suite_test!(
    refused_court_diversion_calls_are_logged,
    |suite| async move {
        let e = CourtDiversionServiceClient::with_interceptor(suite.channel(), anonymous())
            .get_case(GetCaseRequest {
                name: "cases/00000000-0000-4000-8000-000000000001".into(),
            })
            .await
            .expect_err("no token");
        assert_eq!(e.code(), Code::Unauthenticated);
        // The roster's administrator may not register a case (refused by the handler).
        let e = CourtDiversionServiceClient::with_interceptor(
            suite.channel(),
            suite.caller("xigang-court", "admin-01", &["court_admin"]),
        )
        .create_case(CreateCaseRequest {
            pre_filing_case: None,
            consents: vec![],
            request_id: rid(),
        })
        .await
        .expect_err("not a clerk");
        assert_eq!(e.code(), Code::PermissionDenied);
        let rows = denials(&suite, ServiceName::CourtDiversion).await;
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().all(|r| r.service == "court-diversion"));
        assert!(
            rows.iter()
                .any(|r| r.method.ends_with("/GetCase") && r.agency.is_empty())
        );
        assert!(
            rows.iter()
                .any(|r| r.method.ends_with("/CreateCase") && r.agency == "agencies/xigang-court")
        );
    }
);

suite_test!(
    refused_judicial_confirmation_calls_are_logged,
    |suite| async move {
        let e = JudicialConfirmationServiceClient::with_interceptor(suite.channel(), anonymous())
            .get_application(GetApplicationRequest {
                name: "applications/00000000-0000-4000-8000-000000000001".into(),
            })
            .await
            .expect_err("no token");
        assert_eq!(e.code(), Code::Unauthenticated);
        let rows = denials(&suite, ServiceName::JudicialConfirmation).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].service, "judicial-confirmation");
        assert!(rows[0].method.ends_with("/GetApplication"));
        assert!(!rows[0].reason.is_empty());
    }
);

suite_test!(refused_admin_dispute_calls_are_logged, |suite| async move {
    let e = AdminDisputeServiceClient::with_interceptor(suite.channel(), anonymous())
        .get_dispute(GetDisputeRequest {
            name: "disputes/00000000-0000-4000-8000-000000000001".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let rows = denials(&suite, ServiceName::AdminDispute).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].service, "admin-dispute");
    assert!(rows[0].method.ends_with("/GetDispute"));
});
