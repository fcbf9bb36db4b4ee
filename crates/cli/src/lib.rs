//! Assembly of the Fengqiao suite: which services run in a process, on which stores, behind
//! which guard. Used by the `fengqiao` binary and by the test kit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fengqiao_kit::auth::{PublicKeyFile, SigningKey, Verifier};
use fengqiao_kit::config::Config;
use fengqiao_kit::metrics::Metrics;
use fengqiao_kit::server::{Guard, RunningServer, ServerBuilder, shutdown_pair};
use fengqiao_store::{Store, StoreConfig};

/// The sample district loaded by `fengqiao dev` (and usable as a seed file elsewhere).
pub const SAMPLE_AGENCIES: &str = include_str!("../../../deploy/dev/agencies.toml");

/// A service that can run in this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum ServiceName {
    /// The router (hub).
    Router,
    /// Police referral (警调对接).
    PoliceReferral,
    /// People's mediation (人民调解).
    Mediation,
    /// Court diversion (诉前调解 / 委派调解).
    CourtDiversion,
    /// Judicial confirmation (司法确认).
    JudicialConfirmation,
    /// Administrative dispute coordination (行政争议实质性化解).
    AdminDispute,
}

impl ServiceName {
    /// Every service.
    pub const ALL: [ServiceName; 6] = [
        ServiceName::Router,
        ServiceName::PoliceReferral,
        ServiceName::Mediation,
        ServiceName::CourtDiversion,
        ServiceName::JudicialConfirmation,
        ServiceName::AdminDispute,
    ];

    /// The name used in flags and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Router => "router",
            ServiceName::PoliceReferral => "police-referral",
            ServiceName::Mediation => "mediation",
            ServiceName::CourtDiversion => "court-diversion",
            ServiceName::JudicialConfirmation => "judicial-confirmation",
            ServiceName::AdminDispute => "admin-dispute",
        }
    }

    /// The gRPC path prefix of the service's package (`/fengqiao.mediation.v1.`).
    pub fn grpc_prefix(self) -> &'static str {
        match self {
            ServiceName::Router => "/fengqiao.router.v1.",
            ServiceName::PoliceReferral => "/fengqiao.policereferral.v1.",
            ServiceName::Mediation => "/fengqiao.mediation.v1.",
            ServiceName::CourtDiversion => "/fengqiao.courtdiversion.v1.",
            ServiceName::JudicialConfirmation => "/fengqiao.judicialconfirmation.v1.",
            ServiceName::AdminDispute => "/fengqiao.admindispute.v1.",
        }
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
    /// Seeding or migrating the router failed.
    #[error("router: {0}")]
    Router(String),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SuiteSpec {
    /// The configuration.
    pub config: Config,
    /// Services to run in this process.
    pub services: Vec<ServiceName>,
    /// Store URL per service.
    pub stores: BTreeMap<ServiceName, String>,
    /// Agency seed (TOML text) for the router, if any.
    pub agency_seed: Option<String>,
}

/// A running suite.
#[derive(Debug)]
pub struct Suite {
    /// The gRPC server.
    pub server: RunningServer,
    /// The admin HTTP address.
    pub admin_addr: std::net::SocketAddr,
    /// Metrics of this process.
    pub metrics: Metrics,
    stores: Vec<(ServiceName, Store)>,
    router: Option<fengqiao_router::Router>,
    pullers: Vec<tokio::task::JoinHandle<()>>,
    admin_trigger: fengqiao_kit::server::ShutdownTrigger,
}

/// Longest wait, on shutdown, for the router's workers and pull streams to release their
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

/// The router's options from the configuration: policy files, delivery timeout and leases
/// (`[delivery]`), and a push credential signed with the service key when one is configured.
pub fn router_options(config: &Config) -> Result<fengqiao_router::RouterOptions, SuiteError> {
    let mut o = fengqiao_router::RouterOptions {
        routes_dir: config.routes_dir.clone(),
        holidays_file: config.holidays_file.clone(),
        ..Default::default()
    };
    let d = &config.delivery;
    o.delivery.call_timeout = Duration::from_millis(d.push_timeout_ms);
    o.delivery.push_lease = Duration::from_millis(d.effective_push_lease_ms());
    o.delivery.pull_lease = Duration::from_millis(d.pull_lease_ms);
    if let Some(path) = &config.auth.service_key_file {
        let key = std::sync::Arc::new(SigningKey::load(path)?);
        let issuer = config.auth.issuer.clone();
        o.push_token = std::sync::Arc::new(move || {
            Some(key.sign(&fengqiao_kit::auth::claims(
                &issuer,
                ROUTER_PRINCIPAL,
                "router",
                &["router"],
                300,
            )))
        });
    }
    Ok(o)
}

pub use fengqiao_kit::inbox::ROUTER_PRINCIPAL;

/// The channel agency services use to call the router: `peers.router`, or the in-process
/// channel (`local`) when the router runs here.
fn router_channel(
    config: &Config,
    local: Option<&tonic::transport::Channel>,
) -> Result<tonic::transport::Channel, SuiteError> {
    let uri = match (&config.peers.router, local) {
        (Some(u), _) => u.clone(),
        (None, Some(local)) => return Ok(local.clone()),
        (None, None) => {
            return Err(SuiteError::Config(
                "peers.router (FENGQIAO_PEERS_ROUTER) is required when the router runs elsewhere"
                    .into(),
            ));
        }
    };
    fengqiao_kit::client::channel(&uri, None)
        .map_err(|e| SuiteError::Config(format!("peers.router: {e}")))
}

/// The agency seed of `spec`: its text, else the configured agencies file.
fn agency_seed(
    spec: &SuiteSpec,
) -> Result<Option<fengqiao_router::agencies::SeedFile>, SuiteError> {
    Ok(match (&spec.agency_seed, &spec.config.agencies_file) {
        (Some(text), _) => Some(
            toml::from_str::<fengqiao_router::agencies::SeedFile>(text)
                .map_err(|e| SuiteError::Router(format!("agency seed: {e}")))?,
        ),
        (None, Some(path)) => {
            Some(fengqiao_router::agencies::SeedFile::load(path).map_err(SuiteError::Router)?)
        }
        (None, None) => None,
    })
}

/// The sample rosters (特邀调解名册) of an agency seed: every court invites every mediation
/// committee of the seed, with the committee's actors holding the role `mediator` as its
/// invited mediators.
pub fn court_rosters(
    seed: &fengqiao_router::agencies::SeedFile,
) -> Vec<fengqiao_court_diversion::SeedRoster> {
    let organizations: Vec<fengqiao_court_diversion::SeedOrganization> = seed
        .agency
        .iter()
        .filter(|a| a.kind == "mediation_committee")
        .map(|a| fengqiao_court_diversion::SeedOrganization {
            id: a.id.clone(),
            display_name: a.display_name.clone(),
            agency: format!("agencies/{}", a.id),
            region_code: a.region_code.clone(),
            mediators: a
                .actor
                .iter()
                .filter(|x| x.roles.iter().any(|r| r == "mediator"))
                .map(|x| (x.id.clone(), x.title.clone(), x.id.clone()))
                .collect(),
        })
        .collect();
    seed.agency
        .iter()
        .filter(|a| a.kind == "court")
        .map(|a| fengqiao_court_diversion::SeedRoster {
            court: format!("agencies/{}", a.id),
            organizations: organizations.clone(),
        })
        .collect()
}

/// Migrates the court-diversion store and seeds the sample rosters idempotently (several
/// processes may start at once on one database).
async fn court_migrate_and_seed(
    store: &Store,
    seed: Option<&fengqiao_router::agencies::SeedFile>,
) -> Result<(), SuiteError> {
    let err = |source| SuiteError::Store {
        service: ServiceName::CourtDiversion.as_str(),
        source,
    };
    fengqiao_court_diversion::migrate(store)
        .await
        .map_err(err)?;
    if let Some(seed) = seed {
        let added = fengqiao_court_diversion::seed_rosters(store, &court_rosters(seed))
            .await
            .map_err(|e| SuiteError::Config(format!("court roster seed: {e}")))?;
        tracing::info!(added, "court roster seed loaded");
    }
    Ok(())
}

impl Suite {
    /// Opens the stores, starts serving (NOT_SERVING), migrates, seeds, then reports SERVING.
    pub async fn start(
        spec: SuiteSpec,
        listener: tokio::net::TcpListener,
        admin: tokio::net::TcpListener,
    ) -> Result<Suite, SuiteError> {
        let config = &spec.config;
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
        for &s in &spec.services {
            let url = spec
                .stores
                .get(&s)
                .ok_or_else(|| SuiteError::Config(format!("no database_url for {}", s.as_str())))?;
            let store = open_store(s, url).await?;
            // Refused calls to an agency service go to its access log (the router audits its
            // own refusals in its hash-chained audit log).
            if s != ServiceName::Router {
                guard.audit_denials(s.grpc_prefix(), store.clone(), s.as_str());
            }
            stores.push((s, store));
        }

        let max = config.limits.max_message_bytes;
        let mut builder = ServerBuilder::new();
        let (trigger, _) = shutdown_pair();
        // Co-located agency services reach the router in-process: the same services and guard,
        // no socket, and still there while the listener drains on SIGTERM.
        let local = if config.peers.router.is_none()
            && spec.services.contains(&ServiceName::Router)
            && spec.services.iter().any(|s| *s != ServiceName::Router)
        {
            let (channel, listener) = fengqiao_kit::client::in_process();
            builder.also_in_process(listener);
            Some(channel)
        } else {
            None
        };
        // The court's judicial confirmation service, built first: court diversion in the
        // same process hands pre-filing applications (诉前调确) over to it in-process.
        let mut confirmation = None;
        for (s, store) in &stores {
            if *s == ServiceName::JudicialConfirmation {
                // The court's inbox for `mediation-to-court-confirmation`; its acts are
                // reflected on the committee's transfers.
                let mut svc =
                    fengqiao_judicial_confirmation::JudicialConfirmation::new(store.clone())
                        .with_router(router_channel(config, local.as_ref())?);
                // With the service key it declines an offer its intake checks refuse.
                if let Some(path) = &config.auth.service_key_file {
                    svc = svc.with_signing_key(SigningKey::load(path)?, &config.auth.issuer);
                }
                confirmation = Some(svc);
            }
        }
        let mut inbox = fengqiao_kit::inbox::InboxDispatch::new();
        let mut router = None;
        let mut court = None;
        for (s, store) in &stores {
            match s {
                ServiceName::Router => {
                    let r = fengqiao_router::Router::new(store.clone(), router_options(config)?)
                        .map_err(|e| SuiteError::Router(e.to_string()))?;
                    r.add_to(&mut builder, max, trigger.subscribe());
                    metrics.register_group_commit("router", r.transfers.group_commit().clone());
                    fengqiao_router::metrics::register(&metrics, store.clone());
                    router = Some(r);
                }
                ServiceName::PoliceReferral => {
                    let svc = fengqiao_police_referral::PoliceReferral::new(
                        store.clone(),
                        router_channel(config, local.as_ref())?,
                    );
                    svc.add_to(&mut builder, max);
                    inbox
                        .add(svc.inbox_handler())
                        .map_err(|e| SuiteError::Config(e.to_string()))?;
                }
                ServiceName::Mediation => {
                    let mut svc = fengqiao_mediation::Mediation::new(
                        store.clone(),
                        router_channel(config, local.as_ref())?,
                    );
                    // With the service key it acknowledges the court's confirmation rulings.
                    if let Some(path) = &config.auth.service_key_file {
                        svc = svc.with_signing_key(SigningKey::load(path)?, &config.auth.issuer);
                    }
                    svc.add_to(&mut builder, max);
                    inbox
                        .add(svc.inbox_handler())
                        .map_err(|e| SuiteError::Config(e.to_string()))?;
                }
                ServiceName::CourtDiversion => {
                    let mut svc = fengqiao_court_diversion::CourtDiversion::new(
                        store.clone(),
                        router_channel(config, local.as_ref())?,
                    );
                    // With the service key it re-designates by itself after an acceptance
                    // timeout (在线调解规则 Art 12); without one the judge does.
                    if let Some(path) = &config.auth.service_key_file {
                        svc = svc.with_signing_key(SigningKey::load(path)?, &config.auth.issuer);
                    }
                    if let Some(jc) = &confirmation {
                        svc = svc.with_confirmation(jc.clone());
                    }
                    svc.add_to(&mut builder, max);
                    inbox
                        .add(svc.inbox_handler())
                        .map_err(|e| SuiteError::Config(e.to_string()))?;
                    court = Some(svc);
                }
                ServiceName::JudicialConfirmation => {
                    let Some(svc) = confirmation.as_ref() else {
                        continue;
                    };
                    svc.add_to(&mut builder, max);
                    inbox
                        .add(svc.inbox_handler())
                        .map_err(|e| SuiteError::Config(e.to_string()))?;
                }
                ServiceName::AdminDispute => {
                    // The centre's side of coordination-to-procuratorate (sender) and
                    // procuratorate-to-coordination (receiver).
                    let svc = fengqiao_admin_dispute::AdminDispute::new(
                        store.clone(),
                        router_channel(config, local.as_ref())?,
                    )
                    .with_procuratorate_review_months(
                        config.admin_dispute.procuratorate_review_months,
                    );
                    svc.add_to(&mut builder, max);
                    inbox
                        .add(svc.inbox_handler())
                        .map_err(|e| SuiteError::Config(e.to_string()))?;
                }
            }
        }
        if !config.inbox.pull_agencies.is_empty() && inbox.is_empty() {
            return Err(SuiteError::Config(
                "inbox.pull_agencies is set but no agency service runs in this process".into(),
            ));
        }
        // The pull workers hand envelopes to the same dispatcher as pushes.
        let pull_inbox = inbox.clone();
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
        // Pushes to agencies served here (seeded with endpoint `self`) go in-process too.
        if let (Some(r), Some(local)) = (&router, &local) {
            r.delivery
                .use_channel(&format!("http://{}", server.addr), local.clone());
        }

        let admin_addr = admin.local_addr()?;
        let (admin_trigger, admin_shutdown) = shutdown_pair();
        tokio::spawn(
            metrics
                .clone()
                .serve_admin(admin, async move { admin_shutdown.wait().await }),
        );

        for (s, store) in &stores {
            let r = match s {
                ServiceName::Router => fengqiao_router::migrate(store)
                    .await
                    .map_err(|e| SuiteError::Router(e.to_string())),
                ServiceName::PoliceReferral => fengqiao_police_referral::migrate(store)
                    .await
                    .map_err(|source| SuiteError::Store {
                        service: s.as_str(),
                        source,
                    }),
                ServiceName::Mediation => {
                    fengqiao_mediation::migrate(store)
                        .await
                        .map_err(|source| SuiteError::Store {
                            service: s.as_str(),
                            source,
                        })
                }
                ServiceName::CourtDiversion => {
                    court_migrate_and_seed(store, agency_seed(&spec)?.as_ref()).await
                }
                ServiceName::JudicialConfirmation => fengqiao_judicial_confirmation::migrate(store)
                    .await
                    .map_err(|source| SuiteError::Store {
                        service: s.as_str(),
                        source,
                    }),
                ServiceName::AdminDispute => {
                    fengqiao_admin_dispute::migrate(store)
                        .await
                        .map_err(|source| SuiteError::Store {
                            service: s.as_str(),
                            source,
                        })
                }
            };
            if let Err(e) = r {
                server.shutdown(Duration::from_secs(1)).await;
                return Err(e);
            }
            if *s == ServiceName::Router
                && let Some(seed) = agency_seed(&spec)?
            {
                let self_endpoint = format!("http://{}", server.addr);
                let added = fengqiao_router::Agencies::new(store.clone())
                    .seed(&seed, &self_endpoint)
                    .await
                    .map_err(|e| SuiteError::Router(format!("agency seed: {e}")))?;
                tracing::info!(added, "agency seed loaded");
            }
        }
        if let Some(r) = &router {
            r.start_workers(trigger.subscribe());
        }
        if let Some(c) = &court {
            let stop = trigger.subscribe();
            c.start_timer(async move { stop.wait().await });
        }
        if let Some(j) = &confirmation {
            // Marks overdue decision clocks (2011 rules Art 4–5) without waiting for a read.
            let stop = trigger.subscribe();
            j.start_timer(Duration::from_secs(30), async move { stop.wait().await });
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
            pullers = fengqiao_kit::pull::start(
                router_channel(config, local.as_ref())?,
                pull_inbox,
                &config.inbox.pull_agencies,
                credentials,
                trigger.subscribe(),
            );
        }
        server.health.set_all(true).await;
        metrics.set_ready(true);
        tracing::info!(addr = %server.addr, admin = %admin_addr, "serving");
        Ok(Suite {
            server,
            admin_addr,
            metrics,
            stores,
            router,
            pullers,
            admin_trigger,
        })
    }

    /// Graceful stop, in order: NOT_SERVING; stop accepting and drain in-flight calls within
    /// `grace` (co-located services' calls to the router go in-process, which stops only after
    /// that); the router's workers and pull streams release their delivery leases; then the
    /// stores close.
    pub async fn shutdown(self, grace: Duration) {
        self.metrics.set_ready(false);
        self.server.shutdown(grace).await;
        for p in self.pullers {
            if tokio::time::timeout(WORKERS_STOP_LIMIT, p).await.is_err() {
                tracing::warn!("a pull worker did not stop in time");
            }
        }
        if let Some(r) = &self.router
            && !r.workers_stopped(WORKERS_STOP_LIMIT).await
        {
            tracing::warn!("delivery workers did not stop in time; their leases will expire");
        }
        for (_, store) in &self.stores {
            store.close().await;
        }
        self.admin_trigger.trigger();
        tracing::info!("stopped");
    }
}
