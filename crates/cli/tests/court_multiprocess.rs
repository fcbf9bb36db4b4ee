//! 委派调解 with each service in its own process (`fengqiao serve`), over the network, on
//! SQLite and on PostgreSQL: the court's clerk registers a pre-filing case with both parties'
//! consent on the court-diversion process, the judge designates the district committee, the
//! router process pushes the offer to the mediation process; the court-diversion process is
//! killed with SIGKILL while the committee accepts, and restarted: the router's redelivery
//! brings the court's case in step. The parties are contacted, the mediation fails (the gap is
//! too large), the materials come back to the court with the 7-day registration clock
//! (民事诉讼法 Art 126), and the judge registers the case. Run twice: with the court pushed to,
//! and with the court in pull mode (法院专网: the court-diversion process pulls its messages).

use std::process::Command;
use std::time::Duration;

use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::common::{DisputeCategory, EvidenceRef, Money, Party, PartyRole};
use fengqiao_proto::courtdiversion as cd;
use fengqiao_proto::courtdiversion::court_diversion_service_client::CourtDiversionServiceClient;
use fengqiao_proto::mediation as md;
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::router::CompleteClockRequest;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_store::testing::TempDir;

mod common;
use common::{ISSUER, Procs, free_port, serve, wait_serving};

const COMMITTEE: &str = "xigang-mediation-committee";

fn doc(name: &str) -> EvidenceRef {
    EvidenceRef {
        display_name: name.into(),
        uri: format!("court://docs/{name}"),
        media_type: "application/pdf".into(),
        sha256: "cd".repeat(32),
        ..Default::default()
    }
}

fn dispute() -> cd::PreFilingCase {
    let party = |id: &str, role: PartyRole, name: &str| Party {
        party_id: id.into(),
        role: role as i32,
        name: name.into(),
        ..Default::default()
    };
    cd::PreFilingCase {
        pre_filing_number: "(2026)辽0203诉前调501号".into(),
        plaintiffs: vec![party("p1", PartyRole::Applicant, "王某")],
        defendants: vec![party("p2", PartyRole::Respondent, "赵某")],
        claims: vec![cd::Claim {
            description: "判令被告返还借款".into(),
            amount: Some(Money {
                currency_code: "CNY".into(),
                units: 20000,
                nanos: 0,
            }),
        }],
        category: DisputeCategory::Neighbourhood as i32,
        summary: "邻里借款纠纷，原告起诉要求返还".into(),
        evidence: vec![doc("借条")],
        region_code: "210203".into(),
        ..Default::default()
    }
}

fn consent(p: &str) -> cd::ConsentRecord {
    cd::ConsentRecord {
        party_id: p.into(),
        decision: cd::ConsentDecision::Consented as i32,
        method: cd::ConsentMethod::Written as i32,
        evidence: Some(doc("诉前调解确认书")),
        ..Default::default()
    }
}

/// `court_pulls`: the court is registered `delivery = "pull"` with no endpoint (法院专网, the
/// router cannot call it) and the court-diversion process pulls its messages
/// (`--inbox-pull-agencies`); the SIGKILL then cuts the pull stream instead of a push.
async fn network_flow(urls: [String; 3], court_pulls: bool) {
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
    let (rp, mp, cp) = (free_port(), free_port(), free_port());
    // The router pushes the court's messages to the court-diversion process and the others'
    // to the mediation process (no police process here).
    let mut out = String::new();
    let mut kind = "";
    for line in fengqiao::SAMPLE_AGENCIES.lines() {
        if let Some(k) = line.strip_prefix("kind = ") {
            kind = k.trim_matches('"');
        }
        if court_pulls && kind == "court" && line.starts_with("delivery = ") {
            out.push_str("delivery = \"pull\"\n");
        } else if court_pulls && kind == "court" && line.starts_with("endpoint = ") {
            // no endpoint: the router cannot call the court
        } else if line == "endpoint = \"self\"" {
            let port = if kind == "court" { cp } else { mp };
            out.push_str(&format!("endpoint = \"http://127.0.0.1:{port}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let agencies_file = dir.path().join("agencies.toml");
    std::fs::write(&agencies_file, out).expect("agencies");
    let agencies = agencies_file.display().to_string();
    let router_uri = format!("http://127.0.0.1:{rp}");
    let mut procs = Procs(Vec::new());
    procs.0.push(serve(
        "router",
        rp,
        &urls[0],
        dir.path(),
        &["--agencies-file", &agencies],
    ));
    procs.0.push(serve(
        "mediation",
        mp,
        &urls[1],
        dir.path(),
        &["--router", &router_uri],
    ));
    // The court's process seeds its roster (特邀调解名册) from the same agency file.
    let mut court_args = vec![
        "--router",
        router_uri.as_str(),
        "--agencies-file",
        agencies.as_str(),
    ];
    if court_pulls {
        court_args.extend(["--inbox-pull-agencies", "xigang-court"]);
    }
    procs.0.push(serve(
        "court-diversion",
        cp,
        &urls[2],
        dir.path(),
        &court_args,
    ));
    for p in [rp, mp, cp] {
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
    let clerk = || {
        CourtDiversionServiceClient::with_interceptor(
            ch(cp),
            token("xigang-court", "clerk-01", &["court_clerk"]),
        )
    };
    let judge = || {
        CourtDiversionServiceClient::with_interceptor(
            ch(cp),
            token("xigang-court", "judge-01", &["judge"]),
        )
    };
    let mut head = MediationServiceClient::with_interceptor(
        ch(mp),
        token(COMMITTEE, "director", &["mediation_admin", "mediator"]),
    );
    let mut committee_router = TransferServiceClient::with_interceptor(
        ch(rp),
        token(COMMITTEE, "director", &["mediation_admin", "mediator"]),
    );
    // Waits until the court's case is in `state`.
    let until = |name: String, state: cd::PreFilingCaseState| async move {
        let mut last = 0;
        for _ in 0..600 {
            if let Ok(r) = clerk()
                .get_case(cd::GetCaseRequest { name: name.clone() })
                .await
            {
                let c = r.into_inner().pre_filing_case.expect("case");
                if c.state == state as i32 {
                    return c;
                }
                last = c.state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the court's case never became {state:?} (is {last})");
    };

    // The committee's own roster on the mediation process.
    head.create_organization(md::CreateOrganizationRequest {
        organization: Some(md::Organization {
            display_name: "西岗区人民调解委员会".into(),
            kind: md::OrganizationKind::Committee as i32,
            region_code: "210203".into(),
            agency: format!("agencies/{COMMITTEE}"),
            ..Default::default()
        }),
        organization_id: COMMITTEE.into(),
        request_id: rid(),
    })
    .await
    .expect("organisation");
    head.create_mediator(md::CreateMediatorRequest {
        parent: format!("organizations/{COMMITTEE}"),
        mediator: Some(md::Mediator {
            display_name: "特邀调解员".into(),
            actor_id: "director".into(),
            specialties: vec![md::MediatorSpecialty::Neighbourhood as i32],
            region_code: "210203".into(),
            max_load: 10,
            ..Default::default()
        }),
        mediator_id: "invited-01".into(),
        request_id: rid(),
    })
    .await
    .expect("mediator");

    // 预立案 with both parties' consent, then the judge designates (the parties waived the
    // joint choice).
    let c = clerk()
        .create_case(cd::CreateCaseRequest {
            pre_filing_case: Some(dispute()),
            consents: vec![consent("p1"), consent("p2")],
            request_id: rid(),
        })
        .await
        .expect("create case")
        .into_inner()
        .pre_filing_case
        .expect("case");
    assert_eq!(c.state, cd::PreFilingCaseState::AwaitingJointChoice as i32);
    let c = judge()
        .designate_mediator(cd::DesignateMediatorRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            organization: format!("invitedOrganizations/{COMMITTEE}"),
            parties_waived_choice: true,
            evidence: Some(doc("放弃选定声明")),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("designate across processes")
        .into_inner()
        .pre_filing_case
        .expect("case");
    assert_eq!(c.state, cd::PreFilingCaseState::Delegated as i32);

    // The offer reaches the mediation process.
    let mut offered = None;
    for _ in 0..300 {
        let cases = head
            .list_cases(md::ListCasesRequest {
                case_id: c.case_id.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .mediation_cases;
        if let Some(m) = cases.into_iter().next() {
            offered = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = offered.expect("the offer reached the mediation process");

    // SIGKILL the court's process; the committee accepts meanwhile (the router's push to the
    // court fails and is retried); restart it on the same store.
    let court = procs.0.pop().expect("court process");
    let _ = Command::new("kill")
        .args(["-KILL", &court.id().to_string()])
        .status();
    let mut court = court;
    let _ = court.wait();
    let m = head
        .accept_case(md::AcceptCaseRequest {
            name: m.name.clone(),
            comment: "接受委派".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("accept")
        .into_inner()
        .mediation_case
        .expect("case");
    procs.0.push(serve(
        "court-diversion",
        cp,
        &urls[2],
        dir.path(),
        &court_args,
    ));
    wait_serving(cp).await;
    until(c.name.clone(), cd::PreFilingCaseState::Contacting).await;

    // Contacted (在线调解规则 Art 15), consents and the mediator on the mediation process.
    committee_router
        .complete_clock(CompleteClockRequest {
            name: m.transfer.clone(),
            clock: "contact_parties".into(),
            comment: "已联系双方".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("contact");
    until(c.name.clone(), cd::PreFilingCaseState::InMediation).await;
    let mut m = m;
    for p in ["p1", "p2"] {
        m = head
            .record_consent(md::RecordConsentRequest {
                name: m.name.clone(),
                party_id: p.into(),
                decision: md::ConsentDecision::Consented as i32,
                method: md::ConsentMethod::Written as i32,
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("consent")
            .into_inner()
            .mediation_case
            .expect("case");
    }
    let m = head
        .assign_mediator(md::AssignMediatorRequest {
            name: m.name.clone(),
            assignee: Some(md::assign_mediator_request::Assignee::Mediator(format!(
                "organizations/{COMMITTEE}/mediators/invited-01"
            ))),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("assign")
        .into_inner()
        .mediation_case
        .expect("case");
    // 调解不成: the positions are too far apart (在线调解规则 Art 25).
    head.end_mediation(md::EndMediationRequest {
        name: m.name.clone(),
        reason: md::EndReason::GapTooLarge as i32,
        detail: "双方对还款数额分歧较大".into(),
        request_id: rid(),
        ..Default::default()
    })
    .await
    .expect("end: gap too large");

    // Materials back (特邀调解规定 Art 21) and the registration clock.
    let c = until(c.name.clone(), cd::PreFilingCaseState::RegistrationPending).await;
    let back = c.materials_return.as_ref().expect("materials back");
    assert_eq!(back.cause, cd::ReturnCause::MediationFailed as i32);
    assert_eq!(back.reason_code, "mediation_failed");
    assert!(
        c.clocks
            .iter()
            .any(|k| k.name == "registration" && k.stopped_at.is_none())
    );
    // The court's process confirmed receipt of the feedback: the transfer is closed.
    let mut court_router = TransferServiceClient::with_interceptor(
        ch(rp),
        token("xigang-court", "judge-01", &["judge"]),
    );
    let mut state = 0;
    for _ in 0..200 {
        state = court_router
            .get_transfer(fengqiao_proto::router::GetTransferRequest {
                name: c.delegations[0].transfer.clone(),
            })
            .await
            .expect("get transfer")
            .into_inner()
            .transfer
            .expect("transfer")
            .state;
        if state == fengqiao_proto::router::TransferState::Closed as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, fengqiao_proto::router::TransferState::Closed as i32);
    let c = judge()
        .register_case(cd::RegisterCaseRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            docket_number: "(2026)辽0203民初501号".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .pre_filing_case
        .expect("case");
    assert_eq!(c.state, cd::PreFilingCaseState::Registered as i32);
    drop(procs);
}

#[test]
fn weipai_tiaojie_across_processes_sqlite() {
    let dir = TempDir::new();
    let urls = ["router", "mediation", "court"].map(|s| dir.sqlite_url(&format!("{s}.db")));
    fengqiao_store::testing::block_on(network_flow(urls, false));
}

#[test]
fn weipai_tiaojie_across_processes_postgres() {
    let urls = [(), (), ()].map(|_| fengqiao_store::testing::postgres_url());
    let [Some(a), Some(b), Some(c)] = urls else {
        return;
    };
    fengqiao_store::testing::block_on(network_flow([a, b, c], false));
}

#[test]
fn weipai_tiaojie_with_the_court_pulling_sqlite() {
    let dir = TempDir::new();
    let urls = ["router", "mediation", "court"].map(|s| dir.sqlite_url(&format!("{s}.db")));
    fengqiao_store::testing::block_on(network_flow(urls, true));
}

#[test]
fn weipai_tiaojie_with_the_court_pulling_postgres() {
    let urls = [(), (), ()].map(|_| fengqiao_store::testing::postgres_url());
    let [Some(a), Some(b), Some(c)] = urls else {
        return;
    };
    fengqiao_store::testing::block_on(network_flow([a, b, c], true));
}
