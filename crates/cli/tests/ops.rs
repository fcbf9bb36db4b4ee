//! The operator commands against a running `fengqiao dev`: tables show what the API answers,
//! `--output json` is the API's answer, visibility is the server's (another agency gets
//! NOT_FOUND), errors name their code and reason and exit non-zero, and nothing runs without a
//! token.

use std::process::{Command, Output};

use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::common::{Address, DisputeCategory, Party, PartyRole};
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::policereferral::{CreateReferralRequest, DraftTransferRequest, Referral};
use fengqiao_proto::router::GetTransferRequest;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_store::testing::TempDir;

mod common;
use common::{Procs, free_port, start_dev, wait_serving};

fn fengqiao(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fengqiao"))
        .args(args)
        .env_remove("FENGQIAO_TOKEN")
        .env_remove("FENGQIAO_ADDR")
        .output()
        .unwrap_or_else(|e| panic!("run fengqiao: {e}"))
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn start(dir: &std::path::Path) -> (Procs, String) {
    let port = free_port();
    let dev = Procs(vec![start_dev(port, dir)]);
    wait_serving(port).await;
    (dev, format!("http://127.0.0.1:{port}"))
}

fn token(dir: &std::path::Path, actor: &str) -> String {
    let o = fengqiao(&[
        "token",
        "--data-dir",
        &dir.display().to_string(),
        "--as",
        actor,
    ]);
    assert!(o.status.success(), "{}", err(&o));
    out(&o).trim().to_string()
}

#[tokio::test]
async fn operator_commands_show_what_the_api_answers() {
    let dir = TempDir::new();
    let (_dev, addr) = start(dir.path()).await;
    let data = dir.path().display().to_string();
    let channel = fengqiao_kit::client::channel(&addr, None).expect("channel");
    let police = |actor: &str| {
        PoliceReferralServiceClient::with_interceptor(
            channel.clone(),
            CallInterceptor::new(Some(token(dir.path(), actor))),
        )
    };

    // A referral and its submitted transfer, through the API.
    let r = police("xigang-110/dispatch-system")
        .create_referral(CreateReferralRequest {
            referral: Some(Referral {
                incident_number: "OPS2026000001".into(),
                call_time: Some(prost_types::Timestamp {
                    seconds: 1_790_000_000,
                    nanos: 0,
                }),
                location: Some(Address {
                    region_code: "210203".into(),
                    detail: "八一路某小区".into(),
                    location: None,
                }),
                category: DisputeCategory::Neighbourhood as i32,
                summary: "楼上住户夜间噪音扰民".into(),
                parties: vec![
                    Party {
                        role: PartyRole::Applicant as i32,
                        name: "张某".into(),
                        ..Default::default()
                    },
                    Party {
                        role: PartyRole::Respondent as i32,
                        name: "李某".into(),
                        ..Default::default()
                    },
                ],
                police_station: "agencies/xigang-bayilu-station".into(),
                ..Default::default()
            }),
            request_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .expect("CreateReferral")
        .into_inner()
        .referral
        .expect("referral");
    let t = police("xigang-bayilu-station/officer-01")
        .draft_transfer(DraftTransferRequest {
            name: r.name.clone(),
            to_agency: "agencies/xigang-bayilu-mediation-room".into(),
            note: "建议调解".into(),
            submit: true,
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .expect("DraftTransfer")
        .into_inner()
        .transfer
        .expect("transfer");

    let officer = [
        "--addr",
        &addr,
        "--data-dir",
        &data,
        "--as",
        "xigang-bayilu-station/officer-01",
    ];
    let run = |cmd: &[&str], who: &[&str]| {
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend_from_slice(who);
        fengqiao(&args)
    };

    // The table lists the transfer with its state, route and parties.
    let o = run(&["transfers", "list"], &officer);
    assert!(o.status.success(), "{}", err(&o));
    let table = out(&o);
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "STATE", "ROUTE", "FROM", "TO"] {
        assert!(header.contains(col), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with(&t.name))
        .unwrap_or_else(|| panic!("transfer missing: {table}"));
    assert!(row.contains("AWAITING_APPROVAL"), "{row}");
    assert!(row.contains("xigang-bayilu-mediation-room"), "{row}");

    // --output json is the API's answer (GetTransfer over gRPC says the same).
    let o = run(
        &["transfers", "show", &t.name, "--output", "json"],
        &officer,
    );
    assert!(o.status.success(), "{}", err(&o));
    let json: serde_json::Value = serde_json::from_str(&out(&o)).expect("json");
    let mut router = TransferServiceClient::with_interceptor(
        channel.clone(),
        CallInterceptor::new(Some(token(dir.path(), "xigang-bayilu-station/officer-01"))),
    );
    let got = router
        .get_transfer(GetTransferRequest {
            name: t.name.clone(),
        })
        .await
        .expect("GetTransfer")
        .into_inner()
        .transfer
        .expect("transfer");
    assert_eq!(json["name"], got.name);
    assert_eq!(json["state"], "TRANSFER_STATE_AWAITING_APPROVAL");
    assert_eq!(
        json["case_snapshot"]["case_id"],
        got.case_snapshot.expect("snapshot").case_id
    );
    assert_eq!(json["etag"], got.etag);

    // `show` as a table: one `field  value` line per leaf.
    let o = run(&["transfers", "show", &t.name], &officer);
    let shown = out(&o);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("state ") && l.ends_with("TRANSFER_STATE_AWAITING_APPROVAL")),
        "{shown}"
    );

    // Filters go to the server: no transfer in the state CLOSED, none overdue.
    let o = run(&["transfers", "list", "--state", "closed"], &officer);
    assert!(out(&o).contains("(none)"), "{}", out(&o));
    let o = run(&["overdue"], &officer);
    assert!(
        o.status.success() && out(&o).contains("(none)"),
        "{}",
        out(&o)
    );
    // A state the contracts do not have is refused before any call, naming the value.
    let o = run(&["transfers", "list", "--state", "bogus"], &officer);
    assert!(!o.status.success());
    assert!(err(&o).contains("TRANSFER_STATE_BOGUS"), "{}", err(&o));
    // A request the server refuses is the server's error with its reason and field, exit 1.
    let o = run(&["transfers", "show", "referrals/x"], &officer);
    assert!(!o.status.success());
    assert!(err(&o).contains("InvalidArgument"), "{}", err(&o));
    assert!(err(&o).contains("name:"), "{}", err(&o));

    // The case's timeline: created and submitted, in order.
    let o = run(&["timeline", &r.case_id], &officer);
    assert!(o.status.success(), "{}", err(&o));
    let tl = out(&o);
    let created = tl.find("CREATED").unwrap_or_else(|| panic!("{tl}"));
    let submitted = tl.find("SUBMITTED").unwrap_or_else(|| panic!("{tl}"));
    assert!(created < submitted, "{tl}");

    // The referral, as the station sees it.
    let o = run(&["referrals", "list"], &officer);
    assert!(out(&o).contains(&r.name), "{}", out(&o));
    let o = run(
        &["referrals", "show", &r.name, "--output", "json"],
        &officer,
    );
    let json: serde_json::Value = serde_json::from_str(&out(&o)).expect("json");
    assert_eq!(json["incident_number"], "OPS2026000001");

    // Visibility is the server's: the mediation room does not see the transfer before the
    // offer (NOT_FOUND, exit 1).
    let room = [
        "--addr",
        &addr,
        "--data-dir",
        &data,
        "--as",
        "xigang-bayilu-mediation-room/mediator-01",
    ];
    let o = run(&["transfers", "show", &t.name], &room);
    assert!(!o.status.success());
    assert!(err(&o).contains("NotFound"), "{}", err(&o));
    let o = run(&["cases", "list"], &room);
    assert!(
        o.status.success() && out(&o).contains("(none)"),
        "{}",
        out(&o)
    );

    // Statistics: only the dimensions grouped by are printed.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let at = |secs: i64| {
        prost_types::Timestamp {
            seconds: secs,
            nanos: 0,
        }
        .to_string()
    };
    let (from, to) = (at(now - 30 * 86_400), at(now + 86_400));
    let o = run(
        &["stats", "--from", &from, "--to", &to, "--group-by", "route"],
        &officer,
    );
    assert!(o.status.success(), "{}", err(&o));
    let st = out(&o);
    assert!(st.contains("police-to-station-mediation"), "{st}");
    assert!(
        !st.lines().next().unwrap_or_default().contains("REGION"),
        "{st}"
    );

    // Incidents: an unknown one is NOT_FOUND.
    let admin = [
        "--addr",
        &addr,
        "--data-dir",
        &data,
        "--as",
        "xigang-justice-bureau/admin",
    ];
    let o = run(&["incidents", "list"], &admin);
    assert!(o.status.success(), "{}", err(&o));
    let o = run(
        &[
            "incidents",
            "retry",
            "deliveryIncidents/00000000-0000-0000-0000-000000000000",
        ],
        &admin,
    );
    assert!(!o.status.success());
    assert!(err(&o).contains("NotFound"), "{}", err(&o));

    // No token, no call.
    let o = fengqiao(&["transfers", "list", "--addr", &addr]);
    assert!(!o.status.success());
    assert!(err(&o).contains("no token"), "{}", err(&o));
    // A token the server does not trust: UNAUTHENTICATED with its reason.
    let o = fengqiao(&["transfers", "list", "--addr", &addr, "--token", "x.y.z"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("Unauthenticated"), "{}", err(&o));
}
