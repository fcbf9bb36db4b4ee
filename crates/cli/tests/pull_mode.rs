//! Pull-mode agency services (DESIGN.md §1: agencies on a network the router cannot call, such
//! as 公安网, pull their messages): router, police-referral and mediation each in its own
//! `fengqiao serve` process, on SQLite and on PostgreSQL. The police agencies are registered
//! with `delivery = "pull"` and no endpoint, so the router has no address to call the
//! police-referral process at; police-referral runs with `--inbox-pull-agencies` and keeps a
//! `PullMessages` stream per police agency open to the router. A full 警调对接 flow reaches
//! the station (the mediation room's feedback is received); and with police-referral killed
//! with SIGKILL mid-stream and restarted, no message is lost (every referral gets its
//! feedback) and none is applied twice (each router event once in each referral's file, no
//! state reverted).

use std::time::Duration;

use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::common::{Address, DisputeCategory, Party, PartyRole};
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::mediation::{
    AcceptCaseRequest, ConsentDecision, ConsentMethod, CreateOrganizationRequest, ListCasesRequest,
    MediationCase, MediationCaseState, Organization, OrganizationKind, RecordConsentRequest,
};
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::policereferral::{
    CreateReferralRequest, DraftTransferRequest, GetReferralFileRequest, GetReferralRequest,
    Referral, ReferralState,
};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{ApproveTransferRequest, TransferEventType, TransferState};
use fengqiao_store::testing::TempDir;
use tonic::transport::Channel;

mod common;
use common::{ISSUER, Procs, free_port, serve, wait_serving};

const ROOM: &str = "xigang-bayilu-mediation-room";
const PULL_AGENCIES: &str = "xigang-110,xigang-bayilu-station";
/// Longest wait for a message to travel.
const TRAVEL: Duration = Duration::from_secs(60);

fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn call(n: usize, run: &str) -> Referral {
    Referral {
        incident_number: format!("PULL{run}{n:04}"),
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
        summary: "楼上住户夜间噪音扰民，双方发生口角".into(),
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
        on_scene_handling: "民警到场劝解，双方同意调解".into(),
        police_station: "agencies/xigang-bayilu-station".into(),
        ..Default::default()
    }
}

/// The sample district with the police agencies in pull mode (no endpoint: the router cannot
/// call them) and the mediation agencies pushed to the mediation process.
fn pull_seed(mediation_port: u16) -> String {
    let mut out = String::new();
    let mut kind = String::new();
    for line in fengqiao::SAMPLE_AGENCIES.lines() {
        if let Some(k) = line.strip_prefix("kind = ") {
            kind = k.trim_matches('"').to_string();
        }
        let police = kind.starts_with("police");
        if police && line.starts_with("delivery = ") {
            out.push_str("delivery = \"pull\"\n");
        } else if police && line.starts_with("endpoint = ") {
            // no endpoint
        } else if line == "endpoint = \"self\"" {
            out.push_str(&format!(
                "endpoint = \"http://127.0.0.1:{mediation_port}\"\n"
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

struct Net {
    procs: Procs,
    dir: TempDir,
    key: SigningKey,
    ports: [u16; 3],
    urls: [String; 3],
}

impl Net {
    async fn start(urls: [String; 3]) -> Net {
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
        // A short pull lease: an envelope streamed to a process killed before it acknowledged
        // comes again soon.
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[auth]\nissuer = \"{ISSUER}\"\npublic_keys_file = \"{}\"\nservice_key_file = \"{}\"\n\
                 [limits]\nper_agency_rps = 10000.0\nper_agency_burst = 10000.0\n\
                 [delivery]\npull_lease_ms = 2000\n",
                keys.display(),
                service_key.display()
            ),
        )
        .expect("config");
        let ports = [free_port(), free_port(), free_port()];
        let agencies_file = dir.path().join("agencies.toml");
        std::fs::write(&agencies_file, pull_seed(ports[2])).expect("agencies");
        let mut net = Net {
            procs: Procs(Vec::new()),
            dir,
            key,
            ports,
            urls,
        };
        let router = serve(
            "router",
            ports[0],
            &net.urls[0],
            net.dir.path(),
            &["--agencies-file", &agencies_file.display().to_string()],
        );
        net.procs.0.push(router);
        let police = net.spawn_police();
        net.procs.0.push(police);
        let mediation = serve(
            "mediation",
            ports[2],
            &net.urls[2],
            net.dir.path(),
            &["--router", &net.router_uri()],
        );
        net.procs.0.push(mediation);
        for p in ports {
            wait_serving(p).await;
        }
        net
    }

    fn router_uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0])
    }

    fn spawn_police(&self) -> std::process::Child {
        serve(
            "police-referral",
            self.ports[1],
            &self.urls[1],
            self.dir.path(),
            &[
                "--router",
                &self.router_uri(),
                "--inbox-pull-agencies",
                PULL_AGENCIES,
            ],
        )
    }

    /// SIGKILL of police-referral.
    fn kill9_police(&mut self) {
        let c = &mut self.procs.0[1];
        let _ = c.kill();
        let _ = c.wait();
    }

    async fn restart_police(&mut self) {
        self.procs.0[1] = self.spawn_police();
        wait_serving(self.ports[1]).await;
    }

    fn token(&self, agency: &str, actor: &str, roles: &[&str]) -> CallInterceptor {
        CallInterceptor::new(Some(self.key.sign(&fengqiao_kit::auth::claims(
            ISSUER,
            &format!("agencies/{agency}"),
            actor,
            roles,
            600,
        ))))
    }

    fn ch(&self, i: usize) -> Channel {
        fengqiao_kit::client::channel(&format!("http://127.0.0.1:{}", self.ports[i]), None)
            .expect("channel")
    }

    fn police(
        &self,
        agency: &str,
        actor: &str,
        roles: &[&str],
    ) -> PoliceReferralServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, CallInterceptor>,
    > {
        PoliceReferralServiceClient::with_interceptor(self.ch(1), self.token(agency, actor, roles))
    }

    fn router(
        &self,
        agency: &str,
        actor: &str,
        roles: &[&str],
    ) -> TransferServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, CallInterceptor>,
    > {
        TransferServiceClient::with_interceptor(self.ch(0), self.token(agency, actor, roles))
    }

    fn room(
        &self,
        actor: &str,
        roles: &[&str],
    ) -> MediationServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, CallInterceptor>,
    > {
        MediationServiceClient::with_interceptor(self.ch(2), self.token(ROOM, actor, roles))
    }

    /// 登记调解组织 for the room.
    async fn set_up_room(&self) {
        self.room("room-head", &["mediation_admin", "mediator"])
            .create_organization(CreateOrganizationRequest {
                organization: Some(Organization {
                    display_name: "八一路派出所驻所人民调解室".into(),
                    kind: OrganizationKind::StationMediationRoom as i32,
                    region_code: "210203".into(),
                    agency: format!("agencies/{ROOM}"),
                    ..Default::default()
                }),
                organization_id: "bayilu-room".into(),
                request_id: rid(),
            })
            .await
            .expect("登记调解组织");
    }

    /// 110 pushes the call to police-referral; the station drafts and submits the 移送单; the
    /// command room and the duty chief approve on the router.
    async fn refer(&self, n: usize, run: &str) -> Referral {
        let r = self
            .police("xigang-110", "dispatch-system", &["dispatcher"])
            .create_referral(CreateReferralRequest {
                referral: Some(call(n, run)),
                request_id: rid(),
            })
            .await
            .expect("intake")
            .into_inner()
            .referral
            .expect("referral");
        let t = self
            .police("xigang-bayilu-station", "officer-01", &["officer"])
            .draft_transfer(DraftTransferRequest {
                name: r.name.clone(),
                to_agency: format!("agencies/{ROOM}"),
                submit: true,
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("draft")
            .into_inner()
            .transfer
            .expect("transfer");
        for (step, agency, actor, role) in [
            (0, "xigang-110", "reviewer-01", "command_room_reviewer"),
            (1, "xigang-bayilu-station", "duty-chief-01", "duty_chief"),
        ] {
            self.router(agency, actor, &[role])
                .approve_transfer(ApproveTransferRequest {
                    name: t.name.clone(),
                    step_index: step,
                    request_id: rid(),
                    ..Default::default()
                })
                .await
                .expect("approve");
        }
        r
    }

    /// The room sees the offer and accepts it (受理).
    async fn accept(&self, r: &Referral) -> MediationCase {
        let mut room = self.room("mediator-01", &["mediator"]);
        let deadline = tokio::time::Instant::now() + TRAVEL;
        let offered = loop {
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
                break c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the offer reached the room"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        room.accept_case(AcceptCaseRequest {
            name: offered.name.clone(),
            etag: offered.etag.clone(),
            comment: "属邻里纠纷，予以受理".into(),
            request_id: rid(),
        })
        .await
        .expect("受理")
        .into_inner()
        .mediation_case
        .expect("case")
    }

    /// One party consents, the other refuses (人民调解法 Art 17): the mediation may not go on
    /// and the room's feedback goes to the station.
    async fn refused(&self, c: &MediationCase) {
        let mut room = self.room("mediator-01", &["mediator"]);
        let mut c = c.clone();
        for (i, decision) in [ConsentDecision::Consented, ConsentDecision::Refused]
            .into_iter()
            .enumerate()
        {
            c = room
                .record_consent(RecordConsentRequest {
                    name: c.name.clone(),
                    etag: c.etag.clone(),
                    party_id: c.parties[i].party_id.clone(),
                    decision: decision as i32,
                    method: ConsentMethod::Written as i32,
                    note: "当事人意愿".into(),
                    request_id: rid(),
                    ..Default::default()
                })
                .await
                .expect("当事人意愿")
                .into_inner()
                .mediation_case
                .expect("case");
        }
        assert_eq!(c.state, MediationCaseState::ConsentRefused as i32);
    }

    /// Waits until the station sees the feedback (反馈结果) of `r`.
    async fn feedback_received(&self, r: &Referral) -> Referral {
        let mut officer = self.police("xigang-bayilu-station", "officer-01", &["officer"]);
        let deadline = tokio::time::Instant::now() + TRAVEL;
        loop {
            let now = officer
                .get_referral(GetReferralRequest {
                    name: r.name.clone(),
                })
                .await
                .ok()
                .and_then(|x| x.into_inner().referral);
            if let Some(now) = now
                && now.state == ReferralState::FeedbackReceived as i32
            {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the feedback of {} reached the station",
                r.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Each router event once in the referral's file (nothing applied twice), the feedback
    /// there, the state not reverted.
    async fn applied_once(&self, r: &Referral) {
        let file = self
            .police("xigang-bayilu-station", "officer-01", &["officer"])
            .get_referral_file(GetReferralFileRequest {
                name: r.name.clone(),
            })
            .await
            .expect("referral file")
            .into_inner()
            .referral_file
            .expect("file");
        let referral = file.referral.as_ref().expect("referral");
        assert_eq!(referral.state, ReferralState::FeedbackReceived as i32);
        assert_eq!(
            referral.transfer_state,
            TransferState::FeedbackSubmitted as i32
        );
        let mut ids: Vec<&str> = file.events.iter().map(|e| e.event_id.as_str()).collect();
        let all = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all, "an event recorded twice in {}", r.name);
        for once in [
            TransferEventType::Accepted,
            TransferEventType::FeedbackSubmitted,
        ] {
            let n = file
                .events
                .iter()
                .filter(|e| e.event_type == once as i32)
                .count();
            assert_eq!(n, 1, "{once:?} in {}", r.name);
        }
    }
}

async fn full_flow(urls: [String; 3]) {
    let net = Net::start(urls).await;
    net.set_up_room().await;
    let r = net.refer(1, "F").await;
    assert_eq!(r.state, ReferralState::ReadyToTransfer as i32);
    let c = net.accept(&r).await;
    net.refused(&c).await;
    let fb = net.feedback_received(&r).await;
    let feedback = fb.feedback.expect("feedback");
    assert!(feedback.received_time.is_some());
    assert!(!feedback.outcome_code.is_empty());
    net.applied_once(&r).await;
    drop(net);
}

async fn kill9_mid_stream(urls: [String; 3]) {
    const CASES: usize = 4;
    let mut net = Net::start(urls).await;
    net.set_up_room().await;
    let mut referrals = Vec::new();
    for n in 0..CASES {
        referrals.push(net.refer(n, "K").await);
    }
    let mut cases = Vec::new();
    for r in &referrals {
        cases.push(net.accept(r).await);
    }
    // The acceptances are streaming to police-referral: kill it mid-stream.
    net.kill9_police();
    // Feedback piles up at the router while it is down.
    for c in &cases {
        net.refused(c).await;
    }
    net.restart_police().await;
    // Killed again while it catches up on the backlog.
    tokio::time::sleep(Duration::from_millis(150)).await;
    net.kill9_police();
    net.restart_police().await;
    for r in &referrals {
        net.feedback_received(r).await;
    }
    // Past a pull lease: whatever was streamed again has been de-duplicated, nothing reverted.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for r in &referrals {
        net.applied_once(r).await;
    }
    drop(net);
}

fn sqlite_urls(dir: &TempDir) -> [String; 3] {
    ["router", "police", "mediation"].map(|s| dir.sqlite_url(&format!("{s}.db")))
}

fn postgres_urls() -> Option<[String; 3]> {
    let urls = [(), (), ()].map(|_| fengqiao_store::testing::postgres_url());
    let [Some(a), Some(b), Some(c)] = urls else {
        return None;
    };
    Some([a, b, c])
}

#[test]
fn jingdiao_with_police_in_pull_mode_sqlite() {
    let dir = TempDir::new();
    fengqiao_store::testing::block_on(full_flow(sqlite_urls(&dir)));
}

#[test]
fn jingdiao_with_police_in_pull_mode_postgres() {
    if let Some(urls) = postgres_urls() {
        fengqiao_store::testing::block_on(full_flow(urls));
    }
}

#[test]
fn pull_survives_kill9_mid_stream_sqlite() {
    let dir = TempDir::new();
    fengqiao_store::testing::block_on(kill9_mid_stream(sqlite_urls(&dir)));
}

#[test]
fn pull_survives_kill9_mid_stream_postgres() {
    if let Some(urls) = postgres_urls() {
        fengqiao_store::testing::block_on(kill9_mid_stream(urls));
    }
}

/// `inbox.pull_agencies` in a process without an agency service, or without the service key
/// that signs the worker's tokens, is refused at start-up.
#[test]
fn pull_agencies_need_an_agency_service_and_the_service_key() {
    let dir = TempDir::new();
    let key = SigningKey::generate("k").expect("key");
    let service_key = dir.path().join("service-key.json");
    key.save(&service_key).expect("service key");
    let with_key = dir.path().join("with-key.toml");
    std::fs::write(
        &with_key,
        format!(
            "[auth]\nservice_key_file = \"{}\"\n[inbox]\npull_agencies = [\"xigang-110\"]\n",
            service_key.display()
        ),
    )
    .expect("config");
    let without_key = dir.path().join("without-key.toml");
    std::fs::write(&without_key, "[inbox]\npull_agencies = [\"xigang-110\"]\n").expect("config");
    for (service, config, says) in [
        (
            "router",
            &with_key,
            "no agency service runs in this process",
        ),
        ("police-referral", &without_key, "auth.service_key_file"),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fengqiao"));
        cmd.args(["serve", "--service", service]);
        let out = common::with_pii_key(&mut cmd, dir.path())
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--database-url", &dir.sqlite_url(&format!("{service}.db"))])
            .args(["--data-dir", &dir.path().display().to_string()])
            .args(["--router", "http://127.0.0.1:9"])
            .args(["--config", &config.display().to_string()])
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{service} started: {text}");
        assert!(text.contains(says), "{service}: {text}");
    }
}
