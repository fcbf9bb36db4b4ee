//! Cost per step: CPU-milliseconds of the suite processes and of PostgreSQL, SQL statements
//! and transactions, gRPC calls — each divided by the operations of a phase.
//!
//! - Suite CPU: user + system time of the suite processes from `/proc/<pid>/stat`.
//! - PostgreSQL CPU: the postmaster's own and reaped children's time plus every live backend's
//!   (see [`proc_stat::tree_cpu_secs`]).
//! - Statements and explicit transactions: `pg_stat_statements` (the throwaway cluster is
//!   started with `shared_preload_libraries = 'pg_stat_statements'`), summed over every
//!   database; `BEGIN`/`COMMIT`/`ROLLBACK` are counted apart from the statements.
//! - Write transactions: the advance of `pg_current_xact_id()` (only a transaction that
//!   writes is given an id), read at once, unlike `pg_stat_database`, which backends flush
//!   only when idle.
//! - gRPC calls: the sum of `fengqiao_rpc_total` over the suite processes' `/metrics`
//!   (every call through the middleware, including calls between co-located services).
//!
//! Background work (delivery workers, timers, autovacuum) during a phase is part of its cost.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::load::num;
use crate::proc_stat;

/// Cost of one step, per operation.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CostRow {
    /// The step (phase).
    pub step: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Operations the totals are divided by.
    pub ops: u64,
    /// Suite processes' CPU, ms per operation.
    pub suite_cpu_ms: Option<f64>,
    /// PostgreSQL's CPU, ms per operation.
    pub pg_cpu_ms: Option<f64>,
    /// The bench's own CPU (load generator), ms per operation.
    pub bench_cpu_ms: Option<f64>,
    /// SQL statements per operation (without BEGIN/COMMIT/ROLLBACK).
    pub statements: Option<f64>,
    /// Committed explicit transactions (COMMIT) per operation.
    pub commits: Option<f64>,
    /// Transactions that wrote (were given a transaction id) per operation.
    pub write_transactions: Option<f64>,
    /// gRPC calls (through the middleware) per operation.
    pub grpc_calls: Option<f64>,
}

/// What a [`Meter`] reads at the start and end of a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snap {
    suite_cpu: f64,
    pg_cpu: f64,
    bench_cpu: f64,
    rpc: Option<f64>,
    statements: Option<f64>,
    commits: Option<f64>,
    xid: Option<f64>,
}

/// Reads PostgreSQL's counters.
pub struct PgMeter {
    postmaster: u32,
    pool: sqlx::PgPool,
    statements: bool,
}

impl PgMeter {
    /// Connects to `admin_url` and makes `pg_stat_statements` available when the server
    /// preloads it.
    pub async fn connect(admin_url: &str, postmaster: u32) -> anyhow::Result<PgMeter> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await?;
        let statements = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await
            .is_ok()
            && sqlx::query("SELECT 1 FROM pg_stat_statements LIMIT 1")
                .execute(&pool)
                .await
                .is_ok();
        Ok(PgMeter {
            postmaster,
            pool,
            statements,
        })
    }

    /// Whether statement counts are available.
    pub fn has_statements(&self) -> bool {
        self.statements
    }

    async fn read(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let xid: Option<i64> =
            sqlx::query_scalar("SELECT CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT)")
                .fetch_one(&self.pool)
                .await
                .ok();
        let (stmts, commits) = if self.statements {
            let r: Result<(i64, i64), _> = sqlx::query_as(
                "SELECT \
                 CAST(COALESCE(SUM(calls) FILTER (WHERE NOT (q LIKE 'BEGIN%' OR q LIKE 'START%' OR q LIKE 'COMMIT%' OR q LIKE 'END%' OR q LIKE 'ROLLBACK%')), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(calls) FILTER (WHERE q LIKE 'COMMIT%' OR q LIKE 'END%'), 0) AS BIGINT) \
                 FROM (SELECT upper(ltrim(query)) AS q, calls FROM pg_stat_statements \
                 WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_current_xact_id%') s",
            )
            .fetch_one(&self.pool)
            .await;
            match r {
                Ok((s, c)) => (Some(s as f64), Some(c as f64)),
                Err(_) => (None, None),
            }
        } else {
            (None, None)
        };
        (stmts, commits, xid.map(|x| x as f64))
    }
}

/// Calls per statement text and database, from `pg_stat_statements` (the meter's own
/// statements left out).
pub type QueryCalls = std::collections::BTreeMap<(String, String), i64>;

impl PgMeter {
    /// Calls of every statement so far, by database and statement text; `None` without
    /// `pg_stat_statements`.
    pub async fn queries(&self) -> Option<QueryCalls> {
        if !self.statements {
            return None;
        }
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT COALESCE(d.datname, ''), s.query, CAST(SUM(s.calls) AS BIGINT) \
             FROM pg_stat_statements s LEFT JOIN pg_database d ON d.oid = s.dbid \
             WHERE s.query NOT LIKE '%pg_stat_statements%' AND s.query NOT LIKE '%pg_current_xact_id%' \
             GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await
        .ok()?;
        Some(rows.into_iter().map(|(d, q, c)| ((d, q), c)).collect())
    }
}

/// The statements between two [`PgMeter::queries`] reads, per operation, most called first:
/// a markdown table (database, calls per operation, statement text on one line).
pub fn queries_markdown(title: &str, a: &QueryCalls, b: &QueryCalls, ops: u64) -> String {
    let n = ops.max(1) as f64;
    let mut rows: Vec<(f64, &str, String)> = b
        .iter()
        .filter_map(|((db, q), &calls)| {
            let d = calls - a.get(&(db.clone(), q.clone())).copied().unwrap_or(0);
            let one_line = q.split_whitespace().collect::<Vec<_>>().join(" ");
            (d > 0).then(|| (d as f64 / n, db.as_str(), one_line))
        })
        .collect();
    rows.sort_by(|x, y| y.0.total_cmp(&x.0).then_with(|| x.1.cmp(y.1)));
    let total: f64 = rows.iter().map(|r| r.0).sum();
    let mut s = format!(
        "# {title}\n\n{ops} operations; {total:.1} statements per operation (BEGIN/COMMIT included)\n\n\
         | calls per op | database | statement |\n|---|---|---|\n"
    );
    for (c, db, q) in rows {
        let q: String = q.chars().take(400).collect::<String>().replace('|', "\\|");
        s.push_str(&format!("| {c:.2} | {db} | `{q}` |\n"));
    }
    s
}

/// Measures the cost of phases against a set of suite processes (and PostgreSQL).
pub struct Meter<'a> {
    /// Suite processes.
    pub pids: Vec<u32>,
    /// Their admin addresses (`host:port`), for `/metrics`.
    pub admins: Vec<String>,
    /// PostgreSQL, when the backend is PostgreSQL.
    pub pg: Option<&'a PgMeter>,
}

impl Meter<'_> {
    /// Reads every counter now.
    pub async fn snap(&self) -> Snap {
        let mut rpc = Some(0.0);
        for a in &self.admins {
            match rpc_total(a).await {
                Ok(v) => rpc = rpc.map(|r| r + v),
                Err(_) => rpc = None,
            }
        }
        let (statements, commits, xid) = match self.pg {
            Some(pg) => pg.read().await,
            None => (None, None, None),
        };
        Snap {
            suite_cpu: self.pids.iter().map(|&p| proc_stat::cpu_secs(p)).sum(),
            pg_cpu: self
                .pg
                .map_or(0.0, |pg| proc_stat::tree_cpu_secs(pg.postmaster)),
            bench_cpu: proc_stat::cpu_secs(std::process::id()),
            rpc,
            statements,
            commits,
            xid,
        }
    }

    /// The cost of `ops` operations between `a` and now.
    pub async fn row(&self, step: &str, backend: &str, a: Snap, ops: u64) -> CostRow {
        let b = self.snap().await;
        let n = ops.max(1) as f64;
        let d = |x: Option<f64>, y: Option<f64>, own: f64| match (x, y) {
            (Some(x), Some(y)) => Some(((y - x - own).max(0.0)) / n),
            _ => None,
        };
        // The meter's own reads: one xid per snapshot; its two statements per snapshot are
        // filtered out by text.
        CostRow {
            step: step.into(),
            backend: backend.into(),
            ops,
            suite_cpu_ms: Some((b.suite_cpu - a.suite_cpu) * 1000.0 / n),
            pg_cpu_ms: self.pg.map(|_| (b.pg_cpu - a.pg_cpu) * 1000.0 / n),
            bench_cpu_ms: Some((b.bench_cpu - a.bench_cpu) * 1000.0 / n),
            statements: d(a.statements, b.statements, 0.0),
            commits: d(a.commits, b.commits, 0.0),
            write_transactions: d(a.xid, b.xid, 1.0),
            // The scrape itself is not a gRPC call.
            grpc_calls: d(a.rpc, b.rpc, 0.0),
        }
    }
}

/// Sum of `fengqiao_rpc_total` on the admin listener `addr` (plain HTTP/1.0 GET /metrics).
async fn rpc_total(addr: &str) -> anyhow::Result<f64> {
    let body = tokio::time::timeout(Duration::from_secs(5), async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    })
    .await??;
    // HTTP/1.0: no chunked encoding to split a line.
    if !body.lines().next().is_some_and(|l| l.contains(" 200")) {
        anyhow::bail!("/metrics answered {:?}", body.lines().next());
    }
    Ok(body
        .lines()
        .filter(|l| l.starts_with("fengqiao_rpc_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum())
}

/// The cost table.
pub fn markdown(rows: &[CostRow]) -> String {
    let mut s = String::from(
        "Cost per step (per operation; CPU in ms; statements and transactions from PostgreSQL, summed over every database; background work during the phase included):\n\n\
         | step | backend | ops | suite CPU ms | PostgreSQL CPU ms | bench CPU ms | SQL statements | COMMITs | write transactions | gRPC calls |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.step,
            r.backend,
            r.ops,
            num(r.suite_cpu_ms),
            num(r.pg_cpu_ms),
            num(r.bench_cpu_ms),
            num(r.statements),
            num(r.commits),
            num(r.write_transactions),
            num(r.grpc_calls),
        ));
    }
    s
}
