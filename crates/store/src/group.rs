//! Group commit: short write transactions that must run one after another (a gap-free event
//! sequence, a hash-chained audit log) share one database transaction and its one fsync.
//!
//! [`GroupCommit::run`] hands a job (a closure that writes in a [`Tx`]) to a committer thread.
//! The committer takes every job that is waiting (up to [`GroupCommitOptions::max_batch`]),
//! opens one write transaction, runs the jobs one after the other — each inside its own
//! `SAVEPOINT`, so a job that fails is rolled back alone and the others go on — commits once,
//! and only then answers each caller. Durability is unchanged: no caller hears "done" before
//! the commit that holds its change is durable; if the commit fails, every job of the batch
//! gets [`Error::GroupCommit`] (retryable: with an idempotency key the retry replays or
//! applies the change exactly once).
//!
//! Why a thread of its own: on a busy multi-threaded runtime every database round trip of a
//! transaction waits for its task to be scheduled again; a transaction that holds a global
//! lock (sequence, audit chain) pays that wait many times and every other writer queues
//! behind it. The committer runs on a single-threaded runtime on its own OS thread and, on
//! PostgreSQL, on a connection of its own, so its round trips are not queued behind request
//! handling. On SQLite it borrows the store's pool (SQLite connections run on worker threads
//! of their own and work from any runtime; an in-memory database is only reachable that way).
//!
//! A job must be `Send + 'static` (it runs on the committer thread): move what it needs into
//! it. A job whose caller has gone away (cancelled request) before the job started is skipped.
//!
//! **Batch memo.** Jobs of one batch share a transaction, so what one job learnt under a lock
//! stays true for the next: the advisory locks [`crate::pg_xact_lock`] took are still held (it
//! does not ask again), and a job may leave the head of a sequence it appends to with
//! [`memo_set`] for the next job to read with [`memo_get`] instead of querying it. The memo
//! belongs to the batch's connection (other connections never see it), and a job that fails is
//! rolled back to its savepoint together with what it put in the memo.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt as _;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::store::{Backend, Store, StoreConfig, Tx};

/// The future a job returns: it may borrow the transaction.
pub type JobFuture<'c, T, E> = Pin<Box<dyn Future<Output = std::result::Result<T, E>> + Send + 'c>>;

tokio::task_local! {
    static MEMO: RefCell<Memo>;
}

/// What the jobs of the running batch know (see the module docs).
#[derive(Debug, Clone, Default)]
struct Memo {
    /// Address of the batch transaction's connection: the memo holds only for it.
    conn: usize,
    locks: HashSet<(i32, i32)>,
    values: HashMap<&'static str, (i64, String)>,
}

fn addr(conn: &sqlx::AnyConnection) -> usize {
    conn as *const sqlx::AnyConnection as usize
}

/// Whether `conn` is the running batch's connection and already holds the advisory lock.
pub(crate) fn lock_held(conn: &sqlx::AnyConnection, class: i32, key: i32) -> bool {
    MEMO.try_with(|m| {
        let m = m.borrow();
        m.conn == addr(conn) && m.locks.contains(&(class, key))
    })
    .unwrap_or(false)
}

/// Notes that `conn` (if it is the running batch's) now holds the advisory lock.
pub(crate) fn note_lock(conn: &sqlx::AnyConnection, class: i32, key: i32) {
    let _ = MEMO.try_with(|m| {
        let mut m = m.borrow_mut();
        if m.conn == addr(conn) {
            m.locks.insert((class, key));
        }
    });
}

/// The value a previous job of this batch left under `key` with [`memo_set`], if `conn` is
/// the running batch's connection. Only meaningful for data guarded by a lock the batch holds
/// (e.g. the head of a gap-free sequence).
pub fn memo_get(conn: &sqlx::AnyConnection, key: &'static str) -> Option<(i64, String)> {
    MEMO.try_with(|m| {
        let m = m.borrow();
        if m.conn == addr(conn) {
            m.values.get(key).cloned()
        } else {
            None
        }
    })
    .ok()
    .flatten()
}

/// Leaves `value` under `key` for the following jobs of this batch (no-op outside a batch or
/// on another connection).
pub fn memo_set(conn: &sqlx::AnyConnection, key: &'static str, value: (i64, String)) {
    let _ = MEMO.try_with(|m| {
        let mut m = m.borrow_mut();
        if m.conn == addr(conn) {
            m.values.insert(key, value);
        }
    });
}

/// Tuning of a [`GroupCommit`].
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitOptions {
    /// Most jobs in one transaction (default 64).
    pub max_batch: usize,
    /// Jobs that may wait for the committer before callers wait to enqueue (default 4096).
    pub queue: usize,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        GroupCommitOptions {
            max_batch: 64,
            queue: 4096,
        }
    }
}

/// Counters of a [`GroupCommit`], for metrics and the benchmark.
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    /// Transactions committed (or attempted).
    pub batches: AtomicU64,
    /// Jobs run.
    pub jobs: AtomicU64,
    /// Jobs skipped because their caller had gone away.
    pub abandoned: AtomicU64,
    /// Batches whose commit (or savepoint handling) failed.
    pub failed_batches: AtomicU64,
}

/// A group committer over one store. Cheap to clone; the committer thread ends when the last
/// clone is dropped.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Box<dyn Job>>,
    stats: Arc<GroupCommitStats>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the committer thread for `store`. On PostgreSQL it opens its own connection (with
    /// the store's configuration) the first time it has work, and again after a failure.
    pub fn new(store: &Store, options: GroupCommitOptions) -> GroupCommit {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(options.queue.max(1));
        let stats = Arc::new(GroupCommitStats::default());
        let source = match store.backend() {
            Backend::Sqlite => Source::Shared(store.clone()),
            Backend::Postgres => Source::Own {
                config: StoreConfig {
                    max_connections: 1,
                    ..store.config().clone()
                },
                store: None,
            },
        };
        let committer = Committer {
            source,
            rx,
            max_batch: options.max_batch.max(1),
            stats: stats.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || committer.run_thread());
        if let Err(e) = spawned {
            // Without the thread every job answers GroupCommit (the receiver is gone).
            tracing::error!(error = %e, "cannot start the group-commit thread");
        }
        GroupCommit { queue: tx, stats }
    }

    /// Jobs enqueued and not yet taken by the committer.
    pub fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Counters since start.
    pub fn stats(&self) -> &GroupCommitStats {
        &self.stats
    }

    /// Runs `job` in a shared write transaction and returns its result once that transaction
    /// has committed. A job that returns `Err` is rolled back (to its savepoint) and its error
    /// returned as is; nothing it wrote remains.
    pub async fn run<T, E, F>(&self, job: F) -> std::result::Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
        F: for<'c> FnOnce(&'c mut Tx) -> JobFuture<'c, T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Typed {
            f: job,
            span: tracing::Span::current(),
            reply,
        });
        if self.queue.send(job).await.is_err() {
            return Err(Error::GroupCommit("the group-commit thread is not running".into()).into());
        }
        match answer.await {
            Ok(r) => r,
            // The job panicked or the committer stopped: nothing of it was committed.
            Err(_) => Err(Error::GroupCommit(
                "the change did not complete (its batch failed, the job panicked or the committer stopped); nothing of it was committed"
                    .into(),
            )
            .into()),
        }
    }
}

/// A job with its result type erased.
trait Job: Send {
    fn abandoned(&self) -> bool;
    fn start<'c>(
        self: Box<Self>,
        tx: &'c mut Tx,
    ) -> Pin<Box<dyn Future<Output = Box<dyn Finish>> + Send + 'c>>;
}

/// A job that ran: its result, waiting for the commit.
trait Finish: Send {
    fn succeeded(&self) -> bool;
    /// Answers the caller; `failure` is the commit's error, if it failed.
    fn complete(self: Box<Self>, failure: Option<&str>);
}

struct Typed<T, E, F> {
    f: F,
    /// The caller's span: the job runs in it on the committer thread, so that what it logs
    /// and the trace context it reads (e.g. to store with an outbox message) are the caller's.
    span: tracing::Span,
    reply: oneshot::Sender<std::result::Result<T, E>>,
}

impl<T, E, F> Job for Typed<T, E, F>
where
    T: Send + 'static,
    E: From<Error> + Send + 'static,
    F: for<'c> FnOnce(&'c mut Tx) -> JobFuture<'c, T, E> + Send + 'static,
{
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn start<'c>(
        self: Box<Self>,
        tx: &'c mut Tx,
    ) -> Pin<Box<dyn Future<Output = Box<dyn Finish>> + Send + 'c>> {
        let Typed { f, span, reply } = *self;
        Box::pin(async move {
            let result = tracing::Instrument::instrument(f(tx), span).await;
            Box::new(Done { result, reply }) as Box<dyn Finish>
        })
    }
}

struct Done<T, E> {
    result: std::result::Result<T, E>,
    reply: oneshot::Sender<std::result::Result<T, E>>,
}

impl<T: Send, E: From<Error> + Send> Finish for Done<T, E> {
    fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    fn complete(self: Box<Self>, failure: Option<&str>) {
        let result = match (self.result, failure) {
            (Ok(_), Some(why)) => Err(Error::GroupCommit(why.to_string()).into()),
            (r, _) => r,
        };
        // The caller may have gone away meanwhile; its change stands (or not) either way.
        let _ = self.reply.send(result);
    }
}

enum Source {
    Shared(Store),
    Own {
        config: StoreConfig,
        store: Option<Store>,
    },
}

impl Source {
    async fn store(&mut self) -> Result<&Store> {
        match self {
            Source::Shared(s) => Ok(s),
            Source::Own { config, store } => match store {
                Some(s) => Ok(s),
                None => Ok(store.insert(Store::connect(config.clone()).await?)),
            },
        }
    }

    /// Drops an own connection after a failure, so the next batch reconnects.
    async fn reset(&mut self) {
        if let Source::Own { store, .. } = self
            && let Some(s) = store.take()
        {
            s.close().await;
        }
    }
}

struct Committer {
    source: Source,
    rx: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    stats: Arc<GroupCommitStats>,
}

impl Committer {
    fn run_thread(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the group-commit runtime");
                return;
            }
        };
        rt.block_on(self.run());
    }

    async fn run(mut self) {
        let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(self.max_batch);
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            let before = batch.len();
            batch.retain(|j| !j.abandoned());
            self.stats
                .abandoned
                .fetch_add((before - batch.len()) as u64, Ordering::Relaxed);
            if batch.is_empty() {
                continue;
            }
            let jobs = std::mem::take(&mut batch);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .jobs
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            if let Err(why) = self.run_batch(jobs).await {
                // Counted by `fail_all`, before the callers were answered.
                tracing::warn!(error = %why, "group commit: a batch failed; its jobs were told to retry");
                self.source.reset().await;
            }
        }
        if let Source::Own { store: Some(s), .. } = &self.source {
            s.close().await;
        }
    }

    /// Runs one batch. `Err` (already reported to every job) means the connection may be
    /// unusable.
    async fn run_batch(&mut self, jobs: Vec<Box<dyn Job>>) -> std::result::Result<(), String> {
        let store = match self.source.store().await {
            Ok(s) => s.clone(),
            Err(e) => return Err(fail_all(&self.stats, Vec::new(), jobs, &e.to_string())),
        };
        let tx = match store.write().await {
            Ok(tx) => tx,
            Err(e) => return Err(fail_all(&self.stats, Vec::new(), jobs, &e.to_string())),
        };
        MEMO.scope(
            RefCell::new(Memo::default()),
            Self::run_jobs(&self.stats, tx, jobs),
        )
        .await
    }

    async fn run_jobs(
        stats: &GroupCommitStats,
        mut tx: Tx,
        jobs: Vec<Box<dyn Job>>,
    ) -> std::result::Result<(), String> {
        // Here, where the transaction stays until it ends (the connection lives inside it).
        MEMO.with(|m| m.borrow_mut().conn = addr(&tx));
        let single = jobs.len() == 1;
        let mut done: Vec<Box<dyn Finish>> = Vec::with_capacity(jobs.len());
        let mut rest = jobs.into_iter();
        while let Some(job) = rest.next() {
            if !single && let Err(e) = exec(&mut tx, "SAVEPOINT fq_group_job").await {
                return Err(fail_all(stats, done, rest.collect(), &e.to_string()));
            }
            let before = MEMO.with(|m| m.borrow().clone());
            let finished = match AssertUnwindSafe(job.start(&mut tx)).catch_unwind().await {
                Ok(f) => f,
                Err(_) => {
                    // The job's caller sees the dropped reply; the transaction's state is
                    // unknown, so nothing of this batch commits.
                    let _ = tx.rollback().await;
                    return Err(fail_all(
                        stats,
                        done,
                        rest.collect(),
                        "a job of the batch panicked",
                    ));
                }
            };
            // A job that succeeded keeps its savepoint: the next job's `SAVEPOINT` of the same
            // name nests inside it (and `ROLLBACK TO` finds the newest one), and the commit
            // releases them all. One round trip per job instead of two (`RELEASE` dropped);
            // a batch is at most `max_batch` (64) jobs deep, within PostgreSQL's cache of 64
            // subtransactions per backend either way.
            if !single && !finished.succeeded() {
                // Locks taken and values left by the job go with its savepoint.
                MEMO.with(|m| *m.borrow_mut() = before);
                if let Err(e) = exec(&mut tx, "ROLLBACK TO SAVEPOINT fq_group_job").await {
                    done.push(finished);
                    return Err(fail_all(stats, done, rest.collect(), &e.to_string()));
                }
            }
            done.push(finished);
        }
        if done.iter().all(|d| !d.succeeded()) {
            // Nothing to keep.
            let _ = tx.rollback().await;
            for d in done {
                d.complete(None);
            }
            return Ok(());
        }
        match tx.commit().await {
            Ok(()) => {
                for d in done {
                    d.complete(None);
                }
                Ok(())
            }
            Err(e) => Err(fail_all(
                stats,
                done,
                Vec::new(),
                &Error::from(e).to_string(),
            )),
        }
    }
}

async fn exec(tx: &mut Tx, sql: &str) -> Result<()> {
    sqlx::query(sql).execute(&mut **tx).await?;
    Ok(())
}

/// Counts the failed batch, then tells every job that ran (and every one that did not) that
/// nothing was committed.
fn fail_all(
    stats: &GroupCommitStats,
    done: Vec<Box<dyn Finish>>,
    not_run: Vec<Box<dyn Job>>,
    why: &str,
) -> String {
    stats.failed_batches.fetch_add(1, Ordering::Relaxed);
    let why = format!("the shared transaction did not commit: {why}");
    for d in done {
        d.complete(Some(&why));
    }
    // Dropping a job drops its reply: the caller gets GroupCommit ("did not complete").
    drop(not_run);
    why
}
