//! Configuration: defaults, then an optional TOML file, then environment (`FENGQIAO_*`), then
//! flags. `--dump-config` prints the effective result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("config file {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A value is out of range or inconsistent.
    #[error("configuration key {key}: {detail}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (production).
    #[default]
    Json,
    /// Human-readable text.
    Text,
}

/// Authentication settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Expected token issuer (`iss`).
    pub issuer: String,
    /// JSON file of trusted public keys (`{ "keys": [ { "kid", "alg", "public_key_b64" } ] }`).
    pub public_keys_file: Option<PathBuf>,
    /// This service's own signing key (written by `fengqiao keygen`-style tooling or the dev
    /// suite), used to sign its calls to other services (e.g. the router's push delivery).
    /// Unset: such calls carry no token and rely on mutual TLS.
    pub service_key_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "fengqiao".into(),
            public_keys_file: None,
            service_key_file: None,
        }
    }
}

/// Mutual TLS settings (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of this server.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of this server.
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle that client certificates must chain to; enables mutual TLS.
    pub client_ca_file: Option<PathBuf>,
    /// Client certificates mapped to agencies: SHA-256 of the leaf certificate (hex) → agency
    /// resource name. A mapped peer without a token acts as `service:<agency>`.
    pub peer_agencies: std::collections::BTreeMap<String, String>,
}

/// Protections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Default deadline of a unary call, when the client sets none or a longer one.
    pub request_timeout_ms: u64,
    /// Largest accepted or sent message.
    pub max_message_bytes: usize,
    /// Calls in flight at once; beyond it calls are shed with RESOURCE_EXHAUSTED.
    pub max_concurrency: usize,
    /// Sustained calls per second allowed to one agency.
    pub per_agency_rps: f64,
    /// Burst allowed to one agency.
    pub per_agency_burst: f64,
    /// Time given to in-flight calls on SIGTERM before the server stops anyway.
    pub shutdown_grace_ms: u64,
    /// Open streams (`Watch…`, reflection) at once, over all callers; beyond it a new stream is
    /// refused with RESOURCE_EXHAUSTED / `SERVER_OVERLOADED`. Streams do not count against
    /// `max_concurrency` once their headers are sent.
    pub max_streams: usize,
    /// Open streams one agency may hold at once; beyond it RESOURCE_EXHAUSTED /
    /// `TOO_MANY_STREAMS`.
    pub max_streams_per_agency: usize,
    /// Time a new connection has to send the HTTP/2 preface (its first bytes); a connection
    /// that trickles it is closed.
    pub handshake_timeout_ms: u64,
    /// How often freed heap memory is given back to the operating system (glibc
    /// `malloc_trim`, see [`crate::memory`]); 0 turns it off.
    pub memory_release_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: 10_000,
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrency: 256,
            per_agency_rps: 50.0,
            per_agency_burst: 100.0,
            shutdown_grace_ms: 25_000,
            max_streams: 512,
            max_streams_per_agency: 64,
            handshake_timeout_ms: 10_000,
            memory_release_ms: 5_000,
        }
    }
}

/// Router: store-and-forward delivery settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Deadline of one push (`AgencyInboxService.Deliver`) call.
    pub push_timeout_ms: u64,
    /// How long a push worker holds a claimed message. Unset: `push_timeout_ms` + 5000, which
    /// outlives one push attempt; a message whose push was cut by a crash (and the later
    /// messages of its case) is pushed again once this lease runs out.
    pub push_lease_ms: Option<u64>,
    /// How long a pulled message waits for its acknowledgement before it is streamed again.
    pub pull_lease_ms: u64,
}

/// Margin of the derived push lease over the push timeout (recording the outcome after the
/// call, clock skew between replicas and the database).
pub const PUSH_LEASE_MARGIN_MS: u64 = 5_000;

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            push_timeout_ms: 10_000,
            push_lease_ms: None,
            pull_lease_ms: 60_000,
        }
    }
}

impl DeliverySettings {
    /// The push lease in effect: configured, or derived from the push timeout.
    pub fn effective_push_lease_ms(&self) -> u64 {
        self.push_lease_ms
            .unwrap_or_else(|| self.push_timeout_ms.saturating_add(PUSH_LEASE_MARGIN_MS))
    }
}

/// The agency inbox of this process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// Agencies (ids, e.g. `xigang-110`) whose messages this process pulls from the router
    /// (`peers.router`) instead of receiving pushes: agencies on a network the router cannot
    /// call, registered with `delivery = "pull"`. Needs `auth.service_key_file`.
    pub pull_agencies: Vec<String>,
}

/// Addresses of other services.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeersConfig {
    /// The router, as seen by agency services (e.g. `http://router:50051`).
    pub router: Option<String>,
}

/// Administrative dispute coordination (admin-dispute).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminDisputeSettings {
    /// The procuratorate's review period in calendar months (人民检察院行政诉讼监督规则 2016
    /// Art 12: 3 months; configuration, as the 2021 revision's numbering is not verified).
    pub procuratorate_review_months: u32,
}

impl Default for AdminDisputeSettings {
    fn default() -> Self {
        Self {
            procuratorate_review_months: 3,
        }
    }
}

/// The JSON/HTTP gateway and gRPC-Web (crate::gateway), served on the gRPC port.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Browser origins (exactly as sent in `Origin`, e.g. `https://console.example.cn`) allowed
    /// to call JSON over HTTP and gRPC-Web across origins (CORS). Empty (the default): none.
    pub cors_allowed_origins: Vec<String>,
}

/// Encryption at rest of personal information (`[pii]`, see `fengqiao_store::seal`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PiiConfig {
    /// Key file (JSON: data keys with ids, the active id, the lookup key). Required outside
    /// `fengqiao dev` unless `FENGQIAO_PII_KEYS` holds the key file's content. `dev` creates
    /// `<data_dir>/pii-keys.json` when missing.
    pub key_file: Option<PathBuf>,
}

/// The configuration of a Fengqiao process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    pub listen: String,
    /// Admin HTTP listen address (`/metrics`, `/healthz`).
    pub admin_listen: String,
    /// Store URL (`sqlite://…` or `postgres://…`). For `fengqiao dev`, unset means per-service
    /// SQLite files under `data_dir`.
    pub database_url: Option<String>,
    /// Directory for SQLite files and the dev signing key.
    pub data_dir: PathBuf,
    /// OTLP/gRPC endpoint for traces (e.g. `http://otel-collector:4317`); unset = no export.
    pub otlp_endpoint: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` syntax).
    pub log_level: String,
    /// Authentication.
    pub auth: AuthConfig,
    /// Mutual TLS.
    pub tls: TlsConfig,
    /// Protections.
    pub limits: LimitsConfig,
    /// Other services.
    pub peers: PeersConfig,
    /// The agency inbox (`[inbox]`).
    pub inbox: InboxConfig,
    /// Router: delivery (push timeout, push and pull leases).
    pub delivery: DeliverySettings,
    /// Router: agency registry seed (TOML).
    pub agencies_file: Option<PathBuf>,
    /// Router: directory of route policy files.
    pub routes_dir: Option<PathBuf>,
    /// Router: holiday calendar file.
    pub holidays_file: Option<PathBuf>,
    /// admin-dispute settings.
    pub admin_dispute: AdminDisputeSettings,
    /// JSON over HTTP and gRPC-Web: CORS.
    pub http: HttpConfig,
    /// Personal information: the key file of encryption at rest.
    pub pii: PiiConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50051".into(),
            admin_listen: "0.0.0.0:9090".into(),
            database_url: None,
            data_dir: PathBuf::from("./data"),
            otlp_endpoint: None,
            log_format: LogFormat::Json,
            log_level: "info".into(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            peers: PeersConfig::default(),
            inbox: InboxConfig::default(),
            delivery: DeliverySettings::default(),
            agencies_file: None,
            routes_dir: None,
            holidays_file: None,
            admin_dispute: AdminDisputeSettings::default(),
            http: HttpConfig::default(),
            pii: PiiConfig::default(),
        }
    }
}

/// Flags shared by the server commands; each is also read from the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "FENGQIAO_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "FENGQIAO_LISTEN")]
    pub listen: Option<String>,
    /// Admin HTTP listen address.
    #[arg(long, env = "FENGQIAO_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Store URL (`sqlite://…` or `postgres://…`).
    #[arg(long, env = "FENGQIAO_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Data directory (SQLite files, dev keys).
    #[arg(long, env = "FENGQIAO_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// OTLP/gRPC trace endpoint.
    #[arg(long, env = "FENGQIAO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Log format.
    #[arg(long, env = "FENGQIAO_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter.
    #[arg(long, env = "RUST_LOG")]
    pub log_level: Option<String>,
    /// Trusted token issuer.
    #[arg(long, env = "FENGQIAO_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Trusted public keys file.
    #[arg(long, env = "FENGQIAO_AUTH_PUBLIC_KEYS_FILE")]
    pub auth_public_keys_file: Option<PathBuf>,
    /// Router address for agency services.
    #[arg(long, env = "FENGQIAO_PEERS_ROUTER")]
    pub router: Option<String>,
    /// Agencies whose messages this process pulls (`inbox.pull_agencies`), comma-separated.
    #[arg(long, env = "FENGQIAO_INBOX_PULL_AGENCIES", value_delimiter = ',')]
    pub inbox_pull_agencies: Option<Vec<String>>,
    /// Agency registry seed file (router).
    #[arg(long, env = "FENGQIAO_AGENCIES_FILE")]
    pub agencies_file: Option<PathBuf>,
    /// Route policy directory (router).
    #[arg(long, env = "FENGQIAO_ROUTES_DIR")]
    pub routes_dir: Option<PathBuf>,
    /// Holiday calendar file (router).
    #[arg(long, env = "FENGQIAO_HOLIDAYS_FILE")]
    pub holidays_file: Option<PathBuf>,
    /// Deadline of one push delivery call, ms (router).
    #[arg(long, env = "FENGQIAO_DELIVERY_PUSH_TIMEOUT_MS")]
    pub delivery_push_timeout_ms: Option<u64>,
    /// Push lease, ms (router; default: push timeout + 5000).
    #[arg(long, env = "FENGQIAO_DELIVERY_PUSH_LEASE_MS")]
    pub delivery_push_lease_ms: Option<u64>,
    /// Pull acknowledgement lease, ms (router).
    #[arg(long, env = "FENGQIAO_DELIVERY_PULL_LEASE_MS")]
    pub delivery_pull_lease_ms: Option<u64>,
    /// Key file of encryption at rest of personal information (`[pii] key_file`).
    #[arg(long, env = "FENGQIAO_PII_KEY_FILE")]
    pub pii_key_file: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub dump_config: bool,
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    }

    /// Defaults, then the file named by `args.config`, then the flags and environment.
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let mut c = match &args.config {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        c.apply(args);
        c.validate()?;
        Ok(c)
    }

    fn apply(&mut self, a: &ConfigArgs) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        fn set_opt<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        set(&mut self.listen, &a.listen);
        set(&mut self.admin_listen, &a.admin_listen);
        set_opt(&mut self.database_url, &a.database_url);
        set(&mut self.data_dir, &a.data_dir);
        set_opt(&mut self.otlp_endpoint, &a.otlp_endpoint);
        set(&mut self.log_format, &a.log_format);
        set(&mut self.log_level, &a.log_level);
        set(&mut self.auth.issuer, &a.auth_issuer);
        set_opt(&mut self.auth.public_keys_file, &a.auth_public_keys_file);
        set_opt(&mut self.peers.router, &a.router);
        set(&mut self.inbox.pull_agencies, &a.inbox_pull_agencies);
        set_opt(&mut self.agencies_file, &a.agencies_file);
        set_opt(&mut self.routes_dir, &a.routes_dir);
        set_opt(&mut self.holidays_file, &a.holidays_file);
        set_opt(&mut self.pii.key_file, &a.pii_key_file);
        set(
            &mut self.delivery.push_timeout_ms,
            &a.delivery_push_timeout_ms,
        );
        set_opt(&mut self.delivery.push_lease_ms, &a.delivery_push_lease_ms);
        set(&mut self.delivery.pull_lease_ms, &a.delivery_pull_lease_ms);
        if self.otlp_endpoint.as_deref() == Some("") {
            self.otlp_endpoint = None;
        }
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=24).contains(&self.admin_dispute.procuratorate_review_months) {
            return Err(ConfigError::Invalid {
                key: "admin_dispute.procuratorate_review_months",
                detail: "must be 1 to 24 months".into(),
            });
        }
        let l = &self.limits;
        if l.max_concurrency == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.max_concurrency",
                detail: "must be at least 1".into(),
            });
        }
        if l.per_agency_rps <= 0.0 || l.per_agency_burst < 1.0 {
            return Err(ConfigError::Invalid {
                key: "limits.per_agency_rps",
                detail: "rate must be positive and burst at least 1".into(),
            });
        }
        if l.max_streams == 0 || l.max_streams_per_agency == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.max_streams",
                detail: "max_streams and max_streams_per_agency must be at least 1".into(),
            });
        }
        if l.handshake_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.handshake_timeout_ms",
                detail: "must be at least 1".into(),
            });
        }
        if l.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "limits.max_message_bytes",
                detail: "must be at least 1024".into(),
            });
        }
        let d = &self.delivery;
        if d.push_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "delivery.push_timeout_ms",
                detail: "must be at least 1".into(),
            });
        }
        if d.effective_push_lease_ms() <= d.push_timeout_ms {
            // A lease that can run out during the call lets a second worker push the same
            // message while the first is still waiting for the answer.
            return Err(ConfigError::Invalid {
                key: "delivery.push_lease_ms",
                detail: "must be longer than delivery.push_timeout_ms".into(),
            });
        }
        if d.pull_lease_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "delivery.pull_lease_ms",
                detail: "must be at least 1".into(),
            });
        }
        if !self.inbox.pull_agencies.is_empty() && self.auth.service_key_file.is_none() {
            // The pull worker calls the router as each agency, with tokens signed by this key.
            return Err(ConfigError::Invalid {
                key: "inbox.pull_agencies",
                detail: "needs auth.service_key_file to sign the pull worker's tokens".into(),
            });
        }
        if let Some(bad) = self
            .inbox
            .pull_agencies
            .iter()
            .find(|a| a.trim_start_matches("agencies/").is_empty() || a.contains(' '))
        {
            return Err(ConfigError::Invalid {
                key: "inbox.pull_agencies",
                detail: format!("{bad:?} is not an agency id"),
            });
        }
        let t = &self.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls",
                detail: "cert_file and key_file go together".into(),
            });
        }
        if t.client_ca_file.is_some() && t.cert_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "tls.client_ca_file",
                detail: "mutual TLS needs the server's cert_file and key_file".into(),
            });
        }
        Ok(())
    }

    /// The effective configuration as TOML (for `--dump-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Environment variable that may hold the personal-information key file's content (JSON),
/// e.g. from a Kubernetes Secret; it wins over `[pii] key_file`.
pub const PII_KEYS_ENV: &str = "FENGQIAO_PII_KEYS";

impl Config {
    /// Loads the personal-information key ring (from [`PII_KEYS_ENV`], else `[pii] key_file`)
    /// and installs it for the process (`fengqiao_store::seal::install`). `dev_default` names
    /// a file to create with a fresh key when neither is set (`fengqiao dev` only); without
    /// it, a missing key is an error: the store never runs without encryption at rest.
    pub fn install_pii_keys(&self, dev_default: Option<&Path>) -> Result<(), ConfigError> {
        use fengqiao_store::seal::{KeyFile, Keyring};
        let invalid = |detail: String| ConfigError::Invalid {
            key: "pii.key_file",
            detail,
        };
        let file = if let Ok(json) = std::env::var(PII_KEYS_ENV) {
            KeyFile::from_json(&json).map_err(|e| invalid(format!("{PII_KEYS_ENV}: {e}")))?
        } else if let Some(path) = &self.pii.key_file {
            KeyFile::load(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?
        } else if let Some(path) = dev_default {
            if path.exists() {
                KeyFile::load(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?
            } else {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| ConfigError::Io {
                        path: dir.display().to_string(),
                        source: e,
                    })?;
                }
                let f = KeyFile::generate("dev-1").map_err(|e| invalid(e.to_string()))?;
                f.save(path, false)
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                f
            }
        } else {
            return Err(invalid(format!(
                "no personal-information key: set [pii] key_file, --pii-key-file or \
                 {PII_KEYS_ENV} (create a key file with `fengqiao pii-keys generate --out FILE`)"
            )));
        };
        let ring = Keyring::new(&file).map_err(|e| invalid(e.to_string()))?;
        fengqiao_store::seal::install(ring);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_file_then_flags() {
        let dir = std::env::temp_dir().join(format!("fq-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:1\"\nlog_format = \"text\"\n[limits]\nmax_concurrency = 7\n",
        )
        .expect("write");
        let args = ConfigArgs {
            config: Some(f),
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let c = Config::load(&args).expect("load");
        assert_eq!(c.listen, "127.0.0.1:2", "flag wins over file");
        assert_eq!(c.log_format, LogFormat::Text, "file wins over default");
        assert_eq!(c.limits.max_concurrency, 7);
        assert_eq!(c.limits.request_timeout_ms, 10_000, "default kept");
        let dumped: Config = toml::from_str(&c.to_toml()).expect("dump parses back");
        assert_eq!(dumped.listen, c.listen);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("fq-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("c.toml");
        std::fs::write(&f, "lisen = \"x\"\n").expect("write");
        assert!(matches!(
            Config::from_file(&f),
            Err(ConfigError::Parse { .. })
        ));
        let mut c = Config::default();
        c.limits.max_concurrency = 0;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.tls.client_ca_file = Some("ca.pem".into());
        assert!(c.validate().is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn delivery_leases_from_file_env_flags_and_derived() {
        let c = Config::default();
        assert_eq!(c.delivery.push_lease_ms, None);
        assert_eq!(
            c.delivery.effective_push_lease_ms(),
            15_000,
            "derived: push timeout + margin"
        );
        assert_eq!(c.delivery.pull_lease_ms, 60_000);
        let dir = std::env::temp_dir().join(format!("fq-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "[delivery]\npush_timeout_ms = 2000\npull_lease_ms = 9000\n",
        )
        .expect("write");
        let args = ConfigArgs {
            config: Some(f.clone()),
            ..Default::default()
        };
        let c = Config::load(&args).expect("load");
        assert_eq!(c.delivery.effective_push_lease_ms(), 7_000);
        assert_eq!(c.delivery.pull_lease_ms, 9_000);
        let dumped = c.to_toml();
        assert!(dumped.contains("[delivery]"), "{dumped}");
        assert!(dumped.contains("pull_lease_ms = 9000"), "{dumped}");
        let args = ConfigArgs {
            config: Some(f),
            delivery_push_lease_ms: Some(3_000),
            delivery_pull_lease_ms: Some(4_000),
            ..Default::default()
        };
        let c = Config::load(&args).expect("load");
        assert_eq!(c.delivery.effective_push_lease_ms(), 3_000, "flag/env wins");
        assert_eq!(c.delivery.pull_lease_ms, 4_000);
        let dumped: Config = toml::from_str(&c.to_toml()).expect("dump parses back");
        assert_eq!(dumped.delivery, c.delivery);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn push_lease_shorter_than_the_call_is_refused() {
        let mut c = Config::default();
        c.delivery.push_lease_ms = Some(10_000);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "delivery.push_lease_ms",
                ..
            })
        ));
        c.delivery.push_lease_ms = Some(10_001);
        assert!(c.validate().is_ok());
        c.delivery.pull_lease_ms = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_procuratorates_review_months_default_to_three_and_are_checked() {
        let c = Config::default();
        assert_eq!(c.admin_dispute.procuratorate_review_months, 3);
        let mut c: Config =
            toml::from_str("[admin_dispute]\nprocuratorate_review_months = 4\n").expect("parse");
        assert_eq!(c.admin_dispute.procuratorate_review_months, 4);
        assert!(c.validate().is_ok());
        c.admin_dispute.procuratorate_review_months = 0;
        assert!(c.validate().is_err());
        assert!(toml::from_str::<Config>("[admin_dispute]\nmonths = 4\n").is_err());
    }

    #[test]
    fn pull_agencies_from_file_or_flag_need_the_service_key() {
        let c: Config =
            toml::from_str("[inbox]\npull_agencies = [\"xigang-110\"]\n").expect("parse");
        assert_eq!(c.inbox.pull_agencies, ["xigang-110"]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                key: "inbox.pull_agencies",
                ..
            })
        ));
        let mut c = Config::default();
        c.auth.service_key_file = Some(PathBuf::from("k.json"));
        c.apply(&ConfigArgs {
            inbox_pull_agencies: Some(vec!["xigang-110".into(), "xigang-bayilu-station".into()]),
            ..Default::default()
        });
        assert_eq!(
            c.inbox.pull_agencies,
            ["xigang-110", "xigang-bayilu-station"]
        );
        assert!(c.validate().is_ok());
        c.inbox.pull_agencies.push(String::new());
        assert!(c.validate().is_err());
        assert!(toml::from_str::<Config>("[inbox]\npull = []\n").is_err());
    }
}
