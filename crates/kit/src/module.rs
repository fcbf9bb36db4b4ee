//! What a service crate gives the binary so that it can be started: one [`ServiceModule`]
//! value per crate, listed once in the `fengqiao` binary's registry.
//!
//! The binary (`fengqiao dev`, `fengqiao serve --service`), the test kit and the bench start
//! services only through this trait, in registry order:
//!
//! 1. every module's store is opened; refused calls to a non-[hub](ServiceModule::hub)
//!    service go to its access log;
//! 2. [`ServiceModule::build`] in registry order, with a [`BuildCtx`]: the module constructs
//!    its service, adds its gRPC services to the [`ServerBuilder`], registers its inbox
//!    handler, may publish a value into the [`Extensions`] for modules later in the registry
//!    (court diversion takes judicial confirmation's service from there) and returns its
//!    [`Instance`];
//! 3. the server starts listening (NOT_SERVING); [`Instance::on_serving`];
//! 4. per module, in registry order: [`ServiceModule::migrate`], then
//!    [`ServiceModule::seed`] (the router's agency seed, the court rosters);
//! 5. [`Instance::start`] (workers and timers, ending on the shutdown signal), then SERVING;
//! 6. on shutdown, after the listener drained: [`Instance::stopped`], then the stores close.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fengqiao_store::Store;
use serde::Deserialize;
use tonic::transport::Channel;

use crate::auth::{KeyError, SigningKey};
use crate::config::Config;
use crate::inbox::{InboxDispatch, InboxHandler};
use crate::metrics::Metrics;
use crate::records::Schema;
use crate::server::{ServerBuilder, Shutdown, ShutdownTrigger};

/// A registry entry: a service module with a `'static` lifetime (a `static` or a leaked
/// value).
pub type Module = &'static dyn ServiceModule;

/// Errors of a module starting.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Configuration is incomplete or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The store could not be migrated or seeded.
    #[error("store of {service}: {source}")]
    Store {
        /// The service.
        service: &'static str,
        /// The cause.
        source: fengqiao_store::Error,
    },
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Anything else the service refused, named by the service.
    #[error("{service}: {message}")]
    Service {
        /// The service.
        service: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// One service of the suite, as the binary starts it. Implemented once per service crate;
/// nothing outside that crate needs to know the service's types.
#[tonic::async_trait]
pub trait ServiceModule: Send + Sync + 'static {
    /// The name in flags, file names and store URLs (`police-referral`).
    fn name(&self) -> &'static str;

    /// The gRPC path prefix of the service's package (`/fengqiao.policereferral.v1.`).
    fn grpc_prefix(&self) -> &'static str;

    /// Whether this is the hub (the router) that agency services call. Refused calls to an
    /// agency service go to its access log; the hub audits its own. Co-located agency services
    /// reach the hub in-process.
    fn hub(&self) -> bool {
        false
    }

    /// Applies the service's migrations to its store.
    async fn migrate(&self, store: &Store) -> Result<(), ModuleError>;

    /// Seeds the freshly migrated store (idempotently: several processes may start at once on
    /// one database). Default: nothing.
    async fn seed(&self, _ctx: &SeedCtx<'_>) -> Result<(), ModuleError> {
        Ok(())
    }

    /// Constructs the service and registers what it serves and receives.
    fn build(&self, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError>;
}

impl std::fmt::Debug for dyn ServiceModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceModule({})", self.name())
    }
}

/// What an agency service's [`AgencyModule::build`] is: it constructs the service, adds its
/// gRPC services and inbox handler and returns its [`Instance`].
pub type BuildFn = fn(&mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError>;

/// The future of an agency service's seed ([`AgencyModule::with_seed`]).
pub type SeedFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ModuleError>> + Send + 'a>>;

/// What an agency service's seed is: `fn seed(ctx: &SeedCtx<'_>) -> SeedFuture<'_>`.
pub type SeedFn = for<'a> fn(&'a SeedCtx<'_>) -> SeedFuture<'a>;

/// The registry entry of an agency service (every service but the hub): its name, its gRPC
/// package, its [`Schema`] (applied after the shared migrations), how it is built and,
/// optionally, how its store is seeded. A service crate declares only these:
///
/// ```ignore
/// pub static MODULE: AgencyModule =
///     AgencyModule::new(NAME, "/fengqiao.mediation.v1.", crate::SCHEMA, build);
/// ```
pub struct AgencyModule {
    name: &'static str,
    grpc_prefix: &'static str,
    schema: Schema,
    build: BuildFn,
    seed: Option<SeedFn>,
}

impl AgencyModule {
    /// An agency service's entry, without a seed.
    pub const fn new(
        name: &'static str,
        grpc_prefix: &'static str,
        schema: Schema,
        build: BuildFn,
    ) -> Self {
        Self {
            name,
            grpc_prefix,
            schema,
            build,
            seed: None,
        }
    }

    /// With `seed` run on the freshly migrated store ([`ServiceModule::seed`]).
    pub const fn with_seed(self, seed: SeedFn) -> Self {
        Self {
            seed: Some(seed),
            ..self
        }
    }

    /// The service's schema.
    pub fn schema(&self) -> Schema {
        self.schema
    }
}

impl std::fmt::Debug for AgencyModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgencyModule")
            .field("name", &self.name)
            .field("grpc_prefix", &self.grpc_prefix)
            .field("schema", &self.schema.service)
            .field("seed", &self.seed.is_some())
            .finish()
    }
}

#[tonic::async_trait]
impl ServiceModule for AgencyModule {
    fn name(&self) -> &'static str {
        self.name
    }

    fn grpc_prefix(&self) -> &'static str {
        self.grpc_prefix
    }

    async fn migrate(&self, store: &Store) -> Result<(), ModuleError> {
        self.schema
            .migrate(store)
            .await
            .map_err(|source| ModuleError::Store {
                service: self.name,
                source,
            })
    }

    async fn seed(&self, ctx: &SeedCtx<'_>) -> Result<(), ModuleError> {
        match self.seed {
            Some(seed) => seed(ctx).await,
            None => Ok(()),
        }
    }

    fn build(&self, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
        (self.build)(ctx)
    }
}

/// A built service's hooks after the server listens. Every method has a no-op default.
#[tonic::async_trait]
pub trait Instance: Send + Sync {
    /// The server listens on `ctx.addr` (health NOT_SERVING, stores not migrated yet).
    fn on_serving(&self, _ctx: &ServingCtx<'_>) {}

    /// Starts background workers and timers; they end when `shutdown` fires.
    fn start(&self, _shutdown: Shutdown) {}

    /// After the shutdown signal and the listener's drain: waits at most `limit` for the
    /// workers to end. `false` if `limit` ran out first.
    async fn stopped(&self, _limit: Duration) -> bool {
        true
    }
}

/// An [`Instance`] without workers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passive;

impl Instance for Passive {}

/// Values modules publish for modules later in the registry, one per type.
#[derive(Default)]
pub struct Extensions {
    map: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("values", &self.map.len())
            .finish()
    }
}

impl Extensions {
    /// Publishes `value`, replacing an earlier one of its type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.map.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// The published value of type `T`, if an earlier module published one.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<T>())
    }
}

/// What [`ServiceModule::build`] gets.
#[derive(Debug)]
pub struct BuildCtx<'a> {
    /// The service's own store (not migrated yet).
    pub store: &'a Store,
    /// The configuration of the process.
    pub config: &'a Config,
    /// Metrics of the process.
    pub metrics: &'a Metrics,
    /// The server to add gRPC services to.
    pub builder: &'a mut ServerBuilder,
    /// The process's inbox dispatcher to register handlers with.
    pub inbox: &'a mut InboxDispatch,
    /// Values published by modules earlier in the registry.
    pub extensions: &'a mut Extensions,
    /// The in-process channel to the hub when it runs in this process and `peers.router` is
    /// not set.
    pub local_router: Option<&'a Channel>,
    /// The process's shutdown trigger.
    pub shutdown: &'a ShutdownTrigger,
    /// The service's name.
    pub service: &'static str,
}

impl BuildCtx<'_> {
    /// The largest gRPC message, both ways (`limits.max_message_bytes`).
    pub fn max_message_bytes(&self) -> usize {
        self.config.limits.max_message_bytes
    }

    /// The channel agency services call the router on: `peers.router`, or the in-process
    /// channel when the router runs here.
    pub fn router_channel(&self) -> Result<Channel, ModuleError> {
        router_channel(self.config, self.local_router)
    }

    /// The service signing key (`auth.service_key_file`), when one is configured.
    pub fn signing_key(&self) -> Result<Option<SigningKey>, ModuleError> {
        match &self.config.auth.service_key_file {
            Some(path) => Ok(Some(SigningKey::load(path)?)),
            None => Ok(None),
        }
    }

    /// A shutdown signal for what the service starts while being built (e.g. pull streams).
    pub fn shutdown_signal(&self) -> Shutdown {
        self.shutdown.subscribe()
    }

    /// Registers the service's inbox handler.
    pub fn add_inbox(&mut self, handler: Arc<dyn InboxHandler>) -> Result<(), ModuleError> {
        self.inbox
            .add(handler)
            .map_err(|e| ModuleError::Config(e.to_string()))
    }
}

/// The channel to call the router on: `peers.router`, or `local` (the in-process channel)
/// when the router runs here.
pub fn router_channel(config: &Config, local: Option<&Channel>) -> Result<Channel, ModuleError> {
    let uri = match (&config.peers.router, local) {
        (Some(u), _) => u.clone(),
        (None, Some(local)) => return Ok(local.clone()),
        (None, None) => {
            return Err(ModuleError::Config(
                "peers.router (FENGQIAO_PEERS_ROUTER) is required when the router runs elsewhere"
                    .into(),
            ));
        }
    };
    crate::client::channel(&uri, None)
        .map_err(|e| ModuleError::Config(format!("peers.router: {e}")))
}

/// What [`Instance::on_serving`] gets.
#[derive(Debug)]
pub struct ServingCtx<'a> {
    /// The address the server listens on.
    pub addr: SocketAddr,
    /// The in-process channel to this process's server, when agency services and the hub
    /// share the process.
    pub local: Option<&'a Channel>,
}

/// Where the agency seed comes from: TOML text given to the suite, or a file.
#[derive(Debug, Clone)]
pub enum SeedSource {
    /// No seed.
    None,
    /// TOML text.
    Text(String),
    /// A file (`agencies_file`).
    File(std::path::PathBuf),
}

/// What [`ServiceModule::seed`] gets.
#[derive(Debug)]
pub struct SeedCtx<'a> {
    /// The service's own (migrated) store.
    pub store: &'a Store,
    /// The configuration of the process.
    pub config: &'a Config,
    /// The address the server listens on (the endpoint of agencies seeded with `self`).
    pub addr: SocketAddr,
    /// The agency seed.
    pub seed: &'a SeedSource,
}

impl SeedCtx<'_> {
    /// The agency seed's TOML text, if any; a file is read now. Errors say where it came from.
    pub fn seed_text(&self) -> Result<Option<String>, String> {
        match self.seed {
            SeedSource::None => Ok(None),
            SeedSource::Text(t) => Ok(Some(t.clone())),
            SeedSource::File(p) => std::fs::read_to_string(p)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
        }
    }

    /// The agency seed in the shape every service reads (unknown keys ignored: the router's
    /// own reading of the same file is the strict one).
    pub fn agency_seed(&self) -> Result<Option<AgencySeed>, String> {
        let Some(text) = self.seed_text()? else {
            return Ok(None);
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| format!("agency seed: {e}"))
    }
}

/// The parts of the agency seed (the router's `agencies.toml`) services other than the
/// router read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgencySeed {
    /// The agencies.
    #[serde(default)]
    pub agency: Vec<SeedAgency>,
}

/// One agency of the seed.
#[derive(Debug, Clone, Deserialize)]
pub struct SeedAgency {
    /// Resource id (`agencies/{id}`).
    pub id: String,
    /// Kind keyword (`court`, `mediation_committee`, …).
    pub kind: String,
    /// Display name.
    pub display_name: String,
    /// GB/T 2260 region code.
    pub region_code: String,
    /// Sample actors.
    #[serde(default)]
    pub actor: Vec<SeedActor>,
}

/// A sample actor of a seed agency.
#[derive(Debug, Clone, Deserialize)]
pub struct SeedActor {
    /// Actor id.
    pub id: String,
    /// Description (the post held), never personal information.
    #[serde(default)]
    pub title: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_hold_one_value_per_type() {
        let mut e = Extensions::default();
        assert!(e.get::<u32>().is_none());
        e.insert(7u32);
        e.insert(String::from("x"));
        assert_eq!(e.get::<u32>(), Some(&7));
        e.insert(8u32);
        assert_eq!(e.get::<u32>(), Some(&8));
        assert_eq!(e.get::<String>().map(String::as_str), Some("x"));
    }

    const SCHEMA: Schema = crate::schema!("kit_module", [(1, "a", "testdata/0001_kit_schema.sql")]);

    fn build(_ctx: &mut BuildCtx<'_>) -> Result<Box<dyn Instance>, ModuleError> {
        Ok(Box::new(Passive))
    }

    fn refuse<'a>(ctx: &'a SeedCtx<'_>) -> SeedFuture<'a> {
        Box::pin(async move { Err(ModuleError::Config(format!("seeded at {}", ctx.addr))) })
    }

    static PLAIN: AgencyModule = AgencyModule::new("kit-plain", "/kit.plain.v1.", SCHEMA, build);
    static SEEDED: AgencyModule =
        AgencyModule::new("kit-seeded", "/kit.seeded.v1.", SCHEMA, build).with_seed(refuse);

    #[test]
    fn agency_modules_name_themselves_and_are_not_the_hub() {
        let m: Module = &PLAIN;
        assert_eq!(m.name(), "kit-plain");
        assert_eq!(m.grpc_prefix(), "/kit.plain.v1.");
        assert!(!m.hub());
        assert_eq!(PLAIN.schema().service, "kit_module");
        assert_eq!(format!("{m:?}"), "ServiceModule(kit-plain)");
    }

    async fn seed_of(m: Module, store: &Store) -> Result<(), ModuleError> {
        let config = Config::default();
        let ctx = SeedCtx {
            store,
            config: &config,
            addr: "127.0.0.1:9".parse().expect("addr"),
            seed: &SeedSource::None,
        };
        m.seed(&ctx).await
    }

    fengqiao_store::both_backends!(
        agency_modules_migrate_their_schema_and_run_their_seed,
        |store: Store| async move {
            let plain: Module = &PLAIN;
            plain.migrate(&store).await.expect("migrate");
            let mut tx = store.write().await?;
            let own: i64 = fengqiao_store::sqlx::Row::try_get(
                &fengqiao_store::sqlx::query(
                    "SELECT COUNT(*) AS n FROM schema_migrations WHERE service = 'kit_module'",
                )
                .fetch_one(&mut *tx)
                .await?,
                "n",
            )?;
            assert_eq!(own, 1);
            drop(tx);
            let seeded: Module = &SEEDED;
            let plain_seed = seed_of(&PLAIN, &store).await;
            let seeded_seed = seed_of(seeded, &store).await;
            assert!(plain_seed.is_ok(), "{plain_seed:?}");
            assert!(
                matches!(&seeded_seed, Err(ModuleError::Config(m)) if m == "seeded at 127.0.0.1:9"),
                "{seeded_seed:?}"
            );
            assert_eq!(seeded.name(), "kit-seeded");
            Ok::<(), fengqiao_store::Error>(())
        }
    );

    #[test]
    fn agency_seed_reads_the_sample_district_leniently() {
        let text = include_str!("../../../deploy/dev/agencies.toml");
        let seed: AgencySeed = toml::from_str(text).expect("sample seed");
        assert!(seed.agency.iter().any(|a| a.kind == "court"));
        assert!(
            seed.agency
                .iter()
                .flat_map(|a| &a.actor)
                .any(|x| x.roles.iter().any(|r| r == "mediator"))
        );
    }
}
