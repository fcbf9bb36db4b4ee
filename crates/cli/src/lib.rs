//! Assembly of the Fengqiao suite: which services run in a process, on which stores, behind
//! which guard. Used by the `fengqiao` binary and by the test kit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fengqiao_kit::auth::{PublicKeyFile, SigningKey, Verifier};
use fengqiao_kit::config::Config;
use fengqiao_kit::metrics::Metrics;
use fengqiao_kit::module::{
    BuildCtx, Extensions, Instance, Module, ModuleError, SeedCtx, SeedSource, ServingCtx,
};
use fengqiao_kit::server::{Guard, RunningServer, ServerBuilder, shutdown_pair};
use fengqiao_store::{Store, StoreConfig};

/// The sample district loaded by `fengqiao dev` (and usable as a seed file elsewhere).
pub const SAMPLE_AGENCIES: &str = include_str!("../../../deploy/dev/agencies.toml");

/// The service registry: every service this binary can run, one line per service, in start
/// order (a module may use what modules before it published in the build extensions: judicial
/// confirmation comes before court diversion, which hands pre-filing applications to it).
/// Adding a service: its crate (with its `MODULE`), one line here, one kustomize component
/// (`k8s/components/<name>/`, listed in `k8s/base/kustomization.yaml`).
pub static REGISTRY: &[Module] = &[
    &fengqiao_router::MODULE,
    &fengqiao_police_referral::MODULE,
    &fengqiao_mediation::MODULE,
    &fengqiao_judicial_confirmation::MODULE,
    &fengqiao_court_diversion::MODULE,
    &fengqiao_admin_dispute::MODULE,
];

/// The name of a service: a name of a [`fengqiao_kit::module::ServiceModule`] (`router`, `police-referral`, …),
/// as in flags, file names and store URLs. Parsed from the [`REGISTRY`] (`"mediation".parse()`);
/// a module outside it (a test's) names itself with [`ServiceName::of`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(&'static str);

/// Short names of the registry's services (for tests and tools; a new service needs none).
#[allow(non_upper_case_globals)]
impl ServiceName {
    /// The router (hub).
    pub const Router: ServiceName = ServiceName(fengqiao_router::module::NAME);
    /// Police referral (警调对接).
    pub const PoliceReferral: ServiceName = ServiceName(fengqiao_police_referral::module::NAME);
    /// People's mediation (人民调解).
    pub const Mediation: ServiceName = ServiceName(fengqiao_mediation::module::NAME);
    /// Court diversion (诉前调解 / 委派调解).
    pub const CourtDiversion: ServiceName = ServiceName(fengqiao_court_diversion::module::NAME);
    /// Judicial confirmation (司法确认).
    pub const JudicialConfirmation: ServiceName =
        ServiceName(fengqiao_judicial_confirmation::module::NAME);
    /// Administrative dispute coordination (行政争议实质性化解).
    pub const AdminDispute: ServiceName = ServiceName(fengqiao_admin_dispute::module::NAME);
}

impl ServiceName {
    /// Every service of the registry, in registry order.
    pub fn all() -> Vec<ServiceName> {
        REGISTRY.iter().map(|m| ServiceName::of(*m)).collect()
    }

    /// The name of `module` (also one outside the registry).
    pub fn of(module: Module) -> ServiceName {
        ServiceName(module.name())
    }

    /// The name used in flags and file names.
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The registry's module of this name.
    pub fn module(self) -> Option<Module> {
        REGISTRY.iter().copied().find(|m| m.name() == self.0)
    }

    /// The gRPC path prefix of the service's package (`/fengqiao.mediation.v1.`), for the
    /// registry's services.
    pub fn grpc_prefix(self) -> Option<&'static str> {
        self.module().map(|m| m.grpc_prefix())
    }
}

impl std::fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceName({})", self.0)
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A name not in the [`REGISTRY`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service {name:?}; the services are: {}", ServiceName::all().iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))]
pub struct UnknownService {
    /// The name given.
    pub name: String,
}

impl std::str::FromStr for ServiceName {
    type Err = UnknownService;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        REGISTRY
            .iter()
            .find(|m| m.name() == s)
            .map(|m| ServiceName::of(*m))
            .ok_or_else(|| UnknownService {
                name: s.to_string(),
            })
    }
}

/// Errors starting the suite.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// Configuration is incomplete or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A store could not be opened or migrated.
    #[error("store of {service}: {source}")]
    Store {
        /// The service.
        service: &'static str,
        /// The cause.
        source: fengqiao_store::Error,
    },
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] fengqiao_kit::auth::KeyError),
    /// The server could not start.
    #[error(transparent)]
    Serve(#[from] fengqiao_kit::server::ServeError),
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A service module refused to build, migrate or seed.
    #[error(transparent)]
    Module(#[from] ModuleError),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SuiteSpec {
    /// The configuration.
    pub config: Config,
    /// Services to run in this process: names of the [`REGISTRY`] or of `extra_modules`.
    pub services: Vec<ServiceName>,
    /// Store URL per service.
    pub stores: BTreeMap<ServiceName, String>,
    /// Agency seed (TOML text) for the router, if any.
    pub agency_seed: Option<String>,
    /// Modules outside the registry (a test's own service), started after the registry's.
    pub extra_modules: Vec<Module>,
}

/// A running suite.
pub struct Suite {
    /// The gRPC server.
    pub server: RunningServer,
    /// The admin HTTP address.
    pub admin_addr: std::net::SocketAddr,
    /// Metrics of this process.
    pub metrics: Metrics,
    stores: Vec<(ServiceName, Store)>,
    instances: Vec<(ServiceName, Box<dyn Instance>)>,
    pullers: Vec<tokio::task::JoinHandle<()>>,
    admin_trigger: fengqiao_kit::server::ShutdownTrigger,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("server", &self.server)
            .field("admin_addr", &self.admin_addr)
            .field(
                "services",
                &self.stores.iter().map(|s| s.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Longest wait, on shutdown, for the services' workers and pull streams to release their
/// delivery leases before the stores close.
const WORKERS_STOP_LIMIT: Duration = Duration::from_secs(5);

/// The verifier for `config` (its public keys file; none configured means no token verifies).
pub fn verifier(config: &Config) -> Result<Verifier, SuiteError> {
    let keys = match &config.auth.public_keys_file {
        Some(p) => PublicKeyFile::load(p)?,
        None => PublicKeyFile::default(),
    };
    Ok(Verifier::new(config.auth.issuer.clone(), &keys)?)
}

/// Files of the dev signing key and its public half under `data_dir`.
pub fn dev_key_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (
        data_dir.join("dev-signing-key.json"),
        data_dir.join("dev-public-keys.json"),
    )
}

/// Loads the dev signing key under `data_dir`, generating it (and its public key file) on
/// first use.
pub fn ensure_dev_key(data_dir: &Path) -> Result<SigningKey, SuiteError> {
    std::fs::create_dir_all(data_dir)?;
    let (private, public) = dev_key_paths(data_dir);
    let key = if private.exists() {
        SigningKey::load(&private)?
    } else {
        let k = SigningKey::generate("dev-1")?;
        k.save(&private)?;
        k
    };
    PublicKeyFile {
        keys: vec![key.public_entry()],
    }
    .save(&public)?;
    Ok(key)
}

async fn open_store(service: ServiceName, url: &str) -> Result<Store, SuiteError> {
    let store = Store::connect(StoreConfig::new(url))
        .await
        .map_err(|source| SuiteError::Store {
            service: service.as_str(),
            source,
        })?;
    Ok(store)
}

/// The router's options from the configuration (see [`fengqiao_router::module::options`]).
pub fn router_options(config: &Config) -> Result<fengqiao_router::RouterOptions, SuiteError> {
    Ok(fengqiao_router::module::options(config)?)
}

pub use fengqiao_kit::inbox::ROUTER_PRINCIPAL;

/// The modules of `spec.services`, in registry order, then `spec.extra_modules` in theirs.
fn modules_of(spec: &SuiteSpec) -> Result<Vec<(ServiceName, Module)>, SuiteError> {
    let known = || REGISTRY.iter().chain(spec.extra_modules.iter()).copied();
    for s in &spec.services {
        if !known().any(|m| m.name() == s.as_str()) {
            return Err(SuiteError::Config(
                UnknownService {
                    name: s.as_str().to_string(),
                }
                .to_string(),
            ));
        }
    }
    let mut out: Vec<(ServiceName, Module)> = Vec::new();
    for m in known() {
        let name = ServiceName::of(m);
        if spec.services.contains(&name) && !out.iter().any(|(n, _)| *n == name) {
            out.push((name, m));
        }
    }
    Ok(out)
}

impl Suite {
    /// Opens the stores, starts serving (NOT_SERVING), migrates, seeds, then reports SERVING.
    /// Every step goes through the services' modules, in registry order (see
    /// [`fengqiao_kit::module`]).
    pub async fn start(
        spec: SuiteSpec,
        listener: tokio::net::TcpListener,
        admin: tokio::net::TcpListener,
    ) -> Result<Suite, SuiteError> {
        let config = &spec.config;
        let modules = modules_of(&spec)?;
        let metrics = Metrics::new();
        let guard = Guard::new(
            verifier(config)?,
            metrics.clone(),
            config.limits.clone(),
            config.tls.peer_agencies.clone(),
        );
        let tls = match (&config.tls.cert_file, &config.tls.key_file) {
            (Some(c), Some(k)) => Some(fengqiao_kit::server::tls_config(
                c,
                k,
                config.tls.client_ca_file.as_deref(),
            )?),
            _ => None,
        };

        let mut stores = Vec::new();
        for &(s, m) in &modules {
            let url = spec
                .stores
                .get(&s)
                .ok_or_else(|| SuiteError::Config(format!("no database_url for {}", s.as_str())))?;
            let store = open_store(s, url).await?;
            // Refused calls to an agency service go to its access log (the router audits its
            // own refusals in its hash-chained audit log).
            if !m.hub() {
                guard.audit_denials(m.grpc_prefix(), store.clone(), m.name());
            }
            stores.push((s, store));
        }

        let mut builder = ServerBuilder::new();
        let (trigger, _) = shutdown_pair();
        // Co-located agency services reach the router in-process: the same services and guard,
        // no socket, and still there while the listener drains on SIGTERM.
        let local = if config.peers.router.is_none()
            && modules.iter().any(|(_, m)| m.hub())
            && modules.iter().any(|(_, m)| !m.hub())
        {
            let (channel, listener) = fengqiao_kit::client::in_process();
            builder.also_in_process(listener);
            Some(channel)
        } else {
            None
        };
        let mut inbox = fengqiao_kit::inbox::InboxDispatch::new();
        let mut extensions = Extensions::default();
        let mut instances = Vec::new();
        for (&(s, m), (_, store)) in modules.iter().zip(&stores) {
            let mut ctx = BuildCtx {
                store,
                config,
                metrics: &metrics,
                builder: &mut builder,
                inbox: &mut inbox,
                extensions: &mut extensions,
                local_router: local.as_ref(),
                shutdown: &trigger,
                service: m.name(),
            };
            instances.push((s, m.build(&mut ctx)?));
        }
        if !config.inbox.pull_agencies.is_empty() && inbox.is_empty() {
            return Err(SuiteError::Config(
                "inbox.pull_agencies is set but no agency service runs in this process".into(),
            ));
        }
        // The pull workers hand envelopes to the same dispatcher as pushes.
        let pull_inbox = inbox.clone();
        let max = config.limits.max_message_bytes;
        if !inbox.is_empty() {
            builder.add(
                fengqiao_proto::inbox::agency_inbox_service_server::AgencyInboxServiceServer::new(
                    inbox,
                )
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            );
        }
        builder.cors_allowed_origins(config.http.cors_allowed_origins.clone());
        let server = builder.serve(listener, guard, tls, trigger.clone()).await?;
        let serving = ServingCtx {
            addr: server.addr,
            local: local.as_ref(),
        };
        for (_, i) in &instances {
            i.on_serving(&serving);
        }

        let admin_addr = admin.local_addr()?;
        let (admin_trigger, admin_shutdown) = shutdown_pair();
        tokio::spawn(
            metrics
                .clone()
                .serve_admin(admin, async move { admin_shutdown.wait().await }),
        );

        let seed = match (&spec.agency_seed, &config.agencies_file) {
            (Some(text), _) => SeedSource::Text(text.clone()),
            (None, Some(path)) => SeedSource::File(path.clone()),
            (None, None) => SeedSource::None,
        };
        for (&(_, m), (_, store)) in modules.iter().zip(&stores) {
            let ctx = SeedCtx {
                store,
                config,
                addr: server.addr,
                seed: &seed,
            };
            let r = match m.migrate(store).await {
                Ok(()) => m.seed(&ctx).await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                server.shutdown(Duration::from_secs(1)).await;
                return Err(e.into());
            }
        }
        for (_, i) in &instances {
            i.start(trigger.subscribe());
        }
        let mut pullers = Vec::new();
        if !config.inbox.pull_agencies.is_empty() {
            // Agencies on a network the router cannot call (DESIGN.md §1): pull their messages.
            let key_file = config.auth.service_key_file.as_ref().ok_or_else(|| {
                SuiteError::Config("inbox.pull_agencies needs auth.service_key_file".into())
            })?;
            let credentials = fengqiao_kit::pull::PullCredentials::new(
                SigningKey::load(key_file)?,
                &config.auth.issuer,
            );
            let router = fengqiao_kit::module::router_channel(config, local.as_ref())?;
            pullers = fengqiao_kit::pull::start(
                router,
                pull_inbox,
                &config.inbox.pull_agencies,
                credentials,
                trigger.subscribe(),
            );
        }
        fengqiao_kit::memory::spawn_release(
            Duration::from_millis(config.limits.memory_release_ms),
            &metrics,
            trigger.subscribe(),
        );
        server.health.set_all(true).await;
        metrics.set_ready(true);
        tracing::info!(addr = %server.addr, admin = %admin_addr, "serving");
        Ok(Suite {
            server,
            admin_addr,
            metrics,
            stores,
            instances,
            pullers,
            admin_trigger,
        })
    }

    /// Graceful stop, in order: NOT_SERVING; stop accepting and drain in-flight calls within
    /// `grace` (co-located services' calls to the router go in-process, which stops only after
    /// that); the services' workers (the router's delivery workers) and pull streams release
    /// their delivery leases; then the stores close.
    pub async fn shutdown(self, grace: Duration) {
        self.metrics.set_ready(false);
        self.server.shutdown(grace).await;
        for p in self.pullers {
            if tokio::time::timeout(WORKERS_STOP_LIMIT, p).await.is_err() {
                tracing::warn!("a pull worker did not stop in time");
            }
        }
        for (name, i) in &self.instances {
            if !i.stopped(WORKERS_STOP_LIMIT).await {
                tracing::warn!(
                    service = name.as_str(),
                    "workers did not stop in time; their delivery leases will expire"
                );
            }
        }
        for (_, store) in &self.stores {
            store.close().await;
        }
        self.admin_trigger.trigger();
        tracing::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_parse_back() {
        let names = ServiceName::all();
        assert_eq!(names.len(), REGISTRY.len());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(n.as_str().parse::<ServiceName>(), Ok(*n));
            assert!(!names[..i].contains(n), "{n} twice in the registry");
            assert!(n.grpc_prefix().is_some_and(|p| p.starts_with("/fengqiao.")));
        }
        let prefixes: std::collections::BTreeSet<_> =
            REGISTRY.iter().map(|m| m.grpc_prefix()).collect();
        assert_eq!(prefixes.len(), REGISTRY.len());
        assert_eq!(REGISTRY.iter().filter(|m| m.hub()).count(), 1);
    }

    #[test]
    fn the_short_names_are_registry_names() {
        for n in [
            ServiceName::Router,
            ServiceName::PoliceReferral,
            ServiceName::Mediation,
            ServiceName::CourtDiversion,
            ServiceName::JudicialConfirmation,
            ServiceName::AdminDispute,
        ] {
            assert!(n.module().is_some(), "{n} is not in the registry");
        }
    }

    #[test]
    fn an_unknown_name_is_refused_naming_the_valid_ones() {
        let e = "notary"
            .parse::<ServiceName>()
            .expect_err("not a service")
            .to_string();
        assert!(e.contains("\"notary\""), "{e}");
        for n in ServiceName::all() {
            assert!(e.contains(n.as_str()), "{e} does not list {n}");
        }
    }
}
