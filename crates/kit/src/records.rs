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

/// The highest `seq` of the child rows of `table` whose `column` is `value`, 0 when there is
/// none: a child appended next takes one more (case-file entries, documents).
pub async fn last_seq(tx: &mut Tx, table: &str, column: &str, value: &str) -> Result<i64, Error> {
    let row = sqlx::query(&format!(
        "SELECT COALESCE(MAX(seq), 0) AS n FROM {table} WHERE {column} = $1"
    ))
    .bind(value.to_owned())
    .fetch_one(&mut **tx)
    .await?;
    Ok(sqlx::Row::try_get(&row, "n")?)
}

/// A list query built filter by filter, for lists whose filters go beyond [`Page`]'s: a
/// `SELECT … WHERE …` with the caller's scope as `$1`, then ` AND …` clauses whose `?` are
/// numbered in the order they come, then [`Filtered::fetch`]'s keyset page, newest first on a
/// time column (`(time, id)` after the page token's cursor).
#[derive(Debug, Clone)]
pub struct Filtered {
    sql: String,
    binds: Vec<Bind>,
}

impl Filtered {
    /// `select` (ending in a `WHERE` condition on `$1`) with `scope` bound as `$1`.
    pub fn new(select: impl Into<String>, scope: &str) -> Self {
        Self {
            sql: select.into(),
            binds: vec![Bind::Text(scope.to_owned())],
        }
    }

    /// Appends `clause` (` AND …`), its `?` standing for `bind`.
    pub fn and(&mut self, clause: &str, bind: Bind) -> &mut Self {
        self.binds.push(bind);
        let n = format!("${}", self.binds.len());
        self.sql.push_str(&clause.replace('?', &n));
        self
    }

    /// ` AND {column} = value` unless `value` is empty.
    pub fn text(&mut self, column: &str, value: &str) -> &mut Self {
        if !value.is_empty() {
            self.and(&format!(" AND {column} = ?"), Bind::Text(value.to_owned()));
        }
        self
    }

    /// ` AND {column} = value` unless `value` is 0 (an enum left unspecified).
    pub fn int(&mut self, column: &str, value: i32) -> &mut Self {
        if value != 0 {
            self.and(&format!(" AND {column} = ?"), Bind::Int(i64::from(value)));
        }
        self
    }

    /// ` AND state IN (…)` for the request's `states` (at most 32, each a value of `S`),
    /// unless it is empty.
    pub fn states<S: TryFrom<i32>>(&mut self, states: &[i32]) -> Result<&mut Self, Error> {
        if !states.is_empty() {
            crate::validate::enum_values::<S>("states", states, 32)?;
            let list: Vec<String> = states.iter().map(i32::to_string).collect();
            self.sql
                .push_str(&format!(" AND state IN ({})", list.join(", ")));
        }
        Ok(self)
    }

    /// `start <= {column} < end`, each bound when given.
    pub fn time_range(
        &mut self,
        column: &str,
        start: Option<&prost_types::Timestamp>,
        end: Option<&prost_types::Timestamp>,
    ) -> &mut Self {
        if let Some(t) = start {
            self.and(
                &format!(" AND {column} >= ?"),
                Bind::Int(crate::time::from_timestamp(t)),
            );
        }
        if let Some(t) = end {
            self.and(
                &format!(" AND {column} < ?"),
                Bind::Int(crate::time::from_timestamp(t)),
            );
        }
        self
    }

    /// The SQL and binds of the page after `after` (`(time, id)`), newest first on `column`,
    /// `limit + 1` rows (the one more tells that there is a next page).
    pub fn page(
        mut self,
        column: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> (String, Vec<Bind>) {
        if let Some((t, id)) = after {
            self.and(&format!(" AND ({column} < ?"), Bind::Int(t));
            self.and(&format!(" OR ({column} = ?"), Bind::Int(t));
            self.and(" AND id < ?))", Bind::Text(id));
        }
        self.sql.push_str(&format!(
            " ORDER BY {column} DESC, id DESC LIMIT {}",
            limit + 1
        ));
        (self.sql, self.binds)
    }

    /// The rows of [`Filtered::page`].
    pub async fn fetch(
        self,
        tx: &mut Tx,
        column: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<AnyRow>, Error> {
        let (sql, binds) = self.page(column, after, limit);
        Ok(bind_all(sqlx::query(&sql), &binds)
            .fetch_all(&mut **tx)
            .await?)
    }
}

/// The page of `rows` fetched `limit + 1` at most ([`Filtered::fetch`], or a store's own list
/// of records): the first `limit` decoded into `(item, time, id)`, and the page token after
/// the last of them (bound to `query`, [`crate::validate::keyset_page_token`]) when there was
/// one more row, or empty.
pub fn keyset_page<R, T>(
    rows: impl IntoIterator<Item = R>,
    limit: i64,
    query: &str,
    mut decode: impl FnMut(R) -> Result<(T, i64, String), Error>,
) -> Result<(Vec<T>, String), Error> {
    let mut items = Vec::new();
    let mut last: Option<(i64, String)> = None;
    for (i, row) in rows.into_iter().enumerate() {
        if i as i64 == limit {
            let token = last
                .map(|(t, id)| crate::validate::keyset_page_token(query, t, &id))
                .unwrap_or_default();
            return Ok((items, token));
        }
        let (item, t, id) = decode(row)?;
        last = Some((t, id));
        items.push(item);
    }
    Ok((items, String::new()))
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

    fn ts(micros: i64) -> prost_types::Timestamp {
        crate::time::to_timestamp(micros)
    }

    #[test]
    fn filtered_numbers_its_binds_in_order_and_skips_empty_filters() {
        let mut q = Filtered::new("SELECT id FROM t WHERE owner = $1", "o1");
        q.text("kind", "")
            .text("number", "n-1")
            .int("category", 0)
            .int("category", 3);
        q.states::<fengqiao_proto::common::AgencyKind>(&[])
            .expect("no states");
        q.states::<fengqiao_proto::common::AgencyKind>(&[1, 2])
            .expect("states");
        q.time_range("create_time", Some(&ts(5)), None).time_range(
            "create_time",
            None,
            Some(&ts(9)),
        );
        let (sql, binds) = q.page("create_time", Some((7, "x".into())), 10);
        assert_eq!(
            sql,
            "SELECT id FROM t WHERE owner = $1 AND number = $2 AND category = $3 \
             AND state IN (1, 2) AND create_time >= $4 AND create_time < $5 \
             AND (create_time < $6 OR (create_time = $7 AND id < $8)) \
             ORDER BY create_time DESC, id DESC LIMIT 11"
        );
        assert_eq!(binds.len(), 8);
        assert!(matches!(&binds[1], Bind::Text(t) if t == "n-1"));
        assert!(matches!(binds[2], Bind::Int(3)));
        assert!(matches!(binds[3], Bind::Int(5)));
        assert!(matches!(binds[4], Bind::Int(9)));
        assert!(matches!(&binds[7], Bind::Text(t) if t == "x"));
        let unknown = Filtered::new("SELECT 1 WHERE $1 = $1", "o")
            .states::<fengqiao_proto::common::AgencyKind>(&[1, 999])
            .map(|_| ());
        assert!(matches!(unknown, Err(Error::Invalid(_))), "{unknown:?}");
    }

    both_backends!(
        filtered_pages_newest_first_with_bound_tokens,
        |store: Store| async move {
            let mut tx = store.write().await?;
            sqlx::query(
                "CREATE TABLE f (id TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, \
                 state BIGINT NOT NULL, create_time BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            for (id, owner, kind, t) in [
                ("a", "o1", "k", 10),
                ("b", "o1", "k", 20),
                ("c", "o1", "k", 20),
                ("d", "o1", "j", 30),
                ("e", "o2", "k", 40),
            ] {
                sqlx::query(
                    "INSERT INTO f (id, owner, kind, state, create_time) VALUES ($1, $2, $3, 1, $4)",
                )
                .bind(id)
                .bind(owner)
                .bind(kind)
                .bind(t as i64)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("CREATE TABLE fc (parent TEXT NOT NULL, seq BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await?;
            assert_eq!(last_seq(&mut tx, "fc", "parent", "a").await?, 0);
            for (parent, seq) in [("a", 1), ("a", 2), ("b", 5)] {
                sqlx::query("INSERT INTO fc (parent, seq) VALUES ($1, $2)")
                    .bind(parent)
                    .bind(seq as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            assert_eq!(last_seq(&mut tx, "fc", "parent", "a").await?, 2);
            assert_eq!(last_seq(&mut tx, "fc", "parent", "b").await?, 5);
            let query = "o1|k";
            let decode = |r: &AnyRow| {
                let id: String = r.try_get("id")?;
                let t: i64 = r.try_get("create_time")?;
                Ok((id.clone(), t, id))
            };
            let mut after = None;
            let mut seen = Vec::new();
            let mut pages = 0;
            loop {
                let mut q = Filtered::new("SELECT id, create_time FROM f WHERE owner = $1", "o1");
                q.text("kind", "k");
                let rows = q.fetch(&mut tx, "create_time", after.clone(), 2).await?;
                let (ids, token) = keyset_page(&rows, 2, query, decode)?;
                pages += 1;
                seen.extend(ids);
                if token.is_empty() {
                    break;
                }
                after =
                    crate::validate::parse_keyset_page_token(&token, query).map_err(Error::from)?;
                assert!(after.is_some());
                assert!(crate::validate::parse_keyset_page_token(&token, "o2|k").is_err());
            }
            assert_eq!(seen, ["c", "b", "a"]);
            assert_eq!(pages, 2);
            Ok::<(), Error>(())
        }
    );
}
