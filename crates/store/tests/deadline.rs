//! The deadline table and timer (`fengqiao_store::deadline`), every test on SQLite and
//! PostgreSQL (`both_backends!`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fengqiao_store::deadline::{
    self, BoxFuture, Deadline, DeadlineHandler, DeadlineTimer, HandlerError, Pass,
};
use fengqiao_store::sqlx::{self, Executor as _};
use fengqiao_store::{
    Backend, Error, Result, SHARED_MIGRATIONS, SHARED_SERVICE, Store, Tx, both_backends,
};

const OWNER: &str = "judicial-confirmation";
const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SECOND;
const DAY: i64 = 24 * HOUR;

async fn setup(store: &Store) -> Result<()> {
    store.migrate(SHARED_SERVICE, SHARED_MIGRATIONS).await?;
    // The handlers' effects: one row per firing, written in the timer's transaction.
    store
        .pool()
        .execute("CREATE TABLE fired_log (key TEXT NOT NULL, payload TEXT NOT NULL)")
        .await?;
    Ok(())
}

async fn now(store: &Store) -> Result<i64> {
    store.now_micros_pool().await
}

fn system_micros() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_else(|e| panic!("clock before 1970: {e}"));
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

async fn schedule(store: &Store, key: &str, due_at: i64, payload: &str) -> Result<()> {
    let mut tx = store.write().await?;
    deadline::schedule(&mut tx, OWNER, key, due_at, Some(payload.as_bytes())).await?;
    tx.commit().await?;
    Ok(())
}

async fn get(store: &Store, key: &str) -> Result<Option<Deadline>> {
    let mut conn = store.pool().acquire().await?;
    deadline::get(&mut conn, OWNER, key).await
}

/// `(key, payload)` of every firing, in key order.
async fn log(store: &Store) -> Result<Vec<(String, String)>> {
    Ok(
        sqlx::query_as("SELECT key, payload FROM fired_log ORDER BY key, payload")
            .fetch_all(store.pool())
            .await?,
    )
}

/// Writes the firing into `fired_log` in the timer's transaction; fails the first
/// `fail_first` calls (after writing, so a rollback is visible), optionally slowly.
#[derive(Default)]
struct Recorder {
    calls: Arc<AtomicUsize>,
    fail_first: usize,
    delay: Duration,
}

impl DeadlineHandler for Recorder {
    fn fire<'a>(
        &'a self,
        tx: &'a mut Tx,
        d: &'a Deadline,
    ) -> BoxFuture<'a, std::result::Result<(), HandlerError>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let payload = String::from_utf8(d.payload.clone().unwrap_or_default())?;
            sqlx::query("INSERT INTO fired_log (key, payload) VALUES ($1, $2)")
                .bind(&d.key)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if call < self.fail_first {
                return Err("the agency's handler failed".into());
            }
            Ok(())
        })
    }
}

fn timer(store: &Store, handler: Recorder) -> DeadlineTimer {
    DeadlineTimer::new(store.clone(), OWNER, handler)
}

fn pass(fired: usize, failed: usize, skipped: usize) -> Pass {
    Pass {
        fired,
        failed,
        skipped,
    }
}

both_backends!(
    fires_once_when_due_and_not_before,
    |store: Store| async move {
        setup(&store).await?;
        let t0 = now(&store).await?;
        schedule(&store, "cases/1/review", t0 - 1, "review").await?;
        schedule(&store, "cases/2/review", t0 + HOUR, "later").await?;
        // Another owner's deadline is not this timer's.
        let mut tx = store.write().await?;
        deadline::schedule(&mut tx, "mediation", "cases/1/review", t0 - 1, None).await?;
        tx.commit().await?;

        let timer = timer(&store, Recorder::default());
        assert_eq!(timer.run_once().await?, pass(1, 0, 0));
        assert_eq!(
            log(&store).await?,
            vec![("cases/1/review".to_owned(), "review".to_owned())]
        );
        assert_eq!(timer.run_once().await?, pass(0, 0, 0), "fired once");
        assert_eq!(log(&store).await?.len(), 1);

        let fired = get(&store, "cases/1/review")
            .await?
            .expect("kept as a record");
        let t1 = now(&store).await?;
        assert!(fired.fired_at.is_some_and(|f| (t0..=t1).contains(&f)));
        assert_eq!((fired.attempts, fired.due_at), (1, t0 - 1));
        let later = get(&store, "cases/2/review").await?.expect("pending");
        assert_eq!((later.fired_at, later.attempts), (None, 0));
        assert_eq!(later.payload.as_deref(), Some("later".as_bytes()));
        let mut conn = store.pool().acquire().await?;
        let other = deadline::get(&mut conn, "mediation", "cases/1/review").await?;
        assert!(other.is_some_and(|d| d.fired_at.is_none()));
        // Fired records can be purged; pending ones stay.
        assert_eq!(deadline::purge_fired(&mut conn, OWNER, t1 + 1).await?, 1);
        assert!(
            deadline::get(&mut conn, OWNER, "cases/1/review")
                .await?
                .is_none()
        );
        assert!(
            deadline::get(&mut conn, OWNER, "cases/2/review")
                .await?
                .is_some()
        );
        Ok::<_, Error>(())
    }
);

both_backends!(
    two_timers_fire_each_deadline_exactly_once,
    |store: Store| async move {
        setup(&store).await?;
        let t0 = now(&store).await?;
        let n = 30;
        for i in 0..n {
            schedule(&store, &format!("cases/{i:02}/review"), t0 - 1, "due").await?;
        }
        // Two processes: two pools on one database, each with its own timer.
        let other = Store::connect(store.config().clone()).await?;
        let calls = Arc::new(AtomicUsize::new(0));
        let slow = |s: &Store| {
            timer(
                s,
                Recorder {
                    calls: calls.clone(),
                    delay: Duration::from_millis(5),
                    ..Default::default()
                },
            )
            .with_interval(Duration::from_millis(10))
            .with_batch(7)
        };
        let a = slow(&store).spawn();
        let b = slow(&other).spawn();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while log(&store).await?.len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let both run a little longer: nothing may fire twice.
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.stop().await;
        b.stop().await;
        other.close().await;
        let fired = log(&store).await?;
        let keys: Vec<String> = fired.iter().map(|(k, _)| k.clone()).collect();
        let want: Vec<String> = (0..n).map(|i| format!("cases/{i:02}/review")).collect();
        assert_eq!(keys, want, "each deadline exactly once");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            n,
            "no handler call was rolled back"
        );
        Ok::<_, Error>(())
    }
);

both_backends!(cancel_removes_a_deadline, |store: Store| async move {
    setup(&store).await?;
    let t0 = now(&store).await?;
    schedule(&store, "cases/1/review", t0 - 1, "x").await?;
    let mut tx = store.write().await?;
    assert!(deadline::cancel(&mut tx, OWNER, "cases/1/review").await?);
    assert!(!deadline::cancel(&mut tx, OWNER, "cases/1/review").await?);
    assert!(!deadline::cancel(&mut tx, OWNER, "cases/none").await?);
    tx.commit().await?;
    let timer = timer(&store, Recorder::default());
    assert_eq!(timer.run_once().await?, pass(0, 0, 0));
    assert!(log(&store).await?.is_empty());
    // A cancel that rolls back cancels nothing.
    schedule(&store, "cases/2/review", t0 - 1, "y").await?;
    let mut tx = store.write().await?;
    assert!(deadline::cancel(&mut tx, OWNER, "cases/2/review").await?);
    tx.rollback().await?;
    assert_eq!(timer.run_once().await?, pass(1, 0, 0));
    // Cancelling a fired deadline removes its record but reports nothing pending.
    let mut tx = store.write().await?;
    assert!(!deadline::cancel(&mut tx, OWNER, "cases/2/review").await?);
    tx.commit().await?;
    assert!(get(&store, "cases/2/review").await?.is_none());
    Ok::<_, Error>(())
});

both_backends!(rescheduling_replaces, |store: Store| async move {
    setup(&store).await?;
    let t0 = now(&store).await?;
    let timer = timer(&store, Recorder::default());
    // Due, then moved into the future (e.g. extended 15 + 10 days): does not fire.
    schedule(&store, "cases/1/review", t0 - 1, "15 days").await?;
    schedule(&store, "cases/1/review", t0 + 10 * DAY, "25 days").await?;
    assert_eq!(timer.run_once().await?, pass(0, 0, 0));
    let d = get(&store, "cases/1/review").await?.expect("scheduled");
    assert_eq!(d.due_at, t0 + 10 * DAY);
    assert_eq!(d.payload.as_deref(), Some("25 days".as_bytes()));
    assert!(d.updated_at >= d.created_at);
    // Moved back to now: fires, with the new payload.
    schedule(&store, "cases/1/review", t0 - 1, "now").await?;
    assert_eq!(timer.run_once().await?, pass(1, 0, 0));
    // Rescheduled after firing: armed again, fires again.
    schedule(&store, "cases/1/review", t0, "again").await?;
    let d = get(&store, "cases/1/review").await?.expect("scheduled");
    assert_eq!((d.fired_at, d.attempts), (None, 0));
    assert_eq!(timer.run_once().await?, pass(1, 0, 0));
    assert_eq!(
        log(&store).await?,
        vec![
            ("cases/1/review".to_owned(), "again".to_owned()),
            ("cases/1/review".to_owned(), "now".to_owned()),
        ]
    );
    Ok::<_, Error>(())
});

both_backends!(
    a_handler_error_fires_on_a_later_pass,
    |store: Store| async move {
        setup(&store).await?;
        let t0 = now(&store).await?;
        schedule(&store, "cases/1/review", t0 - 1, "flaky").await?;
        schedule(&store, "cases/2/review", t0, "fine").await?;
        let calls = Arc::new(AtomicUsize::new(0));
        let timer = timer(
            &store,
            Recorder {
                calls: calls.clone(),
                fail_first: 1,
                ..Default::default()
            },
        );
        // The first (earliest due) fails; the other still fires in the same pass.
        assert_eq!(timer.run_once().await?, pass(1, 1, 0));
        assert_eq!(
            log(&store).await?,
            vec![("cases/2/review".to_owned(), "fine".to_owned())],
            "the failed handler's write was rolled back"
        );
        let d = get(&store, "cases/1/review").await?.expect("still there");
        assert_eq!((d.fired_at, d.attempts), (None, 1));
        assert_eq!(timer.run_once().await?, pass(1, 0, 0));
        let d = get(&store, "cases/1/review").await?.expect("record");
        assert!(d.fired_at.is_some());
        assert_eq!(d.attempts, 2);
        assert_eq!(log(&store).await?.len(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        Ok::<_, Error>(())
    }
);

both_backends!(time_comes_from_the_database, |store: Store| async move {
    setup(&store).await?;
    match store.backend() {
        Backend::Postgres => {
            // Put this database's clock ten days ahead of the process's: `clock_timestamp()`
            // resolves to a function that shadows pg_catalog's on this database's connections.
            let db: String = sqlx::query_scalar("SELECT CAST(current_database() AS TEXT)")
                .fetch_one(store.pool())
                .await?;
            store.pool().execute("CREATE SCHEMA fake_time").await?;
            store
                .pool()
                .execute(
                    "CREATE FUNCTION fake_time.clock_timestamp() RETURNS timestamptz \
                     LANGUAGE sql AS $$ SELECT pg_catalog.clock_timestamp() + interval '10 days' $$",
                )
                .await?;
            store
                .pool()
                .execute(
                    format!(
                        "ALTER DATABASE \"{db}\" SET search_path = fake_time, pg_catalog, public"
                    )
                    .as_str(),
                )
                .await?;
            let ahead = Store::connect(store.config().clone()).await?;
            let db_now = now(&ahead).await?;
            assert!(
                db_now - system_micros() > 9 * DAY,
                "the database clock is ahead"
            );
            // Due in five days by the process's clock, past by the database's: fires.
            schedule(&ahead, "cases/1/review", system_micros() + 5 * DAY, "db").await?;
            // Due in eleven days by the process's clock, in one by the database's: does not.
            schedule(&ahead, "cases/2/review", system_micros() + 11 * DAY, "no").await?;
            let timer = timer(&ahead, Recorder::default());
            assert_eq!(timer.run_once().await?, pass(1, 0, 0));
            let d = get(&ahead, "cases/1/review").await?.expect("record");
            assert!(
                d.fired_at.is_some_and(|f| f >= db_now),
                "fired_at is database time"
            );
            ahead.close().await;
        }
        Backend::Sqlite => {
            // SQLite's clock cannot be moved: check that the timer fires on the database's
            // clock at the right moment and records that clock.
            let t0 = now(&store).await?;
            schedule(&store, "cases/1/review", t0 + 300_000, "soon").await?;
            let timer = timer(&store, Recorder::default());
            assert_eq!(timer.run_once().await?, pass(0, 0, 0), "not before");
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(timer.run_once().await?, pass(1, 0, 0));
            let t1 = now(&store).await?;
            let d = get(&store, "cases/1/review").await?.expect("record");
            assert!(d.fired_at.is_some_and(|f| (t0 + 300_000..=t1).contains(&f)));
        }
    }
    Ok::<_, Error>(())
});
