//! The foundation as an agency system sees it: health, reflection, authentication, errors,
//! idempotency and protections, on SQLite and on PostgreSQL.

use fengqiao_kit::auth::{Claims, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::AgencyKind;
use fengqiao_proto::router::agency_service_client::AgencyServiceClient;
use fengqiao_proto::router::{
    Agency, DeactivateAgencyRequest, DeliveryMode, GetAgencyRequest, ListAgenciesRequest,
    RegisterAgencyRequest, UpdateAgencyRequest,
};
use fengqiao_scenarios::{admin, agencies, rid};
use fengqiao_testkit::{Db, ServiceName, TestSuite, suite_test};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICES: [&str; 8] = [
    "fengqiao.router.v1.AgencyService",
    "fengqiao.router.v1.RouteService",
    "fengqiao.router.v1.TransferService",
    "fengqiao.router.v1.DeliveryService",
    "fengqiao.router.v1.AuditService",
    "fengqiao.router.v1.StatisticsService",
    "fengqiao.policereferral.v1.PoliceReferralService",
    "fengqiao.mediation.v1.MediationService",
];

fn station_agency() -> Agency {
    Agency {
        kind: AgencyKind::PoliceStation as i32,
        display_name: "大连市公安局西岗分局香炉礁派出所".into(),
        region_code: "210203".into(),
        parent: Some("agencies/xigang-110".into()),
        delivery_mode: DeliveryMode::Pull as i32,
        ..Default::default()
    }
}

suite_test!(
    health_reports_serving_for_every_service,
    |suite| async move {
        let mut health = HealthClient::new(suite.channel());
        for s in SERVICES.iter().copied().chain([""]) {
            let r = health
                .check(HealthCheckRequest {
                    service: s.to_string(),
                })
                .await
                .unwrap_or_else(|e| panic!("health of {s:?}: {e}"));
            assert_eq!(r.into_inner().status, ServingStatus::Serving as i32, "{s}");
        }
    }
);

suite_test!(
    reflection_v1_and_v1alpha_list_all_services,
    |suite| async move {
        use tokio_stream::StreamExt as _;
        use tonic_reflection::pb::v1 as r1;
        use tonic_reflection::pb::v1alpha as r1a;

        let mut c = r1::server_reflection_client::ServerReflectionClient::new(suite.channel());
        let req = r1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut stream = c
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .expect("reflection v1")
            .into_inner();
        let resp = stream.next().await.expect("one answer").expect("ok");
        let Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            resp.message_response
        else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for s in SERVICES {
            assert!(
                names.iter().any(|n| n == s),
                "v1 reflection lacks {s}: {names:?}"
            );
        }

        let mut c = r1a::server_reflection_client::ServerReflectionClient::new(suite.channel());
        let req = r1a::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                r1a::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "fengqiao.router.v1.AgencyService".into(),
                ),
            ),
        };
        let mut stream = c
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .expect("reflection v1alpha")
            .into_inner();
        let resp = stream.next().await.expect("one answer").expect("ok");
        assert!(matches!(
            resp.message_response,
            Some(r1a::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ));
    }
);

suite_test!(
    calls_without_a_valid_token_are_unauthenticated,
    |suite| async move {
        let list = ListAgenciesRequest::default();
        let mut anon = AgencyServiceClient::new(suite.channel());
        let e = anon
            .list_agencies(list.clone())
            .await
            .expect_err("no token");
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(reason_of(&e).as_deref(), Some("TOKEN_MISSING"));

        let now = fengqiao_kit::auth::unix_now();
        let claims = |exp: i64| Claims {
            iss: fengqiao_testkit::ISSUER.into(),
            sub: "officer-01".into(),
            agency: "agencies/xigang-110".into(),
            roles: vec![],
            iat: now - 7200,
            exp,
            nbf: None,
            jti: None,
            person: None,
        };
        let cases = [
            (
                "expired",
                suite.key().sign(&claims(now - 3600)),
                "TOKEN_EXPIRED",
            ),
            (
                "signed by an unknown key",
                SigningKey::generate("test-1")
                    .expect("key")
                    .sign(&claims(now + 600)),
                "TOKEN_BAD_SIGNATURE",
            ),
            (
                "other issuer",
                suite.key().sign(&Claims {
                    iss: "elsewhere".into(),
                    ..claims(now + 600)
                }),
                "TOKEN_WRONG_ISSUER",
            ),
            ("garbage", "not-a-token".to_string(), "TOKEN_MALFORMED"),
        ];
        for (what, token, reason) in cases {
            let mut c = AgencyServiceClient::with_interceptor(
                suite.channel(),
                CallInterceptor::new(Some(token)),
            );
            let e = c.list_agencies(list.clone()).await.expect_err(what);
            assert_eq!(e.code(), Code::Unauthenticated, "{what}");
            assert_eq!(reason_of(&e).as_deref(), Some(reason), "{what}");
        }
        // Health stays open for probes.
        let mut health = HealthClient::new(suite.channel());
        assert!(health.check(HealthCheckRequest::default()).await.is_ok());
    }
);

suite_test!(sample_agencies_are_seeded_and_paged, |suite| async move {
    let mut c = agencies(&suite, "xigang-110", "reviewer-01", &[]);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .list_agencies(ListAgenciesRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert!(r.agencies.len() <= 3);
        seen.extend(r.agencies.into_iter().map(|a| a.name));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(seen.len(), 11, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "stable id order across pages");

    let courts = c
        .list_agencies(ListAgenciesRequest {
            kind: AgencyKind::Court as i32,
            ..Default::default()
        })
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(courts.agencies.len(), 1);
    assert_eq!(courts.agencies[0].name, "agencies/xigang-court");

    let e = c
        .list_agencies(ListAgenciesRequest {
            page_token: "???".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_fields_of(&e), vec!["page_token"]);
});

suite_test!(registering_an_agency, |suite| async move {
    let mut admin = admin(&suite);
    let req = RegisterAgencyRequest {
        agency: Some(station_agency()),
        agency_id: "xigang-xianglujiao-station".into(),
        request_id: rid(),
    };

    // Not an administrator: refused, nothing stored.
    let mut officer = agencies(&suite, "xigang-bayilu-station", "officer-01", &["officer"]);
    let e = officer
        .register_agency(req.clone())
        .await
        .expect_err("role");
    assert_eq!(e.code(), Code::PermissionDenied);

    // Bad input: every bad field named, nothing stored.
    let bad = RegisterAgencyRequest {
        agency: Some(Agency {
            kind: 0,
            region_code: "999999".into(),
            display_name: String::new(),
            delivery_mode: DeliveryMode::Push as i32,
            endpoint: "ftp://x".into(),
            ..station_agency()
        }),
        agency_id: "Bad Id".into(),
        request_id: rid(),
    };
    let e = admin.register_agency(bad).await.expect_err("invalid");
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut fields = bad_fields_of(&e);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "agency.display_name",
            "agency.endpoint",
            "agency.kind",
            "agency.region_code",
            "agency_id"
        ]
    );
    let e = admin
        .get_agency(GetAgencyRequest {
            name: "agencies/xigang-xianglujiao-station".into(),
        })
        .await
        .expect_err("not stored");
    assert_eq!(e.code(), Code::NotFound);

    // Registered; the same request replayed returns the first answer.
    let first = admin
        .register_agency(req.clone())
        .await
        .expect("register")
        .into_inner();
    let again = admin
        .register_agency(req.clone())
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(first, again);
    let a = first.agency.expect("agency");
    assert_eq!(a.name, "agencies/xigang-xianglujiao-station");
    assert!(a.active);

    // Same request id, different body: refused.
    let mut changed = req.clone();
    if let Some(a) = changed.agency.as_mut() {
        a.display_name = "另一个派出所".into();
    }
    let e = admin.register_agency(changed).await.expect_err("reuse");
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(reason_of(&e).as_deref(), Some("REQUEST_ID_REUSED"));

    // A new request for the same id: already exists.
    let e = admin
        .register_agency(RegisterAgencyRequest {
            request_id: rid(),
            ..req.clone()
        })
        .await
        .expect_err("exists");
    assert_eq!(e.code(), Code::AlreadyExists);

    // Missing request id.
    let e = admin
        .register_agency(RegisterAgencyRequest {
            request_id: String::new(),
            agency_id: "another".into(),
            ..req
        })
        .await
        .expect_err("request id");
    assert_eq!(bad_fields_of(&e), vec!["request_id"]);
});

suite_test!(updating_and_deactivating_an_agency, |suite| async move {
    let mut admin = admin(&suite);
    let got = admin
        .get_agency(GetAgencyRequest {
            name: "agencies/xigang-court".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .agency
        .expect("agency");

    let update = |etag: String, name: &str| UpdateAgencyRequest {
        agency: Some(Agency {
            name: "agencies/xigang-court".into(),
            display_name: name.into(),
            etag,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
        request_id: rid(),
    };
    let updated = admin
        .update_agency(update(got.etag.clone(), "大连市西岗区人民法院诉讼服务中心"))
        .await
        .expect("update")
        .into_inner()
        .agency
        .expect("agency");
    assert_ne!(updated.etag, got.etag);
    // A stale etag loses.
    let e = admin
        .update_agency(update(got.etag.clone(), "x"))
        .await
        .expect_err("stale");
    assert_eq!(e.code(), Code::Aborted);

    let deactivate = |etag: String| DeactivateAgencyRequest {
        name: "agencies/xigang-court".into(),
        etag,
        reason: "机构撤并".into(),
        request_id: rid(),
    };
    let e = admin
        .deactivate_agency(deactivate(got.etag))
        .await
        .expect_err("stale");
    assert_eq!(e.code(), Code::Aborted);
    let d = admin
        .deactivate_agency(deactivate(updated.etag.clone()))
        .await
        .expect("deactivate")
        .into_inner()
        .agency
        .expect("agency");
    assert!(!d.active);
    let e = admin
        .deactivate_agency(deactivate(String::new()))
        .await
        .expect_err("already inactive");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&e).as_deref(), Some("WRONG_STATE"));
});

#[test]
fn per_agency_rate_limit_sheds_with_resource_exhausted() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |c| {
            c.limits.per_agency_rps = 0.5;
            c.limits.per_agency_burst = 2.0;
        })
        .await
        .expect("sqlite suite");
        let mut c = agencies(&suite, "xigang-110", "reviewer-01", &[]);
        let mut other = agencies(&suite, "xigang-court", "judge-01", &[]);
        let req = ListAgenciesRequest::default();
        assert!(c.list_agencies(req.clone()).await.is_ok());
        assert!(c.list_agencies(req.clone()).await.is_ok());
        let e = c.list_agencies(req.clone()).await.expect_err("limited");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(reason_of(&e).as_deref(), Some("RATE_LIMITED"));
        assert!(
            other.list_agencies(req).await.is_ok(),
            "other agencies unaffected"
        );
        suite.stop().await;
    });
}

#[test]
fn metrics_count_rpcs_by_method_and_status() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |_| {})
            .await
            .expect("sqlite suite");
        let mut anon = AgencyServiceClient::new(suite.channel());
        let _ = anon.list_agencies(ListAgenciesRequest::default()).await;
        let mut c = agencies(&suite, "xigang-110", "reviewer-01", &[]);
        c.list_agencies(ListAgenciesRequest::default())
            .await
            .expect("ok");
        let text = http_get(suite.admin_addr, "/metrics").await;
        assert!(text.contains(
            "fengqiao_rpc_total{method=\"/fengqiao.router.v1.AgencyService/ListAgencies\",code=\"UNAUTHENTICATED\"} 1"
        ), "{text}");
        assert!(text.contains(
            "fengqiao_rpc_total{method=\"/fengqiao.router.v1.AgencyService/ListAgencies\",code=\"OK\"} 1"
        ), "{text}");
        // The router's group committer is exposed (no transfer changed yet: nothing run).
        for family in ["batches", "jobs", "abandoned", "failed_batches"] {
            assert!(
                text.contains(&format!(
                    "fengqiao_group_commit_{family}_total{{store=\"router\"}} 0"
                )),
                "{family}: {text}"
            );
        }
        assert!(
            text.contains("fengqiao_group_commit_waiting{store=\"router\"} 0"),
            "{text}"
        );
        assert!(
            http_get(suite.admin_addr, "/readyz")
                .await
                .contains("ready")
        );
        suite.stop().await;
    });
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[test]
fn health_turns_not_serving_while_draining() {
    use tokio_stream::StreamExt as _;
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |_| {})
            .await
            .expect("suite");
        let mut health = HealthClient::new(suite.channel());
        let mut watch = health
            .watch(HealthCheckRequest {
                service: "fengqiao.router.v1.AgencyService".into(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = watch.next().await.expect("first").expect("ok");
        assert_eq!(first.status, ServingStatus::Serving as i32);
        let stopping = tokio::spawn(suite.stop());
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
            .await
            .expect("a status change while draining")
            .expect("stream still open")
            .expect("ok");
        assert_eq!(next.status, ServingStatus::NotServing as i32);
        drop(watch);
        stopping.await.expect("stopped");
    });
}
