//! Store-and-forward delivery (DESIGN.md §2 "Delivery"), every test on SQLite and PostgreSQL.
//!
//! Push tests run a fake agency receiver: a tonic `AgencyInboxService` on 127.0.0.1:0 that
//! records receipts with `receive_in_order` in its own tables of the test store and counts the
//! effects it applied (and, separately, every raw call). Pull tests call the `DeliveryService`
//! implementation directly with a verified `Identity` in the request extensions, as the
//! server's auth layer would.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fengqiao_kit::Identity;
use fengqiao_kit::auth::AuthMethod;
use fengqiao_kit::server::{Shutdown, ShutdownTrigger, shutdown_pair};
use fengqiao_proto::inbox::agency_inbox_service_server::{
    AgencyInboxService, AgencyInboxServiceServer,
};
use fengqiao_proto::inbox::{DeliverRequest, DeliverResponse, Envelope, MessageKind};
use fengqiao_proto::router::delivery_service_server::DeliveryService;
use fengqiao_proto::router::{
    AcknowledgeMessagesRequest, DeliveryIncident, DeliveryIncidentState,
    ListDeliveryIncidentsRequest, PullMessagesRequest, PullMessagesResponse,
    RetryDeliveryIncidentRequest,
};
use fengqiao_router::agencies::{SeedAgency, SeedFile};
use fengqiao_router::delivery::{
    self, Delivery, DeliveryApi, DeliveryConfig, OnDelivered, Receipt, enqueue,
};
use fengqiao_router::{Agencies, Error};
use fengqiao_store::outbox::{self, Status as OutboxStatus};
use fengqiao_store::sqlx;
use fengqiao_store::testing::tokio;
use fengqiao_store::{Backend, Store, Tx, both_backends};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::codegen::BoxStream;
use tonic::{Code, Request, Response, Status};

type TestResult = std::result::Result<(), String>;

const CONSUMER: &str = "router-inbox";
const TOKEN: &str = "router-service-token";
/// A payload marker that must never show up in errors or incidents.
const SECRET: &str = "当事人张三 13800000000";
const ADMIN: &str = "agencies/justice-bureau";

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn fast_config() -> DeliveryConfig {
    DeliveryConfig {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(80),
        jitter: 0.2,
        max_attempts: 1000,
        push_lease: Duration::from_secs(5),
        call_timeout: Duration::from_secs(2),
        push_batch: 32,
        pull_lease: Duration::from_millis(400),
        pull_poll: Duration::from_millis(20),
        pull_heartbeat: Duration::from_millis(100),
    }
}

fn delivery(store: &Store, config: DeliveryConfig) -> Delivery {
    Delivery::new(store.clone(), config, Arc::new(|| Some(TOKEN.to_string())))
}

async fn setup(store: &Store) -> TestResult {
    fengqiao_router::migrate(store).await.map_err(err)?;
    // The fake receiver's effect table (it shares the test store).
    sqlx::query(
        "CREATE TABLE test_effects (consumer TEXT NOT NULL, message_id TEXT NOT NULL, \
         case_id TEXT NOT NULL, sequence BIGINT NOT NULL)",
    )
    .execute(store.pool())
    .await
    .map_err(err)?;
    Ok(())
}

fn seed_agency(id: &str, push_endpoint: Option<&str>) -> SeedAgency {
    SeedAgency {
        id: id.into(),
        kind: "mediation_committee".into(),
        display_name: format!("测试机构 {id}"),
        region_code: "210203".into(),
        parent: None,
        delivery: Some(
            if push_endpoint.is_some() {
                "push"
            } else {
                "pull"
            }
            .into(),
        ),
        endpoint: push_endpoint.map(String::from),
        actor: Vec::new(),
    }
}

async fn seed(store: &Store, agencies: Vec<SeedAgency>) -> TestResult {
    Agencies::new(store.clone())
        .seed(&SeedFile { agency: agencies }, "http://127.0.0.1:1")
        .await
        .map_err(err)?;
    Ok(())
}

fn envelope(case: &str, to: &str) -> Envelope {
    Envelope {
        case_id: case.into(),
        transfer: format!("transfers/t-{case}"),
        kind: MessageKind::TransferOffered as i32,
        from_agency: "agencies/police-station".into(),
        to_agency: format!("agencies/{to}"),
        payload: SECRET.as_bytes().to_vec(),
        payload_type: "fengqiao.router.v1.TransferMessage".into(),
        ..Default::default()
    }
}

async fn enqueue_committed(store: &Store, case: &str, to: &str) -> Result<Envelope, String> {
    let mut tx = store.write().await.map_err(err)?;
    let e = enqueue(&mut tx, envelope(case, to)).await.map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(e)
}

fn identity(agency: &str, roles: &[&str]) -> Identity {
    Identity {
        agency: agency.into(),
        actor: "tester".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        method: AuthMethod::Token,
        person: None,
    }
}

fn req<T>(agency: &str, roles: &[&str], msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(identity(agency, roles));
    r
}

fn admin<T>(msg: T) -> Request<T> {
    req(ADMIN, &["platform_admin"], msg)
}

fn code_of<T>(r: Result<T, Status>) -> Code {
    match r {
        Ok(_) => panic!("expected an error, got a success"),
        Err(s) => s.code(),
    }
}

fn micros(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map_or(0, fengqiao_router::time::from_timestamp)
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
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(store: &Store, id: &str) -> Result<Option<OutboxStatus>, String> {
    Ok(outbox::get(store, id).await.map_err(err)?.map(|m| m.status))
}

async fn all_delivered(store: &Store, ids: &[String]) -> Result<bool, String> {
    for id in ids {
        if status_of(store, id).await? != Some(OutboxStatus::Delivered) {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn effects(store: &Store) -> Result<Vec<(String, String, i64)>, String> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT message_id, case_id, sequence FROM test_effects WHERE consumer = $1",
    )
    .bind(CONSUMER)
    .fetch_all(store.pool())
    .await
    .map_err(err)?;
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Fake receiver

#[derive(Default)]
struct FakeState {
    /// Answer UNAVAILABLE to everything.
    unavailable: AtomicBool,
    /// Apply and commit, then answer an error (the acknowledgement is lost) this many times.
    fail_after_commit: AtomicU32,
    /// Per message id: answer UNAVAILABLE this many more times before accepting.
    reject: Mutex<HashMap<String, u32>>,
    /// Do not de-duplicate: every call is an effect (to count raw deliveries).
    no_dedupe: bool,
    /// Delay before answering.
    delay: Duration,
    /// Every call, by message id.
    raw_calls: Mutex<HashMap<String, u32>>,
    /// Applied effects in application order: (case, sequence).
    applied: Mutex<Vec<(String, u64)>>,
    /// Authorization headers seen.
    auth: Mutex<Vec<String>>,
}

impl FakeState {
    fn raw(&self) -> HashMap<String, u32> {
        self.raw_calls.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn applied_per_case(&self) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (c, s) in self.applied.lock().map(|v| v.clone()).unwrap_or_default() {
            out.entry(c).or_default().push(s);
        }
        out
    }
}

#[derive(Clone)]
struct FakeReceiver {
    store: Store,
    state: Arc<FakeState>,
}

fn internal<E: std::fmt::Display>(e: E) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl AgencyInboxService for FakeReceiver {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let s = &self.state;
        if let Some(v) = request.metadata().get("authorization")
            && let Ok(mut a) = s.auth.lock()
        {
            a.push(v.to_str().unwrap_or("").to_string());
        }
        let env = request
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope"))?;
        if let Ok(mut raw) = s.raw_calls.lock() {
            *raw.entry(env.message_id.clone()).or_insert(0) += 1;
        }
        if !s.delay.is_zero() {
            tokio::time::sleep(s.delay).await;
        }
        if s.unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable("receiver down"));
        }
        let rejected = s
            .reject
            .lock()
            .is_ok_and(|mut r| match r.get_mut(&env.message_id) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            });
        if rejected {
            return Err(Status::unavailable("not yet"));
        }
        if s.no_dedupe {
            if let Ok(mut a) = s.applied.lock() {
                a.push((env.case_id.clone(), env.sequence));
            }
            return Ok(Response::new(DeliverResponse { duplicate: false }));
        }
        let mut tx = self.store.write().await.map_err(internal)?;
        match delivery::receive_in_order(&mut tx, CONSUMER, &env).await? {
            Receipt::Duplicate => {
                tx.commit().await.map_err(internal)?;
                return Ok(Response::new(DeliverResponse { duplicate: true }));
            }
            Receipt::OutOfOrder => return Err(Receipt::out_of_order_status()),
            Receipt::New => {}
        }
        apply(&mut tx, &env).await?;
        tx.commit().await.map_err(internal)?;
        if let Ok(mut a) = s.applied.lock() {
            a.push((env.case_id.clone(), env.sequence));
        }
        if s.fail_after_commit
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Status::unavailable("connection reset before the answer"));
        }
        Ok(Response::new(DeliverResponse { duplicate: false }))
    }
}

async fn apply(tx: &mut Tx, env: &Envelope) -> Result<(), Status> {
    sqlx::query(
        "INSERT INTO test_effects (consumer, message_id, case_id, sequence) VALUES ($1, $2, $3, $4)",
    )
    .bind(CONSUMER)
    .bind(&env.message_id)
    .bind(&env.case_id)
    .bind(i64::try_from(env.sequence).unwrap_or(0))
    .execute(&mut **tx)
    .await
    .map_err(internal)?;
    Ok(())
}

struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.join.await;
    }
}

async fn serve(listener: TcpListener, fake: FakeReceiver) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let join = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AgencyInboxServiceServer::new(fake))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx.await;
            })
            .await;
    });
    Running {
        stop: Some(tx),
        join,
    }
}

/// A fake receiver listening now; returns its endpoint.
async fn start_fake(fake: FakeReceiver) -> Result<(String, Running), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    Ok((format!("http://{addr}"), serve(listener, fake).await))
}

struct Workers {
    trigger: ShutdownTrigger,
    joins: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    fn start(d: &Delivery, n: usize) -> Workers {
        let (trigger, shutdown) = shutdown_pair();
        let joins = (0..n)
            .map(|_| {
                tokio::spawn(
                    d.clone()
                        .run_push_worker(shutdown.clone(), Duration::from_millis(20)),
                )
            })
            .collect();
        Workers { trigger, joins }
    }

    /// Stops the workers; they must end promptly.
    async fn stop(self) -> TestResult {
        self.trigger.trigger();
        for j in self.joins {
            tokio::time::timeout(Duration::from_secs(3), j)
                .await
                .map_err(|_| "push worker did not stop promptly".to_string())?
                .map_err(err)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Producer

both_backends!(
    enqueue_numbers_cases_and_writes_the_outbox,
    |store: Store| async move {
        setup(&store).await?;
        let a1 = enqueue_committed(&store, "case-a", "court").await?;
        let a2 = enqueue_committed(&store, "case-a", "police").await?;
        let b1 = enqueue_committed(&store, "case-b", "court").await?;
        assert_eq!((a1.sequence, a2.sequence, b1.sequence), (1, 2, 1));
        assert!(uuid::Uuid::parse_str(&a1.message_id).is_ok());
        assert_ne!(a1.message_id, a2.message_id);
        assert!(a1.occurred_at.is_some());

        // A rolled-back enqueue consumes no sequence number (gap-free).
        let mut tx = store.write().await.map_err(err)?;
        let rolled = enqueue(&mut tx, envelope("case-a", "court"))
            .await
            .map_err(err)?;
        assert_eq!(rolled.sequence, 3);
        tx.rollback().await.map_err(err)?;
        assert_eq!(status_of(&store, &rolled.message_id).await?, None);
        let mut given = envelope("case-a", "court");
        given.message_id = "0190a5a4-0000-7000-8000-000000000001".into();
        given.sequence = 99; // replaced
        let mut tx = store.write().await.map_err(err)?;
        let a3 = enqueue(&mut tx, given).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        assert_eq!(a3.sequence, 3);
        assert_eq!(a3.message_id, "0190a5a4-0000-7000-8000-000000000001");

        // The outbox row: destination, per-receiver-and-case ordering key, kind name, payload.
        let stored = outbox::get(&store, &a1.message_id)
            .await
            .map_err(err)?
            .ok_or("stored")?;
        assert_eq!(stored.destination, "agencies/court");
        assert_eq!(stored.ordering_key, "agencies/court|case-a");
        assert_eq!(stored.kind, "MESSAGE_KIND_TRANSFER_OFFERED");
        let decoded =
            <Envelope as prost::Message>::decode(stored.payload.as_slice()).map_err(err)?;
        assert_eq!(decoded, a1);

        // Refusals: missing case, bad receiver, unspecified kind.
        let mut tx = store.write().await.map_err(err)?;
        let mut bad = envelope("", "court");
        bad.to_agency = "court".into();
        bad.kind = 0;
        match enqueue(&mut tx, bad).await {
            Err(Error::Invalid(v)) => {
                let fields: Vec<&str> = v.iter().map(|f| f.field.as_str()).collect();
                assert_eq!(
                    fields,
                    vec!["envelope.case_id", "envelope.to_agency", "envelope.kind"]
                );
            }
            other => return Err(format!("expected Invalid, got {other:?}")),
        }
        tx.rollback().await.map_err(err)?;
        Ok::<_, String>(())
    }
);

// ---------------------------------------------------------------------------------------------
// Receiver helpers

both_backends!(
    receive_in_order_dedupes_and_refuses_stale,
    |store: Store| async move {
        setup(&store).await?;
        let mut e5 = envelope("case-r", "court");
        e5.message_id = "m5".into();
        e5.sequence = 5;
        let mut tx = store.write().await.map_err(err)?;
        assert_eq!(
            delivery::receive_in_order(&mut tx, CONSUMER, &e5)
                .await
                .map_err(err)?,
            Receipt::New
        );
        assert_eq!(
            delivery::receive_in_order(&mut tx, CONSUMER, &e5)
                .await
                .map_err(err)?,
            Receipt::Duplicate
        );
        tx.commit().await.map_err(err)?;

        // A new message with a lower sequence is out of order and leaves no receipt behind.
        let mut e3 = envelope("case-r", "court");
        e3.message_id = "m3".into();
        e3.sequence = 3;
        let mut tx = store.write().await.map_err(err)?;
        assert_eq!(
            delivery::receive_in_order(&mut tx, CONSUMER, &e3)
                .await
                .map_err(err)?,
            Receipt::OutOfOrder
        );
        tx.commit().await.map_err(err)?;
        let mut tx = store.write().await.map_err(err)?;
        assert!(
            delivery::receive_once(&mut tx, "other-consumer", &e3)
                .await
                .map_err(err)?
        );
        assert!(
            delivery::receive_once(&mut tx, CONSUMER, &e3)
                .await
                .map_err(err)?,
            "m3 not kept"
        );
        tx.rollback().await.map_err(err)?;
        assert_eq!(
            Receipt::out_of_order_status().code(),
            Code::FailedPrecondition
        );

        // Gaps are normal: 5 → 9 is in order; another case is independent; other consumers too.
        let mut e9 = envelope("case-r", "court");
        e9.message_id = "m9".into();
        e9.sequence = 9;
        let mut other = envelope("case-s", "court");
        other.message_id = "s1".into();
        other.sequence = 1;
        let mut tx = store.write().await.map_err(err)?;
        assert_eq!(
            delivery::receive_in_order(&mut tx, CONSUMER, &e9)
                .await
                .map_err(err)?,
            Receipt::New
        );
        assert_eq!(
            delivery::receive_in_order(&mut tx, CONSUMER, &other)
                .await
                .map_err(err)?,
            Receipt::New
        );
        assert_eq!(
            delivery::receive_in_order(&mut tx, "another", &e3)
                .await
                .map_err(err)?,
            Receipt::New
        );
        // Invalid envelopes are refused.
        let mut no_id = e9.clone();
        no_id.message_id.clear();
        assert!(matches!(
            delivery::receive_once(&mut tx, CONSUMER, &no_id).await,
            Err(Error::Invalid(_))
        ));
        let mut no_seq = e9.clone();
        no_seq.message_id = "m0".into();
        no_seq.sequence = 0;
        assert!(matches!(
            delivery::receive_in_order(&mut tx, CONSUMER, &no_seq).await,
            Err(Error::Invalid(_))
        ));
        tx.commit().await.map_err(err)?;
        Ok::<_, String>(())
    }
);

// ---------------------------------------------------------------------------------------------
// (a) Receiver down for a while, then up

both_backends!(
    push_survives_receiver_outage_in_case_order,
    |store: Store| async move {
        setup(&store).await?;
        // Reserve a port, then leave it closed: connections are refused until the receiver starts.
        let probe = TcpListener::bind("127.0.0.1:0").await.map_err(err)?;
        let addr = probe.local_addr().map_err(err)?;
        drop(probe);
        seed(
            &store,
            vec![seed_agency("court", Some(&format!("http://{addr}")))],
        )
        .await?;
        let mut ids = Vec::new();
        for round in 0..3 {
            for case in ["case-1", "case-2", "case-3"] {
                let e = enqueue_committed(&store, case, "court").await?;
                assert_eq!(e.sequence, round + 1);
                ids.push(e.message_id);
            }
        }
        let d = delivery(&store, fast_config());
        let workers = Workers::start(&d, 1);

        // Not listening: attempts fail and are rescheduled; nothing is delivered.
        let first = ids[0].clone();
        wait_until("failed attempts", Duration::from_secs(10), || {
            let store = store.clone();
            let first = first.clone();
            async move {
                let m = outbox::get(&store, &first).await.map_err(err)?.ok_or("m")?;
                Ok(m.attempts >= 3)
            }
        })
        .await?;
        let m = outbox::get(&store, &first).await.map_err(err)?.ok_or("m")?;
        assert_eq!(m.status, OutboxStatus::Pending);
        assert!(
            m.last_error
                .as_deref()
                .unwrap_or("")
                .starts_with("UNAVAILABLE")
        );
        assert!(!m.last_error.unwrap_or_default().contains(SECRET));
        // Only the first message of each case was tried.
        let second = outbox::get(&store, &ids[3])
            .await
            .map_err(err)?
            .ok_or("m")?;
        assert_eq!(second.attempts, 0, "case order: later messages wait");

        // Listening but answering UNAVAILABLE for a while.
        let state = Arc::new(FakeState::default());
        state.unavailable.store(true, Ordering::SeqCst);
        let listener = TcpListener::bind(addr).await.map_err(err)?;
        let server = serve(
            listener,
            FakeReceiver {
                store: store.clone(),
                state: state.clone(),
            },
        )
        .await;
        wait_until("calls while unavailable", Duration::from_secs(10), || {
            let state = state.clone();
            async move { Ok(state.raw().values().sum::<u32>() >= 3) }
        })
        .await?;
        assert!(state.applied_per_case().is_empty());

        // Up: everything arrives, once, in per-case order.
        state.unavailable.store(false, Ordering::SeqCst);
        wait_until("all delivered", Duration::from_secs(20), || {
            let store = store.clone();
            let ids = ids.clone();
            async move { all_delivered(&store, &ids).await }
        })
        .await?;
        workers.stop().await?;
        server.stop().await;
        assert_eq!(effects(&store).await?.len(), 9);
        for (case, seqs) in state.applied_per_case() {
            assert_eq!(seqs, vec![1, 2, 3], "{case} applied in order");
        }
        let auth = state.auth.lock().map(|a| a.clone()).unwrap_or_default();
        assert!(!auth.is_empty());
        assert!(auth.iter().all(|a| a == &format!("Bearer {TOKEN}")));
        // Failures below max_attempts never became incidents, and their rows are gone.
        let all_states = vec![
            DeliveryIncidentState::Open as i32,
            DeliveryIncidentState::RetryScheduled as i32,
            DeliveryIncidentState::Resolved as i32,
        ];
        let list = d
            .api(shutdown_pair().1)
            .list_delivery_incidents(admin(ListDeliveryIncidentsRequest {
                states: all_states,
                ..Default::default()
            }))
            .await
            .map_err(err)?
            .into_inner();
        assert!(list.delivery_incidents.is_empty());
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM delivery_incidents")
            .fetch_one(store.pool())
            .await
            .map_err(err)?;
        assert_eq!(rows, 0);
        Ok::<_, String>(())
    }
);

// ---------------------------------------------------------------------------------------------
// (b) Duplicated and reordered deliveries: every effect exactly once

struct CountingHook(AtomicUsize);

#[tonic::async_trait]
impl OnDelivered for CountingHook {
    async fn delivered(&self, _tx: &mut Tx, envelope: &Envelope) -> fengqiao_router::Result<()> {
        assert!(!envelope.message_id.is_empty());
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

both_backends!(
    duplicates_and_retries_have_one_effect,
    |store: Store| async move {
        setup(&store).await?;
        let state = Arc::new(FakeState::default());
        // The first two accepted deliveries lose their answer after the receiver committed.
        state.fail_after_commit.store(2, Ordering::SeqCst);
        let fake = FakeReceiver {
            store: store.clone(),
            state: state.clone(),
        };
        let (endpoint, server) = start_fake(fake.clone()).await?;
        seed(&store, vec![seed_agency("court", Some(&endpoint))]).await?;
        let mut ids = Vec::new();
        let mut x1 = String::new();
        for i in 0..3 {
            for case in ["case-x", "case-y"] {
                let e = enqueue_committed(&store, case, "court").await?;
                if case == "case-x" && i == 0 {
                    x1 = e.message_id.clone();
                }
                ids.push(e.message_id);
            }
        }
        // The first message of case-x is refused three times: the later ones must wait for it.
        if let Ok(mut r) = state.reject.lock() {
            r.insert(x1.clone(), 3);
        }
        let hook = Arc::new(CountingHook(AtomicUsize::new(0)));
        let d = delivery(&store, fast_config()).with_on_delivered(hook.clone());
        let workers = Workers::start(&d, 1);
        wait_until("all delivered", Duration::from_secs(20), || {
            let store = store.clone();
            let ids = ids.clone();
            async move { all_delivered(&store, &ids).await }
        })
        .await?;

        // A delivered message put back to pending (as if its receipt was lost) is delivered again:
        // the receiver answers duplicate and applies nothing.
        let calls_before = state.raw().get(&x1).copied().unwrap_or(0);
        sqlx::query("UPDATE outbox SET status = 'pending', delivered_at = NULL WHERE id = $1")
            .bind(&x1)
            .execute(store.pool())
            .await
            .map_err(err)?;
        d.wake();
        wait_until("redelivered", Duration::from_secs(10), || {
            let store = store.clone();
            let x1 = x1.clone();
            async move { Ok(status_of(&store, &x1).await? == Some(OutboxStatus::Delivered)) }
        })
        .await?;
        workers.stop().await?;
        assert!(state.raw().get(&x1).copied().unwrap_or(0) > calls_before);

        // Two concurrent first deliveries of one envelope (e.g. two routers after a lease expiry):
        // one effect, the other answer is a duplicate.
        let mut env = envelope("case-z", "court");
        env.message_id = "0190a5a4-0000-7000-8000-00000000000z".into();
        env.sequence = 1;
        let (r1, r2) = tokio::join!(
            fake.deliver(Request::new(DeliverRequest {
                envelope: Some(env.clone())
            })),
            fake.deliver(Request::new(DeliverRequest {
                envelope: Some(env.clone())
            })),
        );
        let mut dups = vec![
            r1.map_err(err)?.into_inner().duplicate,
            r2.map_err(err)?.into_inner().duplicate,
        ];
        dups.sort_unstable();
        assert_eq!(dups, vec![false, true]);
        server.stop().await;

        let eff = effects(&store).await?;
        assert_eq!(eff.len(), 7, "every effect exactly once: {eff:?}");
        let mut distinct: Vec<&String> = eff.iter().map(|(m, _, _)| m).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 7);
        for (case, seqs) in state.applied_per_case() {
            let expected = if case == "case-z" {
                vec![1]
            } else {
                vec![1, 2, 3]
            };
            assert_eq!(seqs, expected, "{case} applied in order");
        }
        // 6 first attempts, 2 lost answers, 3 refusals and the reset: at least 12 raw calls.
        let minimum_calls: u32 = 12;
        assert!(
            state.raw().values().sum::<u32>() >= minimum_calls,
            "lost answers, refusals and the reset caused redeliveries"
        );
        // The hook ran once per message, plus once for the message put back to pending.
        assert_eq!(hook.0.load(Ordering::SeqCst), 7);
        Ok::<_, String>(())
    }
);

// ---------------------------------------------------------------------------------------------
// (c) Max attempts → incident; administrators list and retry it

fn incident_states(all: bool) -> Vec<i32> {
    if all {
        vec![
            DeliveryIncidentState::Open as i32,
            DeliveryIncidentState::RetryScheduled as i32,
            DeliveryIncidentState::Resolved as i32,
        ]
    } else {
        Vec::new()
    }
}

async fn list(api: &DeliveryApi, states: Vec<i32>) -> Result<Vec<DeliveryIncident>, String> {
    Ok(api
        .list_delivery_incidents(admin(ListDeliveryIncidentsRequest {
            states,
            ..Default::default()
        }))
        .await
        .map_err(err)?
        .into_inner()
        .delivery_incidents)
}

both_backends!(
    max_attempts_open_an_incident_that_retry_resolves,
    |store: Store| async move {
        setup(&store).await?;
        let state = Arc::new(FakeState::default());
        state.unavailable.store(true, Ordering::SeqCst);
        let (endpoint, server) = start_fake(FakeReceiver {
            store: store.clone(),
            state: state.clone(),
        })
        .await?;
        seed(
            &store,
            vec![
                seed_agency("court", Some(&endpoint)),
                seed_agency("court-2", Some(&endpoint)),
            ],
        )
        .await?;
        let first = enqueue_committed(&store, "case-i", "court").await?;
        let blocked = enqueue_committed(&store, "case-i", "court").await?;
        let other = enqueue_committed(&store, "case-j", "court-2").await?;
        let config = DeliveryConfig {
            max_attempts: 3,
            ..fast_config()
        };
        let d = delivery(&store, config);
        let api = d.api(shutdown_pair().1);
        let workers = Workers::start(&d, 1);
        wait_until("two incidents", Duration::from_secs(10), || {
            let api = api.clone();
            async move { Ok(list(&api, Vec::new()).await?.len() == 2) }
        })
        .await?;
        let incidents = list(&api, Vec::new()).await?;
        let inc = incidents
            .iter()
            .find(|i| i.message_id == first.message_id)
            .ok_or("incident of the first message")?
            .clone();
        assert_eq!(inc.state, DeliveryIncidentState::Open as i32);
        assert_eq!(inc.attempt_count, 3);
        assert_eq!(inc.last_error_code, "UNAVAILABLE");
        assert_eq!(inc.last_error_message, "receiver down");
        assert_eq!(inc.case_id, "case-i");
        assert_eq!(inc.transfer, "transfers/t-case-i");
        assert_eq!(inc.kind, MessageKind::TransferOffered as i32);
        assert_eq!(inc.to_agency, "agencies/court");
        assert_eq!(inc.endpoint, endpoint);
        assert!(inc.name.starts_with("deliveryIncidents/"));
        assert!(micros(&inc.first_failure_time) <= micros(&inc.last_failure_time));
        assert!(inc.next_attempt_time.is_none() && inc.resolve_time.is_none());
        assert!(!format!("{inc:?}").contains(SECRET));
        let dead = outbox::get(&store, &first.message_id)
            .await
            .map_err(err)?
            .ok_or("m")?;
        assert_eq!(dead.status, OutboxStatus::Dead);
        assert!(!dead.last_error.unwrap_or_default().contains(SECRET));
        // The later message of the case waits behind the dead one.
        assert_eq!(
            status_of(&store, &blocked.message_id).await?,
            Some(OutboxStatus::Pending)
        );
        assert_eq!(
            outbox::get(&store, &blocked.message_id)
                .await
                .map_err(err)?
                .ok_or("m")?
                .attempts,
            0
        );

        // Filters and paging.
        let court2 = api
            .list_delivery_incidents(admin(ListDeliveryIncidentsRequest {
                to_agency: "agencies/court-2".into(),
                ..Default::default()
            }))
            .await
            .map_err(err)?
            .into_inner();
        assert_eq!(court2.delivery_incidents.len(), 1);
        assert_eq!(court2.delivery_incidents[0].message_id, other.message_id);
        let page1 = api
            .list_delivery_incidents(admin(ListDeliveryIncidentsRequest {
                page_size: 1,
                ..Default::default()
            }))
            .await
            .map_err(err)?
            .into_inner();
        assert_eq!(page1.delivery_incidents.len(), 1);
        assert!(!page1.next_page_token.is_empty());
        let page2 = api
            .list_delivery_incidents(admin(ListDeliveryIncidentsRequest {
                page_size: 1,
                page_token: page1.next_page_token.clone(),
                ..Default::default()
            }))
            .await
            .map_err(err)?
            .into_inner();
        assert_eq!(page2.delivery_incidents.len(), 1);
        assert!(page2.next_page_token.is_empty());
        assert_ne!(
            page1.delivery_incidents[0].name,
            page2.delivery_incidents[0].name
        );
        assert!(
            micros(&page1.delivery_incidents[0].last_failure_time)
                >= micros(&page2.delivery_incidents[0].last_failure_time),
            "most recently failed first"
        );

        // Refusals.
        let not_admin = req(
            "agencies/court",
            &["mediator"],
            ListDeliveryIncidentsRequest::default(),
        );
        assert_eq!(
            code_of(api.list_delivery_incidents(not_admin).await),
            Code::PermissionDenied
        );
        for bad in [
            ListDeliveryIncidentsRequest {
                states: vec![0],
                ..Default::default()
            },
            ListDeliveryIncidentsRequest {
                to_agency: "court".into(),
                ..Default::default()
            },
            ListDeliveryIncidentsRequest {
                page_token: "%%%".into(),
                ..Default::default()
            },
            ListDeliveryIncidentsRequest {
                page_size: -1,
                ..Default::default()
            },
        ] {
            assert_eq!(
                code_of(api.list_delivery_incidents(admin(bad)).await),
                Code::InvalidArgument
            );
        }
        let retry = |etag: &str, request_id: &str| RetryDeliveryIncidentRequest {
            name: inc.name.clone(),
            etag: etag.into(),
            request_id: request_id.into(),
        };
        assert_eq!(
            code_of(
                api.retry_delivery_incident(req("agencies/court", &[], retry("", "r0")))
                    .await
            ),
            Code::PermissionDenied
        );
        assert_eq!(
            code_of(
                api.retry_delivery_incident(admin(retry("\"999\"", "r1")))
                    .await
            ),
            Code::Aborted
        );
        assert_eq!(
            code_of(api.retry_delivery_incident(admin(retry("", ""))).await),
            Code::InvalidArgument
        );
        assert_eq!(
            code_of(
                api.retry_delivery_incident(admin(RetryDeliveryIncidentRequest {
                    name: "deliveryIncidents/0190a5a4-0000-7000-8000-000000000009".into(),
                    etag: String::new(),
                    request_id: "r2".into(),
                }))
                .await
            ),
            Code::NotFound
        );

        // Retry while the receiver is still down: scheduled, tried, and open again.
        let scheduled = api
            .retry_delivery_incident(admin(retry(&inc.etag, "r3")))
            .await
            .map_err(err)?
            .into_inner()
            .delivery_incident
            .ok_or("incident")?;
        assert_eq!(
            scheduled.state,
            DeliveryIncidentState::RetryScheduled as i32
        );
        assert!(scheduled.next_attempt_time.is_some());
        assert_ne!(scheduled.etag, inc.etag);
        // A replay returns the original answer.
        let replay = api
            .retry_delivery_incident(admin(retry(&inc.etag, "r3")))
            .await
            .map_err(err)?
            .into_inner()
            .delivery_incident
            .ok_or("incident")?;
        assert_eq!(replay, scheduled);
        let name = inc.name.clone();
        wait_until("open again", Duration::from_secs(10), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                Ok(list(&api, Vec::new()).await?.iter().any(|i| {
                    i.name == name
                        && i.state == DeliveryIncidentState::Open as i32
                        && i.attempt_count > 3
                }))
            }
        })
        .await?;

        // Receiver up, retry: delivered, resolved, and the blocked message follows.
        state.unavailable.store(false, Ordering::SeqCst);
        let again = list(&api, Vec::new())
            .await?
            .into_iter()
            .find(|i| i.name == name)
            .ok_or("incident")?;
        assert_eq!(again.state, DeliveryIncidentState::Open as i32);
        // No etag: the worker may be updating the incident concurrently.
        api.retry_delivery_incident(admin(retry("", "r4")))
            .await
            .map_err(err)?;
        let ids = vec![first.message_id.clone(), blocked.message_id.clone()];
        wait_until("delivered after retry", Duration::from_secs(10), || {
            let store = store.clone();
            let ids = ids.clone();
            async move { all_delivered(&store, &ids).await }
        })
        .await?;
        let resolved = list(&api, vec![DeliveryIncidentState::Resolved as i32]).await?;
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].name, name);
        assert!(resolved[0].resolve_time.is_some());
        assert!(resolved[0].next_attempt_time.is_none());
        // Retrying a resolved incident changes nothing.
        let unchanged = api
            .retry_delivery_incident(admin(RetryDeliveryIncidentRequest {
                name: name.clone(),
                etag: String::new(),
                request_id: "r5".into(),
            }))
            .await
            .map_err(err)?
            .into_inner()
            .delivery_incident
            .ok_or("incident")?;
        assert_eq!(unchanged, resolved[0]);
        assert_eq!(
            list(&api, Vec::new()).await?.len(),
            1,
            "court-2's stays open"
        );
        assert_eq!(list(&api, incident_states(true)).await?.len(), 2);
        workers.stop().await?;
        server.stop().await;
        assert_eq!(effects(&store).await?.len(), 2);
        Ok::<_, String>(())
    }
);

// ---------------------------------------------------------------------------------------------
// (d) Pull

type PullStream = BoxStream<PullMessagesResponse>;

async fn open(
    api: &DeliveryApi,
    agency: &str,
    r: PullMessagesRequest,
) -> Result<PullStream, Status> {
    Ok(api.pull_messages(req(agency, &[], r)).await?.into_inner())
}

/// The next envelope within `limit`, skipping heartbeats; `None` on timeout or stream end.
async fn next_envelope(s: &mut PullStream, limit: Duration) -> Result<Option<Envelope>, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.next()).await {
            Err(_) | Ok(None) => return Ok(None),
            Ok(Some(Err(st))) => return Err(format!("stream error: {st:?}")),
            Ok(Some(Ok(PullMessagesResponse {
                envelope: Some(e),
                cursor,
            }))) => {
                assert!(!cursor.is_empty());
                return Ok(Some(e));
            }
            Ok(Some(Ok(_heartbeat))) => {}
        }
    }
}

async fn ack(
    api: &DeliveryApi,
    agency: &str,
    ids: &[&str],
    request_id: &str,
) -> Result<(u32, Vec<String>), String> {
    let r = api
        .acknowledge_messages(req(
            agency,
            &[],
            AcknowledgeMessagesRequest {
                message_ids: ids.iter().map(|s| s.to_string()).collect(),
                request_id: request_id.into(),
            },
        ))
        .await
        .map_err(err)?
        .into_inner();
    Ok((r.acknowledged_count, r.unknown_message_ids))
}

both_backends!(
    pull_streams_redelivers_unacked_and_checks_ownership,
    |store: Store| async move {
        setup(&store).await?;
        seed(
            &store,
            vec![
                seed_agency("mediation", None),
                seed_agency("other-mediation", None),
                seed_agency("court", Some("http://127.0.0.1:9")),
            ],
        )
        .await?;
        let p1 = enqueue_committed(&store, "case-p", "mediation").await?;
        let p2 = enqueue_committed(&store, "case-p", "mediation").await?;
        let q1 = enqueue_committed(&store, "case-q", "mediation").await?;
        let pushed = enqueue_committed(&store, "case-p", "court").await?;
        let d = delivery(&store, fast_config());
        let (trigger, shutdown) = shutdown_pair();
        let api = d.api(shutdown);
        const ME: &str = "agencies/mediation";

        // The push worker never takes pull agencies' messages.
        assert_eq!(d.push_round("w").await.map_err(err)?, 1, "only the court's");

        let mut s = open(
            &api,
            ME,
            PullMessagesRequest {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .map_err(err)?;
        let wait = Duration::from_secs(5);
        let a = next_envelope(&mut s, wait).await?.ok_or("first")?;
        let b = next_envelope(&mut s, wait).await?.ok_or("second")?;
        assert_eq!(
            (a.message_id.as_str(), b.message_id.as_str()),
            (p1.message_id.as_str(), q1.message_id.as_str()),
            "p2 waits for p1's acknowledgement; the court's message is not pulled"
        );
        assert_eq!(a, p1);
        // Not acknowledged: after the lease they come again, on the same stream.
        let again1 = next_envelope(&mut s, wait).await?.ok_or("again")?;
        let again2 = next_envelope(&mut s, wait).await?.ok_or("again")?;
        let mut again = vec![again1.message_id, again2.message_id];
        again.sort();
        let mut expect = vec![p1.message_id.clone(), q1.message_id.clone()];
        expect.sort();
        assert_eq!(again, expect);

        // Another agency cannot acknowledge them (same answer as for an unknown id).
        let (n, unknown) = ack(
            &api,
            "agencies/other-mediation",
            &[&p1.message_id, "nope"],
            "o1",
        )
        .await?;
        assert_eq!(n, 0);
        assert_eq!(unknown, vec![p1.message_id.clone(), "nope".to_string()]);
        assert_eq!(
            status_of(&store, &p1.message_id).await?,
            Some(OutboxStatus::Pending)
        );

        // Acknowledged: p2 follows, and acknowledged ones never come back.
        let (n, unknown) = ack(
            &api,
            ME,
            &[&p1.message_id, &q1.message_id, &p1.message_id],
            "a1",
        )
        .await?;
        assert_eq!((n, unknown.len()), (2, 0));
        assert_eq!(
            ack(
                &api,
                ME,
                &[&p1.message_id, &q1.message_id, &p1.message_id],
                "a1"
            )
            .await?
            .0,
            2,
            "replay"
        );
        assert_eq!(
            ack(&api, ME, &[&p1.message_id], "a2").await?.0,
            0,
            "already acknowledged"
        );
        let c = next_envelope(&mut s, wait).await?.ok_or("p2")?;
        assert_eq!(c.message_id, p2.message_id);
        assert_eq!(c.sequence, 2);
        ack(&api, ME, &[&p2.message_id], "a3").await?;
        assert_eq!(
            next_envelope(&mut s, Duration::from_millis(1000)).await?,
            None
        );
        assert_eq!(
            status_of(&store, &p2.message_id).await?,
            Some(OutboxStatus::Delivered)
        );
        assert_eq!(
            status_of(&store, &pushed.message_id).await?,
            Some(OutboxStatus::Pending)
        );

        // Shutdown ends a following stream with UNAVAILABLE.
        trigger.trigger();
        let end = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                match s.next().await {
                    Some(Ok(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .map_err(|_| "stream did not end on shutdown".to_string())?;
        match end {
            Some(Err(st)) => assert_eq!(st.code(), Code::Unavailable),
            other => return Err(format!("expected UNAVAILABLE, got {other:?}")),
        }
        Ok::<_, String>(())
    }
);

both_backends!(
    pull_without_follow_and_refusals,
    |store: Store| async move {
        setup(&store).await?;
        seed(
            &store,
            vec![
                seed_agency("mediation", None),
                seed_agency("court", Some("http://127.0.0.1:9")),
            ],
        )
        .await?;
        let m1 = enqueue_committed(&store, "case-1", "mediation").await?;
        let m2 = enqueue_committed(&store, "case-2", "mediation").await?;
        let d = delivery(
            &store,
            DeliveryConfig {
                pull_lease: Duration::from_secs(30),
                ..fast_config()
            },
        );
        let api = d.api(shutdown_pair().1);
        const ME: &str = "agencies/mediation";

        // max_unacknowledged = 1, not following: one envelope, then the stream ends.
        let mut s = open(
            &api,
            ME,
            PullMessagesRequest {
                max_unacknowledged: 1,
                ..Default::default()
            },
        )
        .await
        .map_err(err)?;
        let mut got = Vec::new();
        while let Some(r) = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .map_err(|_| "stream did not end".to_string())?
        {
            let r = r.map_err(err)?;
            got.push(r.envelope.ok_or("no heartbeats without follow")?.message_id);
        }
        assert_eq!(got, vec![m1.message_id.clone()]);
        // The ended stream's unacknowledged envelope is streamed again on the next call at once
        // (despite the long lease), whatever the cursor says.
        let mut s = open(&api, ME, PullMessagesRequest::default())
            .await
            .map_err(err)?;
        let mut got = Vec::new();
        while let Some(r) = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .map_err(|_| "stream did not end".to_string())?
        {
            got.push(r.map_err(err)?.envelope.ok_or("envelope")?.message_id);
        }
        assert_eq!(got, vec![m1.message_id.clone(), m2.message_id.clone()]);

        // Refusals.
        assert_eq!(
            code_of(open(&api, "agencies/court", PullMessagesRequest::default()).await),
            Code::FailedPrecondition,
            "PUSH agencies do not pull"
        );
        assert_eq!(
            code_of(open(&api, "agencies/nobody", PullMessagesRequest::default()).await),
            Code::NotFound
        );
        assert_eq!(
            code_of(
                open(
                    &api,
                    ME,
                    PullMessagesRequest {
                        cursor: "not a cursor!".into(),
                        ..Default::default()
                    }
                )
                .await
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code_of(
                api.pull_messages(Request::new(PullMessagesRequest::default()))
                    .await
            ),
            Code::Unauthenticated
        );
        let bad_acks = [
            AcknowledgeMessagesRequest {
                message_ids: Vec::new(),
                request_id: "x1".into(),
            },
            AcknowledgeMessagesRequest {
                message_ids: vec![m1.message_id.clone()],
                request_id: String::new(),
            },
            AcknowledgeMessagesRequest {
                message_ids: vec![String::new()],
                request_id: "x2".into(),
            },
            AcknowledgeMessagesRequest {
                message_ids: vec!["m".into(); 1001],
                request_id: "x3".into(),
            },
        ];
        for bad in bad_acks {
            assert_eq!(
                code_of(api.acknowledge_messages(req(ME, &[], bad)).await),
                Code::InvalidArgument
            );
        }
        // request_id reused with another payload.
        ack(&api, ME, &[&m1.message_id], "k1").await?;
        assert_eq!(
            code_of(
                api.acknowledge_messages(req(
                    ME,
                    &[],
                    AcknowledgeMessagesRequest {
                        message_ids: vec![m2.message_id.clone()],
                        request_id: "k1".into(),
                    }
                ))
                .await
            ),
            Code::AlreadyExists
        );
        Ok::<_, String>(())
    }
);

// ---------------------------------------------------------------------------------------------
// (e) Concurrent push workers

both_backends!(
    concurrent_push_workers_deliver_each_message_once,
    |store: Store| async move {
        setup(&store).await?;
        let state = Arc::new(FakeState {
            no_dedupe: true,
            delay: Duration::from_millis(5),
            ..Default::default()
        });
        let (endpoint, server) = start_fake(FakeReceiver {
            store: store.clone(),
            state: state.clone(),
        })
        .await?;
        seed(&store, vec![seed_agency("court", Some(&endpoint))]).await?;
        let mut ids = Vec::new();
        for i in 0..40 {
            ids.push(
                enqueue_committed(&store, &format!("case-{}", i % 15), "court")
                    .await?
                    .message_id,
            );
        }
        let d = delivery(
            &store,
            DeliveryConfig {
                push_batch: 4,
                ..fast_config()
            },
        );
        let workers = Workers::start(&d, 3);
        wait_until("all delivered", Duration::from_secs(30), || {
            let store = store.clone();
            let ids = ids.clone();
            async move { all_delivered(&store, &ids).await }
        })
        .await?;
        let started = Instant::now();
        workers.stop().await?;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "workers stop promptly"
        );
        server.stop().await;
        let raw = state.raw();
        assert_eq!(raw.len(), 40);
        for id in &ids {
            assert_eq!(raw.get(id).copied(), Some(1), "{id} delivered exactly once");
        }
        for (case, seqs) in state.applied_per_case() {
            let mut sorted = seqs.clone();
            sorted.sort_unstable();
            assert_eq!(seqs, sorted, "{case} in order");
        }
        Ok::<_, String>(())
    }
);

// ---------------------------------------------------------------------------------------------
// (f) A message whose transaction commits late is still delivered

both_backends!(
    late_commit_through_enqueue_is_delivered,
    |store: Store| async move {
        setup(&store).await?;
        let state = Arc::new(FakeState::default());
        let (endpoint, server) = start_fake(FakeReceiver {
            store: store.clone(),
            state: state.clone(),
        })
        .await?;
        seed(&store, vec![seed_agency("court", Some(&endpoint))]).await?;
        let d = delivery(&store, fast_config());
        let (late, early) = match store.backend() {
            Backend::Postgres => {
                // Transaction A enqueues first (lower outbox seq) but commits after B, whose message
                // has already been delivered by then.
                let mut tx_a = store.write().await.map_err(err)?;
                let late = enqueue(&mut tx_a, envelope("case-late", "court"))
                    .await
                    .map_err(err)?;
                let mut tx_b = store.write().await.map_err(err)?;
                let early = enqueue(&mut tx_b, envelope("case-early", "court"))
                    .await
                    .map_err(err)?;
                tx_b.commit().await.map_err(err)?;
                assert_eq!(d.push_round("w").await.map_err(err)?, 1);
                assert_eq!(
                    status_of(&store, &early.message_id).await?,
                    Some(OutboxStatus::Delivered)
                );
                tx_a.commit().await.map_err(err)?;
                let a = outbox::get(&store, &late.message_id)
                    .await
                    .map_err(err)?
                    .ok_or("a")?;
                let b = outbox::get(&store, &early.message_id)
                    .await
                    .map_err(err)?
                    .ok_or("b")?;
                assert!(a.seq < b.seq, "the late one has the lower seq");
                (late, early)
            }
            Backend::Sqlite => {
                // Writers are serialised; check the same observable behaviour sequentially.
                let early = enqueue_committed(&store, "case-early", "court").await?;
                assert_eq!(d.push_round("w").await.map_err(err)?, 1);
                let late = enqueue_committed(&store, "case-late", "court").await?;
                (late, early)
            }
        };
        assert_eq!(d.push_round("w").await.map_err(err)?, 1);
        assert!(all_delivered(&store, &[late.message_id.clone(), early.message_id.clone()]).await?);
        server.stop().await;
        assert_eq!(effects(&store).await?.len(), 2);
        Ok::<_, String>(())
    }
);

// A sanity check that pull streams and push workers honour a `Shutdown` already triggered.
both_backends!(
    worker_exits_on_triggered_shutdown,
    |store: Store| async move {
        setup(&store).await?;
        let d = delivery(&store, fast_config());
        let (trigger, shutdown): (ShutdownTrigger, Shutdown) = shutdown_pair();
        trigger.trigger();
        tokio::time::timeout(
            Duration::from_secs(2),
            d.run_push_worker(shutdown, Duration::from_secs(60)),
        )
        .await
        .map_err(|_| "worker ignored shutdown".to_string())?;
        Ok::<_, String>(())
    }
);
