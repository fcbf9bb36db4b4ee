//! Protections: a call that cannot finish within its deadline gets DEADLINE_EXCEEDED, and calls
//! beyond the concurrency limit are shed with RESOURCE_EXHAUSTED — while the store's write lock
//! is held by someone else, so the first call is really stuck.

use std::time::Duration;

use fengqiao_kit::error::reason_of;
use fengqiao_proto::common::AgencyKind;
use fengqiao_proto::router::{Agency, DeliveryMode, ListAgenciesRequest, RegisterAgencyRequest};
use fengqiao_scenarios::{admin, rid};
use fengqiao_store::{Store, StoreConfig};
use fengqiao_testkit::{Db, ServiceName, TestSuite};
use tonic::Code;

fn register() -> RegisterAgencyRequest {
    RegisterAgencyRequest {
        agency: Some(Agency {
            kind: AgencyKind::MediationCommittee as i32,
            display_name: "某街道人民调解委员会".into(),
            region_code: "210203".into(),
            delivery_mode: DeliveryMode::Pull as i32,
            ..Default::default()
        }),
        agency_id: "some-committee".into(),
        request_id: rid(),
    }
}

#[test]
fn deadline_and_load_shedding() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |c| {
            c.limits.request_timeout_ms = 400;
            c.limits.max_concurrency = 1;
        })
        .await
        .expect("suite");
        // Someone else holds the router store's write lock.
        let url = suite.stores[&ServiceName::Router].clone();
        let other = Store::connect(StoreConfig::new(url)).await.expect("store");
        let blocker = other.write().await.expect("write lock");

        let mut a = admin(&suite);
        let mut b = admin(&suite);
        let stuck = tokio::spawn(async move { a.register_agency(register()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The one permit is taken by the stuck call: the next is shed at once.
        let e = b
            .list_agencies(ListAgenciesRequest::default())
            .await
            .expect_err("shed");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(reason_of(&e).as_deref(), Some("SERVER_OVERLOADED"));

        let e = stuck.await.expect("join").expect_err("deadline");
        assert_eq!(e.code(), Code::DeadlineExceeded);
        drop(blocker);
        other.close().await;

        // Nothing was half-done, and the server serves again.
        let listed = b
            .list_agencies(ListAgenciesRequest::default())
            .await
            .expect("served again")
            .into_inner();
        assert!(
            !listed
                .agencies
                .iter()
                .any(|x| x.name == "agencies/some-committee")
        );
        suite.stop().await;
    });
}
