//! Group commit ([`fengqiao_store::GroupCommit`]), every test on SQLite and PostgreSQL.

use std::sync::atomic::Ordering;
use std::time::Duration;

use fengqiao_store::sqlx;
use fengqiao_store::testing::tokio;
use fengqiao_store::{Error, GroupCommit, GroupCommitOptions, Result, Store, both_backends};

async fn count(store: &Store, sql: &str) -> Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(store.pool())
        .await?)
}

async fn table(store: &Store) -> Result<()> {
    sqlx::query("CREATE TABLE g (id TEXT PRIMARY KEY, v BIGINT NOT NULL)")
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Inserts row `id`; `fail` = the job returns an error after writing.
async fn insert(gc: &GroupCommit, id: String, fail: bool) -> Result<()> {
    gc.run(move |tx| {
        Box::pin(async move {
            sqlx::query("INSERT INTO g (id, v) VALUES ($1, 1)")
                .bind(&id)
                .execute(&mut **tx)
                .await?;
            if fail {
                return Err(Error::NotFound("test refusal"));
            }
            Ok(())
        })
    })
    .await
}

/// [`insert`] as a task of its own, so it can wait in the queue.
fn spawn_insert(gc: &GroupCommit, id: &str) -> tokio::task::JoinHandle<Result<()>> {
    let (gc, id) = (gc.clone(), id.to_string());
    tokio::spawn(async move { insert(&gc, id, false).await })
}

/// One SQL statement as a job, in a task of its own.
fn spawn_statement(gc: &GroupCommit, sql: &'static str) -> tokio::task::JoinHandle<Result<()>> {
    let gc = gc.clone();
    tokio::spawn(async move {
        gc.run(move |tx| {
            Box::pin(async move {
                sqlx::query(sql).execute(&mut **tx).await?;
                Ok::<_, Error>(())
            })
        })
        .await
    })
}

/// Occupies the committer with a job that waits for `release`; returns when it runs.
async fn block(
    gc: &GroupCommit,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<()>>,
) {
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let gc2 = gc.clone();
    let h = tokio::spawn(async move {
        gc2.run(move |_tx| {
            Box::pin(async move {
                let _ = started_tx.send(());
                let _ = wait.await;
                Ok::<_, Error>(())
            })
        })
        .await
    });
    started.await.expect("blocking job started");
    (release, h)
}

async fn until_waiting(gc: &GroupCommit, n: usize) {
    for _ in 0..500 {
        if gc.waiting() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("only {} of {n} jobs queued", gc.waiting());
}

both_backends!(
    waiting_jobs_share_one_transaction_and_fail_alone,
    |store: Store| async move {
        table(&store).await?;
        let gc = GroupCommit::new(&store, GroupCommitOptions::default());
        let (release, blocker) = block(&gc).await;
        let mut handles = Vec::new();
        for i in 0..40 {
            let gc = gc.clone();
            // Every 5th job fails after writing; job 13 hits the primary key of job 12 (a database
            // error, which on PostgreSQL would abort the whole transaction without a savepoint).
            let id = if i == 13 {
                "r12".to_string()
            } else {
                format!("r{i}")
            };
            handles.push(tokio::spawn(
                async move { insert(&gc, id, i % 5 == 4).await },
            ));
        }
        until_waiting(&gc, 40).await;
        release.send(()).expect("blocker waiting");
        blocker.await.expect("join")?;
        let mut ok = 0;
        let mut duplicates = 0;
        for (i, h) in handles.into_iter().enumerate() {
            let r = h.await.expect("join");
            if i % 5 == 4 {
                assert!(matches!(r, Err(Error::NotFound(_))), "job {i}: {r:?}");
            } else if i == 12 || i == 13 {
                // The jobs queue in no fixed order: whichever of the two runs second fails
                // alone.
                match r {
                    Ok(()) => ok += 1,
                    Err(e) if e.is_unique_violation() => duplicates += 1,
                    Err(e) => panic!("job {i}: {e:?}"),
                }
            } else {
                r?;
                ok += 1;
            }
        }
        assert_eq!(duplicates, 1);
        assert_eq!(ok, 31);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM g").await?, 31);
        // A refused job left nothing behind.
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM g WHERE id = 'r4'").await?,
            0
        );
        // The blocker alone, then the 40 waiting jobs in one transaction.
        assert_eq!(gc.stats().batches.load(Ordering::Relaxed), 2);
        assert_eq!(gc.stats().jobs.load(Ordering::Relaxed), 41);
        Ok::<_, Error>(())
    }
);

both_backends!(
    a_failed_commit_fails_every_job_of_the_batch,
    |store: Store| async move {
        sqlx::query("CREATE TABLE parent (id TEXT PRIMARY KEY)")
            .execute(store.pool())
            .await?;
        sqlx::query(
            "CREATE TABLE child (id TEXT PRIMARY KEY, parent TEXT NOT NULL \
         REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .execute(store.pool())
        .await?;
        let gc = GroupCommit::new(&store, GroupCommitOptions::default());
        let (release, blocker) = block(&gc).await;
        let ok_job = spawn_statement(&gc, "INSERT INTO parent (id) VALUES ('p1')");
        until_waiting(&gc, 1).await;
        // The orphan passes its statement (the check is deferred) and fails the commit.
        let orphan = spawn_statement(&gc, "INSERT INTO child (id, parent) VALUES ('c1', 'none')");
        until_waiting(&gc, 2).await;
        release.send(()).expect("blocker waiting");
        blocker.await.expect("join")?;
        for r in [ok_job.await.expect("join"), orphan.await.expect("join")] {
            let e = r.expect_err("the batch did not commit");
            assert!(matches!(e, Error::GroupCommit(_)), "{e:?}");
            assert!(e.is_retryable());
        }
        assert_eq!(count(&store, "SELECT COUNT(*) FROM parent").await?, 0);
        assert_eq!(gc.stats().failed_batches.load(Ordering::Relaxed), 1);
        // The committer goes on.
        sqlx::query("CREATE TABLE g (id TEXT PRIMARY KEY, v BIGINT NOT NULL)")
            .execute(store.pool())
            .await?;
        insert(&gc, "after".into(), false).await?;
        assert_eq!(count(&store, "SELECT COUNT(*) FROM g").await?, 1);
        Ok::<_, Error>(())
    }
);

both_backends!(
    a_panicking_job_fails_its_batch_and_the_committer_goes_on,
    |store: Store| async move {
        table(&store).await?;
        let gc = GroupCommit::new(&store, GroupCommitOptions::default());
        let (release, blocker) = block(&gc).await;
        let good = spawn_insert(&gc, "a");
        until_waiting(&gc, 1).await;
        let bad = {
            let gc = gc.clone();
            tokio::spawn(async move {
                gc.run(|_tx| -> fengqiao_store::group::JobFuture<'_, (), Error> {
                    Box::pin(async move { panic!("job bug") })
                })
                .await
            })
        };
        until_waiting(&gc, 2).await;
        release.send(()).expect("blocker waiting");
        blocker.await.expect("join")?;
        assert!(matches!(
            good.await.expect("join"),
            Err(Error::GroupCommit(_))
        ));
        assert!(matches!(
            bad.await.expect("join"),
            Err(Error::GroupCommit(_))
        ));
        assert_eq!(count(&store, "SELECT COUNT(*) FROM g").await?, 0);
        insert(&gc, "b".into(), false).await?;
        assert_eq!(count(&store, "SELECT COUNT(*) FROM g").await?, 1);
        Ok::<_, Error>(())
    }
);

both_backends!(
    a_job_whose_caller_left_is_skipped,
    |store: Store| async move {
        table(&store).await?;
        let gc = GroupCommit::new(&store, GroupCommitOptions::default());
        let (release, blocker) = block(&gc).await;
        let gone = spawn_insert(&gc, "gone");
        until_waiting(&gc, 1).await;
        gone.abort();
        let _ = gone.await;
        let kept = spawn_insert(&gc, "kept");
        until_waiting(&gc, 2).await;
        release.send(()).expect("blocker waiting");
        blocker.await.expect("join")?;
        kept.await.expect("join")?;
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM g WHERE id = 'gone'").await?,
            0
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM g WHERE id = 'kept'").await?,
            1
        );
        assert_eq!(gc.stats().abandoned.load(Ordering::Relaxed), 1);
        Ok::<_, Error>(())
    }
);

both_backends!(
    the_batch_memo_passes_from_job_to_job_and_fails_with_its_job,
    |store: Store| async move {
        use fengqiao_store::group::{memo_get, memo_set};
        let gc = GroupCommit::new(&store, GroupCommitOptions::default());
        // Outside a batch there is no memo.
        let conn = store.pool().acquire().await?;
        memo_set(&conn, "k", (9, "outside".into()));
        assert_eq!(memo_get(&conn, "k"), None);
        drop(conn);
        let (release, blocker) = block(&gc).await;
        let spawn_job = |set: Option<(i64, &'static str)>, fail: bool| {
            let gc = gc.clone();
            tokio::spawn(async move {
                gc.run(move |tx| {
                    Box::pin(async move {
                        let seen = memo_get(tx, "k");
                        if let Some((n, s)) = set {
                            memo_set(tx, "k", (n, s.to_string()));
                        }
                        if fail {
                            return Err(Error::NotFound("test refusal"));
                        }
                        Ok(seen)
                    })
                })
                .await
            })
        };
        let a = spawn_job(Some((1, "a")), false);
        until_waiting(&gc, 1).await;
        let b = spawn_job(Some((2, "b")), true);
        until_waiting(&gc, 2).await;
        let c = spawn_job(None, false);
        until_waiting(&gc, 3).await;
        release.send(()).expect("blocker waiting");
        blocker.await.expect("join")?;
        assert_eq!(a.await.expect("join")?, None);
        assert!(b.await.expect("join").is_err());
        // B failed: its value went with its savepoint; C sees what A left.
        assert_eq!(c.await.expect("join")?, Some((1, "a".to_string())));
        // A new batch starts with an empty memo.
        let d = spawn_job(None, false).await.expect("join")?;
        assert_eq!(d, None);
        Ok::<_, Error>(())
    }
);
