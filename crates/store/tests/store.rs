//! Store behaviour, every test on SQLite and PostgreSQL (`both_backends!`).
//!
//! `REQUIRE_POSTGRES=1 cargo test -p fengqiao-store` makes the PostgreSQL variants fail instead of
//! skipping when no throwaway cluster can be started.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fengqiao_store::idempotency::{self, IdempotencyKey};
use fengqiao_store::outbox::{self, NewMessage, Status};
use fengqiao_store::sqlx::{self, Connection as _, Executor as _};
use fengqiao_store::{
    Backend, Error, Migration, Result, SHARED_MIGRATIONS, SHARED_SERVICE, Store, StoreConfig,
    both_backends, inbox,
};

async fn shared(store: &Store) -> Result<()> {
    store.migrate(SHARED_SERVICE, SHARED_MIGRATIONS).await
}

async fn count(store: &Store, sql: &str) -> Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(store.pool())
        .await?)
}

async fn second_store(store: &Store) -> Result<Store> {
    Store::connect(store.config().clone()).await
}

fn system_micros() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_micros()).expect("fits")
}

async fn raw_connection(store: &Store) -> Result<sqlx::AnyConnection> {
    fengqiao_store::install_drivers();
    Ok(sqlx::AnyConnection::connect(&store.config().url).await?)
}

// ---------------------------------------------------------------------------------------------
// Durability

both_backends!(durability_check_passes, |store: Store| async move {
    store.check_durability().await?;
    let mut conn = raw_connection(&store).await?;
    if store.backend() == Backend::Sqlite {
        // A bare connection does not get the store's pragmas; set what the store sets.
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.execute("PRAGMA synchronous = FULL").await?;
    }
    fengqiao_store::check_durability(&mut conn).await?;
    conn.close().await?;
    Ok::<_, Error>(())
});

both_backends!(
    durability_check_refuses_unsafe_settings,
    |store: Store| async move {
        let mut conn = raw_connection(&store).await?;
        match store.backend() {
            Backend::Sqlite => {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = OFF").await?;
                match fengqiao_store::check_durability(&mut conn).await {
                    Err(Error::Durability(msg)) => assert!(msg.contains("synchronous"), "{msg}"),
                    other => panic!("expected Durability, got {other:?}"),
                }
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                assert!(matches!(
                    fengqiao_store::check_durability(&mut conn).await,
                    Err(Error::Durability(_))
                ));
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA journal_mode = DELETE").await?;
                match fengqiao_store::check_durability(&mut conn).await {
                    Err(Error::Durability(msg)) => assert!(msg.contains("journal_mode"), "{msg}"),
                    other => panic!("expected Durability, got {other:?}"),
                }
                conn.execute("PRAGMA journal_mode = WAL").await?;
            }
            Backend::Postgres => {
                conn.execute("SET synchronous_commit = off").await?;
                match fengqiao_store::check_durability(&mut conn).await {
                    Err(Error::Durability(msg)) => {
                        assert!(msg.contains("synchronous_commit"), "{msg}")
                    }
                    other => panic!("expected Durability, got {other:?}"),
                }
            }
        }
        conn.close().await?;
        Ok::<_, Error>(())
    }
);

// ---------------------------------------------------------------------------------------------
// Migrations

const SVC: &str = "svc_test";

const M1: Migration = Migration::portable(
    1,
    "notes",
    "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL, raw BLOB);
     CREATE INDEX notes_body ON notes (body);",
);

// Not idempotent on purpose: applying it twice fails on the primary key.
const M2: Migration = Migration::pair(
    2,
    "seed",
    "INSERT INTO notes (id, body) VALUES (1, 'seed');",
    "INSERT INTO notes (id, body) VALUES (1, 'seed');",
);

both_backends!(migrations_apply_once, |store: Store| async move {
    shared(&store).await?;
    store.migrate(SVC, &[M1, M2]).await?;
    store.migrate(SVC, &[M1, M2]).await?;
    shared(&store).await?;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM notes").await?, 1);
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM schema_migrations WHERE service = 'svc_test'"
        )
        .await?,
        2
    );
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM schema_migrations WHERE service = 'fengqiao_store'"
        )
        .await?,
        i64::try_from(SHARED_MIGRATIONS.len()).expect("small")
    );
    let (name, sum, applied_at): (String, String, i64) = sqlx::query_as(
        "SELECT name, checksum, applied_at FROM schema_migrations \
         WHERE service = $1 AND version = $2",
    )
    .bind(SVC)
    .bind(1_i64)
    .fetch_one(store.pool())
    .await?;
    assert_eq!(name, "notes");
    assert_eq!(
        sum,
        fengqiao_store::checksum(M1.script(store.backend()).as_bytes())
    );
    assert!((applied_at - system_micros()).abs() < 60_000_000);
    // A later binary adds a migration: only that one runs.
    let m3 = Migration::portable(
        3,
        "more",
        "INSERT INTO notes (id, body) VALUES (2, 'more');",
    );
    store.migrate(SVC, &[M1, M2, m3]).await?;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM notes").await?, 2);
    Ok::<_, Error>(())
});

both_backends!(
    migrations_refuse_changed_checksum,
    |store: Store| async move {
        store.migrate(SVC, &[M1, M2]).await?;
        let edited = Migration::portable(
            2,
            "seed",
            "INSERT INTO notes (id, body) VALUES (1, 'edited');",
        );
        match store.migrate(SVC, &[M1, edited]).await {
            Err(Error::Migration {
                service, version, ..
            }) => {
                assert_eq!(service, SVC);
                assert_eq!(version, 2);
            }
            other => panic!("expected Migration error, got {other:?}"),
        }
        Ok::<_, Error>(())
    }
);

both_backends!(
    migrations_refuse_unknown_newer_version,
    |store: Store| async move {
        store.migrate(SVC, &[M1, M2]).await?;
        match store.migrate(SVC, &[M1]).await {
            Err(e @ Error::Migration { version: 2, .. }) => {
                assert!(e.to_string().contains("newer"), "{e}")
            }
            other => panic!("expected Migration error, got {other:?}"),
        }
        // Other services are unaffected.
        store.migrate("other_svc", &[]).await?;
        Ok::<_, Error>(())
    }
);

both_backends!(failed_migration_is_rolled_back, |store: Store| async move {
    store.migrate(SVC, &[M1]).await?;
    let bad = Migration::portable(
        2,
        "bad",
        "CREATE TABLE half (id BIGINT); INSERT INTO no_such_table VALUES (1);",
    );
    match store.migrate(SVC, &[M1, bad]).await {
        Err(Error::Migration { version: 2, .. }) => {}
        other => panic!("expected Migration error, got {other:?}"),
    }
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM schema_migrations WHERE service = 'svc_test'"
        )
        .await?,
        1
    );
    // The table created by the failed script's first statement is gone too.
    let half_exists = sqlx::query("SELECT COUNT(*) FROM half")
        .fetch_one(store.pool())
        .await
        .is_ok();
    assert!(!half_exists);
    // Fixed script applies.
    store.migrate(SVC, &[M1, M2]).await?;
    Ok::<_, Error>(())
});

both_backends!(concurrent_migrators, |store: Store| async move {
    let other = second_store(&store).await?;
    let mut tasks = Vec::new();
    for s in [store.clone(), other.clone(), store.clone(), other.clone()] {
        tasks.push(tokio::spawn(async move {
            s.migrate(SHARED_SERVICE, SHARED_MIGRATIONS).await?;
            s.migrate(SVC, &[M1, M2]).await
        }));
    }
    for t in tasks {
        t.await.expect("task")?;
    }
    assert_eq!(count(&store, "SELECT COUNT(*) FROM notes").await?, 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM schema_migrations").await?,
        i64::try_from(SHARED_MIGRATIONS.len() + 2).expect("small")
    );
    other.close().await;
    Ok::<_, Error>(())
});

// ---------------------------------------------------------------------------------------------
// Clock

both_backends!(database_clock, |store: Store| async move {
    let before = system_micros();
    let mut last = store.now_micros_pool().await?;
    assert!(
        (last - before).abs() < 5_000_000,
        "db clock {last} vs system {before}"
    );
    let mut tx = store.read().await?;
    for _ in 0..20 {
        let now = store.now_micros(&mut tx).await?;
        assert!(now >= last, "clock went back: {now} < {last}");
        last = now;
    }
    tx.commit().await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = fengqiao_store::db_now_micros(&mut *store.pool().acquire().await?).await?;
    assert!(later >= last + 10_000, "{later} vs {last}");
    Ok::<_, Error>(())
});

// ---------------------------------------------------------------------------------------------
// Idempotency

both_backends!(
    idempotency_lookup_record_conflict,
    |store: Store| async move {
        shared(&store).await?;
        let key = IdempotencyKey::new("agency-a/alice", "fengqiao.case.v1.Cases/CreateCase", "r-1");
        let hash = idempotency::hash_request(b"request one");
        // Binary response with NUL and high bytes: BLOB/BYTEA round trip.
        let response: Vec<u8> = vec![0, 1, 2, 0xff, 0xfe, 0, 42];

        let mut tx = store.write().await?;
        assert_eq!(idempotency::lookup(&mut tx, &key, &hash).await?, None);
        idempotency::record(&mut tx, &key, &hash, &response).await?;
        tx.commit().await?;

        let mut tx = store.write().await?;
        assert_eq!(
            idempotency::lookup(&mut tx, &key, &hash).await?,
            Some(response.clone())
        );
        let other_hash = idempotency::hash_request(b"request two");
        assert!(matches!(
            idempotency::lookup(&mut tx, &key, &other_hash).await,
            Err(Error::IdempotencyConflict)
        ));
        // Another request id, method or caller is a different key.
        let key2 =
            IdempotencyKey::new("agency-a/alice", "fengqiao.case.v1.Cases/CreateCase", "r-2");
        assert_eq!(idempotency::lookup(&mut tx, &key2, &hash).await?, None);
        let key3 = IdempotencyKey::new("agency-b/bob", "fengqiao.case.v1.Cases/CreateCase", "r-1");
        assert_eq!(idempotency::lookup(&mut tx, &key3, &hash).await?, None);
        tx.rollback().await?;

        // Recording twice (lookup skipped) is a concurrent modification.
        let mut tx = store.write().await?;
        assert!(matches!(
            idempotency::record(&mut tx, &key, &hash, b"x").await,
            Err(Error::ConcurrentModification)
        ));
        drop(tx);

        // A rolled-back record leaves nothing.
        let mut tx = store.write().await?;
        idempotency::record(&mut tx, &key2, &hash, b"").await?;
        tx.rollback().await?;
        let mut tx = store.write().await?;
        assert_eq!(idempotency::lookup(&mut tx, &key2, &hash).await?, None);
        tx.rollback().await?;

        // Empty responses are fine; purge removes old keys.
        let purged = idempotency::purge_older_than(&store, system_micros() + 60_000_000).await?;
        assert_eq!(purged, 1);
        Ok::<_, Error>(())
    }
);

both_backends!(
    idempotency_concurrent_same_key_runs_once,
    |store: Store| async move {
        shared(&store).await?;
        store.migrate(SVC, &[M1]).await?;
        let mut tasks = Vec::new();
        for i in 0..4_i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = IdempotencyKey::new("c", "m", "same");
                let hash = idempotency::hash_request(b"payload");
                let mut tx = store.write().await?;
                if let Some(stored) = idempotency::lookup(&mut tx, &key, &hash).await? {
                    tx.rollback().await?;
                    return Ok::<_, Error>(stored);
                }
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, 'work')")
                    .bind(100 + i)
                    .execute(&mut *tx)
                    .await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let response = format!("done by {i}").into_bytes();
                idempotency::record(&mut tx, &key, &hash, &response).await?;
                tx.commit().await?;
                Ok(response)
            }));
        }
        let mut responses = HashSet::new();
        for t in tasks {
            responses.insert(t.await.expect("task")?);
        }
        assert_eq!(responses.len(), 1, "every caller got the same response");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM notes").await?, 1);
        Ok::<_, Error>(())
    }
);

both_backends!(
    idempotency_under_row_lock_runs_once_and_reads_the_clock,
    |store: Store| async move {
        shared(&store).await?;
        store.migrate(SVC, &[M1]).await?;
        sqlx::query("INSERT INTO notes (id, body) VALUES (1, 'case')")
            .execute(store.pool())
            .await?;
        let key = IdempotencyKey::new("c", "m", "same");
        let hash = idempotency::hash_request(b"payload");
        let mut conn = store.pool().acquire().await?;
        let before = system_micros();
        let (none, now) = idempotency::lookup_unlocked_with_now(&mut conn, &key, &hash).await?;
        assert_eq!(none, None);
        assert!(
            (now - before).abs() < 60_000_000,
            "the database clock in unix microseconds: {now} vs {before}"
        );
        drop(conn);
        // Every call locks the row its request names first (FOR UPDATE on PostgreSQL; SQLite
        // write transactions are serialised), then looks the key up without a lock of its own.
        let lock = match store.backend() {
            fengqiao_store::Backend::Postgres => " FOR UPDATE",
            fengqiao_store::Backend::Sqlite => "",
        };
        let mut tasks = Vec::new();
        for i in 0..4_i64 {
            let store = store.clone();
            let (key, hash) = (key.clone(), hash.clone());
            tasks.push(tokio::spawn(async move {
                let mut tx = store.write().await?;
                sqlx::query(&format!("SELECT id FROM notes WHERE id = 1{lock}"))
                    .fetch_one(&mut *tx)
                    .await?;
                let (stored, _) =
                    idempotency::lookup_unlocked_with_now(&mut tx, &key, &hash).await?;
                if let Some(stored) = stored {
                    tx.rollback().await?;
                    return Ok::<_, Error>(stored);
                }
                sqlx::query("UPDATE notes SET body = body || 'x' WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let response = format!("done by {i}").into_bytes();
                idempotency::record(&mut tx, &key, &hash, &response).await?;
                tx.commit().await?;
                Ok(response)
            }));
        }
        let mut responses = HashSet::new();
        for t in tasks {
            responses.insert(t.await.expect("task")?);
        }
        assert_eq!(responses.len(), 1, "every caller got the same response");
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM notes WHERE body = 'casex'").await?,
            1,
            "the work was done once"
        );
        // A different request under the same key is refused.
        let mut conn = store.pool().acquire().await?;
        let other = idempotency::hash_request(b"other payload");
        assert!(matches!(
            idempotency::lookup_unlocked_with_now(&mut conn, &key, &other).await,
            Err(Error::IdempotencyConflict)
        ));
        Ok::<_, Error>(())
    }
);

// ---------------------------------------------------------------------------------------------
// Outbox

async fn enqueue_committed(store: &Store, key: &str, kind: &str) -> Result<(String, i64)> {
    let msg = NewMessage::new("police-referral", key, kind, kind.as_bytes().to_vec());
    let mut tx = store.write().await?;
    let seq = outbox::enqueue(&mut tx, &msg).await?;
    tx.commit().await?;
    Ok((msg.id, seq))
}

fn ids(msgs: &[outbox::OutboxMessage]) -> Vec<String> {
    msgs.iter().map(|m| m.id.clone()).collect()
}

const LONG: Duration = Duration::from_secs(60);

both_backends!(
    outbox_enqueue_many_with_and_without_key_locks_keeps_order,
    |store: Store| async move {
        shared(&store).await?;
        let a = [
            NewMessage::new("dest", "k1", "A1", vec![1]),
            NewMessage::new("dest", "k2", "B1", vec![2]),
            NewMessage::new("dest", "k1", "A2", vec![3]),
        ];
        let b = [NewMessage::new("dest", "k2", "B2", vec![4])];
        let mut tx = store.write().await?;
        outbox::enqueue_many(&mut tx, &a).await?;
        outbox::enqueue_many_serialised(&mut tx, &b).await?;
        outbox::enqueue_many_serialised(&mut tx, &[]).await?;
        tx.commit().await?;
        let mut got = Vec::new();
        for m in a.iter().chain(b.iter()) {
            let stored = outbox::get(&store, &m.id).await?.expect("enqueued");
            assert_eq!(stored.payload, m.payload);
            got.push(stored.seq);
        }
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "seq in the order given: {got:?}"
        );
        // One per ordering key, the first of each.
        let claimed = outbox::claim(&store, "w", 10, LONG).await?;
        assert_eq!(ids(&claimed), vec![a[0].id.clone(), a[1].id.clone()]);
        Ok::<_, Error>(())
    }
);

both_backends!(
    outbox_enqueue_in_rolled_back_tx_leaves_nothing,
    |store: Store| async move {
        shared(&store).await?;
        let msg = NewMessage::new("dest", "case-1", "CaseCreated", vec![1, 2, 3]);
        let mut tx = store.write().await?;
        outbox::enqueue(&mut tx, &msg).await?;
        tx.rollback().await?;
        assert_eq!(outbox::get(&store, &msg.id).await?, None);
        assert!(outbox::claim(&store, "w", 10, LONG).await?.is_empty());

        // Committed: stored with all fields, NULLs decode as None.
        let mut tx = store.write().await?;
        let seq = outbox::enqueue(&mut tx, &msg).await?;
        tx.commit().await?;
        let stored = outbox::get(&store, &msg.id).await?.expect("stored");
        assert_eq!(stored.seq, seq);
        assert_eq!(stored.payload, vec![1, 2, 3]);
        assert_eq!(stored.status, Status::Pending);
        assert_eq!(stored.attempts, 0);
        assert_eq!(stored.lease_until, None);
        assert_eq!(stored.lease_owner, None);
        assert_eq!(stored.last_error, None);
        assert_eq!(stored.delivered_at, None);
        assert!((stored.created_at - system_micros()).abs() < 60_000_000);
        // Duplicate ids are refused.
        let mut tx = store.write().await?;
        let dup = outbox::enqueue(&mut tx, &msg)
            .await
            .expect_err("duplicate id");
        assert!(dup.is_unique_violation(), "{dup}");
        Ok::<_, Error>(())
    }
);

both_backends!(
    outbox_claim_respects_per_key_order,
    |store: Store| async move {
        shared(&store).await?;
        let (a1, _) = enqueue_committed(&store, "case-a", "a1").await?;
        let (a2, _) = enqueue_committed(&store, "case-a", "a2").await?;
        let (b1, _) = enqueue_committed(&store, "case-b", "b1").await?;

        let first = outbox::claim(&store, "w1", 10, LONG).await?;
        assert_eq!(ids(&first), vec![a1.clone(), b1.clone()]);
        assert_eq!(first[0].attempts, 1);
        assert_eq!(first[0].lease_owner.as_deref(), Some("w1"));
        assert_eq!(first[0].payload, b"a1".to_vec());

        // a2 waits for a1; a1 and b1 are leased.
        assert!(outbox::claim(&store, "w2", 10, LONG).await?.is_empty());
        outbox::mark_delivered(&store, &a1).await?;
        outbox::mark_delivered(&store, &a1).await?; // idempotent
        let next = outbox::claim(&store, "w2", 10, LONG).await?;
        assert_eq!(ids(&next), vec![a2.clone()]);
        let delivered = outbox::get(&store, &a1).await?.expect("a1");
        assert_eq!(delivered.status, Status::Delivered);
        assert!(delivered.delivered_at.is_some());
        assert!(matches!(
            outbox::mark_delivered(&store, "no-such-id").await,
            Err(Error::NotFound(_))
        ));
        // limit is honoured.
        enqueue_committed(&store, "case-c", "c1").await?;
        enqueue_committed(&store, "case-d", "d1").await?;
        assert_eq!(outbox::claim(&store, "w3", 1, LONG).await?.len(), 1);
        Ok::<_, Error>(())
    }
);

both_backends!(
    outbox_lease_blocks_reclaim_until_expiry,
    |store: Store| async move {
        shared(&store).await?;
        let (m, _) = enqueue_committed(&store, "case-a", "m").await?;
        // Generous lease: the immediate re-claim must happen within it even on a loaded machine.
        let lease = Duration::from_secs(2);
        let first = outbox::claim(&store, "w1", 10, lease).await?;
        assert_eq!(ids(&first), vec![m.clone()]);
        assert!(outbox::claim(&store, "w2", 10, lease).await?.is_empty());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let again = outbox::claim(&store, "w2", 10, lease).await?;
        assert_eq!(ids(&again), vec![m.clone()]);
        assert_eq!(again[0].attempts, 2);
        assert_eq!(again[0].lease_owner.as_deref(), Some("w2"));
        Ok::<_, Error>(())
    }
);

both_backends!(
    outbox_mark_failed_schedules_retry,
    |store: Store| async move {
        shared(&store).await?;
        let (m, _) = enqueue_committed(&store, "case-a", "m").await?;
        let claimed = outbox::claim(&store, "w", 10, LONG).await?;
        assert_eq!(ids(&claimed), vec![m.clone()]);
        let attempt = u32::try_from(claimed[0].attempts).expect("small");
        let delay = outbox::backoff(
            attempt,
            Duration::from_secs(2),
            Duration::from_secs(30),
            0.0,
        );
        assert_eq!(delay, Duration::from_secs(2));
        let now = store.now_micros_pool().await?;
        let at = now + i64::try_from(delay.as_micros()).expect("fits");
        outbox::mark_failed(&store, &m, "connection refused", at).await?;
        let stored = outbox::get(&store, &m).await?.expect("stored");
        assert_eq!(stored.status, Status::Pending);
        assert_eq!(stored.last_error.as_deref(), Some("connection refused"));
        assert_eq!(stored.next_attempt_at, at);
        assert_eq!(stored.lease_until, None);
        // Not due yet, even though the lease was released.
        assert!(outbox::claim(&store, "w", 10, LONG).await?.is_empty());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let retried = outbox::claim(&store, "w", 10, LONG).await?;
        assert_eq!(ids(&retried), vec![m.clone()]);
        assert_eq!(retried[0].attempts, 2);
        // Long errors are truncated, not refused.
        outbox::mark_failed(&store, &m, &"x".repeat(10_000), now).await?;
        let stored = outbox::get(&store, &m).await?.expect("stored");
        assert!(stored.last_error.map(|e| e.len()).unwrap_or(0) <= 1000);
        Ok::<_, Error>(())
    }
);

both_backends!(
    outbox_dead_blocks_key_until_retried,
    |store: Store| async move {
        shared(&store).await?;
        let (m1, _) = enqueue_committed(&store, "case-a", "m1").await?;
        let (m2, _) = enqueue_committed(&store, "case-a", "m2").await?;
        assert_eq!(
            ids(&outbox::claim(&store, "w", 10, LONG).await?),
            vec![m1.clone()]
        );
        outbox::mark_dead(&store, &m1, "receiver rejected message").await?;
        let dead = outbox::list_dead(&store, 10).await?;
        assert_eq!(ids(&dead), vec![m1.clone()]);
        assert_eq!(dead[0].status, Status::Dead);
        assert_eq!(
            dead[0].last_error.as_deref(),
            Some("receiver rejected message")
        );
        // m2 stays blocked behind the dead m1.
        assert!(outbox::claim(&store, "w", 10, LONG).await?.is_empty());
        // Dead messages cannot be failed again; unknown ids are NotFound.
        assert!(matches!(
            outbox::mark_failed(&store, &m1, "x", 0).await,
            Err(Error::ConcurrentModification)
        ));
        assert!(matches!(
            outbox::mark_dead(&store, "nope", "x").await,
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            outbox::retry_dead(&store, &m2).await,
            Err(Error::NotFound(_))
        ));

        outbox::retry_dead(&store, &m1).await?;
        assert!(outbox::list_dead(&store, 10).await?.is_empty());
        let again = outbox::claim(&store, "w", 10, LONG).await?;
        assert_eq!(ids(&again), vec![m1.clone()]);
        assert_eq!(again[0].attempts, 1, "attempts were reset");
        outbox::mark_delivered(&store, &m1).await?;
        assert_eq!(
            ids(&outbox::claim(&store, "w", 10, LONG).await?),
            vec![m2.clone()]
        );
        Ok::<_, Error>(())
    }
);

// The PostgreSQL trap: a message with a lower seq commits after one with a higher seq has
// been claimed. A cursor on "highest seq seen" would skip it forever; claiming by state
// does not.
both_backends!(
    outbox_late_commit_is_not_skipped,
    |store: Store| async move {
        shared(&store).await?;
        let m1 = NewMessage::new("dest", "case-1", "late", b"late".to_vec());
        let m2 = NewMessage::new("dest", "case-2", "early", b"early".to_vec());
        match store.backend() {
            Backend::Postgres => {
                // A and B on separate pooled connections, interleaved.
                let mut tx_a = store.write().await?;
                let seq1 = outbox::enqueue(&mut tx_a, &m1).await?;
                let mut tx_b = store.write().await?;
                let seq2 = outbox::enqueue(&mut tx_b, &m2).await?;
                assert!(seq1 < seq2);
                tx_b.commit().await?;
                let first = outbox::claim(&store, "w", 10, LONG).await?;
                assert_eq!(ids(&first), vec![m2.id.clone()]);
                outbox::mark_delivered(&store, &m2.id).await?;
                tx_a.commit().await?;
            }
            Backend::Sqlite => {
                // Writers are serialised (BEGIN IMMEDIATE), so commit order is seq order; check
                // the same observable behaviour sequentially.
                let mut tx_b = store.write().await?;
                outbox::enqueue(&mut tx_b, &m2).await?;
                tx_b.commit().await?;
                let first = outbox::claim(&store, "w", 10, LONG).await?;
                assert_eq!(ids(&first), vec![m2.id.clone()]);
                outbox::mark_delivered(&store, &m2.id).await?;
                let mut tx_a = store.write().await?;
                outbox::enqueue(&mut tx_a, &m1).await?;
                tx_a.commit().await?;
            }
        }
        let second = outbox::claim(&store, "w", 10, LONG).await?;
        assert_eq!(ids(&second), vec![m1.id.clone()]);
        Ok::<_, Error>(())
    }
);

// Same ordering key from two transactions: the second waits for the first (PostgreSQL advisory
// lock, SQLite write lock), so seq order is commit order and per-key FIFO holds.
both_backends!(
    outbox_same_key_enqueues_serialise,
    |store: Store| async move {
        shared(&store).await?;
        if store.backend() == Backend::Postgres {
            let m1 = NewMessage::new("dest", "case-1", "first", Vec::new());
            let mut tx_a = store.write().await?;
            let seq1 = outbox::enqueue(&mut tx_a, &m1).await?;
            let s2 = store.clone();
            let second = tokio::spawn(async move {
                let m2 = NewMessage::new("dest", "case-1", "second", Vec::new());
                let mut tx_b = s2.write().await?;
                let seq2 = outbox::enqueue(&mut tx_b, &m2).await?;
                tx_b.commit().await?;
                Ok::<_, Error>((m2.id, seq2))
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(
                !second.is_finished(),
                "second enqueue must wait for the first"
            );
            // Meanwhile nothing of case-1 is visible.
            assert!(outbox::claim(&store, "w", 10, LONG).await?.is_empty());
            tx_a.commit().await?;
            let (m2, seq2) = second.await.expect("task")?;
            assert!(seq1 < seq2);
            assert_eq!(
                ids(&outbox::claim(&store, "w", 10, LONG).await?),
                vec![m1.id.clone()]
            );
            outbox::mark_delivered(&store, &m1.id).await?;
            assert_eq!(ids(&outbox::claim(&store, "w", 10, LONG).await?), vec![m2]);
        }
        Ok::<_, Error>(())
    }
);

both_backends!(
    outbox_concurrent_claimers_never_share,
    |store: Store| async move {
        shared(&store).await?;
        let mut all = HashSet::new();
        for i in 0..20 {
            all.insert(
                enqueue_committed(&store, &format!("case-{i}"), "m")
                    .await?
                    .0,
            );
        }
        let mut tasks = Vec::new();
        for w in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..3 {
                    mine.extend(ids(&outbox::claim(&store, &format!("w{w}"), 3, LONG).await?));
                }
                Ok::<_, Error>(mine)
            }));
        }
        let mut seen = HashSet::new();
        for t in tasks {
            for id in t.await.expect("task")? {
                assert!(seen.insert(id), "a message was claimed twice");
            }
        }
        assert!(seen.is_subset(&all));
        assert!(outbox::claim(&store, "late", 100, LONG).await?.len() + seen.len() == all.len());
        Ok::<_, Error>(())
    }
);

async fn enqueue_to(store: &Store, dest: &str, key: &str) -> Result<String> {
    let msg = NewMessage::new(dest, key, "k", Vec::new());
    let mut tx = store.write().await?;
    outbox::enqueue(&mut tx, &msg).await?;
    tx.commit().await?;
    Ok(msg.id)
}

both_backends!(
    outbox_claim_for_filters_destinations,
    |store: Store| async move {
        shared(&store).await?;
        let a1 = enqueue_to(&store, "agencies/a", "k1").await?;
        let b1 = enqueue_to(&store, "agencies/b", "k2").await?;
        // Same ordering key as a1 but another destination: FIFO still applies.
        let b2 = enqueue_to(&store, "agencies/b", "k1").await?;
        let c1 = enqueue_to(&store, "agencies/c", "k3").await?;

        assert!(
            outbox::claim_for(&store, "w", &[], 10, LONG)
                .await?
                .is_empty()
        );
        let only_b = outbox::claim_for(&store, "w", &["agencies/b".to_string()], 10, LONG).await?;
        assert_eq!(
            ids(&only_b),
            vec![b1.clone()],
            "b2 waits behind a1 of its key"
        );
        assert_eq!(only_b[0].attempts, 1);
        assert_eq!(only_b[0].lease_owner.as_deref(), Some("w"));
        let dests = vec!["agencies/a".to_string(), "agencies/c".to_string()];
        let ac = outbox::claim_for(&store, "w2", &dests, 1, LONG).await?;
        assert_eq!(ids(&ac), vec![a1.clone()], "limit honoured, seq order");
        outbox::mark_delivered(&store, &a1).await?;
        let rest = outbox::claim_for(
            &store,
            "w3",
            &["agencies/b".to_string(), "agencies/c".to_string()],
            10,
            LONG,
        )
        .await?;
        assert_eq!(ids(&rest), vec![b2.clone(), c1.clone()]);

        // Long destination lists are claimed in chunks.
        let many: Vec<String> = (0..1200).map(|i| format!("agencies/x{i}")).collect();
        let x = enqueue_to(&store, "agencies/x1100", "k9").await?;
        assert_eq!(
            ids(&outbox::claim_for(&store, "w4", &many, 10, LONG).await?),
            vec![x]
        );
        Ok::<_, Error>(())
    }
);

both_backends!(outbox_release_and_count_leases, |store: Store| async move {
    shared(&store).await?;
    let m1 = enqueue_to(&store, "d", "k1").await?;
    let m2 = enqueue_to(&store, "d", "k2").await?;
    assert_eq!(outbox::count_leased(&store, "w").await?, 0);
    assert_eq!(outbox::claim(&store, "w", 10, LONG).await?.len(), 2);
    assert_eq!(outbox::count_leased(&store, "w").await?, 2);
    assert_eq!(outbox::count_leased(&store, "other").await?, 0);
    outbox::mark_delivered(&store, &m1).await?;
    assert_eq!(outbox::count_leased(&store, "w").await?, 1);
    assert_eq!(outbox::release_leases(&store, "other").await?, 0);
    assert_eq!(outbox::release_leases(&store, "w").await?, 1);
    assert_eq!(outbox::count_leased(&store, "w").await?, 0);
    // Released: claimable again at once, by anyone.
    let again = outbox::claim(&store, "w2", 10, LONG).await?;
    assert_eq!(ids(&again), vec![m2.clone()]);
    assert_eq!(again[0].attempts, 2);
    // An expired lease no longer counts.
    outbox::release_leases(&store, "w2").await?;
    outbox::claim(&store, "w3", 10, Duration::from_millis(1)).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(outbox::count_leased(&store, "w3").await?, 0);
    Ok::<_, Error>(())
});

both_backends!(outbox_in_transaction_variants, |store: Store| async move {
    shared(&store).await?;
    let m = enqueue_to(&store, "d", "k1").await?;
    // Rolled back: nothing changes.
    let mut tx = store.write().await?;
    assert!(outbox::mark_delivered_in(&mut tx, &m).await?);
    assert!(!outbox::mark_delivered_in(&mut tx, &m).await?);
    assert_eq!(
        outbox::get_in(&mut tx, &m).await?.map(|x| x.status),
        Some(Status::Delivered)
    );
    tx.rollback().await?;
    assert_eq!(
        outbox::get(&store, &m).await?.map(|x| x.status),
        Some(Status::Pending)
    );

    let mut tx = store.write().await?;
    assert!(matches!(
        outbox::mark_delivered_in(&mut tx, "nope").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(outbox::get_in(&mut tx, "nope").await?, None);
    outbox::mark_failed_in(&mut tx, &m, "UNAVAILABLE: down", 0).await?;
    outbox::mark_dead_in(&mut tx, &m, "UNAVAILABLE: down").await?;
    assert!(matches!(
        outbox::mark_failed_in(&mut tx, &m, "x", 0).await,
        Err(Error::ConcurrentModification)
    ));
    assert!(matches!(
        outbox::mark_dead_in(&mut tx, &m, "x").await,
        Err(Error::ConcurrentModification)
    ));
    tx.commit().await?;
    assert_eq!(ids(&outbox::list_dead(&store, 10).await?), vec![m.clone()]);

    let mut tx = store.write().await?;
    outbox::retry_dead_in(&mut tx, &m).await?;
    assert!(matches!(
        outbox::retry_dead_in(&mut tx, &m).await,
        Err(Error::NotFound(_))
    ));
    tx.commit().await?;
    let back = outbox::get(&store, &m).await?.expect("stored");
    assert_eq!(back.status, Status::Pending);
    assert_eq!(back.attempts, 0);
    assert!(outbox::mark_delivered_in(&mut store.write().await?, &m).await?);
    Ok::<_, Error>(())
});

both_backends!(inbox_case_sequences_table, |store: Store| async move {
    shared(&store).await?;
    let mut tx = store.write().await?;
    sqlx::query(
        "INSERT INTO inbox_case_sequences (consumer, case_id, last_sequence) VALUES ($1, $2, $3)",
    )
    .bind("mediation")
    .bind("case-1")
    .bind(7_i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    assert_eq!(
        count(&store, "SELECT last_sequence FROM inbox_case_sequences").await?,
        7
    );
    Ok::<_, Error>(())
});

// ---------------------------------------------------------------------------------------------
// Inbox

both_backends!(inbox_record_once, |store: Store| async move {
    shared(&store).await?;
    let mut tx = store.write().await?;
    assert!(inbox::record_once(&mut tx, "mediation", "msg-1").await?);
    assert!(!inbox::record_once(&mut tx, "mediation", "msg-1").await?);
    tx.commit().await?;
    let mut tx = store.write().await?;
    assert!(!inbox::record_once(&mut tx, "mediation", "msg-1").await?);
    assert!(inbox::record_once(&mut tx, "router", "msg-1").await?);
    assert!(inbox::record_once(&mut tx, "mediation", "msg-2").await?);
    tx.rollback().await?;
    // The rolled-back ones were not kept.
    let mut tx = store.write().await?;
    assert!(inbox::record_once(&mut tx, "router", "msg-1").await?);
    tx.commit().await?;
    Ok::<_, Error>(())
});

both_backends!(
    inbox_record_once_at_answers_the_clock,
    |store: Store| async move {
        shared(&store).await?;
        let before = system_micros();
        let mut tx = store.write().await?;
        let at = inbox::record_once_at(&mut tx, "mediation", "msg-1").await?;
        let at = at.expect("recorded the first time");
        assert!(
            (at - before).abs() < 60_000_000,
            "unix microseconds: {at} vs {before}"
        );
        assert_eq!(
            inbox::record_once_at(&mut tx, "mediation", "msg-1").await?,
            None
        );
        assert!(!inbox::record_once(&mut tx, "mediation", "msg-1").await?);
        tx.commit().await?;
        let mut tx = store.write().await?;
        assert_eq!(
            inbox::record_once_at(&mut tx, "mediation", "msg-1").await?,
            None
        );
        assert!(
            inbox::record_once_at(&mut tx, "router", "msg-1")
                .await?
                .is_some()
        );
        tx.rollback().await?;
        let stored: i64 = sqlx::query_scalar(
            "SELECT received_at FROM inbox WHERE consumer = 'mediation' AND message_id = 'msg-1'",
        )
        .fetch_one(store.pool())
        .await?;
        assert_eq!(stored, at, "the answer is the recorded time");
        Ok::<_, Error>(())
    }
);

// ---------------------------------------------------------------------------------------------
// Concurrency and errors

both_backends!(concurrent_writers_all_succeed, |store: Store| async move {
    store.migrate(SVC, &[M1]).await?;
    let mut tasks = Vec::new();
    for t in 0..8_i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50_i64 {
                let mut tx = store.write().await?;
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes")
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                    .bind(t * 1000 + i)
                    .bind(format!("seen {n}"))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("task")?;
    }
    assert_eq!(count(&store, "SELECT COUNT(*) FROM notes").await?, 400);
    Ok::<_, Error>(())
});

both_backends!(
    errors_are_classified_and_redacted,
    |store: Store| async move {
        store.migrate(SVC, &[M1]).await?;
        let secret = "110101199003077777";
        sqlx::query("INSERT INTO notes (id, body) VALUES (7, $1)")
            .bind(secret)
            .execute(store.pool())
            .await?;
        let err: Error = sqlx::query("INSERT INTO notes (id, body) VALUES (7, $1)")
            .bind(secret)
            .execute(store.pool())
            .await
            .expect_err("duplicate")
            .into();
        assert!(err.is_unique_violation(), "{err}");
        assert!(!err.is_serialization_failure());
        assert!(!err.to_string().contains(secret), "{err}");
        assert!(!format!("{err:?}").contains(secret), "{err:?}");
        assert!(err.to_string().contains("notes"), "{err}");

        // A value that does not decode: the Any driver's message would quote it.
        let err: Error = sqlx::query_scalar::<_, i64>("SELECT body FROM notes WHERE id = 7")
            .fetch_one(store.pool())
            .await
            .expect_err("text is not i64")
            .into();
        assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");

        match store.backend() {
            Backend::Postgres => {
                // Data exceptions quote the value in the server message.
                let err: Error = sqlx::query_scalar::<_, i64>("SELECT CAST($1 AS BIGINT)")
                    .bind(secret.to_string() + "x")
                    .fetch_one(store.pool())
                    .await
                    .expect_err("not a number")
                    .into();
                assert_eq!(err.db_code().as_deref(), Some("22P02"));
                assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");
                deadlock_is_serialization_failure(&store).await?;
            }
            Backend::Sqlite => {
                // A second writer that cannot get the lock in time reports BUSY.
                let mut cfg = store.config().clone();
                cfg.busy_timeout = Duration::from_millis(100);
                let impatient = Store::connect(cfg).await?;
                let held = store.write().await?;
                let err = impatient.write().await.expect_err("busy");
                assert!(err.is_serialization_failure(), "{err}");
                assert!(err.is_retryable());
                drop(held);
                impatient.close().await;
            }
        }
        Ok::<_, Error>(())
    }
);

async fn deadlock_is_serialization_failure(store: &Store) -> Result<()> {
    sqlx::query("INSERT INTO notes (id, body) VALUES (1, 'a'), (2, 'b')")
        .execute(store.pool())
        .await?;
    let run = |first: i64, second: i64| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tx = store.write().await?;
            sqlx::query("UPDATE notes SET body = 'x' WHERE id = $1")
                .bind(first)
                .execute(&mut *tx)
                .await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            sqlx::query("UPDATE notes SET body = 'y' WHERE id = $1")
                .bind(second)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        })
    };
    let a = run(1, 2);
    let b = run(2, 1);
    let results = [a.await.expect("task"), b.await.expect("task")];
    let failures: Vec<&Error> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failures.len(), 1, "exactly one deadlock victim");
    assert!(failures[0].is_serialization_failure(), "{}", failures[0]);
    assert_eq!(failures[0].db_code().as_deref(), Some("40P01"));
    Ok(())
}

#[test]
fn sqlite_store_creates_missing_directories() {
    let dir = fengqiao_store::testing::TempDir::new();
    let url = format!("sqlite://{}/a/b/c.db", dir.path().display());
    fengqiao_store::testing::block_on(async move {
        let store = Store::connect(StoreConfig::new(url)).await?;
        assert_eq!(store.backend(), Backend::Sqlite);
        store.check_durability().await?;
        store.close().await;
        Ok::<_, Error>(())
    });
    assert!(dir.path().join("a/b/c.db").is_file());
}

// ---------------------------------------------------------------------------------------------
// Cancelled transactions

// A `write()` (or `read()`) whose caller goes away while it is beginning — a client deadline
// cutting a call off, a `select!` — leaves no transaction behind on the pooled connection.
// sqlx 0.8 constructs its `Transaction` (whose drop rolls back) only after every await of the
// begin: on SQLite the `BEGIN IMMEDIATE` of `write()` has already taken the write lock when
// the last of them is cancelled, and the connection went back to the pool inside it, holding
// the lock (every later writer: "database is locked", or refused as a nested custom BEGIN);
// on PostgreSQL the session stays in a transaction no one ends. Found through a cut-off
// `AcknowledgeFeedback` whose referral never healed (police-referral `truth.rs`).
both_backends!(
    a_begin_cancelled_at_any_point_leaves_no_transaction,
    |store: Store| async move {
        let mut config = store.config().clone();
        // One connection: whatever the cancelled begin left on it, the next one gets.
        config.max_connections = 1;
        config.acquire_timeout = Duration::from_secs(5);
        let one = Store::connect(config).await?;
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        for polls in 1..=12u32 {
            for pause_us in [0u64, 20, 50, 100, 200, 400, 800] {
                for write in [true, false] {
                    {
                        let mut begin = if write {
                            Box::pin(one.write()) as std::pin::Pin<Box<dyn Future<Output = _>>>
                        } else {
                            Box::pin(one.read())
                        };
                        for _ in 0..polls {
                            if begin.as_mut().poll(&mut cx).is_ready() {
                                break;
                            }
                            // The driver works on its own thread (SQLite) or socket meanwhile.
                            std::thread::sleep(Duration::from_micros(pause_us));
                        }
                        // Dropped here, wherever it was.
                    }
                    let mut tx = tokio::time::timeout(Duration::from_secs(10), one.write())
                        .await
                        .map_err(|_| Error::Durability(format!("write() hung after a cancelled begin ({polls} polls, {pause_us} µs)")))??;
                    // A fresh transaction sees no open one around it.
                    if one.backend() == Backend::Postgres {
                        let level: i64 = sqlx::query_scalar(
                            "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_stat_activity \
                             WHERE datname = current_database() AND pid <> pg_backend_pid() \
                               AND state LIKE 'idle in transaction%'",
                        )
                        .fetch_one(&mut *tx)
                        .await?;
                        assert_eq!(
                            level, 0,
                            "a session left in a transaction ({polls} polls, {pause_us} µs)"
                        );
                    }
                    tx.commit().await?;
                }
            }
        }
        one.close().await;
        Ok::<_, Error>(())
    }
);

both_backends!(
    receipts_of_several_messages_are_marked_in_one_statement,
    |store: Store| async move {
        shared(&store).await?;
        let a = enqueue_to(&store, "d", "ka").await?;
        let b = enqueue_to(&store, "d", "kb").await?;
        let c = enqueue_to(&store, "d", "kc").await?;
        // b failed once before; c is delivered already.
        let mut tx = store.write().await?;
        outbox::mark_failed_in(&mut tx, &b, "UNAVAILABLE: down", 0).await?;
        assert!(outbox::mark_delivered_in(&mut tx, &c).await?);
        tx.commit().await?;

        let mut tx = store.write().await?;
        // An id given twice is delivered by its first place only.
        let got = outbox::mark_delivered_many_noting_failures_in(
            &mut tx,
            &[a.as_str(), b.as_str(), c.as_str(), a.as_str()],
        )
        .await?;
        assert_eq!(got, vec![Some(false), Some(true), None, None]);
        tx.commit().await?;
        for id in [&a, &b, &c] {
            assert_eq!(
                outbox::get(&store, id).await?.map(|m| m.status),
                Some(Status::Delivered)
            );
        }
        // Marking them again changes nothing; an unknown id fails the whole call.
        let mut tx = store.write().await?;
        assert_eq!(
            outbox::mark_delivered_many_noting_failures_in(&mut tx, &[a.as_str()]).await?,
            vec![None]
        );
        assert!(matches!(
            outbox::mark_delivered_many_noting_failures_in(&mut tx, &[a.as_str(), "nope"]).await,
            Err(Error::NotFound(_))
        ));
        tx.rollback().await?;
        Ok::<_, Error>(())
    }
);
