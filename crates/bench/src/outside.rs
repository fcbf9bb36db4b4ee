//! Ceilings from outside the project, measured in the same run: `pgbench -M prepared` (one
//! INSERT per transaction) against the same throwaway PostgreSQL cluster, and a bare tonic
//! server (the standard health service, no middleware) in a child process.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The hidden `echo` subcommand: a tonic server with only `grpc.health.v1.Health` (SERVING),
/// TCP_NODELAY as the suite sets it, no middleware; prints `ADDR host:port`, runs until stdin
/// closes.
pub async fn child_echo() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = tx.send(());
    });
    println!("ADDR {addr}");
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = rx.await;
        })
        .await?;
    Ok(())
}

/// The bare echo server child.
pub struct EchoProc {
    child: Child,
    /// Its pid.
    pub pid: u32,
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
}

impl EchoProc {
    /// Starts the child and waits for its address.
    pub async fn start() -> anyhow::Result<EchoProc> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("echo")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn the echo server")?;
        let pid = child.id();
        let stdout = child.stdout.take().context("echo stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await??;
        let Some(addr) = line.trim().strip_prefix("ADDR ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the echo server did not start (said {:?})", line.trim());
        };
        let endpoint = format!("http://{addr}");
        Ok(EchoProc {
            child,
            pid,
            endpoint,
        })
    }

    /// Closes stdin and waits (up to 5 s, then kills).
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pgbench`: next to the cluster's `initdb` first, then the highest
/// `/usr/lib/postgresql/*/bin`, then PATH (Debian's `/usr/bin/pgbench` wrapper last).
pub fn find_pgbench(bin_dir: &std::path::Path) -> Option<PathBuf> {
    let here = bin_dir.join("pgbench");
    if here.is_file() {
        return Some(here);
    }
    let mut versions: Vec<(u64, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e
                .file_name()
                .to_string_lossy()
                .split('.')
                .next()?
                .parse()
                .ok()?;
            let p = e.path().join("bin/pgbench");
            p.is_file().then_some((v, p))
        })
        .collect();
    versions.sort();
    if let Some((_, p)) = versions.pop() {
        return Some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("pgbench"))
        .find(|p| p.is_file())
}

/// What pgbench reported.
#[derive(Debug, Clone)]
pub struct PgbenchRun {
    /// Transactions per second (without the initial connection time).
    pub tps: f64,
    /// Transactions processed.
    pub transactions: u64,
    /// Average latency, ms.
    pub latency_avg_ms: Option<f64>,
    /// Wall time of the run.
    pub secs: f64,
}

/// Runs `pgbench -n -M prepared -c clients -j 2 -T secs` with a one-INSERT script against a
/// fresh table in database `db` of the cluster at `port`.
#[allow(clippy::too_many_arguments)]
pub async fn pgbench(
    exe: PathBuf,
    admin_url: String,
    port: u16,
    user: String,
    db: String,
    clients: usize,
    secs: u64,
    dir: PathBuf,
) -> anyhow::Result<PgbenchRun> {
    let url = admin_url.replacen("/postgres", &format!("/{db}"), 1);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .context("connect for pgbench")?;
    sqlx::query(
        "CREATE TABLE pgb_rows (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL, t BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await?;
    pool.close().await;
    let script = dir.join("pgbench-insert.sql");
    // One row of 512 bytes per transaction, as the store's own insert ceiling.
    std::fs::write(
        &script,
        "INSERT INTO pgb_rows (body, t) VALUES (repeat('x', 512), :client_id);\n",
    )?;
    let t0 = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(exe)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", &user])
            .args([
                "-n",
                "-M",
                "prepared",
                "-c",
                &clients.to_string(),
                "-j",
                "2",
            ])
            .args(["-T", &secs.max(1).to_string(), "-f"])
            .arg(&script)
            .arg(&db)
            .stdin(Stdio::null())
            .output()
    })
    .await?
    .context("run pgbench")?;
    let secs = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let tps = value("tps = ").context("no tps in pgbench's output")?;
    Ok(PgbenchRun {
        tps,
        transactions: value("number of transactions actually processed: ").unwrap_or(0.0) as u64,
        latency_avg_ms: value("latency average = "),
        secs,
    })
}
