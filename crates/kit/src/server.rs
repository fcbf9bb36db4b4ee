//! Serving: one tower middleware for every RPC (span, metrics, load shedding, authentication,
//! per-agency rate limit, deadline), gRPC health and reflection on every server, and graceful
//! shutdown.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::body::Body;
use tonic::service::Routes;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument as _;

use crate::auth::{AuthError, AuthMethod, Identity, Verifier};
use crate::config::LimitsConfig;
use crate::error::{ApiError, Reason};
use crate::metrics::{Metrics, code_name};

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding or reading a listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// TLS material is invalid.
    #[error("tls: {0}")]
    Tls(String),
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(String),
}

/// Signals shutdown to long-running work (watch streams, workers).
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Triggers a [`Shutdown`].
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: Arc<watch::Sender<bool>>,
}

/// A new shutdown pair.
pub fn shutdown_pair() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx: Arc::new(tx) }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Starts shutdown; idempotent.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// A receiver for this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when shutdown begins.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn os_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Health of the services of one server (overall status under the empty name).
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    names: Vec<String>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("names", &self.names)
            .finish()
    }
}

impl Health {
    /// Sets every service, and the overall status, to SERVING or NOT_SERVING.
    pub async fn set_all(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for n in &self.names {
            self.reporter.set_service_status(n, status).await;
        }
        self.reporter.set_service_status("", status).await;
    }

    /// Sets one service.
    pub async fn set(&self, service: &str, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(service, status).await;
    }
}

/// Token-bucket rate limiter keyed by agency.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved up.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`; `Err(wait)` when empty.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        let entry = map.entry(key.to_string()).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(entry.1).as_secs_f64();
        entry.0 = (entry.0 + elapsed * self.rate).min(self.burst);
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - entry.0) / self.rate))
        }
    }
}

/// What the middleware needs.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    verifier: Verifier,
    metrics: Metrics,
    limits: LimitsConfig,
    permits: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    agency_streams: Mutex<HashMap<String, usize>>,
    limiter: RateLimiter,
    peer_agencies: BTreeMap<String, String>,
    /// Where refused calls are written, by gRPC path prefix (see [`Guard::audit_denials`]).
    denials: std::sync::RwLock<Vec<DenialSink>>,
}

#[derive(Clone)]
struct DenialSink {
    prefix: String,
    store: fengqiao_store::Store,
    service: &'static str,
}

/// Largest `authorization` header accepted (a token is a few hundred bytes); a larger one is
/// refused on its stream with UNAUTHENTICATED / `TOKEN_MALFORMED`.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;
/// Largest request metadata accepted (names + values + 32 bytes per entry, as HTTP/2 counts
/// it); beyond it the call is refused on its stream with INVALID_ARGUMENT /
/// `HEADERS_TOO_LARGE`, the connection's other calls go on.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` the server announces: larger than
/// [`MAX_HEADER_BYTES`] so that metadata between the two reaches the middleware and is refused
/// with a gRPC status. A header block larger than this is refused by the HTTP/2 layer itself
/// (HTTP 431 on the stream, or GOAWAY if the block keeps coming).
pub const H2_MAX_HEADER_LIST_BYTES: u32 = 128 * 1024;
/// The `method` label of every call to a path no service of this suite serves, so made-up
/// method names cannot create new metric series.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The methods of the suite's contracts (and health, reflection), and which of them stream.
struct Methods {
    known: HashSet<String>,
    streaming: HashSet<String>,
}

fn methods() -> &'static Methods {
    static METHODS: OnceLock<Methods> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut m = Methods {
            known: HashSet::new(),
            streaming: HashSet::new(),
        };
        for set in [
            fengqiao_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(set) else {
                continue;
            };
            for file in &set.file {
                let package = file.package();
                for svc in &file.service {
                    for method in &svc.method {
                        let path = if package.is_empty() {
                            format!("/{}/{}", svc.name(), method.name())
                        } else {
                            format!("/{package}.{}/{}", svc.name(), method.name())
                        };
                        if method.server_streaming() || method.client_streaming() {
                            m.streaming.insert(path.clone());
                        }
                        m.known.insert(path);
                    }
                }
            }
        }
        for v in ["v1", "v1alpha"] {
            let path = format!("/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo");
            m.streaming.insert(path.clone());
            m.known.insert(path);
        }
        m
    })
}

/// The metric and span label of a request path: the path itself when a service of the suite
/// serves it, [`UNKNOWN_METHOD`] otherwise.
pub fn method_label(path: &str) -> &str {
    if methods().known.contains(path) {
        path
    } else {
        UNKNOWN_METHOD
    }
}

/// Whether `path` is a streaming method (it then takes a stream slot, see
/// [`LimitsConfig::max_streams`]).
pub fn is_streaming(path: &str) -> bool {
    methods().streaming.contains(path)
}

/// One open stream: a slot of the total and, for an authenticated caller, of its agency's.
struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    agency: Option<String>,
    guard: Arc<GuardInner>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(agency) = &self.agency {
            let mut map = self
                .guard
                .agency_streams
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(agency) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(agency);
                }
            }
        }
    }
}

impl GuardInner {
    /// Takes a stream slot for `agency` (`None`: an unauthenticated public stream).
    fn open_stream(self: &Arc<Self>, agency: Option<&str>) -> Result<StreamSlot, ApiError> {
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                Reason::ServerOverloaded,
                "the server is at its limit of open streams; retry with backoff",
            )
        })?;
        if let Some(agency) = agency {
            let mut map = self
                .agency_streams
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = map.entry(agency.to_string()).or_insert(0);
            if *n >= self.limits.max_streams_per_agency {
                return Err(ApiError::new(
                    Reason::TooManyStreams,
                    format!(
                        "the agency already holds {} open streams, its limit; close one first",
                        self.limits.max_streams_per_agency
                    ),
                ));
            }
            *n += 1;
        }
        Ok(StreamSlot {
            _permit: permit,
            agency: agency.map(str::to_string),
            guard: self.clone(),
        })
    }
}

/// Refuses metadata too large to be a real call (see [`MAX_HEADER_BYTES`]).
fn check_header_size(headers: &http::HeaderMap) -> Result<(), ApiError> {
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .map_or(0, |v| v.len());
    if auth > MAX_AUTHORIZATION_BYTES {
        return Err(ApiError::new(
            Reason::TokenMalformed,
            format!("the authorization header is larger than {MAX_AUTHORIZATION_BYTES} bytes"),
        ));
    }
    let total: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum();
    if total > MAX_HEADER_BYTES {
        return Err(ApiError::new(
            Reason::HeadersTooLarge,
            format!("the request metadata is larger than {MAX_HEADER_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// What tonic answers, without details, when the request body cannot be read as the method's
/// message: a fault of the client, so INVALID_ARGUMENT / `MALFORMED_MESSAGE` (or
/// RESOURCE_EXHAUSTED / `MESSAGE_TOO_LARGE`) with `ErrorInfo`, not INTERNAL / OUT_OF_RANGE.
/// `None` for every other answer (errors the services built carry details already).
fn client_fault(headers: &http::HeaderMap, limit_bytes: usize) -> Option<ApiError> {
    let status = Status::from_header_map(headers)?;
    if !status.details().is_empty() {
        return None;
    }
    let msg = status.message();
    match status.code() {
        Code::Internal
            if [
                "failed to decode Protobuf message",
                "Missing request message",
                "Unexpected EOF decoding stream",
                "protocol error:",
                "Error decompressing",
            ]
            .iter()
            .any(|p| msg.starts_with(p)) =>
        {
            // prost's messages name the message and field, never the bytes.
            Some(ApiError::new(
                Reason::MalformedMessage,
                format!("the request body is not a valid message of this method: {msg}"),
            ))
        }
        Code::OutOfRange | Code::ResourceExhausted
            if msg.starts_with("Error, decoded message length too large")
                || msg.starts_with("Error decompressing: size limit") =>
        {
            Some(
                ApiError::new(
                    Reason::MessageTooLarge,
                    format!("the request message is larger than {limit_bytes} bytes"),
                )
                .with_metadata("limit_bytes", limit_bytes.to_string()),
            )
        }
        _ => None,
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard verifying tokens with `verifier` under `limits`.
    pub fn new(
        verifier: Verifier,
        metrics: Metrics,
        limits: LimitsConfig,
        peer_agencies: BTreeMap<String, String>,
    ) -> Self {
        Self {
            inner: Arc::new(GuardInner {
                permits: Arc::new(Semaphore::new(limits.max_concurrency)),
                streams: Arc::new(Semaphore::new(limits.max_streams)),
                agency_streams: Mutex::new(HashMap::new()),
                limiter: RateLimiter::new(limits.per_agency_rps, limits.per_agency_burst),
                verifier,
                metrics,
                limits,
                peer_agencies,
                denials: std::sync::RwLock::new(Vec::new()),
            }),
        }
    }

    /// Writes every refused call (UNAUTHENTICATED, PERMISSION_DENIED) to a path starting with
    /// `path_prefix` (e.g. `/fengqiao.mediation.v1.`) into `store`'s access log
    /// ([`fengqiao_store::access`]) as service `service`, before the refusal is answered
    /// (个人信息保护法 Art 51: audit; the router keeps its own hash-chained audit instead).
    pub fn audit_denials(
        &self,
        path_prefix: &str,
        store: fengqiao_store::Store,
        service: &'static str,
    ) {
        self.inner
            .denials
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(DenialSink {
                prefix: path_prefix.to_string(),
                store,
                service,
            });
    }

    fn denial_sink(&self, path: &str) -> Option<DenialSink> {
        self.inner
            .denials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|d| path.starts_with(&d.prefix))
            .cloned()
    }

    /// Records a refusal of `path` if a sink covers it; a failure to record is logged.
    async fn record_denial(&self, path: &str, who: Option<&Identity>, reason: &str) {
        let Some(sink) = self.denial_sink(path) else {
            return;
        };
        let a = fengqiao_store::access::Access {
            service: sink.service.to_string(),
            agency: who.map(|w| w.agency.clone()).unwrap_or_default(),
            actor: who.map(|w| w.actor.clone()).unwrap_or_default(),
            person: who.map(|w| w.person().to_string()).unwrap_or_default(),
            method: method_label(path).to_string(),
            resource: String::new(),
            case_id: None,
            outcome: fengqiao_store::access::Outcome::Denied,
            fields: String::new(),
            reason: reason.to_string(),
            recorded_at: 0,
        };
        if let Err(e) = fengqiao_store::access::record_now(&sink.store, &a).await {
            tracing::warn!(error = %e, "could not write a refused call to the access log");
        }
    }

    fn authenticate(&self, req: &http::Request<Body>) -> Result<Identity, AuthError> {
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(h) = header {
            let token = bearer_token(h).ok_or(AuthError::Malformed("expected a Bearer token"))?;
            return self.inner.verifier.verify(token, crate::auth::unix_now());
        }
        // No token: a client certificate mapped to an agency identifies a peer service.
        if let Some(info) = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()
            && let Some(certs) = info.peer_certs()
            && let Some(leaf) = certs.first()
        {
            let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            if let Some(agency) = self.inner.peer_agencies.get(&hex) {
                return Ok(Identity {
                    agency: agency.clone(),
                    actor: format!("service:{agency}"),
                    roles: vec!["service".into()],
                    method: AuthMethod::MutualTls,
                    person: None,
                });
            }
        }
        Err(AuthError::Missing)
    }
}

/// The token of an `authorization` value `Bearer <token>`. The scheme is matched without
/// regard to case (RFC 9110 §11.1: `bearer`, `BEARER` are the same scheme; `Bearer` is the
/// canonical spelling); one or more spaces separate it from the token; nothing else is a
/// bearer token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    (!token.is_empty() && !token.contains(' ')).then_some(token)
}

/// Paths that need no token: health checks and reflection.
fn is_public(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Parses the `grpc-timeout` header (e.g. `500m`, `10S`).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The tower layer applying [`Guard`].
#[derive(Clone, Debug)]
pub struct GuardLayer(pub Guard);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = GuardService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GuardService {
            inner,
            guard: self.0.clone(),
        }
    }
}

/// The middleware service.
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    inner: S,
    guard: Guard,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for GuardService<S>
where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        let path = req.uri().path().to_string();
        let label = method_label(&path).to_string();
        // OTel semantic conventions for gRPC server spans (telemetry: issue #15); an unknown
        // method shares one label value (bounded series, issue #14).
        let (rpc_service, rpc_method) = crate::telemetry::split_grpc_path(&label);
        let span = tracing::info_span!(
            "rpc",
            otel.name = %label.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %rpc_service,
            rpc.method = %rpc_method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            agency = tracing::field::Empty,
        );
        crate::telemetry::set_parent_from(&span, req.headers());
        let start = Instant::now();
        let g = guard.inner.clone();
        g.metrics.rpc_in_flight.inc();
        let finisher = Finisher {
            metrics: g.metrics.clone(),
            method: label,
            start,
            span: span.clone(),
            done: false,
            slot: None,
        };

        Box::pin(
            async move {
                let refuse = |e: ApiError, mut f: Finisher| {
                    f.finish(e.code());
                    Ok(e.to_status().into_http::<Body>())
                };
                if let Err(e) = check_header_size(req.headers()) {
                    tracing::info!(reason = e.reason.as_str(), "call refused: {}", e.message);
                    return refuse(e, finisher);
                }
                let mut finisher = finisher;
                let Ok(permit) = g.permits.clone().try_acquire_owned() else {
                    return refuse(
                        ApiError::new(
                            Reason::ServerOverloaded,
                            "server is at its concurrency limit; retry with backoff",
                        ),
                        finisher,
                    );
                };
                let mut who: Option<Identity> = None;
                if !is_public(&path) {
                    match guard.authenticate(&req) {
                        Ok(id) => {
                            tracing::Span::current().record("agency", id.agency.as_str());
                            if let Err(wait) = g.limiter.take(&id.agency, Instant::now()) {
                                return refuse(
                                    ApiError::new(
                                        Reason::RateLimited,
                                        format!(
                                            "agency rate limit exceeded; retry in {} ms",
                                            wait.as_millis().max(1)
                                        ),
                                    ),
                                    finisher,
                                );
                            }
                            if is_streaming(&path) {
                                match g.open_stream(Some(&id.agency)) {
                                    Ok(slot) => finisher.slot = Some(slot),
                                    Err(e) => return refuse(e, finisher),
                                }
                            }
                            who = Some(id.clone());
                            req.extensions_mut().insert(id);
                        }
                        Err(e) => {
                            tracing::info!(reason = e.reason().as_str(), "call refused: {e}");
                            guard.record_denial(&path, None, e.reason().as_str()).await;
                            return refuse(ApiError::new(e.reason(), e.to_string()), finisher);
                        }
                    }
                } else if is_streaming(&path) {
                    match g.open_stream(None) {
                        Ok(slot) => finisher.slot = Some(slot),
                        Err(e) => return refuse(e, finisher),
                    }
                }
                let default = Duration::from_millis(g.limits.request_timeout_ms);
                let deadline = grpc_timeout(req.headers()).map_or(default, |t| t.min(default));
                // A deadline of zero has passed already: refuse without starting the work (a
                // timer of zero would still poll the call once, and a fast answer, e.g. an
                // idempotent replay, would win the race against it).
                if deadline.is_zero() {
                    return refuse(
                        ApiError::new(
                            Reason::DeadlineExceeded,
                            "the call's deadline had passed when it arrived",
                        ),
                        finisher,
                    );
                }
                let resp = match tokio::time::timeout(deadline, inner.call(req)).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        return refuse(
                            ApiError::new(
                                Reason::DeadlineExceeded,
                                "the call did not finish within its deadline",
                            ),
                            finisher,
                        );
                    }
                };
                drop(permit);
                // A body tonic could not decode is the client's fault (see `client_fault`).
                if let Some(e) = client_fault(resp.headers(), g.limits.max_message_bytes) {
                    return refuse(e, finisher);
                }
                // An error answered before any message carries its status in the headers.
                if let Some(code) = header_code(resp.headers()) {
                    if matches!(code, Code::PermissionDenied | Code::Unauthenticated) {
                        let reason = tonic::Status::from_header_map(resp.headers())
                            .and_then(|st| crate::error::reason_of(&st))
                            .unwrap_or_else(|| code_name(code).to_string());
                        guard.record_denial(&path, who.as_ref(), &reason).await;
                    }
                    let mut f = finisher;
                    f.finish(code);
                    return Ok(resp);
                }
                let (parts, body) = resp.into_parts();
                Ok(http::Response::from_parts(
                    parts,
                    Body::new(MeteredBody {
                        inner: body,
                        finisher,
                    }),
                ))
            }
            .instrument(span),
        )
    }
}

fn header_code(headers: &http::HeaderMap) -> Option<Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    v.parse::<i32>().ok().map(Code::from_i32)
}

/// Records a call's outcome once.
struct Finisher {
    metrics: Metrics,
    method: String,
    start: Instant,
    span: tracing::Span,
    done: bool,
    /// The stream slot a streaming call holds until it ends.
    slot: Option<StreamSlot>,
}

impl Finisher {
    fn finish(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        self.slot = None;
        self.metrics.rpc_in_flight.dec();
        self.metrics
            .observe(&self.method, code, self.start.elapsed().as_secs_f64());
        self.span.record("rpc.grpc.status_code", code as i32);
        if !matches!(code, Code::Ok) {
            self.span.record("otel.status_code", "ERROR");
        }
        tracing::debug!(parent: &self.span, code = code_name(code), "rpc finished");
    }
}

impl Drop for Finisher {
    fn drop(&mut self) {
        // The client went away before the call ended.
        self.finish(Code::Cancelled);
    }
}

/// A response body that records the call's status from its trailers.
struct MeteredBody {
    inner: Body,
    finisher: Finisher,
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = header_code(trailers).unwrap_or(Code::Ok);
                    this.finisher.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.finisher.finish(status.code()),
            Poll::Ready(None) => this.finisher.finish(Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Bytes a client sends first on a plain-text connection: the HTTP/2 preface (24 bytes) and
/// the header of its SETTINGS frame (9 bytes). Over TLS the ClientHello is longer than this.
const HANDSHAKE_BYTES: usize = 24 + 9;

/// A connection that must deliver its first [`HANDSHAKE_BYTES`] within a deadline, else reads
/// fail with `TimedOut` and the connection is closed: hyper has no header-read timeout for
/// HTTP/2, and its keep-alive pings start only after the preface, so a client trickling the
/// preface would otherwise hold a connection for ever.
pub struct HandshakeDeadline {
    io: tokio::net::TcpStream,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    missing: usize,
}

impl HandshakeDeadline {
    /// Wraps an accepted connection; the clock starts now.
    pub fn new(io: tokio::net::TcpStream, within: Duration) -> Self {
        Self {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            missing: HANDSHAKE_BYTES,
        }
    }
}

impl tokio::io::AsyncRead for HandshakeDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(deadline) = this.deadline.as_mut() {
            if let Poll::Ready(Ok(())) = &polled {
                this.missing = this
                    .missing
                    .saturating_sub(buf.filled().len().saturating_sub(before));
                if this.missing == 0 {
                    this.deadline = None;
                    return polled;
                }
            }
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client did not send the HTTP/2 preface in time",
                )));
            }
        }
        polled
    }
}

impl tokio::io::AsyncWrite for HandshakeDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for HandshakeDeadline {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// A server being set up: health starts NOT_SERVING for every named service.
pub struct ServerBuilder {
    routes: tonic::service::RoutesBuilder,
    health: Health,
    names: Vec<String>,
    in_process: Option<crate::client::InProcessListener>,
    cors_allowed_origins: Vec<String>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("names", &self.names)
            .finish()
    }
}

/// A running server.
pub struct RunningServer {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// Health of its services.
    pub health: Health,
    trigger: ShutdownTrigger,
    join: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    in_process: Option<InProcessServer>,
}

/// The in-process side of a server (see [`ServerBuilder::also_in_process`]): its own
/// shutdown, fired only after the network side has drained.
struct InProcessServer {
    trigger: ShutdownTrigger,
    join: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// A builder with the health service registered.
    pub fn new() -> Self {
        let (reporter, health_svc) = tonic_health::server::health_reporter();
        let mut routes = Routes::builder();
        routes.add_service(health_svc);
        Self {
            routes,
            health: Health {
                reporter,
                names: Vec::new(),
            },
            names: Vec::new(),
            in_process: None,
            cors_allowed_origins: Vec::new(),
        }
    }

    /// Browser origins allowed to call the JSON gateway and gRPC-Web (`http.cors_allowed_origins`).
    pub fn cors_allowed_origins(&mut self, origins: Vec<String>) -> &mut Self {
        self.cors_allowed_origins = origins;
        self
    }

    /// Also serves the same services, behind the same middleware, to the in-process channel
    /// whose other end is `listener` (see [`crate::client::in_process`]). On
    /// [`RunningServer::shutdown`] the in-process side keeps serving until the network side has
    /// drained, so calls that co-located services make while finishing their own in-flight
    /// calls still reach their peer.
    pub fn also_in_process(&mut self, listener: crate::client::InProcessListener) -> &mut Self {
        self.in_process = Some(listener);
        self
    }

    /// Health of the services added so far (and later).
    pub fn health(&self) -> Health {
        Health {
            reporter: self.health.reporter.clone(),
            names: self.names.clone(),
        }
    }

    /// Adds a generated tonic server; its health is reported under its full gRPC name.
    pub fn add<S>(&mut self, svc: S) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        let name = S::NAME;
        self.routes.add_service(svc);
        self.names.push(name.to_string());
        self.health.names.push(name.to_string());
        self
    }

    /// Names of the services added.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Starts serving on `listener` with reflection (v1 and v1alpha) over `descriptor_sets`.
    /// Health stays NOT_SERVING until the caller sets it.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        guard: Guard,
        tls: Option<tonic::transport::ServerTlsConfig>,
        trigger: ShutdownTrigger,
    ) -> Result<RunningServer, ServeError> {
        let ServerBuilder {
            mut routes,
            health,
            names: _,
            in_process,
            cors_allowed_origins,
        } = self;
        health.set_all(false).await;
        let refl_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fengqiao_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        let refl_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(fengqiao_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        routes.add_service(refl_v1);
        routes.add_service(refl_v1alpha);

        let addr = listener.local_addr()?;
        let mut server = tonic::transport::Server::builder()
            // HTTP/1.1 for the JSON gateway (crate::gateway); gRPC stays HTTP/2.
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .http2_max_header_list_size(H2_MAX_HEADER_LIST_BYTES);
        if let Some(tls) = tls {
            server = server
                .tls_config(tls)
                .map_err(|e| ServeError::Tls(e.to_string()))?;
        }
        let shutdown = trigger.subscribe();
        let handshake = Duration::from_millis(guard.inner.limits.handshake_timeout_ms);
        // Small gRPC frames must not wait for Nagle's algorithm (a ~40 ms stall per call
        // against delayed ACKs): every accepted connection gets TCP_NODELAY.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            move |conn| {
                conn.and_then(|s| {
                    s.set_nodelay(true)?;
                    Ok(HandshakeDeadline::new(s, handshake))
                })
            },
        );
        let routes = routes.routes();
        let in_process = in_process.map(|listener| {
            // No TLS in-process: nothing leaves the process. Same routes, same guard.
            let router = tonic::transport::Server::builder()
                .http2_max_header_list_size(H2_MAX_HEADER_LIST_BYTES)
                .layer(GuardLayer(guard.clone()))
                .add_routes(routes.clone());
            let (local_trigger, local_shutdown) = shutdown_pair();
            let join = tokio::spawn(async move {
                router
                    .serve_with_incoming_shutdown(listener.into_incoming(), async move {
                        local_shutdown.wait().await
                    })
                    .await
            });
            InProcessServer {
                trigger: local_trigger,
                join,
            }
        });
        // Outermost: JSON over HTTP goes through the gateway, which calls the guarded routes
        // (the same middleware and services) as gRPC; gRPC passes straight through.
        let gateway = crate::gateway::layer(
            guard.inner.limits.max_message_bytes.saturating_mul(4),
            cors_allowed_origins,
        );
        let router = server
            .layer(gateway)
            .layer(GuardLayer(guard))
            .add_routes(routes);
        let join = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async move { shutdown.wait().await })
                .await
        });
        Ok(RunningServer {
            addr,
            health,
            trigger,
            join,
            in_process,
        })
    }
}

impl RunningServer {
    /// The shutdown trigger (also used by workers and streams of this server).
    pub fn trigger(&self) -> &ShutdownTrigger {
        &self.trigger
    }

    /// Graceful stop: NOT_SERVING, stop accepting, let in-flight calls finish within `grace`;
    /// then the in-process side (if any) stops the same way within what is left of `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let until = tokio::time::Instant::now() + grace;
        self.health.set_all(false).await;
        self.trigger.trigger();
        drain(self.join, until, "server").await;
        if let Some(local) = self.in_process {
            local.trigger.trigger();
            drain(local.join, until, "in-process server").await;
        }
    }

    /// Resolves when the server task ends on its own (e.g. after the trigger fired).
    pub async fn wait(&mut self) {
        let _ = (&mut self.join).await;
    }
}

/// Waits for a server task until `until`, then aborts it.
async fn drain(
    mut join: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    until: tokio::time::Instant,
    what: &'static str,
) {
    match tokio::time::timeout_at(until, &mut join).await {
        Ok(Ok(Ok(()))) => tracing::info!(what, "drained"),
        Ok(Ok(Err(e))) => tracing::warn!(what, error = %e, "ended with an error"),
        Ok(Err(e)) => tracing::warn!(what, error = %e, "task failed"),
        Err(_) => {
            tracing::warn!(what, "grace period over; closing remaining connections");
            join.abort();
        }
    }
}

/// Builds a TLS configuration from PEM files; with `client_ca`, clients must present a
/// certificate chaining to it (mutual TLS).
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<tonic::transport::ServerTlsConfig, ServeError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| ServeError::Tls(format!("{}: {e}", p.display())))
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    let mut cfg = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        cfg = cfg.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_refills() {
        let l = RateLimiter::new(10.0, 2.0);
        let t0 = Instant::now();
        assert!(l.take("a", t0).is_ok());
        assert!(l.take("a", t0).is_ok());
        assert!(l.take("a", t0).is_err(), "burst spent");
        assert!(l.take("b", t0).is_ok(), "buckets are per agency");
        assert!(
            l.take("a", t0 + Duration::from_millis(150)).is_ok(),
            "refilled"
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_nothing_else() {
        assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer   abc  "), Some("abc"));
        for bad in [
            "Basic abc",
            "Bearerabc",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "abc",
            "",
        ] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn methods_come_from_the_contracts() {
        let watch = "/fengqiao.router.v1.TransferService/WatchTransfers";
        assert_eq!(method_label(watch), watch);
        assert!(is_streaming(watch));
        let get = "/fengqiao.router.v1.TransferService/GetTransfer";
        assert_eq!(method_label(get), get);
        assert!(!is_streaming(get));
        assert!(is_streaming(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        for made_up in [
            "/fengqiao.router.v1.TransferService/Nope",
            "/x.Y/Z",
            "/",
            "/fengqiao.router.v1.TransferService/GetTransfer/extra",
        ] {
            assert_eq!(method_label(made_up), UNKNOWN_METHOD, "{made_up}");
        }
    }

    fn trailers_only(status: Status) -> http::HeaderMap {
        status.into_http::<Body>().headers().clone()
    }

    #[test]
    fn undecodable_bodies_are_the_clients_fault() {
        let decode = <prost_types::Timestamp as prost::Message>::decode(
            &[0x0a, 0x04, 0xff, 0xfe, 0xc3, 0x28][..],
        )
        .expect_err("a string where an int64 belongs");
        let e = client_fault(&trailers_only(Status::internal(format!("{decode}"))), 4096)
            .expect("mapped");
        assert_eq!(e.reason, Reason::MalformedMessage);
        assert_eq!(e.to_status().code(), Code::InvalidArgument);
        for m in [
            "Missing request message.",
            "Unexpected EOF decoding stream.",
        ] {
            let e = client_fault(&trailers_only(Status::internal(m)), 4096).expect(m);
            assert_eq!(e.reason, Reason::MalformedMessage);
        }
        let big = Status::out_of_range(
            "Error, decoded message length too large: found 5000 bytes, the limit is: 4096 bytes",
        );
        let e = client_fault(&trailers_only(big), 4096).expect("mapped");
        assert_eq!(e.reason, Reason::MessageTooLarge);
        assert_eq!(e.to_status().code(), Code::ResourceExhausted);
        assert_eq!(
            e.metadata.get("limit_bytes").map(String::as_str),
            Some("4096")
        );
        // A server fault stays one, and errors the services built are left alone.
        assert!(client_fault(&trailers_only(Status::internal("poisoned")), 4096).is_none());
        let built = ApiError::internal(&"failed to decode Protobuf message: stored row");
        assert!(client_fault(&trailers_only(built.to_status()), 4096).is_none());
        assert!(client_fault(&http::HeaderMap::new(), 4096).is_none());
    }

    #[test]
    fn oversized_metadata_is_refused() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer abc"),
        );
        assert!(check_header_size(&h).is_ok());
        let long = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_BYTES));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&long).expect("value"),
        );
        assert_eq!(
            check_header_size(&h).err().map(|e| e.reason),
            Some(Reason::TokenMalformed)
        );
        let mut h = http::HeaderMap::new();
        for i in 0..4 {
            h.insert(
                http::HeaderName::from_bytes(format!("x-pad-{i}").as_bytes()).expect("name"),
                http::HeaderValue::from_str(&"p".repeat(MAX_HEADER_BYTES / 4)).expect("value"),
            );
        }
        assert_eq!(
            check_header_size(&h).err().map(|e| e.reason),
            Some(Reason::HeadersTooLarge)
        );
    }

    #[test]
    fn grpc_timeout_parses() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", http::HeaderValue::from_static("250m"));
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(250)));
        h.insert("grpc-timeout", http::HeaderValue::from_static("3S"));
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(3)));
        h.insert("grpc-timeout", http::HeaderValue::from_static("x"));
        assert_eq!(grpc_timeout(&h), None);
    }
}
