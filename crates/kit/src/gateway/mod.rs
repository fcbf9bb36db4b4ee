//! JSON over HTTP for every RPC, generated from the contracts' descriptor set.
//!
//! Every method carries a `google.api.http` rule (AIP-127; written by
//! `scripts/http-annotations.py`). [`GatewayLayer`] sits in front of the server's middleware:
//! a request whose `content-type` is `application/grpc…` passes through untouched; any other
//! request (HTTP/1.1 or HTTP/2, `application/json` or none) is matched against the rules, its
//! path variables, query parameters and JSON body are turned into the method's request
//! message in the proto3 JSON mapping (prost-reflect), and the message is sent as a gRPC call
//! *into the same middleware and services* (authentication from `Authorization: Bearer`, rate
//! limits, deadlines, idempotency, audit: nothing is implemented twice). The answer comes back
//! as the response message in the proto3 JSON mapping, or as the `google.rpc.Status` in JSON
//! (`code`, `message` and the same `details`: `ErrorInfo`, `BadRequest`,
//! `PreconditionFailure`, ...) under the HTTP status AIP-193 maps the gRPC code to.
//!
//! gRPC-Web (`application/grpc-web…`, HTTP/1.1 or 2) is translated by tonic-web into the same
//! middleware. Browsers of the origins listed in `http.cors_allowed_origins` may call both
//! (CORS preflight answered, `Access-Control-Allow-Origin` echoed); none is listed by default,
//! and a preflight from any other origin is 403.
//!
//! The OpenAPI 3 document of all of it is served at [`openapi::PATH`] (`/openapi.json`), and
//! the web console's static files at [`console::PREFIX`] (`/console/`), a page that calls
//! this gateway on the same origin.
//!
//! Deadlines: a `grpc-timeout` header is passed on as it is; `X-Server-Timeout: <seconds>`
//! (Google's HTTP convention, decimal seconds) becomes one. Server-streaming methods
//! (`Watch…`, `PullMessages`) answer newline-delimited JSON (`application/x-ndjson`: one
//! `{"result": …}` line per message, a last `{"error": …}` line if the stream fails), resumable with the same cursors as over gRPC. The contracts have no
//! client-streaming method; one would answer 501 `UNIMPLEMENTED` / `NOT_BUILT`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use http_body_util::BodyExt as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor,
    SerializeOptions, Value as PValue,
};
use serde_json::{Map, Value};
use tonic::body::Body;
use tonic::{Code, Status};

use crate::error::{ApiError, Reason};

pub mod console;
pub mod openapi;

/// The HTTP status AIP-193 maps a gRPC code to.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as H;
    match code {
        Code::Ok => H::OK,
        Code::Cancelled => H::from_u16(499).unwrap_or(H::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => H::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => H::BAD_REQUEST,
        Code::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        Code::NotFound => H::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => H::CONFLICT,
        Code::PermissionDenied => H::FORBIDDEN,
        Code::Unauthenticated => H::UNAUTHORIZED,
        Code::ResourceExhausted => H::TOO_MANY_REQUESTS,
        Code::Unimplemented => H::NOT_IMPLEMENTED,
        Code::Unavailable => H::SERVICE_UNAVAILABLE,
    }
}

/// One piece of a path template.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    /// A literal segment.
    Lit(String),
    /// `*`: one non-empty segment.
    Wild,
}

/// A `google.api.http` path template of the forms the contracts use:
/// `/v1/lit/{field.path=lit/*/lit/*}/lit:verb` (variables without `=` stand for `*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segs: Vec<Seg>,
    /// (field path, first segment, one past the last segment) of each variable.
    vars: Vec<(String, usize, usize)>,
    verb: Option<String>,
}

impl Template {
    /// Parses a template; `None` for a form the gateway does not serve (`**`, no leading `/`).
    pub fn parse(t: &str) -> Option<Self> {
        let rest = t.strip_prefix('/')?;
        // The verb follows the last `:` outside a variable.
        let (path, verb) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('}') && !rest[i..].contains('/') => {
                (&rest[..i], Some(rest[i + 1..].to_string()))
            }
            _ => (rest, None),
        };
        let mut segs = Vec::new();
        let mut vars = Vec::new();
        let mut s = path;
        while !s.is_empty() {
            if let Some(r) = s.strip_prefix('{') {
                let end = r.find('}')?;
                let inner = &r[..end];
                let (field, pat) = inner.split_once('=').unwrap_or((inner, "*"));
                let start = segs.len();
                for p in pat.split('/') {
                    match p {
                        "*" => segs.push(Seg::Wild),
                        "**" | "" => return None,
                        lit => segs.push(Seg::Lit(lit.to_string())),
                    }
                }
                vars.push((field.to_string(), start, segs.len()));
                s = &r[end + 1..];
            } else {
                let end = s.find('/').unwrap_or(s.len());
                let lit = &s[..end];
                if lit.is_empty() || lit.contains(['*', '{', '}']) {
                    return None;
                }
                segs.push(Seg::Lit(lit.to_string()));
                s = &s[end..];
            }
            s = s.strip_prefix('/').unwrap_or(s);
        }
        Some(Self { segs, vars, verb })
    }

    /// The variables' values when `path` (still percent-encoded) matches.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(v) => rest.strip_suffix(v.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != self.segs.len() {
            return None;
        }
        for (seg, part) in self.segs.iter().zip(&parts) {
            match seg {
                Seg::Lit(l) if l == part => {}
                Seg::Wild if !part.is_empty() && (self.verb.is_some() || !part.contains(':')) => {}
                _ => return None,
            }
        }
        Some(
            self.vars
                .iter()
                .map(|(field, a, b)| {
                    let value: Vec<String> = parts[*a..*b].iter().map(|p| decode(p)).collect();
                    (field.clone(), value.join("/"))
                })
                .collect(),
        )
    }
}

/// Percent-decoding (`+` stays `+` in paths; see [`query`] for the query string).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The `key=value` pairs of a query string, decoded (`+` is a space).
fn query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

/// One served rule.
#[derive(Debug)]
pub struct Rule {
    /// HTTP method.
    pub verb: http::Method,
    /// The template as written in the contract.
    pub path: String,
    template: Template,
    /// `*`, a field name, or empty (no body).
    pub body: String,
    /// The RPC.
    pub method: MethodDescriptor,
}

impl Rule {
    /// The gRPC path of the rule's method, e.g. `/fengqiao.router.v1.TransferService/GetTransfer`.
    pub fn grpc_path(&self) -> String {
        format!(
            "/{}/{}",
            self.method.parent_service().full_name(),
            self.method.name()
        )
    }
}

/// The rules of every method of the contracts, and the descriptor pool they come from.
#[derive(Debug)]
pub struct Table {
    /// Contracts plus `google.rpc` (for error details).
    pub pool: DescriptorPool,
    /// Every rule; a rule with a `:verb` comes before the plain ones.
    pub rules: Vec<Rule>,
}

/// The rules, read once from the embedded descriptor sets.
pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut pool = DescriptorPool::new();
        // Both sets are compiled into the binary by fengqiao-proto's build script; a failure
        // here is a build defect, and a gateway without rules answers 404 to everything.
        if let Err(e) = pool.decode_file_descriptor_set(fengqiao_proto::FILE_DESCRIPTOR_SET) {
            tracing::error!("gateway: contracts descriptor set: {e}");
        }
        if let Err(e) = pool.decode_file_descriptor_set(fengqiao_proto::RPC_DESCRIPTOR_SET) {
            tracing::error!("gateway: google.rpc descriptor set: {e}");
        }
        let mut rules = Vec::new();
        if let Some(ext) = pool.get_extension_by_name("google.api.http") {
            for svc in pool.services() {
                if !svc.package_name().starts_with("fengqiao.") {
                    continue;
                }
                for method in svc.methods() {
                    let opts = method.options();
                    if !opts.has_extension(&ext) {
                        continue;
                    }
                    let PValue::Message(rule) = opts.get_extension(&ext).into_owned() else {
                        continue;
                    };
                    let text = |f: &str| {
                        rule.get_field_by_name(f)
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    };
                    let body = text("body");
                    for (name, verb) in [
                        ("get", http::Method::GET),
                        ("post", http::Method::POST),
                        ("patch", http::Method::PATCH),
                        ("put", http::Method::PUT),
                        ("delete", http::Method::DELETE),
                    ] {
                        let path = text(name);
                        if path.is_empty() {
                            continue;
                        }
                        let Some(template) = Template::parse(&path) else {
                            tracing::error!(path, "gateway: path template not served");
                            continue;
                        };
                        rules.push(Rule {
                            verb,
                            path,
                            template,
                            body: body.clone(),
                            method: method.clone(),
                        });
                    }
                }
            }
        }
        rules.sort_by_key(|r| r.template.verb.is_none());
        Table { pool, rules }
    })
}

/// The layer putting the gateway (and gRPC-Web, and CORS) in front of a gRPC service stack.
#[derive(Debug, Clone)]
pub struct GatewayLayer {
    max_body_bytes: usize,
    cors: Arc<Vec<String>>,
}

impl GatewayLayer {
    /// A gateway reading JSON bodies of at most `max_body_bytes`; browsers of the listed
    /// origins (exactly as the browser sends `Origin`, e.g. `https://console.example.cn`) may
    /// call it and gRPC-Web across origins; no origin is allowed by default.
    pub fn new(max_body_bytes: usize, cors_allowed_origins: Vec<String>) -> Self {
        Self {
            max_body_bytes,
            cors: Arc::new(cors_allowed_origins),
        }
    }
}

impl<S: Clone> tower::Layer<S> for GatewayLayer {
    type Service = GatewayService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GatewayService {
            web: tonic_web::GrpcWebLayer::new().layer(inner.clone()),
            inner,
            max_body_bytes: self.max_body_bytes,
            cors: self.cors.clone(),
        }
    }
}

/// gRPC through; gRPC-Web translated by tonic-web; everything else through the JSON gateway;
/// all three into the same `inner`. CORS answered for the allowed origins.
#[derive(Debug, Clone)]
pub struct GatewayService<S> {
    inner: S,
    web: tonic_web::GrpcWebService<S>,
    max_body_bytes: usize,
    cors: Arc<Vec<String>>,
}

/// Whether a request is gRPC (or gRPC-Web), which the JSON gateway leaves alone.
pub fn is_grpc(req: &http::Request<Body>) -> bool {
    content_type(req).is_some_and(|v| v.starts_with("application/grpc"))
}

fn content_type(req: &http::Request<Body>) -> Option<&str> {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// Response headers a browser script may read: the gRPC status (gRPC-Web) and the request id.
const EXPOSE: &str = "grpc-status,grpc-message,grpc-status-details-bin,content-type";

fn allowed_origin(cors: &[String], req: &http::Request<Body>) -> Option<http::HeaderValue> {
    let origin = req.headers().get(http::header::ORIGIN)?;
    let o = origin.to_str().ok()?;
    cors.iter().any(|a| a == o).then(|| origin.clone())
}

/// The answer to a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`): 204 with
/// the permissions for an allowed origin, 403 for any other.
fn preflight(origin: Option<http::HeaderValue>, req: &http::Request<Body>) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::empty());
    let Some(origin) = origin else {
        *resp.status_mut() = http::StatusCode::FORBIDDEN;
        return resp;
    };
    *resp.status_mut() = http::StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(http::header::VARY, http::HeaderValue::from_static("origin"));
    h.insert(
        http::header::ACCESS_CONTROL_ALLOW_METHODS,
        http::HeaderValue::from_static("GET, POST, PATCH, PUT, DELETE"),
    );
    let asked = req
        .headers()
        .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static("authorization, content-type"));
    h.insert(http::header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    h.insert(
        http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        http::HeaderValue::from_static(EXPOSE),
    );
    h.insert(
        http::header::ACCESS_CONTROL_MAX_AGE,
        http::HeaderValue::from_static("600"),
    );
    resp
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for GatewayService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let origin = allowed_origin(&self.cors, &req);
        if req.method() == http::Method::OPTIONS
            && req
                .headers()
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            let resp = preflight(origin, &req);
            return Box::pin(async move { Ok(resp) });
        }
        let with_cors = move |mut resp: http::Response<Body>| {
            if let Some(o) = origin {
                let h = resp.headers_mut();
                h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
                h.append(http::header::VARY, http::HeaderValue::from_static("origin"));
                h.insert(
                    http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    http::HeaderValue::from_static(EXPOSE),
                );
            }
            resp
        };
        if content_type(&req).is_some_and(|v| v.starts_with("application/grpc-web")) {
            // tonic-web answers 403 itself when the request has an Origin it was not told
            // about; the origin check is ours (above), so it sees no Origin.
            let mut req = req;
            req.headers_mut().remove(http::header::ORIGIN);
            let mut web = self.web.clone();
            return Box::pin(async move {
                let resp = match tower::ServiceExt::<http::Request<Body>>::ready(&mut web).await {
                    Ok(w) => w.call(req).await,
                    Err(never) => match never {},
                };
                match resp {
                    Ok(r) => Ok(with_cors(r)),
                    Err(never) => match never {},
                }
            });
        }
        if is_grpc(&req) {
            return Box::pin(inner.call(req));
        }
        let max = self.max_body_bytes;
        Box::pin(async move { Ok(with_cors(serve(inner, req, max).await)) })
    }
}

/// Answers one HTTP request.
pub async fn serve<S>(
    mut inner: S,
    req: http::Request<Body>,
    max_body_bytes: usize,
) -> http::Response<Body>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    let t = table();
    let path = req.uri().path().to_string();
    if console::is_console(&path) {
        return console::serve(&req);
    }
    if path == openapi::PATH && req.method() == http::Method::GET {
        return plain(
            http::StatusCode::OK,
            Bytes::from_static(openapi::document_bytes()),
        );
    }
    let mut path_known = false;
    let mut found = None;
    for rule in &t.rules {
        if let Some(vars) = rule.template.matches(&path) {
            path_known = true;
            if rule.verb == req.method() {
                found = Some((rule, vars));
                break;
            }
        }
    }
    let Some((rule, vars)) = found else {
        let e = ApiError::new(
            Reason::NotFound,
            if path_known {
                format!("{} is not served with {}", path, req.method())
            } else {
                format!("no method is served at {path}")
            },
        );
        let mut resp = error_response(&t.pool, &e.to_status());
        if path_known {
            *resp.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
        }
        return resp;
    };
    if rule.method.is_client_streaming() {
        return error_response(
            &t.pool,
            &ApiError::new(
                Reason::NotBuilt,
                format!(
                    "{} takes a stream of requests, which HTTP/JSON does not carry; call it over gRPC",
                    rule.grpc_path()
                ),
            )
            .to_status(),
        );
    }
    let (mut parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, max_body_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let e = ApiError::new(
                Reason::MessageTooLarge,
                format!("the request body is larger than {max_body_bytes} bytes or was cut off"),
            )
            .with_metadata("limit_bytes", max_body_bytes.to_string());
            return error_response(&t.pool, &e.to_status());
        }
    };
    let message = match build_request(rule, &vars, parts.uri.query().unwrap_or(""), &body) {
        Ok(m) => m,
        Err(e) => return error_response(&t.pool, &e.to_status()),
    };
    // The gRPC call: length-prefixed message, the caller's headers (token, trace context,
    // deadline), the connection's extensions (peer address, client certificate).
    let encoded = message.encode_to_vec();
    let mut framed = Vec::with_capacity(encoded.len() + 5);
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(encoded.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&encoded);
    let mut grpc = http::Request::new(Body::new(http_body_util::Full::new(Bytes::from(framed))));
    *grpc.method_mut() = http::Method::POST;
    *grpc.version_mut() = http::Version::HTTP_2;
    *grpc.uri_mut() = match rule.grpc_path().parse() {
        Ok(u) => u,
        Err(_) => return error_response(&t.pool, &Status::internal("bad method path")),
    };
    let headers = grpc.headers_mut();
    for (k, v) in &parts.headers {
        if !is_hop_or_content(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    if !headers.contains_key("grpc-timeout")
        && let Some(t) = parts
            .headers
            .get("x-server-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
        && let Ok(v) = http::HeaderValue::from_str(&format!("{}m", (t * 1000.0).ceil() as u64))
    {
        headers.insert("grpc-timeout", v);
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert("te", http::HeaderValue::from_static("trailers"));
    *grpc.extensions_mut() = std::mem::take(&mut parts.extensions);

    let resp = match inner.call(grpc).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (rparts, rbody) = resp.into_parts();
    if let Some(status) = Status::from_header_map(&rparts.headers) {
        return status_or_ok(&t.pool, status, None, rule);
    }
    if rule.method.is_server_streaming() {
        let mut resp = http::Response::new(Body::new(NdjsonBody {
            inner: rbody,
            buf: bytes::BytesMut::new(),
            output: rule.method.output(),
            done: false,
        }));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        );
        return resp;
    }
    match rbody.collect().await {
        Err(status) => error_response(&t.pool, &status),
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            let data = collected.to_bytes();
            let status = trailers
                .as_ref()
                .and_then(Status::from_header_map)
                .unwrap_or_else(|| Status::internal("the call ended without a status"));
            status_or_ok(&t.pool, status, Some(data), rule)
        }
    }
}

/// A server stream as newline-delimited JSON: one `{"result": <message>}` line per message,
/// and, when the stream ends with an error, a last `{"error": <google.rpc.Status>}` line (the
/// HTTP status, sent before the first message, is 200 then). Resuming works as over gRPC:
/// pass the last message's cursor (`resumeToken`, `cursor`) in the next request.
struct NdjsonBody {
    inner: Body,
    buf: bytes::BytesMut,
    output: MessageDescriptor,
    done: bool,
}

impl NdjsonBody {
    /// The JSON lines of the complete gRPC frames in `buf`.
    fn lines(&mut self) -> Result<Vec<u8>, Status> {
        let mut out = Vec::new();
        while self.buf.len() >= 5 {
            let len =
                u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if self.buf.len() < 5 + len {
                break;
            }
            if self.buf[0] != 0 {
                return Err(Status::internal("a compressed message in the stream"));
            }
            let frame = self.buf.split_to(5 + len);
            let msg = DynamicMessage::decode(self.output.clone(), &frame[5..])
                .map_err(|e| Status::internal(format!("a stream message undecodable: {e}")))?;
            let v = msg
                .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
                .map_err(|e| Status::internal(format!("a stream message not JSON: {e}")))?;
            out.extend_from_slice(
                &serde_json::to_vec(&serde_json::json!({ "result": v })).unwrap_or_default(),
            );
            out.push(b'\n');
        }
        Ok(out)
    }

    fn error_line(status: &Status) -> Bytes {
        let mut v =
            serde_json::to_vec(&serde_json::json!({ "error": status_json(&table().pool, status) }))
                .unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

impl http_body::Body for NdjsonBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(status))) => {
                    this.done = true;
                    return Poll::Ready(Some(Ok(http_body::Frame::data(Self::error_line(
                        &status,
                    )))));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.buf.extend_from_slice(&data);
                        match this.lines() {
                            Ok(lines) if lines.is_empty() => continue,
                            Ok(lines) => {
                                return Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(
                                    lines,
                                )))));
                            }
                            Err(status) => {
                                this.done = true;
                                return Poll::Ready(Some(Ok(http_body::Frame::data(
                                    Self::error_line(&status),
                                ))));
                            }
                        }
                    }
                    Err(frame) => {
                        this.done = true;
                        let status = frame
                            .trailers_ref()
                            .and_then(Status::from_header_map)
                            .unwrap_or_else(|| {
                                Status::internal("the stream ended without a status")
                            });
                        if status.code() == Code::Ok {
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Ok(http_body::Frame::data(Self::error_line(
                            &status,
                        )))));
                    }
                },
            }
        }
    }
}

/// Headers not passed on into the gRPC call.
fn is_hop_or_content(k: &http::HeaderName) -> bool {
    matches!(
        k.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "content-type"
            | "content-length"
            | "content-encoding"
            | "accept-encoding"
            | "grpc-encoding"
            | "grpc-accept-encoding"
            | "x-server-timeout"
    )
}

fn status_or_ok(
    pool: &DescriptorPool,
    status: Status,
    data: Option<Bytes>,
    rule: &Rule,
) -> http::Response<Body> {
    if status.code() != Code::Ok {
        return error_response(pool, &status);
    }
    let mut data = data.unwrap_or_default();
    if data.len() < 5 || data[0] != 0 {
        return error_response(pool, &Status::internal("the answer carried no message"));
    }
    data.advance(1);
    let len = data.get_u32() as usize;
    let Some(msg) = data.get(..len) else {
        return error_response(pool, &Status::internal("the answer was cut off"));
    };
    match DynamicMessage::decode(rule.method.output(), msg) {
        Ok(m) => json_response(http::StatusCode::OK, &m),
        Err(e) => error_response(pool, &Status::internal(format!("answer undecodable: {e}"))),
    }
}

fn json_response(code: http::StatusCode, m: &DynamicMessage) -> http::Response<Body> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    if let Err(e) = m.serialize_with_options(&mut ser, &SerializeOptions::new()) {
        tracing::error!("gateway: answer not serialisable as JSON: {e}");
        return plain(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"code":13,"message":"the answer could not be written as JSON"}"#.into(),
        );
    }
    let mut resp = plain(code, Bytes::from(out));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn plain(code: http::StatusCode, body: Bytes) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::new(http_body_util::Full::new(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The `google.rpc.Status` of `status` as JSON: the details the services attached (decoded
/// from `grpc-status-details-bin`), or code and message alone.
pub fn status_json(pool: &DescriptorPool, status: &Status) -> Value {
    if !status.details().is_empty()
        && let Some(desc) = pool.get_message_by_name("google.rpc.Status")
        && let Ok(m) = DynamicMessage::decode(desc, status.details())
        && let Ok(v) =
            m.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
    {
        return v;
    }
    serde_json::json!({ "code": status.code() as i32, "message": status.message() })
}

fn error_response(pool: &DescriptorPool, status: &Status) -> http::Response<Body> {
    let body = serde_json::to_vec(&status_json(pool, status)).unwrap_or_default();
    plain(http_status(status.code()), Bytes::from(body))
}

/// The request message: the body (all of it, or one field), path variables, then query
/// parameters for the fields neither sets.
fn build_request(
    rule: &Rule,
    vars: &[(String, String)],
    query_string: &str,
    body: &[u8],
) -> Result<DynamicMessage, ApiError> {
    let input = rule.method.input();
    let malformed = |what: String| {
        ApiError::new(
            Reason::MalformedMessage,
            format!("the request is not a valid {}: {what}", input.name()),
        )
    };
    let parsed: Option<Value> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(body).map_err(|e| malformed(format!("body: {e}")))?)
    };
    let mut root = Map::new();
    match (rule.body.as_str(), parsed) {
        (_, None) => {}
        ("", Some(_)) => return Err(malformed("this method takes no body".into())),
        ("*", Some(Value::Object(m))) => root = m,
        ("*", Some(_)) => return Err(malformed("the body must be a JSON object".into())),
        (field, Some(v)) => {
            root.insert(field.to_string(), v);
        }
    }
    for (field, value) in vars {
        set_path(&mut root, field, Value::String(value.clone()));
    }
    if rule.body != "*" {
        let mut repeated: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (k, v) in query(query_string) {
            let (kind, is_list) = field_kind(&input, &k)
                .ok_or_else(|| malformed(format!("no field {k:?} for a query parameter")))?;
            let value = match kind {
                Kind::Bool => match v.as_str() {
                    "true" | "1" | "" => Value::Bool(true),
                    "false" | "0" => Value::Bool(false),
                    _ => return Err(malformed(format!("{k}: not a boolean"))),
                },
                Kind::Message(_) if is_list => {
                    return Err(malformed(format!(
                        "{k}: a message list cannot be a query parameter"
                    )));
                }
                _ => Value::String(v),
            };
            if is_list {
                repeated.entry(k).or_default().push(value);
            } else {
                set_path(&mut root, &k, value);
            }
        }
        for (k, vs) in repeated {
            set_path(&mut root, &k, Value::Array(vs));
        }
    }
    DynamicMessage::deserialize_with_options(
        input.clone(),
        Value::Object(root),
        &DeserializeOptions::new(),
    )
    .map_err(|e| malformed(without_values(&e.to_string())))
}

/// A JSON mapping error without the values it quotes (serde writes a rejected value in double
/// quotes, field names in backticks): a value may be personal information, which no error
/// carries.
fn without_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut quoted = false;
    for c in msg.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

/// Sets `a.b.c` in a JSON object, creating the objects on the way.
fn set_path(root: &mut Map<String, Value>, path: &str, value: Value) {
    let mut cur = root;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_string(), value);
            return;
        }
        let next = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        let Value::Object(m) = next else { return };
        cur = m;
    }
}

/// The kind of the field a dotted query key names (proto or JSON names), and whether it is
/// repeated.
fn field_kind(msg: &MessageDescriptor, path: &str) -> Option<(Kind, bool)> {
    let mut desc = msg.clone();
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let f = desc
            .get_field_by_name(p)
            .or_else(|| desc.get_field_by_json_name(p))?;
        if parts.peek().is_none() {
            return Some((f.kind(), f.is_list()));
        }
        match f.kind() {
            Kind::Message(m) if !f.is_list() && !f.is_map() => desc = m,
            _ => return None,
        }
    }
    None
}

/// Used by the OpenAPI writer and tests: the rules as (HTTP method, path, gRPC path).
pub fn routes() -> Vec<(String, String, String)> {
    table()
        .rules
        .iter()
        .map(|r| (r.verb.to_string(), r.path.clone(), r.grpc_path()))
        .collect()
}

/// Wraps a server stack so it also answers JSON over HTTP and gRPC-Web (see the module docs).
pub fn layer(max_body_bytes: usize, cors_allowed_origins: Vec<String>) -> GatewayLayer {
    GatewayLayer::new(max_body_bytes, cors_allowed_origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_their_paths_only() {
        let t = Template::parse("/v1/{name=transfers/*}:approve").expect("parses");
        assert_eq!(
            t.matches("/v1/transfers/abc:approve"),
            Some(vec![("name".into(), "transfers/abc".into())])
        );
        assert_eq!(t.matches("/v1/transfers/abc"), None);
        assert_eq!(t.matches("/v1/transfers/abc:reject"), None);
        assert_eq!(t.matches("/v1/transfers/:approve"), None);
        let g = Template::parse("/v1/{name=transfers/*}").expect("parses");
        assert_eq!(g.matches("/v1/transfers/abc:approve"), None);
        assert_eq!(
            g.matches("/v1/transfers/a%2Fb"),
            Some(vec![("name".into(), "transfers/a/b".into())])
        );
        let p =
            Template::parse("/v1/mediation/{parent=organizations/*}/mediators").expect("parses");
        assert_eq!(
            p.matches("/v1/mediation/organizations/o1/mediators"),
            Some(vec![("parent".into(), "organizations/o1".into())])
        );
        assert_eq!(p.matches("/v1/mediation/organizations/o1"), None);
        let u = Template::parse("/v1/{transfer.name=transfers/*}").expect("parses");
        assert_eq!(u.vars[0].0, "transfer.name");
        let l = Template::parse("/v1/transfers:watch").expect("parses");
        assert_eq!(l.matches("/v1/transfers:watch"), Some(vec![]));
        assert_eq!(l.matches("/v1/transfers"), None);
        assert!(Template::parse("/v1/{name=**}").is_none());
        assert!(Template::parse("v1/x").is_none());
    }

    #[test]
    fn every_rule_of_the_contracts_is_served() {
        let t = table();
        assert!(t.rules.len() >= 100, "{} rules", t.rules.len());
        assert!(t.pool.get_message_by_name("google.rpc.ErrorInfo").is_some());
        let get = t
            .rules
            .iter()
            .find(|r| r.grpc_path() == "/fengqiao.router.v1.TransferService/GetTransfer")
            .expect("GetTransfer has a rule");
        assert_eq!(get.verb, http::Method::GET);
        assert_eq!(get.path, "/v1/{name=transfers/*}");
    }

    #[test]
    fn aip_193_status_mapping() {
        use http::StatusCode as H;
        for (code, http) in [
            (Code::InvalidArgument, H::BAD_REQUEST),
            (Code::FailedPrecondition, H::BAD_REQUEST),
            (Code::Unauthenticated, H::UNAUTHORIZED),
            (Code::PermissionDenied, H::FORBIDDEN),
            (Code::NotFound, H::NOT_FOUND),
            (Code::AlreadyExists, H::CONFLICT),
            (Code::Aborted, H::CONFLICT),
            (Code::ResourceExhausted, H::TOO_MANY_REQUESTS),
            (Code::Unavailable, H::SERVICE_UNAVAILABLE),
            (Code::DeadlineExceeded, H::GATEWAY_TIMEOUT),
            (Code::Internal, H::INTERNAL_SERVER_ERROR),
            (Code::Unimplemented, H::NOT_IMPLEMENTED),
        ] {
            assert_eq!(http_status(code), http, "{code:?}");
        }
    }

    #[test]
    fn requests_are_built_from_path_query_and_body() {
        let t = table();
        let rule = |g: &str| t.rules.iter().find(|r| r.grpc_path() == g).expect("rule");
        let list = rule("/fengqiao.router.v1.TransferService/ListTransfers");
        let m = build_request(list, &[], "page_size=7&pageToken=x%20y", b"").expect("builds");
        let json = m
            .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
            .expect("json");
        assert_eq!(json["pageSize"], 7);
        assert_eq!(json["pageToken"], "x y");
        let err = build_request(list, &[], "no_such_field=1", b"").expect_err("unknown field");
        assert_eq!(err.reason, Reason::MalformedMessage);
        let approve = rule("/fengqiao.router.v1.TransferService/ApproveTransfer");
        let m = build_request(
            approve,
            &[("name".into(), "transfers/t1".into())],
            "",
            br#"{"etag": "e1", "name": "transfers/other"}"#,
        )
        .expect("builds");
        let json = m
            .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
            .expect("json");
        assert_eq!(json["name"], "transfers/t1", "the path wins over the body");
        assert_eq!(json["etag"], "e1");
        let err = build_request(approve, &[], "", b"[1]").expect_err("not an object");
        assert_eq!(err.reason, Reason::MalformedMessage);
        let get = rule("/fengqiao.router.v1.TransferService/GetTransfer");
        assert!(
            build_request(get, &[], "", b"{}").is_err(),
            "GET takes no body"
        );
        // A value of the wrong type is refused without being repeated (it may be personal).
        let create = rule("/fengqiao.policereferral.v1.PoliceReferralService/CreateReferral");
        let err = build_request(create, &[], "", br#"{"callTime": "110105194912310021"}"#)
            .expect_err("not a timestamp");
        assert_eq!(err.reason, Reason::MalformedMessage);
        assert!(
            !err.message.contains("110105194912310021"),
            "{}",
            err.message
        );
        assert_eq!(
            without_values(r#"invalid type: string "张某", expected `i32`"#),
            "invalid type: string \"…\", expected `i32`"
        );
    }
}
