//! JSON over HTTP (crates/kit/src/gateway.rs), on SQLite and PostgreSQL, against the real
//! suite on its one port: every unary RPC of the contracts called over HTTP/1.1 answers what
//! the same request answers over gRPC (HTTP status per AIP-193, the same `google.rpc.Status`
//! and details, the same message), with and without a token; a 110 referral created and read
//! back over HTTP only; a call cut off by its deadline and retried with the same `request_id`
//! makes exactly one referral; streaming methods answer 501 / `NOT_BUILT`.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use fengqiao_kit::gateway::{http_status, status_json, table};
use fengqiao_scenarios::rid;
use fengqiao_testkit::{TestSuite, suite_test};
use prost::Message as _;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Value, json};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// One HTTP/1.1 exchange on a fresh connection: (status, JSON body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
    body: Option<String>,
) -> (u16, Value) {
    let (status, _, body) = http_raw(addr, method, path, headers, body).await;
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    (status, json)
}

fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &str,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req.into_bytes()
}

/// The status, the content type and the body (de-chunked) of a complete answer in `raw`, or
/// the part of the body complete so far.
fn parse_answer(raw: &[u8]) -> Option<(u16, String, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, mut rest) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let lower = head.to_ascii_lowercase();
    let content_type = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or("")
        .to_string();
    let mut body = String::new();
    if lower.contains("transfer-encoding: chunked") {
        while let Some((len, tail)) = rest.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
                break;
            };
            if n == 0 || tail.len() < n + 2 {
                break;
            }
            body.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
    } else {
        body = rest.to_string();
    }
    Some((status, content_type, body))
}

/// One HTTP/1.1 exchange read to the end: (status, content type, body).
async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
    body: Option<String>,
) -> (u16, String, String) {
    let req = request_bytes(addr, method, path, &headers, &body.unwrap_or_default());
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(&req).expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read");
        parse_answer(&raw).expect("an HTTP answer")
    })
    .await
    .expect("http task")
}

/// Opens a stream (GET `path`), says on `ready` when its headers arrived, and returns the
/// first `n` NDJSON lines whose `result` carries an `event` (heartbeats are skipped).
fn watch_events(
    addr: SocketAddr,
    path: String,
    token: String,
    n: usize,
    ready: std::sync::mpsc::Sender<u16>,
) -> Vec<Value> {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s.write_all(&request_bytes(addr, "GET", &path, &bearer(&token), ""))
        .expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut raw = Vec::new();
    let mut said_ready = false;
    let mut buf = [0u8; 8192];
    while std::time::Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => raw.extend_from_slice(&buf[..k]),
            Err(_) => {}
        }
        let Some((status, content_type, body)) = parse_answer(&raw) else {
            continue;
        };
        if !said_ready {
            said_ready = true;
            let _ = ready.send(status);
            assert_eq!(status, 200, "{body}");
            assert_eq!(content_type, "application/x-ndjson");
        }
        let events: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .filter(|v| !v["result"]["event"].is_null())
            .collect();
        if events.len() >= n {
            return events;
        }
    }
    panic!(
        "the stream gave fewer than {n} events: {}",
        String::from_utf8_lossy(&raw)
    );
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("Authorization".into(), format!("Bearer {token}"))]
}

/// Bytes in, bytes out: a gRPC call of any method with an encoded message.
#[derive(Clone, Default)]
struct Raw;
struct RawCoder;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;
    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }
    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

async fn grpc(
    suite: &TestSuite,
    path: &str,
    token: Option<&str>,
    msg: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut client = tonic::client::Grpc::new(suite.channel());
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("metadata"),
        );
    }
    let path = path.parse().expect("path");
    client
        .unary(req, path, Raw)
        .await
        .map(tonic::Response::into_inner)
}

/// A rule's path with every variable filled in (`*` → `gw-none`), and the variables.
fn fill(template: &str) -> (String, Vec<(String, String)>) {
    let mut path = String::new();
    let mut vars = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        path.push_str(&rest[..i]);
        let end = rest[i..].find('}').expect("closing brace") + i;
        let inner = &rest[i + 1..end];
        let (field, pat) = inner.split_once('=').unwrap_or((inner, "*"));
        let value = pat.replace('*', "gw-none");
        path.push_str(&value);
        vars.push((field.to_string(), value));
        rest = &rest[end + 1..];
    }
    path.push_str(rest);
    (path, vars)
}

fn set(root: &mut Value, dotted: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = dotted.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .as_object_mut()
            .expect("object")
            .entry(p.to_string())
            .or_insert_with(|| json!({}));
    }
    cur.as_object_mut()
        .expect("object")
        .insert(parts[parts.len() - 1].to_string(), value);
}

fn to_json(m: &DynamicMessage) -> Value {
    m.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .expect("serialisable")
}

/// Every unary RPC, the same minimal request both ways (path variables filled in, an empty
/// body): the same answer. `token` None: every call is UNAUTHENTICATED / 401 both ways.
async fn walk(suite: &TestSuite, token: Option<&str>) -> std::collections::BTreeMap<u16, usize> {
    let t = table();
    let mut checked = std::collections::BTreeMap::new();
    for rule in &t.rules {
        if rule.method.is_server_streaming() || rule.method.is_client_streaming() {
            continue;
        }
        let (path, vars) = fill(&rule.path);
        let mut root = json!({});
        let body = match rule.body.as_str() {
            "" => None,
            "*" => Some("{}".to_string()),
            field => {
                set(&mut root, field, json!({}));
                Some("{}".to_string())
            }
        };
        for (f, v) in &vars {
            set(&mut root, f, Value::String(v.clone()));
        }
        let input = DynamicMessage::deserialize(rule.method.input(), root).expect("request");
        let over_grpc = grpc(suite, &rule.grpc_path(), token, input.encode_to_vec()).await;
        let headers = token.map(bearer).unwrap_or_default();
        let (status, answer) = http(suite.addr, rule.verb.as_str(), &path, headers, body).await;
        let what = format!("{} {} ({})", rule.verb, path, rule.grpc_path());
        match over_grpc {
            Ok(bytes) => {
                let out = DynamicMessage::decode(rule.method.output(), bytes.as_slice())
                    .expect("answer decodes");
                assert_eq!(status, 200, "{what}: {answer}");
                assert_eq!(answer, to_json(&out), "{what}");
            }
            Err(s) => {
                assert_eq!(status, http_status(s.code()).as_u16(), "{what}: {answer}");
                assert_eq!(answer, status_json(&t.pool, &s), "{what}");
                assert_eq!(answer["code"], s.code() as i32, "{what}");
                if token.is_none() {
                    assert_eq!(s.code(), Code::Unauthenticated, "{what}");
                }
            }
        }
        *checked.entry(status).or_insert(0) += 1;
        // Stay under the per-agency rate limit (50/s, burst 100): two calls per method.
        if token.is_some() {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    checked
}

suite_test!(
    every_unary_rpc_answers_over_http_what_it_answers_over_grpc,
    |suite| async move {
        let admin = suite.token("xigang-justice-bureau", "admin", &["platform_admin"]);
        let by_status = walk(&suite, Some(&admin)).await;
        let n: usize = by_status.values().sum();
        assert!(n >= 95, "only {n} unary methods walked: {by_status:?}");
        // Both kinds of answer were compared: messages, and errors of several codes.
        assert!(
            by_status.get(&200).copied().unwrap_or(0) >= 5,
            "{by_status:?}"
        );
        assert!(by_status.len() >= 4, "{by_status:?}");
        eprintln!("walked {n} unary methods with a token, by HTTP status: {by_status:?}");
        let by_status = walk(&suite, None).await;
        assert_eq!(
            by_status.keys().collect::<Vec<_>>(),
            [&401],
            "{by_status:?}"
        );
        assert!(by_status[&401] >= 95, "{by_status:?}");
    }
);

fn referral_json(incident: &str) -> Value {
    json!({
        "incidentNumber": incident,
        "callTime": "2026-01-01T08:00:00Z",
        "caller": {"name": "王某", "phone": "13912345678"},
        "location": {"regionCode": "210203", "detail": "八一路某小区"},
        "category": "DISPUTE_CATEGORY_NEIGHBOURHOOD",
        "summary": "楼上住户夜间噪音扰民，双方发生口角",
        "parties": [
            {"role": "PARTY_ROLE_APPLICANT", "name": "张某", "idType": "ID_TYPE_RESIDENT_ID_CARD",
             "idNumber": "11010519491231002X", "phone": "13812345678"},
            {"role": "PARTY_ROLE_RESPONDENT", "name": "李某", "phone": "0411-82345678"}
        ],
        "onSceneHandling": "民警到场劝解，双方情绪平稳，同意调解",
        "policeStation": "agencies/xigang-bayilu-station"
    })
}

suite_test!(
    a_referral_created_and_read_back_over_http_only,
    |suite| async move {
        let dispatch = suite.token("xigang-110", "dispatch-system", &["dispatcher"]);
        let body = json!({"requestId": rid(), "referral": referral_json("J20260101080000")});
        // The rule's body is the `referral` field; the request id is a query parameter.
        let (status, created) = http(
            suite.addr,
            "POST",
            &format!(
                "/v1/policereferral/referrals?requestId={}",
                body["requestId"].as_str().expect("id")
            ),
            bearer(&dispatch),
            Some(body["referral"].to_string()),
        )
        .await;
        assert_eq!(status, 200, "{created}");
        let name = created["referral"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        assert!(name.starts_with("referrals/"), "{name}");
        let (status, got) = http(
            suite.addr,
            "GET",
            &format!("/v1/policereferral/{name}"),
            bearer(&dispatch),
            None,
        )
        .await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["referral"]["name"], name.as_str());
        assert_eq!(got["referral"]["state"], created["referral"]["state"]);
        assert_eq!(got["referral"]["incidentNumber"], "J20260101080000");
        // Listed with query parameters.
        let (status, list) = http(
            suite.addr,
            "GET",
            "/v1/policereferral/referrals?pageSize=10",
            bearer(&dispatch),
            None,
        )
        .await;
        assert_eq!(status, 200, "{list}");
        assert!(list.to_string().contains(&name), "{list}");

        // A bad ID check digit: 400 with the same BadRequest detail gRPC carries.
        let mut bad = referral_json("J20260101080001");
        bad["parties"][0]["idNumber"] = json!("110105194912310021");
        let (status, err) = http(
            suite.addr,
            "POST",
            &format!("/v1/policereferral/referrals?requestId={}", rid()),
            bearer(&dispatch),
            Some(bad.to_string()),
        )
        .await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["code"], Code::InvalidArgument as i32);
        let types: Vec<&str> = err["details"]
            .as_array()
            .expect("details")
            .iter()
            .filter_map(|d| d["@type"].as_str())
            .collect();
        assert!(
            types.contains(&"type.googleapis.com/google.rpc.BadRequest"),
            "{err}"
        );
        assert!(
            types.contains(&"type.googleapis.com/google.rpc.ErrorInfo"),
            "{err}"
        );

        // No origin is allowed by default: a browser's preflight is refused.
        let addr = suite.addr;
        let (status, _, _) = tokio::task::spawn_blocking(move || {
            exchange(
                addr,
                format!(
                    "OPTIONS /v1/routes HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                     Origin: {CONSOLE}\r\nAccess-Control-Request-Method: GET\r\n\r\n"
                )
                .as_bytes(),
            )
        })
        .await
        .expect("join");
        assert_eq!(status, 403);

        // The OpenAPI document is public, like reflection.
        let (status, doc) = http(suite.addr, "GET", "/openapi.json", vec![], None).await;
        assert_eq!(status, 200);
        assert_eq!(doc["openapi"], "3.0.3");
        assert!(doc["paths"]["/v1/policereferral/referrals"]["post"].is_object());

        // No token: 401; a malformed JSON body: 400 MALFORMED_MESSAGE; unknown path: 404;
        // a known path with the wrong method: 405.
        let (status, err) = http(
            suite.addr,
            "GET",
            &format!("/v1/policereferral/{name}"),
            vec![],
            None,
        )
        .await;
        assert_eq!((status, err["code"].as_i64()), (401, Some(16)), "{err}");
        let (status, err) = http(
            suite.addr,
            "POST",
            "/v1/policereferral/referrals",
            bearer(&dispatch),
            Some("{not json".into()),
        )
        .await;
        assert_eq!(status, 400, "{err}");
        assert!(err.to_string().contains("MALFORMED_MESSAGE"), "{err}");
        let (status, _) = http(
            suite.addr,
            "GET",
            "/v1/nothing/here",
            bearer(&dispatch),
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = http(
            suite.addr,
            "DELETE",
            &format!("/v1/policereferral/{name}"),
            bearer(&dispatch),
            None,
        )
        .await;
        assert_eq!(status, 405);
    }
);

suite_test!(
    a_call_cut_off_by_its_deadline_and_retried_makes_one_referral,
    |suite| async move {
        let dispatch = suite.token("xigang-110", "dispatch-system", &["dispatcher"]);
        let request_id = rid();
        let path = format!("/v1/policereferral/referrals?requestId={request_id}");
        let body = referral_json("J20260101090000").to_string();
        let mut cut = bearer(&dispatch);
        cut.push(("grpc-timeout".into(), "3m".into()));
        let (status, first) = http(suite.addr, "POST", &path, cut, Some(body.clone())).await;
        assert!(status == 504 || status == 200, "{status} {first}");
        if status == 504 {
            assert_eq!(first["code"], Code::DeadlineExceeded as i32, "{first}");
        }
        // X-Server-Timeout (seconds) is the HTTP spelling of a deadline; 0 has passed before
        // the store is reached.
        let mut timed = bearer(&dispatch);
        timed.push(("X-Server-Timeout".into(), "0".into()));
        let (status, err) = http(suite.addr, "POST", &path, timed, Some(body.clone())).await;
        assert_eq!(status, 504, "{err}");
        assert!(err.to_string().contains("DEADLINE_EXCEEDED"), "{err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, retried) =
            http(suite.addr, "POST", &path, bearer(&dispatch), Some(body)).await;
        assert_eq!(status, 200, "{retried}");
        let name = retried["referral"]["name"].as_str().expect("name");
        let (_, list) = http(
            suite.addr,
            "GET",
            "/v1/policereferral/referrals?pageSize=100",
            bearer(&dispatch),
            None,
        )
        .await;
        let same: Vec<&Value> = list["referrals"]
            .as_array()
            .expect("referrals")
            .iter()
            .filter(|r| r["incidentNumber"] == "J20260101090000")
            .collect();
        assert_eq!(same.len(), 1, "exactly one referral: {list}");
        assert_eq!(same[0]["name"], name);
    }
);

suite_test!(
    streams_are_ndjson_and_resume_with_the_same_tokens,
    |suite| async move {
        let station = suite.token("xigang-bayilu-station", "officer-01", &["officer"]);
        let dispatch = suite.token("xigang-110", "dispatch-system", &["dispatcher"]);
        let (tx, rx) = std::sync::mpsc::channel();
        let (addr, tok) = (suite.addr, station.clone());
        let watch = tokio::task::spawn_blocking(move || {
            watch_events(addr, "/v1/transfers:watch".into(), tok, 2, tx)
        });
        let ready = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)));
        assert_eq!(ready.await.expect("join").expect("stream opened"), 200);
        // A referral and its transfer, drafted and submitted: two events, over HTTP only.
        let (status, created) = http(
            suite.addr,
            "POST",
            &format!("/v1/policereferral/referrals?requestId={}", rid()),
            bearer(&dispatch),
            Some(referral_json("J20260101100000").to_string()),
        )
        .await;
        assert_eq!(status, 200, "{created}");
        let name = created["referral"]["name"].as_str().expect("name");
        let (status, drafted) = http(
            suite.addr,
            "POST",
            &format!("/v1/policereferral/{name}:draftTransfer"),
            bearer(&station),
            Some(
                json!({"toAgency": "agencies/xigang-bayilu-mediation-room", "note": "建议调解",
                       "submit": true, "requestId": rid()})
                .to_string(),
            ),
        )
        .await;
        assert_eq!(status, 200, "{drafted}");
        let events = watch.await.expect("watch");
        let first = &events[0]["result"];
        let token = first["resumeToken"].as_str().expect("a resume token");
        // Resumed after the first event: the stream goes on with the second.
        let (tx, _rx) = std::sync::mpsc::channel();
        let (addr, tok) = (suite.addr, station.clone());
        let path = format!("/v1/transfers:watch?resumeToken={token}");
        let resumed = tokio::task::spawn_blocking(move || watch_events(addr, path, tok, 1, tx))
            .await
            .expect("resumed watch");
        assert_eq!(
            resumed[0]["result"]["event"], events[1]["result"]["event"],
            "resumed right after the first event"
        );

        // A stream that ends (follow = false) ends the HTTP answer too; an unknown resume
        // (malformed) token fails before the stream starts: a plain error answer.
        // The justice bureau pulls its messages (deploy/dev/agencies.toml: delivery = "pull").
        let bureau = suite.token("xigang-justice-bureau", "admin", &["platform_admin"]);
        let (status, content_type, body) = http_raw(
            suite.addr,
            "POST",
            "/v1/messages:pull",
            bearer(&bureau),
            Some(r#"{"follow": false}"#.into()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "application/x-ndjson");
        for line in body.lines() {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            assert!(v.get("result").is_some(), "{line}");
        }
        let (status, err) = http(
            suite.addr,
            "GET",
            "/v1/transfers:watch?resumeToken=not-a-token",
            bearer(&station),
            None,
        )
        .await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["code"], Code::InvalidArgument as i32, "{err}");

        // gRPC on the same port is untouched (a health check with no token).
        let mut health = tonic_health::pb::health_client::HealthClient::new(suite.channel());
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health over gRPC");
        assert_eq!(answer.into_inner().status, 1);
    }
);

/// One HTTP/1.1 exchange of raw bytes: (status, headers lower-cased, body de-chunked).
fn exchange(addr: SocketAddr, req: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(req).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let mut rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..i]).trim(), 16)
                .expect("chunk size");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&rest[i + 2..i + 2 + n]);
            rest = &rest[i + 2 + n + 2..];
        }
        body
    } else {
        rest.to_vec()
    };
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

const CONSOLE: &str = "https://console.example.cn";

/// gRPC-Web (tonic-web) and CORS for the configured origin, on a suite whose
/// `http.cors_allowed_origins` lists [`CONSOLE`].
async fn grpc_web_and_cors(suite: &TestSuite) {
    let token = suite.token("xigang-bayilu-station", "officer-01", &["officer"]);
    let addr = suite.addr;
    // A browser's gRPC-Web call over HTTP/1.1: an empty ListRoutesRequest, framed.
    let mut req = format!(
        "POST /fengqiao.router.v1.RouteService/ListRoutes HTTP/1.1\r\nHost: {addr}\r\n\
         Connection: close\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
         Origin: {CONSOLE}\r\nAuthorization: Bearer {token}\r\nContent-Length: 5\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(&[0, 0, 0, 0, 0]);
    let (status, headers, body) = tokio::task::spawn_blocking(move || exchange(addr, &req))
        .await
        .expect("join");
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some(CONSOLE)
    );
    assert!(
        header(&headers, "content-type").is_some_and(|c| c.starts_with("application/grpc-web")),
        "{headers:?}"
    );
    // Frames: the message (flag 0), then the trailers (flag 0x80) with grpc-status 0.
    let mut b = bytes::Bytes::from(body);
    assert_eq!(b.get_u8(), 0, "a message frame first");
    let len = b.get_u32() as usize;
    let routes = fengqiao_proto::router::ListRoutesResponse::decode(b.split_to(len))
        .expect("a ListRoutesResponse");
    assert!(!routes.routes.is_empty(), "the sample routes");
    assert_eq!(b.get_u8(), 0x80, "a trailer frame last");
    let len = b.get_u32() as usize;
    let trailers = String::from_utf8_lossy(&b[..len]).to_ascii_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // Preflight: the configured origin may call with a token; another may not.
    for (origin, expect) in [(CONSOLE, 204), ("https://elsewhere.example", 403)] {
        let req = format!(
            "OPTIONS /v1/routes HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Origin: {origin}\r\nAccess-Control-Request-Method: GET\r\n\
             Access-Control-Request-Headers: authorization\r\n\r\n"
        );
        let (status, headers, _) =
            tokio::task::spawn_blocking(move || exchange(addr, req.as_bytes()))
                .await
                .expect("join");
        assert_eq!(status, expect, "{origin}: {headers:?}");
        if expect == 204 {
            assert_eq!(
                header(&headers, "access-control-allow-origin"),
                Some(CONSOLE)
            );
            assert!(
                header(&headers, "access-control-allow-headers")
                    .is_some_and(|h| h.contains("authorization")),
                "{headers:?}"
            );
        }
    }
    // JSON over HTTP from the configured origin carries the CORS answer; from another, not.
    for (origin, allowed) in [(CONSOLE, true), ("https://elsewhere.example", false)] {
        let req = format!(
            "GET /v1/routes HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nOrigin: {origin}\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        let (status, headers, _) =
            tokio::task::spawn_blocking(move || exchange(addr, req.as_bytes()))
                .await
                .expect("join");
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "access-control-allow-origin").is_some(),
            allowed,
            "{origin}: {headers:?}"
        );
    }
}

fn with_console_origin(db: fengqiao_testkit::Db) {
    fengqiao_testkit::block_on(async move {
        let Some(suite) = TestSuite::start_with(db, &fengqiao_testkit::ServiceName::all(), |c| {
            c.http.cors_allowed_origins = vec![CONSOLE.into()];
            // JSON bodies up to 4 × this are read.
            c.limits.max_message_bytes = 64 * 1024;
        })
        .await
        else {
            return;
        };
        grpc_web_and_cors(&suite).await;
        // A JSON body larger than 4 × limits.max_message_bytes is not read: 429
        // RESOURCE_EXHAUSTED / MESSAGE_TOO_LARGE, as an oversized message over gRPC.
        let dispatch = suite.token("xigang-110", "dispatch-system", &["dispatcher"]);
        let mut big = referral_json("J20260101110000");
        big["summary"] = json!("噪".repeat(90 * 1024));
        let (status, err) = http(
            suite.addr,
            "POST",
            &format!("/v1/policereferral/referrals?requestId={}", rid()),
            bearer(&dispatch),
            Some(big.to_string()),
        )
        .await;
        assert_eq!(status, 429, "{err}");
        assert!(err.to_string().contains("MESSAGE_TOO_LARGE"), "{err}");
        suite.stop().await;
    });
}

#[test]
fn grpc_web_and_cors_for_the_configured_origin_sqlite() {
    with_console_origin(fengqiao_testkit::Db::Sqlite);
}

#[test]
fn grpc_web_and_cors_for_the_configured_origin_postgres() {
    with_console_origin(fengqiao_testkit::Db::Postgres);
}
