//! SIGTERM to `fengqiao dev` during a burst of agency calls that call the router (police
//! intake, then 移送单 drafted and submitted through the router): no call the server accepted
//! fails UNAVAILABLE. Co-located services reach the router in-process, and that path stays up
//! until the agency services have drained (issue #9 §3).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::policereferral::{CreateReferralRequest, DraftTransferRequest};
use fengqiao_store::testing::TempDir;

mod common;
use common::{free_port, sample_referral, start_dev, wait_serving};
use tonic::Code;

/// An UNAVAILABLE the server itself answered (a response with gRPC headers), as opposed to the
/// client failing to reach it (connection refused once the listener closed: not accepted).
fn accepted_then_unavailable(s: &tonic::Status) -> bool {
    s.code() == Code::Unavailable && s.metadata().get("content-type").is_some()
}

#[test]
fn sigterm_in_dev_fails_no_accepted_call_unavailable() {
    let dir = TempDir::new();
    let key = fengqiao::ensure_dev_key(dir.path()).expect("dev key");
    std::fs::write(
        dir.path().join("config.toml"),
        "[limits]\nper_agency_rps = 100000.0\nper_agency_burst = 100000.0\n",
    )
    .expect("config");
    fengqiao_store::testing::block_on(async move {
        let port = free_port();
        let mut child = start_dev(port, dir.path());
        wait_serving(port).await;
        let token = |agency: &str, actor: &str, roles: &[&str]| {
            CallInterceptor::new(Some(key.sign(&fengqiao_kit::auth::claims(
                "fengqiao",
                &format!("agencies/{agency}"),
                actor,
                roles,
                600,
            ))))
        };
        let drafted = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let channel = fengqiao_kit::client::channel(&format!("http://127.0.0.1:{port}"), None)
                .expect("channel");
            let mut dispatch = PoliceReferralServiceClient::with_interceptor(
                channel.clone(),
                token("xigang-110", "dispatch-system", &["dispatcher"]),
            );
            let mut officer = PoliceReferralServiceClient::with_interceptor(
                channel,
                token("xigang-bayilu-station", "officer-01", &["officer"]),
            );
            let (drafted, next) = (drafted.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut bad = Vec::new();
                let mut failures = 0;
                while failures < 3 {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let r = dispatch
                        .create_referral(CreateReferralRequest {
                            referral: Some(sample_referral(&format!("LN2102032026{n:07}"))),
                            request_id: uuid::Uuid::new_v4().to_string(),
                        })
                        .await;
                    let r = match r {
                        Ok(r) => r.into_inner().referral.unwrap_or_default(),
                        Err(s) => {
                            if accepted_then_unavailable(&s) {
                                bad.push(format!("CreateReferral: {s:?}"));
                            }
                            failures += 1;
                            continue;
                        }
                    };
                    let d = officer
                        .draft_transfer(DraftTransferRequest {
                            name: r.name.clone(),
                            to_agency: "agencies/xigang-bayilu-mediation-room".into(),
                            submit: true,
                            request_id: uuid::Uuid::new_v4().to_string(),
                            ..Default::default()
                        })
                        .await;
                    match d {
                        Ok(_) => {
                            drafted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(s) => {
                            if accepted_then_unavailable(&s) {
                                bad.push(format!("DraftTransfer: {s:?}"));
                            }
                            failures += 1;
                        }
                    }
                }
                bad
            }));
        }
        let started = std::time::Instant::now();
        while drafted.load(Ordering::SeqCst) < 40 {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "the burst stalled at {} drafts",
                drafted.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        eprintln!(
            "SIGTERM after {} drafts in {:?}",
            drafted.load(Ordering::SeqCst),
            started.elapsed()
        );
        let mut bad = Vec::new();
        for t in tasks {
            bad.extend(t.await.expect("caller task"));
        }
        let exit = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert!(exit.success(), "clean exit after SIGTERM, got {exit:?}");
        assert!(
            bad.is_empty(),
            "accepted calls failed UNAVAILABLE at SIGTERM: {bad:#?}"
        );
    });
}
