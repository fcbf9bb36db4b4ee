//! The kill -9 test across three processes (issue #9 "Done when"): router, police-referral and
//! mediation each in its own `fengqiao serve` process, a stream of 警调对接 cases driven through
//! them while a share of calls is cut off by 2–10 ms client deadlines and random processes are
//! killed with SIGKILL (and restarted). The driver retries like a real client: the same
//! `request_id` until it gets an answer. At the end, after the redelivery settles, every
//! referral, every mediation case and every router transfer is compared: zero split records
//! (agency state agrees with the transfer), zero duplicates (one transfer per referral, unique
//! case numbers), zero reverted states (each transfer ends where its last answered step put it).
//! On SQLite and on PostgreSQL.

mod common;
use common::sample_referral;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::mediation::{
    AcceptCaseRequest, DeclineCaseRequest, ListCasesRequest, MediationCase, MediationCaseState,
};
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::policereferral::{
    CreateReferralRequest, DraftTransferRequest, GetReferralRequest, ReferralState,
};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    ApproveTransferRequest, GetTransferRequest, ListTransfersRequest, Transfer, TransferState,
};
use fengqiao_store::testing::TempDir;
use tonic::transport::Channel;
use tonic::{Code, Request};

const ISSUER: &str = "fengqiao-kill9-test";
/// Cases driven through the three processes (at least; driving goes on until every kill).
const CASES: usize = 24;
/// Cases in flight at once.
const DRIVERS: usize = 6;
/// SIGKILLs of random processes during the run.
const KILLS: usize = 6;
/// Longest time one step may take, retries included, before the run fails.
const STEP_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for every record to agree at the end (one redelivery interval and then some).
const SETTLE_LIMIT: Duration = Duration::from_secs(40);

const ROUTER: usize = 0;
const POLICE: usize = 1;
const MEDIATION: usize = 2;
const NAMES: [&str; 3] = ["router", "police-referral", "mediation"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

/// The three processes; restarted in place after a kill; stopped when the test ends.
struct Procs {
    children: [Option<Child>; 3],
    ports: [u16; 3],
    urls: [String; 3],
    dir: std::path::PathBuf,
    agencies_file: std::path::PathBuf,
}

impl Procs {
    fn spawn(&mut self, i: usize) {
        let router = format!("http://127.0.0.1:{}", self.ports[ROUTER]);
        let agencies = self.agencies_file.display().to_string();
        let extra: Vec<&str> = if i == ROUTER {
            vec!["--agencies-file", &agencies]
        } else {
            vec!["--router", &router]
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fengqiao"));
        cmd.args(["serve", "--service", NAMES[i]]);
        let child = common::with_pii_key(&mut cmd, &self.dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.ports[i])])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--database-url", &self.urls[i]])
            .args(["--data-dir", &self.dir.display().to_string()])
            .args([
                "--config",
                &self.dir.join("config.toml").display().to_string(),
            ])
            .args(["--log-format", "json"])
            .args(&extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", NAMES[i]));
        self.children[i] = Some(child);
    }

    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_serving(port: u16) {
    for _ in 0..600 {
        let ok = Command::new(env!("CARGO_BIN_EXE_fengqiao"))
            .args(["healthcheck", "--addr", &format!("http://127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {port} never reported SERVING");
}

/// A tiny deterministic generator (xorshift), seeded per run and printed for reproduction.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Codes a real client retries with the same `request_id`: the call may or may not have
/// happened (cut off, process gone, overloaded, conflict).
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Internal
    )
}

struct Ctx {
    key: SigningKey,
    ports: [u16; 3],
    rng: Mutex<Rng>,
}

impl Ctx {
    fn channel(&self, i: usize) -> Channel {
        fengqiao_kit::client::channel(&format!("http://127.0.0.1:{}", self.ports[i]), None)
            .unwrap_or_else(|e| panic!("channel: {e}"))
    }

    fn caller(&self, agency: &str, actor: &str, roles: &[&str]) -> CallInterceptor {
        CallInterceptor::new(Some(self.key.sign(&fengqiao_kit::auth::claims(
            ISSUER,
            &format!("agencies/{agency}"),
            actor,
            roles,
            3600,
        ))))
    }

    /// A request whose deadline is cut to 2–10 ms on about a third of the calls.
    fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let (cut, ms) = match self.rng.lock() {
            Ok(mut g) => (g.below(3) == 0, 2 + g.below(9)),
            Err(_) => (false, 0),
        };
        r.set_timeout(if cut {
            Duration::from_millis(ms)
        } else {
            Duration::from_secs(5)
        });
        r
    }
}

/// Retries `call` (which must reuse its request id) until it answers something other than a
/// retryable code; panics after [`STEP_LIMIT`].
async fn until_answered<T, F, Fut>(what: &str, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let start = Instant::now();
    loop {
        match call().await {
            Err(s) if retryable(s.code()) => {
                assert!(
                    start.elapsed() < STEP_LIMIT,
                    "{what}: still {:?} after {STEP_LIMIT:?}: {}",
                    s.code(),
                    s.message()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// What the driver did to one case, and where its transfer must end.
#[derive(Debug, Clone)]
struct Driven {
    referral: String,
    case_id: String,
    transfer: String,
    accept: bool,
}

fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One 警调对接 case, intake to the mediation room's answer (accept or decline).
async fn drive(ctx: Arc<Ctx>, n: usize, run: u64, accept: bool) -> Driven {
    let dispatch = ctx.caller("xigang-110", "dispatch-system", &["dispatcher"]);
    let officer = ctx.caller("xigang-bayilu-station", "officer-01", &["officer"]);
    let reviewer = ctx.caller("xigang-110", "reviewer-01", &["command_room_reviewer"]);
    let chief = ctx.caller("xigang-bayilu-station", "duty-chief-01", &["duty_chief"]);
    let room = ctx.caller("xigang-bayilu-mediation-room", "mediator-01", &["mediator"]);

    let id = rid();
    let r = until_answered("CreateReferral", || {
        let mut c =
            PoliceReferralServiceClient::with_interceptor(ctx.channel(POLICE), dispatch.clone());
        let req = ctx.request(CreateReferralRequest {
            referral: Some(sample_referral(&format!("K9{run:x}-{n:05}"))),
            request_id: id.clone(),
        });
        async move { c.create_referral(req).await }
    })
    .await
    .unwrap_or_else(|s| panic!("CreateReferral {n}: {s:?}"))
    .into_inner()
    .referral
    .unwrap_or_default();

    let id = rid();
    let t = until_answered("DraftTransfer", || {
        let mut c =
            PoliceReferralServiceClient::with_interceptor(ctx.channel(POLICE), officer.clone());
        let req = ctx.request(DraftTransferRequest {
            name: r.name.clone(),
            to_agency: "agencies/xigang-bayilu-mediation-room".into(),
            submit: true,
            request_id: id.clone(),
            ..Default::default()
        });
        async move { c.draft_transfer(req).await }
    })
    .await
    .unwrap_or_else(|s| panic!("DraftTransfer {n}: {s:?}"))
    .into_inner()
    .transfer
    .unwrap_or_default();

    for (step, who) in [(0, &reviewer), (1, &chief)] {
        let id = rid();
        until_answered("ApproveTransfer", || {
            let mut c = TransferServiceClient::with_interceptor(ctx.channel(ROUTER), who.clone());
            let req = ctx.request(ApproveTransferRequest {
                name: t.name.clone(),
                step_index: step,
                request_id: id.clone(),
                ..Default::default()
            });
            async move { c.approve_transfer(req).await }
        })
        .await
        .unwrap_or_else(|s| panic!("ApproveTransfer {n} step {step}: {s:?}"));
    }

    // The offer reaches the mediation process (pushed, redelivered after kills).
    let start = Instant::now();
    let case = loop {
        let mut c = MediationServiceClient::with_interceptor(ctx.channel(MEDIATION), room.clone());
        let found = c
            .list_cases(ListCasesRequest {
                case_id: r.case_id.clone(),
                ..Default::default()
            })
            .await
            .ok()
            .and_then(|x| x.into_inner().mediation_cases.into_iter().next());
        if let Some(case) = found {
            break case;
        }
        assert!(
            start.elapsed() < STEP_LIMIT,
            "case {n}: the offer never reached the mediation process"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = rid();
    if accept {
        until_answered("AcceptCase", || {
            let mut c =
                MediationServiceClient::with_interceptor(ctx.channel(MEDIATION), room.clone());
            let req = ctx.request(AcceptCaseRequest {
                name: case.name.clone(),
                request_id: id.clone(),
                ..Default::default()
            });
            async move { c.accept_case(req).await }
        })
        .await
        .unwrap_or_else(|s| panic!("AcceptCase {n}: {s:?}"));
    } else {
        until_answered("DeclineCase", || {
            let mut c =
                MediationServiceClient::with_interceptor(ctx.channel(MEDIATION), room.clone());
            let req = ctx.request(DeclineCaseRequest {
                name: case.name.clone(),
                reason_code: "outside_jurisdiction".into(),
                reason: "纠纷发生地不属于本调解室辖区".into(),
                request_id: id.clone(),
                ..Default::default()
            });
            async move { c.decline_case(req).await }
        })
        .await
        .unwrap_or_else(|s| panic!("DeclineCase {n}: {s:?}"));
    }
    Driven {
        referral: r.name,
        case_id: r.case_id,
        transfer: t.name,
        accept,
    }
}

/// Everything that disagrees, for one case (empty when consistent).
async fn check_case(ctx: &Ctx, d: &Driven, numbers: &mut BTreeMap<String, String>) -> Vec<String> {
    let mut bad = Vec::new();
    let officer = ctx.caller("xigang-bayilu-station", "officer-01", &["officer"]);
    let room = ctx.caller(
        "xigang-bayilu-mediation-room",
        "room-head",
        &["mediation_admin", "mediator"],
    );
    let mut router = TransferServiceClient::with_interceptor(ctx.channel(ROUTER), officer.clone());
    let transfers: Vec<Transfer> = match router
        .list_transfers(ListTransfersRequest {
            case_id: d.case_id.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
    {
        Ok(r) => r.into_inner().transfers,
        Err(s) => return vec![format!("{}: ListTransfers {s:?}", d.case_id)],
    };
    if transfers.len() != 1 {
        bad.push(format!(
            "{}: {} transfers for one referral (duplicates)",
            d.case_id,
            transfers.len()
        ));
    }
    let t = match router
        .get_transfer(GetTransferRequest {
            name: d.transfer.clone(),
        })
        .await
    {
        Ok(r) => r.into_inner().transfer.unwrap_or_default(),
        Err(s) => return vec![format!("{}: GetTransfer {s:?}", d.transfer)],
    };
    let want = if d.accept {
        TransferState::InProgress
    } else {
        TransferState::Declined
    };
    if t.state != want as i32 {
        bad.push(format!(
            "{}: transfer is {:?}, the last answered step made it {want:?} (reverted or lost)",
            d.transfer,
            TransferState::try_from(t.state)
        ));
    }
    let mut police = PoliceReferralServiceClient::with_interceptor(ctx.channel(POLICE), officer);
    match police
        .get_referral(GetReferralRequest {
            name: d.referral.clone(),
        })
        .await
    {
        Ok(r) => {
            let r = r.into_inner().referral.unwrap_or_default();
            if r.transfer != d.transfer {
                bad.push(format!(
                    "{}: referral names transfer {:?}, not {}",
                    d.referral, r.transfer, d.transfer
                ));
            }
            if r.transfer_state != t.state {
                bad.push(format!(
                    "{}: referral says the transfer is {:?}, the router {:?} (split)",
                    d.referral,
                    TransferState::try_from(r.transfer_state),
                    TransferState::try_from(t.state)
                ));
            }
            let want = if d.accept {
                ReferralState::Transferred
            } else {
                ReferralState::Returned
            };
            if r.state != want as i32 {
                bad.push(format!(
                    "{}: referral is {:?}, expected {want:?} for a transfer {:?} (split)",
                    d.referral,
                    ReferralState::try_from(r.state),
                    TransferState::try_from(t.state)
                ));
            }
        }
        Err(s) => bad.push(format!("{}: GetReferral {s:?}", d.referral)),
    }
    let mut mediation = MediationServiceClient::with_interceptor(ctx.channel(MEDIATION), room);
    match mediation
        .list_cases(ListCasesRequest {
            case_id: d.case_id.clone(),
            ..Default::default()
        })
        .await
    {
        Ok(r) => {
            let cases: Vec<MediationCase> = r.into_inner().mediation_cases;
            if cases.len() != 1 {
                bad.push(format!(
                    "{}: {} mediation cases for one transfer",
                    d.case_id,
                    cases.len()
                ));
            }
            if let Some(c) = cases.first() {
                let want = if d.accept {
                    MediationCaseState::Accepted
                } else {
                    MediationCaseState::Declined
                };
                if c.state != want as i32 {
                    bad.push(format!(
                        "{}: mediation case is {:?}, expected {want:?} (split)",
                        c.name,
                        MediationCaseState::try_from(c.state)
                    ));
                }
                if d.accept && c.case_number.is_empty() {
                    bad.push(format!("{}: accepted without a case number", c.name));
                }
                if !c.case_number.is_empty()
                    && let Some(other) = numbers.insert(c.case_number.clone(), c.name.clone())
                {
                    bad.push(format!(
                        "case number {} given to {} and {other} (duplicate)",
                        c.case_number, c.name
                    ));
                }
            }
        }
        Err(s) => bad.push(format!("{}: ListCases {s:?}", d.case_id)),
    }
    bad
}

async fn kill9_run(urls: [String; 3]) {
    let dir = TempDir::new();
    let key = SigningKey::generate("k").expect("key");
    let keys = dir.path().join("keys.json");
    PublicKeyFile {
        keys: vec![key.public_entry()],
    }
    .save(&keys)
    .expect("keys");
    let service_key = dir.path().join("service-key.json");
    key.save(&service_key).expect("service key");
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[auth]\nissuer = \"{ISSUER}\"\npublic_keys_file = \"{}\"\nservice_key_file = \"{}\"\n\
             [limits]\nper_agency_rps = 10000.0\nper_agency_burst = 10000.0\n\
             shutdown_grace_ms = 2000\n[delivery]\npush_timeout_ms = 2000\n",
            keys.display(),
            service_key.display()
        ),
    )
    .expect("config");
    let ports = [free_port(), free_port(), free_port()];
    let mut out = String::new();
    let mut kind = "";
    for line in fengqiao::SAMPLE_AGENCIES.lines() {
        if let Some(k) = line.strip_prefix("kind = ") {
            kind = k.trim_matches('"');
        }
        if line == "endpoint = \"self\"" {
            let port = if kind.starts_with("police") {
                ports[POLICE]
            } else {
                ports[MEDIATION]
            };
            out.push_str(&format!("endpoint = \"http://127.0.0.1:{port}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let agencies_file = dir.path().join("agencies.toml");
    std::fs::write(&agencies_file, out).expect("agencies");
    let procs = Arc::new(Mutex::new(Procs {
        children: [None, None, None],
        ports,
        urls,
        dir: dir.path().to_path_buf(),
        agencies_file,
    }));
    for i in [ROUTER, POLICE, MEDIATION] {
        procs.lock().expect("procs").spawn(i);
        wait_serving(ports[i]).await;
    }

    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9)
        | 1;
    eprintln!("kill9 run seed {run:#x}");
    let ctx = Arc::new(Ctx {
        key,
        ports,
        rng: Mutex::new(Rng(run)),
    });
    let started = Instant::now();

    // SIGKILL a random process every so often, restart it on the same port and store.
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let (procs, done) = (procs.clone(), done.clone());
        let mut rng = Rng(run.rotate_left(17) | 1);
        tokio::spawn(async move {
            let mut kills = Vec::new();
            while kills.len() < KILLS && !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(700 + rng.below(1500))).await;
                let i = usize::try_from(rng.below(3)).unwrap_or(0);
                if let Ok(mut p) = procs.lock() {
                    p.kill9(i);
                    p.spawn(i);
                }
                wait_serving(ports[i]).await;
                kills.push(NAMES[i]);
            }
            kills
        })
    };

    let mut driven = Vec::new();
    let mut next = 0;
    while next < CASES || !killer.is_finished() {
        let mut batch = Vec::new();
        for _ in 0..DRIVERS {
            batch.push(tokio::spawn(drive(ctx.clone(), next, run, next % 3 != 2)));
            next += 1;
        }
        for b in batch {
            driven.push(b.await.expect("driver"));
        }
    }
    done.store(true, Ordering::SeqCst);
    let kills = killer.await.expect("killer");
    eprintln!(
        "kill9: {} cases driven in {:?}, kills: {kills:?}",
        driven.len(),
        started.elapsed()
    );

    // Within one redelivery interval (and a bounded wait beyond it), every record agrees.
    let settle = Instant::now();
    let mut last = Vec::new();
    while settle.elapsed() < SETTLE_LIMIT {
        let mut numbers = BTreeMap::new();
        last.clear();
        for d in &driven {
            last.extend(check_case(&ctx, d, &mut numbers).await);
        }
        if last.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("kill9: settled (or gave up) after {:?}", settle.elapsed());
    let referrals: BTreeSet<&str> = driven.iter().map(|d| d.referral.as_str()).collect();
    assert_eq!(referrals.len(), driven.len(), "one referral per case");
    assert!(
        last.is_empty(),
        "{} disagreements after the run:\n{}",
        last.len(),
        last.join("\n")
    );
    drop(procs);
}

#[test]
fn kill9_three_processes_sqlite() {
    let dir = TempDir::new();
    let urls = ["router", "police", "mediation"].map(|s| dir.sqlite_url(&format!("{s}.db")));
    fengqiao_store::testing::block_on(kill9_run(urls));
}

#[test]
fn kill9_three_processes_postgres() {
    let urls = [(), (), ()].map(|_| fengqiao_store::testing::postgres_url());
    let [Some(a), Some(b), Some(c)] = urls else {
        return;
    };
    fengqiao_store::testing::block_on(kill9_run([a, b, c]));
}
