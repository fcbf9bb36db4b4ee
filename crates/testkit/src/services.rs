//! Set-up shared by the service crates' tests, so that each test file keeps only its own
//! specifics and assertions: the sample agencies, parties and the 警调对接 noise dispute,
//! clients and requests as a given caller (also in the full view), driving a transfer through
//! its two approvals to the mediation room's offer, the mediation room's roster, router
//! envelopes as the router delivers them, cut-off calls (one-truth tests) and the checks of
//! the personal-information tests on a store's files.
//!
//! These helpers build and drive; they assert only that a step they take succeeds (a failing
//! step panics with what it was doing), never what a test is about.

use std::time::Duration;

use fengqiao_kit::auth::{AuthMethod, Identity};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::pii::VIEW_HEADER;
use fengqiao_proto::common::{AgencyRef, DisputeCategory, EvidenceRef, IdType, Party, PartyRole};
use fengqiao_proto::inbox::{Envelope, MessageKind, RecipientSide};
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::mediation::{
    CreateMediatorRequest, CreateOrganizationRequest, ListCasesRequest, MediationCase, Mediator,
    MediatorSpecialty, Organization, OrganizationKind,
};
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::{
    ApproveTransferRequest, CaseSnapshot, CreateTransferRequest, GetTransferRequest,
    SubmitTransferRequest, Transfer, TransferEvent, TransferMessage, TransferState,
};
use fengqiao_store::access::{self, Access, Outcome};
use fengqiao_store::{Backend, Store, StoreConfig};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::{ServiceName, TestSuite};

/// 八一路派出所, the station that sends the sample dispute (agency id, without `agencies/`).
pub const STATION: &str = "xigang-bayilu-station";
/// The 110 command room that reviews the station's transfers (step 0 of the police route).
pub const COMMAND: &str = "xigang-110";
/// 八一路派出所驻所人民调解室, the receiver of the 警调对接 route.
pub const ROOM: &str = "xigang-bayilu-mediation-room";
/// The district people's mediation committee.
pub const COMMITTEE: &str = "xigang-mediation-committee";
/// The mediation service's organisation of [`ROOM`], as [`room_roster`] registers it.
pub const ROOM_ORG: &str = "organizations/bayilu-room";
/// The police route from [`STATION`] to [`ROOM`].
pub const POLICE_ROUTE: &str = "routes/police-to-station-mediation";

/// A fresh request id.
pub fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A channel with the caller's token on every call.
pub type Intercepted = InterceptedService<Channel, CallInterceptor>;
/// The router's transfer service as a caller.
pub type TransferClient = TransferServiceClient<Intercepted>;
/// The mediation service as a caller.
pub type MediationClient = MediationServiceClient<Intercepted>;
/// The police-referral service as a caller.
pub type ReferralClient = PoliceReferralServiceClient<Intercepted>;

/// The router's transfer service, calling as `agencies/{agency}` / `actor` with `roles`.
pub fn transfers(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> TransferClient {
    TransferServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

/// The mediation service, calling as `agencies/{agency}` / `actor` with `roles`.
pub fn mediation(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> MediationClient {
    MediationServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

/// The police-referral service, calling as `agencies/{agency}` / `actor` with `roles`.
pub fn referrals(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> ReferralClient {
    PoliceReferralServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(agency, actor, roles),
    )
}

/// `msg` asking for the full view of personal information (the caller's roles decide).
pub fn full<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        VIEW_HEADER,
        tonic::metadata::MetadataValue::from_static("full"),
    );
    r
}

/// `msg` for calling a service value directly (no server, no token): the request carries the
/// identity the authentication layer would have put there, and asks for the full view when
/// `full_view`.
pub fn as_caller<T>(
    agency: &str,
    actor: &str,
    roles: &[&str],
    full_view: bool,
    msg: T,
) -> Request<T> {
    let mut r = if full_view {
        full(msg)
    } else {
        Request::new(msg)
    };
    r.extensions_mut().insert(Identity {
        agency: agency.into(),
        actor: actor.into(),
        roles: roles.iter().map(|s| (*s).to_owned()).collect(),
        method: AuthMethod::Token,
        person: None,
    });
    r
}

/// Opens the store of `service` in a running suite (to look at what it wrote).
pub async fn store_of(suite: &TestSuite, service: ServiceName) -> Store {
    let url = suite
        .stores
        .get(&service)
        .unwrap_or_else(|| panic!("no store for {}", service.as_str()))
        .clone();
    Store::connect(StoreConfig::new(url))
        .await
        .unwrap_or_else(|e| panic!("open the {} store: {e}", service.as_str()))
}

/// The newest `denied` row of the store's access log among its last ten (panics if there is
/// none: the caller has just made a call that must have been refused and logged).
pub async fn denied_row(store: &Store) -> Access {
    access::recent(store, None, 10)
        .await
        .unwrap_or_else(|e| panic!("read the access log: {e}"))
        .into_iter()
        .find(|a| a.outcome == Outcome::Denied)
        .unwrap_or_else(|| panic!("a denied row"))
}

/// Whether `needle` stands anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// On SQLite: the database file and its WAL (those that exist; they are not all empty) hold
/// none of `secrets` (`(what, value)`, e.g. `("ID number", ID)`). On PostgreSQL there is no file
/// to read; the caller checks the stored rows.
pub fn assert_sqlite_files_lack(store: &Store, secrets: &[(&str, &str)]) {
    if store.backend() != Backend::Sqlite {
        return;
    }
    let url = &store.config().url;
    let path = url.trim_start_matches("sqlite://");
    let path = path.split('?').next().unwrap_or(path);
    let mut seen = 0;
    for file in [path.to_string(), format!("{path}-wal")] {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        seen += bytes.len();
        for (what, value) in secrets {
            assert!(!contains(&bytes, value.as_bytes()), "{what} in {file}");
        }
    }
    assert!(seen > 0, "the database file was read");
}

/// A stored body is sealed (`FQS1…`, see `fengqiao_store::seal`) and holds none of
/// `secrets`; `what` names it in a failure (e.g. `"referrals.body"`).
pub fn assert_sealed(body: &[u8], what: &str, secrets: &[&str]) {
    assert!(body.starts_with(b"FQS1"), "{what} is not sealed");
    for value in secrets {
        assert!(
            !contains(body, value.as_bytes()),
            "{what} holds a personal value"
        );
    }
}

/// Sends `msg` once with a client deadline of 3 ms (the call is cut off mid-flight when it
/// takes longer); returns whether it was cut off. Either way the record may or may not have
/// been committed on each side: what follows must hold in every case. Any other refusal
/// panics.
pub async fn cut_off<M: Clone, R>(
    mut call: impl AsyncFnMut(Request<M>) -> Result<R, tonic::Status>,
    msg: &M,
) -> bool {
    let mut req = Request::new(msg.clone());
    req.set_timeout(Duration::from_millis(3));
    match call(req).await {
        Ok(_) => false,
        Err(e) if e.code() == Code::DeadlineExceeded || e.code() == Code::Cancelled => true,
        Err(e) => panic!("unexpected refusal of a cut-off call: {e:?}"),
    }
}

/// A party identified by a resident identity card.
pub fn resident(
    party_id: &str,
    role: PartyRole,
    name: &str,
    id_number: &str,
    phone: &str,
) -> Party {
    Party {
        party_id: party_id.into(),
        role: role as i32,
        name: name.into(),
        id_type: IdType::ResidentIdCard as i32,
        id_number: id_number.into(),
        phone: phone.into(),
        ..Party::default()
    }
}

/// Parties with nothing but their ids.
pub fn bare_parties(ids: &[&str]) -> Vec<Party> {
    ids.iter()
        .map(|id| Party {
            party_id: (*id).into(),
            ..Party::default()
        })
        .collect()
}

/// The two neighbours of the sample dispute: `p1` 张某 (applicant), `p2` 李某 (respondent).
pub fn neighbours() -> Vec<Party> {
    vec![
        Party {
            party_id: "p1".into(),
            role: PartyRole::Applicant as i32,
            name: "张某".into(),
            ..Party::default()
        },
        Party {
            party_id: "p2".into(),
            role: PartyRole::Respondent as i32,
            name: "李某".into(),
            ..Party::default()
        },
    ]
}

/// The police's call-out record (出警记录) as evidence.
pub fn police_record() -> EvidenceRef {
    EvidenceRef {
        display_name: "出警记录".into(),
        media_type: "application/pdf".into(),
        uri: "evidence://jingqing/0001".into(),
        ..EvidenceRef::default()
    }
}

/// A neighbourhood dispute in 西岗区 (210203) on the police route to [`ROOM`].
pub fn police_transfer(
    summary: &str,
    parties: Vec<Party>,
    evidence: Vec<EvidenceRef>,
    note: &str,
) -> Transfer {
    Transfer {
        route: POLICE_ROUTE.into(),
        to_agency: Some(AgencyRef {
            name: format!("agencies/{ROOM}"),
            ..AgencyRef::default()
        }),
        case_snapshot: Some(CaseSnapshot {
            category: DisputeCategory::Neighbourhood as i32,
            summary: summary.into(),
            region_code: "210203".into(),
            parties,
            evidence,
            ..CaseSnapshot::default()
        }),
        note: note.into(),
        ..Transfer::default()
    }
}

fn one(t: Option<Transfer>, what: &str) -> Transfer {
    t.unwrap_or_else(|| panic!("{what}: reply without a transfer"))
}

/// Creates `t` as the station's officer (`officer-01`) and submits it.
pub async fn submitted(suite: &TestSuite, t: Transfer) -> Transfer {
    let mut officer = transfers(suite, STATION, "officer-01", &["officer"]);
    let t = officer
        .create_transfer(CreateTransferRequest {
            transfer: Some(t),
            request_id: rid(),
            submit: false,
        })
        .await
        .expect("create")
        .into_inner()
        .transfer;
    let t = one(t, "create");
    let t = officer
        .submit_transfer(SubmitTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            request_id: rid(),
        })
        .await
        .expect("submit")
        .into_inner()
        .transfer;
    one(t, "submit")
}

/// The police route's two approvals of a submitted transfer: the command room's review
/// (step 0, `reviewer-01`), then the station's duty chief (step 1, `duty-chief-01`).
pub async fn approve_steps(suite: &TestSuite, t: &Transfer) -> Transfer {
    let mut t = t.clone();
    for (step, agency, actor, role, comment) in [
        (
            0,
            COMMAND,
            "reviewer-01",
            "command_room_reviewer",
            "指挥室审核通过",
        ),
        (1, STATION, "duty-chief-01", "duty_chief", "同意移送"),
    ] {
        let reply = transfers(suite, agency, actor, &[role])
            .approve_transfer(ApproveTransferRequest {
                name: t.name.clone(),
                etag: t.etag.clone(),
                step_index: step,
                comment: comment.into(),
                request_id: rid(),
            })
            .await
            .unwrap_or_else(|e| panic!("approve step {step}: {e:?}"))
            .into_inner()
            .transfer;
        t = one(reply, "approve");
    }
    t
}

/// Creates, submits and approves `t` (see [`submitted`], [`approve_steps`]).
pub async fn approved(suite: &TestSuite, t: Transfer) -> Transfer {
    let t = submitted(suite, t).await;
    approve_steps(suite, &t).await
}

/// The transfer `name` as seen by `agencies/{agency}` (as `someone` holding the station's
/// and the room's roles).
pub async fn transfer_as(suite: &TestSuite, agency: &str, name: &str) -> Transfer {
    let t = transfers(suite, agency, "someone", &["officer", "mediator"])
        .get_transfer(GetTransferRequest { name: name.into() })
        .await
        .expect("get transfer")
        .into_inner()
        .transfer;
    one(t, "get transfer")
}

/// Waits (bounded, 15 s) until the receiver `agencies/{agency}` sees the transfer `name`
/// in `state`; returns it then.
pub async fn transfer_in_state(
    suite: &TestSuite,
    agency: &str,
    name: &str,
    state: TransferState,
) -> Transfer {
    for _ in 0..150 {
        let t = transfer_as(suite, agency, name).await;
        if t.state == state as i32 {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never reached {state:?} for {agency}");
}

/// The room head registers [`ROOM_ORG`] for [`ROOM`] and three mediators: `med-li` and
/// `med-zhang` for neighbourhood disputes, `med-wang` for family ones.
pub async fn room_roster(suite: &TestSuite) {
    let mut head = mediation(suite, ROOM, "room-head", &["mediation_admin", "mediator"]);
    head.create_organization(CreateOrganizationRequest {
        organization: Some(Organization {
            display_name: "八一路派出所驻所人民调解室".into(),
            kind: OrganizationKind::StationMediationRoom as i32,
            region_code: "210203".into(),
            agency: format!("agencies/{ROOM}"),
            ..Organization::default()
        }),
        organization_id: "bayilu-room".into(),
        request_id: rid(),
    })
    .await
    .expect("create organisation");
    for (id, spec) in [
        ("med-li", MediatorSpecialty::Neighbourhood),
        ("med-wang", MediatorSpecialty::Family),
        ("med-zhang", MediatorSpecialty::Neighbourhood),
    ] {
        head.create_mediator(CreateMediatorRequest {
            parent: ROOM_ORG.into(),
            mediator: Some(Mediator {
                display_name: format!("调解员{id}"),
                actor_id: id.into(),
                specialties: vec![spec as i32],
                region_code: "210203".into(),
                max_load: 10,
                ..Mediator::default()
            }),
            mediator_id: id.into(),
            request_id: rid(),
        })
        .await
        .expect("create mediator");
    }
}

/// Waits (bounded, 15 s) until the room's mediation service holds a case for `case_id`
/// (listed as `mediator-01`, so as the default, masked view); returns it.
pub async fn mediation_case_of(suite: &TestSuite, case_id: &str) -> MediationCase {
    let mut room = mediation(suite, ROOM, "mediator-01", &["mediator"]);
    for _ in 0..150 {
        let cases = room
            .list_cases(ListCasesRequest {
                case_id: case_id.into(),
                ..ListCasesRequest::default()
            })
            .await
            .expect("list")
            .into_inner()
            .mediation_cases;
        if let Some(c) = cases.into_iter().next() {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the offer never reached the mediation service");
}

/// Drives `t` through creation, submission and both approvals, and waits until the room's
/// mediation case is offered: the approved transfer and the case.
pub async fn offered(suite: &TestSuite, t: Transfer) -> (Transfer, MediationCase) {
    let t = approved(suite, t).await;
    let case_id = t.case_snapshot.as_ref().expect("snapshot").case_id.clone();
    let c = mediation_case_of(suite, &case_id).await;
    (t, c)
}

/// A router envelope about `t` from [`STATION`] to `agencies/{to}` for its `side`, as the
/// router would deliver it; `event` gets a fresh id, the transfer and its case filled in.
pub fn router_envelope(
    t: &Transfer,
    to: &str,
    kind: MessageKind,
    side: RecipientSide,
    event: TransferEvent,
) -> Envelope {
    let case_id = t
        .case_snapshot
        .as_ref()
        .map(|s| s.case_id.clone())
        .unwrap_or_default();
    let payload = TransferMessage {
        event: Some(TransferEvent {
            event_id: rid(),
            transfer: t.name.clone(),
            case_id: case_id.clone(),
            ..event
        }),
        transfer: Some(t.clone()),
        investigation: None,
        route: None,
    };
    Envelope {
        message_id: rid(),
        case_id,
        transfer: t.name.clone(),
        kind: kind as i32,
        from_agency: format!("agencies/{STATION}"),
        to_agency: format!("agencies/{to}"),
        payload: prost::Message::encode_to_vec(&payload),
        payload_type: "fengqiao.router.v1.TransferMessage".into(),
        route: t.route.clone(),
        route_version: t.route_version,
        recipient_side: side as i32,
        ..Envelope::default()
    }
}

/// The judicial-confirmation package of a two-party case (`p1`, `p2`): the application, and
/// each party's identity proof and service address, built by `item(kind, party_id)` (the
/// package item types differ between the court's and the mediation service's contracts).
pub fn two_party_package<K: Copy, I>(
    application: K,
    identity_proof: K,
    service_address: K,
    item: impl Fn(K, &str) -> I,
) -> Vec<I> {
    vec![
        item(application, ""),
        item(identity_proof, "p1"),
        item(service_address, "p1"),
        item(identity_proof, "p2"),
        item(service_address, "p2"),
    ]
}

/// Every row of each of `tables` has a sealed `body` holding none of `secrets`
/// (`(what, value)`), and each table has rows; on SQLite the database file and its WAL hold
/// none of them either (see [`assert_sealed`], [`assert_sqlite_files_lack`]).
pub async fn assert_bodies_sealed(store: &Store, tables: &[&str], secrets: &[(&str, &str)]) {
    use fengqiao_store::sqlx::{self, Row as _};
    let values: Vec<&str> = secrets.iter().map(|(_, v)| *v).collect();
    for table in tables {
        let rows = sqlx::query(&format!("SELECT body FROM {table}"))
            .fetch_all(store.pool())
            .await
            .unwrap_or_else(|e| panic!("read {table}: {e}"));
        assert!(!rows.is_empty(), "{table} has rows");
        for r in rows {
            let body: Vec<u8> = r
                .try_get("body")
                .unwrap_or_else(|e| panic!("{table}.body: {e}"));
            assert_sealed(&body, &format!("{table}.body"), &values);
        }
    }
    assert_sqlite_files_lack(store, secrets);
}

/// The newest rows of the access log of `case_id`, exactly `count` of them (newest first),
/// each a full read by `service` of `resource` naming `fields`, none holding any of `secrets`
/// (names, ID numbers, phones: the log names fields, never values).
pub async fn full_reads(
    store: &Store,
    case_id: &str,
    count: usize,
    service: &str,
    resource: &str,
    fields: &str,
    secrets: &[&str],
) -> Vec<Access> {
    let rows = access::recent(store, Some(case_id), 10)
        .await
        .unwrap_or_else(|e| panic!("read the access log: {e}"));
    assert_eq!(rows.len(), count, "access rows of {case_id}: {rows:?}");
    for r in &rows {
        assert_eq!(r.outcome, Outcome::FullRead, "{r:?}");
        assert_eq!(
            (r.service.as_str(), r.resource.as_str(), r.fields.as_str()),
            (service, resource, fields),
            "{r:?}"
        );
    }
    let logged = format!("{rows:?}");
    for s in secrets {
        assert!(!logged.contains(s), "a personal value in the access log");
    }
    rows
}

/// A call made without any token (`reply`, its result) was refused `UNAUTHENTICATED` and left
/// a `denied` row of `service` in that service's access log naming `method`.
pub async fn assert_denied_and_logged<T>(
    suite: &TestSuite,
    service: ServiceName,
    reply: Result<tonic::Response<T>, tonic::Status>,
    method: &str,
) {
    crate::answers::Refusal::refusal(reply, Code::Unauthenticated, "no token");
    let row = denied_row(&store_of(suite, service).await).await;
    assert_eq!(row.service, service.as_str(), "the denied row's service");
    assert!(row.method.contains(method), "{}", row.method);
}

/// The party fields an access-log row names for a full read of parties.
pub const PARTY_FIELDS: &str = "party_name,party_id_number,party_phone";

/// `table` holds no row (a refused call stored nothing).
pub async fn assert_no_rows(store: &Store, table: &str) {
    use fengqiao_store::sqlx::{self, Row as _};
    let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(store.pool())
        .await
        .and_then(|r| r.try_get("n"))
        .unwrap_or_else(|e| panic!("count {table}: {e}"));
    assert_eq!(n, 0, "rows in {table}");
}
