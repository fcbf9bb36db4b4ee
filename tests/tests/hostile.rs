//! Hostile and broken clients (issue #14 §2, §3): bad input is the client's error, never the
//! server's, and resources stay bounded — through the real server, as a client sees it.

use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut as _, Bytes};
use fengqiao_kit::error::{bad_fields_of, metadata_of, reason_of};
use fengqiao_proto::mediation::AssignMediatorRequest;
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::router::audit_service_client::AuditServiceClient;
use fengqiao_proto::router::statistics_service_client::StatisticsServiceClient;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    GetTransferStatisticsRequest, ListAgenciesRequest, ListAuditRecordsRequest,
    ListTransfersRequest, RequestInvestigationRequest, Transfer, UpdateTransferRequest,
    WatchTransfersRequest,
};
use fengqiao_scenarios::{admin, agencies, rid};
use fengqiao_testkit::{Db, ServiceName, TestSuite, suite_test};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A codec that sends and receives raw message bytes, so a test can send any body.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// Calls unary `path` with `body` as the message bytes and `token` (if any).
async fn raw_call(
    channel: &Channel,
    path: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(Bytes::from(body));
    req.set_timeout(Duration::from_secs(5));
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}").parse().expect("metadata");
        req.metadata_mut().insert("authorization", v);
    }
    let path = PathAndQuery::try_from(path.to_string()).expect("path");
    grpc.unary(req, path, Raw).await.map(|r| r.into_inner())
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

const GET_TRANSFER: &str = "/fengqiao.router.v1.TransferService/GetTransfer";

fn admin_token(suite: &TestSuite) -> String {
    suite.token(
        "xigang-justice-bureau",
        "admin",
        &["platform_admin", "statistician", "auditor"],
    )
}

async fn assert_serving(suite: &TestSuite) {
    let status = HealthClient::new(suite.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

// ── §2 Undecodable bodies ─────────────────────────────────────────────────────────────────

/// The issue's reproducer and each kind of undecodable body: INVALID_ARGUMENT with
/// `ErrorInfo` reason `MALFORMED_MESSAGE`, never INTERNAL.
#[test]
fn undecodable_bodies_are_invalid_argument() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |_| {})
            .await
            .expect("suite");
        let ch = suite.channel();
        let token = admin_token(&suite);
        // Deeper than prost's recursion limit (100): unknown field 15 as nested groups.
        let mut deep = vec![0x7b; 120];
        deep.extend(vec![0x7c; 120]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "invalid UTF-8 (the issue's reproducer)",
                hex("0a04fffec328"),
            ),
            ("bad wire type", hex("0f")),
            ("truncated varint", hex("08ff")),
            ("length past the end", hex("0a10aa")),
            ("recursion limit", deep),
        ];
        for (what, body) in cases {
            let e = raw_call(&ch, GET_TRANSFER, body, Some(&token))
                .await
                .expect_err(what);
            assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
            assert_eq!(
                reason_of(&e).as_deref(),
                Some("MALFORMED_MESSAGE"),
                "{what}"
            );
        }
        // Without a token the caller learns nothing about the method: UNAUTHENTICATED first.
        let e = raw_call(&ch, GET_TRANSFER, hex("0a04fffec328"), None)
            .await
            .expect_err("no token");
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_serving(&suite).await;
        suite.stop().await;
    });
}

/// A message over `limits.max_message_bytes` is RESOURCE_EXHAUSTED / `MESSAGE_TOO_LARGE` with
/// the limit in `ErrorInfo`, not OUT_OF_RANGE without details.
#[test]
fn oversized_message_is_resource_exhausted() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |c| {
            c.limits.max_message_bytes = 4096;
        })
        .await
        .expect("suite");
        let ch = suite.channel();
        let token = admin_token(&suite);
        // `name` = 10 000 bytes of 'a'.
        let mut body = vec![0x0a, 0x90, 0x4e];
        body.extend(vec![b'a'; 10_000]);
        let e = raw_call(&ch, GET_TRANSFER, body, Some(&token))
            .await
            .expect_err("too large");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_eq!(reason_of(&e).as_deref(), Some("MESSAGE_TOO_LARGE"));
        assert_eq!(metadata_of(&e, "limit_bytes").as_deref(), Some("4096"));
        assert_serving(&suite).await;
        suite.stop().await;
    });
}

// ── §2 Obviously invalid input ────────────────────────────────────────────────────────────

fn far_future() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::MAX / 2,
        nanos: 0,
    }
}

async fn refused_on<T: std::fmt::Debug>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, Status>>,
    field: &str,
) {
    let e = call.await.expect_err(what);
    assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    assert_eq!(bad_fields_of(&e), vec![field.to_string()], "{what}");
}

suite_test!(invalid_filters_name_their_field, |suite| async move {
    let token = admin_token(&suite);
    let caller = fengqiao_kit::client::CallInterceptor::new(Some(token));
    let mut transfers = TransferServiceClient::with_interceptor(suite.channel(), caller.clone());
    let list = |f: fn(&mut ListTransfersRequest)| {
        let mut r = ListTransfersRequest::default();
        f(&mut r);
        r
    };
    refused_on(
        "direction 99",
        transfers.list_transfers(list(|r| r.direction = 99)),
        "direction",
    )
    .await;
    refused_on(
        "state 999",
        transfers.list_transfers(list(|r| r.states = vec![2, 999])),
        "states[1]",
    )
    .await;
    refused_on(
        "too many states",
        transfers.list_transfers(list(|r| r.states = vec![2; 33])),
        "states",
    )
    .await;
    refused_on(
        "out-of-range time",
        transfers.list_transfers(list(|r| r.create_time_start = Some(far_future()))),
        "create_time_start",
    )
    .await;
    refused_on(
        "negative nanos",
        transfers.list_transfers(list(|r| {
            r.create_time_end = Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            })
        })),
        "create_time_end",
    )
    .await;
    refused_on(
        "non-UUID case id",
        transfers.list_transfers(list(|r| r.case_id = "case-1\n".into())),
        "case_id",
    )
    .await;
    refused_on(
        "page token never issued",
        transfers.list_transfers(list(|r| r.page_token = "AAAAAAAAAAAAAAAAAAAA".into())),
        "page_token",
    )
    .await;
    // The same filters, valid, are answered.
    transfers
        .list_transfers(list(|r| {
            r.direction = 1;
            r.states = vec![2, 3];
            r.case_id = rid();
        }))
        .await
        .expect("valid filters");

    refused_on(
        "kind -1",
        admin(&suite).list_agencies(ListAgenciesRequest {
            kind: -1,
            ..Default::default()
        }),
        "kind",
    )
    .await;

    let mut audit = AuditServiceClient::with_interceptor(suite.channel(), caller.clone());
    refused_on(
        "control characters",
        audit.list_audit_records(ListAuditRecordsRequest {
            actor_id: "admin\u{0}".into(),
            ..Default::default()
        }),
        "actor_id",
    )
    .await;
    refused_on(
        "audit time",
        audit.list_audit_records(ListAuditRecordsRequest {
            start_time: Some(far_future()),
            ..Default::default()
        }),
        "start_time",
    )
    .await;

    let mut stats = StatisticsServiceClient::with_interceptor(suite.channel(), caller.clone());
    refused_on(
        "statistics time",
        stats.get_transfer_statistics(GetTransferStatisticsRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: -1_000_000_000_000_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }),
        "start_time",
    )
    .await;
});

// `BadRequest` names fields that exist: `transfer.name` in `UpdateTransfer`, `parent` in
// `RequestInvestigation`, `mediator` (not the oneof) in `AssignMediator`.
suite_test!(bad_request_paths_name_real_fields, |suite| async move {
    let caller = fengqiao_kit::client::CallInterceptor::new(Some(admin_token(&suite)));
    let mut transfers = TransferServiceClient::with_interceptor(suite.channel(), caller);
    refused_on(
        "UpdateTransfer",
        transfers.update_transfer(UpdateTransferRequest {
            transfer: Some(Transfer {
                name: "not-a-transfer".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["note".into()],
            }),
            request_id: rid(),
        }),
        "transfer.name",
    )
    .await;
    refused_on(
        "RequestInvestigation",
        transfers.request_investigation(RequestInvestigationRequest {
            parent: "not-a-transfer".into(),
            questions: "请补充调查笔录".into(),
            request_id: rid(),
            ..Default::default()
        }),
        "parent",
    )
    .await;
    let mut mediation = MediationServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(
            "xigang-mediation-committee",
            "mediator-01",
            &["mediation_admin"],
        ),
    );
    refused_on(
        "AssignMediator",
        mediation.assign_mediator(AssignMediatorRequest {
            name: format!("cases/{}", rid()),
            request_id: rid(),
            ..Default::default()
        }),
        "mediator",
    )
    .await;
});

// ── §3 Error amplification ────────────────────────────────────────────────────────────────

/// 250 000 unknown `group_by` values: one small answer, fast, naming `group_by` once.
#[test]
fn huge_group_by_answers_small_and_fast() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |_| {})
            .await
            .expect("suite");
        let caller = fengqiao_kit::client::CallInterceptor::new(Some(admin_token(&suite)));
        let mut stats = StatisticsServiceClient::with_interceptor(suite.channel(), caller);
        let req = GetTransferStatisticsRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_700_086_400,
                nanos: 0,
            }),
            group_by: vec![99; 250_000],
            ..Default::default()
        };
        for _ in 0..4 {
            let start = Instant::now();
            let e = stats
                .get_transfer_statistics(req.clone())
                .await
                .expect_err("refused");
            let took = start.elapsed();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert_eq!(bad_fields_of(&e), vec!["group_by".to_string()]);
            assert!(
                e.details().len() + e.message().len() < 1024,
                "answer is {} bytes",
                e.details().len() + e.message().len()
            );
            assert!(took < Duration::from_secs(3), "took {took:?}");
        }
        // Many distinct bad values within the cap still answer at most 20 entries.
        let e = stats
            .get_transfer_statistics(GetTransferStatisticsRequest {
                group_by: vec![99; 7],
                start_time: None,
                end_time: None,
                time_zone: "Mars/Olympus".into(),
                region_code_prefix: "x".into(),
                ..req.clone()
            })
            .await
            .expect_err("refused");
        assert!(bad_fields_of(&e).len() <= fengqiao_kit::error::MAX_VIOLATIONS);
        assert_serving(&suite).await;
        suite.stop().await;
    });
}

// ── §3 Streams ────────────────────────────────────────────────────────────────────────────

async fn watch(
    suite: &TestSuite,
    agency: &str,
) -> Result<tonic::Streaming<fengqiao_proto::router::WatchTransfersResponse>, Status> {
    let mut c = TransferServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(agency, "watcher", &["platform_admin"]),
    );
    c.watch_transfers(WatchTransfersRequest::default())
        .await
        .map(|r| r.into_inner())
}

/// Streams have their own limits: per agency (`TOO_MANY_STREAMS`) and in total
/// (`SERVER_OVERLOADED`); a closed stream frees its slot; unary calls and health go on.
#[test]
fn streams_are_bounded_per_agency_and_in_total() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |c| {
            c.limits.max_streams = 5;
            c.limits.max_streams_per_agency = 3;
        })
        .await
        .expect("suite");
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(
                watch(&suite, "xigang-110")
                    .await
                    .expect("within the agency's limit"),
            );
        }
        let e = watch(&suite, "xigang-110").await.expect_err("agency limit");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(reason_of(&e).as_deref(), Some("TOO_MANY_STREAMS"));
        for _ in 0..2 {
            open.push(
                watch(&suite, "xigang-court")
                    .await
                    .expect("within the total"),
            );
        }
        let e = watch(&suite, "xigang-procuratorate")
            .await
            .expect_err("total limit");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(reason_of(&e).as_deref(), Some("SERVER_OVERLOADED"));
        // Unary calls and health are not streams.
        admin(&suite)
            .list_agencies(ListAgenciesRequest::default())
            .await
            .expect("unary call");
        assert_serving(&suite).await;
        // Closing one of xigang-110's streams frees a slot of the agency and of the total.
        drop(open.remove(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        let reopened = loop {
            match watch(&suite, "xigang-110").await {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    assert_eq!(e.code(), Code::ResourceExhausted);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("slot not freed: {e:?}"),
            }
        };
        drop(reopened);
        drop(open);
        suite.stop().await;
    });
}

/// With the default limits, 300 `WatchTransfers` of one agency are not all accepted: 64 are,
/// the rest answer RESOURCE_EXHAUSTED at once, and the server stays SERVING.
#[test]
fn many_watch_streams_are_not_all_accepted() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |_| {})
            .await
            .expect("suite");
        let per_agency = fengqiao_kit::config::LimitsConfig::default().max_streams_per_agency;
        let mut c = TransferServiceClient::with_interceptor(
            suite.channel(),
            suite.caller("xigang-110", "watcher", &[]),
        );
        let mut open = Vec::new();
        let mut refused = 0;
        for _ in 0..300 {
            match c.watch_transfers(WatchTransfersRequest::default()).await {
                Ok(s) => open.push(s.into_inner()),
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                    refused += 1;
                }
            }
        }
        assert_eq!(open.len(), per_agency);
        assert_eq!(refused, 300 - per_agency);
        assert_serving(&suite).await;
        drop(open);
        suite.stop().await;
    });
}

// ── §3 HTTP/2 ─────────────────────────────────────────────────────────────────────────────

/// A connection that trickles the HTTP/2 preface is closed after `handshake_timeout_ms`; a
/// real client's connection is not.
#[test]
fn trickling_preface_is_closed() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |c| {
            c.limits.handshake_timeout_ms = 300;
        })
        .await
        .expect("suite");
        let mut conns = Vec::new();
        for _ in 0..20 {
            let mut s = tokio::net::TcpStream::connect(suite.addr)
                .await
                .expect("connect");
            s.write_all(b"PRI * HT").await.expect("write");
            conns.push(s);
        }
        let start = Instant::now();
        for mut s in conns {
            let mut buf = [0u8; 64];
            // The server closes (EOF) or resets; it must not keep the connection.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(read.is_ok(), "a trickling connection was kept open");
        }
        assert!(start.elapsed() < Duration::from_secs(3));
        // A real client connects, idles past the timeout and calls again on one connection.
        let ch = suite.channel();
        let mut health = HealthClient::new(ch.clone());
        let req = || HealthCheckRequest {
            service: String::new(),
        };
        health.check(req()).await.expect("first call");
        tokio::time::sleep(Duration::from_millis(600)).await;
        health
            .check(req())
            .await
            .expect("after the handshake timeout");
        suite.stop().await;
    });
}

/// A 64 KiB `authorization` header is refused on its own stream (UNAUTHENTICATED /
/// `TOKEN_MALFORMED`), 20 KiB of other metadata too (INVALID_ARGUMENT / `HEADERS_TOO_LARGE`);
/// an open stream and later calls on the same connection go on.
#[test]
fn oversized_headers_are_refused_on_their_stream() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |_| {})
            .await
            .expect("suite");
        let ch = suite.channel();
        let token = admin_token(&suite);
        let mut watcher = TransferServiceClient::with_interceptor(
            ch.clone(),
            fengqiao_kit::client::CallInterceptor::new(Some(token.clone())),
        );
        let mut stream = watcher
            .watch_transfers(WatchTransfersRequest::default())
            .await
            .expect("stream")
            .into_inner();

        let mut bare =
            fengqiao_proto::router::agency_service_client::AgencyServiceClient::new(ch.clone());
        let mut req = Request::new(ListAgenciesRequest::default());
        let huge: MetadataValue<_> = format!("Bearer {}", "a".repeat(64 * 1024))
            .parse()
            .expect("metadata");
        req.metadata_mut().insert("authorization", huge);
        let e = bare.list_agencies(req).await.expect_err("refused");
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert_eq!(reason_of(&e).as_deref(), Some("TOKEN_MALFORMED"));

        let mut req = Request::new(ListAgenciesRequest::default());
        let bearer: MetadataValue<_> = format!("Bearer {token}").parse().expect("metadata");
        req.metadata_mut().insert("authorization", bearer);
        let pad: MetadataValue<_> = "p".repeat(20 * 1024).parse().expect("metadata");
        req.metadata_mut().insert("x-padding", pad);
        let e = bare.list_agencies(req).await.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_eq!(reason_of(&e).as_deref(), Some("HEADERS_TOO_LARGE"));

        // The connection lives: the stream is still open and a normal call succeeds.
        let next = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        match next {
            Err(_) => {}
            Ok(Ok(Some(_))) => {} // a heartbeat
            Ok(other) => panic!("the stream ended: {other:?}"),
        }
        admin(&suite)
            .list_agencies(ListAgenciesRequest::default())
            .await
            .expect("later call");
        let mut c = agencies(&suite, "xigang-110", "reviewer", &[]);
        c.list_agencies(ListAgenciesRequest::default())
            .await
            .expect("another caller");
        drop(stream);
        suite.stop().await;
    });
}

// ── §3 Metrics and tokens ─────────────────────────────────────────────────────────────────

/// Made-up method names share one `method` label value in `/metrics`.
#[test]
fn unknown_methods_share_one_metric_label() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |_| {})
            .await
            .expect("suite");
        let ch = suite.channel();
        for i in 0..25 {
            let path = format!("/fengqiao.router.v1.TransferService/MadeUp{i}");
            let e = raw_call(&ch, &path, Vec::new(), None)
                .await
                .expect_err("refused");
            assert_ne!(e.code(), Code::Ok);
            let path = format!("/made.up.Service{i}/Method");
            raw_call(&ch, &path, Vec::new(), None)
                .await
                .expect_err("refused");
        }
        raw_call(&ch, GET_TRANSFER, hex("0a00"), None)
            .await
            .expect_err("unauthenticated");
        let text = suite.scrape_metrics().await;
        assert!(!text.contains("MadeUp"), "made-up names leaked into labels");
        assert!(
            !text.contains("made.up"),
            "made-up names leaked into labels"
        );
        assert!(text.contains("method=\"unknown\""), "unknown label missing");
        assert!(text.contains(&format!("method=\"{GET_TRANSFER}\"")));
        suite.stop().await;
    });
}

/// A token 10 s past `exp` is refused (leeway 5 s); the scheme is matched without regard to
/// case; other schemes are refused.
#[test]
fn token_leeway_and_bearer_scheme() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |_| {})
            .await
            .expect("suite");
        let claims = |ttl| {
            fengqiao_kit::auth::claims(
                fengqiao_testkit::ISSUER,
                "agencies/xigang-justice-bureau",
                "admin",
                &["platform_admin"],
                ttl,
            )
        };
        let call = |value: String| {
            let ch = suite.channel();
            async move {
                let mut c =
                    fengqiao_proto::router::agency_service_client::AgencyServiceClient::new(ch);
                let mut req = Request::new(ListAgenciesRequest::default());
                let v: MetadataValue<_> = value.parse().expect("metadata");
                req.metadata_mut().insert("authorization", v);
                c.list_agencies(req).await
            }
        };
        let expired = suite.key().sign(&claims(-10));
        let e = call(format!("Bearer {expired}"))
            .await
            .expect_err("expired");
        assert_eq!(reason_of(&e).as_deref(), Some("TOKEN_EXPIRED"));
        let good = suite.key().sign(&claims(600));
        for scheme in ["Bearer", "bearer", "BEARER"] {
            call(format!("{scheme} {good}")).await.expect(scheme);
        }
        for bad in [
            format!("Basic {good}"),
            format!("Bearer{good}"),
            good.clone(),
        ] {
            let e = call(bad).await.expect_err("not a bearer token");
            assert_eq!(e.code(), Code::Unauthenticated);
            assert_eq!(reason_of(&e).as_deref(), Some("TOKEN_MALFORMED"));
        }
        suite.stop().await;
    });
}

// ── Fuzz ──────────────────────────────────────────────────────────────────────────────────

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn tally(
    r: Result<(Code, Option<String>), tokio::task::JoinError>,
    codes: &mut std::collections::BTreeMap<String, usize>,
    bad: &mut Vec<String>,
) {
    let (code, failure) = r.expect("call task");
    *codes.entry(format!("{code:?}")).or_default() += 1;
    bad.extend(failure);
}

/// Every unary method of every service of the contracts.
fn unary_methods() -> Vec<String> {
    let set = <prost_types::FileDescriptorSet as prost::Message>::decode(
        fengqiao_proto::FILE_DESCRIPTOR_SET,
    )
    .expect("descriptors");
    let mut out = Vec::new();
    for f in &set.file {
        for s in &f.service {
            for m in &s.method {
                if !m.client_streaming() && !m.server_streaming() {
                    out.push(format!("/{}.{}/{}", f.package(), s.name(), m.name()));
                }
            }
        }
    }
    out
}

/// A random body: pure noise, or noise after a plausible tag, or a known-bad pattern.
fn body(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(48) as usize;
    let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    match rng.below(4) {
        0 => {
            // A length-delimited field 1..15 with a wrong or overlong length.
            let field = (1 + rng.below(15)) as u8;
            b.insert(0, rng.next() as u8);
            b.insert(0, (field << 3) | 2);
        }
        1 => {
            // A string field holding invalid UTF-8.
            let field = (1 + rng.below(15)) as u8;
            let mut s = vec![(field << 3) | 2, 4, 0xff, 0xfe, 0xc3, 0x28];
            s.extend(b);
            b = s;
        }
        _ => {}
    }
    b
}

// A few thousand random bodies over every unary method, through the real server, with a
// token holding every role: none answers INTERNAL or UNKNOWN.
suite_test!(random_bodies_never_answer_internal, |suite| async move {
    let methods = unary_methods();
    assert!(methods.len() > 50, "{} unary methods", methods.len());
    let token = suite.token(
        "xigang-justice-bureau",
        "fuzzer",
        &[
            "platform_admin",
            "statistician",
            "auditor",
            "mediation_admin",
            "mediator",
        ],
    );
    let per_method = 3000 / methods.len() + 1;
    let ch = suite.channel();
    let mut rng = Rng(0x5eed_f00d_dead_beef);
    let mut tasks = tokio::task::JoinSet::new();
    let mut bad: Vec<String> = Vec::new();
    let mut total = 0;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let start = Instant::now();
    for m in &methods {
        for _ in 0..per_method {
            let b = body(&mut rng);
            let (ch, m, token) = (ch.clone(), m.clone(), token.clone());
            tasks.spawn(async move {
                let hexed: String = b.iter().map(|x| format!("{x:02x}")).collect();
                match raw_call(&ch, &m, b, Some(&token)).await {
                    Err(e) if matches!(e.code(), Code::Internal | Code::Unknown) => (
                        e.code(),
                        Some(format!("{m} {hexed}: {:?} {}", e.code(), e.message())),
                    ),
                    Err(e) => (e.code(), None),
                    Ok(_) => (Code::Ok, None),
                }
            });
            total += 1;
            while tasks.len() >= 16 {
                if let Some(r) = tasks.join_next().await {
                    tally(r, &mut codes, &mut bad);
                }
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        tally(r, &mut codes, &mut bad);
    }
    assert!(total >= 3000);
    assert_eq!(codes.values().sum::<usize>(), total, "every call answered");
    eprintln!("answers: {codes:?}");
    assert!(
        codes
            .get(&format!("{:?}", Code::InvalidArgument))
            .copied()
            .unwrap_or(0)
            > total / 2,
        "most random bodies are malformed, so INVALID_ARGUMENT: {codes:?}"
    );
    assert!(
        bad.is_empty(),
        "{} of {total}:\n{}",
        bad.len(),
        bad.join("\n")
    );
    eprintln!(
        "{total} random bodies over {} methods in {:?}",
        methods.len(),
        start.elapsed()
    );
    assert_serving(&suite).await;
});
