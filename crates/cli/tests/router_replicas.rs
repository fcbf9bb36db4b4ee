//! The router as three `fengqiao serve --service router` processes on one PostgreSQL (the shape
//! of a k8s Deployment with three replicas, issue #17): 警调对接 intakes go in through a
//! police-referral process that calls the first replica, the two approvals of each case go to
//! two different replicas at once for several cases, and every replica's push worker and timer
//! run. The mediation room is a receiver in this test that counts every push it gets; it never
//! accepts, and each case's acceptance clock is then made due in the database, so the three
//! timers race for every expiry. At the end:
//!
//! - no double delivery: the receiver got each message id once, and the router's outbox holds
//!   exactly the messages it got, every one delivered;
//! - each expiry fired once: one EXPIRED event per transfer, one TRANSFER_EXPIRED message each;
//! - the event log that the group committers of three processes wrote is gap-free (`seq`);
//! - every replica reads the same final state of every transfer;
//! - `fengqiao audit-verify` finds the audit chain intact.
//!
//! PostgreSQL only: several processes on one SQLite file is not a supported shape.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::inbox::agency_inbox_service_server::{
    AgencyInboxService, AgencyInboxServiceServer,
};
use fengqiao_proto::inbox::{DeliverRequest, DeliverResponse, MessageKind};
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::policereferral::{CreateReferralRequest, DraftTransferRequest};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{ApproveTransferRequest, GetTransferRequest, TransferState};
use fengqiao_store::testing::TempDir;
use fengqiao_store::{Store, StoreConfig, sqlx};
use tonic::{Code, Request, Response, Status};

mod common;
use common::{ISSUER, Procs, free_port, sample_referral_with_id, serve, wait_serving};

/// Router replicas.
const REPLICAS: usize = 3;
/// Cases driven through them.
const CASES: usize = 18;
/// Cases in flight at once.
const DRIVERS: usize = 6;
/// `TRANSFER_EVENT_TYPE_EXPIRED` (router/v1/transfer.proto).
const EVENT_EXPIRED: i64 = 19;
const ROOM: &str = "xigang-bayilu-mediation-room";

/// The mediation room's inbox: answers every push, records every one.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, i32, String)>>>);

#[tonic::async_trait]
impl AgencyInboxService for Receiver {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let env = request
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope"))?;
        let mut got = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        let duplicate = got.iter().any(|(id, _, _)| *id == env.message_id);
        got.push((env.message_id, env.kind, env.transfer));
        Ok(Response::new(DeliverResponse { duplicate }))
    }
}

/// Retries a call answered UNAVAILABLE or ABORTED with the same request (the same request id),
/// as a client does.
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let t0 = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e)
                if matches!(e.code(), Code::Unavailable | Code::Aborted)
                    && t0.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
}

async fn wait_for(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < limit, "waited {limit:?} in vain for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn replicas(router_url: String, police_url: String) {
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

    // The receiver stands in for every agency that is not police; police agencies are the
    // police-referral process.
    let (pp, recv_port) = (free_port(), free_port());
    let received = Receiver::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", recv_port))
        .await
        .expect("receiver port");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgencyInboxServiceServer::new(received.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut out = String::new();
    let mut kind = "";
    let mut id = "";
    let mut police_agencies = BTreeSet::new();
    for line in fengqiao::SAMPLE_AGENCIES.lines() {
        if let Some(i) = line.strip_prefix("id = ") {
            id = i.trim_matches('"');
        }
        if let Some(k) = line.strip_prefix("kind = ") {
            kind = k.trim_matches('"');
            if kind.starts_with("police") {
                police_agencies.insert(format!("agencies/{id}"));
            }
        }
        if line == "endpoint = \"self\"" {
            let port = if kind.starts_with("police") {
                pp
            } else {
                recv_port
            };
            out.push_str(&format!("endpoint = \"http://127.0.0.1:{port}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let agencies_file = dir.path().join("agencies.toml");
    std::fs::write(&agencies_file, out).expect("agencies");

    // Three replicas started together on a fresh database, then the police process.
    let rports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
    let mut procs = Procs(Vec::new());
    for &rp in &rports {
        procs.0.push(serve(
            "router",
            rp,
            &router_url,
            dir.path(),
            &["--agencies-file", &agencies_file.display().to_string()],
        ));
    }
    procs.0.push(serve(
        "police-referral",
        pp,
        &police_url,
        dir.path(),
        &["--router", &format!("http://127.0.0.1:{}", rports[0])],
    ));
    for &p in rports.iter().chain([&pp]) {
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
    let dispatcher = token("xigang-110", "dispatch-system", &["dispatcher"]);
    let officer = token("xigang-bayilu-station", "officer-01", &["officer"]);
    let reviewer = token("xigang-110", "reviewer-01", &["command_room_reviewer"]);
    let chief = token("xigang-bayilu-station", "duty-chief-01", &["duty_chief"]);
    let police_ch = ch(pp);
    let router_chs: Vec<_> = rports.iter().map(|&p| ch(p)).collect();

    // Drive the cases, DRIVERS at a time; case i's two approvals go to replicas i and i + 1.
    let mut transfers: Vec<String> = Vec::new();
    for batch in (0..CASES).collect::<Vec<_>>().chunks(DRIVERS) {
        let mut set = tokio::task::JoinSet::new();
        for &i in batch {
            let dispatch = PoliceReferralServiceClient::with_interceptor(
                police_ch.clone(),
                dispatcher.clone(),
            );
            let station =
                PoliceReferralServiceClient::with_interceptor(police_ch.clone(), officer.clone());
            let step0 = TransferServiceClient::with_interceptor(
                router_chs[i % REPLICAS].clone(),
                reviewer.clone(),
            );
            let step1 = TransferServiceClient::with_interceptor(
                router_chs[(i + 1) % REPLICAS].clone(),
                chief.clone(),
            );
            let (create_rid, draft_rid, a0, a1) = (rid(), rid(), rid(), rid());
            set.spawn(async move {
                let r = retrying("CreateReferral", || {
                    let mut c = dispatch.clone();
                    let req = CreateReferralRequest {
                        referral: Some(sample_referral_with_id(&format!("LN2102032026112{i:04}"))),
                        request_id: create_rid.clone(),
                    };
                    async move { c.create_referral(req).await }
                })
                .await
                .into_inner()
                .referral
                .expect("referral");
                let t = retrying("DraftTransfer", || {
                    let mut c = station.clone();
                    let req = DraftTransferRequest {
                        name: r.name.clone(),
                        to_agency: format!("agencies/{ROOM}"),
                        submit: true,
                        request_id: draft_rid.clone(),
                        ..Default::default()
                    };
                    async move { c.draft_transfer(req).await }
                })
                .await
                .into_inner()
                .transfer
                .expect("transfer")
                .name;
                for (client, step, request_id) in [(&step0, 0, &a0), (&step1, 1, &a1)] {
                    retrying("ApproveTransfer", || {
                        let mut c = client.clone();
                        let req = ApproveTransferRequest {
                            name: t.clone(),
                            step_index: step,
                            request_id: request_id.clone(),
                            ..Default::default()
                        };
                        async move { c.approve_transfer(req).await }
                    })
                    .await;
                }
                t
            });
        }
        while let Some(t) = set.join_next().await {
            transfers.push(t.expect("driver"));
        }
    }
    assert_eq!(transfers.len(), CASES);

    let get = |replica: usize, name: String| {
        let mut c =
            TransferServiceClient::with_interceptor(router_chs[replica].clone(), officer.clone());
        async move {
            c.get_transfer(GetTransferRequest { name })
                .await
                .expect("get transfer")
                .into_inner()
                .transfer
                .expect("transfer")
                .state
        }
    };
    wait_for(
        "every offer delivered",
        Duration::from_secs(60),
        async || {
            for (i, t) in transfers.iter().enumerate() {
                if get(i % REPLICAS, t.clone()).await != TransferState::Delivered as i32 {
                    return false;
                }
            }
            true
        },
    )
    .await;

    // Every acceptance clock due now: the three timers race for each expiry.
    let store = Store::connect(StoreConfig::new(&router_url))
        .await
        .expect("router store");
    for t in &transfers {
        let id = t.trim_start_matches("transfers/");
        let changed = sqlx::query(
            "UPDATE transfers SET \
             acceptance_clock = CAST(jsonb_set(CAST(acceptance_clock AS jsonb), '{due_at}', \
               to_jsonb(CAST(CAST(acceptance_clock AS jsonb)->>'started_at' AS BIGINT) + 1)) AS TEXT), \
             next_due = CAST(CAST(acceptance_clock AS jsonb)->>'started_at' AS BIGINT) + 1 \
             WHERE id = $1 AND acceptance_clock IS NOT NULL",
        )
        .bind(id)
        .execute(store.pool())
        .await
        .expect("make the acceptance clock due")
        .rows_affected();
        assert_eq!(changed, 1, "{t} has an acceptance clock");
    }
    wait_for(
        "every transfer expired, on every replica",
        Duration::from_secs(60),
        async || {
            for t in &transfers {
                for r in 0..REPLICAS {
                    if get(r, t.clone()).await != TransferState::Expired as i32 {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    wait_for("the outbox drained", Duration::from_secs(60), async || {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status <> 'delivered'")
                .fetch_one(store.pool())
                .await
                .expect("outbox");
        pending == 0
    })
    .await;
    // Late duplicates, if any, would arrive within a push lease or two; give them the time.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // No double delivery.
    let got = received.0.lock().expect("received").clone();
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _, _) in &got {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "delivered more than once: {doubled:?}");
    assert!(police_agencies.contains("agencies/xigang-bayilu-station"));
    let outbox_ids: BTreeSet<String> =
        sqlx::query_as::<_, (String, String)>("SELECT id, destination FROM outbox")
            .fetch_all(store.pool())
            .await
            .expect("outbox ids")
            .into_iter()
            .filter(|(_, to)| !police_agencies.contains(to))
            .map(|(id, _)| id)
            .collect();
    assert!(!outbox_ids.is_empty(), "messages for the receiver");
    let got_ids: BTreeSet<String> = per_id.keys().map(|s| s.to_string()).collect();
    assert_eq!(
        got_ids, outbox_ids,
        "the receiver got exactly the router's messages for it"
    );
    let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status <> 'delivered'")
        .fetch_one(store.pool())
        .await
        .expect("outbox");
    assert_eq!(dead, 0, "every message delivered");

    // Each expiry once: one EXPIRED event and one TRANSFER_EXPIRED message per transfer.
    for t in &transfers {
        let id = t.trim_start_matches("transfers/");
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM transfer_events WHERE transfer_id = $1 AND event_type = $2",
        )
        .bind(id)
        .bind(EVENT_EXPIRED)
        .fetch_one(store.pool())
        .await
        .expect("events");
        assert_eq!(n, 1, "{t}: EXPIRED events");
        let msgs = got
            .iter()
            .filter(|(_, k, tr)| *k == MessageKind::TransferExpired as i32 && tr == t)
            .count();
        assert_eq!(msgs, 1, "{t}: TRANSFER_EXPIRED messages at the receiver");
        let offers = got
            .iter()
            .filter(|(_, k, tr)| *k == MessageKind::TransferOffered as i32 && tr == t)
            .count();
        assert_eq!(offers, 1, "{t}: TRANSFER_OFFERED messages at the receiver");
    }

    // The event log written by three processes is gap-free.
    let (count, lo, hi): (i64, i64, i64) =
        sqlx::query_as("SELECT COUNT(*), MIN(seq), MAX(seq) FROM transfer_events")
            .fetch_one(store.pool())
            .await
            .expect("seq");
    assert_eq!(
        count,
        hi - lo + 1,
        "transfer_events.seq {lo}..={hi} has gaps"
    );
    store.close().await;

    // The audit chain is intact.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fengqiao"))
        .args(["audit-verify", "--database-url", &router_url])
        .output()
        .expect("audit-verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("intact"), "{text}");
    drop(procs);
}

#[test]
fn three_router_replicas_deliver_once_expire_once_and_keep_the_audit_chain_postgres() {
    let (Some(router), Some(police)) = (
        fengqiao_store::testing::postgres_url(),
        fengqiao_store::testing::postgres_url(),
    ) else {
        return;
    };
    fengqiao_store::testing::block_on(replicas(router, police));
}
