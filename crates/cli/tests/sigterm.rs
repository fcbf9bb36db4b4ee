//! SIGTERM during a burst of writes: the process drains and exits cleanly, and every write it
//! acknowledged is there after a restart — on SQLite and on PostgreSQL.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::common::AgencyKind;
use fengqiao_proto::router::agency_service_client::AgencyServiceClient;
use fengqiao_proto::router::{Agency, DeliveryMode, ListAgenciesRequest, RegisterAgencyRequest};
use fengqiao_store::testing::TempDir;

const ISSUER: &str = "fengqiao-sigterm-test";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

fn start(url: &str, keys: &std::path::Path, port: u16, dir: &std::path::Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fengqiao"));
    cmd.args(["serve", "--service", "router"]);
    common::with_pii_key(&mut cmd, dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--database-url", url])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--auth-issuer", ISSUER])
        .args(["--auth-public-keys-file", &keys.display().to_string()])
        .args(["--log-format", "json"])
        .args(["--config", &dir.join("config.toml").display().to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn fengqiao: {e}"))
}

async fn wait_serving(port: u16) {
    for _ in 0..200 {
        let out = Command::new(env!("CARGO_BIN_EXE_fengqiao"))
            .args(["healthcheck", "--addr", &format!("http://127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .status();
        if out.map(|s| s.success()).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on port {port} never reported SERVING");
}

fn agency(i: usize) -> Agency {
    Agency {
        kind: AgencyKind::MediationCommittee as i32,
        display_name: format!("第{i}人民调解委员会"),
        region_code: "210203".into(),
        delivery_mode: DeliveryMode::Pull as i32,
        ..Default::default()
    }
}

async fn burst_then_sigterm(url: String) {
    let dir = TempDir::new();
    let key = SigningKey::generate("k").expect("key");
    let keys = dir.path().join("keys.json");
    PublicKeyFile {
        keys: vec![key.public_entry()],
    }
    .save(&keys)
    .expect("keys");
    // The burst comes from one agency: lift its rate limit (the limiter has its own tests).
    std::fs::write(
        dir.path().join("config.toml"),
        "[limits]\nper_agency_rps = 100000.0\nper_agency_burst = 100000.0\n",
    )
    .expect("config");
    let token = key.sign(&fengqiao_kit::auth::claims(
        ISSUER,
        "agencies/justice-bureau",
        "admin",
        &["platform_admin"],
        600,
    ));

    let port = free_port();
    let mut child = start(&url, &keys, port, dir.path());
    wait_serving(port).await;

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let acked = acked.clone();
        let next = next.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let channel = fengqiao_kit::client::channel(&format!("http://127.0.0.1:{port}"), None)
                .expect("channel");
            let mut c =
                AgencyServiceClient::with_interceptor(channel, CallInterceptor::new(Some(token)));
            let mut failures = 0;
            while failures < 3 {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let id = format!("committee-{i}");
                let r = c
                    .register_agency(RegisterAgencyRequest {
                        agency: Some(agency(i)),
                        agency_id: id.clone(),
                        request_id: uuid::Uuid::new_v4().to_string(),
                    })
                    .await;
                match r {
                    Ok(_) => {
                        if let Ok(mut a) = acked.lock() {
                            a.insert(id);
                        }
                    }
                    Err(_) => failures += 1,
                }
            }
        }));
    }
    // Let the burst run, then ask the process to stop while writes are in flight.
    let started = std::time::Instant::now();
    loop {
        let n = acked.lock().map(|a| a.len()).unwrap_or(0);
        if n >= 150 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60) && !tasks.iter().all(|t| t.is_finished()),
            "the burst stalled at {n} acknowledged writes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    for t in tasks {
        t.await.expect("writer task");
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "clean exit after SIGTERM, got {exit:?}");

    // Restart on the same store: every acknowledged write is there.
    let port = free_port();
    let mut child = start(&url, &keys, port, dir.path());
    wait_serving(port).await;
    let channel =
        fengqiao_kit::client::channel(&format!("http://127.0.0.1:{port}"), None).expect("channel");
    let mut c = AgencyServiceClient::with_interceptor(channel, CallInterceptor::new(Some(token)));
    let mut stored = BTreeSet::new();
    let mut page = String::new();
    loop {
        let r = c
            .list_agencies(ListAgenciesRequest {
                page_size: 500,
                page_token: page.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        stored.extend(
            r.agencies
                .into_iter()
                .map(|a| a.name.trim_start_matches("agencies/").to_string()),
        );
        if r.next_page_token.is_empty() {
            break;
        }
        page = r.next_page_token;
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(acked.len() >= 150);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn sigterm_during_writes_loses_nothing_sqlite() {
    let dir = TempDir::new();
    let url = dir.sqlite_url("router.db");
    fengqiao_store::testing::block_on(async move {
        burst_then_sigterm(url).await;
    });
}

#[test]
fn sigterm_during_writes_loses_nothing_postgres() {
    let Some(url) = fengqiao_store::testing::postgres_url() else {
        return;
    };
    fengqiao_store::testing::block_on(async move {
        burst_then_sigterm(url).await;
    });
}
