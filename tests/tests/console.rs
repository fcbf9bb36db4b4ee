//! The web console (crates/kit/src/gateway/console.rs) on the real suite's one port, on SQLite
//! and PostgreSQL: its static files load without a token, over HTTP/1.1 as a browser asks for
//! them, with their content types, the strict Content-Security-Policy and revalidation; the
//! data calls the page makes answer 401 `UNAUTHENTICATED` without a token and the API's own
//! answer with one. (The page itself is driven in headless Chromium by
//! scripts/console-browser-test.sh.)

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use fengqiao_kit::gateway::console::CONTENT_SECURITY_POLICY;
use fengqiao_testkit::suite_test;
use serde_json::Value;

/// One HTTP/1.1 GET on a fresh connection: (status, lower-case headers, body).
async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, BTreeMap<String, String>, Vec<u8>) {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(req.as_bytes()).expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read");
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
            let mut out = Vec::new();
            let mut rest = &body[..];
            while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
                let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16)
                    .expect("chunk size");
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
                rest = &rest[nl + 2 + n + 2..];
            }
            body = out;
        }
        (status, headers, body)
    })
    .await
    .expect("http task")
}

suite_test!(
    console_files_are_public_and_data_calls_need_a_token,
    |suite| async move {
        let addr = suite.addr;
        for (path, ty, marker) in [
            ("/console/", "text/html; charset=utf-8", "枫桥 · 管理控制台"),
            (
                "/console/console.js",
                "text/javascript; charset=utf-8",
                "/v1/transferStatistics",
            ),
            (
                "/console/console.css",
                "text/css; charset=utf-8",
                "--accent",
            ),
            (
                "/console/vendor/chart.umd.js",
                "text/javascript; charset=utf-8",
                "Chart.js v4.6.1",
            ),
            (
                "/console/vendor/LICENSE.md",
                "text/plain; charset=utf-8",
                "MIT",
            ),
        ] {
            let (status, h, body) = get(addr, path, &[]).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(h["content-type"], ty, "{path}");
            assert_eq!(
                h["content-security-policy"], CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert!(
                CONTENT_SECURITY_POLICY.starts_with("default-src 'self';")
                    && !CONTENT_SECURITY_POLICY.contains("unsafe-inline")
                    && !CONTENT_SECURITY_POLICY.contains("unsafe-eval")
            );
            assert_eq!(h["cache-control"], "no-cache", "{path}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            assert!(
                String::from_utf8_lossy(&body).contains(marker),
                "{path} lacks {marker}"
            );
            // Revalidation: the same tag answers 304 without a body.
            let (status, _, body) = get(addr, path, &[("If-None-Match", &h["etag"])]).await;
            assert_eq!((status, body.len()), (304, 0), "{path}");
        }
        let (status, h, _) = get(addr, "/console", &[]).await;
        assert_eq!((status, h["location"].as_str()), (308, "/console/"));
        let (status, _, _) = get(addr, "/console/../openapi.json", &[]).await;
        assert_ne!(status, 200, "no path escapes the console's files");
        let (status, _, _) = get(addr, "/console/secret.txt", &[]).await;
        assert_eq!(status, 404);

        // The page's data calls: without a token 401 UNAUTHENTICATED (as google.rpc.Status),
        // with the station officer's token the API's own answer.
        let calls = [
            "/v1/transfers?pageSize=20",
            "/v1/transfers?overdueOnly=true&pageSize=100",
            "/v1/transferStatistics?startTime=2026-01-01T00:00:00Z&endTime=2026-12-31T00:00:00Z&groupBy=STATISTICS_DIMENSION_STATE",
            "/v1/caseTimeline?caseId=00000000-0000-4000-8000-000000000000",
            "/v1/deliveryIncidents",
        ];
        for path in calls {
            let (status, _, body) = get(addr, path, &[]).await;
            let err: Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(
                (status, err["code"].as_i64()),
                (401, Some(16)),
                "{path}: {err}"
            );
        }
        let officer = suite.token("xigang-bayilu-station", "officer-01", &["officer"]);
        let bearer = format!("Bearer {officer}");
        let auth = [("Authorization", bearer.as_str())];
        let (status, _, body) = get(addr, calls[0], &auth).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let (status, _, body) = get(addr, calls[2], &auth).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        // A case the station took no part in is NOT_FOUND, as over gRPC; incidents are for
        // administrators (PERMISSION_DENIED): the console shows what the API decides.
        let (status, _, _) = get(addr, calls[3], &auth).await;
        assert_eq!(status, 404);
        let (status, _, _) = get(addr, calls[4], &auth).await;
        assert_eq!(status, 403);
    }
);
