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
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

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
}

/// Sets up logging and tracing for `service`. Call once per process.
pub fn init(
    service: &str,
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
                .with_resource(
                    Resource::builder()
                        .with_service_name(service.to_string())
                        .build(),
                )
                .build();
            let tracer = provider.tracer("fengqiao");
            opentelemetry::global::set_tracer_provider(provider.clone());
            guard.provider = Some(provider);
            guard.runtime = Some(runtime);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        None => None,
    };

    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    // A subscriber already installed (tests start many servers in one process) is fine.
    let _ = result;
    Ok(guard)
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

/// Injects the current span's trace context into outgoing metadata.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}
