//! Police referral (警调对接): 110 referrals screened and handed to people's mediation through
//! the router, with the result fed back to the command room.
//!
//! The contract is `proto/fengqiao/policereferral/v1`; its RPCs answer UNIMPLEMENTED until the
//! service is built (see the README's status table). The store and its migrations are in place
//! so that the suite starts, reports health and can be probed.

use fengqiao_kit::server::ServerBuilder;
use fengqiao_proto::policereferral::police_referral_service_server::{
    PoliceReferralService, PoliceReferralServiceServer,
};
use fengqiao_store::{SHARED_MIGRATIONS, SHARED_SERVICE, Store};

/// Name under which this service's migrations are recorded.
pub const SERVICE: &str = "police_referral";

/// Applies the shared migrations (this service has no tables of its own yet).
pub async fn migrate(store: &Store) -> Result<(), fengqiao_store::Error> {
    store.migrate(SHARED_SERVICE, SHARED_MIGRATIONS).await
}

/// The police-referral service.
#[derive(Clone, Debug)]
pub struct PoliceReferral {
    #[allow(dead_code)]
    store: Store,
    #[allow(dead_code)]
    router: tonic::transport::Channel,
}

/// Receives the router's messages for the agencies whose records this service keeps.
#[derive(Clone, Debug)]
struct Inbox {
    store: Store,
}

#[tonic::async_trait]
impl fengqiao_kit::inbox::InboxHandler for Inbox {
    fn handles(&self, kind: fengqiao_proto::common::AgencyKind) -> bool {
        use fengqiao_proto::common::AgencyKind;
        matches!(kind, AgencyKind::PoliceCommandCentre | AgencyKind::PoliceStation)
    }

    async fn deliver(
        &self,
        envelope: fengqiao_proto::inbox::Envelope,
    ) -> Result<fengqiao_proto::inbox::DeliverResponse, tonic::Status> {
        let fail = |e: fengqiao_store::Error| fengqiao_kit::ApiError::internal(&e).to_status();
        let mut tx = self.store.write().await.map_err(fail)?;
        let fresh = fengqiao_store::inbox::record_once(&mut tx, SERVICE, &envelope.message_id)
            .await
            .map_err(fail)?;
        tx.commit()
            .await
            .map_err(|e| fail(fengqiao_store::Error::from(e)))?;
        Ok(fengqiao_proto::inbox::DeliverResponse { duplicate: !fresh })
    }
}

#[tonic::async_trait]
impl PoliceReferralService for PoliceReferral {}

impl PoliceReferral {
    /// The service over a migrated `store`.
    pub fn new(store: Store, router: tonic::transport::Channel) -> Self {
        Self { store, router }
    }

    /// This service's side of the process's agency inbox.
    pub fn inbox_handler(&self) -> std::sync::Arc<dyn fengqiao_kit::inbox::InboxHandler> {
        std::sync::Arc::new(Inbox {
            store: self.store.clone(),
        })
    }

    /// Adds the service to a server.
    pub fn add_to(&self, b: &mut ServerBuilder, max_message_bytes: usize) {
        b.add(
            PoliceReferralServiceServer::new(self.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        );
    }
}
