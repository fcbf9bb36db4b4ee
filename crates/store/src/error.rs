//! The store's error type.
//!
//! Personal information must never reach logs, so neither `Display` nor `Debug` of [`Error`]
//! shows row data: database errors are reduced to their code, constraint and table names, and
//! the server's message only where it cannot carry values (see [`Error::Database`]). The original
//! [`sqlx::Error`] stays available for inspection through [`Error::as_sqlx`], but it is not
//! exposed as `source()`, so error-chain printers cannot leak it either.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from the database or the driver. Displayed without row data: SQLSTATE/SQLite
    /// code, constraint and table names, and the server message except for PostgreSQL data
    /// exceptions (class 22), whose messages quote the offending value.
    #[error("{}", describe_sqlx(.0))]
    Database(sqlx::Error),

    /// The database URL's scheme is not `sqlite:` or `postgres://`/`postgresql://`.
    /// Carries the scheme only (never the URL, which may hold a password).
    #[error(
        "unsupported database URL scheme `{0}`: expected sqlite://path/to/file.db or postgres://…"
    )]
    UnsupportedUrl(String),

    /// `sqlite::memory:` was requested without `StoreConfig::allow_memory`.
    #[error(
        "in-memory SQLite has no durability and is refused; use sqlite://path/to/file.db \
         (allow_memory is for unit tests only)"
    )]
    MemoryRefused,

    /// The database runs with durability turned off; the message names the setting.
    #[error("durability check failed: {0}; refusing to run")]
    Durability(String),

    /// A migration could not be applied, or the database does not match the binary.
    #[error("migration {service} v{version}: {detail}")]
    Migration {
        /// Service whose migrations are being applied.
        service: String,
        /// Migration version concerned.
        version: i64,
        /// What went wrong (no row data).
        detail: String,
    },

    /// The idempotency key was already used with a different request payload.
    #[error("idempotency key reused with a different request")]
    IdempotencyConflict,

    /// A concurrent writer changed the data first (stale etag, lost race); retry the whole
    /// transaction.
    #[error("concurrent modification; retry the transaction")]
    ConcurrentModification,

    /// The named kind of record does not exist (e.g. `"outbox message"`).
    #[error("{0} not found")]
    NotFound(&'static str),

    /// A shared (group-commit) transaction did not commit, so neither did the change that was
    /// part of it. Retry; with an idempotency key the retry applies the change exactly once.
    #[error("{0}; retry")]
    GroupCommit(String),

    /// A file-system operation failed (creating the SQLite file's directory).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),

    /// No personal-information key ring is installed ([`crate::seal::install`]): the store
    /// refuses to read or write bodies that may hold personal information in plain text.
    #[error(
        "no personal-information key is installed: set [pii] key_file or FENGQIAO_PII_KEYS \
         (create one with `fengqiao pii-keys generate`)"
    )]
    NoSealKey,

    /// A stored body was sealed with a key id that is not in the key ring (the id only).
    #[error("stored data was sealed with key `{0}`, which the key file does not hold")]
    UnknownKey(String),

    /// A stored body could not be opened: not sealed, tampered with, or in the wrong column.
    #[error("stored data cannot be opened: {0}")]
    Unsealable(&'static str),
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Same redaction as Display: `{:?}` ends up in logs just as often.
        let variant = match self {
            Error::Database(_) => "Database",
            Error::UnsupportedUrl(_) => "UnsupportedUrl",
            Error::MemoryRefused => "MemoryRefused",
            Error::Durability(_) => "Durability",
            Error::Migration { .. } => "Migration",
            Error::IdempotencyConflict => "IdempotencyConflict",
            Error::ConcurrentModification => "ConcurrentModification",
            Error::NotFound(_) => "NotFound",
            Error::GroupCommit(_) => "GroupCommit",
            Error::Io(_) => "Io",
            Error::NoSealKey => "NoSealKey",
            Error::UnknownKey(_) => "UnknownKey",
            Error::Unsealable(_) => "Unsealable",
        };
        write!(f, "{variant}({self})")
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e)
    }
}

impl Error {
    /// The underlying sqlx error, if this is a database error. Its `Display` may contain row
    /// data: do not log it.
    pub fn as_sqlx(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Database(e) => Some(e),
            _ => None,
        }
    }

    fn db_error(&self) -> Option<&(dyn sqlx::error::DatabaseError + 'static)> {
        match self {
            Error::Database(sqlx::Error::Database(e)) => Some(e.as_ref()),
            _ => None,
        }
    }

    /// The database's error code: SQLSTATE on PostgreSQL, extended result code on SQLite.
    pub fn db_code(&self) -> Option<String> {
        self.db_error()
            .and_then(|e| e.code().map(|c| c.into_owned()))
    }

    /// A unique or primary-key constraint was violated (PostgreSQL 23505, SQLite 2067/1555).
    pub fn is_unique_violation(&self) -> bool {
        let Some(e) = self.db_error() else {
            return false;
        };
        if matches!(e.kind(), sqlx::error::ErrorKind::UniqueViolation) {
            return true;
        }
        match e.code().as_deref() {
            Some("23505") => is_pg(e),
            Some("2067") | Some("1555") => !is_pg(e),
            _ => false,
        }
    }

    /// The transaction lost a race and should be retried: PostgreSQL serialization failure
    /// (40001) or deadlock (40P01); SQLite BUSY (5) or LOCKED (6), including extended codes.
    pub fn is_serialization_failure(&self) -> bool {
        let Some(e) = self.db_error() else {
            return false;
        };
        let Some(code) = e.code() else {
            return false;
        };
        if is_pg(e) {
            matches!(&*code, "40001" | "40P01")
        } else {
            code.parse::<i64>()
                .map(|c| matches!(c & 0xff, 5 | 6))
                .unwrap_or(false)
        }
    }

    /// Whether retrying the whole transaction may succeed: serialization failures, busy
    /// databases, and [`Error::ConcurrentModification`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::ConcurrentModification | Error::GroupCommit(_))
            || self.is_serialization_failure()
    }
}

fn is_pg(e: &(dyn sqlx::error::DatabaseError + 'static)) -> bool {
    e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
}

/// Describe a sqlx error without row data.
fn describe_sqlx(e: &sqlx::Error) -> String {
    use sqlx::Error as E;
    match e {
        E::Database(db) => {
            let mut out = String::from("database error");
            let code = db.code().map(|c| c.into_owned());
            if let Some(code) = &code {
                out.push_str(&format!(" [{code}]"));
            }
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(table) = pg.table() {
                    out.push_str(&format!(" table={table}"));
                }
                if let Some(column) = pg.column() {
                    out.push_str(&format!(" column={column}"));
                }
                if let Some(constraint) = pg.constraint() {
                    out.push_str(&format!(" constraint={constraint}"));
                }
                // Class 22 (data exception) messages quote the offending value.
                if !code.as_deref().is_some_and(|c| c.starts_with("22")) {
                    out.push_str(": ");
                    out.push_str(pg.message());
                }
            } else {
                // SQLite messages name tables/columns/constraints, never values.
                out.push_str(": ");
                out.push_str(db.message());
            }
            out
        }
        // The source of a decode error may quote the value (the Any driver does).
        E::ColumnDecode { index, .. } => format!("cannot decode column {index}"),
        E::ColumnNotFound(name) => format!("column not found: {name}"),
        E::ColumnIndexOutOfBounds { index, len } => {
            format!("column index {index} out of bounds ({len} columns)")
        }
        E::TypeNotFound { type_name } => format!("type not found: {type_name}"),
        E::Decode(_) => "cannot decode value".to_string(),
        E::Encode(_) => "cannot encode argument".to_string(),
        E::RowNotFound => "row not found".to_string(),
        E::PoolTimedOut => "timed out acquiring a database connection".to_string(),
        E::PoolClosed => "database pool is closed".to_string(),
        E::WorkerCrashed => "database worker crashed".to_string(),
        // Configuration errors may echo the URL (and a password in it).
        E::Configuration(_) => "invalid database configuration".to_string(),
        E::Io(io) => format!("database i/o error: {}", io.kind()),
        E::Tls(_) => "database TLS error".to_string(),
        E::Protocol(msg) => format!("database protocol error: {msg}"),
        // These name types and statements, not values.
        E::AnyDriverError(inner) => format!("database driver error (Any): {inner}"),
        E::InvalidArgument(msg) => format!("invalid argument: {msg}"),
        E::BeginFailed => "could not begin transaction".to_string(),
        E::Migrate(_) => "migration error".to_string(),
        _ => "database error".to_string(),
    }
}
