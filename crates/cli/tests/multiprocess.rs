//! 警调对接 with each service in its own process (`fengqiao serve`), talking over the network,
//! on SQLite and on PostgreSQL: 110 pushes a referral to the police-referral process, the
//! station drafts the 移送单, the command room and the duty chief approve on the router
//! process, the router pushes the offer to the mediation process, the mediation room declines
//! with a reason, and the police-referral process shows it.

use std::time::Duration;

use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::mediation::{DeclineCaseRequest, ListCasesRequest};
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::policereferral::{
    CreateReferralRequest, DraftTransferRequest, GetReferralRequest, ReferralState,
};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{ApproveTransferRequest, TransferState};
use fengqiao_store::testing::TempDir;

mod common;
use common::{ISSUER, Procs, free_port, sample_referral_with_id, serve, wait_serving};

async fn network_flow(urls: [String; 3]) {
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
    let (rp, pp, mp) = (free_port(), free_port(), free_port());
    // The router pushes police messages to the police process and mediation messages to the
    // mediation process.
    let mut out = String::new();
    let mut kind = "";
    for line in fengqiao::SAMPLE_AGENCIES.lines() {
        if let Some(k) = line.strip_prefix("kind = ") {
            kind = k.trim_matches('"');
        }
        if line == "endpoint = \"self\"" {
            let port = if kind.starts_with("police") { pp } else { mp };
            out.push_str(&format!("endpoint = \"http://127.0.0.1:{port}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let agencies_file = dir.path().join("agencies.toml");
    std::fs::write(&agencies_file, out).expect("agencies");
    let router_uri = format!("http://127.0.0.1:{rp}");
    let mut procs = Procs(Vec::new());
    procs.0.push(serve(
        "router",
        rp,
        &urls[0],
        dir.path(),
        &["--agencies-file", &agencies_file.display().to_string()],
    ));
    procs.0.push(serve(
        "police-referral",
        pp,
        &urls[1],
        dir.path(),
        &["--router", &router_uri],
    ));
    procs.0.push(serve(
        "mediation",
        mp,
        &urls[2],
        dir.path(),
        &["--router", &router_uri],
    ));
    for p in [rp, pp, mp] {
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

    // 110 pushes the referral; the station drafts and submits the 移送单.
    let mut dispatch = PoliceReferralServiceClient::with_interceptor(
        ch(pp),
        token("xigang-110", "dispatch-system", &["dispatcher"]),
    );
    let r = dispatch
        .create_referral(CreateReferralRequest {
            referral: Some(sample_referral_with_id("LN21020320261122001")),
            request_id: rid(),
        })
        .await
        .expect("intake")
        .into_inner()
        .referral
        .expect("referral");
    let mut officer = PoliceReferralServiceClient::with_interceptor(
        ch(pp),
        token("xigang-bayilu-station", "officer-01", &["officer"]),
    );
    let drafted = officer
        .draft_transfer(DraftTransferRequest {
            name: r.name.clone(),
            to_agency: "agencies/xigang-bayilu-mediation-room".into(),
            submit: true,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("draft")
        .into_inner();
    let t = drafted.transfer.expect("transfer");

    // 指挥室审核, then 值班所长审批, on the router process.
    let mut reviewer = TransferServiceClient::with_interceptor(
        ch(rp),
        token("xigang-110", "reviewer-01", &["command_room_reviewer"]),
    );
    reviewer
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            step_index: 0,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("review");
    let mut chief = TransferServiceClient::with_interceptor(
        ch(rp),
        token("xigang-bayilu-station", "duty-chief-01", &["duty_chief"]),
    );
    chief
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            step_index: 1,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("approve");

    // The offer reaches the mediation process; the room declines it with a reason.
    let mut room = MediationServiceClient::with_interceptor(
        ch(mp),
        token("xigang-bayilu-mediation-room", "mediator-01", &["mediator"]),
    );
    let mut case = None;
    for _ in 0..200 {
        let cases = room
            .list_cases(ListCasesRequest {
                case_id: r.case_id.clone(),
                ..Default::default()
            })
            .await
            .expect("list cases")
            .into_inner()
            .mediation_cases;
        if let Some(c) = cases.into_iter().next() {
            case = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let case = case.expect("the offer reached the mediation process");
    room.decline_case(DeclineCaseRequest {
        name: case.name.clone(),
        reason_code: "outside_jurisdiction".into(),
        reason: "纠纷发生地不属于本调解室辖区".into(),
        request_id: rid(),
        ..Default::default()
    })
    .await
    .expect("decline");

    // The decline travels back to the police process.
    let mut seen = None;
    for _ in 0..200 {
        let now = officer
            .get_referral(GetReferralRequest {
                name: r.name.clone(),
            })
            .await
            .expect("get referral")
            .into_inner()
            .referral
            .expect("referral");
        if now.transfer_state == TransferState::Declined as i32 {
            seen = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = seen.expect("the referral shows the decline");
    assert_eq!(now.state, ReferralState::Returned as i32);
    drop(procs);
}

#[test]
fn jingdiao_across_processes_sqlite() {
    let dir = TempDir::new();
    let urls = ["router", "police", "mediation"].map(|s| dir.sqlite_url(&format!("{s}.db")));
    fengqiao_store::testing::block_on(network_flow(urls));
}

#[test]
fn jingdiao_across_processes_postgres() {
    let urls = [(), (), ()].map(|_| fengqiao_store::testing::postgres_url());
    let [Some(a), Some(b), Some(c)] = urls else {
        return;
    };
    fengqiao_store::testing::block_on(network_flow([a, b, c]));
}
