//! The measured scenarios, per backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fengqiao::ServiceName;
use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::common::{Address, DisputeCategory, IdType, Party, PartyRole};
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::mediation::*;
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::policereferral::{
    AcknowledgeFeedbackRequest, CreateReferralRequest, DraftTransferRequest, GetReferralRequest,
    Referral, ReferralState,
};
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    ApproveTransferRequest, GetTransferRequest, ListTransfersRequest, TransferDirection,
    WatchTransfersRequest,
};
use fengqiao_store::{Store, StoreConfig};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::cost::{CostRow, Meter, PgMeter};
use crate::load::{Figure, Sampler, TargetRow, run_load};
use crate::{Args, ChildOpts, ISSUER, Phase, SuiteProc, proc_stat};

const STATION: &str = "xigang-bayilu-station";
const COMMAND: &str = "xigang-110";
const ROOM: &str = "xigang-bayilu-mediation-room";
const ORG: &str = "organizations/bayilu-room";

pub(crate) type Ref = PoliceReferralServiceClient<InterceptedService<Channel, CallInterceptor>>;
pub(crate) type Rt = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;
pub(crate) type Med = MediationServiceClient<InterceptedService<Channel, CallInterceptor>>;

pub(crate) fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Where the bench clients call each service (several addresses: round-robin).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// police-referral.
    pub police: Vec<String>,
    /// router.
    pub router: Vec<String>,
    /// mediation.
    pub mediation: Vec<String>,
    /// court-diversion, judicial-confirmation, admin-dispute.
    pub other: Vec<String>,
}

impl Endpoints {
    /// Every service at one address.
    pub fn single(endpoint: &str) -> Endpoints {
        let v = vec![endpoint.to_string()];
        Endpoints {
            police: v.clone(),
            router: v.clone(),
            mediation: v.clone(),
            other: v,
        }
    }
}

/// Which service a client calls.
#[derive(Debug, Clone, Copy)]
pub enum Svc {
    /// police-referral.
    Police,
    /// router.
    Router,
    /// mediation.
    Mediation,
    /// the new services.
    Other,
}

/// Channels and tokens for the bench clients.
pub struct Ctx {
    /// `connections` channels per distinct address.
    channels: BTreeMap<String, Vec<Channel>>,
    endpoints: Endpoints,
    next: AtomicUsize,
    pub(crate) dispatcher: CallInterceptor,
    pub(crate) officer: CallInterceptor,
    pub(crate) reviewer: CallInterceptor,
    pub(crate) chief: CallInterceptor,
    pub(crate) mediator: CallInterceptor,
    pub(crate) head: CallInterceptor,
    pub(crate) clerk: CallInterceptor,
    pub(crate) judge: CallInterceptor,
    pub(crate) committee: CallInterceptor,
    pub(crate) coordinator: CallInterceptor,
    pub(crate) liaison: CallInterceptor,
    pub(crate) review_officer: CallInterceptor,
    pub(crate) run: String,
}

impl Ctx {
    pub(crate) fn new(
        key: &fengqiao_kit::auth::SigningKey,
        endpoints: Endpoints,
        connections: usize,
    ) -> anyhow::Result<Ctx> {
        let tok = |agency: &str, actor: &str, roles: &[&str]| {
            CallInterceptor::new(Some(key.sign(&fengqiao_kit::auth::claims(
                ISSUER,
                &format!("agencies/{agency}"),
                actor,
                roles,
                3600,
            ))))
        };
        let mut channels = BTreeMap::new();
        for e in endpoints
            .police
            .iter()
            .chain(&endpoints.router)
            .chain(&endpoints.mediation)
            .chain(&endpoints.other)
        {
            if !channels.contains_key(e) {
                let mut v = Vec::new();
                for _ in 0..connections.max(1) {
                    v.push(fengqiao_kit::client::channel(e, None)?);
                }
                channels.insert(e.clone(), v);
            }
        }
        Ok(Ctx {
            channels,
            endpoints,
            next: AtomicUsize::new(0),
            dispatcher: tok(COMMAND, "dispatch-system", &["dispatcher"]),
            officer: tok(STATION, "officer-01", &["officer"]),
            reviewer: tok(COMMAND, "reviewer-01", &["command_room_reviewer"]),
            chief: tok(STATION, "duty-chief-01", &["duty_chief"]),
            mediator: tok(ROOM, "mediator-01", &["mediator"]),
            head: tok(ROOM, "room-head", &["mediation_admin", "mediator"]),
            clerk: tok(crate::flows::COURT, "clerk-01", &["court_clerk"]),
            judge: tok(crate::flows::COURT, "judge-01", &["judge"]),
            committee: tok(
                crate::flows::COMMITTEE,
                "director",
                &["mediation_admin", "mediator"],
            ),
            coordinator: tok(crate::flows::CENTRE, "coordinator-01", &["coordinator"]),
            liaison: tok(crate::flows::ORGAN, "liaison-01", &["organ_liaison"]),
            review_officer: tok(
                crate::flows::REVIEWER,
                "review-officer",
                &["review_officer"],
            ),
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_string(),
        })
    }
    /// A channel to `svc` (round-robin over its addresses and their connections).
    pub(crate) fn ch_of(&self, svc: Svc) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let list = match svc {
            Svc::Police => &self.endpoints.police,
            Svc::Router => &self.endpoints.router,
            Svc::Mediation => &self.endpoints.mediation,
            Svc::Other => &self.endpoints.other,
        };
        let chans = &self.channels[&list[i % list.len()]];
        chans[(i / list.len()) % chans.len()].clone()
    }
    fn ch(&self) -> Channel {
        self.ch_of(Svc::Router)
    }
    fn referral(&self, who: &CallInterceptor) -> Ref {
        PoliceReferralServiceClient::with_interceptor(self.ch_of(Svc::Police), who.clone())
    }
    pub(crate) fn router(&self, who: &CallInterceptor) -> Rt {
        TransferServiceClient::with_interceptor(self.ch_of(Svc::Router), who.clone())
    }
    pub(crate) fn med(&self, who: &CallInterceptor) -> Med {
        MediationServiceClient::with_interceptor(self.ch_of(Svc::Mediation), who.clone())
    }
}

fn noise_referral(incident: &str) -> Referral {
    Referral {
        incident_number: incident.into(),
        call_time: Some(prost_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 0,
        }),
        caller: Some(Party {
            name: "王某".into(),
            phone: "13912345678".into(),
            ..Default::default()
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
                id_type: IdType::ResidentIdCard as i32,
                // A valid GB 11643 number (check digit X); the same for every referral.
                id_number: "11010519491231002X".into(),
                phone: "13812345678".into(),
                ..Default::default()
            },
            Party {
                role: PartyRole::Respondent as i32,
                name: "李某".into(),
                phone: "0411-82345678".into(),
                ..Default::default()
            },
        ],
        on_scene_handling: "民警到场劝解，双方情绪平稳，同意调解".into(),
        police_station: format!("agencies/{STATION}"),
        ..Default::default()
    }
}

/// Intake: CreateReferral (as the 110 dispatch system) then DraftTransfer with submit (as the
/// station officer). Returns (referral name, transfer name, case id).
pub(crate) async fn intake(ctx: &Ctx, n: u64) -> anyhow::Result<(String, String, String)> {
    let incident = format!("B{}{n:08}", ctx.run);
    let r = ctx
        .referral(&ctx.dispatcher)
        .create_referral(CreateReferralRequest {
            referral: Some(noise_referral(&incident)),
            request_id: String::new(),
        })
        .await
        .context("CreateReferral")?
        .into_inner()
        .referral
        .context("no referral")?;
    let d = ctx
        .referral(&ctx.officer)
        .draft_transfer(DraftTransferRequest {
            name: r.name.clone(),
            to_agency: format!("agencies/{ROOM}"),
            note: "110警情，民间纠纷，建议调解".into(),
            submit: true,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .context("DraftTransfer")?
        .into_inner();
    let t = d.transfer.context("no transfer")?;
    Ok((r.name, t.name, r.case_id))
}

async fn approve(ctx: &Ctx, transfer: &str) -> anyhow::Result<()> {
    ctx.router(&ctx.reviewer)
        .approve_transfer(ApproveTransferRequest {
            name: transfer.into(),
            etag: String::new(),
            step_index: 0,
            comment: "指挥室审核通过".into(),
            request_id: rid(),
        })
        .await
        .context("approve step 0 (指挥室审核)")?;
    ctx.router(&ctx.chief)
        .approve_transfer(ApproveTransferRequest {
            name: transfer.into(),
            etag: String::new(),
            step_index: 1,
            comment: "同意移送".into(),
            request_id: rid(),
        })
        .await
        .context("approve step 1 (值班所长审批)")?;
    Ok(())
}

/// ABORTED answers retried by the bench (a conflicting concurrent write inside the suite).
pub static ABORTED_RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Retries a call answered ABORTED ("read it again and retry") up to 20 times, 20 ms apart.
pub(crate) async fn retry_aborted<T, F, Fut>(mut f: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(e) if e.code() == tonic::Code::Aborted && tries < 20 => {
                tries += 1;
                ABORTED_RETRIES.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r,
        }
    }
}

/// Polls for up to 15 s (under the 20 s operation limit, so the step is named): after 20 ms,
/// then twice as long each time up to 160 ms, like a client that does not hammer the server.
pub(crate) async fn poll<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let t0 = Instant::now();
    let mut wait = Duration::from_millis(20);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if t0.elapsed() > Duration::from_secs(15) {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(160));
    }
}

pub(crate) fn sig(kind: SignerKind, party: &str, method: SignatureMethod) -> Signature {
    Signature {
        signer_kind: kind as i32,
        party_id: party.into(),
        signer_name: "签署人".into(),
        method: method as i32,
        ..Default::default()
    }
}

/// One complete 警调对接 cycle: intake → 指挥室审核 → 值班所长审批 → delivery to the mediation
/// room → AcceptCase → consent of every party → automatic mediator assignment → agreement
/// drafted and signed (parties, mediator, committee seal) → EndMediation(AGREEMENT), i.e.
/// feedback `agreement_reached` → the station acknowledges the feedback → referral CLOSED.
pub(crate) async fn full_cycle(ctx: &Ctx, n: u64) -> anyhow::Result<()> {
    let (referral, transfer, case_id) = intake(ctx, n).await?;
    approve(ctx, &transfer).await?;
    let mut room = ctx.med(&ctx.mediator);
    let case = poll("the mediation case (delivery)", || {
        let mut room = room.clone();
        let case_id = case_id.clone();
        async move {
            let cases = room
                .list_cases(ListCasesRequest {
                    case_id,
                    ..Default::default()
                })
                .await
                .context("ListCases")?
                .into_inner()
                .mediation_cases;
            Ok(cases.into_iter().next())
        }
    })
    .await?;
    // The same request id on every attempt: a retry after ABORTED is a replay, not a second
    // acceptance.
    let accept_rid = rid();
    let c = retry_aborted(|| {
        let mut room = room.clone();
        let req = AcceptCaseRequest {
            name: case.name.clone(),
            comment: "属于邻里纠纷，予以受理".into(),
            request_id: accept_rid.clone(),
            ..Default::default()
        };
        async move { room.accept_case(req).await }
    })
    .await
    .context("AcceptCase")?
    .into_inner()
    .mediation_case
    .context("no case")?;
    for p in &c.parties {
        room.record_consent(RecordConsentRequest {
            name: c.name.clone(),
            party_id: p.party_id.clone(),
            decision: ConsentDecision::Consented as i32,
            method: ConsentMethod::Written as i32,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .context("RecordConsent")?;
    }
    let c = room
        .assign_mediator(AssignMediatorRequest {
            name: c.name.clone(),
            assignee: Some(assign_mediator_request::Assignee::Automatic(
                AutomaticAssignment::default(),
            )),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .context("AssignMediator")?
        .into_inner()
        .mediation_case
        .context("no case")?;
    let ids: Vec<String> = c.parties.iter().map(|p| p.party_id.clone()).collect();
    // Answers are masked (#14); the agreement records each party's identity (人民调解法
    // Art 29), so the mediator reads the parties in full (access-logged), as the worked
    // examples do. Without it DraftAgreement refuses the masked ID numbers and phones.
    let mut full = tonic::Request::new(GetCaseRequest {
        name: c.name.clone(),
    });
    full.metadata_mut().insert(
        fengqiao_kit::pii::VIEW_HEADER,
        tonic::metadata::MetadataValue::from_static("full"),
    );
    let parties = room
        .get_case(full)
        .await
        .context("GetCase (full view)")?
        .into_inner()
        .mediation_case
        .context("no case")?
        .parties;
    let c = room
        .draft_agreement(DraftAgreementRequest {
            name: c.name.clone(),
            agreement: Some(Agreement {
                parties,
                facts_and_responsibilities: "李某夜间噪音影响张某休息，李某负主要责任".into(),
                terms: vec![AgreementTerm {
                    description: "李某每日22时后不再进行产生噪音的活动，并向张某赔礼道歉".into(),
                    obligor_party_ids: ids.iter().skip(1).take(1).cloned().collect(),
                    obligee_party_ids: ids.iter().take(1).cloned().collect(),
                    ..Default::default()
                }],
                performance_manner: "即时履行".into(),
                performance_deadline: Some(prost_types::Timestamp {
                    seconds: 1_900_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .context("DraftAgreement")?
        .into_inner()
        .mediation_case
        .context("no case")?;
    let mut sigs: Vec<Signature> = ids
        .iter()
        .map(|p| sig(SignerKind::Party, p, SignatureMethod::Handwritten))
        .collect();
    sigs.push(sig(SignerKind::Mediator, "", SignatureMethod::Handwritten));
    sigs.push(sig(SignerKind::CommitteeSeal, "", SignatureMethod::Seal));
    for s in sigs {
        room.sign_agreement(SignAgreementRequest {
            name: c.name.clone(),
            etag: String::new(),
            signature: Some(s),
            request_id: rid(),
        })
        .await
        .context("SignAgreement")?;
    }
    room.end_mediation(EndMediationRequest {
        name: c.name.clone(),
        reason: EndReason::Agreement as i32,
        request_id: rid(),
        ..Default::default()
    })
    .await
    .context("EndMediation")?;
    let officer = ctx.referral(&ctx.officer);
    poll("the feedback at the station", || {
        let mut officer = officer.clone();
        let referral = referral.clone();
        async move {
            let r = officer
                .get_referral(GetReferralRequest { name: referral })
                .await
                .context("GetReferral")?
                .into_inner()
                .referral
                .context("no referral")?;
            Ok((r.state == ReferralState::FeedbackReceived as i32).then_some(()))
        }
    })
    .await?;
    let r = ctx
        .referral(&ctx.officer)
        .acknowledge_feedback(AcknowledgeFeedbackRequest {
            name: referral.clone(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .context("AcknowledgeFeedback")?
        .into_inner();
    let closed = r
        .referral
        .is_some_and(|r| r.state == ReferralState::Closed as i32);
    if !closed {
        bail!("the referral is not CLOSED after AcknowledgeFeedback");
    }
    Ok(())
}

/// The room head registers the room and neighbourhood mediators with a load cap that the
/// bench cannot reach.
pub(crate) async fn roster(ctx: &Ctx) -> anyhow::Result<()> {
    let mut head = ctx.med(&ctx.head);
    head.create_organization(CreateOrganizationRequest {
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
    .context("CreateOrganization")?;
    for id in ["med-li", "med-zhang", "med-zhao", "med-sun"] {
        head.create_mediator(CreateMediatorRequest {
            parent: ORG.into(),
            mediator: Some(Mediator {
                display_name: format!("调解员{id}"),
                actor_id: id.into(),
                specialties: vec![MediatorSpecialty::Neighbourhood as i32],
                region_code: "210203".into(),
                max_load: 1_000_000,
                ..Default::default()
            }),
            mediator_id: id.into(),
            request_id: rid(),
        })
        .await
        .context("CreateMediator")?;
    }
    Ok(())
}

/// Store URLs for the suite and one spare database for the insert ceiling.
fn urls(
    backend: &str,
    dir: &std::path::Path,
    pg: Option<&fengqiao_pgtemp::PgCluster>,
) -> anyhow::Result<(BTreeMap<ServiceName, String>, String)> {
    let mut m = BTreeMap::new();
    let mk = |name: &str| -> anyhow::Result<String> {
        match (backend, pg) {
            ("postgres", Some(pg)) => Ok(pg.create_database()?),
            _ => Ok(format!(
                "sqlite://{}",
                dir.join(format!("{name}.db")).display()
            )),
        }
    };
    for s in ServiceName::all() {
        m.insert(s, mk(s.as_str())?);
    }
    let spare = mk("insert-ceiling")?;
    Ok((m, spare))
}

/// What one backend's run produced.
#[derive(Default)]
pub struct Out {
    /// Figures.
    pub figs: Vec<Figure>,
    /// Notes.
    pub notes: Vec<String>,
    /// Cost rows.
    pub costs: Vec<CostRow>,
    /// The targets table (PostgreSQL).
    pub targets: Vec<TargetRow>,
}

/// Server settings of the throwaway cluster for the cost table.
const PG_SETTINGS: &[&str] = &[
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=top",
    "pg_stat_statements.max=10000",
];

/// Every figure for one backend.
pub async fn run_backend(backend: &str, args: &Args) -> anyhow::Result<Out> {
    let dur = args.duration();
    let clients = args.clients();
    let mut out = Out::default();
    let t_pg = Instant::now();
    let pg = if backend == "postgres" {
        let started = tokio::task::spawn_blocking(|| {
            fengqiao_pgtemp::PgCluster::start_with(PG_SETTINGS).or_else(|e| {
                eprintln!("[postgres] pg_stat_statements not loadable ({e}); without it");
                fengqiao_pgtemp::PgCluster::start()
            })
        })
        .await?
        .context("start a throwaway PostgreSQL")?;
        Some(started)
    } else {
        None
    };
    if pg.is_some() {
        let secs = t_pg.elapsed().as_secs_f64();
        eprintln!("[{backend}] throwaway PostgreSQL started in {secs:.1} s");
        out.notes.push(format!(
            "{backend}: throwaway PostgreSQL cluster (initdb + start, fsync on) took {secs:.1} s, not part of any figure"
        ));
    }
    let tmp = std::env::temp_dir().join(format!("fengqiao-bench-{}-{backend}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = async {
        let pgm = match &pg {
            Some(pg) => Some(PgMeter::connect(&pg.admin_url(), pg.pid()).await?),
            None => None,
        };
        if let Some(m) = &pgm
            && !m.has_statements()
        {
            out.notes.push(format!(
                "{backend}: pg_stat_statements unavailable: no statement or COMMIT counts (write transactions from pg_current_xact_id only)"
            ));
        }
        let (stores, spare) = urls(backend, &tmp, pg.as_ref())?;
        let key = crate::write_keys(&tmp)?;
        eprintln!("[{backend}] starting the suite");
        let suite = SuiteProc::start(&tmp, &stores, &ChildOpts::default()).await?;
        let meter = Meter {
            pids: vec![suite.pid],
            admins: vec![suite.admin.clone()],
            pg: pgm.as_ref(),
        };
        let r = measure(
            backend, args, &suite, &key, &meter, pg.as_ref(), &spare, &tmp, &mut out, dur,
            clients,
        )
        .await;
        let hwm = proc_stat::hwm_kb(suite.pid) as f64 / 1024.0;
        out.notes.push(format!(
            "{backend}: suite lifetime peak RSS (VmHWM) {hwm:.1} MiB, including bulk loading and watchers"
        ));
        suite.stop();
        r?;
        if pg.is_none() && args.runs(Phase::Replicas) {
            out.notes.push(format!(
                "{backend}: router replicas measured on PostgreSQL only (several processes on one SQLite file is not a supported shape)"
            ));
        }
        if let (Some(pg), true) = (&pg, args.runs(Phase::Replicas)) {
            for n in [1, 3] {
                crate::topology::measure(
                    pg,
                    pgm.as_ref(),
                    &tmp,
                    &key,
                    n,
                    dur,
                    clients,
                    &mut out.figs,
                    &mut out.costs,
                )
                .await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    if backend == "postgres" {
        out.targets = targets(&out.figs);
    }
    drop(pg);
    let _ = std::fs::remove_dir_all(&tmp);
    // Keep what was measured before a failure; the failure goes to the notes.
    if let Err(e) = result {
        eprintln!("fengqiao-bench: {backend}: {e:#}");
        out.notes.push(format!(
            "{backend}: run stopped early (figures before this point are kept): {e:#}"
        ));
    }
    Ok(out)
}

fn find<'a>(figs: &'a [Figure], prefix: &str) -> Option<&'a Figure> {
    figs.iter()
        .rfind(|f| f.backend == "postgres" && f.figure.starts_with(prefix))
}

/// The targets table of issue #17 from the PostgreSQL figures.
fn targets(figs: &[Figure]) -> Vec<TargetRow> {
    let tp = |prefix: &str| find(figs, prefix).and_then(|f| f.throughput);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let row = |figure: &str,
               now: Option<f64>,
               unit: &str,
               target: &str,
               met: fn(f64) -> bool,
               note: String| TargetRow {
        figure: figure.into(),
        now,
        unit: unit.into(),
        target: target.into(),
        met: now.map(met),
        note,
    };
    let cycles = tp("full 警调对接 cycle (intake");
    let intake_rps = tp("intake (CreateReferral");
    let pgbench = tp("ceiling (outside): pgbench");
    let health = tp("ceiling: health Check");
    let echo = tp("ceiling (outside): bare tonic");
    // The largest table measured.
    let get = find(figs, "read: GetTransfer @");
    let size = get.map_or(String::new(), |f| {
        f.figure.rsplit('@').next().unwrap_or("").trim().to_string()
    });
    let list = find(
        figs,
        &format!("read: ListTransfers (page 50, all directions) @ {size}"),
    );
    let watch = find(figs, "watchers:");
    let peak = find(figs, "footprint: peak RSS").and_then(|f| f.suite_peak_rss_mb);
    vec![
        row(
            "full 警调对接 cycles/s",
            cycles,
            "cycles/s",
            "≥ 300",
            |v| v >= 300.0,
            "one suite process, --clients clients".into(),
        ),
        row(
            "durable intake / pgbench TPS",
            ratio(intake_rps, pgbench),
            "",
            "≥ 0.25",
            |v| v >= 0.25,
            format!(
                "{} intakes/s ÷ {} pgbench TPS",
                crate::load::num(intake_rps),
                crate::load::num(pgbench)
            ),
        ),
        row(
            "health check through the middleware / bare tonic echo",
            ratio(health, echo),
            "",
            "≥ 0.6",
            |v| v >= 0.6,
            format!(
                "{} ÷ {} req/s",
                crate::load::num(health),
                crate::load::num(echo)
            ),
        ),
        row(
            "GetTransfer / health check",
            ratio(get.and_then(|f| f.throughput), health),
            "",
            "≥ 0.5",
            |v| v >= 0.5,
            format!("GetTransfer @ {size}"),
        ),
        row(
            "ListTransfers (page of 50) / GetTransfer",
            ratio(
                list.and_then(|f| f.throughput),
                get.and_then(|f| f.throughput),
            ),
            "",
            "≥ 0.25",
            |v| v >= 0.25,
            format!("all directions, @ {size}"),
        ),
        row(
            "watch delay p99",
            watch.and_then(|f| f.p99_ms),
            "ms",
            "≤ 50 ms",
            |v| v <= 50.0,
            watch.map_or(String::new(), |f| f.figure.clone()),
        ),
        row(
            "peak RSS",
            peak,
            "MiB",
            "< 150 MB",
            |v| v * 1.048_576 < 150.0,
            "highest suite RSS in the load, reads and watchers phases; the attack phase has its own row"
                .into(),
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    backend: &str,
    args: &Args,
    suite: &SuiteProc,
    key: &fengqiao_kit::auth::SigningKey,
    meter: &Meter<'_>,
    pg: Option<&fengqiao_pgtemp::PgCluster>,
    spare: &str,
    tmp: &std::path::Path,
    out: &mut Out,
    dur: Duration,
    clients: usize,
) -> anyhow::Result<()> {
    let pid = suite.pid;
    let ctx = Arc::new(Ctx::new(key, Endpoints::single(&suite.endpoint), 4)?);
    let figs = &mut out.figs;
    let notes = &mut out.notes;
    let costs = &mut out.costs;

    // Footprint: start and idle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = proc_stat::rss_kb(pid) as f64 / 1024.0;
    figs.push(Figure {
        figure: "footprint: start → SERVING".into(),
        backend: backend.into(),
        unit: "ms".into(),
        p50_ms: Some(suite.ready.as_secs_f64() * 1000.0),
        note: "spawn of the suite process (fresh databases, migrations, agency seed) → first SERVING health answer; shown in the p50 column".into(),
        ..Default::default()
    });
    figs.push(Figure {
        figure: "footprint: idle RSS".into(),
        backend: backend.into(),
        unit: "MiB".into(),
        suite_peak_rss_mb: Some(idle),
        note: "0.5 s after SERVING, before any load".into(),
        ..Default::default()
    });

    roster(&ctx).await?;
    crate::flows::committee_roster(&ctx).await?;

    // Ceiling from outside 1: a bare tonic server (health service only, no middleware) in a
    // child process, same client, same connections, same concurrency.
    eprintln!("[{backend}] ceiling (outside): bare tonic echo");
    let echo = crate::outside::EchoProc::start().await?;
    let mut echo_channels = Vec::new();
    for _ in 0..4 {
        echo_channels.push(fengqiao_kit::client::channel(&echo.endpoint, None)?);
    }
    let echo_channels = Arc::new(echo_channels);
    let s = Sampler::start(echo.pid);
    let ec = echo_channels.clone();
    let l = run_load(clients, dur, u64::MAX, move |_, i| {
        let mut h =
            tonic_health::pb::health_client::HealthClient::new(ec[i as usize % ec.len()].clone());
        async move {
            h.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
            Ok(())
        }
    })
    .await;
    let echo_fig = Figure::from_load(
        "ceiling (outside): bare tonic server, health Check, no middleware",
        backend,
        "req/s",
        &l,
        s.finish().await,
    )
    .note("tonic-health in a child process of its own (suite columns = that process), TCP_NODELAY, 4 connections");
    let echo_rps = echo_fig.throughput;
    figs.push(echo_fig);
    echo.stop();

    // Ceiling 1: health Check over the same server stack (auth-free path, same listener).
    eprintln!("[{backend}] ceiling: health check");
    let s = Sampler::start(pid);
    let m0 = meter.snap().await;
    let c2 = ctx.clone();
    let l = run_load(clients, dur, u64::MAX, move |_, _| {
        let mut h = tonic_health::pb::health_client::HealthClient::new(c2.ch());
        async move {
            h.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
            Ok(())
        }
    })
    .await;
    costs.push(meter.row("health Check (suite)", backend, m0, l.ops).await);
    let health = Figure::from_load(
        "ceiling: health Check RPC",
        backend,
        "req/s",
        &l,
        s.finish().await,
    )
    .against("bare tonic echo", echo_rps);
    let health_rps = health.throughput;
    figs.push(health);

    // Ceiling 2: the store's single-row durable insert, same driver and pool defaults.
    eprintln!("[{backend}] ceiling: store insert");
    let store = Store::connect(StoreConfig::new(spare)).await?;
    let blob = if backend == "postgres" {
        "BYTEA"
    } else {
        "BLOB"
    };
    sqlx::query(&format!(
        "CREATE TABLE bench_rows (id TEXT PRIMARY KEY, body {blob} NOT NULL, t BIGINT NOT NULL)"
    ))
    .execute(store.pool())
    .await?;
    let store = Arc::new(store);
    let body = vec![7u8; 512];
    let st = store.clone();
    let bench_pid = std::process::id();
    let s = Sampler::start(bench_pid);
    let m0 = meter.snap().await;
    let l = run_load(clients, dur, u64::MAX, move |_, i| {
        let st = st.clone();
        let body = body.clone();
        async move {
            let mut tx = st.write().await?;
            sqlx::query("INSERT INTO bench_rows (id, body, t) VALUES ($1, $2, $3)")
                .bind(format!("r{i}"))
                .bind(body)
                .bind(i as i64)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }
    })
    .await;
    costs.push(
        meter
            .row(
                "store single-row insert (bench process)",
                backend,
                m0,
                l.ops,
            )
            .await,
    );
    let mut u = s.finish().await;
    u.suite_peak_rss_mb = 0.0;
    let mut insert = Figure::from_load(
        "ceiling: store single-row durable insert",
        backend,
        "rows/s",
        &l,
        u,
    )
    .note("one row (512 B) per store.write() transaction, in the bench process; suite CPU column = bench process");
    insert.suite_peak_rss_mb = None;
    insert.client_cpu_pct = None;
    let insert_rps = insert.throughput;
    figs.push(insert);
    store.close().await;

    // Ceiling from outside 2: pgbench on the same cluster.
    let mut pgbench_tps = None;
    if let Some(pg) = pg {
        match crate::outside::find_pgbench(pg.bin_dir()) {
            None => notes.push(format!("{backend}: pgbench not found: no pgbench ceiling")),
            Some(exe) => {
                eprintln!("[{backend}] ceiling (outside): pgbench");
                let url = pg.create_database()?;
                let db = url.rsplit('/').next().unwrap_or_default().to_string();
                let m0 = meter.snap().await;
                let r = crate::outside::pgbench(
                    exe.clone(),
                    pg.admin_url(),
                    pg.port(),
                    pg.superuser().to_string(),
                    db,
                    16,
                    dur.as_secs(),
                    tmp.to_path_buf(),
                )
                .await?;
                costs.push(
                    meter
                        .row("pgbench INSERT transaction", backend, m0, r.transactions)
                        .await,
                );
                pgbench_tps = Some(r.tps);
                figs.push(Figure {
                    figure: "ceiling (outside): pgbench -M prepared, one INSERT per transaction".into(),
                    backend: backend.into(),
                    unit: "TPS".into(),
                    ops: r.transactions,
                    secs: r.secs,
                    throughput: Some(r.tps),
                    p50_ms: r.latency_avg_ms,
                    note: format!(
                        "{} -c 16 -j 2 -T {}, 512 B row, same cluster; p50 column = pgbench's average latency",
                        exe.display(),
                        dur.as_secs()
                    ),
                    ..Default::default()
                });
            }
        }
    }

    if args.runs(Phase::Intake) {
        // Intake.
        eprintln!("[{backend}] intake");
        let s = Sampler::start(pid);
        let m0 = meter.snap().await;
        let c2 = ctx.clone();
        let l = run_load(clients, dur, u64::MAX, move |_, i| {
            let c2 = c2.clone();
            async move { intake(&c2, i).await.map(|_| ()) }
        })
        .await;
        costs.push(meter.row("intake", backend, m0, l.ops).await);
        let f = Figure::from_load(
            "intake (CreateReferral + DraftTransfer submit)",
            backend,
            "intakes/s",
            &l,
            s.finish().await,
        )
        .against("insert ceiling", insert_rps)
        .against("pgbench TPS", pgbench_tps);
        let met = if backend == "postgres" {
            f.other_ratios.first().map(|r| r.ratio >= 0.25)
        } else {
            None
        };
        figs.push(f.target("≥ 0.25 × pgbench TPS (PostgreSQL)", met));
    }

    if args.runs(Phase::Cycle) {
        // Full cycles.
        eprintln!("[{backend}] full cycle");
        let retries0 = ABORTED_RETRIES.load(Ordering::Relaxed);
        let s = Sampler::start(pid);
        let q0 = match meter.pg {
            Some(pg) => pg.queries().await,
            None => None,
        };
        let m0 = meter.snap().await;
        let c2 = ctx.clone();
        let l = run_load(clients, dur, u64::MAX, move |_, i| {
            let c2 = c2.clone();
            async move { full_cycle(&c2, 10_000_000 + i).await }
        })
        .await;
        costs.push(meter.row("full 警调对接 cycle", backend, m0, l.ops).await);
        // Statements per cycle, query by query (issue #17: where the statements go).
        if let (Some(q0), Some(pg)) = (q0, meter.pg)
            && let Some(q1) = pg.queries().await
        {
            let md = crate::cost::queries_markdown(
                "Statements per full 警调对接 cycle",
                &q0,
                &q1,
                l.ops,
            );
            let path = args.out.join(format!("statements-cycle-{backend}.md"));
            std::fs::create_dir_all(&args.out)?;
            std::fs::write(&path, md)?;
            notes.push(format!(
                "{backend}: statements per cycle, query by query: {}",
                path.display()
            ));
        }
        let f = Figure::from_load(
        "full 警调对接 cycle (intake → … → closed)",
        backend,
        "cycles/s",
        &l,
        s.finish().await,
    )
    .against("insert ceiling", insert_rps)
    .against("pgbench TPS", pgbench_tps)
    .note("latency = one whole cycle, ~20 calls incl. two asynchronous deliveries polled after 20 ms, then backing off to 160 ms; cycles still running at the deadline are finished and counted")
    .note(&format!(
        "{} AcceptCase calls answered ABORTED (concurrent delivery update in the router) and retried",
        ABORTED_RETRIES.load(Ordering::Relaxed) - retries0
    ));
        let met = if backend == "postgres" {
            f.throughput.map(|t| t >= 300.0)
        } else {
            None
        };
        figs.push(f.target("≥ 300 cycles/s (PostgreSQL)", met));
    }

    if args.runs(Phase::Services) {
        services(backend, suite, &ctx, meter, figs, costs, dur, clients).await?;
    }

    // Watchers (before the bulk load: the read phase can leave the suite saturated).
    if args.runs(Phase::Watchers) {
        watchers(backend, args, suite, &ctx, figs).await?;
    }

    // Reads at growing table sizes.
    let r = if args.runs(Phase::Reads) {
        reads(
            backend, args, suite, &ctx, meter, figs, notes, costs, health_rps, echo_rps, dur,
            clients,
        )
        .await
    } else {
        Ok(())
    };

    // Footprint under load: the highest phase peak.
    let peak = figs
        .iter()
        .filter(|f| {
            f.backend == backend
                && !f.figure.starts_with("ceiling: store")
                && !f.figure.starts_with("ceiling (outside)")
        })
        .filter_map(|f| f.suite_peak_rss_mb)
        .fold(0.0f64, f64::max);
    figs.push(
        Figure {
            figure: "footprint: peak RSS under load".into(),
            backend: backend.into(),
            unit: "MiB".into(),
            suite_peak_rss_mb: Some(peak),
            note: "highest RSS sampled (20 ms) during any measured phase".into(),
            ..Default::default()
        }
        .target(
            "< 150 MB (PostgreSQL)",
            (backend == "postgres").then_some(peak * 1.048_576 < 150.0),
        ),
    );
    r
}

/// The new services' cycles, one figure and one cost row each.
#[allow(clippy::too_many_arguments)]
async fn services(
    backend: &str,
    suite: &SuiteProc,
    ctx: &Arc<Ctx>,
    meter: &Meter<'_>,
    figs: &mut Vec<Figure>,
    costs: &mut Vec<CostRow>,
    dur: Duration,
    clients: usize,
) -> anyhow::Result<()> {
    type Flow = fn(Arc<Ctx>, u64) -> BoxFut;
    let flows: [(&str, &str, &str, u64, Flow); 3] = [
        (
            "court diversion (委派调解): intake → agreement filed",
            "court-diversion cycle",
            "cycles/s",
            1_000_000,
            |c, i| Box::pin(async move { crate::flows::court_cycle(&c, i).await.map(|_| ()) }),
        ),
        (
            "judicial confirmation (司法确认): delegation → agreement → ruling seen by the committee",
            "judicial-confirmation cycle (incl. court diversion)",
            "cycles/s",
            2_000_000,
            |c, i| Box::pin(async move { crate::flows::confirmation_cycle(&c, i).await }),
        ),
        (
            "administrative dispute (行政争议): intake → 复议调解书 in effect",
            "administrative-dispute cycle",
            "cycles/s",
            3_000_000,
            |c, i| Box::pin(async move { crate::flows::admin_cycle(&c, i).await }),
        ),
    ];
    for (figure, step, unit, base, flow) in flows {
        eprintln!("[{backend}] {step}");
        let s = Sampler::start(suite.pid);
        let m0 = meter.snap().await;
        let c2 = ctx.clone();
        let l = run_load(clients, dur, u64::MAX, move |_, i| {
            flow(c2.clone(), base + i)
        })
        .await;
        costs.push(meter.row(step, backend, m0, l.ops).await);
        figs.push(Figure::from_load(
            figure,
            backend,
            unit,
            &l,
            s.finish().await,
        ));
    }
    Ok(())
}

/// One boxed operation of the flow table.
type BoxFut = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

const COPY_SQL: &str = "WITH RECURSIVE g(n) AS (SELECT CAST($1 AS BIGINT) UNION ALL SELECT n + 1 FROM g WHERE n < $2) \
INSERT INTO transfers (id, route_id, route_version, from_agency, to_agency, approver_agency, case_id, state, body, \
acceptance_clock, feedback_clock, next_due, overdue, create_time, update_time, version) \
SELECT 'bulk-' || CAST(g.n AS TEXT), t.route_id, t.route_version, t.from_agency, t.to_agency, t.approver_agency, \
'bulk-case-' || CAST(g.n AS TEXT), t.state, t.body, t.acceptance_clock, t.feedback_clock, NULL, 0, \
t.create_time - g.n, t.update_time, t.version FROM g, transfers t WHERE t.id = $3";

#[allow(clippy::too_many_arguments)]
async fn reads(
    backend: &str,
    args: &Args,
    suite: &SuiteProc,
    ctx: &Arc<Ctx>,
    meter: &Meter<'_>,
    figs: &mut Vec<Figure>,
    notes: &mut Vec<String>,
    costs: &mut Vec<CostRow>,
    health_rps: Option<f64>,
    echo_rps: Option<f64>,
    dur: Duration,
    clients: usize,
) -> anyhow::Result<()> {
    let pid = suite.pid;
    let (_, template, _) = intake(ctx, 99_999_999).await?;
    let template_id = template
        .strip_prefix("transfers/")
        .context("transfer name")?
        .to_string();
    let store = Store::connect(StoreConfig::new(&suite.router_url)).await?;
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfers")
        .fetch_one(store.pool())
        .await?;
    let mut loaded: u64 = 0;
    let mut load_secs = 0.0f64;
    let budget = args.load_budget_secs as f64;
    let mut p99_small: Option<f64> = None;
    let read_dur = (dur / 2).max(Duration::from_secs(1));
    for size in args.sizes() {
        let want = size.saturating_sub(existing.max(0) as u64);
        if want > loaded {
            let rate = if load_secs > 0.0 {
                loaded as f64 / load_secs
            } else {
                f64::INFINITY
            };
            let estimate = (want - loaded) as f64 / rate;
            if load_secs + estimate > budget {
                notes.push(format!(
                    "{backend}: reads at {size} transfers skipped: loading would take ~{estimate:.0} s more (measured {rate:.0} rows/s), over --load-budget-secs {}",
                    args.load_budget_secs
                ));
                break;
            }
            eprintln!("[{backend}] bulk-loading to {size} transfers");
            let t0 = Instant::now();
            let batch = 50_000u64;
            while loaded < want {
                let hi = (loaded + batch).min(want);
                sqlx::query(COPY_SQL)
                    .bind((loaded + 1) as i64)
                    .bind(hi as i64)
                    .bind(&template_id)
                    .execute(store.pool())
                    .await
                    .context("bulk copy")?;
                loaded = hi;
            }
            load_secs += t0.elapsed().as_secs_f64();
        }
        if backend == "postgres" {
            sqlx::query("ANALYZE transfers")
                .execute(store.pool())
                .await?;
        }
        let total = existing.max(0) as u64 + loaded;
        let n_bulk = loaded.max(1);
        let label = human(size);

        let s = Sampler::start(pid);
        let m0 = meter.snap().await;
        let c2 = ctx.clone();
        let l = run_load(clients, read_dur, u64::MAX, move |_, i| {
            let mut r = c2.router(&c2.officer);
            // Spread over the table with a multiplicative hash of i.
            let k = (i.wrapping_mul(2_654_435_761) % n_bulk) + 1;
            async move {
                r.get_transfer(GetTransferRequest {
                    name: format!("transfers/bulk-{k}"),
                })
                .await?;
                Ok(())
            }
        })
        .await;
        costs.push(
            meter
                .row(&format!("read: GetTransfer @ {label}"), backend, m0, l.ops)
                .await,
        );
        let mut f = Figure::from_load(
            &format!("read: GetTransfer @ {label}"),
            backend,
            "req/s",
            &l,
            s.finish().await,
        )
        .against("health ceiling", health_rps)
        .against("bare tonic echo", echo_rps)
        .note(&format!(
            "{total} transfers stored ({loaded} synthetic copies of one real transfer, loaded by SQL in {load_secs:.1} s)"
        ));
        if p99_small.is_none() {
            p99_small = f.p99_ms;
        } else if size >= 1_000_000 {
            let met = match (f.p99_ms, p99_small) {
                (Some(a), Some(b)) if b > 0.0 => Some(a <= 1.5 * b),
                _ => None,
            };
            f = f.target(
                "p99 ≤ 1.5 × p99 at 10k (PostgreSQL)",
                if backend == "postgres" { met } else { None },
            );
        }
        let get_rps = f.throughput;
        figs.push(f);

        let s = Sampler::start(pid);
        let m0 = meter.snap().await;
        let c2 = ctx.clone();
        let l = run_load(clients, read_dur, u64::MAX, move |_, _| {
            let mut r = c2.router(&c2.officer);
            async move {
                r.list_transfers(ListTransfersRequest {
                    page_size: 50,
                    ..Default::default()
                })
                .await?;
                Ok(())
            }
        })
        .await;
        costs.push(
            meter
                .row(
                    &format!("read: ListTransfers page 50 @ {label}"),
                    backend,
                    m0,
                    l.ops,
                )
                .await,
        );
        figs.push(
            Figure::from_load(
                &format!("read: ListTransfers (page 50, all directions) @ {label}"),
                backend,
                "req/s",
                &l,
                s.finish().await,
            )
            .against("GetTransfer", get_rps)
            .against("health ceiling", health_rps)
            .note("first page of the station's transfers (sent, received or to approve)"),
        );

        let s = Sampler::start(pid);
        let c2 = ctx.clone();
        let l = run_load(clients, read_dur, u64::MAX, move |_, _| {
            let mut r = c2.router(&c2.officer);
            async move {
                r.list_transfers(ListTransfersRequest {
                    page_size: 50,
                    direction: TransferDirection::Outgoing as i32,
                    ..Default::default()
                })
                .await?;
                Ok(())
            }
        })
        .await;
        figs.push(
            Figure::from_load(
                &format!("read: ListTransfers (page 50, OUTGOING) @ {label}"),
                backend,
                "req/s",
                &l,
                s.finish().await,
            )
            .against("health ceiling", health_rps)
            .note("first page of the station's sent transfers"),
        );
    }
    store.close().await;
    Ok(())
}

fn human(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

async fn watchers(
    backend: &str,
    args: &Args,
    suite: &SuiteProc,
    ctx: &Arc<Ctx>,
    figs: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let n = args.watchers();
    eprintln!("[{backend}] {n} watchers");
    let pid = suite.pid;
    let (_, transfer, _) = intake(ctx, 99_999_998).await?;
    // One connection per 100 streams (HTTP/2 stream limits).
    let conns = n.div_ceil(100);
    let mut channels = Vec::new();
    for _ in 0..conns {
        channels.push(fengqiao_kit::client::channel(&suite.endpoint, None)?);
    }
    let s = Sampler::start(pid);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(n);
    let go = Arc::new(tokio::sync::Notify::new());
    let t_change = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let mut r = TransferServiceClient::with_interceptor(
            channels[i % conns].clone(),
            ctx.officer.clone(),
        );
        let transfer = transfer.clone();
        let ready_tx = ready_tx.clone();
        let t_change = t_change.clone();
        set.spawn(async move {
            let mut stream = r
                .watch_transfers(WatchTransfersRequest {
                    transfers: vec![transfer],
                    ..Default::default()
                })
                .await?
                .into_inner();
            let _ = ready_tx.send(()).await;
            let msg = tokio::time::timeout(Duration::from_secs(30), stream.message()).await;
            let arrived = Instant::now();
            match msg {
                Ok(Ok(Some(_))) => {
                    let t0 = t_change.get().copied().context("event before the change")?;
                    anyhow::Ok(arrived.saturating_duration_since(t0).as_secs_f64() * 1000.0)
                }
                Ok(Ok(None)) => bail!("stream ended"),
                Ok(Err(e)) => bail!("stream error: {e}"),
                Err(_) => bail!("no event within 30 s"),
            }
        });
    }
    drop(ready_tx);
    let open_t0 = Instant::now();
    let mut open = 0;
    while open < n {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(())) => open += 1,
            _ => break,
        }
    }
    let open_secs = open_t0.elapsed().as_secs_f64();
    go.notify_waiters();
    // Let the streams settle, then one state change: 指挥室审核 (step 0).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = t_change.set(Instant::now());
    ctx.router(&ctx.reviewer)
        .approve_transfer(ApproveTransferRequest {
            name: transfer.clone(),
            etag: String::new(),
            step_index: 0,
            comment: "指挥室审核通过".into(),
            request_id: rid(),
        })
        .await
        .context("approve for the watchers")?;
    let mut lat = Vec::new();
    let mut errors = 0u64;
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(ms)) => lat.push(ms),
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let wall = t_change.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
    lat.sort_by(f64::total_cmp);
    let l = crate::load::Load {
        ops: lat.len() as u64,
        errors,
        first_error,
        secs: wall,
        lat_ms: lat,
    };
    let mut f = Figure::from_load(
        &format!("watchers: {n} WatchTransfers streams, change → arrival"),
        backend,
        "",
        &l,
        s.finish().await,
    )
    .note(&format!(
        "{open} of {n} streams open (took {open_secs:.2} s, {conns} connections); latency = approve call start → event on each stream (includes the approve call)"
    ));
    f.throughput = None;
    figs.push(f);
    Ok(())
}
