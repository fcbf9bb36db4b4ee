//! Calling other services: channels, bearer tokens and trace-context propagation.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Buffer of each direction of an in-process connection.
const IN_PROCESS_BUFFER: usize = 256 * 1024;

/// Adds `authorization: Bearer …` (when set) and the current W3C trace context to every call.
#[derive(Clone, Debug, Default)]
pub struct CallInterceptor {
    token: Arc<RwLock<Option<String>>>,
}

impl CallInterceptor {
    /// An interceptor sending `token`.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: Arc::new(RwLock::new(token)),
        }
    }

    /// Replaces the token (e.g. after refreshing it).
    pub fn set_token(&self, token: Option<String>) {
        if let Ok(mut t) = self.token.write() {
            *t = token;
        }
    }
}

impl Interceptor for CallInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Ok(t) = self.token.read()
            && let Some(token) = t.as_deref()
        {
            let v: MetadataValue<_> = format!("Bearer {token}")
                .parse()
                .map_err(|_| tonic::Status::internal("token is not a valid header value"))?;
            req.metadata_mut().insert("authorization", v);
        }
        crate::telemetry::inject_current(req.metadata_mut());
        Ok(req)
    }
}

/// A lazily connecting channel to `uri` (e.g. `http://router:50051`), with TLS when given.
pub fn channel(
    uri: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let mut ep = Endpoint::from_shared(uri.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        ep = ep.tls_config(tls)?;
    }
    Ok(ep.connect_lazy())
}

/// The server side of [`in_process`]: the connections its channel opens, to be served by
/// [`crate::server::ServerBuilder::serve_in_process`].
#[derive(Debug)]
pub struct InProcessListener {
    rx: tokio::sync::mpsc::UnboundedReceiver<tokio::io::DuplexStream>,
}

impl InProcessListener {
    /// The connections as a stream of accepted I/O, ending when every channel is gone.
    pub fn into_incoming(
        self,
    ) -> impl tokio_stream::Stream<Item = Result<tokio::io::DuplexStream, std::io::Error>> {
        tokio_stream::StreamExt::map(
            tokio_stream::wrappers::UnboundedReceiverStream::new(self.rx),
            Ok,
        )
    }
}

/// A channel to a server in this process, over in-memory pipes (`tokio::io::duplex`) instead
/// of a socket: co-located services call each other through it, through the same tonic
/// services and middleware (authentication, limits, deadline) as remote callers, without a
/// loopback round trip, and independently of the network listener (which closes first on
/// SIGTERM). The channel connects lazily; calls fail UNAVAILABLE once the listener is gone.
pub fn in_process() -> (Channel, InProcessListener) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let connector = tower::service_fn(move |_: http::Uri| {
        let tx = tx.clone();
        async move {
            let (client, server) = tokio::io::duplex(IN_PROCESS_BUFFER);
            tx.send(server).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "the in-process server has stopped",
                )
            })?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
        }
    });
    let channel = Endpoint::from_static("http://in-process.fengqiao.invalid")
        .connect_with_connector_lazy(connector);
    (channel, InProcessListener { rx })
}

/// Whether a gRPC server answers on `channel` within `timeout`: its health reports SERVING,
/// or it answers health with UNIMPLEMENTED (a receiver that does not serve health but is up).
/// Used to notice that a receiver is back.
pub async fn answers(channel: Channel, timeout: Duration) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest::default());
    req.set_timeout(timeout);
    match tokio::time::timeout(timeout, client.check(req)).await {
        Ok(Ok(r)) => r.into_inner().status == ServingStatus::Serving as i32,
        Ok(Err(s)) => s.code() == tonic::Code::Unimplemented,
        Err(_) => false,
    }
}

/// A [`Channel`] whose calls are CLIENT spans (`rpc.system=grpc`, `rpc.service`, `rpc.method`,
/// `rpc.grpc.status_code`, OTel's semantic conventions) carrying their own W3C trace context
/// to the server, so that the callee's SERVER span is the child of the call, not of the
/// caller's SERVER span. The span lasts until the response's status (its trailers) arrives.
#[derive(Clone, Debug)]
pub struct TracedChannel(Channel);

impl TracedChannel {
    /// Traces the calls made on `channel`.
    pub fn new(channel: Channel) -> Self {
        Self(channel)
    }
}

impl From<Channel> for TracedChannel {
    fn from(channel: Channel) -> Self {
        Self(channel)
    }
}

/// Writes W3C trace context into HTTP/2 headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn record_status(span: &tracing::Span, code: i32) {
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "ERROR");
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for TracedChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        use tracing::Instrument as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let path = req.uri().path().to_string();
        let (service, method) = crate::telemetry::split_grpc_path(&path);
        let span = tracing::info_span!(
            "rpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(req.headers_mut()));
        });
        let call = tower::Service::call(&mut self.0, req);
        let inner_span = span.clone();
        Box::pin(
            async move {
                match call.await {
                    Ok(resp) => {
                        // A trailers-only answer (an error) has its status in the headers.
                        if let Some(code) = status_of(resp.headers()) {
                            record_status(&inner_span, code);
                            return Ok(resp);
                        }
                        let (parts, body) = resp.into_parts();
                        Ok(http::Response::from_parts(
                            parts,
                            tonic::body::Body::new(TracedBody {
                                inner: body,
                                span: Some(inner_span),
                            }),
                        ))
                    }
                    Err(e) => {
                        record_status(&inner_span, tonic::Code::Unavailable as i32);
                        Err(e)
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// A response body that ends its call's span when the status arrives.
struct TracedBody {
    inner: tonic::body::Body,
    span: Option<tracing::Span>,
}

impl TracedBody {
    fn finish(&mut self, code: i32) {
        if let Some(span) = self.span.take() {
            record_status(&span, code);
        }
    }
}

impl http_body::Body for TracedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(status_of(trailers).unwrap_or(0));
                }
            }
            Poll::Ready(Some(Err(status))) => this.finish(status.code() as i32),
            Poll::Ready(None) => this.finish(0),
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
