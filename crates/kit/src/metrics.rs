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

/// The metrics of one process: RPC counts and latencies by method and status, in-flight calls,
/// plus whatever services register.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
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
        Self {
            registry: Arc::new(RwLock::new(registry)),
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

    /// Records one finished call.
    pub fn observe(&self, method: &str, code: tonic::Code, seconds: f64) {
        let labels = RpcLabels {
            method: method.to_string(),
            code: code_name(code).to_string(),
        };
        self.rpc_total.get_or_create(&labels).inc();
        self.rpc_seconds.get_or_create(&labels).observe(seconds);
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.read() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
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
                let svc = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(me.answer(&req)) }
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
