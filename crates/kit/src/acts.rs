//! One act on one stored record, the write path the record-keeping agency services share
//! (administrative disputes, judicial confirmation): replay an earlier answer to the same
//! request id, or load the record as the caller's agency sees it, check the etag, bring it
//! to the database's time, apply the act, save it at the next version and record the answer
//! — in one write transaction.

use fengqiao_store::Store;
/// The transaction the [`Acts`] of [`record_acts!`] run in.
pub use fengqiao_store::Tx;
/// The attribute [`record_acts!`] writes its impl with.
pub use tonic::async_trait;

use crate::Identity;
use crate::agency::{check_etag, found};
use crate::error::Error;
use crate::idem::Idem;

/// What [`act`] needs from a service's store and domain.
#[tonic::async_trait]
pub trait Acts: Send + Sync + 'static {
    /// A record as loaded: the record and its row version.
    type Stored: Send + Sync;
    /// The domain record an act changes.
    type Record: Send + Sync;
    /// The resource an act answers (and an idempotent retry replays).
    type Resource: prost::Message + Default + Send + Sync;

    /// The record `name` as `agency` sees it; `None` when it is missing or not visible
    /// (the same answer either way).
    async fn load(tx: &mut Tx, agency: &str, name: &str) -> Result<Option<Self::Stored>, Error>;

    /// The records `agency` sees after the keyset cursor `after`, newest first, at most
    /// `limit`, in every state.
    async fn page(
        tx: &mut Tx,
        agency: &str,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Self::Stored>, Error>;

    /// The keyset cursor `(create_time, id)` of a stored record.
    fn cursor(stored: &Self::Stored) -> (i64, String);

    /// The row version (the etag's).
    fn version(stored: &Self::Stored) -> i64;

    /// The stored record as of `now` (overdue clocks swept).
    fn current(stored: &Self::Stored, now: i64) -> Result<Self::Record, Error>;

    /// Writes `next` over `stored` at the next version (ETAG_MISMATCH when a concurrent
    /// writer came first), with whatever else the service records beside it, and answers
    /// the resource as saved.
    async fn save(
        tx: &mut Tx,
        stored: &Self::Stored,
        next: &Self::Record,
        now: i64,
    ) -> Result<Self::Resource, Error>;
}

/// Applies `f` (the current record and the database's time, in µs, to the next record) to
/// the record `name` for `who`, in one write transaction: an earlier answer to `request_id`
/// of `method` with the same `request` is replayed; a record the caller's agency does not
/// see is NOT_FOUND; a non-empty `etag` must match; the answer is recorded for retries.
#[allow(clippy::too_many_arguments)]
pub async fn act<A: Acts, M: prost::Message>(
    store: &Store,
    who: &Identity,
    method: &str,
    request: &M,
    name: &str,
    etag: &str,
    request_id: &str,
    f: impl FnOnce(&A::Record, i64) -> Result<A::Record, Error>,
) -> Result<A::Resource, Error> {
    let idem = Idem::new(who, method, request_id, request)?;
    let mut tx = store.write().await?;
    if let Some(answer) = idem.replay::<A::Resource>(&mut tx).await? {
        return Ok(answer);
    }
    let now = fengqiao_store::db_now_micros(&mut tx).await?;
    let stored = found(A::load(&mut tx, &who.agency, name).await?, name)?;
    check_etag(name, etag, A::version(&stored))?;
    let current = A::current(&stored, now)?;
    let next = f(&current, now)?;
    let saved = A::save(&mut tx, &stored, &next, now).await?;
    idem.save(&mut tx, &saved).await?;
    tx.commit().await?;
    Ok(saved)
}

/// Writes the [`Acts`] of a service whose store keeps the usual form: a `Stored` with the
/// domain `record` (its resource in the field `field`, named `{collection}/{id}`) and the row
/// `version`; `load(tx, agency, name)` and `list(tx, agency, states, overdue_only, after,
/// limit)` reading what an agency sees; `current(&mut record, now)` sweeping the record's
/// clocks; `save(tx, &stored, &next, now)` answering the resource as saved.
///
/// ```ignore
/// record_acts!(Disputes: db::Stored, Record => Dispute;
///     field = dispute, collection = "disputes", load = db::load, list = db::list,
///     save = saved, current = |r: &mut Record, now| dom::sweep(r, now, cal));
/// ```
#[macro_export]
macro_rules! record_acts {
    ($(#[$meta:meta])* $name:ident: $stored:ty, $record:ty => $resource:ty;
     field = $field:ident, collection = $collection:literal, load = $load:path,
     list = $list:path, save = $save:path, current = $current:expr $(,)?) => {
        $(#[$meta])*
        struct $name;

        #[$crate::acts::async_trait]
        impl $crate::acts::Acts for $name {
            type Stored = $stored;
            type Record = $record;
            type Resource = $resource;

            async fn load(
                tx: &mut $crate::acts::Tx,
                agency: &str,
                name: &str,
            ) -> Result<Option<$stored>, $crate::Error> {
                $load(tx, agency, name).await
            }

            async fn page(
                tx: &mut $crate::acts::Tx,
                agency: &str,
                after: Option<(i64, String)>,
                limit: u32,
            ) -> Result<Vec<$stored>, $crate::Error> {
                $list(tx, agency, &[], false, after, limit).await
            }

            fn cursor(stored: &$stored) -> (i64, String) {
                let r = &stored.record.$field;
                $crate::agency::cursor_of(r.create_time.as_ref(), &r.name, $collection)
            }

            fn version(stored: &$stored) -> i64 {
                stored.version
            }

            fn current(stored: &$stored, now: i64) -> Result<$record, $crate::Error> {
                let mut r = stored.record.clone();
                ($current)(&mut r, now)?;
                Ok(r)
            }

            async fn save(
                tx: &mut $crate::acts::Tx,
                stored: &$stored,
                next: &$record,
                now: i64,
            ) -> Result<$resource, $crate::Error> {
                $save(tx, stored, next, now).await
            }
        }
    };
}

/// The record `name` as `agency` sees it as of the database's time (overdue clocks swept for
/// the answer; the next write persists the sweep), or `None` when it is missing or not
/// visible.
pub async fn read<A: Acts>(
    store: &Store,
    agency: &str,
    name: &str,
) -> Result<Option<A::Record>, Error> {
    let mut tx = store.read().await?;
    let now = fengqiao_store::db_now_micros(&mut tx).await?;
    match A::load(&mut tx, agency, name).await? {
        Some(stored) => A::current(&stored, now).map(Some),
        None => Ok(None),
    }
}

/// [`read`] for a caller: NOT_FOUND naming `name` when `agency` does not see it.
pub async fn get<A: Acts>(store: &Store, agency: &str, name: &str) -> Result<A::Record, Error> {
    found(read::<A>(store, agency, name).await?, name)
}

/// How many records [`each`] reads at a time.
pub const EACH_PAGE: u32 = 500;

/// Hands every record `agency` sees, newest first, to `f` (the statistics' walk), reading
/// them [`EACH_PAGE`] at a time in `tx`.
pub async fn each<A: Acts>(
    tx: &mut Tx,
    agency: &str,
    mut f: impl FnMut(A::Stored) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut after = None;
    loop {
        let rows = A::page(tx, agency, after.take(), EACH_PAGE).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some(A::cursor(last));
        for stored in rows {
            f(stored)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_store::both_backends;
    use fengqiao_store::sqlx::{self, Row as _};

    /// A counter per agency: the record is its value, the resource the value and version.
    struct Counters;

    #[tonic::async_trait]
    impl Acts for Counters {
        type Stored = (i64, i64);
        type Record = i64;
        type Resource = prost_types::Duration;

        async fn load(tx: &mut Tx, agency: &str, name: &str) -> Result<Option<(i64, i64)>, Error> {
            let row = sqlx::query("SELECT n, version FROM counters WHERE id = $1 AND agency = $2")
                .bind(name.to_owned())
                .bind(agency.to_owned())
                .fetch_optional(&mut **tx)
                .await?;
            Ok(match row {
                Some(r) => Some((r.try_get("n")?, r.try_get("version")?)),
                None => None,
            })
        }

        async fn page(
            tx: &mut Tx,
            agency: &str,
            after: Option<(i64, String)>,
            limit: u32,
        ) -> Result<Vec<(i64, i64)>, Error> {
            // The counter's value stands for its creation time, its id for its name.
            let (t, id) = after.unwrap_or((i64::MAX, String::new()));
            let rows = sqlx::query(
                "SELECT id, n, version FROM counters WHERE agency = $1 \
                 AND (n < $2 OR (n = $2 AND id < $3) OR $3 = '') ORDER BY n DESC, id DESC",
            )
            .bind(agency.to_owned())
            .bind(t)
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
            let mut out = Vec::new();
            for r in rows.iter().take(limit as usize) {
                out.push((r.try_get("n")?, r.try_get("version")?));
            }
            Ok(out)
        }

        fn cursor(stored: &(i64, i64)) -> (i64, String) {
            (stored.0, "c".into())
        }

        fn version(stored: &(i64, i64)) -> i64 {
            stored.1
        }

        fn current(stored: &(i64, i64), _now: i64) -> Result<i64, Error> {
            Ok(stored.0)
        }

        async fn save(
            tx: &mut Tx,
            stored: &(i64, i64),
            next: &i64,
            _now: i64,
        ) -> Result<prost_types::Duration, Error> {
            let version = stored.1 + 1;
            let done = sqlx::query("UPDATE counters SET n = $1, version = $2 WHERE version = $3")
                .bind(*next)
                .bind(version)
                .bind(stored.1)
                .execute(&mut **tx)
                .await?;
            if done.rows_affected() != 1 {
                return Err(Error::EtagMismatch("c".into()));
            }
            Ok(prost_types::Duration {
                seconds: *next,
                nanos: version as i32,
            })
        }
    }

    fn who(agency: &str) -> Identity {
        Identity {
            agency: agency.into(),
            actor: "a1".into(),
            roles: vec![],
            method: crate::auth::AuthMethod::Token,
            person: None,
        }
    }

    async fn add(
        store: &Store,
        agency: &str,
        etag: &str,
        request_id: &str,
        by: i64,
    ) -> Result<prost_types::Duration, Error> {
        let request = prost_types::Duration {
            seconds: by,
            nanos: 0,
        };
        act::<Counters, _>(
            store,
            &who(agency),
            "Add",
            &request,
            "c",
            etag,
            request_id,
            |n, now| {
                assert!(now > 0);
                if by < 0 {
                    return Err(Error::Internal("refused".into()));
                }
                Ok(n + by)
            },
        )
        .await
    }

    both_backends!(
        acts_replay_check_the_etag_and_scope_and_commit_once,
        |store: Store| async move {
            store
                .migrate(
                    fengqiao_store::SHARED_SERVICE,
                    fengqiao_store::SHARED_MIGRATIONS,
                )
                .await?;
            let mut tx = store.write().await?;
            sqlx::query(
                "CREATE TABLE counters (id TEXT PRIMARY KEY, agency TEXT NOT NULL, \
                 n BIGINT NOT NULL, version BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO counters (id, agency, n, version) VALUES ('c', 'o1', 0, 1)")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            let r1 = "11111111-1111-4111-8111-111111111111";
            let r2 = "22222222-2222-4222-8222-222222222222";
            let r3 = "33333333-3333-4333-8333-333333333333";
            let first = add(&store, "o1", "", r1, 5).await?;
            assert_eq!((first.seconds, first.nanos), (5, 2));
            // A retry replays the answer and changes nothing.
            let again = add(&store, "o1", "", r1, 5).await?;
            assert_eq!(again, first);
            let stale = crate::etag::etag(1);
            let e = add(&store, "o1", &stale, r2, 1).await;
            assert!(matches!(e, Err(Error::EtagMismatch(_))), "{e:?}");
            let fresh = crate::etag::etag(2);
            let second = add(&store, "o1", &fresh, r2, 1).await?;
            assert_eq!((second.seconds, second.nanos), (6, 3));
            let e = add(&store, "o2", "", r3, 1).await;
            assert!(matches!(&e, Err(Error::NotFound(n)) if n == "c"), "{e:?}");
            // A refused act writes nothing.
            let e = add(&store, "o1", "", r3, -1).await;
            assert!(matches!(e, Err(Error::Internal(_))), "{e:?}");
            let mut tx = store.read().await?;
            let n: i64 = sqlx::query("SELECT n FROM counters WHERE id = 'c'")
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            assert_eq!(n, 6);
            // Reads sweep as `current` does and see only the caller's agency.
            assert_eq!(read::<Counters>(&store, "o1", "c").await?, Some(6));
            assert_eq!(read::<Counters>(&store, "o2", "c").await?, None);
            let e = get::<Counters>(&store, "o2", "c").await;
            assert!(matches!(&e, Err(Error::NotFound(n)) if n == "c"), "{e:?}");
            let mut tx = store.read().await?;
            let mut seen = Vec::new();
            each::<Counters>(&mut tx, "o1", |s| {
                seen.push(s);
                Ok(())
            })
            .await?;
            assert_eq!(seen, [(6, 3)]);
            let mut none = 0;
            each::<Counters>(&mut tx, "o2", |_| {
                none += 1;
                Ok(())
            })
            .await?;
            assert_eq!(none, 0);
            Ok::<(), Error>(())
        }
    );
}
