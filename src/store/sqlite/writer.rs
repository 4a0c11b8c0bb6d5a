//! SQLite's writer: a thread of callgate's own that runs the hot writes back to back on the
//! one writing connection, committing them in groups.
//!
//! Through sqlx every statement is a hand-off to the connection's thread and back, and a task
//! that holds a transaction open waits for its turn on the runtime between statements while
//! every other write queues behind it. Under load those thread switches and waits were most of
//! a whole call's cost: a profile of `bench-webhooks` showed the kernel's task switches at
//! about half the process's time and SQLite's own work at 3 %. Here a request hands its whole
//! write (a closure over its own values) to this thread and awaits the answer. The thread
//! borrows sqlx's writer connection (`lock_handle`), runs every write queued by then (up to
//! [`BATCH`]) in one transaction, each in a savepoint of its own, commits, answers them all
//! and gives the connection back. The connection is never waited on across a runtime turn;
//! each page a batch touches goes to the WAL once; and it stays the one writing connection, so
//! nothing contends for SQLite's lock: the writes left on sqlx (orders, charges, the bridge's)
//! take their turn between batches.
//!
//! A queue and nothing else: what each write does is `store::sqlite::money`'s, with the
//! statements PostgreSQL runs (`store::sql`), in the same order.

use std::sync::mpsc;

use rusqlite::TransactionBehavior;
use sqlx::SqlitePool;

use super::rows::sqlite_error;
use crate::store::StoreError;

/// Writes committed together at most.
const BATCH: usize = 64;

/// How long the writer keeps the connection after its queue empties, for the next write.
const GRACE: std::time::Duration = std::time::Duration::from_millis(1);

/// Batches run in one turn of the connection at most, so that under a steady stream the
/// writes left on sqlx still get theirs.
const TURN: usize = 16;

/// What a write's transaction does when its steps are done (`Rollback`: nothing it wrote
/// stands; the value says why).
pub(super) use crate::store::money::Step as Outcome;

/// A write for the thread. It runs inside the batch's transaction, in a savepoint of its own
/// (its failure or rollback undoes its steps alone), and hears whether it stands only once the
/// batch has committed: no request is told of a write that a crash could still undo.
trait Job: Send {
    fn run(&mut self, db: &rusqlite::Connection);
    /// `None` when the batch committed: the write's own result goes out. Otherwise the error
    /// that lost it.
    fn answer(self: Box<Self>, lost: Option<&StoreError>);
}

struct Write<F, T> {
    steps: Option<F>,
    result: Option<Result<T, StoreError>>,
    answer: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Job for Write<F, T>
where
    F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<Outcome<T>> + Send,
    T: Send,
{
    fn run(&mut self, db: &rusqlite::Connection) {
        if let Some(steps) = self.steps.take() {
            self.result = Some(in_savepoint(db, steps).map_err(sqlite_error));
        }
    }

    fn answer(self: Box<Self>, lost: Option<&StoreError>) {
        let result = match (lost, self.result) {
            (None, Some(result)) => result,
            // A failed write rolled back only itself: its own error says more.
            (Some(_), Some(Err(e))) => Err(e),
            (Some(e), _) => Err(e.clone()),
            (None, None) => Err(StoreError::Database("a write was never run".into())),
        };
        // The request may have gone (its client hung up): the write stands regardless.
        let _ = self.answer.send(result);
    }
}

/// The writer thread's queue. The thread ends when the store (the last sender) is dropped.
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the thread; it borrows `pool`'s one connection for each batch. Called within the
    /// runtime, whose handle the thread uses to wait for the connection.
    pub(super) fn start(pool: SqlitePool) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                let mut pending: Vec<Box<dyn Job>> = Vec::with_capacity(BATCH);
                loop {
                    if pending.is_empty() {
                        match queue.recv() {
                            Ok(job) => pending.push(job),
                            Err(_) => return,
                        }
                    }
                    runtime.block_on(turn(&pool, &queue, &mut pending));
                }
            })
            .map_err(|e| StoreError::Open(format!("SQLite writer thread: {e}")))?;
        Ok(Writer { jobs })
    }

    /// Runs `steps` on the writer thread, in the next batch's transaction.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        steps: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Outcome<T>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(steps)?.await
    }

    /// Queues `steps` now, in the order of the calls to `submit`; the answer comes when it is
    /// awaited.
    pub(super) fn submit<T: Send + 'static>(
        &self,
        steps: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Outcome<T>> + Send + 'static,
    ) -> Result<impl std::future::Future<Output = Result<T, StoreError>>, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = Box::new(Write {
            steps: Some(steps),
            result: None,
            answer,
        });
        self.jobs.send(job).map_err(|_| stopped())?;
        Ok(async move { answered.await.map_err(|_| stopped())? })
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

/// One turn of the connection: batches of writes, each committed and answered, while writes
/// keep coming (up to [`TURN`] batches, so that the writes left on sqlx get their turn).
/// Writes still `pending` at the end wait for the next turn.
async fn turn(
    pool: &SqlitePool,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    pending: &mut Vec<Box<dyn Job>>,
) {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return refuse(&super::classify(e), queue, pending),
    };
    let mut handle = match conn.lock_handle().await {
        Ok(handle) => handle,
        Err(e) => return refuse(&super::classify(e), queue, pending),
    };
    // SAFETY: `lock_handle` takes the connection away from sqlx's worker thread until `handle`
    // is dropped, so nothing else uses it meanwhile (the pool lends it to this thread alone).
    // `from_handle` borrows the handle without ever closing it, and `db` is dropped,
    // finalizing the statements it prepared, before `handle`.
    let db = match unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) } {
        Ok(db) => db,
        Err(e) => return refuse(&sqlite_error(e), queue, pending),
    };
    for _ in 0..TURN {
        let room = BATCH.saturating_sub(pending.len());
        pending.extend(queue.try_iter().take(room));
        if pending.is_empty() {
            // The connection is kept a moment for the next write: borrowing it again costs
            // two thread switches (sqlx's worker gives it up, then takes it back).
            match queue.recv_timeout(GRACE) {
                Ok(job) => pending.push(job),
                Err(_) => break,
            }
        }
        let lost = group_commit(&db, pending).err().map(sqlite_error);
        if let Some(error) = &lost {
            tracing::warn!(%error, writes = pending.len(), "SQLite writer: a batch of writes was lost");
        }
        for job in pending.drain(..) {
            job.answer(lost.as_ref());
        }
    }
    drop(db);
    drop(handle);
}

/// No connection: every write pending or queued hears why.
fn refuse(
    error: &StoreError,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    pending: &mut Vec<Box<dyn Job>>,
) {
    tracing::warn!(%error, "SQLite writer: no connection");
    for job in pending.drain(..).chain(queue.try_iter()) {
        job.answer(Some(error));
    }
}

/// Runs every job inside one `BEGIN IMMEDIATE` and commits: each page the batch touched is
/// written to the WAL once, not once per write. A job whose failure ended the transaction
/// itself (the disk full, an I/O error) fails the batch: no write in it stands.
fn group_commit(db: &rusqlite::Connection, batch: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
    for job in batch.iter_mut() {
        job.run(&tx);
        if tx.is_autocommit() {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("the batch's transaction ended under a write".into()),
            ));
        }
    }
    // A transaction dropped unfinished (an error, a failed commit) rolls back.
    tx.commit()
}

/// `steps` in a savepoint of the batch's transaction, released or rolled back as they say; an
/// error rolls back its steps and leaves the batch's other writes standing.
pub(super) fn in_savepoint<T>(
    db: &rusqlite::Connection,
    steps: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Outcome<T>>,
) -> rusqlite::Result<T> {
    db.prepare_cached("SAVEPOINT write")?.execute([])?;
    let undo = |db: &rusqlite::Connection| -> rusqlite::Result<()> {
        db.prepare_cached("ROLLBACK TO write")?.execute([])?;
        db.prepare_cached("RELEASE write")?.execute([])?;
        Ok(())
    };
    match steps(db) {
        Ok(Outcome::Commit(value)) => {
            db.prepare_cached("RELEASE write")?.execute([])?;
            Ok(value)
        }
        Ok(Outcome::Rollback(value)) => {
            undo(db)?;
            Ok(value)
        }
        Err(e) => {
            // The transaction may be gone with it (the batch then fails as a whole).
            if !db.is_autocommit() {
                undo(db)?;
            }
            Err(e)
        }
    }
}
