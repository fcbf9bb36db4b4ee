//! The inbox of an agency service in the kit's error type: a service says which (route, side)
//! pairs it receives and how it applies one envelope ([`Deliveries`]); the kit answers the
//! router's `Deliver` call ([`crate::inbox::InboxHandler`]) with the error mapped to its
//! status, and decodes the router's [`TransferMessage`] payload the same way everywhere.

use std::future::Future;

use fengqiao_proto::inbox::{DeliverResponse, Envelope};
use fengqiao_proto::router::TransferMessage;
use prost::Message as _;
use tonic::Status;

use crate::error::{Error, FieldViolation};
use crate::inbox::{InboxHandler, Receives};

/// What an agency service's inbox receives and does with one envelope.
pub trait Deliveries: Send + Sync {
    /// The (route id, recipient side) pairs whose envelopes this service keeps records for.
    fn receives(&self) -> &[Receives];

    /// Applies one envelope exactly once (de-duplicate by `message_id` in the same
    /// transaction as the effect) and answers `duplicate = true` for a repeat.
    fn apply(
        &self,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<DeliverResponse, Error>> + Send;
}

#[tonic::async_trait]
impl<T: Deliveries> InboxHandler for T {
    fn receives(&self) -> &[Receives] {
        Deliveries::receives(self)
    }

    async fn deliver(&self, envelope: Envelope) -> Result<DeliverResponse, Status> {
        self.apply(&envelope).await.map_err(Status::from)
    }
}

/// The router's message an envelope carries (INVALID_ARGUMENT on `envelope.payload` when it
/// is not one).
pub fn transfer_message(envelope: &Envelope) -> Result<TransferMessage, Error> {
    TransferMessage::decode(envelope.payload.as_slice()).map_err(|_| {
        Error::Invalid(vec![FieldViolation::new(
            "envelope.payload",
            "must be a TransferMessage",
        )])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_proto::inbox::RecipientSide;

    struct Echo;

    impl Deliveries for Echo {
        fn receives(&self) -> &[Receives] {
            &[("r", RecipientSide::Receiver)]
        }

        async fn apply(&self, envelope: &Envelope) -> Result<DeliverResponse, Error> {
            let msg = transfer_message(envelope)?;
            if msg.transfer.is_none() {
                return Err(Error::NotFound("transfers/t".into()));
            }
            Ok(DeliverResponse { duplicate: true })
        }
    }

    #[tokio::test]
    async fn the_kit_answers_deliver_with_the_services_apply() {
        let h: &dyn InboxHandler = &Echo;
        assert_eq!(h.receives(), &[("r", RecipientSide::Receiver)]);
        let ok = TransferMessage {
            transfer: Some(Default::default()),
            ..Default::default()
        };
        let envelope = |payload| Envelope {
            payload,
            ..Default::default()
        };
        let r = h.deliver(envelope(ok.encode_to_vec())).await.expect("ok");
        assert!(r.duplicate);
        let refused = h
            .deliver(envelope(TransferMessage::default().encode_to_vec()))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::NotFound);
        let bad = h
            .deliver(envelope(vec![0xff, 0xff]))
            .await
            .expect_err("bad");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    }
}
