//! A fourth agency service needs only its own module: the test-only probe service
//! (`fengqiao_testkit::probe`, one migration and one inbox handler) is started through the
//! service registry's trait beside every real service, with no other change anywhere. Its
//! migration ran, it receives its envelopes exactly once through the process's one inbox, and
//! the real services beside it still serve and receive theirs.

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::inbox::ROUTER_PRINCIPAL;
use fengqiao_proto::inbox::agency_inbox_service_client::AgencyInboxServiceClient;
use fengqiao_proto::inbox::{DeliverRequest, Envelope, RecipientSide};
use fengqiao_proto::router::ListAgenciesRequest;
use fengqiao_proto::router::agency_service_client::AgencyServiceClient;
use fengqiao_store::{Store, StoreConfig};
use fengqiao_testkit::{Db, ISSUER, ServiceName, TestSuite, block_on, probe};

fn envelope(id: &str, route: &str) -> DeliverRequest {
    DeliverRequest {
        envelope: Some(Envelope {
            message_id: id.into(),
            route: format!("routes/{route}"),
            recipient_side: RecipientSide::Receiver as i32,
            ..Default::default()
        }),
    }
}

fn probe_runs_beside_the_real_services(db: Db) {
    block_on(async move {
        let Some(suite) =
            TestSuite::start_with_modules(db, &ServiceName::all(), &[&probe::MODULE], |_| {}).await
        else {
            return;
        };
        let name = ServiceName::of(&probe::MODULE);
        let store = Store::connect(StoreConfig::new(suite.stores[&name].clone()))
            .await
            .expect("probe store");
        // Its migration ran: its table is there, empty.
        assert_eq!(probe::recorded(&store).await, Vec::<String>::new());

        let router = suite.key().sign(&fengqiao_kit::auth::claims(
            ISSUER,
            ROUTER_PRINCIPAL,
            "router",
            &["router"],
            300,
        ));
        let mut inbox = AgencyInboxServiceClient::with_interceptor(
            suite.channel(),
            CallInterceptor::new(Some(router)),
        );
        // It receives the envelopes of its route, once.
        let first = inbox
            .deliver(envelope("m-1", probe::ROUTE))
            .await
            .expect("deliver")
            .into_inner();
        assert!(!first.duplicate);
        let again = inbox
            .deliver(envelope("m-1", probe::ROUTE))
            .await
            .expect("deliver again")
            .into_inner();
        assert!(again.duplicate, "a repeat is answered duplicate");
        assert_eq!(probe::recorded(&store).await, vec!["m-1".to_string()]);

        // The real services' handlers sit in the same dispatcher: mediation's route reaches
        // mediation's handler (whatever it makes of this empty envelope, it is not NO_HANDLER);
        // a route nobody declared is NO_HANDLER.
        let no_handler = "no service here keeps records for route";
        if let Err(e) = inbox
            .deliver(envelope("m-2", "police-to-station-mediation"))
            .await
        {
            assert!(!e.message().contains(no_handler), "{e:?}");
        }
        let nobody = inbox
            .deliver(envelope("m-3", "no-such-route"))
            .await
            .expect_err("no handler");
        assert_eq!(nobody.code(), tonic::Code::FailedPrecondition, "{nobody:?}");
        assert!(nobody.message().contains(no_handler), "{nobody:?}");
        assert_eq!(probe::recorded(&store).await, vec!["m-1".to_string()]);

        // And the router beside it serves its seeded agencies.
        let mut agencies = AgencyServiceClient::with_interceptor(
            suite.channel(),
            suite.caller("xigang-110", "reviewer-01", &[]),
        );
        let listed = agencies
            .list_agencies(ListAgenciesRequest::default())
            .await
            .expect("list agencies")
            .into_inner();
        assert!(!listed.agencies.is_empty());
        store.close().await;
        suite.stop().await;
    });
}

#[test]
fn probe_runs_beside_the_real_services_sqlite() {
    probe_runs_beside_the_real_services(Db::Sqlite);
}

#[test]
fn probe_runs_beside_the_real_services_postgres() {
    probe_runs_beside_the_real_services(Db::Postgres);
}

/// A module outside the registry is unknown to a suite that is not given it.
#[test]
fn a_service_not_given_is_refused_naming_the_registry() {
    block_on(async move {
        let dir = fengqiao_testkit::TempDir::new();
        let stores =
            fengqiao_testkit::store_urls(Db::Sqlite, &dir, &[ServiceName::of(&probe::MODULE)])
                .expect("sqlite");
        let config = fengqiao_kit::config::Config::default();
        let spec = fengqiao::SuiteSpec {
            config,
            services: stores.keys().copied().collect(),
            stores,
            agency_seed: None,
            extra_modules: Vec::new(),
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let a = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let e = fengqiao::Suite::start(spec, l, a)
            .await
            .expect_err("probe is not in the registry")
            .to_string();
        assert!(e.contains("unknown service \"probe\""), "{e}");
        assert!(e.contains("police-referral"), "{e}");
    });
}
