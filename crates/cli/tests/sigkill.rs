//! SIGKILL at random moments during a stream of transfers, with restarts on the same store —
//! on SQLite and on PostgreSQL. Afterwards: no acknowledged transfer is lost, none is
//! duplicated (every retry reuses its `request_id`, so idempotency must hand back the first
//! result), every due acceptance clock expired exactly once, and the audit chain verifies.
//!
//! Expiries: route clocks are at least one hour long (`services/router/src/routes.rs` knows
//! no smaller unit than `hour`), so the test cannot wait for a real deadline. Instead, while
//! the router is down after each kill, the test makes the acceptance clock of every APPROVED /
//! DELIVERED transfer due by rewriting the stored clock JSON (`due_at` = one microsecond after
//! `started_at`) and the `next_due` index column directly in the database. The restarted
//! router's timer (every second) then expires them — sometimes while the next kill lands.
//!
//! The kill schedule comes from a small LCG; the seed is printed, and `SIGKILL_SEED=<n>`
//! replays a schedule.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::common::{AgencyRef, DisputeCategory, Party, PartyRole};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    ApproveTransferRequest, CaseSnapshot, CreateTransferRequest, SubmitTransferRequest, Transfer,
    TransferEventType, TransferState,
};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::testing::TempDir;
use fengqiao_store::{Store, StoreConfig};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ISSUER: &str = "fengqiao-sigkill-test";
const STATION: &str = "agencies/xigang-bayilu-station";
const COMMAND: &str = "agencies/xigang-110";
const ROOM: &str = "agencies/xigang-bayilu-mediation-room";
/// Writers driving transfers concurrently.
const WRITERS: usize = 4;
/// Kills while the writers run (one more follows once they stopped).
const KILLS: usize = 4;

type Client = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;

/// A tiny LCG (Knuth's MMIX constants): enough to spread kills, reproducible from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    if let Some(s) = std::env::var("SIGKILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

/// Server processes started for each store URL, so that a failing test does not leave its
/// router running: [`Reaper`] kills them when the test ends, however it ends.
static CHILDREN: std::sync::Mutex<Vec<(String, u32)>> = std::sync::Mutex::new(Vec::new());

/// Kills the server processes of one test's store when dropped.
struct Reaper(String);

impl Drop for Reaper {
    fn drop(&mut self) {
        let pids: Vec<u32> = CHILDREN
            .lock()
            .map(|mut c| {
                let (mine, rest): (Vec<_>, Vec<_>) = c.drain(..).partition(|(u, _)| *u == self.0);
                *c = rest;
                mine.into_iter().map(|(_, p)| p).collect()
            })
            .unwrap_or_default();
        for pid in pids {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn start(url: &str, keys: &std::path::Path, port: u16, dir: &std::path::Path) -> Child {
    let child = spawn_server(url, keys, port, dir);
    if let Ok(mut c) = CHILDREN.lock() {
        c.push((url.to_string(), child.id()));
    }
    child
}

fn spawn_server(url: &str, keys: &std::path::Path, port: u16, dir: &std::path::Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fengqiao"));
    cmd.args(["serve", "--service", "router"]);
    common::with_pii_key(&mut cmd, dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--database-url", url])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--auth-issuer", ISSUER])
        .args(["--auth-public-keys-file", &keys.display().to_string()])
        .args([
            "--agencies-file",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../deploy/dev/agencies.toml"
            ),
        ])
        .args(["--log-format", "json"])
        .args(["--config", &dir.join("config.toml").display().to_string()])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn fengqiao: {e}"))
}

/// Waits until the server answers SERVING; `false` if the process exited first (e.g. the
/// port was not free yet).
async fn wait_serving(port: u16, child: &mut Child) -> bool {
    for _ in 0..400 {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_fengqiao"))
            .args(["healthcheck", "--addr", &format!("http://127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if out.map(|s| s.success()).unwrap_or(false) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on port {port} never reported SERVING");
}

/// Starts the router on `port` and waits for it, retrying a few times if the process exits.
async fn start_serving(
    url: &str,
    keys: &std::path::Path,
    port: u16,
    dir: &std::path::Path,
) -> Child {
    for _ in 0..10 {
        let mut child = start(url, keys, port, dir);
        if wait_serving(port, &mut child).await {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the router would not start on port {port}");
}

/// SIGKILL, then reap the process.
async fn kill(mut child: Child) {
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -KILL failed");
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
}

fn dispute() -> Transfer {
    Transfer {
        route: "routes/police-to-station-mediation".into(),
        to_agency: Some(AgencyRef {
            name: ROOM.into(),
            ..Default::default()
        }),
        case_snapshot: Some(CaseSnapshot {
            category: DisputeCategory::Neighbourhood as i32,
            summary: "楼上住户夜间噪音扰民，双方发生口角，民警到场劝解后移送调解".into(),
            region_code: "210203".into(),
            parties: vec![
                Party {
                    party_id: "p1".into(),
                    role: PartyRole::Applicant as i32,
                    name: "张某".into(),
                    ..Default::default()
                },
                Party {
                    party_id: "p2".into(),
                    role: PartyRole::Respondent as i32,
                    name: "李某".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        note: "110警情，民间纠纷，建议调解".into(),
        ..Default::default()
    }
}

/// Codes a retry can never cure: the router refused the request itself, which after a crash
/// means the retry was not treated as the same request (an idempotency or durability bug).
fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// Sends the same request (same `request_id`) until it is acknowledged.
macro_rules! until_ok {
    ($what:expr, $call:expr) => {{
        let since = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), $call).await {
                Ok(Ok(r)) => break r.into_inner(),
                Ok(Err(s)) if is_final(s.code()) => {
                    panic!("{} refused on retry: {:?} {}", $what, s.code(), s.message())
                }
                Ok(Err(s)) => {
                    assert!(
                        since.elapsed() < Duration::from_secs(30),
                        "{} kept failing: {:?} {}",
                        $what,
                        s.code(),
                        s.message()
                    );
                }
                Err(_) => {
                    assert!(
                        since.elapsed() < Duration::from_secs(30),
                        "{} kept timing out",
                        $what
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

/// What the writers were told.
#[derive(Default)]
struct Acked {
    /// Create `request_id` → the acknowledged transfer name.
    created: BTreeMap<String, String>,
    /// Transfers acknowledged as APPROVED (both steps done).
    approved: BTreeSet<String>,
    /// Create requests sent (acknowledged or not).
    sent: usize,
}

fn client(port: u16, token: String) -> Client {
    let channel =
        fengqiao_kit::client::channel(&format!("http://127.0.0.1:{port}"), None).expect("channel");
    TransferServiceClient::with_interceptor(channel, CallInterceptor::new(Some(token)))
}

/// One writer: creates transfers and drives every other one to APPROVED, so its acceptance
/// clock runs; each step is retried with its own `request_id` until acknowledged.
async fn writer(
    port: u16,
    tokens: [String; 3],
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
) {
    let [officer, reviewer, chief] = tokens;
    let mut officer = client(port, officer);
    let mut reviewer = client(port, reviewer);
    let mut chief = client(port, chief);
    while !stop.load(Ordering::SeqCst) {
        let i = next.fetch_add(1, Ordering::SeqCst);
        let rid = uuid::Uuid::new_v4().to_string();
        if let Ok(mut a) = acked.lock() {
            a.sent += 1;
        }
        let req = CreateTransferRequest {
            transfer: Some(dispute()),
            request_id: rid.clone(),
            submit: false,
        };
        let t = until_ok!("create", officer.create_transfer(req.clone()))
            .transfer
            .expect("transfer");
        if let Ok(mut a) = acked.lock()
            && let Some(prev) = a.created.insert(rid.clone(), t.name.clone())
        {
            panic!("request {rid} acknowledged twice: {prev} and {}", t.name);
        }
        if i % 2 == 1 {
            continue;
        }
        let req = SubmitTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let t = until_ok!("submit", officer.submit_transfer(req.clone()))
            .transfer
            .expect("transfer");
        let req = ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 0,
            comment: "指挥室审核通过".into(),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let t = until_ok!("review", reviewer.approve_transfer(req.clone()))
            .transfer
            .expect("transfer");
        let req = ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 1,
            comment: "同意移送".into(),
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let t = until_ok!("approve", chief.approve_transfer(req.clone()))
            .transfer
            .expect("transfer");
        assert_eq!(
            t.state,
            TransferState::Approved as i32,
            "{} after the last approval",
            t.name
        );
        if let Ok(mut a) = acked.lock() {
            a.approved.insert(t.name.clone());
        }
    }
}

/// Replaces the number after `"key":` in compact JSON.
fn set_json_int(json: &str, key: &str, value: i64) -> String {
    let pat = format!("\"{key}\":");
    let Some(at) = json.find(&pat) else {
        panic!("clock JSON without {key}");
    };
    let start = at + pat.len();
    let end = json[start..]
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .map_or(json.len(), |n| start + n);
    format!("{}{value}{}", &json[..start], &json[end..])
}

fn json_int(json: &str, key: &str) -> i64 {
    let pat = format!("\"{key}\":");
    let start = json.find(&pat).map(|at| at + pat.len()).expect("key");
    let end = json[start..]
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .map_or(json.len(), |n| start + n);
    json[start..end].parse().expect("integer")
}

/// With the router down: makes the acceptance clock of every transfer waiting for acceptance
/// due (see the module docs). Returns the transfers made due and how many had expired.
async fn make_due(url: &str) -> (BTreeSet<String>, i64) {
    let store = Store::connect(StoreConfig::new(url))
        .await
        .expect("connect");
    let expired: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfers WHERE state = $1")
        .bind(TransferState::Expired as i64)
        .fetch_one(store.pool())
        .await
        .expect("count");
    // The acceptance clock starts on delivery, and nothing here receives the offers: deliver
    // the approved ones as the router does on a receipt (its process is down meanwhile).
    let transfers = fengqiao_router::transfers::Transfers::new(
        store.clone(),
        std::sync::Arc::new(fengqiao_router::routes::RouteCatalog::load(None).expect("routes")),
        std::sync::Arc::new(fengqiao_router::clock::HolidayCalendar::builtin().clone()),
    );
    let approved = sqlx::query("SELECT id, to_agency FROM transfers WHERE state = $1")
        .bind(TransferState::Approved as i64)
        .fetch_all(store.pool())
        .await
        .expect("select approved");
    for row in approved {
        let id: String = row.try_get("id").expect("id");
        let to: String = row.try_get("to_agency").expect("to_agency");
        let mut tx = store.write().await.expect("write");
        transfers
            .note_delivered_in(&mut tx, &format!("transfers/{id}"), &to)
            .await
            .expect("deliver");
        tx.commit().await.expect("commit");
    }
    drop(transfers);
    let rows = sqlx::query(
        "SELECT id, acceptance_clock FROM transfers \
         WHERE state IN ($1, $2) AND acceptance_clock IS NOT NULL",
    )
    .bind(TransferState::Approved as i64)
    .bind(TransferState::Delivered as i64)
    .fetch_all(store.pool())
    .await
    .expect("select");
    let mut due = BTreeSet::new();
    for row in rows {
        let id: String = row.try_get("id").expect("id");
        let clock: String = row.try_get("acceptance_clock").expect("clock");
        let due_at = json_int(&clock, "started_at") + 1;
        let clock = set_json_int(&clock, "due_at", due_at);
        sqlx::query("UPDATE transfers SET acceptance_clock = $1, next_due = $2 WHERE id = $3")
            .bind(clock)
            .bind(due_at)
            .bind(id.clone())
            .execute(store.pool())
            .await
            .expect("update");
        due.insert(format!("transfers/{id}"));
    }
    store.close().await;
    (due, expired)
}

async fn kill_during_transfers(url: String) {
    let seed = seed();
    eprintln!("sigkill: seed {seed} (replay with SIGKILL_SEED={seed})");
    let mut rng = Lcg(seed);

    let dir = TempDir::new();
    let key = SigningKey::generate("k").expect("key");
    let keys = dir.path().join("keys.json");
    PublicKeyFile {
        keys: vec![key.public_entry()],
    }
    .save(&keys)
    .expect("keys");
    // The stream comes from one agency: lift its rate limit (the limiter has its own tests).
    std::fs::write(
        dir.path().join("config.toml"),
        "[limits]\nper_agency_rps = 100000.0\nper_agency_burst = 100000.0\n",
    )
    .expect("config");
    let sign = |agency: &str, actor: &str, role: &str| {
        key.sign(&fengqiao_kit::auth::claims(
            ISSUER,
            agency,
            actor,
            &[role],
            600,
        ))
    };
    let tokens = [
        sign(STATION, "officer-01", "officer"),
        sign(COMMAND, "reviewer-01", "command_room_reviewer"),
        sign(STATION, "duty-chief-01", "duty_chief"),
    ];

    let port = free_port();
    let mut child = start_serving(&url, &keys, port, dir.path()).await;

    let acked = Arc::new(Mutex::new(Acked::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            tokio::spawn(writer(
                port,
                tokens.clone(),
                next.clone(),
                stop.clone(),
                acked.clone(),
            ))
        })
        .collect();

    // Kill at random moments; the timer's first pass comes a second after a start, so some
    // kills land before it, some during or after an expiry pass.
    let mut due = BTreeSet::new();
    for k in 0..KILLS {
        let wait = rng.between(300, 1_600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        kill(child).await;
        let (made, expired) = make_due(&url).await;
        let n = acked.lock().map(|a| a.created.len()).unwrap_or(0);
        eprintln!(
            "sigkill: kill {} after {wait} ms ({n} creates acknowledged, {expired} expired, \
             {} clocks made due)",
            k + 1,
            made.len()
        );
        due.extend(made);
        child = start_serving(&url, &keys, port, dir.path()).await;
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    // One last kill once the writers are done, so every approved transfer is made due.
    kill(child).await;
    due.extend(make_due(&url).await.0);
    let child = start_serving(&url, &keys, port, dir.path()).await;

    // Settle: the timer expires everything that is due.
    let store = Store::connect(StoreConfig::new(url.as_str()))
        .await
        .expect("connect");
    let settled = Instant::now();
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM transfers WHERE state IN ($1, $2)")
                .bind(TransferState::Approved as i64)
                .bind(TransferState::Delivered as i64)
                .fetch_one(store.pool())
                .await
                .expect("count");
        if waiting == 0 {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(15),
            "seed {seed}: {waiting} due transfers never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let a few more timer passes run: a second expiry would show up now.
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let acked = acked
        .lock()
        .map(|mut a| std::mem::take(&mut *a))
        .unwrap_or_default();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM transfers")
        .fetch_all(store.pool())
        .await
        .expect("ids");
    let stored: BTreeSet<String> = ids.iter().map(|id| format!("transfers/{id}")).collect();
    assert_eq!(stored.len(), ids.len());
    let acked_names: BTreeSet<String> = acked.created.values().cloned().collect();
    eprintln!(
        "sigkill: {} creates sent, {} acknowledged, {} stored, {} approved, {} made due",
        acked.sent,
        acked_names.len(),
        stored.len(),
        acked.approved.len(),
        due.len()
    );
    assert!(acked_names.len() >= 20, "seed {seed}: too few transfers");
    assert_eq!(
        acked_names.len(),
        acked.created.len(),
        "seed {seed}: two requests acknowledged with the same transfer"
    );
    let lost: Vec<_> = acked_names.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "seed {seed}: acknowledged but lost: {lost:?}"
    );
    // Every create request was retried until acknowledged: anything more is a duplicate.
    assert_eq!(acked.sent, acked.created.len());
    let extra: Vec<_> = stored.difference(&acked_names).collect();
    assert!(
        extra.is_empty(),
        "seed {seed}: transfers nobody was acknowledged (duplicates of a retried request): {extra:?}"
    );

    // Events: no (transfer, event type) twice — every retried step happened once — one
    // CREATED per transfer, and exactly one EXPIRED for each transfer whose clock was due.
    let rows = sqlx::query(
        "SELECT transfer_id, event_type, COUNT(*) AS n FROM transfer_events \
         GROUP BY transfer_id, event_type",
    )
    .fetch_all(store.pool())
    .await
    .expect("events");
    let mut per: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for r in rows {
        let id: String = r.try_get("transfer_id").expect("transfer_id");
        let ty: i64 = r.try_get("event_type").expect("event_type");
        let n: i64 = r.try_get("n").expect("n");
        per.insert((format!("transfers/{id}"), ty), n);
    }
    let twice: Vec<_> = per.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: events recorded twice: {twice:?}"
    );
    let created = TransferEventType::Created as i64;
    let expired = TransferEventType::Expired as i64;
    for name in &stored {
        assert_eq!(
            per.get(&(name.clone(), created)),
            Some(&1),
            "seed {seed}: {name} has no CREATED event"
        );
    }
    let missing: Vec<_> = acked
        .approved
        .iter()
        .filter(|n| !due.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: approved transfers never waiting for acceptance: {missing:?}"
    );
    for name in &due {
        assert_eq!(
            per.get(&(name.clone(), expired)),
            Some(&1),
            "seed {seed}: {name} was due but did not expire exactly once"
        );
    }
    let expired_total: i64 = per
        .iter()
        .filter(|((_, ty), _)| *ty == expired)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        expired_total as usize,
        due.len(),
        "seed {seed}: expiries of transfers that were never due"
    );
    let states: Vec<(String, i64)> = sqlx::query("SELECT id, state FROM transfers")
        .fetch_all(store.pool())
        .await
        .expect("states")
        .iter()
        .map(|r| {
            (
                format!("transfers/{}", r.try_get::<String, _>("id").expect("id")),
                r.try_get::<i64, _>("state").expect("state"),
            )
        })
        .collect();
    for (name, state) in states {
        if due.contains(&name) {
            assert_eq!(
                state,
                TransferState::Expired as i64,
                "seed {seed}: {name} is not EXPIRED"
            );
        }
    }

    let report = fengqiao_router::audit::verify(&store)
        .await
        .expect("verify");
    assert!(
        report.ok,
        "seed {seed}: audit chain broken at {:?}: {}",
        report.first_broken_seq, report.detail
    );
    store.close().await;
    kill(child).await;
}

#[test]
fn sigkill_during_transfers_loses_and_duplicates_nothing_sqlite() {
    let dir = TempDir::new();
    let url = dir.sqlite_url("router.db");
    let _reaper = Reaper(url.clone());
    fengqiao_store::testing::block_on(async move {
        kill_during_transfers(url).await;
    });
}

#[test]
fn sigkill_during_transfers_loses_and_duplicates_nothing_postgres() {
    let Some(url) = fengqiao_store::testing::postgres_url() else {
        return;
    };
    let _reaper = Reaper(url.clone());
    fengqiao_store::testing::block_on(async move {
        kill_during_transfers(url).await;
    });
}
