//! Test helpers: run a test against SQLite and PostgreSQL (feature `testing`).
//!
//! In another crate:
//!
//! ```toml
//! [dev-dependencies]
//! fengqiao-store = { workspace = true, features = ["testing"] }
//! ```
//!
//! ```ignore
//! use fengqiao_store::{both_backends, Store};
//!
//! both_backends!(creates_a_case, |store| async move {
//!     store.migrate(fengqiao_store::SHARED_SERVICE, fengqiao_store::SHARED_MIGRATIONS).await?;
//!     // … the test, using `?` or assertions …
//!     Ok::<_, fengqiao_store::Error>(())
//! });
//! ```
//!
//! This generates `mod creates_a_case { #[test] fn sqlite() … #[test] fn postgres() … }`
//! (test names `creates_a_case::sqlite` and `creates_a_case::postgres`), each running the body
//! on its own multi-threaded tokio runtime with a fresh, empty (unmigrated) database:
//! a SQLite file in a new temporary directory (removed afterwards), or a new database on the
//! process-wide throwaway cluster ([`fengqiao_pgtemp::shared`]). No tokio dev-dependency is
//! needed in the calling crate. The body may return `()` or `Result<(), E: Debug>`.
//!
//! When PostgreSQL cannot be started the PostgreSQL variant panics if `REQUIRE_POSTGRES=1`
//! (CI), and otherwise prints a skip notice and passes.

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};

use crate::store::{Store, StoreConfig};

/// The tokio the generated tests run on, for `tokio::spawn` etc. without a direct dependency.
pub use tokio;

/// What a test body may return.
pub trait TestOutcome {
    /// `Err(description)` if the test failed.
    fn into_outcome(self) -> Result<(), String>;
}

impl TestOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Debug> TestOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Run `fut` to completion on a fresh multi-threaded runtime; panic if it reports failure.
pub fn block_on<Fut>(fut: Fut)
where
    Fut: Future,
    Fut::Output: TestOutcome,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build tokio runtime: {e}"));
    if let Err(e) = runtime.block_on(fut).into_outcome() {
        panic!("test failed: {e}");
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Create `<tmp>/fengqiao-test-<uuid>`.
    pub fn new() -> TempDir {
        crate::seal::install_for_tests();
        let dir = std::env::temp_dir().join(format!("fengqiao-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `sqlite://` URL of a database file `name` in this directory.
    pub fn sqlite_url(&self, name: &str) -> String {
        format!("sqlite://{}", self.0.join(name).display())
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// URL of a fresh PostgreSQL database on the shared throwaway cluster, or `None` (with a skip
/// notice on stderr) when PostgreSQL is unavailable and not required.
///
/// # Panics
/// When PostgreSQL is unavailable and `REQUIRE_POSTGRES` is set.
pub fn postgres_url() -> Option<String> {
    crate::seal::install_for_tests();
    match fengqiao_pgtemp::shared().and_then(|cluster| cluster.create_database()) {
        Ok(url) => Some(url),
        Err(e) if fengqiao_pgtemp::required() => {
            panic!("REQUIRE_POSTGRES is set but PostgreSQL is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipping PostgreSQL test: PostgreSQL unavailable: {e}");
            None
        }
    }
}

/// Run `body` with a store on a fresh SQLite file.
pub fn run_sqlite<F, Fut>(body: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future,
    Fut::Output: TestOutcome,
{
    let dir = TempDir::new();
    let url = dir.sqlite_url("test.db");
    block_on(async move {
        let store = Store::connect(StoreConfig::new(url))
            .await
            .map_err(|e| format!("connect to SQLite: {e}"))?;
        let outcome = body(store.clone()).await.into_outcome();
        store.close().await;
        outcome
    });
    drop(dir);
}

/// Run `body` with a store on a fresh PostgreSQL database (see [`postgres_url`] for when it is
/// skipped).
pub fn run_postgres<F, Fut>(body: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future,
    Fut::Output: TestOutcome,
{
    let Some(url) = postgres_url() else {
        return;
    };
    block_on(async move {
        let store = Store::connect(StoreConfig::new(url))
            .await
            .map_err(|e| format!("connect to PostgreSQL: {e}"))?;
        let outcome = body(store.clone()).await.into_outcome();
        store.close().await;
        outcome
    });
}

/// Generate a test module with one `#[test]` per backend; see the [module docs](self).
///
/// `both_backends!(name, |store| async move { … })` expands to `mod name { use super::*;
/// #[test] fn sqlite() {…} #[test] fn postgres() {…} }`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                $crate::testing::run_sqlite($body)
            }

            #[test]
            fn postgres() {
                $crate::testing::run_postgres($body)
            }
        }
    };
}
