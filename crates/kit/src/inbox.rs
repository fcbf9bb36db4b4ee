//! Receiving the router's messages: one `AgencyInboxService` per process, dispatching each
//! envelope to the agency service that keeps the records it is for.
//!
//! The router pushes envelopes (`fengqiao.inbox.v1.Envelope`) to an agency's endpoint. In one
//! process there may be several agency services (the dev suite runs them all, and two services
//! may serve agencies of the same kind: court diversion and judicial confirmation both serve
//! courts), so each registers an [`InboxHandler`] declaring the (route, recipient side) pairs it
//! keeps records for, and [`InboxDispatch`] routes every envelope by its `route` and
//! `recipient_side` — never by guessing from an agency's kind. An envelope nobody declared is
//! refused with FAILED_PRECONDITION / `NO_HANDLER`, which the router treats as permanent: it
//! opens a delivery incident at once. Only the router may call the inbox.

use std::sync::Arc;

use fengqiao_proto::inbox::agency_inbox_service_server::AgencyInboxService;
use fengqiao_proto::inbox::{DeliverRequest, DeliverResponse, Envelope, RecipientSide};
use tonic::{Request, Response, Status};

use crate::auth::Identity;
use crate::error::{ApiError, Reason};

/// The principal the router's own calls carry.
pub const ROUTER_PRINCIPAL: &str = "services/router";

/// Stable `ErrorInfo.reason` of an envelope no service in the process keeps records for.
pub const NO_HANDLER: &str = Reason::NoHandler.as_str();

/// One (route id, recipient side) pair a service keeps records for, e.g.
/// `("police-to-station-mediation", RecipientSide::Sender)`.
pub type Receives = (&'static str, RecipientSide);

/// An agency service's side of the inbox.
#[tonic::async_trait]
pub trait InboxHandler: Send + Sync {
    /// The (route id, recipient side) pairs whose envelopes this service keeps records for.
    fn receives(&self) -> &[Receives];

    /// Applies one envelope exactly once (de-duplicate by `message_id` in the same
    /// transaction as the effect) and answers `duplicate = true` for a repeat.
    async fn deliver(&self, envelope: Envelope) -> Result<DeliverResponse, Status>;
}

/// Two handlers declared the same (route, side): the deployment is ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two inbox handlers keep records for route {route} as {side}")]
pub struct DuplicateReceiver {
    /// The route id.
    pub route: String,
    /// The side's proto name.
    pub side: &'static str,
}

/// The (route id, recipient side) an envelope is for; malformed fields are INVALID_ARGUMENT
/// naming the field.
pub fn route_and_side(envelope: &Envelope) -> Result<(&str, RecipientSide), ApiError> {
    let route = envelope
        .route
        .strip_prefix("routes/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| ApiError::invalid_field("envelope.route", "must be routes/{route}"))?;
    let side = RecipientSide::try_from(envelope.recipient_side)
        .ok()
        .filter(|s| *s != RecipientSide::Unspecified)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "envelope.recipient_side",
                "must be SENDER, RECEIVER or APPROVER",
            )
        })?;
    Ok((route, side))
}

/// Dispatches envelopes to the handlers of this process.
#[derive(Clone, Default)]
pub struct InboxDispatch {
    handlers: Vec<Arc<dyn InboxHandler>>,
}

impl std::fmt::Debug for InboxDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxDispatch")
            .field("handlers", &self.handlers.len())
            .finish()
    }
}

impl InboxDispatch {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a handler; refused if it declares a (route, side) another handler declared.
    pub fn add(&mut self, handler: Arc<dyn InboxHandler>) -> Result<(), DuplicateReceiver> {
        for &(route, side) in handler.receives() {
            if self.handler_for(route, side).is_some() {
                return Err(DuplicateReceiver {
                    route: route.to_string(),
                    side: side.as_str_name(),
                });
            }
        }
        self.handlers.push(handler);
        Ok(())
    }

    /// Whether any handler is registered.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// The handler keeping records for `route` as `side`, if any.
    pub fn handler_for(&self, route: &str, side: RecipientSide) -> Option<&Arc<dyn InboxHandler>> {
        self.handlers
            .iter()
            .find(|h| h.receives().iter().any(|&(r, s)| r == route && s == side))
    }

    /// Hands `envelope` to the handler declared for its route and recipient side.
    pub async fn dispatch(&self, envelope: Envelope) -> Result<DeliverResponse, Status> {
        let (route, side) = route_and_side(&envelope)?;
        match self.handler_for(route, side) {
            Some(h) => h.deliver(envelope).await,
            None => Err(ApiError::new(
                Reason::NoHandler,
                format!(
                    "no service here keeps records for route {route} as {}",
                    side.as_str_name()
                ),
            )
            .with_metadata("route", route)
            .with_metadata("recipient_side", side.as_str_name())
            .into()),
        }
    }
}

#[tonic::async_trait]
impl AgencyInboxService for InboxDispatch {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let who = Identity::of(&request)?;
        if who.agency != ROUTER_PRINCIPAL && !who.has_role("router") {
            return Err(ApiError::new(
                Reason::RouterOnly,
                "only the router delivers to agency inboxes",
            )
            .into());
        }
        let Some(envelope) = request.into_inner().envelope else {
            return Err(ApiError::invalid_field("envelope", "is required").into());
        };
        Ok(Response::new(self.dispatch(envelope).await?))
    }
}

/// Copies the caller's `authorization` header onto an outgoing call, so that the next service
/// sees the same agency, actor and roles (the agency services act for their callers).
pub fn forward_auth<T, U>(incoming: &Request<T>, outgoing: &mut Request<U>) {
    if let Some(v) = incoming.metadata().get("authorization") {
        outgoing.metadata_mut().insert("authorization", v.clone());
    }
    crate::telemetry::inject_current(outgoing.metadata_mut());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records the message ids it was given.
    struct Recorder {
        receives: &'static [Receives],
        got: Mutex<Vec<String>>,
    }

    #[tonic::async_trait]
    impl InboxHandler for Recorder {
        fn receives(&self) -> &[Receives] {
            self.receives
        }

        async fn deliver(&self, envelope: Envelope) -> Result<DeliverResponse, Status> {
            self.got
                .lock()
                .map_err(|_| Status::internal("poisoned"))?
                .push(envelope.message_id);
            Ok(DeliverResponse { duplicate: false })
        }
    }

    fn recorder(receives: &'static [Receives]) -> Arc<Recorder> {
        Arc::new(Recorder {
            receives,
            got: Mutex::new(Vec::new()),
        })
    }

    fn env(id: &str, route: &str, side: RecipientSide) -> Envelope {
        Envelope {
            message_id: id.into(),
            route: format!("routes/{route}"),
            recipient_side: side as i32,
            ..Default::default()
        }
    }

    fn got(r: &Recorder) -> Vec<String> {
        r.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    #[tokio::test]
    async fn dispatches_on_route_and_side_only() {
        let court_sender = recorder(&[("court-to-invited-mediation", RecipientSide::Sender)]);
        let court_receiver =
            recorder(&[("mediation-to-court-confirmation", RecipientSide::Receiver)]);
        let mut d = InboxDispatch::new();
        assert!(d.add(court_sender.clone()).is_ok());
        assert!(d.add(court_receiver.clone()).is_ok());
        let sent = [
            ("a", "court-to-invited-mediation", RecipientSide::Sender),
            (
                "b",
                "mediation-to-court-confirmation",
                RecipientSide::Receiver,
            ),
            ("c", "court-to-invited-mediation", RecipientSide::Sender),
        ];
        for (id, route, side) in sent {
            assert!(d.dispatch(env(id, route, side)).await.is_ok(), "{id}");
        }
        assert_eq!(got(&court_sender), ["a", "c"]);
        assert_eq!(got(&court_receiver), ["b"]);

        // Same route, other side: nobody declared it.
        for e in [
            env("d", "court-to-invited-mediation", RecipientSide::Receiver),
            env("e", "coordination-to-procuratorate", RecipientSide::Sender),
        ] {
            let st = d.dispatch(e).await.err().map(|s| {
                (
                    s.code(),
                    crate::error::reason_of(&s),
                    s.message().to_string(),
                )
            });
            let (code, reason, message) = st.unwrap_or((tonic::Code::Ok, None, String::new()));
            assert_eq!(code, tonic::Code::FailedPrecondition);
            assert_eq!(reason.as_deref(), Some(NO_HANDLER));
            assert!(message.contains("RECIPIENT_SIDE_"), "{message}");
        }
        assert_eq!(got(&court_sender).len() + got(&court_receiver).len(), 3);
    }

    #[tokio::test]
    async fn malformed_route_or_side_is_invalid_argument() {
        let mut d = InboxDispatch::new();
        assert!(d.add(recorder(&[("r", RecipientSide::Sender)])).is_ok());
        let mut no_side = env("x", "r", RecipientSide::Sender);
        no_side.recipient_side = 0;
        let mut no_route = env("y", "r", RecipientSide::Sender);
        no_route.route = "r".into();
        for (e, field) in [
            (no_side, "envelope.recipient_side"),
            (no_route, "envelope.route"),
        ] {
            let st = d.dispatch(e).await.err();
            assert_eq!(
                st.as_ref().map(Status::code),
                Some(tonic::Code::InvalidArgument)
            );
            let fields = st
                .as_ref()
                .map(crate::error::bad_fields_of)
                .unwrap_or_default();
            assert_eq!(fields, [field]);
        }
    }

    #[test]
    fn a_pair_declared_twice_is_refused() {
        let mut d = InboxDispatch::new();
        assert!(d.add(recorder(&[("r", RecipientSide::Receiver)])).is_ok());
        let again = d.add(recorder(&[
            ("r", RecipientSide::Sender),
            ("r", RecipientSide::Receiver),
        ]));
        assert_eq!(
            again,
            Err(DuplicateReceiver {
                route: "r".into(),
                side: "RECIPIENT_SIDE_RECEIVER"
            })
        );
    }
}
