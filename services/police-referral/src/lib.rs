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
}

#[tonic::async_trait]
impl PoliceReferralService for PoliceReferral {}

impl PoliceReferral {
    /// The service over a migrated `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
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
