//! Test kit: start any set of Fengqiao services in-process on `127.0.0.1:0`, on fresh SQLite
//! files or fresh databases of a throwaway PostgreSQL cluster, and mint tokens for them.
//!
//! ```ignore
//! fengqiao_testkit::suite_test!(lists_agencies, |suite| async move {
//!     let mut client = AgencyServiceClient::with_interceptor(
//!         suite.channel(),
//!         suite.caller("xigang-justice-bureau", "admin", &["platform_admin"]),
//!     );
//!     // …
//! });
//! ```
//!
//! `suite_test!` generates one test per backend (`name::sqlite`, `name::postgres`). When
//! PostgreSQL cannot be started, the PostgreSQL variant fails if `REQUIRE_POSTGRES=1` and is
//! skipped (with a notice) otherwise.

pub mod answers;
pub mod probe;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

pub use fengqiao::ServiceName;
use fengqiao::{Suite, SuiteSpec};
use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::config::Config;
pub use fengqiao_kit::module::Module;
pub use fengqiao_store::testing::{TempDir, block_on};

pub mod services;

/// Token issuer used by test suites.
pub const ISSUER: &str = "fengqiao-test";

/// Which store backend a suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file per service in a temporary directory.
    Sqlite,
    /// A fresh database per service on the shared throwaway PostgreSQL cluster.
    Postgres,
}

/// A running in-process suite.
#[derive(Debug)]
pub struct TestSuite {
    /// gRPC address.
    pub addr: SocketAddr,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// The backend.
    pub db: Db,
    key: SigningKey,
    suite: Option<Suite>,
    dir: TempDir,
    /// Store URL per service (to reopen a store after a restart).
    pub stores: BTreeMap<ServiceName, String>,
}

/// Store URLs for `services` on `db`, or `None` if PostgreSQL is unavailable and not required.
pub fn store_urls(
    db: Db,
    dir: &TempDir,
    services: &[ServiceName],
) -> Option<BTreeMap<ServiceName, String>> {
    let mut out = BTreeMap::new();
    for &s in services {
        let url = match db {
            Db::Sqlite => dir.sqlite_url(&format!("{}.db", s.as_str())),
            Db::Postgres => fengqiao_store::testing::postgres_url()?,
        };
        out.insert(s, url);
    }
    Some(out)
}

impl TestSuite {
    /// `GET /metrics` on the suite's admin port: the whole HTTP answer, headers included.
    pub async fn scrape_metrics(&self) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(self.admin_addr)
            .await
            .expect("admin port");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    /// All services, sample agencies seeded.
    pub async fn start(db: Db) -> Option<TestSuite> {
        Self::start_with(db, &ServiceName::all(), |_| {}).await
    }

    /// Chosen services, with a chance to adjust the configuration.
    pub async fn start_with(
        db: Db,
        services: &[ServiceName],
        tweak: impl FnOnce(&mut Config),
    ) -> Option<TestSuite> {
        let dir = TempDir::new();
        let stores = store_urls(db, &dir, services)?;
        Some(Self::start_on(db, dir, stores, tweak).await)
    }

    /// Chosen services of the registry plus the services of `extra` (modules outside the
    /// registry, e.g. [`probe::MODULE`]), which run beside them in the same process.
    pub async fn start_with_modules(
        db: Db,
        services: &[ServiceName],
        extra: &[Module],
        tweak: impl FnOnce(&mut Config),
    ) -> Option<TestSuite> {
        let dir = TempDir::new();
        let mut all = services.to_vec();
        all.extend(extra.iter().map(|m| ServiceName::of(*m)));
        let stores = store_urls(db, &dir, &all)?;
        Some(Self::start_on_modules(db, dir, stores, extra, tweak).await)
    }

    /// Starts on given stores (e.g. the same ones again after a restart).
    pub async fn start_on(
        db: Db,
        dir: TempDir,
        stores: BTreeMap<ServiceName, String>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestSuite {
        Self::start_on_modules(db, dir, stores, &[], tweak).await
    }

    async fn start_on_modules(
        db: Db,
        dir: TempDir,
        stores: BTreeMap<ServiceName, String>,
        extra: &[Module],
        tweak: impl FnOnce(&mut Config),
    ) -> TestSuite {
        let key = SigningKey::generate("test-1").unwrap_or_else(|e| panic!("test key: {e}"));
        let keys_file = dir.path().join("public-keys.json");
        PublicKeyFile {
            keys: vec![key.public_entry()],
        }
        .save(&keys_file)
        .unwrap_or_else(|e| panic!("public keys: {e}"));
        let key_file = dir.path().join("service-key.json");
        key.save(&key_file)
            .unwrap_or_else(|e| panic!("service key: {e}"));
        let mut config = Config::default();
        config.auth.issuer = ISSUER.into();
        config.auth.public_keys_file = Some(keys_file);
        config.auth.service_key_file = Some(key_file);
        config.data_dir = dir.path().to_path_buf();
        config.listen = "127.0.0.1:0".into();
        config.admin_listen = "127.0.0.1:0".into();
        // Tests drive many calls from one agency; the limiter has its own unit tests.
        config.limits.per_agency_rps = 100_000.0;
        config.limits.per_agency_burst = 100_000.0;
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let admin = tokio::net::TcpListener::bind(&config.admin_listen)
            .await
            .unwrap_or_else(|e| panic!("bind admin: {e}"));
        let services: Vec<ServiceName> = stores.keys().copied().collect();
        let seed = services
            .contains(&ServiceName::Router)
            .then(|| fengqiao::SAMPLE_AGENCIES.to_string());
        let spec = SuiteSpec {
            config,
            services,
            stores: stores.clone(),
            agency_seed: seed,
            extra_modules: extra.to_vec(),
        };
        let suite = Suite::start(spec, listener, admin)
            .await
            .unwrap_or_else(|e| panic!("suite start: {e}"));
        TestSuite {
            addr: suite.server.addr,
            admin_addr: suite.admin_addr,
            db,
            key,
            suite: Some(suite),
            dir,
            stores,
        }
    }

    /// `http://127.0.0.1:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A lazily connecting channel to the suite.
    pub fn channel(&self) -> tonic::transport::Channel {
        fengqiao_kit::client::channel(&self.endpoint(), None)
            .unwrap_or_else(|e| panic!("channel: {e}"))
    }

    /// A signed token for `agencies/{agency}`.
    pub fn token(&self, agency: &str, actor: &str, roles: &[&str]) -> String {
        self.key.sign(&fengqiao_kit::auth::claims(
            ISSUER,
            &format!("agencies/{agency}"),
            actor,
            roles,
            3600,
        ))
    }

    /// The signing key (to craft expired or odd tokens).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// An interceptor calling as `agencies/{agency}` / `actor` with `roles`.
    pub fn caller(&self, agency: &str, actor: &str, roles: &[&str]) -> CallInterceptor {
        CallInterceptor::new(Some(self.token(agency, actor, roles)))
    }

    /// The temporary directory of this suite.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// Graceful stop; returns the directory and store URLs for a restart.
    pub async fn stop(mut self) -> (TempDir, BTreeMap<ServiceName, String>) {
        if let Some(s) = self.suite.take() {
            s.shutdown(Duration::from_secs(5)).await;
        }
        (self.dir, self.stores)
    }
}

/// Runs `body` with a suite on SQLite, and again on PostgreSQL; see the crate docs.
#[macro_export]
macro_rules! suite_test {
    ($name:ident, $body:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                $crate::run($crate::Db::Sqlite, $body)
            }

            #[test]
            fn postgres() {
                $crate::run($crate::Db::Postgres, $body)
            }
        }
    };
}

/// Starts a suite on `db`, runs `body`, stops the suite.
pub fn run<F, Fut>(db: Db, body: F)
where
    F: FnOnce(std::sync::Arc<TestSuite>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    block_on(async move {
        let Some(suite) = TestSuite::start(db).await else {
            return;
        };
        let suite = std::sync::Arc::new(suite);
        body(suite.clone()).await;
        if let Ok(s) = std::sync::Arc::try_unwrap(suite) {
            s.stop().await;
        }
    });
}
