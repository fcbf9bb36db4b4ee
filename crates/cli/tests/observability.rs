//! Traces as shipped (issue #15): two `fengqiao serve` processes (router, police-referral)
//! export spans over OTLP/gRPC to an in-process receiver while a referral is drafted,
//! submitted and approved (the police process logs at `warn`: spans are exported whatever the
//! log level). Checked: every span's resource names its service (and version);
//! server spans carry OTel's gRPC attributes and none of the noisy ones; the police process's
//! call to the router is a CLIENT span whose child is the router's SERVER span; the delivery push (a CLIENT span) is
//! in the trace of the approval that caused it, and the receiving process's Deliver span is
//! its child; JSON log lines inside a span carry that span's `trace_id`/`span_id`. Then the
//! router's admin port is scraped: the work (deliveries by recipient and outcome, backlog and
//! its age, incidents, transfers by state), `process_*` and `fengqiao_build_info`, and every
//! metric `deploy/grafana-dashboard.json` queries. SQLite and PostgreSQL.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::policereferral::{CreateReferralRequest, DraftTransferRequest};
use fengqiao_proto::router::ApproveTransferRequest;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_store::testing::TempDir;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

mod common;
use common::{ISSUER, Procs, free_port, sample_referral_with_id, wait_serving};

/// An OTLP/gRPC trace receiver keeping what it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .expect("receiver lock")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// One received span, flattened with its resource's service name.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    version: String,
    environment: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attrs: HashMap<String, String>,
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attr_map(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Receiver {
    fn spans(&self) -> Vec<Got> {
        let mut out = Vec::new();
        for req in self.0.lock().expect("receiver lock").iter() {
            for rs in &req.resource_spans {
                let res = attr_map(
                    rs.resource
                        .as_ref()
                        .map(|r| r.attributes.as_slice())
                        .unwrap_or_default(),
                );
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(Got {
                            service: res.get("service.name").cloned().unwrap_or_default(),
                            version: res.get("service.version").cloned().unwrap_or_default(),
                            environment: res
                                .get("deployment.environment.name")
                                .cloned()
                                .unwrap_or_default(),
                            name: s.name.clone(),
                            kind: s.kind,
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            attrs: attr_map(&s.attributes),
                        });
                    }
                }
            }
        }
        out
    }
}

/// `fengqiao serve --service <service>` exporting to `otlp`, JSON logs (stdout) at `level`
/// into `log`.
#[allow(clippy::too_many_arguments)]
fn serve_traced(
    service: &str,
    port: u16,
    admin: u16,
    url: &str,
    dir: &std::path::Path,
    otlp: &str,
    (log, level): (&std::path::Path, &str),
    extra: &[&str],
) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fengqiao"));
    cmd.args(["serve", "--service", service]);
    common::with_pii_key(&mut cmd, dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--database-url", url])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--auth-issuer", ISSUER])
        .args(["--config", &dir.join("config.toml").display().to_string()])
        .args(["--log-format", "json"])
        .args(["--otlp-endpoint", otlp])
        .args(extra)
        .env("RUST_LOG", level)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=observability-test",
        )
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {service}: {e}"))
}

async fn traced_flow(urls: [String; 2]) {
    // The receiver.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let otlp = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = TempDir::new();
    let key = SigningKey::generate("k").expect("key");
    let keys = dir.path().join("keys.json");
    PublicKeyFile {
        keys: vec![key.public_entry()],
    }
    .save(&keys)
    .expect("keys");
    let service_key = dir.path().join("service-key.json");
    key.save(&service_key).expect("service key");
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "[auth]\nissuer = \"{ISSUER}\"\npublic_keys_file = \"{}\"\nservice_key_file = \"{}\"\n\
             [limits]\nper_agency_rps = 10000.0\nper_agency_burst = 10000.0\n",
            keys.display(),
            service_key.display()
        ),
    )
    .expect("config");
    let (rp, pp, nobody, admin) = (free_port(), free_port(), free_port(), free_port());
    // Police agencies are pushed to the police process; the others to a port nobody serves
    // (their pushes fail, and are traced all the same).
    let mut out = String::new();
    let mut kind = "";
    for line in fengqiao::SAMPLE_AGENCIES.lines() {
        if let Some(k) = line.strip_prefix("kind = ") {
            kind = k.trim_matches('"');
        }
        if line == "endpoint = \"self\"" {
            let port = if kind.starts_with("police") {
                pp
            } else {
                nobody
            };
            out.push_str(&format!("endpoint = \"http://127.0.0.1:{port}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let agencies_file = dir.path().join("agencies.toml");
    std::fs::write(&agencies_file, out).expect("agencies");
    let router_uri = format!("http://127.0.0.1:{rp}");
    let (router_log, police_log) = (dir.path().join("router.log"), dir.path().join("police.log"));
    let mut procs = Procs(Vec::new());
    procs.0.push(serve_traced(
        "router",
        rp,
        admin,
        &urls[0],
        dir.path(),
        &otlp,
        (&router_log, "info"),
        &["--agencies-file", &agencies_file.display().to_string()],
    ));
    procs.0.push(serve_traced(
        "police-referral",
        pp,
        0,
        &urls[1],
        dir.path(),
        &otlp,
        // Spans are exported whatever the log level.
        (&police_log, "warn"),
        &["--router", &router_uri],
    ));
    for p in [rp, pp] {
        wait_serving(p).await;
    }

    let token = |agency: &str, actor: &str, roles: &[&str]| {
        CallInterceptor::new(Some(key.sign(&fengqiao_kit::auth::claims(
            ISSUER,
            &format!("agencies/{agency}"),
            actor,
            roles,
            600,
        ))))
    };
    let ch = |port: u16| {
        fengqiao_kit::client::channel(&format!("http://127.0.0.1:{port}"), None).expect("channel")
    };
    let rid = || uuid::Uuid::new_v4().to_string();
    let r = PoliceReferralServiceClient::with_interceptor(
        ch(pp),
        token("xigang-110", "dispatch-system", &["dispatcher"]),
    )
    .create_referral(CreateReferralRequest {
        referral: Some(sample_referral_with_id("LN21020320261122001")),
        request_id: rid(),
    })
    .await
    .expect("intake")
    .into_inner()
    .referral
    .expect("referral");
    let t = PoliceReferralServiceClient::with_interceptor(
        ch(pp),
        token("xigang-bayilu-station", "officer-01", &["officer"]),
    )
    .draft_transfer(DraftTransferRequest {
        name: r.name.clone(),
        to_agency: "agencies/xigang-bayilu-mediation-room".into(),
        submit: true,
        request_id: rid(),
        ..Default::default()
    })
    .await
    .expect("draft")
    .into_inner()
    .transfer
    .expect("transfer");
    TransferServiceClient::with_interceptor(
        ch(rp),
        token("xigang-110", "reviewer-01", &["command_room_reviewer"]),
    )
    .approve_transfer(ApproveTransferRequest {
        name: t.name.clone(),
        step_index: 0,
        request_id: rid(),
        ..Default::default()
    })
    .await
    .expect("review");
    TransferServiceClient::with_interceptor(
        ch(rp),
        token("xigang-bayilu-station", "duty-chief-01", &["duty_chief"]),
    )
    .approve_transfer(ApproveTransferRequest {
        name: t.name.clone(),
        step_index: 1,
        request_id: rid(),
        ..Default::default()
    })
    .await
    .expect("approve");

    // Wait until an approval's push to the station has reached the police process (the
    // router's push span in an ApproveTransfer's trace, and the police Deliver span under it):
    // earlier copies (the draft's) arrive first and do not count.
    let approval_push_in_police = |spans: &[Got]| {
        let method = |s: &Got, m: &str| s.attrs.get("rpc.method").is_some_and(|x| x == m);
        spans.iter().any(|p| {
            p.service == "router"
                && p.kind == SpanKind::Client as i32
                && method(p, "Deliver")
                && p.attrs
                    .get("to_agency")
                    .is_some_and(|a| a.contains("station"))
                && spans.iter().any(|a| {
                    a.service == "router"
                        && a.kind == SpanKind::Server as i32
                        && method(a, "ApproveTransfer")
                        && a.trace_id == p.trace_id
                })
                && spans.iter().any(|d| {
                    d.service == "police-referral"
                        && method(d, "Deliver")
                        && d.parent_span_id == p.span_id
                })
        })
    };
    for _ in 0..400 {
        if approval_push_in_police(&receiver.spans()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_metrics(admin).await;
    // Stopping flushes what is left.
    drop(procs);
    let spans = receiver.spans();
    server.abort();

    // Every span names its service and version.
    assert!(!spans.is_empty(), "no spans arrived");
    for s in &spans {
        assert!(
            s.service == "router" || s.service == "police-referral",
            "span {} has service.name {:?}",
            s.name,
            s.service
        );
        assert_eq!(s.version, env!("CARGO_PKG_VERSION"), "span {}", s.name);
        assert_eq!(s.environment, "observability-test", "span {}", s.name);
        for noisy in [
            "code.file.path",
            "code.filepath",
            "thread.id",
            "busy_ns",
            "idle_ns",
        ] {
            assert!(!s.attrs.contains_key(noisy), "span {} has {noisy}", s.name);
        }
    }
    let server_span = |service: &str, method: &str| -> Vec<Got> {
        spans
            .iter()
            .filter(|s| {
                s.service == service
                    && s.kind == SpanKind::Server as i32
                    && s.attrs.get("rpc.method").is_some_and(|m| m == method)
            })
            .cloned()
            .collect()
    };
    // OTel's gRPC attributes on server spans.
    let create = server_span("police-referral", "CreateReferral");
    let create = create.first().expect("the CreateReferral server span");
    assert_eq!(create.attrs["rpc.system"], "grpc");
    assert_eq!(
        create.attrs["rpc.service"],
        "fengqiao.policereferral.v1.PoliceReferralService"
    );
    assert_eq!(create.attrs["rpc.grpc.status_code"], "0");
    assert_eq!(
        create.name,
        "fengqiao.policereferral.v1.PoliceReferralService/CreateReferral"
    );

    // DraftTransfer on the police process calls the router: one trace across both, through a
    // CLIENT span of the police process whose child is the router's SERVER span.
    let draft = server_span("police-referral", "DraftTransfer");
    let draft = draft.first().expect("the DraftTransfer server span");
    let calls: Vec<&Got> = spans
        .iter()
        .filter(|s| {
            s.service == "police-referral"
                && s.kind == SpanKind::Client as i32
                && s.trace_id == draft.trace_id
                && s.parent_span_id == draft.span_id
        })
        .collect();
    assert!(
        !calls.is_empty(),
        "no CLIENT span for the call to the router"
    );
    for call in &calls {
        assert_eq!(call.attrs["rpc.system"], "grpc");
        assert_eq!(
            call.attrs["rpc.service"],
            "fengqiao.router.v1.TransferService"
        );
        assert_eq!(call.attrs["rpc.grpc.status_code"], "0", "{call:?}");
        assert!(
            spans.iter().any(|s| s.service == "router"
                && s.kind == SpanKind::Server as i32
                && s.trace_id == draft.trace_id
                && s.parent_span_id == call.span_id
                && s.attrs.get("rpc.method") == call.attrs.get("rpc.method")),
            "the router's SERVER span is not the child of {call:?}"
        );
    }

    // The approval's pushes continue its trace: CLIENT spans on the router, the police
    // process's Deliver span their child.
    let approvals = server_span("router", "ApproveTransfer");
    assert_eq!(approvals.len(), 2, "two approvals: {approvals:?}");
    let pushes: Vec<&Got> = spans
        .iter()
        .filter(|s| {
            s.service == "router"
                && s.kind == SpanKind::Client as i32
                && s.attrs.get("rpc.method").is_some_and(|m| m == "Deliver")
        })
        .collect();
    assert!(!pushes.is_empty(), "no delivery push spans");
    let final_approval = approvals
        .iter()
        .find(|a| pushes.iter().any(|p| p.trace_id == a.trace_id))
        .expect("a delivery push in an approval's trace");
    let push = pushes
        .iter()
        .find(|p| {
            p.trace_id == final_approval.trace_id
                && p.attrs
                    .get("to_agency")
                    .is_some_and(|a| a.contains("station"))
        })
        .expect("the push to the station in the approval's trace");
    assert_eq!(push.attrs["rpc.system"], "grpc");
    assert_eq!(push.attrs["rpc.grpc.status_code"], "0");
    let received = server_span("police-referral", "Deliver");
    let child = received
        .iter()
        .find(|d| d.trace_id == push.trace_id && d.parent_span_id == push.span_id)
        .expect("the police process's Deliver span is the push's child");
    assert_eq!(push.attrs["rpc.service"], child.attrs["rpc.service"]);
    assert_eq!(push.name, child.name);
    // Every push to an agency follows the trace of a change (none starts a trace of its own).
    for p in &pushes {
        assert!(
            !p.parent_span_id.is_empty() && p.parent_span_id != "0000000000000000",
            "push {p:?} starts a trace of its own"
        );
    }

    // JSON log lines inside a span carry its ids: the router's "message delivered" line is
    // logged in the push span.
    let lines: Vec<serde_json::Value> =
        std::io::BufReader::new(std::fs::File::open(&router_log).expect("router log"))
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
    let delivered: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "message delivered")
        .collect();
    assert!(!delivered.is_empty(), "no 'message delivered' log line");
    for l in &delivered {
        let (trace, span) = (l["trace_id"].as_str(), l["span_id"].as_str());
        assert!(
            pushes
                .iter()
                .any(|p| Some(p.trace_id.as_str()) == trace && Some(p.span_id.as_str()) == span),
            "log line {l} does not name its push span"
        );
    }
}

/// `GET /metrics` on the admin port.
fn scrape(admin: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).expect("admin port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the first sample of exactly `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// After the approvals: the offer to the mediation room (whose endpoint nobody serves) waits
/// in the backlog with failed attempts and an incident; the station's copies were delivered.
async fn check_metrics(admin: u16) {
    const ROOM: &str = "agencies/xigang-bayilu-mediation-room";
    const STATION: &str = "agencies/xigang-bayilu-station";
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(admin);
        if sample(
            &text,
            &format!("fengqiao_delivery_attempts_total{{recipient=\"{ROOM}\",outcome=\"failed\"}}"),
        )
        .is_some()
            && sample(
                &text,
                &format!("fengqiao_outbox_backlog{{recipient=\"{ROOM}\"}}"),
            )
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got =
        |series: String| sample(&text, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert!(
        got(format!(
            "fengqiao_delivery_attempts_total{{recipient=\"{STATION}\",outcome=\"delivered\"}}"
        )) >= 1.0
    );
    assert!(
        got(format!(
            "fengqiao_delivery_attempts_total{{recipient=\"{ROOM}\",outcome=\"failed\"}}"
        )) >= 1.0
    );
    assert!(
        got(format!(
            "fengqiao_delivery_duration_seconds_count{{recipient=\"{STATION}\"}}"
        )) >= 1.0
    );
    assert!(got(format!("fengqiao_outbox_backlog{{recipient=\"{ROOM}\"}}")) >= 1.0);
    assert!(
        got(format!(
            "fengqiao_outbox_oldest_age_seconds{{recipient=\"{ROOM}\"}}"
        )) >= 0.0
    );
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "fengqiao_delivery_incidents{{recipient=\"{ROOM}\""
        ))),
        "no incident for the room in\n{text}"
    );
    // The offer never reached the room: the transfer stays APPROVED.
    assert_eq!(got("fengqiao_transfers{state=\"approved\"}".into()), 1.0);
    assert_eq!(got("fengqiao_transfers{state=\"closed\"}".into()), 0.0);
    assert_eq!(
        got(format!(
            "fengqiao_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    for p in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(got(p.to_string()) > 0.0, "{p}");
    }
    assert!(got("process_cpu_seconds_total".into()) >= 0.0);
    dashboard_queries_exposed_metrics(&text);
}

const ROUTER_METRICS_SOURCE: &str = include_str!("../../../services/router/src/metrics.rs");
const KIT_METRICS_SOURCE: &str = include_str!("../../kit/src/metrics.rs");

/// Every metric `deploy/grafana-dashboard.json` queries is one the router exposes.
fn dashboard_queries_exposed_metrics(text: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let mut names = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr
                .match_indices("fengqiao_")
                .chain(expr.match_indices("process_"))
            {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let base = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        // A family without samples yet (no expiry, nothing overdue) is not in the exposition:
        // then it must be one the router registers.
        let registered = base.strip_prefix("fengqiao_").is_some_and(|short| {
            ROUTER_METRICS_SOURCE.contains(&format!("\"{short}\""))
                || KIT_METRICS_SOURCE.contains(&format!("\"{short}\""))
        });
        assert!(
            text.contains(&format!("# TYPE {base} ")) || registered,
            "the dashboard queries {name}, which /metrics does not have"
        );
    }
}

#[test]
fn referral_traces_across_processes_sqlite() {
    let dir = TempDir::new();
    let urls = ["router", "police"].map(|s| dir.sqlite_url(&format!("{s}.db")));
    fengqiao_store::testing::block_on(traced_flow(urls));
}

#[test]
fn referral_traces_across_processes_postgres() {
    let urls = [(), ()].map(|_| fengqiao_store::testing::postgres_url());
    let [Some(a), Some(b)] = urls else {
        return;
    };
    fengqiao_store::testing::block_on(traced_flow([a, b]));
}
