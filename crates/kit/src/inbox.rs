//! Receiving the router's messages: one `AgencyInboxService` per process, dispatching each
//! envelope to the agency service that keeps the records of its recipient.
//!
//! The router pushes envelopes (`fengqiao.inbox.v1.Envelope`) to an agency's endpoint. In one
//! process there may be several agency services (the dev suite runs them all), so each
//! registers an [`InboxHandler`] and [`InboxDispatch`] routes by the recipient's agency kind,
//! read from the `TransferMessage` payload. Only the router may call it.

use std::sync::Arc;

use fengqiao_proto::common::AgencyKind;
use fengqiao_proto::inbox::agency_inbox_service_server::AgencyInboxService;
use fengqiao_proto::inbox::{DeliverRequest, DeliverResponse, Envelope};
use fengqiao_proto::router::TransferMessage;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::auth::Identity;
use crate::error::ApiError;

/// The principal the router's own calls carry.
pub const ROUTER_PRINCIPAL: &str = "services/router";

/// An agency service's side of the inbox.
#[tonic::async_trait]
pub trait InboxHandler: Send + Sync {
    /// Whether this service keeps the records of agencies of `kind`.
    fn handles(&self, kind: AgencyKind) -> bool;

    /// Applies one envelope exactly once (de-duplicate by `message_id` in the same
    /// transaction as the effect) and answers `duplicate = true` for a repeat.
    async fn deliver(&self, envelope: Envelope) -> Result<DeliverResponse, Status>;
}

/// The recipient's kind of an envelope carrying a `TransferMessage`.
pub fn recipient_kind(envelope: &Envelope) -> Option<AgencyKind> {
    let msg = TransferMessage::decode(envelope.payload.as_slice()).ok()?;
    let t = msg.transfer?;
    let (to, from) = (t.to_agency, t.from_agency);
    let agency = [to.clone(), from.clone()]
        .into_iter()
        .flatten()
        .find(|a| a.name == envelope.to_agency)
        // An approver outside the two parties (e.g. the station's command centre) keeps its
        // records in the same service as the sender.
        .or(from)?;
    AgencyKind::try_from(agency.kind).ok()
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

    /// Adds a handler.
    pub fn add(&mut self, handler: Arc<dyn InboxHandler>) {
        self.handlers.push(handler);
    }

    /// Whether any handler is registered.
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
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
            return Err(ApiError::permission_denied(
                "ROUTER_ONLY",
                "only the router delivers to agency inboxes",
            )
            .into());
        }
        let Some(envelope) = request.into_inner().envelope else {
            return Err(ApiError::invalid_field("envelope", "is required").into());
        };
        let Some(kind) = recipient_kind(&envelope) else {
            return Err(ApiError::invalid_field(
                "envelope.payload",
                "must be a TransferMessage naming the recipient agency",
            )
            .into());
        };
        match self.handlers.iter().find(|h| h.handles(kind)) {
            Some(h) => Ok(Response::new(h.deliver(envelope).await?)),
            None => Err(ApiError::failed_precondition(
                "NO_HANDLER",
                "no service in this process keeps records for the recipient's agency kind",
            )
            .into()),
        }
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
