//! Operating the router (issue #9 §3, replicas): concurrent first starts on a fresh database,
//! a receiver's backlog after an outage, and a message whose push was cut by a crash — on
//! SQLite and PostgreSQL.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fengqiao_kit::server::shutdown_pair;
use fengqiao_proto::inbox::agency_inbox_service_server::{
    AgencyInboxService, AgencyInboxServiceServer,
};
use fengqiao_proto::inbox::{DeliverRequest, DeliverResponse, Envelope, MessageKind};
use fengqiao_router::Agencies;
use fengqiao_router::agencies::{SeedAgency, SeedFile};
use fengqiao_router::delivery::{Delivery, DeliveryConfig, enqueue};
use fengqiao_store::outbox::{self, Status as OutboxStatus};
use fengqiao_store::testing::{TempDir, tokio};
use fengqiao_store::{Store, StoreConfig, both_backends};
use tonic::{Request, Response, Status};

type TestResult = std::result::Result<(), String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn push_agency(id: &str, endpoint: &str) -> SeedAgency {
    SeedAgency {
        id: id.into(),
        kind: "mediation_committee".into(),
        display_name: format!("测试机构 {id}"),
        region_code: "210203".into(),
        parent: None,
        delivery: Some("push".into()),
        endpoint: Some(endpoint.into()),
        actor: Vec::new(),
    }
}

fn sample_seed() -> SeedFile {
    SeedFile {
        agency: (0..12)
            .map(|i| push_agency(&format!("agency-{i:02}"), "http://127.0.0.1:1"))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Replicas started together on a fresh database

/// `n` replicas, each with its own pool, migrate and seed one fresh database at once.
async fn concurrent_first_starts(url: String, n: usize) -> TestResult {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let store = Store::connect(StoreConfig::new(url)).await.map_err(err)?;
            let r = async {
                fengqiao_router::migrate(&store).await.map_err(err)?;
                Agencies::new(store.clone())
                    .seed(&sample_seed(), "http://127.0.0.1:1")
                    .await
                    .map_err(err)
            }
            .await;
            store.close().await;
            r
        }));
    }
    let mut added = 0;
    let mut failures = Vec::new();
    for t in tasks {
        match t.await.map_err(err)? {
            Ok(a) => added += a,
            Err(e) => failures.push(e),
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} of {n} concurrent first starts failed: {failures:?}",
            failures.len()
        ));
    }
    let store = Store::connect(StoreConfig::new(url)).await.map_err(err)?;
    let stored: i64 = fengqiao_store::sqlx::query_scalar("SELECT COUNT(*) FROM agencies")
        .fetch_one(store.pool())
        .await
        .map_err(err)?;
    store.close().await;
    let expected = sample_seed().agency.len();
    if stored != i64::try_from(expected).map_err(err)? || added != expected {
        return Err(format!(
            "expected {expected} agencies added once in all; stored {stored}, added {added}"
        ));
    }
    Ok(())
}

mod concurrent_first_start {
    use super::*;

    #[test]
    fn sqlite() {
        let dir = TempDir::new();
        let url = dir.sqlite_url("router.db");
        fengqiao_store::testing::block_on(concurrent_first_starts(url, 8));
    }

    #[test]
    fn postgres() {
        let Some(url) = fengqiao_store::testing::postgres_url() else {
            return;
        };
        fengqiao_store::testing::block_on(concurrent_first_starts(url, 8));
    }
}

// ---------------------------------------------------------------------------------------------
// A receiver that can be down (nothing listening on its port) and up

#[derive(Default)]
struct Received {
    /// Message ids in arrival order (first receipt only).
    order: Mutex<Vec<String>>,
    calls: AtomicUsize,
}

#[derive(Clone)]
struct Receiver(Arc<Received>);

#[tonic::async_trait]
impl AgencyInboxService for Receiver {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let env = request
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope"))?;
        let mut order = self
            .0
            .order
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        let duplicate = order.contains(&env.message_id);
        if !duplicate {
            order.push(env.message_id);
        }
        Ok(Response::new(DeliverResponse { duplicate }))
    }
}

/// Serves `receiver` on `port` until the returned trigger fires.
async fn serve_receiver(
    port: u16,
    receiver: Receiver,
) -> Result<fengqiao_kit::server::ShutdownTrigger, String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(err)?;
    let (trigger, shutdown) = shutdown_pair();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgencyInboxServiceServer::new(receiver))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move { shutdown.wait().await },
            ),
    );
    Ok(trigger)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(err)
}

fn envelope(case: &str, to: &str) -> Envelope {
    Envelope {
        case_id: case.into(),
        transfer: format!("transfers/t-{case}"),
        kind: MessageKind::TransferOffered as i32,
        from_agency: "agencies/police-station".into(),
        to_agency: format!("agencies/{to}"),
        payload_type: "fengqiao.router.v1.TransferMessage".into(),
        ..Default::default()
    }
}

async fn enqueue_committed(store: &Store, case: &str, to: &str) -> Result<String, String> {
    let mut tx = store.write().await.map_err(err)?;
    let e = enqueue(&mut tx, envelope(case, to)).await.map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(e.message_id)
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut f: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let start = Instant::now();
    loop {
        if f().await? {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn messages(store: &Store, ids: &[String]) -> Result<Vec<outbox::OutboxMessage>, String> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            outbox::get(store, id)
                .await
                .map_err(err)?
                .ok_or_else(|| format!("message {id} vanished"))?,
        );
    }
    Ok(out)
}

// The receiver is down long enough for the backoff to reach ~13 s, then comes back: the whole
// backlog is delivered within a few seconds (a probe notices it is back; each success makes
// the rest due), not after the backoff.
both_backends!(
    backlog_drains_promptly_after_an_outage,
    |store| async move {
        fengqiao_router::migrate(&store).await.map_err(err)?;
        let port = free_port()?;
        Agencies::new(store.clone())
            .seed(
                &SeedFile {
                    agency: vec![push_agency(
                        "committee",
                        &format!("http://127.0.0.1:{port}"),
                    )],
                },
                "http://127.0.0.1:1",
            )
            .await
            .map_err(err)?;
        let config = DeliveryConfig {
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(600),
            jitter: 0.0,
            max_attempts: 1000,
            call_timeout: Duration::from_secs(1),
            push_lease: Duration::from_secs(3),
            pull_poll: Duration::from_millis(20),
            ..DeliveryConfig::default()
        };
        let delivery = Delivery::new(store.clone(), config, Arc::new(|| None));
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(enqueue_committed(&store, &format!("case-{i}"), "committee").await?);
        }
        let (trigger, shutdown) = shutdown_pair();
        let worker = tokio::spawn(
            delivery
                .clone()
                .run_push_worker(shutdown, Duration::from_millis(20)),
        );
        // Nothing listens on the port: every push fails and backs off; after the 9th attempt the
        // next one is 50 ms · 2^8 = 12.8 s away.
        wait_until(
            "9 failed attempts each",
            Duration::from_secs(40),
            || async {
                Ok(messages(&store, &ids)
                    .await?
                    .iter()
                    .all(|m| m.attempts >= 9 && m.lease_until.is_none()))
            },
        )
        .await?;
        let received = Arc::new(Received::default());
        let up = Instant::now();
        let receiver = serve_receiver(port, Receiver(received.clone())).await?;
        let drained = wait_until("the backlog to drain", Duration::from_secs(6), || async {
            Ok(messages(&store, &ids)
                .await?
                .iter()
                .all(|m| m.status == OutboxStatus::Delivered))
        })
        .await;
        let took = up.elapsed();
        eprintln!(
            "backlog of {} drained {took:?} after the receiver came back",
            ids.len()
        );
        trigger.trigger();
        worker.await.map_err(err)?;
        receiver.trigger();
        drained?;
        let got = received.order.lock().map(|o| o.len()).map_err(err)?;
        if got != ids.len() {
            return Err(format!("receiver got {got} distinct messages"));
        }
        Ok(())
    }
);

// A push worker crashed holding a message's lease: the message and the later message of the
// same case are delivered, in order, once the lease has run out — not later.
both_backends!(stranded_message_waits_one_lease_only, |store| async move {
    fengqiao_router::migrate(&store).await.map_err(err)?;
    let port = free_port()?;
    Agencies::new(store.clone())
        .seed(
            &SeedFile {
                agency: vec![push_agency(
                    "committee",
                    &format!("http://127.0.0.1:{port}"),
                )],
            },
            "http://127.0.0.1:1",
        )
        .await
        .map_err(err)?;
    let lease = Duration::from_millis(1500);
    let config = DeliveryConfig {
        base_backoff: Duration::from_millis(50),
        call_timeout: Duration::from_millis(500),
        push_lease: lease,
        pull_poll: Duration::from_millis(20),
        ..DeliveryConfig::default()
    };
    let first = enqueue_committed(&store, "case-1", "committee").await?;
    let second = enqueue_committed(&store, "case-1", "committee").await?;
    let claimed = outbox::claim_for(
        &store,
        "push:crashed",
        &["agencies/committee".to_string()],
        10,
        lease,
    )
    .await
    .map_err(err)?;
    if claimed.len() != 1 || claimed[0].id != first {
        return Err(format!(
            "the crashed worker should hold the first message: {claimed:?}"
        ));
    }
    let stranded_at = Instant::now();
    let received = Arc::new(Received::default());
    let receiver = serve_receiver(port, Receiver(received.clone())).await?;
    let (trigger, shutdown) = shutdown_pair();
    let worker = tokio::spawn(
        Delivery::new(store.clone(), config, Arc::new(|| None))
            .run_push_worker(shutdown, Duration::from_millis(20)),
    );
    let ids = [first.clone(), second.clone()];
    let done = wait_until("both messages", lease + Duration::from_secs(3), || async {
        Ok(messages(&store, &ids)
            .await?
            .iter()
            .all(|m| m.status == OutboxStatus::Delivered))
    })
    .await;
    let took = stranded_at.elapsed();
    trigger.trigger();
    worker.await.map_err(err)?;
    receiver.trigger();
    done?;
    if took < lease {
        return Err(format!(
            "delivered after {took:?}, before the lease ran out"
        ));
    }
    let order = received.order.lock().map(|o| o.clone()).map_err(err)?;
    if order != vec![first, second] {
        return Err(format!("per-case order broken: {order:?}"));
    }
    Ok(())
});

// Shutdown: the push worker releases its leases, and `stopped` resolves only after it has.
both_backends!(stopped_waits_for_released_leases, |store| async move {
    fengqiao_router::migrate(&store).await.map_err(err)?;
    // An endpoint that accepts connections and never answers: the push is in flight.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(err)?;
    let port = hang.local_addr().map_err(err)?.port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = hang.accept().await {
            if let Ok(mut k) = keep.lock() {
                k.push(s);
            }
        }
    });
    Agencies::new(store.clone())
        .seed(
            &SeedFile {
                agency: vec![push_agency(
                    "committee",
                    &format!("http://127.0.0.1:{port}"),
                )],
            },
            "http://127.0.0.1:1",
        )
        .await
        .map_err(err)?;
    let config = DeliveryConfig {
        call_timeout: Duration::from_secs(30),
        push_lease: Duration::from_secs(35),
        ..DeliveryConfig::default()
    };
    let delivery = Delivery::new(store.clone(), config, Arc::new(|| None));
    let id = enqueue_committed(&store, "case-1", "committee").await?;
    let (trigger, shutdown) = shutdown_pair();
    let worker = tokio::spawn(
        delivery
            .clone()
            .run_push_worker(shutdown, Duration::from_millis(20)),
    );
    wait_until("the push in flight", Duration::from_secs(10), || async {
        Ok(messages(&store, std::slice::from_ref(&id)).await?[0]
            .lease_until
            .is_some())
    })
    .await?;
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(5), delivery.stopped())
        .await
        .map_err(|_| "stopped() did not resolve".to_string())?;
    // Checked right after `stopped`, with the worker's task possibly not yet joined.
    let m = messages(&store, std::slice::from_ref(&id)).await?.remove(0);
    if m.lease_until.is_some() || m.status != OutboxStatus::Pending {
        return Err(format!("lease still held after stopped(): {m:?}"));
    }
    worker.await.map_err(err)?;
    drop(held);
    Ok(())
});
