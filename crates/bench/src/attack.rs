//! The attack phase (issue #14 §3, "Done when": "the benchmark reports peak RSS during an attack
//! phase, below 150 MB"; "memory returns to near idle after the attack ends").
//!
//! Against a suite child of its own (every service, the production limits except the
//! per-agency rate limit, which is raised so that hostile bodies reach the decoders instead of
//! being refused at the door, and a 2 s handshake timeout so that trickling connections are
//! closed within a short run), for a few seconds at once:
//!
//! - random and undecodable bodies over every unary method of the contracts (a raw-bytes codec,
//!   as `tests/tests/hostile.rs` sends them);
//! - error amplification: `GetTransferStatistics` with 250,000 unknown `group_by` values;
//! - `WatchTransfers` streams far beyond the per-agency and total stream limits, held open;
//! - connections trickling the HTTP/2 preface one byte at a time;
//! - oversized headers (a 64 KiB `authorization`, 20 KiB of other metadata);
//! - made-up method names, with and without a token.
//!
//! It reports the requests sent and the answer codes per kind (INTERNAL and UNKNOWN shown
//! always; they should be 0), health probed throughout (latency p50/p99; any probe not
//! answering SERVING fails the phase: that is correctness), and the suite's RSS idle before,
//! its peak during (VmRSS sampled every 20 ms, and VmHWM) and some seconds after. It asserts
//! nothing about speed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Buf as _, BufMut as _, Bytes};
use fengqiao::ServiceName;
use fengqiao_kit::auth::SigningKey;
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::router::agency_service_client::AgencyServiceClient;
use fengqiao_proto::router::statistics_service_client::StatisticsServiceClient;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    GetTransferStatisticsRequest, ListAgenciesRequest, WatchTransfersRequest,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::load::{Figure, Sampler, TargetRow, pct};
use crate::{Args, ChildOpts, ISSUER, SuiteProc, proc_stat};

/// The issue's bound on the suite's peak memory, bytes ("below 150 MB").
const PEAK_RSS_BOUND_BYTES: f64 = 150e6;

/// Hidden flag of the `suite` child: the limits of an attacked server (see the module docs).
pub const CHILD_FLAG: &str = "--attack-limits";

/// The limits of the attacked child: the production defaults, except the per-agency rate
/// (raised: the attack is to reach the decoders, not the rate limiter) and the handshake
/// timeout (2 s instead of 10 s: trickling connections are closed within a short run).
pub fn child_limits() -> fengqiao_kit::config::LimitsConfig {
    fengqiao_kit::config::LimitsConfig {
        per_agency_rps: 1_000_000.0,
        per_agency_burst: 1_000_000.0,
        handshake_timeout_ms: 2_000,
        ..Default::default()
    }
}

// ── Raw calls (as tests/tests/hostile.rs) ─────────────────────────────────────────────────

/// A codec that sends and receives raw message bytes, so the attack can send any body.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// How long the attacker waits for one answer before counting it as `NO_ANSWER`.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls unary `path` with `body` as the message bytes; the answer's code.
async fn raw_call(channel: &Channel, path: &str, body: Vec<u8>, token: Option<&str>) -> Answer {
    let call = async {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut req = Request::new(Bytes::from(body));
        req.set_timeout(Duration::from_secs(5));
        if let Some(t) = token {
            let v: MetadataValue<_> = format!("Bearer {t}")
                .parse()
                .map_err(|_| Status::internal("client: token is not metadata"))?;
            req.metadata_mut().insert("authorization", v);
        }
        let path = PathAndQuery::try_from(path.to_string())
            .map_err(|_| Status::internal("client: bad path"))?;
        grpc.unary(req, path, Raw).await.map(|_| ())
    };
    Answer::of(tokio::time::timeout(CALL_TIMEOUT, call).await)
}

/// What one attacking call got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Code(Code),
    /// No answer within [`CALL_TIMEOUT`].
    None,
}

impl Answer {
    fn of<T>(r: Result<Result<T, Status>, tokio::time::error::Elapsed>) -> Answer {
        match r {
            Ok(Ok(_)) => Answer::Code(Code::Ok),
            Ok(Err(e)) => Answer::Code(e.code()),
            Err(_) => Answer::None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Answer::None => "NO_ANSWER",
            Answer::Code(c) => code_name(c),
        }
    }
}

fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Every unary method of every service of the contracts.
fn unary_methods() -> anyhow::Result<Vec<String>> {
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(
        fengqiao_proto::FILE_DESCRIPTOR_SET,
    )
    .context("the contracts' descriptors")?;
    let mut out = Vec::new();
    for f in &set.file {
        for s in &f.service {
            for m in &s.method {
                if !m.client_streaming() && !m.server_streaming() {
                    out.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
                }
            }
        }
    }
    Ok(out)
}

/// xorshift64*: deterministic, so a run's bodies can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random body: pure noise, noise after a plausible tag, a string field of invalid UTF-8,
/// or nested groups deeper than the decoder's recursion limit.
fn body(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(48) as usize;
    let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    match rng.below(5) {
        0 => {
            // A length-delimited field 1..15 with a wrong or overlong length.
            let field = (1 + rng.below(15)) as u8;
            b.insert(0, rng.next() as u8);
            b.insert(0, (field << 3) | 2);
        }
        1 => {
            let field = (1 + rng.below(15)) as u8;
            let mut s = vec![(field << 3) | 2, 4, 0xff, 0xfe, 0xc3, 0x28];
            s.extend(b);
            b = s;
        }
        2 => {
            // Unknown field 15 as 120 nested groups (prost's recursion limit is 100).
            b = vec![0x7b; 120];
            b.extend(vec![0x7c; 120]);
        }
        _ => {}
    }
    b
}

// ── Tallies ───────────────────────────────────────────────────────────────────────────────

/// Requests and answer codes of one kind of attack.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Kind {
    /// What was sent.
    pub kind: String,
    /// Requests (or connections, or stream opens) sent.
    pub sent: u64,
    /// Answers by gRPC code name (`NO_ANSWER`: none within 10 s).
    pub codes: BTreeMap<String, u64>,
    /// INTERNAL answers (should be 0).
    pub internal: u64,
    /// UNKNOWN answers (should be 0).
    pub unknown: u64,
    /// Answer latency, milliseconds, sorted.
    #[serde(skip)]
    pub lat_ms: Vec<f64>,
    /// Kind-specific facts (largest answer, connections closed, …).
    pub detail: String,
    /// Streams accepted and held open to the attack's end (watch streams).
    pub held: u64,
}

impl Kind {
    fn new(kind: &str) -> Kind {
        Kind {
            kind: kind.into(),
            ..Default::default()
        }
    }
    fn add(&mut self, a: Answer, took: Duration) {
        self.sent += 1;
        *self.codes.entry(a.name().into()).or_default() += 1;
        match a {
            Answer::Code(Code::Internal) => self.internal += 1,
            Answer::Code(Code::Unknown) => self.unknown += 1,
            _ => {}
        }
        self.lat_ms.push(took.as_secs_f64() * 1000.0);
    }
    fn merge(&mut self, o: Kind) {
        self.sent += o.sent;
        for (k, v) in o.codes {
            *self.codes.entry(k).or_default() += v;
        }
        self.internal += o.internal;
        self.unknown += o.unknown;
        self.held += o.held;
        self.lat_ms.extend(o.lat_ms);
    }
    fn codes_text(&self) -> String {
        let mut s: Vec<String> = self.codes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if !self.codes.contains_key("INTERNAL") {
            s.push("INTERNAL 0".into());
        }
        if !self.codes.contains_key("UNKNOWN") {
            s.push("UNKNOWN 0".into());
        }
        s.join(", ")
    }
}

/// The phase's results, also written to `attack-<backend>.json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Attack length, seconds.
    pub attack_secs: f64,
    /// Per kind.
    pub kinds: Vec<Kind>,
    /// Health probes sent during the attack.
    pub probes: u64,
    /// Probes not answered SERVING within 5 s.
    pub probes_failed: u64,
    /// The first failed probe.
    pub probe_failure: Option<String>,
    /// Probe latency p50, ms.
    pub probe_p50_ms: Option<f64>,
    /// Probe latency p99, ms.
    pub probe_p99_ms: Option<f64>,
    /// Suite RSS at idle before the attack, MiB.
    pub rss_idle_mib: f64,
    /// Highest suite VmRSS sampled every 20 ms during the attack, MiB.
    pub rss_peak_mib: f64,
    /// Suite VmHWM (peak since its start; it ran only this phase) at the attack's end, MiB.
    pub hwm_mib: f64,
    /// Seconds waited after the attack before `rss_after_mib`.
    pub settle_secs: u64,
    /// Suite RSS that long after the attack, MiB.
    pub rss_after_mib: f64,
    /// Anonymous part of the suite's RSS (heap, stacks; `RssAnon`) at idle and after, MiB: the
    /// rest is pages of the program file, which the kernel may drop at any time.
    pub anon_idle_mib: f64,
    /// See `anon_idle_mib`.
    pub anon_after_mib: f64,
    /// Suite CPU during the attack, % of one core.
    pub suite_cpu_pct: f64,
    /// Whether the peak stayed below 150 MB (10^6 bytes).
    pub peak_below_150_mb: bool,
}

/// What the phase adds to the report.
#[derive(Default)]
pub struct Out {
    /// Figures.
    pub figs: Vec<Figure>,
    /// Notes.
    pub notes: Vec<String>,
    /// The targets-table row (PostgreSQL).
    pub targets: Vec<TargetRow>,
    /// Set when health stopped answering SERVING (the bench then exits non-zero).
    pub failure: Option<String>,
}

fn token(key: &SigningKey, agency: &str, actor: &str, roles: &[&str]) -> String {
    key.sign(&fengqiao_kit::auth::claims(
        ISSUER,
        &format!("agencies/{agency}"),
        actor,
        roles,
        3600,
    ))
}

/// The sample agencies (watch streams are opened as each of them, to pass both limits).
const AGENCIES: &[&str] = &[
    "xigang-justice-bureau",
    "xigang-110",
    "xigang-bayilu-station",
    "xigang-bayilu-mediation-room",
    "xigang-mediation-committee",
    "xigang-jinyaoshi-mediation-centre",
    "xigang-court",
    "xigang-procuratorate",
    "xigang-admin-dispute-centre",
    "xigang-housing-bureau",
    "xigang-government",
];

/// The attack phase on `backend`: its own throwaway PostgreSQL (or SQLite files) and suite.
pub async fn run(backend: &str, args: &Args) -> anyhow::Result<Out> {
    let pg = if backend == "postgres" {
        Some(
            tokio::task::spawn_blocking(fengqiao_pgtemp::PgCluster::start)
                .await?
                .context("start a throwaway PostgreSQL for the attack")?,
        )
    } else {
        None
    };
    let tmp = std::env::temp_dir().join(format!(
        "fengqiao-bench-attack-{}-{backend}",
        std::process::id()
    ));
    std::fs::create_dir_all(&tmp)?;
    let result = async {
        let mut stores = BTreeMap::new();
        for s in ServiceName::all() {
            let url = match &pg {
                Some(pg) => pg.create_database()?,
                None => format!(
                    "sqlite://{}",
                    tmp.join(format!("{}.db", s.as_str())).display()
                ),
            };
            stores.insert(s, url);
        }
        let key = crate::write_keys(&tmp)?;
        eprintln!("[{backend}] attack: starting a suite with the production limits");
        let suite =
            SuiteProc::start_with(&tmp, &stores, &ChildOpts::default(), &[CHILD_FLAG]).await?;
        let r = attack(backend, args, &suite, &key).await;
        suite.stop();
        r
    }
    .await;
    drop(pg);
    let _ = std::fs::remove_dir_all(&tmp);
    let summary = result?;
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(args.out.join(format!("attack-{backend}.json")), json)?;
    Ok(report(&summary))
}

async fn attack(
    backend: &str,
    args: &Args,
    suite: &SuiteProc,
    key: &SigningKey,
) -> anyhow::Result<Summary> {
    let (dur, settle) = if args.quick {
        // The quiet after covers one period of the suite's memory release (5 s by default).
        (Duration::from_secs(3), 6)
    } else {
        (Duration::from_secs(15), 10)
    };
    let pid = suite.pid;
    let methods = Arc::new(unary_methods()?);
    let all_roles = [
        "platform_admin",
        "statistician",
        "auditor",
        "mediation_admin",
        "mediator",
    ];
    let full = Arc::new(token(key, "xigang-justice-bureau", "attacker", &all_roles));
    let ch = |_: usize| fengqiao_kit::client::channel(&suite.endpoint, None);

    // Idle: one health answer, a second of quiet, then the RSS.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle_mib = proc_stat::rss_kb(pid) as f64 / 1024.0;
    let anon_idle_mib = proc_stat::rss_anon_kb(pid) as f64 / 1024.0;
    eprintln!(
        "[{backend}] attack: {} s over {} unary methods (idle RSS {rss_idle_mib:.1} MiB)",
        dur.as_secs(),
        methods.len()
    );

    let sampler = Sampler::start(pid);
    let t0 = Instant::now();
    let deadline = t0 + dur;
    let stop = Arc::new(AtomicBool::new(false));

    // Health probes on a connection of their own, every 100 ms.
    let probe = {
        let ch = ch(0)?;
        let stop = stop.clone();
        tokio::spawn(async move {
            use tonic_health::pb::health_check_response::ServingStatus;
            let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
            let mut lat = Vec::new();
            let mut failed = 0u64;
            let mut first = None;
            while !stop.load(Ordering::Relaxed) {
                let s = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    }),
                )
                .await;
                let took = s.elapsed();
                match r {
                    Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32 => {
                        lat.push(took.as_secs_f64() * 1000.0);
                    }
                    other => {
                        failed += 1;
                        if first.is_none() {
                            first = Some(match other {
                                Ok(Ok(r)) => format!("status {}", r.get_ref().status),
                                Ok(Err(e)) => format!("{:?}: {}", e.code(), e.message()),
                                Err(_) => "no answer within 5 s".into(),
                            });
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100).saturating_sub(took)).await;
            }
            lat.sort_by(f64::total_cmp);
            (lat, failed, first)
        })
    };

    let mut set: tokio::task::JoinSet<(usize, Kind)> = tokio::task::JoinSet::new();
    const RANDOM: usize = 0;
    const AMPLIFY: usize = 1;
    const WATCH: usize = 2;
    const TRICKLE: usize = 3;
    const HEADERS: usize = 4;
    const MADE_UP: usize = 5;
    let names = [
        format!(
            "random/undecodable bodies over {} unary methods",
            methods.len()
        ),
        "GetTransferStatistics with 250,000 unknown group_by values".to_string(),
        format!(
            "WatchTransfers opens as {} agencies, held open (limits {} per agency, {} in all)",
            AGENCIES.len(),
            child_limits().max_streams_per_agency,
            child_limits().max_streams
        ),
        "connections trickling the HTTP/2 preface (1 byte per 500 ms)".to_string(),
        "oversized headers (64 KiB authorization; 20 KiB other metadata)".to_string(),
        "made-up method names (with and without a token)".to_string(),
    ];

    // Random bodies: 8 clients, each on its own connection.
    for w in 0..8u64 {
        let (ch, methods, full) = (ch(0)?, methods.clone(), full.clone());
        let name = names[RANDOM].clone();
        set.spawn(async move {
            let mut k = Kind::new(&name);
            let mut rng = Rng(0x5eed_f00d_dead_beef ^ (w + 1).wrapping_mul(0x9e37_79b9));
            while Instant::now() < deadline {
                let m = &methods[rng.below(methods.len() as u64) as usize];
                let b = body(&mut rng);
                let s = Instant::now();
                let a = raw_call(&ch, m, b, Some(&full)).await;
                k.add(a, s.elapsed());
            }
            (RANDOM, k)
        });
    }

    // Error amplification: 2 clients, each request ≈ 250 kB.
    let largest = Arc::new(AtomicU64::new(0));
    for _ in 0..2 {
        let ch = ch(0)?;
        let caller = CallInterceptor::new(Some(token(
            key,
            "xigang-justice-bureau",
            "attacker",
            &["statistician", "platform_admin"],
        )));
        let name = names[AMPLIFY].clone();
        let largest = largest.clone();
        set.spawn(async move {
            let mut k = Kind::new(&name);
            let mut stats = StatisticsServiceClient::with_interceptor(ch, caller)
                .max_decoding_message_size(64 * 1024 * 1024);
            let req = GetTransferStatisticsRequest {
                start_time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: 1_700_086_400,
                    nanos: 0,
                }),
                group_by: vec![99; 250_000],
                ..Default::default()
            };
            while Instant::now() < deadline {
                let s = Instant::now();
                let r =
                    tokio::time::timeout(CALL_TIMEOUT, stats.get_transfer_statistics(req.clone()))
                        .await;
                if let Ok(Err(e)) = &r {
                    largest.fetch_max(
                        (e.details().len() + e.message().len()) as u64,
                        Ordering::Relaxed,
                    );
                }
                k.add(Answer::of(r), s.elapsed());
            }
            (AMPLIFY, k)
        });
    }

    // Watch streams: up to 2,000 opens from 32 openers over 16 connections, every accepted
    // stream held until the attack ends (never read: its heartbeats wait in the flow-control
    // window).
    {
        let chans: Arc<Vec<Channel>> = Arc::new((0..16).map(ch).collect::<Result<_, _>>()?);
        let callers: Arc<Vec<CallInterceptor>> = Arc::new(
            AGENCIES
                .iter()
                .map(|a| CallInterceptor::new(Some(token(key, a, "watcher", &["platform_admin"]))))
                .collect(),
        );
        let next = Arc::new(AtomicU64::new(0));
        for _ in 0..32 {
            let (chans, callers, next) = (chans.clone(), callers.clone(), next.clone());
            let name = names[WATCH].clone();
            set.spawn(async move {
                let mut k = Kind::new(&name);
                let mut held = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= 2000 || Instant::now() >= deadline {
                        break;
                    }
                    let mut c = TransferServiceClient::with_interceptor(
                        chans[i % chans.len()].clone(),
                        callers[i % callers.len()].clone(),
                    );
                    let s = Instant::now();
                    let r = tokio::time::timeout(
                        CALL_TIMEOUT,
                        c.watch_transfers(WatchTransfersRequest::default()),
                    )
                    .await;
                    let took = s.elapsed();
                    match r {
                        Ok(Ok(stream)) => {
                            held.push(stream.into_inner());
                            k.add(Answer::Code(Code::Ok), took);
                        }
                        other => k.add(Answer::of(other), took),
                    }
                }
                let now = Instant::now();
                if now < deadline {
                    tokio::time::sleep(deadline - now).await;
                }
                k.held = held.len() as u64;
                drop(held);
                (WATCH, k)
            });
        }
    }

    // Trickling connections: 200, each sending the 24-byte preface one byte per 500 ms.
    {
        let addr = suite
            .endpoint
            .trim_start_matches("http://")
            .parse::<std::net::SocketAddr>()
            .context("suite address")?;
        let name = names[TRICKLE].clone();
        set.spawn(async move {
            let mut k = Kind::new(&name);
            let mut conns = tokio::task::JoinSet::new();
            for _ in 0..200 {
                conns.spawn(async move {
                    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
                    let s0 = Instant::now();
                    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                        return (false, None);
                    };
                    let mut buf = [0u8; 256];
                    let mut i = 0;
                    loop {
                        if Instant::now() >= deadline {
                            return (true, None);
                        }
                        if i < PREFACE.len() && s.write_all(&PREFACE[i..=i]).await.is_err() {
                            return (true, Some(s0.elapsed()));
                        }
                        i += 1;
                        let wait = Duration::from_millis(500)
                            .min(deadline.saturating_duration_since(Instant::now()));
                        match tokio::time::timeout(wait, s.read(&mut buf)).await {
                            Ok(Ok(0)) | Ok(Err(_)) => return (true, Some(s0.elapsed())),
                            Ok(Ok(_)) | Err(_) => {}
                        }
                    }
                });
            }
            let (mut closed, mut refused) = (0u64, 0u64);
            let mut closed_after = Vec::new();
            while let Some(r) = conns.join_next().await {
                match r {
                    Ok((true, Some(t))) => {
                        closed += 1;
                        closed_after.push(t.as_secs_f64() * 1000.0);
                    }
                    Ok((true, None)) => {}
                    Ok((false, _)) | Err(_) => refused += 1,
                }
            }
            closed_after.sort_by(f64::total_cmp);
            k.sent = 200;
            k.detail = format!(
                "{closed} of 200 closed by the server within the attack (median after {} ms), {} still open at its end, {refused} not connected",
                crate::load::num(pct(&closed_after, 0.5)),
                200 - closed - refused
            );
            (TRICKLE, k)
        });
    }

    // Oversized headers: 2 clients alternating the two kinds, each on its own connection.
    for w in 0..2 {
        let ch = ch(0)?;
        let good = token(key, "xigang-110", "reviewer", &[]);
        let name = names[HEADERS].clone();
        set.spawn(async move {
            let mut k = Kind::new(&name);
            let mut bare = AgencyServiceClient::new(ch);
            let huge = format!("Bearer {}", "a".repeat(64 * 1024));
            let pad = "p".repeat(20 * 1024);
            let mut i = w;
            while Instant::now() < deadline {
                let mut req = Request::new(ListAgenciesRequest::default());
                let ok = if i % 2 == 0 {
                    huge.parse()
                        .map(|v| req.metadata_mut().insert("authorization", v))
                        .is_ok()
                } else {
                    format!("Bearer {good}")
                        .parse()
                        .map(|v| req.metadata_mut().insert("authorization", v))
                        .is_ok()
                        && pad
                            .parse()
                            .map(|v| req.metadata_mut().insert("x-padding", v))
                            .is_ok()
                };
                if !ok {
                    break;
                }
                i += 1;
                let s = Instant::now();
                let r = tokio::time::timeout(CALL_TIMEOUT, bare.list_agencies(req)).await;
                k.add(Answer::of(r), s.elapsed());
            }
            (HEADERS, k)
        });
    }

    // Made-up methods: 2 clients, fresh names every call, half with a token.
    for w in 0..2u64 {
        let (ch, full) = (ch(0)?, full.clone());
        let name = names[MADE_UP].clone();
        set.spawn(async move {
            let mut k = Kind::new(&name);
            let mut i = w;
            while Instant::now() < deadline {
                let path = if i % 2 == 0 {
                    format!("/fengqiao.router.v1.TransferService/MadeUp{i}")
                } else {
                    format!("/made.up.Service{i}/Method")
                };
                let tok = (i % 4 < 2).then_some(full.as_str());
                i += 2;
                let s = Instant::now();
                let a = raw_call(&ch, &path, Vec::new(), tok).await;
                k.add(a, s.elapsed());
            }
            (MADE_UP, k)
        });
    }

    let mut kinds: Vec<Kind> = names.iter().map(|n| Kind::new(n)).collect();
    while let Some(r) = set.join_next().await {
        let (i, k) = r.context("an attack task")?;
        let detail = k.detail.clone();
        kinds[i].merge(k);
        if !detail.is_empty() {
            kinds[i].detail = detail;
        }
    }
    let attack_secs = t0.elapsed().as_secs_f64();
    let usage = sampler.finish().await;
    let hwm_mib = proc_stat::hwm_kb(pid) as f64 / 1024.0;
    stop.store(true, Ordering::Relaxed);
    let (probe_lat, probes_failed, probe_failure) = probe.await.context("health probe")?;
    let held = kinds[WATCH].held;
    kinds[WATCH].detail = format!("{held} streams accepted and held open to the end");
    let big = largest.load(Ordering::Relaxed);
    kinds[AMPLIFY].detail = format!("largest answer (message + details) {big} bytes");
    for k in &mut kinds {
        k.lat_ms.sort_by(f64::total_cmp);
    }

    // After: every attacking connection is gone; wait, then the RSS.
    eprintln!("[{backend}] attack over; {settle} s of quiet");
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let rss_after_mib = proc_stat::rss_kb(pid) as f64 / 1024.0;
    let anon_after_mib = proc_stat::rss_anon_kb(pid) as f64 / 1024.0;
    let peak = usage.suite_peak_rss_mb.max(hwm_mib);
    Ok(Summary {
        backend: backend.into(),
        attack_secs,
        kinds,
        probes: probe_lat.len() as u64 + probes_failed,
        probes_failed,
        probe_failure,
        probe_p50_ms: pct(&probe_lat, 0.5),
        probe_p99_ms: pct(&probe_lat, 0.99),
        rss_idle_mib,
        rss_peak_mib: usage.suite_peak_rss_mb,
        hwm_mib,
        settle_secs: settle,
        rss_after_mib,
        anon_idle_mib,
        anon_after_mib,
        suite_cpu_pct: usage.suite_cpu_pct,
        peak_below_150_mb: peak * 1024.0 * 1024.0 < PEAK_RSS_BOUND_BYTES,
    })
}

/// The summary as figures, notes and the targets row.
fn report(s: &Summary) -> Out {
    let mut out = Out::default();
    for k in &s.kinds {
        out.figs.push(Figure {
            figure: format!("attack: {}", k.kind),
            backend: s.backend.clone(),
            unit: "req/s".into(),
            ops: k.sent,
            errors: k.internal + k.unknown,
            secs: s.attack_secs,
            throughput: (!k.lat_ms.is_empty() && s.attack_secs > 0.0)
                .then(|| k.sent as f64 / s.attack_secs),
            p50_ms: pct(&k.lat_ms, 0.5),
            p99_ms: pct(&k.lat_ms, 0.99),
            p999_ms: pct(&k.lat_ms, 0.999),
            target: Some("0 INTERNAL, 0 UNKNOWN".into()),
            met: (!k.lat_ms.is_empty()).then_some(k.internal + k.unknown == 0),
            note: {
                let mut n = if k.lat_ms.is_empty() {
                    String::new()
                } else {
                    format!("answers: {}", k.codes_text())
                };
                if !k.detail.is_empty() {
                    if !n.is_empty() {
                        n.push_str("; ");
                    }
                    n.push_str(&k.detail);
                }
                n.push_str("; errors = INTERNAL + UNKNOWN");
                n
            },
            ..Default::default()
        });
    }
    let probe_ok = s.probes_failed == 0 && s.probes > 0;
    out.figs.push(Figure {
        figure: "attack: health Check probe every 100 ms during the attack".into(),
        backend: s.backend.clone(),
        unit: "probes".into(),
        ops: s.probes - s.probes_failed,
        errors: s.probes_failed,
        secs: s.attack_secs,
        p50_ms: s.probe_p50_ms,
        p99_ms: s.probe_p99_ms,
        target: Some("SERVING throughout".into()),
        met: Some(probe_ok),
        note: s
            .probe_failure
            .as_ref()
            .map(|f| format!("first failure: {f}"))
            .unwrap_or_default(),
        ..Default::default()
    });
    let peak = s.rss_peak_mib.max(s.hwm_mib);
    let after_note = format!(
        "idle before {:.1} MiB; peak VmRSS (20 ms samples) {:.1} MiB, VmHWM {:.1} MiB; {} s after the attack {:.1} MiB ({:+.1} MiB over idle); of which anonymous (heap, stacks) {:.1} MiB idle, {:.1} MiB after ({:+.1} MiB)",
        s.rss_idle_mib,
        s.rss_peak_mib,
        s.hwm_mib,
        s.settle_secs,
        s.rss_after_mib,
        s.rss_after_mib - s.rss_idle_mib,
        s.anon_idle_mib,
        s.anon_after_mib,
        s.anon_after_mib - s.anon_idle_mib
    );
    out.figs.push(Figure {
        figure: "attack: suite peak RSS during the attack".into(),
        backend: s.backend.clone(),
        unit: "MiB".into(),
        secs: s.attack_secs,
        suite_cpu_pct: Some(s.suite_cpu_pct),
        suite_peak_rss_mb: Some(peak),
        target: Some("< 150 MB (issue #14)".into()),
        met: Some(s.peak_below_150_mb),
        note: after_note.clone(),
        ..Default::default()
    });
    out.notes.push(format!(
        "{}: attack phase ({:.1} s, all kinds at once, its own suite with the production limits except the per-agency rate): {after_note}; health probes {} of {} SERVING (p50 {} ms, p99 {} ms); INTERNAL {} and UNKNOWN {} over all kinds",
        s.backend,
        s.attack_secs,
        s.probes - s.probes_failed,
        s.probes,
        crate::load::num(s.probe_p50_ms),
        crate::load::num(s.probe_p99_ms),
        s.kinds.iter().map(|k| k.internal).sum::<u64>(),
        s.kinds.iter().map(|k| k.unknown).sum::<u64>(),
    ));
    if s.backend == "postgres" {
        out.targets.push(TargetRow {
            figure: "peak RSS during the attack phase (issue #14)".into(),
            now: Some(peak),
            unit: "MiB".into(),
            target: "< 150 MB".into(),
            met: Some(s.peak_below_150_mb),
            note: after_note,
        });
    }
    if !probe_ok {
        out.failure = Some(format!(
            "{}: health did not answer SERVING throughout the attack ({} of {} probes failed; first: {})",
            s.backend,
            s.probes_failed,
            s.probes,
            s.probe_failure.as_deref().unwrap_or("none sent")
        ));
    }
    out
}
