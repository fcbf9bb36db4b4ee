//! A tiny embedded migration runner.
//!
//! Each service passes its own ordered list of [`Migration`]s to [`Store::migrate`]. Applied
//! migrations are recorded in `schema_migrations` with a SHA-256 checksum of the script that ran
//! on that backend. Start-up is refused when an applied migration's script changed, or when the
//! database holds a migration this binary does not know (a newer binary ran against it).

use std::borrow::Cow;
use std::collections::BTreeMap;

use sqlx::{Executor as _, Row as _};

use crate::error::{Error, Result};
use crate::store::{Backend, Store, Tx, lock_class, pg_xact_lock};

/// One schema change. Scripts may hold several statements separated by `;`. Never edit a
/// migration once released: add a new one.
///
/// Most migrations are one portable script ([`Migration::portable`]): written for SQLite in
/// the subset both backends share, with PostgreSQL's script derived mechanically by
/// [`to_postgres`] (the one difference in use: `BLOB` is `BYTEA`). A migration whose backends
/// differ in more than that (triggers, functions) keeps a script per backend
/// ([`Migration::pair`]).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version, strictly increasing within a service, starting at 1.
    pub version: i64,
    /// Short human-readable name.
    pub name: &'static str,
    /// Script for SQLite (and, translated, for PostgreSQL when `postgres` is `None`).
    pub sqlite: &'static str,
    /// Script for PostgreSQL, when it is not the translation of the SQLite one.
    pub postgres: Option<&'static str>,
}

impl Migration {
    /// One script for both backends (PostgreSQL's derived by [`to_postgres`]).
    pub const fn portable(version: i64, name: &'static str, script: &'static str) -> Self {
        Self {
            version,
            name,
            sqlite: script,
            postgres: None,
        }
    }

    /// A script per backend, for changes the translation cannot express.
    pub const fn pair(
        version: i64,
        name: &'static str,
        sqlite: &'static str,
        postgres: &'static str,
    ) -> Self {
        Self {
            version,
            name,
            sqlite,
            postgres: Some(postgres),
        }
    }

    /// The script for `backend`.
    pub fn script(&self, backend: Backend) -> Cow<'static, str> {
        match (backend, self.postgres) {
            (Backend::Sqlite, _) => Cow::Borrowed(self.sqlite),
            (Backend::Postgres, Some(p)) => Cow::Borrowed(p),
            (Backend::Postgres, None) => Cow::Owned(to_postgres(self.sqlite)),
        }
    }
}

/// PostgreSQL's form of a portable script: the SQLite type `BLOB` (a whole word, any case)
/// becomes `BYTEA`; nothing else changes, so a checksum recorded for a hand-written
/// PostgreSQL script that differed only in that stays valid.
pub fn to_postgres(sqlite: &str) -> String {
    let mut out = String::with_capacity(sqlite.len() + 16);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("blob") {
            out.push_str("BYTEA");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in sqlite.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn checksum(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    service TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (service, version)
)";

fn fail(service: &str, version: i64, detail: impl Into<String>) -> Error {
    Error::Migration {
        service: service.to_string(),
        version,
        detail: detail.into(),
    }
}

impl Store {
    /// Apply `service`'s pending migrations, each in its own write transaction.
    ///
    /// Fails with [`Error::Migration`] when the list is not strictly increasing from 1, when an
    /// applied migration's checksum differs from the binary's, when the database has a version
    /// the binary does not know, or when a script fails (that migration is rolled back).
    /// Concurrent migrators are safe: on PostgreSQL they serialise on an advisory lock, on
    /// SQLite on `BEGIN IMMEDIATE`; a migration applied by another process meanwhile is skipped.
    pub async fn migrate(&self, service: &str, migrations: &[Migration]) -> Result<()> {
        validate(service, migrations)?;
        let backend = self.backend();

        let mut tx = self.write().await?;
        pg_xact_lock(&mut tx, lock_class::MIGRATIONS, &[]).await?;
        tx.execute(sqlx::raw_sql(CREATE_TABLE)).await?;
        let done = applied(&mut tx, service).await?;
        verify(service, migrations, &done, backend)?;
        tx.commit().await?;

        for m in migrations.iter().filter(|m| !done.contains_key(&m.version)) {
            let script = m.script(backend);
            let sum = checksum(script.as_bytes());
            let mut tx = self.write().await?;
            pg_xact_lock(&mut tx, lock_class::MIGRATIONS, &[]).await?;
            // Someone else may have migrated while we waited for the lock.
            let now_applied = applied(&mut tx, service).await?;
            verify(service, migrations, &now_applied, backend)?;
            if now_applied.contains_key(&m.version) {
                tx.rollback().await?;
                continue;
            }
            if !script.trim().is_empty() {
                tx.execute(sqlx::raw_sql(&script)).await.map_err(|e| {
                    fail(
                        service,
                        m.version,
                        format!("script failed: {}", Error::from(e)),
                    )
                })?;
            }
            let sql = format!(
                "INSERT INTO schema_migrations (service, version, name, checksum, applied_at) \
                 VALUES ($1, $2, $3, $4, {})",
                backend.now_expr()
            );
            sqlx::query(&sql)
                .bind(service)
                .bind(m.version)
                .bind(m.name)
                .bind(&sum)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(
                service,
                version = m.version,
                name = m.name,
                "applied migration"
            );
        }
        Ok(())
    }
}

/// Applied migrations of `service`: version → checksum.
async fn applied(tx: &mut Tx, service: &str) -> Result<BTreeMap<i64, String>> {
    let rows = sqlx::query(
        "SELECT version, checksum FROM schema_migrations WHERE service = $1 ORDER BY version",
    )
    .bind(service)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = BTreeMap::new();
    for row in rows {
        out.insert(row.try_get::<i64, _>(0)?, row.try_get::<String, _>(1)?);
    }
    Ok(out)
}

fn validate(service: &str, migrations: &[Migration]) -> Result<()> {
    let mut last = 0;
    for m in migrations {
        if m.version <= last {
            return Err(fail(
                service,
                m.version,
                format!("versions must be strictly increasing from 1 (after v{last})"),
            ));
        }
        last = m.version;
    }
    Ok(())
}

fn verify(
    service: &str,
    migrations: &[Migration],
    applied: &BTreeMap<i64, String>,
    backend: Backend,
) -> Result<()> {
    let latest = migrations.last().map(|m| m.version).unwrap_or(0);
    for (&version, stored) in applied {
        match migrations.iter().find(|m| m.version == version) {
            None if version > latest => {
                return Err(fail(
                    service,
                    version,
                    format!(
                        "the database has v{version}, newer than this binary knows \
                         (latest v{latest}); refusing to start"
                    ),
                ));
            }
            None => {
                return Err(fail(
                    service,
                    version,
                    "the database has a migration this binary does not know; refusing to start",
                ));
            }
            Some(m) => {
                let sum = checksum(m.script(backend).as_bytes());
                if &sum != stored {
                    return Err(fail(
                        service,
                        version,
                        format!(
                            "checksum of applied migration `{}` changed (database {}, binary \
                             {}); released migrations must not be edited",
                            m.name,
                            short(stored),
                            short(&sum)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn short(sum: &str) -> &str {
    sum.get(..12).unwrap_or(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Services spawn `migrate` on tokio: its future must be `Send`.
    #[allow(dead_code)]
    fn futures_are_send(store: &Store) {
        fn send<T: Send>(_: T) {}
        send(store.migrate("s", &[]));
        send(crate::outbox::claim(
            store,
            "w",
            1,
            std::time::Duration::ZERO,
        ));
        send(crate::outbox::mark_delivered(store, "id"));
        send(crate::outbox::mark_failed(store, "id", "e", 0));
        send(crate::outbox::mark_dead(store, "id", "e"));
        send(crate::outbox::retry_dead(store, "id"));
        send(crate::outbox::list_dead(store, 1));
        send(crate::outbox::get(store, "id"));
        send(crate::idempotency::purge_older_than(store, 0));
        send(store.write());
        send(store.now_micros_pool());
        send(store.check_durability());
        send(Store::connect(crate::StoreConfig::new("sqlite://x")));
    }

    #[allow(dead_code)]
    fn tx_futures_are_send(tx: &'static mut Tx, key: &'static crate::idempotency::IdempotencyKey) {
        fn send<T: Send>(_: T) {}
        send(async move {
            let _ = crate::idempotency::lookup(tx, key, "h").await;
            let _ = crate::idempotency::record(tx, key, "h", b"r").await;
            let _ = crate::inbox::record_once(tx, "c", "m").await;
            let msg = crate::outbox::NewMessage::new("d", "k", "t", Vec::new());
            let _ = crate::outbox::enqueue(tx, &msg).await;
            let _ = crate::db_now_micros(tx).await;
        });
    }

    #[test]
    fn checksum_is_sha256_hex() {
        assert_eq!(
            checksum(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn portable_scripts_translate_only_blob() {
        let sql = "CREATE TABLE t (id TEXT, body BLOB NOT NULL, blob_ref TEXT, b blob);\n";
        assert_eq!(
            to_postgres(sql),
            "CREATE TABLE t (id TEXT, body BYTEA NOT NULL, blob_ref TEXT, b BYTEA);\n"
        );
        let m = Migration::portable(1, "x", sql);
        assert_eq!(m.script(Backend::Sqlite), sql);
        assert_eq!(m.script(Backend::Postgres), to_postgres(sql));
        let p = Migration::pair(1, "x", "A", "B");
        assert_eq!(p.script(Backend::Postgres), "B");
    }

    #[test]
    fn validate_rejects_unordered() {
        let m = |version| Migration::portable(version, "x", "");
        assert!(validate("s", &[m(1), m(2), m(5)]).is_ok());
        assert!(validate("s", &[m(1), m(1)]).is_err());
        assert!(validate("s", &[m(2), m(1)]).is_err());
        assert!(validate("s", &[m(0)]).is_err());
    }
}
