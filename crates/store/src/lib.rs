//! Fengqiao storage layer.
//!
//! One code path for SQLite (embedded, the default) and PostgreSQL (production), through the
//! sqlx `Any` driver:
//!
//! * [`Store`] — a connection pool plus the [`Backend`] it talks to. [`Store::connect`] refuses
//!   to run when durability is off ([`Store::check_durability`]). Write transactions
//!   ([`Store::write`]) begin `IMMEDIATE` on SQLite and are plain `READ COMMITTED` on
//!   PostgreSQL.
//! * [`Migration`] and [`Store::migrate`] — a small embedded migration runner with checksums.
//! * [`idempotency`], [`outbox`] and [`inbox`] — the shared tables every service uses, created
//!   by [`SHARED_MIGRATIONS`] (service name [`SHARED_SERVICE`]).
//! * [`seal`] — encryption at rest (AES-256-GCM) of every body that may hold personal
//!   information, and keyed hashes for look-ups; the store refuses to connect without a key.
//! * [`deadline`] — deadlines stored with the service's data and one timer per store that
//!   fires each exactly once at the database's time.
//!
//! Column conventions (the `Any` driver only decodes `i64`/`i32`/`f64`/`bool`/`String`/
//! `Vec<u8>`): every integer column is `BIGINT`, timestamps are `BIGINT` unix microseconds from
//! the database clock ([`db_now_micros`]), UUIDs and JSON are `TEXT`, binary data is
//! `BLOB`/`BYTEA`. Placeholders are `$1, $2, …` on both backends. On SQLite, declare column
//! types as `BIGINT`, `TEXT` or `BLOB` only: other declared types (`BOOLEAN`, `DATETIME`, …) are
//! rejected by the `Any` driver when read back.
//!
//! Errors ([`Error`]) never carry row data, so they are safe to log.

pub mod access;
pub mod deadline;
mod error;
pub mod group;
pub mod idempotency;
pub mod inbox;
mod migrate;
pub mod outbox;
pub mod seal;
mod shared;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
pub use group::{GroupCommit, GroupCommitOptions};
pub mod bind;
pub use migrate::{Migration, checksum, to_postgres};
pub use shared::{SHARED_MIGRATIONS, SHARED_SERVICE};
pub use store::{
    Backend, Store, StoreConfig, Tx, check_durability, db_now_micros, install_drivers, lock_class,
    pg_xact_lock, pg_xact_lock_each,
};

/// Re-export of sqlx, so callers use the same version and the `Any` types.
pub use sqlx;
