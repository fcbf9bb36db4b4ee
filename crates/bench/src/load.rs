//! Closed-loop load generation, latency percentiles, resource sampling, and the report.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::proc_stat;

/// Longest time one operation may take before it counts as failed (keeps runs bounded).
pub const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// Outcome of one closed-loop run.
#[derive(Debug, Default)]
pub struct Load {
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// The first failure, for the notes.
    pub first_error: Option<String>,
    /// Wall time.
    pub secs: f64,
    /// Latency of each successful operation, milliseconds, sorted.
    pub lat_ms: Vec<f64>,
}

/// Runs `op` from `clients` concurrent tasks until `dur` has passed (no new operation starts
/// after it) or `max_ops` operations have started. An operation taking longer than
/// [`OP_TIMEOUT`] is abandoned and counted as an error.
pub async fn run_load<F, Fut>(clients: usize, dur: Duration, max_ops: u64, op: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + dur;
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let op = op.clone();
        let started = started.clone();
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline {
                let i = started.fetch_add(1, Ordering::Relaxed);
                if i >= max_ops {
                    break;
                }
                let s = Instant::now();
                let r = match tokio::time::timeout(OP_TIMEOUT, op(c, i)).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!("gave up after {} s", OP_TIMEOUT.as_secs())),
                };
                match r {
                    Ok(()) => lat.push(s.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        errors += 1;
                        if first_error.is_none() {
                            first_error = Some(format!("{e:#}"));
                        }
                    }
                }
            }
            (lat, errors, first_error)
        });
    }
    let mut out = Load::default();
    while let Some(r) = set.join_next().await {
        if let Ok((lat, errors, fe)) = r {
            out.lat_ms.extend(lat);
            out.errors += errors;
            if out.first_error.is_none() {
                out.first_error = fe;
            }
        } else {
            out.errors += 1;
        }
    }
    out.secs = t0.elapsed().as_secs_f64();
    out.ops = out.lat_ms.len() as u64;
    out.lat_ms.sort_by(f64::total_cmp);
    out
}

/// The `p` quantile (0..1) of sorted values, nearest rank.
pub fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// CPU and peak memory of the suite processes (and the bench's own CPU) over a phase.
#[derive(Debug)]
pub struct Sampler {
    pids: Vec<u32>,
    cpu0: f64,
    self0: f64,
    t0: Instant,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Suite CPU time / wall time, percent of one core.
    pub suite_cpu_pct: f64,
    /// Bench (load generator) CPU time / wall time, percent of one core.
    pub client_cpu_pct: f64,
    /// Highest suite RSS sampled every 20 ms, MiB.
    pub suite_peak_rss_mb: f64,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Sampler {
        Self::start_many(vec![pid])
    }

    /// Starts sampling the processes `pids` together (CPU summed, RSS of all summed).
    pub fn start_many(pids: Vec<u32>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let rss = |pids: &[u32]| pids.iter().map(|&p| proc_stat::rss_kb(p)).sum::<u64>();
        let cpu = |pids: &[u32]| pids.iter().map(|&p| proc_stat::cpu_secs(p)).sum::<f64>();
        let peak = Arc::new(AtomicU64::new(rss(&pids)));
        let task = {
            let stop = stop.clone();
            let peak = peak.clone();
            let pids = pids.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(&pids), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Sampler {
            cpu0: cpu(&pids),
            pids,
            self0: proc_stat::cpu_secs(std::process::id()),
            t0: Instant::now(),
            stop,
            peak,
            task,
        }
    }

    /// Stops and reports.
    pub async fn finish(self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let rss: u64 = self.pids.iter().map(|&p| proc_stat::rss_kb(p)).sum();
        self.peak.fetch_max(rss, Ordering::Relaxed);
        let cpu: f64 = self.pids.iter().map(|&p| proc_stat::cpu_secs(p)).sum();
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        Usage {
            suite_cpu_pct: (cpu - self.cpu0) / wall * 100.0,
            client_cpu_pct: (proc_stat::cpu_secs(std::process::id()) - self.self0) / wall * 100.0,
            suite_peak_rss_mb: self.peak.load(Ordering::Relaxed) as f64 / 1024.0,
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Figure {
    /// What was measured.
    pub figure: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Unit of `throughput` (`req/s`, `rows/s`, `intakes/s`, `cycles/s`, …).
    pub unit: String,
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall seconds.
    pub secs: f64,
    /// ops / secs.
    pub throughput: Option<f64>,
    /// Latency percentiles, milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// 99.9th percentile, ms.
    pub p999_ms: Option<f64>,
    /// Suite CPU over the phase, % of one core.
    pub suite_cpu_pct: Option<f64>,
    /// Bench process CPU over the phase, % of one core.
    pub client_cpu_pct: Option<f64>,
    /// Suite peak RSS over the phase, MiB.
    pub suite_peak_rss_mb: Option<f64>,
    /// Which ceiling the ratio is taken against.
    pub ceiling: Option<String>,
    /// throughput / ceiling throughput (same run, same backend).
    pub ratio_to_ceiling: Option<f64>,
    /// Ratios to further ceilings (e.g. the project's own and one from outside it).
    pub other_ratios: Vec<Ratio>,
    /// The target, in words.
    pub target: Option<String>,
    /// Whether the target was met (None: no target, or not measurable here).
    pub met: Option<bool>,
    /// Caveats.
    pub note: String,
}

impl Figure {
    /// A figure from a load run and its resource usage.
    pub fn from_load(figure: &str, backend: &str, unit: &str, l: &Load, u: Usage) -> Figure {
        Figure {
            figure: figure.into(),
            backend: backend.into(),
            unit: unit.into(),
            ops: l.ops,
            errors: l.errors,
            secs: l.secs,
            throughput: (l.secs > 0.0).then(|| l.ops as f64 / l.secs),
            p50_ms: pct(&l.lat_ms, 0.50),
            p99_ms: pct(&l.lat_ms, 0.99),
            p999_ms: pct(&l.lat_ms, 0.999),
            suite_cpu_pct: Some(u.suite_cpu_pct),
            client_cpu_pct: Some(u.client_cpu_pct),
            suite_peak_rss_mb: Some(u.suite_peak_rss_mb),
            note: l
                .first_error
                .as_ref()
                .map(|e| format!("first error: {}", truncate(e, 200)))
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Sets the ratio to `ceiling` (the first call: the primary ratio; later calls add
    /// [`Figure::other_ratios`]).
    pub fn against(mut self, name: &str, ceiling: Option<f64>) -> Figure {
        let ratio = match (self.throughput, ceiling) {
            (Some(t), Some(c)) if c > 0.0 => Some(t / c),
            _ => None,
        };
        if self.ceiling.is_none() {
            self.ceiling = Some(name.into());
            self.ratio_to_ceiling = ratio;
        } else if let Some(ratio) = ratio {
            self.other_ratios.push(Ratio {
                ceiling: name.into(),
                ratio,
            });
        }
        self
    }

    /// Sets a target and whether it was met.
    pub fn target(mut self, target: &str, met: Option<bool>) -> Figure {
        self.target = Some(target.into());
        self.met = met;
        self
    }

    /// Appends a note.
    pub fn note(mut self, note: &str) -> Figure {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note);
        self
    }
}

/// A figure's throughput divided by a ceiling's.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Which ceiling.
    pub ceiling: String,
    /// throughput / ceiling.
    pub ratio: f64,
}

/// One row of the targets table.
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    /// The figure.
    pub figure: String,
    /// Measured now (in `unit`).
    pub now: Option<f64>,
    /// Unit or kind of `now`.
    pub unit: String,
    /// The target, in words.
    pub target: String,
    /// Whether it is met (None: not measured).
    pub met: Option<bool>,
    /// How it was computed.
    pub note: String,
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `fengqiao-bench`.
    pub tool: String,
    /// Crate version.
    pub version: String,
    /// `--quick`.
    pub quick: bool,
    /// Concurrent clients.
    pub clients: usize,
    /// Seconds per throughput measurement.
    pub duration_secs: u64,
    /// Watch streams.
    pub watchers: usize,
    /// Where it ran.
    pub machine: proc_stat::Machine,
    /// When (unix seconds, at the end).
    pub started_unix: u64,
    /// Wall time of the whole run.
    pub total_secs: f64,
    /// The targets (PostgreSQL), now / target / met.
    pub targets: Vec<TargetRow>,
    /// Cost per step.
    pub costs: Vec<crate::cost::CostRow>,
    /// Every figure.
    pub figures: Vec<Figure>,
    /// Run-level notes (skipped sizes, failures).
    pub notes: Vec<String>,
}

/// A number for the tables: fewer decimals the larger it is.
pub fn num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) if v != 0.0 && v.abs() < 0.1 => format!("{v:.3}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The Markdown table.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Fengqiao bench{} — {} cores ({}), {:.0} MiB RAM; {} clients, {} s per figure, {} watchers; run took {:.0} s\n\n",
        if r.quick { " (--quick)" } else { "" },
        r.machine.cores,
        r.machine.cpu_model,
        r.machine.mem_total_mb,
        r.clients,
        r.duration_secs,
        r.watchers,
        r.total_secs
    ));
    if !r.targets.is_empty() {
        s.push_str("Targets of issue #17 (PostgreSQL, same-run ratios):\n\n| figure | now | target | met? | how |\n|---|---|---|---|---|\n");
        for t in &r.targets {
            s.push_str(&format!(
                "| {} | {} {} | {} | {} | {} |\n",
                t.figure,
                num(t.now),
                t.unit,
                t.target,
                match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
                },
                t.note.replace('|', "/")
            ));
        }
        s.push('\n');
    }
    if !r.costs.is_empty() {
        s.push_str(&crate::cost::markdown(&r.costs));
        s.push('\n');
    }
    s.push_str("| figure | backend | throughput | p50 ms | p99 ms | p99.9 ms | suite CPU % | bench CPU % | suite peak RSS MiB | ratio to ceiling | target | met? | ops / errors | note |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for f in &r.figures {
        let mut ratio = match (&f.ratio_to_ceiling, &f.ceiling) {
            (Some(x), Some(c)) => format!("{x:.3} of {c}"),
            _ => "–".into(),
        };
        for o in &f.other_ratios {
            ratio.push_str(&format!("; {:.3} of {}", o.ratio, o.ceiling));
        }
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |\n",
            f.figure,
            f.backend,
            match f.throughput {
                Some(t) => format!("{} {}", num(Some(t)), f.unit),
                None => "–".into(),
            },
            num(f.p50_ms),
            num(f.p99_ms),
            num(f.p999_ms),
            num(f.suite_cpu_pct),
            num(f.client_cpu_pct),
            num(f.suite_peak_rss_mb),
            ratio,
            f.target.as_deref().unwrap_or("–"),
            match f.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            },
            f.ops,
            f.errors,
            f.note.replace('|', "/")
        ));
    }
    if !r.notes.is_empty() {
        s.push_str("\nNotes:\n");
        for n in &r.notes {
            s.push_str(&format!("- {}\n", n.replace('\n', " ")));
        }
    }
    s
}
