//! A stopping router releases its delivery leases before its store closes (issue #9 §3: "could
//! not release delivery leases: database pool is closed" kept a stopping replica's messages
//! waiting for their lease on every rolling update), and the `[delivery]` configuration reaches
//! the router — on SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fengqiao::{ServiceName, Suite, SuiteSpec};
use fengqiao_kit::config::Config;
use fengqiao_proto::inbox::{Envelope, MessageKind};
use fengqiao_store::testing::TempDir;
use fengqiao_store::{Store, StoreConfig, outbox};

#[test]
fn delivery_settings_reach_the_router() {
    let mut config = Config::default();
    let o = fengqiao::router_options(&config).expect("options");
    assert_eq!(o.delivery.call_timeout, Duration::from_secs(10));
    assert_eq!(
        o.delivery.push_lease,
        Duration::from_secs(15),
        "derived: timeout + 5 s"
    );
    assert_eq!(o.delivery.pull_lease, Duration::from_secs(60));
    config.delivery.push_timeout_ms = 3_000;
    config.delivery.pull_lease_ms = 7_000;
    let o = fengqiao::router_options(&config).expect("options");
    assert_eq!(o.delivery.push_lease, Duration::from_secs(8));
    assert_eq!(o.delivery.pull_lease, Duration::from_secs(7));
    config.delivery.push_lease_ms = Some(4_500);
    let o = fengqiao::router_options(&config).expect("options");
    assert_eq!(o.delivery.push_lease, Duration::from_millis(4_500));
}

/// Starts the router alone on `url`, lets its push worker take a message to an endpoint that
/// never answers (the push is in flight), stops it, and checks the lease was released.
async fn stop_with_push_in_flight(url: String, rounds: usize) {
    // Accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", hang.local_addr().expect("addr"));
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = hang.accept().await {
            if let Ok(mut k) = keep.lock() {
                k.push(s);
            }
        }
    });
    let seed = format!(
        "[[agency]]\nid = \"committee\"\nkind = \"mediation_committee\"\n\
         display_name = \"测试调解委员会\"\nregion_code = \"210203\"\n\
         delivery = \"push\"\nendpoint = \"{endpoint}\"\n"
    );
    let mut config = Config::default();
    config.delivery.push_timeout_ms = 60_000;
    for round in 0..rounds {
        let spec = SuiteSpec {
            config: config.clone(),
            services: vec![ServiceName::Router],
            stores: BTreeMap::from([(ServiceName::Router, url.clone())]),
            agency_seed: Some(seed.clone()),
            extra_modules: Vec::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let suite = Suite::start(spec, listener, admin).await.expect("start");
        let store = Store::connect(StoreConfig::new(url.clone()))
            .await
            .expect("store");
        let mut tx = store.write().await.expect("tx");
        let env = fengqiao_router::delivery::enqueue(
            &mut tx,
            Envelope {
                case_id: format!("case-{round}"),
                transfer: format!("transfers/t-{round}"),
                kind: MessageKind::TransferOffered as i32,
                to_agency: "agencies/committee".into(),
                ..Default::default()
            },
        )
        .await
        .expect("enqueue");
        tx.commit().await.expect("commit");
        let started = Instant::now();
        loop {
            let m = outbox::get(&store, &env.message_id)
                .await
                .expect("get")
                .expect("message");
            if m.lease_until.is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the push worker never took the message: {m:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        suite.shutdown(Duration::from_secs(2)).await;
        let m = outbox::get(&store, &env.message_id)
            .await
            .expect("get")
            .expect("message");
        assert_eq!(
            m.lease_until, None,
            "round {round}: the stopped router kept its lease (owner {:?})",
            m.lease_owner
        );
        // Out of the way of the next round (a push round waits for its slowest push).
        outbox::mark_delivered(&store, &env.message_id)
            .await
            .expect("clear");
        store.close().await;
    }
    drop(held);
}

#[test]
fn stopping_router_releases_leases_sqlite() {
    let dir = TempDir::new();
    let url = dir.sqlite_url("router.db");
    fengqiao_store::testing::block_on(stop_with_push_in_flight(url, 4));
}

#[test]
fn stopping_router_releases_leases_postgres() {
    let Some(url) = fengqiao_store::testing::postgres_url() else {
        return;
    };
    fengqiao_store::testing::block_on(stop_with_push_in_flight(url, 4));
}
