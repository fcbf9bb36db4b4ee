//! The router (枢纽): the only way a case moves between agencies.
//!
//! Built so far: the agency registry ([`agencies`]). Routes, transfers, clocks, delivery,
//! audit and statistics are specified in `proto/fengqiao/router/v1` and answer UNIMPLEMENTED
//! until they are built (see the README's status table).

pub mod agencies;
pub mod error;
mod idem;
pub mod time;

use fengqiao_kit::server::ServerBuilder;
use fengqiao_proto::router::{
    agency_service_server::AgencyServiceServer, audit_service_server, delivery_service_server,
    route_service_server, statistics_service_server, transfer_service_server,
};
use fengqiao_store::{Migration, SHARED_MIGRATIONS, SHARED_SERVICE, Store};

pub use agencies::Agencies;
pub use error::{Error, Result};

/// Name under which the router's migrations are recorded.
pub const SERVICE: &str = "router";

/// The router's schema, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "agencies",
    sqlite: include_str!("../migrations/0001_agencies.sqlite.sql"),
    postgres: include_str!("../migrations/0001_agencies.postgres.sql"),
}];

/// Applies the shared and the router's migrations.
pub async fn migrate(store: &Store) -> Result<()> {
    store.migrate(SHARED_SERVICE, SHARED_MIGRATIONS).await?;
    store.migrate(SERVICE, MIGRATIONS).await?;
    Ok(())
}

/// The router's gRPC services over one store.
#[derive(Clone, Debug)]
pub struct Router {
    /// The agency registry.
    pub agencies: Agencies,
}

/// Parts of the router contract that are not built yet: they answer UNIMPLEMENTED.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotBuilt;

#[tonic::async_trait]
impl route_service_server::RouteService for NotBuilt {}
#[tonic::async_trait]
impl transfer_service_server::TransferService for NotBuilt {}
#[tonic::async_trait]
impl delivery_service_server::DeliveryService for NotBuilt {}
#[tonic::async_trait]
impl audit_service_server::AuditService for NotBuilt {}
#[tonic::async_trait]
impl statistics_service_server::StatisticsService for NotBuilt {}

impl Router {
    /// The router over a migrated `store`.
    pub fn new(store: Store) -> Self {
        Self {
            agencies: Agencies::new(store),
        }
    }

    /// Adds the router's services to a server.
    pub fn add_to(&self, b: &mut ServerBuilder, max_message_bytes: usize) {
        b.add(
            AgencyServiceServer::new(self.agencies.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
        );
        b.add(route_service_server::RouteServiceServer::new(NotBuilt));
        b.add(transfer_service_server::TransferServiceServer::new(
            NotBuilt,
        ));
        b.add(delivery_service_server::DeliveryServiceServer::new(
            NotBuilt,
        ));
        b.add(audit_service_server::AuditServiceServer::new(NotBuilt));
        b.add(statistics_service_server::StatisticsServiceServer::new(
            NotBuilt,
        ));
    }
}
