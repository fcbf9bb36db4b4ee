//! The router (枢纽): the only way a case moves between agencies.
//!
//! - [`agencies`]: the agency registry;
//! - [`routes`]: routes as versioned policy data;
//! - [`lifecycle`]: the transfer state machine as a transition table;
//! - [`clock`]: deadlines in hours, calendar days or working days, with pauses, extensions
//!   and hard caps;
//! - [`transfers`]: transfers, their events, the timer, watch streams and case timelines;
//! - [`delivery`]: store-and-forward delivery (outbox, push worker, pull stream, incidents);
//! - [`audit`]: the append-only, hash-chained audit;
//! - [`statistics`]: counts, durations and outcome rates.

pub mod agencies;
pub mod audit;
pub mod clock;
pub mod delivery;
pub mod error;
pub mod lifecycle;
pub mod metrics;
/// The service's entry in the registry the binary starts services from.
pub mod module;
pub mod routes;
pub mod statistics;
pub mod time;
pub mod transfers;

pub use module::MODULE;

use fengqiao_kit::records::Schema;
use fengqiao_kit::server::ServerBuilder;
use fengqiao_proto::router::{
    agency_service_server::AgencyServiceServer, audit_service_server, delivery_service_server,
    route_service_server, statistics_service_server, transfer_service_server,
};
use fengqiao_store::Store;

pub use agencies::Agencies;
pub use error::{Error, Result};

/// Name under which the router's migrations are recorded.
pub const SERVICE: &str = "router";

/// The router's schema, in order.
pub const SCHEMA: Schema = fengqiao_kit::schema!(
    SERVICE,
    [
        (1, "agencies", "migrations/0001_agencies.sql"),
        (2, "transfers", "migrations/0002_transfers.sql"),
        (
            3,
            "audit",
            "migrations/0003_audit.sqlite.sql",
            "migrations/0003_audit.postgres.sql"
        ),
        (4, "delivery", "migrations/0004_delivery.sql"),
        (5, "named_clocks", "migrations/0005_named_clocks.sql"),
        (6, "outbox_trace", "migrations/0006_outbox_trace.sql"),
    ]
);

/// Applies the shared and the router's migrations.
pub async fn migrate(store: &Store) -> Result<()> {
    SCHEMA.migrate(store).await?;
    Ok(())
}

/// How the router runs: its policy data and its workers.
#[derive(Clone)]
pub struct RouterOptions {
    /// Extra route files (the built-in routes are always loaded).
    pub routes_dir: Option<std::path::PathBuf>,
    /// Holiday calendar file (the built-in calendar otherwise).
    pub holidays_file: Option<std::path::PathBuf>,
    /// How often the timer looks for due clocks.
    pub timer_every: std::time::Duration,
    /// Delivery tuning.
    pub delivery: delivery::DeliveryConfig,
    /// Credential for push calls to agencies.
    pub push_token: delivery::TokenProvider,
}

impl std::fmt::Debug for RouterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterOptions")
            .field("routes_dir", &self.routes_dir)
            .field("holidays_file", &self.holidays_file)
            .finish_non_exhaustive()
    }
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            routes_dir: None,
            holidays_file: None,
            timer_every: std::time::Duration::from_secs(1),
            delivery: delivery::DeliveryConfig::default(),
            push_token: std::sync::Arc::new(|| None),
        }
    }
}

/// The router's gRPC services over one store.
#[derive(Clone)]
pub struct Router {
    /// The agency registry.
    pub agencies: Agencies,
    /// Transfers.
    pub transfers: transfers::Transfers,
    /// Route catalogue.
    pub routes: std::sync::Arc<routes::RouteCatalog>,
    /// Audit.
    pub audit: audit::Audit,
    /// Delivery.
    pub delivery: delivery::Delivery,
    /// Statistics.
    pub statistics: statistics::Statistics,
    timer_every: std::time::Duration,
    workers: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl delivery::OnDelivered for transfers::Transfers {
    async fn delivered(
        &self,
        tx: &mut fengqiao_store::Tx,
        envelope: &fengqiao_proto::inbox::Envelope,
    ) -> Result<()> {
        if envelope.kind == fengqiao_proto::inbox::MessageKind::TransferOffered as i32 {
            self.note_delivered_in(tx, &envelope.transfer, &envelope.to_agency)
                .await?;
        }
        Ok(())
    }

    fn committed(&self) {
        self.notify_watchers();
    }
}

impl Router {
    /// The router over a migrated `store`.
    pub fn new(store: Store, options: RouterOptions) -> Result<Self> {
        let catalog = routes::RouteCatalog::load(options.routes_dir.as_deref())
            .map_err(crate::error::config)?;
        let catalog = std::sync::Arc::new(catalog);
        let calendar = match &options.holidays_file {
            Some(p) => clock::HolidayCalendar::load(p).map_err(crate::error::config)?,
            None => clock::HolidayCalendar::builtin().clone(),
        };
        let transfers = transfers::Transfers::new(
            store.clone(),
            catalog.clone(),
            std::sync::Arc::new(calendar),
        );
        let delivery = delivery::Delivery::new(store.clone(), options.delivery, options.push_token)
            .with_on_delivered(std::sync::Arc::new(transfers.clone()))
            .with_group_commit(transfers.group_commit().clone());
        Ok(Self {
            agencies: Agencies::new(store.clone()),
            transfers,
            routes: catalog,
            statistics: statistics::Statistics::new(store.clone()),
            audit: audit::Audit::new(store),
            delivery,
            timer_every: options.timer_every,
            workers: std::sync::Arc::default(),
        })
    }

    /// Adds the router's services to a server; pull streams end on `shutdown`.
    pub fn add_to(
        &self,
        b: &mut ServerBuilder,
        max_message_bytes: usize,
        shutdown: fengqiao_kit::server::Shutdown,
    ) {
        let m = max_message_bytes;
        b.add(
            AgencyServiceServer::new(self.agencies.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        );
        b.add(
            route_service_server::RouteServiceServer::new(routes::Routes::new(self.routes.clone()))
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        );
        b.add(
            transfer_service_server::TransferServiceServer::new(self.transfers.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        );
        b.add(
            delivery_service_server::DeliveryServiceServer::new(self.delivery.api(shutdown))
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        );
        b.add(
            audit_service_server::AuditServiceServer::new(self.audit.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        );
        b.add(
            statistics_service_server::StatisticsServiceServer::new(self.statistics.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        );
    }

    /// Starts the timer and the push worker; both stop on `shutdown` (then wait for them with
    /// [`Router::workers_stopped`] before closing the store).
    pub fn start_workers(&self, shutdown: fengqiao_kit::server::Shutdown) {
        let timer = tokio::spawn(
            self.transfers
                .clone()
                .run_timer(shutdown.clone(), self.timer_every),
        );
        let poll = self.delivery.config().pull_poll;
        let push = tokio::spawn(self.delivery.clone().run_push_worker(shutdown, poll));
        if let Ok(mut w) = self.workers.lock() {
            w.extend([timer, push]);
        }
    }

    /// After the shutdown signal: waits (at most `limit`) until the timer, the push worker and
    /// every pull stream have ended and released their delivery leases. `false` if `limit`
    /// ran out first (the leases left then expire after their length).
    pub async fn workers_stopped(&self, limit: std::time::Duration) -> bool {
        let handles: Vec<_> = self
            .workers
            .lock()
            .map(|mut w| w.drain(..).collect())
            .unwrap_or_default();
        let all = async {
            for h in handles {
                let _ = h.await;
            }
            self.delivery.stopped().await;
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }
}
