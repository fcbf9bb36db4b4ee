//! Agency inboxes dispatch by route and recipient side, never by agency kind; on SQLite and
//! PostgreSQL.
//!
//! Two test-only court-side handlers serve the same court agency in one process (as court
//! diversion and judicial confirmation will): each receives exactly its own envelopes. An
//! envelope for a route nobody declared is refused with `NO_HANDLER`, which the router takes
//! as permanent: the delivery incident opens on the first attempt (no backoff rounds), and an
//! administrator's retry delivers it once the deployment is fixed.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fengqiao_kit::Identity;
use fengqiao_kit::auth::AuthMethod;
use fengqiao_kit::inbox::{InboxDispatch, InboxHandler, ROUTER_PRINCIPAL, Receives};
use fengqiao_proto::common::AgencyRef;
use fengqiao_proto::inbox::agency_inbox_service_server::{
    AgencyInboxService, AgencyInboxServiceServer,
};
use fengqiao_proto::inbox::{
    DeliverRequest, DeliverResponse, Envelope, MessageKind, RecipientSide,
};
use fengqiao_proto::router::{
    DeliveryIncidentState, ListDeliveryIncidentsRequest, RetryDeliveryIncidentRequest, Transfer,
    TransferMessage,
};
use fengqiao_router::Agencies;
use fengqiao_router::agencies::{SeedAgency, SeedFile};
use fengqiao_router::delivery::{Delivery, DeliveryConfig, enqueue};
use fengqiao_store::outbox::{self, Status as OutboxStatus};
use fengqiao_store::{Store, both_backends};
use prost::Message as _;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

type TestResult = std::result::Result<(), String>;

const COURT: &str = "agencies/test-court";

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// A test handler that records the message ids it was given.
struct Recorder {
    receives: &'static [Receives],
    got: Mutex<Vec<String>>,
}

impl Recorder {
    fn new(receives: &'static [Receives]) -> Arc<Self> {
        Arc::new(Self {
            receives,
            got: Mutex::new(Vec::new()),
        })
    }

    fn got(&self) -> Vec<String> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

#[tonic::async_trait]
impl InboxHandler for Recorder {
    fn receives(&self) -> &[Receives] {
        self.receives
    }

    async fn deliver(&self, envelope: Envelope) -> Result<DeliverResponse, Status> {
        let mut got = self.got.lock().map_err(|_| Status::internal("poisoned"))?;
        let duplicate = got.contains(&envelope.message_id);
        if !duplicate {
            got.push(envelope.message_id);
        }
        Ok(DeliverResponse { duplicate })
    }
}

/// The process's inbox as a server would run it: the auth layer's identity of the router,
/// then [`InboxDispatch`]. The dispatcher can be replaced (a deployment being fixed).
#[derive(Clone)]
struct Endpoint {
    dispatch: Arc<RwLock<InboxDispatch>>,
}

#[tonic::async_trait]
impl AgencyInboxService for Endpoint {
    async fn deliver(
        &self,
        mut request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        request.extensions_mut().insert(Identity {
            agency: ROUTER_PRINCIPAL.into(),
            actor: "router".into(),
            roles: vec!["router".into()],
            method: AuthMethod::Token,
            person: None,
        });
        let d = self
            .dispatch
            .read()
            .map_err(|_| Status::internal("poisoned"))?
            .clone();
        AgencyInboxService::deliver(&d, request).await
    }
}

async fn serve(endpoint: Endpoint) -> Result<(String, tokio::sync::oneshot::Sender<()>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AgencyInboxServiceServer::new(endpoint))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((format!("http://{addr}"), stop))
}

fn envelope(case: &str, route: &str, side: RecipientSide) -> Envelope {
    Envelope {
        case_id: case.into(),
        transfer: format!("transfers/t-{case}"),
        kind: MessageKind::TransferUpdated as i32,
        from_agency: COURT.into(),
        to_agency: COURT.into(),
        payload: b"opaque".to_vec(),
        payload_type: "fengqiao.router.v1.TransferMessage".into(),
        route: format!("routes/{route}"),
        route_version: 1,
        recipient_side: side as i32,
        ..Default::default()
    }
}

async fn enqueue_all(store: &Store, envelopes: Vec<Envelope>) -> Result<Vec<String>, String> {
    let mut tx = store.write().await.map_err(err)?;
    let mut ids = Vec::new();
    for e in envelopes {
        ids.push(enqueue(&mut tx, e).await.map_err(err)?.message_id);
    }
    tx.commit().await.map_err(err)?;
    Ok(ids)
}

/// Push rounds until nothing is due.
async fn drain(d: &Delivery) -> TestResult {
    for _ in 0..50 {
        if d.push_round("test-worker").await.map_err(err)? == 0 {
            return Ok(());
        }
    }
    Err("push rounds did not settle".into())
}

async fn status(store: &Store, id: &str) -> Result<Option<OutboxStatus>, String> {
    Ok(outbox::get(store, id).await.map_err(err)?.map(|m| m.status))
}

fn admin() -> Identity {
    Identity {
        agency: "agencies/justice-bureau".into(),
        actor: "admin".into(),
        roles: vec!["platform_admin".into()],
        method: AuthMethod::Token,
        person: None,
    }
}

both_backends!(
    two_court_handlers_get_their_own_envelopes_and_no_handler_is_an_incident,
    |store: Store| async move {
        fengqiao_router::migrate(&store).await.map_err(err)?;
        let diversion = Recorder::new(&[("court-to-invited-mediation", RecipientSide::Sender)]);
        let confirmation =
            Recorder::new(&[("mediation-to-court-confirmation", RecipientSide::Receiver)]);
        let mut dispatch = InboxDispatch::new();
        dispatch.add(diversion.clone()).map_err(err)?;
        dispatch.add(confirmation.clone()).map_err(err)?;
        let endpoint = Endpoint {
            dispatch: Arc::new(RwLock::new(dispatch.clone())),
        };
        let (url, stop) = serve(endpoint.clone()).await?;
        Agencies::new(store.clone())
            .seed(
                &SeedFile {
                    agency: vec![SeedAgency {
                        id: "test-court".into(),
                        kind: "court".into(),
                        display_name: "测试法院".into(),
                        region_code: "210203".into(),
                        parent: None,
                        delivery: Some("push".into()),
                        endpoint: Some(url),
                        actor: Vec::new(),
                    }],
                },
                "http://127.0.0.1:1",
            )
            .await
            .map_err(err)?;
        let config = DeliveryConfig {
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            max_attempts: 1000,
            ..DeliveryConfig::default()
        };
        let d = Delivery::new(store.clone(), config, Arc::new(|| None));

        // An envelope enqueued before envelopes named their route: the router fills route and
        // side from the payload before sending it.
        let mut legacy = envelope("c-legacy", "unused", RecipientSide::Unspecified);
        legacy.route.clear();
        legacy.route_version = 0;
        legacy.payload = TransferMessage {
            transfer: Some(Transfer {
                route: "routes/court-to-invited-mediation".into(),
                route_version: 1,
                from_agency: Some(AgencyRef {
                    name: COURT.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let ids = enqueue_all(
            &store,
            vec![
                envelope("c1", "court-to-invited-mediation", RecipientSide::Sender),
                envelope(
                    "c2",
                    "mediation-to-court-confirmation",
                    RecipientSide::Receiver,
                ),
                envelope("c3", "court-to-invited-mediation", RecipientSide::Sender),
                // Same court, a side of a route nobody here keeps records for.
                envelope("c4", "court-to-invited-mediation", RecipientSide::Receiver),
                legacy,
            ],
        )
        .await?;
        drain(&d).await?;

        // Different cases are pushed concurrently: compare as sets.
        let mut got = diversion.got();
        got.sort();
        let mut want = vec![ids[0].clone(), ids[2].clone(), ids[4].clone()];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(confirmation.got(), [ids[1].clone()]);
        for i in [0, 1, 2, 4] {
            assert_eq!(
                status(&store, &ids[i]).await?,
                Some(OutboxStatus::Delivered)
            );
        }
        // NO_HANDLER: dead after one attempt, incident open, no backoff rounds.
        let orphan = outbox::get(&store, &ids[3])
            .await
            .map_err(err)?
            .ok_or("gone")?;
        assert_eq!(orphan.status, OutboxStatus::Dead);
        assert_eq!(orphan.attempts, 1);
        let incidents = d
            .list_incidents(&admin(), &ListDeliveryIncidentsRequest::default())
            .await
            .map_err(err)?
            .delivery_incidents;
        assert_eq!(incidents.len(), 1, "{incidents:?}");
        let incident = &incidents[0];
        assert_eq!(incident.message_id, ids[3]);
        assert_eq!(incident.state, DeliveryIncidentState::Open as i32);
        assert_eq!(incident.attempt_count, 1);
        assert_eq!(incident.last_error_code, "FAILED_PRECONDITION");

        // The deployment is fixed (a service for that side is added); the administrator
        // retries and the envelope is delivered to it.
        let diversion_receiver =
            Recorder::new(&[("court-to-invited-mediation", RecipientSide::Receiver)]);
        dispatch.add(diversion_receiver.clone()).map_err(err)?;
        *endpoint.dispatch.write().map_err(|_| "poisoned")? = dispatch;
        d.retry_incident(
            &admin(),
            RetryDeliveryIncidentRequest {
                name: incident.name.clone(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
        )
        .await
        .map_err(err)?;
        drain(&d).await?;
        assert_eq!(diversion_receiver.got(), [ids[3].clone()]);
        assert_eq!(
            status(&store, &ids[3]).await?,
            Some(OutboxStatus::Delivered)
        );
        assert_eq!(diversion.got().len() + confirmation.got().len(), 4);
        let _ = stop.send(());
        Ok::<_, String>(())
    }
);
