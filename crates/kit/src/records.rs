//! What the stores of the agency services share: their migrations after the shared ones,
//! sealed protobuf bodies ([`fengqiao_store::seal`]; 个人信息保护法 Art 51), the clocks kept
//! as JSON beside them, and the one list page query (scoped to an agency, by states, only
//! overdue, newest first after a `(create_time, id)` cursor).

pub use fengqiao_store::Migration;
use fengqiao_store::bind::{Bind, bind_all};
use fengqiao_store::sqlx::{self, any::AnyRow};
use fengqiao_store::{Backend, SHARED_MIGRATIONS, SHARED_SERVICE, Store, Tx};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A service's own schema: the name its migrations are recorded under and the migrations,
/// in order. Declared once per service crate with [`schema!`](crate::schema).
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// Name under which the migrations are recorded (`police_referral`).
    pub service: &'static str,
    /// The service's own migrations, in order.
    pub migrations: &'static [Migration],
}

impl Schema {
    /// Applies the shared migrations ([`SHARED_MIGRATIONS`]), then the service's own.
    pub async fn migrate(&self, store: &Store) -> Result<(), fengqiao_store::Error> {
        store.migrate(SHARED_SERVICE, SHARED_MIGRATIONS).await?;
        store.migrate(self.service, self.migrations).await
    }
}

/// Declares a service's [`Schema`]: the name its migrations are recorded under, then one
/// `(version, name, script)` per migration, the script's path relative to the crate's root
/// (its `Cargo.toml`). A portable script ([`Migration::portable`]) is one path; a migration
/// with a script per backend ([`Migration::pair`]) gives the SQLite path, then the PostgreSQL
/// one.
///
/// ```ignore
/// pub const SCHEMA: Schema = fengqiao_kit::schema!("router", [
///     (1, "agencies", "migrations/0001_agencies.sql"),
///     (3, "audit", "migrations/0003_audit.sqlite.sql", "migrations/0003_audit.postgres.sql"),
/// ]);
/// ```
#[macro_export]
macro_rules! schema {
    ($service:expr, [$(($version:expr, $name:expr, $script:literal $(, $postgres:literal)? $(,)?)),* $(,)?]) => {
        $crate::records::Schema {
            service: $service,
            migrations: &[$($crate::__migration!($version, $name, $script $(, $postgres)?)),*],
        }
    };
}

/// One migration of [`schema!`](crate::schema).
#[doc(hidden)]
#[macro_export]
macro_rules! __migration {
    ($version:expr, $name:expr, $script:literal) => {
        $crate::records::Migration::portable(
            $version,
            $name,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $script)),
        )
    };
    ($version:expr, $name:expr, $sqlite:literal, $postgres:literal) => {
        $crate::records::Migration::pair(
            $version,
            $name,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $sqlite)),
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $postgres)),
        )
    };
}

/// Seals `m` for the column `context` (`"<table>.<column>"`).
pub fn seal_message(context: &str, m: &impl prost::Message) -> Result<Vec<u8>, Error> {
    Ok(fengqiao_store::seal::seal(context, &m.encode_to_vec())?)
}

/// Opens and decodes what [`seal_message`] wrote for `context` (CORRUPT naming the column
/// when it does not decode).
pub fn open_message<M: prost::Message + Default>(context: &str, body: &[u8]) -> Result<M, Error> {
    let plain = fengqiao_store::seal::open(context, body)?;
    M::decode(plain.as_slice()).map_err(|e| Error::Corrupt(format!("{context}: {e}")))
}

/// The clocks of a record as stored (JSON).
pub fn clocks_json(clocks: &impl Serialize) -> Result<String, Error> {
    serde_json::to_string(clocks).map_err(|e| Error::Internal(format!("clocks: {e}")))
}

/// The clocks [`clocks_json`] stored for a `what` (CORRUPT naming it when they do not parse).
pub fn clocks_of<C: DeserializeOwned>(what: &str, json: &str) -> Result<C, Error> {
    serde_json::from_str(json).map_err(|e| Error::Corrupt(format!("{what} clocks: {e}")))
}

/// A failed write as the kit's error: a unique-constraint violation as `on_unique` says (a
/// number reused, a concurrent insert), anything else as the store's error.
pub fn unique_as(e: sqlx::Error, on_unique: impl FnOnce() -> Error) -> Error {
    let e = fengqiao_store::Error::from(e);
    if e.is_unique_violation() {
        on_unique()
    } else {
        Error::Store(e)
    }
}

/// The one row `sql` selects with `binds`, decoded, or `None`.
pub async fn fetch_one<T>(
    tx: &mut Tx,
    sql: &str,
    binds: &[Bind],
    decode: impl Fn(&AnyRow) -> Result<T, Error>,
) -> Result<Option<T>, Error> {
    let row = bind_all(sqlx::query(sql), binds)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Locks the rows of `table` with `column = value` for the rest of a write transaction on
/// PostgreSQL (SQLite write transactions are serialised already), so that concurrent changes
/// of one record (a caller's, a router message's, a deadline's) apply one after the other
/// instead of failing on the version.
pub async fn lock_rows(tx: &mut Tx, table: &str, column: &str, value: &str) -> Result<(), Error> {
    if Backend::of(tx) == Backend::Postgres {
        sqlx::query(&format!(
            "SELECT {column} FROM {table} WHERE {column} = $1 FOR UPDATE"
        ))
        .bind(value.to_owned())
        .fetch_all(&mut **tx)
        .await?;
    }
    Ok(())
}

/// `" FOR UPDATE"` on PostgreSQL, nothing on SQLite: appended to a SELECT of a write
/// transaction, it locks the rows it reads (see [`lock_rows`]).
pub fn for_update(tx: &mut Tx) -> &'static str {
    if Backend::of(tx) == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    }
}

/// The filters of a list page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Only rows in one of these states (their enum numbers); every state when empty.
    pub states: Vec<i32>,
    /// Only rows marked overdue (`overdue = 1`).
    pub overdue_only: bool,
    /// Only rows after this `(create_time, id)` cursor.
    pub after: Option<(i64, String)>,
    /// At most this many rows.
    pub limit: u32,
}

impl Page {
    /// A page of rows in `states` (every state when empty), only overdue ones if
    /// `overdue_only`, after the cursor `after`, at most `limit`.
    pub fn of<S: Copy + Into<i32>>(
        states: &[S],
        overdue_only: bool,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Self {
        Page {
            states: states.iter().map(|s| (*s).into()).collect(),
            overdue_only,
            after,
            limit,
        }
    }
}

/// The SQL of [`list`]: `select` (ending in a condition that binds `$1`), the page's filters
/// on the columns of `alias` (`"d."`, or `""`), newest first (ties by id, descending).
fn list_sql(select: &str, alias: &str, page: &Page) -> String {
    let mut sql = select.to_owned();
    if !page.states.is_empty() {
        let list: Vec<String> = page.states.iter().map(i32::to_string).collect();
        sql.push_str(&format!(" AND {alias}state IN ({})", list.join(", ")));
    }
    if page.overdue_only {
        sql.push_str(&format!(" AND {alias}overdue = 1"));
    }
    if page.after.is_some() {
        sql.push_str(&format!(
            " AND ({alias}create_time < $2 OR ({alias}create_time = $2 AND {alias}id < $3))"
        ));
    }
    sql.push_str(&format!(
        " ORDER BY {alias}create_time DESC, {alias}id DESC LIMIT {}",
        page.limit
    ));
    sql
}

/// The rows of one list page: `select` with `scope` bound to its `$1`, filtered by `page` on
/// the columns `state`, `overdue`, `create_time` and `id` of `alias`.
pub async fn list(
    tx: &mut Tx,
    select: &str,
    alias: &str,
    scope: &str,
    page: &Page,
) -> Result<Vec<AnyRow>, Error> {
    let sql = list_sql(select, alias, page);
    let mut q = sqlx::query(&sql).bind(scope.to_owned());
    if let Some((t, id)) = &page.after {
        q = q.bind(*t).bind(id.clone());
    }
    Ok(q.fetch_all(&mut **tx).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_store::both_backends;
    use fengqiao_store::sqlx::Row as _;

    #[test]
    fn bodies_round_trip_sealed_and_clocks_as_json() {
        fengqiao_store::seal::install_for_tests();
        let m = prost_types::Duration {
            seconds: 7,
            nanos: 0,
        };
        let sealed = seal_message("t.body", &m).expect("seal");
        assert_ne!(sealed, prost::Message::encode_to_vec(&m));
        let back: prost_types::Duration = open_message("t.body", &sealed).expect("open");
        assert_eq!(back, m);
        assert!(open_message::<prost_types::Duration>("t.other", &sealed).is_err());
        let json = clocks_json(&vec![1, 2]).expect("json");
        assert_eq!(clocks_of::<Vec<i32>>("case", &json).expect("parse"), [1, 2]);
        assert!(matches!(
            clocks_of::<Vec<i32>>("case", "{"),
            Err(Error::Corrupt(m)) if m.starts_with("case clocks")
        ));
    }

    async fn ids(tx: &mut Tx, page: Page) -> Result<Vec<String>, Error> {
        let select = "SELECT x.id FROM t x WHERE x.owner = $1";
        let rows = list(tx, select, "x.", "o1", &page).await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?)
    }

    both_backends!(
        list_pages_filter_and_page_newest_first,
        |store: Store| async move {
            let mut tx = store.write().await?;
            sqlx::query(
                "CREATE TABLE t (id TEXT PRIMARY KEY, owner TEXT NOT NULL, state BIGINT NOT NULL, \
             overdue BIGINT NOT NULL, create_time BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            for (id, owner, state, overdue, t) in [
                ("a", "o1", 1, 0, 10),
                ("b", "o1", 2, 1, 20),
                ("c", "o1", 1, 0, 20),
                ("d", "o2", 1, 1, 30),
            ] {
                sqlx::query(
                "INSERT INTO t (id, owner, state, overdue, create_time) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(owner)
            .bind(state as i64)
            .bind(overdue as i64)
            .bind(t as i64)
            .execute(&mut *tx)
            .await?;
            }
            let all = Page {
                limit: 10,
                ..Page::default()
            };
            assert_eq!(ids(&mut tx, all.clone()).await?, ["c", "b", "a"]);
            let first = Page {
                limit: 1,
                ..Page::default()
            };
            assert_eq!(ids(&mut tx, first).await?, ["c"]);
            let after = Page {
                after: Some((20, "c".into())),
                ..all.clone()
            };
            assert_eq!(ids(&mut tx, after).await?, ["b", "a"]);
            let state = Page::of(&[1], false, None, 10);
            assert_eq!(ids(&mut tx, state).await?, ["c", "a"]);
            let overdue = Page {
                overdue_only: true,
                ..all
            };
            assert_eq!(ids(&mut tx, overdue).await?, ["b"]);

            lock_rows(&mut tx, "t", "owner", "o1").await?;
            let sql = format!(
                "SELECT id FROM t WHERE owner = $1 AND state = $2{}",
                for_update(&mut tx)
            );
            let id = |r: &AnyRow| Ok(r.try_get::<String, _>("id")?);
            let one =
                fetch_one(&mut tx, &sql, &[Bind::Text("o1".into()), Bind::Int(2)], id).await?;
            assert_eq!(one.as_deref(), Some("b"));
            let none =
                fetch_one(&mut tx, &sql, &[Bind::Text("o9".into()), Bind::Int(2)], id).await?;
            assert_eq!(none, None);
            // Last: on PostgreSQL the violation aborts the transaction.
            let again = sqlx::query(
                "INSERT INTO t (id, owner, state, overdue, create_time) VALUES ('a', 'o', 1, 0, 1)",
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_as(e, || Error::AlreadyExists("a".into())));
            assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
            Ok::<(), Error>(())
        }
    );

    const KIT_SCHEMA: Schema = crate::schema!(
        "kit_schema",
        [
            (1, "a", "testdata/0001_kit_schema.sql"),
            (
                2,
                "b",
                "testdata/0002_kit_schema.sqlite.sql",
                "testdata/0002_kit_schema.postgres.sql",
            ),
        ]
    );

    #[test]
    fn schema_declares_portable_and_paired_scripts_from_the_crate_root() {
        assert_eq!(KIT_SCHEMA.service, "kit_schema");
        let [a, b] = KIT_SCHEMA.migrations else {
            panic!("two migrations: {:?}", KIT_SCHEMA.migrations);
        };
        assert_eq!((a.version, a.name), (1, "a"));
        assert_eq!(a.sqlite, include_str!("../testdata/0001_kit_schema.sql"));
        assert_eq!(a.postgres, None);
        assert_eq!((b.version, b.name), (2, "b"));
        assert_eq!(
            b.sqlite,
            include_str!("../testdata/0002_kit_schema.sqlite.sql")
        );
        assert_eq!(
            b.postgres,
            Some(include_str!("../testdata/0002_kit_schema.postgres.sql"))
        );
    }

    both_backends!(
        schema_applies_the_shared_migrations_then_its_own,
        |store: Store| async move {
            KIT_SCHEMA.migrate(&store).await?;
            // Twice: applied migrations are skipped.
            KIT_SCHEMA.migrate(&store).await?;
            let mut tx = store.write().await?;
            let recorded: Vec<(String, i64)> = sqlx::query(
                "SELECT service, version FROM schema_migrations ORDER BY service, version",
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("service")?, r.try_get("version")?)))
            .collect::<Result<_, sqlx::Error>>()?;
            let shared = SHARED_MIGRATIONS.len();
            assert_eq!(
                recorded.iter().filter(|(s, _)| s == SHARED_SERVICE).count(),
                shared
            );
            let own: Vec<i64> = recorded
                .iter()
                .filter(|(s, _)| s == "kit_schema")
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(own, [1, 2]);
            let backend: String =
                sqlx::query("INSERT INTO kit_schema_b (id) VALUES ('x') RETURNING backend")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("backend")?;
            let expected = match Backend::of(&tx) {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            };
            assert_eq!(backend, expected);
            Ok::<(), Error>(())
        }
    );
}
