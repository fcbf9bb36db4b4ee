//! `fengqiao-bench`: a bounded, loopback-only benchmark of the Fengqiao suite.
//!
//! For each backend (SQLite files, and databases on a throwaway PostgreSQL cluster started with
//! `pg_stat_statements`) it starts the whole suite as a separate child process (this same
//! binary, hidden `suite` subcommand), then measures in one run the ceilings — from outside the
//! project (`pgbench -M prepared` on the same cluster, a bare tonic server in a child, hidden
//! `echo` subcommand) and its own (health check through the middleware, the store's durable
//! single-row insert) — next to intake, full 警调对接 cycles, the new services' cycles, reads
//! at growing table sizes, watch-stream delivery delay, the router as one and as three
//! processes (PostgreSQL), the suite's footprint, and an attack phase (hostile clients at once
//! against a suite of its own: answer codes, health, peak RSS; see `attack.rs`); a cost table
//! per step (CPU of the suite and of PostgreSQL, statements, transactions, gRPC calls) and the
//! targets of issue #17.
//! Results go to `results.json` and `results.md`. It asserts nothing about speed. See the README
//! "Performance" section and docs/performance.md.

mod attack;
mod cost;
mod flows;
mod load;
mod outside;
mod proc_stat;
mod scenario;
mod topology;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use fengqiao::{SAMPLE_AGENCIES, ServiceName, Suite, SuiteSpec};
use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::config::Config;

/// Token issuer shared by the bench and the suite it starts.
pub const ISSUER: &str = "fengqiao-bench";

#[derive(Parser)]
#[command(
    name = "fengqiao-bench",
    about = "Loopback benchmark of the Fengqiao suite (SQLite and throwaway PostgreSQL)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    args: Args,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: run the suite in this process (started by the bench itself).
    #[command(hide = true)]
    Suite {
        /// Data directory holding the key files.
        #[arg(long)]
        data_dir: PathBuf,
        /// `service=url`, once per service.
        #[arg(long = "store")]
        stores: Vec<String>,
        /// The router as seen by the agency services of this process (when it runs none).
        #[arg(long)]
        router: Option<String>,
        /// Agency seed file (default: the sample agencies, every endpoint this process).
        #[arg(long)]
        agencies_file: Option<PathBuf>,
        /// Listen address (default 127.0.0.1:0).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The limits of an attacked server (the attack phase).
        #[arg(long)]
        attack_limits: bool,
    },
    /// Internal: a bare tonic server (health service only, no middleware) for the echo
    /// ceiling.
    #[command(hide = true)]
    Echo,
}

/// Which backends to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// SQLite only.
    Sqlite,
    /// PostgreSQL only.
    Postgres,
    /// Both, SQLite first.
    Both,
}

/// A measured phase (the ceilings and the footprint are always measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// 110 intake.
    Intake,
    /// Full 警调对接 cycles.
    Cycle,
    /// 1,000 watch streams.
    Watchers,
    /// Reads at growing table sizes.
    Reads,
    /// The new services' cycles: court diversion, judicial confirmation, administrative
    /// dispute.
    Services,
    /// Router as one and as three processes on one PostgreSQL (PostgreSQL only).
    Replicas,
    /// Hostile clients at once against a suite of its own with the production limits: peak
    /// RSS, answer codes, health throughout (issue #14).
    Attack,
}

/// Run options.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Short run (under a minute): fewer seconds, smaller tables, fewer watchers.
    #[arg(long)]
    pub quick: bool,
    /// Backends to measure.
    #[arg(long, value_enum, default_value = "both")]
    pub backend: BackendArg,
    /// Seconds per throughput measurement (default 5, quick 2).
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Concurrent clients (default 64, quick 16).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Concurrent watch streams (default 1000, quick 100).
    #[arg(long)]
    pub watchers: Option<usize>,
    /// Largest table size for the read figures (default 1000000, quick 10000); a size whose
    /// estimated load time exceeds --load-budget-secs is skipped and reported as skipped.
    #[arg(long)]
    pub max_transfers: Option<u64>,
    /// Wall-clock budget for bulk-loading synthetic transfers per backend.
    #[arg(long, default_value_t = 45)]
    pub load_budget_secs: u64,
    /// Output directory.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Measure only these phases (comma-separated); default all. Ceilings and footprint are
    /// always measured.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Phase>,
}

impl Args {
    /// Whether `phase` is to be measured.
    pub fn runs(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
    }
    fn duration(&self) -> Duration {
        Duration::from_secs(
            self.duration_secs
                .unwrap_or(if self.quick { 2 } else { 5 })
                .max(1),
        )
    }
    fn clients(&self) -> usize {
        self.clients
            .unwrap_or(if self.quick { 16 } else { 64 })
            .max(1)
    }
    fn watchers(&self) -> usize {
        self.watchers
            .unwrap_or(if self.quick { 100 } else { 1000 })
            .max(1)
    }
    fn sizes(&self) -> Vec<u64> {
        let max = self
            .max_transfers
            .unwrap_or(if self.quick { 10_000 } else { 1_000_000 });
        let base: &[u64] = if self.quick {
            &[1_000, 10_000]
        } else {
            &[10_000, 100_000, 1_000_000]
        };
        base.iter().copied().filter(|&n| n <= max).collect()
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fengqiao-bench: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let res = match cli.command {
        Some(Cmd::Suite {
            data_dir,
            stores,
            router,
            agencies_file,
            listen,
            attack_limits,
        }) => rt.block_on(child_suite(
            data_dir,
            stores,
            router,
            agencies_file,
            listen,
            attack_limits,
        )),
        Some(Cmd::Echo) => rt.block_on(outside::child_echo()),
        None => rt.block_on(bench(cli.args)),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fengqiao-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn service_by_name(s: &str) -> Option<ServiceName> {
    s.parse().ok()
}

/// The suite as the child process runs it: every service, sample agencies, the bench's key,
/// limits raised so that the per-agency rate limiter and the in-flight cap do not decide the
/// figures (each bench client calls as one of a handful of agencies).
async fn child_suite(
    data_dir: PathBuf,
    stores: Vec<String>,
    router: Option<String>,
    agencies_file: Option<PathBuf>,
    listen: String,
    attack_limits: bool,
) -> anyhow::Result<()> {
    let mut map = BTreeMap::new();
    for s in &stores {
        let (svc, url) = s.split_once('=').context("--store takes service=url")?;
        let name = service_by_name(svc).with_context(|| format!("unknown service {svc}"))?;
        map.insert(name, url.to_string());
    }
    let mut config = Config::default();
    config.auth.issuer = ISSUER.into();
    config.auth.public_keys_file = Some(data_dir.join("public-keys.json"));
    config.auth.service_key_file = Some(data_dir.join("service-key.json"));
    config.data_dir = data_dir.clone();
    config.pii.key_file = Some(data_dir.join("pii-keys.json"));
    config.install_pii_keys(None)?;
    config.listen = listen;
    config.peers.router = router;
    config.admin_listen = "127.0.0.1:0".into();
    config.limits.per_agency_rps = 1_000_000.0;
    config.limits.per_agency_burst = 1_000_000.0;
    config.limits.max_concurrency = 4096;
    // The watchers phase opens --watchers streams as one agency: the stream limits (512 in
    // all, 64 per agency by default) would refuse most of them and decide the figure.
    config.limits.max_streams = 8192;
    config.limits.max_streams_per_agency = 8192;
    if attack_limits {
        config.limits = attack::child_limits();
    }
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    let admin = tokio::net::TcpListener::bind(&config.admin_listen).await?;
    let seed = match &agencies_file {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("{}", p.display()))?,
        None => SAMPLE_AGENCIES.to_string(),
    };
    let spec = SuiteSpec {
        config,
        services: map.keys().copied().collect(),
        stores: map,
        agency_seed: Some(seed),
        extra_modules: Vec::new(),
    };
    let suite = Suite::start(spec, listener, admin).await?;
    println!("ADDR {} ADMIN {}", suite.server.addr, suite.admin_addr);
    // Runs until the bench closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    suite.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// A suite child process started by the bench.
pub struct SuiteProc {
    child: Child,
    /// Its pid.
    pub pid: u32,
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    /// Its admin HTTP address (`/metrics`).
    pub admin: String,
    /// The router's store URL (for bulk loading), when it runs the router.
    pub router_url: String,
    /// Spawn → first SERVING health answer.
    pub ready: Duration,
}

/// Extra settings of a suite child.
#[derive(Debug, Default, Clone)]
pub struct ChildOpts {
    /// `peers.router` of its agency services.
    pub router: Option<String>,
    /// Agency seed file.
    pub agencies_file: Option<PathBuf>,
    /// Listen address.
    pub listen: Option<String>,
}

/// A fresh signing key, saved in `dir` as the key files the suite children read.
pub fn write_keys(dir: &Path) -> anyhow::Result<SigningKey> {
    let key = SigningKey::generate("bench-1")?;
    PublicKeyFile {
        keys: vec![key.public_entry()],
    }
    .save(&dir.join("public-keys.json"))?;
    key.save(&dir.join("service-key.json"))?;
    // One personal-information key for the whole run: the children seal with it, and this
    // process (which opens the router's store itself) reads with it.
    static PII: std::sync::OnceLock<fengqiao_store::seal::KeyFile> = std::sync::OnceLock::new();
    let pii = match PII.get() {
        Some(f) => f.clone(),
        None => {
            let f = fengqiao_store::seal::KeyFile::generate("bench-1")?;
            fengqiao_store::seal::install(fengqiao_store::seal::Keyring::new(&f)?);
            PII.get_or_init(|| f).clone()
        }
    };
    pii.save(&dir.join("pii-keys.json"), true)?;
    Ok(key)
}

impl SuiteProc {
    /// Starts a suite child with the services of `stores`, using the key files in `dir` (see
    /// [`write_keys`]).
    pub async fn start(
        dir: &Path,
        stores: &BTreeMap<ServiceName, String>,
        opts: &ChildOpts,
    ) -> anyhow::Result<Self> {
        Self::start_with(dir, stores, opts, &[]).await
    }

    /// [`SuiteProc::start`] with further arguments of the hidden `suite` subcommand.
    pub async fn start_with(
        dir: &Path,
        stores: &BTreeMap<ServiceName, String>,
        opts: &ChildOpts,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("suite").arg("--data-dir").arg(dir).args(extra);
        for (s, url) in stores {
            cmd.arg("--store").arg(format!("{}={url}", s.as_str()));
        }
        if let Some(r) = &opts.router {
            cmd.arg("--router").arg(r);
        }
        if let Some(f) = &opts.agencies_file {
            cmd.arg("--agencies-file").arg(f);
        }
        if let Some(l) = &opts.listen {
            cmd.arg("--listen").arg(l);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let t0 = Instant::now();
        let mut child = cmd.spawn().context("spawn the suite")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("suite stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let n = r.read_line(&mut line);
            // Keep draining so that the child never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = r.read_to_end(&mut sink);
            });
            n.map(|_| line)
        })
        .await??;
        let Some((addr, admin)) = line
            .trim()
            .strip_prefix("ADDR ")
            .and_then(|l| l.split_once(" ADMIN "))
        else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the suite did not start (said {:?})", line.trim());
        };
        let admin = admin.to_string();
        let endpoint = format!("http://{addr}");
        let channel = fengqiao_kit::client::channel(&endpoint, None)?;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        loop {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if let Ok(r) = r
                && r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("the suite never reported SERVING");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = t0.elapsed();
        let router_url = stores
            .get(&ServiceName::Router)
            .cloned()
            .unwrap_or_default();
        Ok(SuiteProc {
            child,
            pid,
            endpoint,
            admin,
            router_url,
            ready,
        })
    }

    /// Closes stdin (graceful shutdown), waits up to 10 s, then kills this child.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("output directory {}", args.out.display()))?;
    let started = Instant::now();
    let machine = proc_stat::machine();
    eprintln!(
        "fengqiao-bench: {} cores, {}; quick={} clients={} duration={}s",
        machine.cores,
        machine.cpu_model,
        args.quick,
        args.clients(),
        args.duration().as_secs()
    );
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let mut costs = Vec::new();
    let mut targets = Vec::new();
    let mut failures = Vec::new();
    let backends: &[&str] = match args.backend {
        BackendArg::Sqlite => &["sqlite"],
        BackendArg::Postgres => &["postgres"],
        BackendArg::Both => &["sqlite", "postgres"],
    };
    for &backend in backends {
        match scenario::run_backend(backend, &args).await {
            Ok(out) => {
                figures.extend(out.figs);
                notes.extend(out.notes);
                costs.extend(out.costs);
                targets.extend(out.targets);
            }
            Err(e) => {
                eprintln!("fengqiao-bench: {backend}: {e:#}");
                notes.push(format!("{backend}: run failed: {e:#}"));
            }
        }
        if args.runs(Phase::Attack) {
            match attack::run(backend, &args).await {
                Ok(out) => {
                    figures.extend(out.figs);
                    notes.extend(out.notes);
                    targets.extend(out.targets);
                    failures.extend(out.failure);
                }
                Err(e) => {
                    eprintln!("fengqiao-bench: {backend}: attack: {e:#}");
                    notes.push(format!("{backend}: attack phase failed: {e:#}"));
                    failures.push(format!("{backend}: attack phase: {e:#}"));
                }
            }
        }
    }
    let total = started.elapsed();
    let report = load::Report {
        tool: "fengqiao-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        quick: args.quick,
        clients: args.clients(),
        duration_secs: args.duration().as_secs(),
        watchers: args.watchers(),
        machine,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        total_secs: total.as_secs_f64(),
        targets,
        costs,
        figures,
        notes,
    };
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(args.out.join("results.json"), json)?;
    let md = load::markdown(&report);
    std::fs::write(args.out.join("results.md"), &md)?;
    println!("{md}");
    eprintln!(
        "fengqiao-bench: wrote {} and {} in {:.1}s",
        args.out.join("results.json").display(),
        args.out.join("results.md").display(),
        total.as_secs_f64()
    );
    // Health stopping under attack is a correctness failure, not a slow figure.
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}
