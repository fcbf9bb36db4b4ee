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
        *failures = 0;
        while let Some(item) = stream.next().await {
            let Some(envelope) = item?.envelope else {
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
