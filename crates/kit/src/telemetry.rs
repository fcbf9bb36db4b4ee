//! Tracing with OpenTelemetry: JSON (or text) logs, W3C trace context in and out of gRPC
//! metadata, and OTLP export of spans when an endpoint is configured.
//!
//! Nothing here logs request bodies: personal information never reaches logs or traces.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Which spans are exported, independently of the log level: the suite's own spans at `info`
/// and above, none of the transport's (h2, hyper, tonic, tower) or of SQL statements.
pub const TRACE_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,sqlx=off";

/// Whether spans are exported (an OTLP endpoint is configured in this process).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans: without, there is no trace context to store or read.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("log filter: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// Keeps the tracer provider alive; flushes and shuts it down on [`TelemetryGuard::shutdown`].
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    runtime: Option<Arc<tokio::runtime::Runtime>>,
}

impl TelemetryGuard {
    /// Flushes pending spans and stops the exporter. Safe to call from async code.
    pub fn shutdown(mut self) {
        let provider = self.provider.take();
        let runtime = self.runtime.take();
        // The provider's shutdown blocks and the runtime must not be dropped on a Tokio worker:
        // do both on a plain thread.
        let _ = std::thread::spawn(move || {
            if let Some(p) = provider {
                let _ = p.shutdown_with_timeout(Duration::from_secs(5));
            }
            drop(runtime);
        })
        .join();
    }
}

/// Wraps the OTLP exporter so that its export futures run on a small runtime of their own: the
/// SDK's batch processor exports from a plain thread without a Tokio reactor, which the tonic
/// transport needs.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let inner = self.inner.clone();
        let handle = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            match handle.await {
                Ok(r) => r,
                Err(e) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    e.to_string(),
                )),
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    // The SDK hands the provider's resource (service.name, …) to the exporter once, before
    // the first export; without forwarding it the OTLP exporter sends every span with an
    // empty resource.
    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// The resource every exported span carries: `service.name` (the service of a
/// `fengqiao serve --service X` process; `fengqiao` for a process hosting several services,
/// whose server spans then tell the services apart by `rpc.service`),
/// `service.namespace=fengqiao`, `service.version` (the binary's version),
/// `service.instance.id` (host and process id) and `deployment.environment.name` when given.
/// `OTEL_RESOURCE_ATTRIBUTES` adds to (and `OTEL_SERVICE_NAME` is overridden by) these.
pub fn resource(service: &str, environment: Option<&str>) -> Resource {
    use opentelemetry::KeyValue;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut attrs = vec![
        KeyValue::new("service.namespace", "fengqiao"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new(
            "service.instance.id",
            format!("{host}:{}", std::process::id()),
        ),
    ];
    if let Some(env) = environment.filter(|e| !e.is_empty()) {
        attrs.push(KeyValue::new(
            "deployment.environment.name",
            env.to_string(),
        ));
    }
    Resource::builder()
        .with_service_name(service.to_string())
        .with_attributes(attrs)
        .build()
}

/// Sets up logging and tracing for `service` (the resource's `service.name`, see
/// [`resource`]) in `environment` (`deployment.environment.name`, e.g. `dev`; `None`: from
/// `OTEL_RESOURCE_ATTRIBUTES` if set there). Call once per process.
pub fn init(
    service: &str,
    environment: Option<&str>,
    format: LogFormat,
    filter: &str,
    otlp_endpoint: Option<&str>,
) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(filter).map_err(|e| TelemetryError::Filter(e.to_string()))?;

    let mut guard = TelemetryGuard::default();
    let otel_layer = match otlp_endpoint {
        Some(endpoint) => {
            let runtime = Arc::new(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otlp-export")
                    .enable_all()
                    .build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))?,
            );
            let exporter = {
                let _enter = runtime.enter();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(|e| TelemetryError::Exporter(e.to_string()))?
            };
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(OnRuntime {
                    inner: Arc::new(exporter),
                    runtime: runtime.clone(),
                })
                .with_resource(resource(service, environment))
                .build();
            let tracer = provider.tracer("fengqiao");
            opentelemetry::global::set_tracer_provider(provider.clone());
            guard.provider = Some(provider);
            EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
            guard.runtime = Some(runtime);
            // Source locations, thread ids and busy/idle times are noise on every span. Spans
            // have their own filter: the log level (e.g. `warn` in production) must not turn
            // tracing off, and transport and SQL internals stay out of traces.
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_location(false)
                    .with_threads(false)
                    .with_tracked_inactivity(false)
                    .with_target(false)
                    .with_filter(
                        EnvFilter::try_new(TRACE_FILTER)
                            .map_err(|e| TelemetryError::Filter(e.to_string()))?,
                    ),
            )
        }
        None => None,
    };

    let registry = tracing_subscriber::registry().with(otel_layer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(WithTraceIds(
                        tracing_subscriber::fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_span_list(false),
                    ))
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_filter(filter))
            .try_init(),
    };
    // A subscriber already installed (tests start many servers in one process) is fine.
    let _ = result;
    Ok(guard)
}

/// A JSON event format that adds `trace_id` and `span_id` (W3C hex) to each line logged inside
/// a sampled span, so that a log line leads to its trace.
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        writer.write_str(&add_trace_ids(line, current_ids()))
    }
}

/// The trace and span id of the OpenTelemetry context active now (entering a span activates
/// its context), if it is a valid one.
fn current_ids() -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Adds `"trace_id"` and `"span_id"` to a JSON object line (`{…}` with an optional newline).
fn add_trace_ids(mut line: String, ids: Option<(String, String)>) -> String {
    let Some((trace, span)) = ids else {
        return line;
    };
    let newline = line.ends_with('\n');
    let body = line.trim_end_matches('\n');
    let Some(open) = body.strip_suffix('}') else {
        return line;
    };
    let sep = if open.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    let mut out = String::with_capacity(line.len() + 80);
    out.push_str(open);
    out.push_str(&format!(
        "{sep}\"trace_id\":\"{trace}\",\"span_id\":\"{span}\"}}"
    ));
    if newline {
        out.push('\n');
    }
    line.clear();
    out
}

/// `(rpc.service, rpc.method)` of a gRPC path: `/pkg.v1.Service/Method` is
/// `("pkg.v1.Service", "Method")`; a path without a method is all service.
pub fn split_grpc_path(path: &str) -> (&str, &str) {
    let p = path.trim_start_matches('/');
    p.rsplit_once('/').unwrap_or((p, ""))
}

/// Reads W3C `traceparent`/`tracestate` from HTTP/2 headers (gRPC metadata).
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes W3C trace context into gRPC metadata.
pub struct MetadataInjector<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Makes `span` a child of the trace context carried by `headers`, if any.
pub fn set_parent_from(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(cx);
}

/// The current span's trace context as a W3C `traceparent` value (`None` outside a sampled
/// span), e.g. to store with a message that is sent later.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent")
}

/// Makes `span` continue the trace of a stored `traceparent` (see [`current_traceparent`]).
pub fn set_parent_traceparent(span: &tracing::Span, traceparent: &str) {
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
}

/// Injects the current span's trace context into outgoing metadata.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            split_grpc_path("/fengqiao.router.v1.TransferService/ApproveTransfer"),
            ("fengqiao.router.v1.TransferService", "ApproveTransfer")
        );
        assert_eq!(split_grpc_path("/odd"), ("odd", ""));
    }

    #[test]
    fn trace_ids_join_a_json_line() {
        let ids = Some((
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            "00f067aa0ba902b7".into(),
        ));
        let line = add_trace_ids("{\"level\":\"INFO\"}\n".into(), ids.clone());
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["span_id"], "00f067aa0ba902b7");
        assert_eq!(v["level"], "INFO");
        assert!(line.ends_with("}\n"));
        let empty = add_trace_ids("{}".into(), ids);
        assert!(serde_json::from_str::<serde_json::Value>(&empty).is_ok());
        assert_eq!(add_trace_ids("{\"a\":1}\n".into(), None), "{\"a\":1}\n");
    }

    #[test]
    fn resource_names_the_service_and_version() {
        let r = resource("router", Some("staging"));
        let get = |r: &Resource, k: &'static str| {
            r.get(&opentelemetry::Key::from_static_str(k))
                .map(|v| v.to_string())
        };
        assert_eq!(get(&r, "service.name").as_deref(), Some("router"));
        assert_eq!(
            get(&r, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            get(&r, "deployment.environment.name").as_deref(),
            Some("staging")
        );
        let none = resource("router", None);
        assert_eq!(get(&none, "deployment.environment.name"), None);
    }
}
