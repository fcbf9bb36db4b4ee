//! Pulling the router's messages (拉取消息) for agencies on a network the router cannot call
//! (公安网, 法院专网: DESIGN.md §1): per agency configured in `[inbox] pull_agencies`, a worker
//! keeps a `DeliveryService.PullMessages` stream open to the router, hands every envelope to
//! the same [`InboxDispatch`] the push path uses, and acknowledges an envelope
//! (`AcknowledgeMessages`) only after its handler answered, i.e. after the handler's
//! transaction recorded it (or found it recorded: `duplicate = true`). A process killed
//! between recording and acknowledging gets the envelope again and the handler de-duplicates
//! it by `message_id`: nothing lost, nothing applied twice.
//!
//! An envelope the handler refuses is not acknowledged; the router streams it again once its
//! pull lease runs out (and holds the later envelopes of its case meanwhile). The stream is
//! reopened with capped exponential backoff after any failure, and the worker stops on
//! shutdown.
//!
//! The worker calls as the agency it pulls for, with a short-lived token signed by the
//! process's service key (`auth.service_key_file`); the router verifies it with its public key
//! set (`auth.public_keys_file`), which therefore must list that key.

use std::sync::Arc;
use std::time::Duration;

use fengqiao_proto::router::delivery_service_client::DeliveryServiceClient;
use fengqiao_proto::router::{AcknowledgeMessagesRequest, PullMessagesRequest};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::auth::SigningKey;
use crate::client::CallInterceptor;
use crate::inbox::InboxDispatch;
use crate::server::Shutdown;

/// The actor id of the worker's calls (no person: the process itself).
pub const PULL_ACTOR: &str = "inbox-pull-worker";
/// First wait before reopening a failed stream.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait before reopening a failed stream.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Lifetime of the worker's tokens; a new one is signed for every call.
const TOKEN_TTL_SECS: i64 = 300;
/// Attempts of one acknowledgement (same `request_id`) before giving up on it; the envelope
/// then comes again and is acknowledged as a duplicate.
const ACK_ATTEMPTS: u32 = 5;

/// The wait before reopening the stream after `failures` consecutive failures (1-based):
/// doubling from [`BACKOFF_MIN`], capped at [`BACKOFF_MAX`].
pub fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    BACKOFF_MIN.saturating_mul(1u32 << shift).min(BACKOFF_MAX)
}

/// `agencies/{id}` for an id given with or without the prefix.
pub fn agency_name(id: &str) -> String {
    if id.starts_with("agencies/") {
        id.to_string()
    } else {
        format!("agencies/{id}")
    }
}

/// Signs the worker's tokens: as `agency`, actor [`PULL_ACTOR`], no roles.
#[derive(Clone)]
pub struct PullCredentials {
    key: Arc<SigningKey>,
    issuer: String,
}

impl std::fmt::Debug for PullCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullCredentials")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl PullCredentials {
    /// Credentials signed with `key` for `issuer`.
    pub fn new(key: SigningKey, issuer: &str) -> Self {
        Self {
            key: Arc::new(key),
            issuer: issuer.to_string(),
        }
    }

    /// A fresh token for `agency` (`agencies/{id}`).
    pub fn token(&self, agency: &str) -> String {
        self.key.sign(&crate::auth::claims(
            &self.issuer,
            agency,
            PULL_ACTOR,
            &[],
            TOKEN_TTL_SECS,
        ))
    }
}

/// Starts one pull worker per agency of `agencies`; each runs until `shutdown`.
pub fn start(
    router: Channel,
    dispatch: InboxDispatch,
    agencies: &[String],
    credentials: PullCredentials,
    shutdown: Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    agencies
        .iter()
        .map(|a| {
            let worker = Worker {
                router: router.clone(),
                dispatch: dispatch.clone(),
                agency: agency_name(a),
                credentials: credentials.clone(),
            };
            tokio::spawn(worker.run(shutdown.clone()))
        })
        .collect()
}

struct Worker {
    router: Channel,
    dispatch: InboxDispatch,
    agency: String,
    credentials: PullCredentials,
}

impl Worker {
    fn client(
        &self,
    ) -> DeliveryServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, CallInterceptor>,
    > {
        DeliveryServiceClient::with_interceptor(
            self.router.clone(),
            CallInterceptor::new(Some(self.credentials.token(&self.agency))),
        )
    }

    async fn run(self, shutdown: Shutdown) {
        let mut failures = 0u32;
        while !shutdown.is_triggered() {
            let outcome = tokio::select! {
                r = self.stream_once(&mut failures) => r,
                () = shutdown.wait() => break,
            };
            if let Err(status) = outcome {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    agency = %self.agency,
                    code = ?status.code(),
                    failures,
                    "pull stream failed; reopening after backoff"
                );
            } else {
                // The router ended the stream (it is shutting down): reopen after a pause.
                failures = failures.saturating_add(1);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff(failures)) => {}
                () = shutdown.wait() => break,
            }
        }
        tracing::info!(agency = %self.agency, "pull worker stopped");
    }

    /// One stream: open, dispatch and acknowledge until it ends.
    async fn stream_once(&self, failures: &mut u32) -> Result<(), tonic::Status> {
        let mut stream = self
            .client()
            .pull_messages(PullMessagesRequest {
                cursor: String::new(),
                max_unacknowledged: 0,
                follow: true,
            })
            .await?
            .into_inner();
        tracing::info!(agency = %self.agency, "pull stream open");
        while let Some(item) = stream.next().await {
            let item = item?;
            // Healthy once the router sent something (an envelope or a heartbeat): a stream
            // that fails right after opening keeps backing off.
            *failures = 0;
            let Some(envelope) = item.envelope else {
                continue; // heartbeat
            };
            let id = envelope.message_id.clone();
            match self.dispatch.dispatch(envelope).await {
                Ok(_) => self.acknowledge(&id).await,
                Err(status) => {
                    // Not acknowledged: streamed again after the router's pull lease.
                    tracing::warn!(
                        agency = %self.agency,
                        message_id = %id,
                        code = ?status.code(),
                        "pulled envelope refused by its handler; left unacknowledged"
                    );
                }
            }
        }
        Ok(())
    }

    /// Acknowledges one recorded envelope, retrying with the same `request_id`.
    async fn acknowledge(&self, message_id: &str) {
        let request_id = uuid::Uuid::new_v4().to_string();
        for attempt in 1..=ACK_ATTEMPTS {
            let r = self
                .client()
                .acknowledge_messages(AcknowledgeMessagesRequest {
                    message_ids: vec![message_id.to_string()],
                    request_id: request_id.clone(),
                })
                .await;
            match r {
                Ok(_) => return,
                Err(status) => {
                    tracing::warn!(
                        agency = %self.agency,
                        message_id,
                        code = ?status.code(),
                        attempt,
                        "acknowledgement failed"
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use fengqiao_proto::inbox::{DeliverResponse, Envelope, RecipientSide};
    use fengqiao_proto::router::delivery_service_server::{DeliveryService, DeliveryServiceServer};
    use fengqiao_proto::router::{
        AcknowledgeMessagesResponse, ListDeliveryIncidentsRequest, ListDeliveryIncidentsResponse,
        PullMessagesResponse, RetryDeliveryIncidentRequest, RetryDeliveryIncidentResponse,
    };
    use tonic::codegen::BoxStream;
    use tonic::{Request, Response, Status};

    use crate::inbox::{InboxHandler, Receives};

    const ROUTE: &[Receives] = &[("police-to-station-mediation", RecipientSide::Sender)];

    /// Records what it applied; refuses the envelope `refuse`.
    struct Recorder {
        applied: Arc<Mutex<Vec<String>>>,
        refuse: &'static str,
    }

    #[tonic::async_trait]
    impl InboxHandler for Recorder {
        fn receives(&self) -> &[Receives] {
            ROUTE
        }

        async fn deliver(&self, envelope: Envelope) -> Result<DeliverResponse, Status> {
            if envelope.message_id == self.refuse {
                return Err(Status::unavailable("store down"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // the transaction
            self.applied
                .lock()
                .map_err(|_| Status::internal("poisoned"))?
                .push(envelope.message_id);
            Ok(DeliverResponse { duplicate: false })
        }
    }

    /// Each acknowledged id with what the handler had applied when it came.
    type Acks = Arc<Mutex<Vec<(String, Vec<String>)>>>;

    /// A router streaming `ids` to the first stream and nothing to later ones; each
    /// acknowledgement is recorded with what the handler had applied at that moment, and
    /// the agency of every call's token.
    struct FakeRouter {
        ids: Vec<&'static str>,
        opened: Mutex<u32>,
        acks: Acks,
        applied: Arc<Mutex<Vec<String>>>,
        agencies: Arc<Mutex<Vec<String>>>,
        verifier: crate::auth::Verifier,
    }

    impl FakeRouter {
        fn caller<T>(&self, r: &Request<T>) -> Result<(), Status> {
            let token = r
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::server::bearer_token)
                .ok_or_else(|| Status::unauthenticated("no token"))?;
            let who = self
                .verifier
                .verify(token, crate::auth::unix_now())
                .map_err(|_| Status::unauthenticated("bad token"))?;
            if let Ok(mut a) = self.agencies.lock() {
                a.push(who.agency);
            }
            Ok(())
        }
    }

    #[tonic::async_trait]
    impl DeliveryService for FakeRouter {
        async fn pull_messages(
            &self,
            request: Request<PullMessagesRequest>,
        ) -> Result<Response<BoxStream<PullMessagesResponse>>, Status> {
            self.caller(&request)?;
            let first = {
                let mut n = self
                    .opened
                    .lock()
                    .map_err(|_| Status::internal("poisoned"))?;
                *n += 1;
                *n == 1
            };
            let items: Vec<Result<PullMessagesResponse, Status>> = if first {
                self.ids
                    .iter()
                    .map(|id| {
                        Ok(PullMessagesResponse {
                            envelope: Some(Envelope {
                                message_id: (*id).to_string(),
                                route: "routes/police-to-station-mediation".into(),
                                recipient_side: RecipientSide::Sender as i32,
                                ..Default::default()
                            }),
                            cursor: String::new(),
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            // Stays open after the envelopes (follow mode).
            let s = tokio_stream::iter(items).chain(tokio_stream::pending());
            Ok(Response::new(Box::pin(s)))
        }

        async fn acknowledge_messages(
            &self,
            request: Request<AcknowledgeMessagesRequest>,
        ) -> Result<Response<AcknowledgeMessagesResponse>, Status> {
            self.caller(&request)?;
            let applied = self
                .applied
                .lock()
                .map(|a| a.clone())
                .map_err(|_| Status::internal("poisoned"))?;
            let req = request.into_inner();
            assert!(!req.request_id.is_empty());
            let mut acks = self.acks.lock().map_err(|_| Status::internal("poisoned"))?;
            for id in req.message_ids {
                acks.push((id, applied.clone()));
            }
            Ok(Response::new(AcknowledgeMessagesResponse {
                acknowledged_count: 1,
                unknown_message_ids: Vec::new(),
            }))
        }

        async fn list_delivery_incidents(
            &self,
            _: Request<ListDeliveryIncidentsRequest>,
        ) -> Result<Response<ListDeliveryIncidentsResponse>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }

        async fn retry_delivery_incident(
            &self,
            _: Request<RetryDeliveryIncidentRequest>,
        ) -> Result<Response<RetryDeliveryIncidentResponse>, Status> {
            Err(Status::unimplemented("not in this fake"))
        }
    }

    #[tokio::test]
    async fn acknowledges_only_what_the_handler_recorded_and_stops_on_shutdown() {
        let key = SigningKey::generate("k1").expect("key");
        let keys = crate::auth::PublicKeyFile {
            keys: vec![key.public_entry()],
        };
        let applied = Arc::new(Mutex::new(Vec::new()));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let agencies = Arc::new(Mutex::new(Vec::new()));
        let fake = FakeRouter {
            ids: vec!["a", "b", "c"],
            opened: Mutex::new(0),
            acks: acks.clone(),
            applied: applied.clone(),
            agencies: agencies.clone(),
            verifier: crate::auth::Verifier::new("iss", &keys).expect("verifier"),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DeliveryServiceServer::new(fake))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut dispatch = InboxDispatch::new();
        let recorder = Arc::new(Recorder {
            applied: applied.clone(),
            refuse: "b",
        });
        assert!(dispatch.add(recorder).is_ok());
        let (trigger, shutdown) = crate::server::shutdown_pair();
        let channel = crate::client::channel(&format!("http://{addr}"), None).expect("channel");
        let workers = start(
            channel,
            dispatch,
            &["xigang-110".to_string()],
            PullCredentials::new(key, "iss"),
            shutdown,
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while acks.lock().map(|a| a.len()).unwrap_or(0) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "two acknowledgements"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acks = acks.lock().map(|a| a.clone()).unwrap_or_default();
        let acked: Vec<&str> = acks.iter().map(|(id, _)| id.as_str()).collect();
        // "b" was refused by its handler: not acknowledged (the router streams it again).
        assert_eq!(acked, ["a", "c"]);
        for (id, applied_then) in &acks {
            assert!(
                applied_then.contains(id),
                "{id} acknowledged before it was recorded"
            );
        }
        let agencies = agencies.lock().map(|a| a.clone()).unwrap_or_default();
        assert!(
            agencies.iter().all(|a| a == "agencies/xigang-110"),
            "{agencies:?}"
        );
        trigger.trigger();
        for w in workers {
            assert!(
                tokio::time::timeout(Duration::from_secs(2), w)
                    .await
                    .is_ok(),
                "the worker stops on shutdown"
            );
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), BACKOFF_MIN);
        assert_eq!(backoff(1), BACKOFF_MIN);
        assert_eq!(backoff(2), BACKOFF_MIN * 2);
        assert_eq!(backoff(3), BACKOFF_MIN * 4);
        assert_eq!(backoff(7), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn agency_names_get_the_prefix_once() {
        assert_eq!(agency_name("xigang-110"), "agencies/xigang-110");
        assert_eq!(agency_name("agencies/xigang-110"), "agencies/xigang-110");
    }

    #[test]
    fn tokens_name_the_pulled_agency_and_verify() {
        let key = SigningKey::generate("k1").expect("key");
        let keys = crate::auth::PublicKeyFile {
            keys: vec![key.public_entry()],
        };
        let v = crate::auth::Verifier::new("iss", &keys).expect("verifier");
        let c = PullCredentials::new(key, "iss");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let who = v
            .verify(&c.token("agencies/xigang-110"), now)
            .expect("verifies");
        assert_eq!(who.agency, "agencies/xigang-110");
        assert_eq!(who.actor, PULL_ACTOR);
        assert!(who.roles.is_empty());
    }
}
