//! Prometheus metrics and the admin HTTP port (`/metrics`, `/healthz`, `/readyz`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// Labels of the RPC metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// Full gRPC method path, e.g. `/fengqiao.router.v1.AgencyService/GetAgency`.
    pub method: String,
    /// gRPC status code name, e.g. `OK`, `NOT_FOUND`.
    pub code: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Work run before each scrape of `/metrics` (e.g. reading gauges from a database).
pub type ScrapeHook =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static>;

/// How long a scrape waits for its [`Metrics::on_scrape`] hooks before answering with what it
/// has.
pub const SCRAPE_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The metrics of one process: RPC counts and latencies by method and status, in-flight calls,
/// plus whatever services register; and, unprefixed, the standard `process_*` metrics (read
/// from `/proc` at each scrape) and `fengqiao_build_info`.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    /// Metrics with names of their own (`process_*`): no `fengqiao_` prefix.
    unprefixed: Arc<RwLock<Registry>>,
    hooks: Arc<RwLock<Vec<ScrapeHook>>>,
    /// Finished RPCs by method and status.
    pub rpc_total: Family<RpcLabels, Counter>,
    /// RPC latency in seconds by method and status.
    pub rpc_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    /// RPCs in flight.
    pub rpc_in_flight: Gauge,
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with the RPC metrics registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fengqiao");
        let rpc_total = Family::<RpcLabels, Counter>::default();
        let rpc_seconds = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let rpc_in_flight = Gauge::default();
        registry.register("rpc", "Finished gRPC calls", rpc_total.clone());
        registry.register(
            "rpc_duration_seconds",
            "gRPC call latency",
            rpc_seconds.clone(),
        );
        registry.register(
            "rpc_in_flight",
            "gRPC calls in flight",
            rpc_in_flight.clone(),
        );
        let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build_info
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "build_info",
            "The running binary: its version (always 1)",
            build_info,
        );
        let mut unprefixed = Registry::default();
        unprefixed.register_collector(Box::new(ProcessCollector));
        Self {
            registry: Arc::new(RwLock::new(registry)),
            unprefixed: Arc::new(RwLock::new(unprefixed)),
            hooks: Arc::default(),
            rpc_total,
            rpc_seconds,
            rpc_in_flight,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Registers a service's own metric.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        if let Ok(mut r) = self.registry.write() {
            r.register(name, help, metric);
        }
    }

    /// Exposes a group committer's counters (`fengqiao_group_commit_*{store="…"}`), read at
    /// each scrape: batches, jobs, jobs skipped because their caller left, failed batches, and
    /// jobs waiting now. Jobs ÷ batches is the average number of changes per transaction.
    pub fn register_group_commit(&self, store: &str, commit: fengqiao_store::GroupCommit) {
        if let Ok(mut r) = self.registry.write() {
            r.register_collector(Box::new(GroupCommitCollector {
                store: store.to_string(),
                commit,
            }));
        }
    }

    /// Runs `hook` before each scrape of `/metrics` (at most [`SCRAPE_HOOK_TIMEOUT`]), e.g. to
    /// refresh gauges read from a database.
    pub fn on_scrape(
        &self,
        hook: impl Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static,
    ) {
        if let Ok(mut h) = self.hooks.write() {
            h.push(Arc::new(hook));
        }
    }

    /// Runs the [`Metrics::on_scrape`] hooks (concurrently, each bounded by
    /// [`SCRAPE_HOOK_TIMEOUT`]).
    pub async fn refresh(&self) {
        let hooks: Vec<ScrapeHook> = self.hooks.read().map(|h| h.clone()).unwrap_or_default();
        futures::future::join_all(
            hooks
                .iter()
                .map(|h| tokio::time::timeout(SCRAPE_HOOK_TIMEOUT, h())),
        )
        .await;
    }

    /// Records one finished call.
    pub fn observe(&self, method: &str, code: tonic::Code, seconds: f64) {
        let labels = RpcLabels {
            method: method.to_string(),
            code: code_name(code).to_string(),
        };
        self.rpc_total.get_or_create(&labels).inc();
        self.rpc_seconds.get_or_create(&labels).observe(seconds);
    }

    /// Prometheus text exposition (without running the scrape hooks: see
    /// [`Metrics::refresh`]).
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        if let Ok(r) = self.registry.read() {
            let _ = encode_registry(&mut out, &r);
        }
        if let Ok(r) = self.unprefixed.read() {
            let _ = encode_registry(&mut out, &r);
        }
        let _ = encode_eof(&mut out);
        out
    }

    /// Marks the process ready (`/readyz` answers 200) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Serves the admin endpoints on `listener` until `shutdown` resolves.
    pub async fn serve_admin(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else { continue };
            let me = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let me = me.clone();
                    async move {
                        if req.uri().path() == "/metrics" {
                            me.refresh().await;
                        }
                        Ok::<_, Infallible>(me.answer(&req))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    fn answer<B>(&self, req: &http::Request<B>) -> http::Response<Full<Bytes>> {
        let (status, ctype, body) = match req.uri().path() {
            "/metrics" => (
                http::StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.encode(),
            ),
            "/healthz" => (http::StatusCode::OK, "text/plain", "ok\n".to_string()),
            "/readyz" if self.ready.load(Ordering::SeqCst) => {
                (http::StatusCode::OK, "text/plain", "ready\n".to_string())
            }
            "/readyz" => (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready\n".to_string(),
            ),
            _ => (
                http::StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ),
        };
        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(ctype) {
            resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        resp
    }
}

/// Binds the admin listener.
pub async fn bind_admin(addr: &str) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// The canonical upper-case name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_rpc_series() {
        let m = Metrics::new();
        m.observe("/x.v1.S/M", tonic::Code::NotFound, 0.003);
        let text = m.encode();
        assert!(text.contains("fengqiao_rpc_total{method=\"/x.v1.S/M\",code=\"NOT_FOUND\"} 1"));
        assert!(text.contains("fengqiao_rpc_duration_seconds_bucket"));
        assert!(text.contains(&format!(
            "fengqiao_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn process_metrics_come_from_proc() {
        let text = Metrics::new().encode();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e5);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "start {start}, now {now}"
        );
    }

    #[test]
    fn proc_stat_fields_after_the_command() {
        // The command may contain spaces and parentheses.
        let line = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 4200 999 77";
        let f = stat_fields(line).expect("fields");
        assert_eq!(f.first().copied(), Some("S"));
        assert_eq!(f.get(11).copied(), Some("250"));
        assert_eq!(f.get(19).copied(), Some("4200"));
    }

    #[tokio::test]
    async fn scrape_hooks_run_before_a_scrape() {
        let m = Metrics::new();
        let g = Gauge::<i64>::default();
        m.register("hooked", "set by a hook", g.clone());
        let g2 = g.clone();
        m.on_scrape(move || {
            let g = g2.clone();
            Box::pin(async move {
                g.set(7);
            })
        });
        assert!(m.encode().contains("fengqiao_hooked 0"));
        m.refresh().await;
        assert!(m.encode().contains("fengqiao_hooked 7"));
    }
}

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat` (100 on every
/// architecture Linux runs on, whatever the kernel's internal tick).
const USER_HZ: f64 = 100.0;

/// The fields of `/proc/self/stat` after the command (`(…)`), starting with the state (field 3
/// of proc(5) is index 0 here).
fn stat_fields(line: &str) -> Option<Vec<&str>> {
    let after = &line[line.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// A `kB` line of `/proc/self/status` (e.g. `VmRSS:`), in bytes.
fn status_kb(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb * 1024.0)
}

/// The standard `process_*` metrics of this process, read from `/proc` at each scrape
/// (absent where there is no `/proc`).
#[derive(Debug)]
struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields = stat_fields(&stat).unwrap_or_default();
        let num = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mut gauges: Vec<(&str, &str, Option<f64>)> = vec![
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                status_kb(&status, "VmRSS:"),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                status_kb(&status, "VmSize:"),
            ),
        ];
        #[allow(clippy::cast_precision_loss)]
        let open = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64);
        gauges.push(("process_open_fds", "Open file descriptors", open));
        let max = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find_map(|x| x.strip_prefix("Max open files"))
                    .and_then(|v| v.split_whitespace().next().map(str::to_string))
            })
            .and_then(|v| v.parse::<f64>().ok());
        gauges.push((
            "process_max_fds",
            "Maximum number of open file descriptors",
            max,
        ));
        // Start time: boot time (`btime` of /proc/stat) plus field 22 (starttime, in ticks).
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        let start = boot.zip(num(19)).map(|(b, t)| b + t / USER_HZ);
        gauges.push((
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            start,
        ));
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
                g.encode(m)?;
            }
        }
        // utime + stime: fields 14 and 15.
        if let (Some(u), Some(s)) = (num(11), num(12)) {
            let c = ConstCounter::new((u + s) / USER_HZ);
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?;
            c.encode(m)?;
        }
        Ok(())
    }
}

/// Reads a [`fengqiao_store::GroupCommit`]'s counters at scrape time.
#[derive(Debug)]
struct GroupCommitCollector {
    store: String,
    commit: fengqiao_store::GroupCommit,
}

impl prometheus_client::collector::Collector for GroupCommitCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use std::sync::atomic::Ordering::Relaxed;
        let st = self.commit.stats();
        let labels = [("store", self.store.as_str())];
        for (name, help, value) in [
            (
                "group_commit_batches",
                "Shared transactions run by the group committer",
                st.batches.load(Relaxed),
            ),
            (
                "group_commit_jobs",
                "Changes run by the group committer",
                st.jobs.load(Relaxed),
            ),
            (
                "group_commit_abandoned",
                "Changes skipped because their caller had gone away",
                st.abandoned.load(Relaxed),
            ),
            (
                "group_commit_failed_batches",
                "Shared transactions that did not commit",
                st.failed_batches.load(Relaxed),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let mut m = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(m.encode_family(&labels)?)?;
        }
        let waiting = ConstGauge::new(i64::try_from(self.commit.waiting()).unwrap_or(i64::MAX));
        let mut m = encoder.encode_descriptor(
            "group_commit_waiting",
            "Changes waiting for the group committer now",
            None,
            waiting.metric_type(),
        )?;
        waiting.encode(m.encode_family(&labels)?)?;
        Ok(())
    }
}
