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
//! The statements are the ones PostgreSQL runs (`store::sql`), in the same order; the rules
//! (what a debit is, when a call is ready) are `domain::ledger` and `SETTLE_READY`.

use std::sync::mpsc;

use rusqlite::{named_params, OptionalExtension, Row, TransactionBehavior};
use sqlx::SqlitePool;

use super::sql::{
    CALL_CLAIM_SETTLEMENT, CALL_END, CALL_LINK_ORDER, CALL_SETTLED_SECONDS, CALL_UPSERT,
    CHARGE_INSERT, ORDER_DEBIT, ORDER_FOR_DEBIT, ORDER_HOLD, ORDER_RELEASE, STREAM_TOKEN_INSERT,
};
use super::sqlite::{sqlite_error, SqliteStore};
use super::{
    Call, Charge, CodeAttempt, EndCall, Hold, NewCall, Order, Settlement, StoreError, StreamGrant,
    UnixTime,
};
use crate::domain::call::CallState;
use crate::domain::ledger;
use crate::domain::money::{Cents, Rounding, Seconds};

/// Writes committed together at most.
const BATCH: usize = 64;

/// How long the writer keeps the connection after its queue empties, for the next write.
const GRACE: std::time::Duration = std::time::Duration::from_millis(1);

/// Batches run in one turn of the connection at most, so that under a steady stream the
/// writes left on sqlx still get theirs.
const TURN: usize = 16;

/// What a write's transaction does when its steps are done.
pub(super) enum Outcome<T> {
    Commit(T),
    /// Nothing it wrote stands; the value says why.
    Rollback(T),
}

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

impl SqliteStore {
    pub(super) async fn write_hold(
        &self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<Hold, StoreError> {
        let (order_id, call_sid) = (order_id.to_owned(), call_sid.to_owned());
        self.writes
            .write(move |db| {
                let linked = db
                    .prepare_cached(&CALL_LINK_ORDER)?
                    .execute(named_params! {
                        "$1": call_sid, "$2": order_id, "$3": now,
                    })?
                    == 1;
                if !linked {
                    return Ok(Outcome::Rollback(Hold::CallOver));
                }
                let held = db
                    .prepare_cached(ORDER_HOLD)?
                    .query_row(
                        named_params! { "$1": order_id, "$2": call_sid, "$3": until, "$4": now },
                        order_row,
                    )
                    .optional()?;
                Ok(match held {
                    Some(order) => Outcome::Commit(Hold::Held(Box::new(order))),
                    None => Outcome::Rollback(Hold::refused(order_by_id(db, &order_id)?, now)),
                })
            })
            .await
    }

    pub(super) async fn write_end(&self, end: &EndCall) -> Result<Call, StoreError> {
        self.writes.write(end_steps(end.clone())).await
    }

    pub(super) async fn write_settlement(
        &self,
        call_sid: &str,
        rounding: Rounding,
        charge_id: &str,
        now: UnixTime,
    ) -> Result<Settlement, StoreError> {
        let steps = settlement_steps(call_sid.to_owned(), rounding, charge_id.to_owned(), now);
        self.writes.write(steps).await
    }

    /// The end and the settlement handed to the writer together: they run in this order, each
    /// in its own savepoint (a failed settlement leaves the end standing), and the request
    /// waits for the writer once.
    pub(super) async fn write_end_and_settlement(
        &self,
        end: &EndCall,
        rounding: Rounding,
        charge_id: &str,
    ) -> Result<(Call, Result<Settlement, StoreError>), StoreError> {
        let steps = settlement_steps(
            end.call_sid.clone(),
            rounding,
            charge_id.to_owned(),
            end.now,
        );
        let ended = self.writes.submit(end_steps(end.clone()))?;
        let settled = self.writes.submit(steps)?;
        let call = ended.await?;
        Ok((call, settled.await))
    }

    pub(super) async fn write_call(&self, call: &NewCall) -> Result<Call, StoreError> {
        let call = call.clone();
        self.writes
            .write(move |db| {
                let stored = db.prepare_cached(&CALL_UPSERT)?.query_row(
                    named_params! {
                        "$1": call.call_sid,
                        "$2": call.from_number,
                        "$3": call.to_number,
                        "$4": call.now,
                    },
                    call_row,
                )?;
                Ok(Outcome::Commit(stored))
            })
            .await
    }

    pub(super) async fn write_stream_token(
        &self,
        token_hash: &str,
        grant: &StreamGrant,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let (token_hash, grant) = (token_hash.to_owned(), grant.clone());
        self.writes
            .write(move |db| {
                db.prepare_cached(STREAM_TOKEN_INSERT)?
                    .execute(named_params! {
                        "$1": token_hash,
                        "$2": grant.call_sid,
                        "$3": grant.order_id,
                        "$4": expires_at,
                    })?;
                Ok(Outcome::Commit(()))
            })
            .await
    }

    /// Calls as they arrive, in one transaction; a call already stored is left as it is.
    pub(super) async fn write_calls(&self, calls: &[NewCall]) -> Result<(), StoreError> {
        let calls = calls.to_vec();
        self.writes
            .write(move |db| {
                let mut insert = db.prepare_cached(
                    "INSERT INTO calls (call_sid, from_number, to_number, status, started_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (call_sid) DO NOTHING",
                )?;
                for c in &calls {
                    insert.execute(named_params! {
                        "$1": c.call_sid,
                        "$2": c.from_number,
                        "$3": c.to_number,
                        "$4": CallState::Menu.as_str(),
                        "$5": c.now,
                    })?;
                }
                Ok(Outcome::Commit(()))
            })
            .await
    }

    /// Code attempts, in one transaction.
    pub(super) async fn write_attempts(&self, attempts: &[CodeAttempt]) -> Result<(), StoreError> {
        let attempts = attempts.to_vec();
        self.writes
            .write(move |db| {
                let mut insert = db.prepare_cached(
                    "INSERT INTO code_attempts (caller, code_hash, ok, at) VALUES ($1, $2, $3, $4)",
                )?;
                for a in &attempts {
                    insert.execute(named_params! {
                        "$1": a.caller, "$2": a.code_hash, "$3": a.ok, "$4": a.at,
                    })?;
                }
                Ok(Outcome::Commit(()))
            })
            .await
    }
}

/// The call's end, its upsert (when its earlier webhooks never arrived) and the release of a
/// hold it never bridged on, in one transaction.
fn end_steps(
    end: EndCall,
) -> impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Outcome<Call>> + Send + 'static {
    move |db| {
        db.prepare_cached(&CALL_UPSERT)?.query_row(
            named_params! {
                "$1": end.call_sid, "$2": end.from_number, "$3": end.to_number, "$4": end.now,
            },
            |_| Ok(()),
        )?;
        let call = db.prepare_cached(&CALL_END)?.query_row(
            named_params! {
                "$1": end.call_sid,
                "$2": end.now,
                "$3": end.duration,
                "$4": end.twilio_status.as_str(),
                "$5": end.reason.as_str(),
            },
            call_row,
        )?;
        if let Some(order_id) = call.releases_hold() {
            db.prepare_cached(ORDER_RELEASE)?
                .execute(named_params! { "$1": order_id, "$2": call.call_sid })?;
        }
        Ok(Outcome::Commit(call))
    }
}

/// Claims the call for settlement, debits its order and records the charge due, once.
fn settlement_steps(
    call_sid: String,
    rounding: Rounding,
    charge_id: String,
    now: UnixTime,
) -> impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Outcome<Settlement>> + Send + 'static {
    move |db| {
        // Claiming the call first makes the whole settlement happen once.
        let claimed = db
            .prepare_cached(&CALL_CLAIM_SETTLEMENT)?
            .query_row(named_params! { "$1": call_sid, "$2": now }, call_row)
            .optional()?;
        let Some(call) = claimed else {
            let stored = db
                .prepare_cached("SELECT * FROM calls WHERE call_sid = $1")?
                .query_row(named_params! { "$1": call_sid }, call_row)
                .optional()?;
            return Ok(Outcome::Rollback(Settlement::unclaimed(stored)));
        };
        let used = call.billable_seconds();
        db.prepare_cached(CALL_SETTLED_SECONDS)?
            .execute(named_params! { "$1": call_sid, "$2": used.0 })?;
        let Some(order_id) = call.order_id.as_deref() else {
            return Ok(Outcome::Commit(Settlement::without_order(used)));
        };
        let order = db
            .prepare_cached(ORDER_FOR_DEBIT)?
            .query_row(named_params! { "$1": order_id }, order_row)?;
        let debit = ledger::debit(&order, used, rounding);
        db.prepare_cached(ORDER_DEBIT)?.execute(named_params! {
            "$1": order_id, "$2": debit.used_after.0, "$3": call_sid, "$4": now,
        })?;
        let charge = match debit.charge {
            Some(amount) => db
                .prepare_cached(&CHARGE_INSERT)?
                .query_row(
                    named_params! {
                        "$1": charge_id,
                        "$2": call_sid,
                        "$3": order_id,
                        "$4": amount.0,
                        "$5": order.currency.code(),
                        "$6": debit.overage.0,
                        "$7": now,
                    },
                    charge_row,
                )
                .optional()?
                .map(Box::new),
            None => None,
        };
        Ok(Outcome::Commit(Settlement::Settled {
            seconds: used,
            overage: debit.overage,
            charge,
        }))
    }
}

/// `steps` in a savepoint of the batch's transaction, released or rolled back as they say; an
/// error rolls back its steps and leaves the batch's other writes standing.
fn in_savepoint<T>(
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

fn order_by_id(db: &rusqlite::Connection, id: &str) -> rusqlite::Result<Option<Order>> {
    db.prepare_cached("SELECT * FROM orders WHERE id = $1")?
        .query_row(named_params! { "$1": id }, order_row)
        .optional()
}

/// A column stored as text and parsed (a state's spelling, a currency): an unknown spelling
/// is a corrupt row, as it is through sqlx.
struct Parsed<T>(T);

impl<T> rusqlite::types::FromSql for Parsed<T>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = String::column_result(value)?;
        T::try_from(text)
            .map(Parsed)
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

fn parsed<T>(row: &Row<'_>, column: &str) -> rusqlite::Result<T>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    Ok(row.get::<_, Parsed<T>>(column)?.0)
}

fn parsed_opt<T>(row: &Row<'_>, column: &str) -> rusqlite::Result<Option<T>>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    Ok(row.get::<_, Option<Parsed<T>>>(column)?.map(|p| p.0))
}

// Rows by column name, as `sqlx::FromRow` maps them (`tests` compares the two on the same rows).

pub(super) fn call_row(row: &Row<'_>) -> rusqlite::Result<Call> {
    Ok(Call {
        call_sid: row.get("call_sid")?,
        order_id: row.get("order_id")?,
        from_number: row.get("from_number")?,
        to_number: row.get("to_number")?,
        status: parsed(row, "status")?,
        started_at: row.get("started_at")?,
        bridged_at: row.get("bridged_at")?,
        ended_at: row.get("ended_at")?,
        seconds_metered: Seconds(row.get("seconds_metered")?),
        twilio_duration: row.get("twilio_duration")?,
        end_reason: parsed_opt(row, "end_reason")?,
        updated_at: row.get("updated_at")?,
        twilio_status: parsed_opt(row, "twilio_status")?,
        settled_at: row.get("settled_at")?,
        bridge_ended_at: row.get("bridge_ended_at")?,
        conversation_id: row.get("conversation_id")?,
        settled_seconds: row.get("settled_seconds")?,
    })
}

pub(super) fn order_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    Ok(Order {
        id: row.get("id")?,
        status: parsed(row, "status")?,
        source: parsed(row, "source")?,
        plan: row.get("plan")?,
        amount: Cents(row.get("amount_cents")?),
        currency: parsed(row, "currency")?,
        seconds_included: Seconds(row.get("seconds_included")?),
        seconds_used: Seconds(row.get("seconds_used")?),
        overage_consent: row.get("overage_consent")?,
        overage_price: Cents(row.get("overage_price_cents")?),
        overage_blocked: parsed_opt(row, "overage_blocked")?,
        stripe_payment_intent: row.get("stripe_payment_intent")?,
        stripe_customer: row.get("stripe_customer")?,
        stripe_payment_method: row.get("stripe_payment_method")?,
        code_hash: row.get("code_hash")?,
        code_sealed: row.get("code_sealed")?,
        code_last4: row.get("code_last4")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        paid_at: row.get("paid_at")?,
        revoked_at: row.get("revoked_at")?,
        active_call_sid: row.get("active_call_sid")?,
        active_call_until: row.get("active_call_until")?,
        client_secret_hash: row.get("client_secret_hash")?,
    })
}

pub(super) fn charge_row(row: &Row<'_>) -> rusqlite::Result<Charge> {
    Ok(Charge {
        id: row.get("id")?,
        call_sid: row.get("call_sid")?,
        order_id: row.get("order_id")?,
        amount: Cents(row.get("amount_cents")?),
        currency: parsed(row, "currency")?,
        seconds_billed: Seconds(row.get("seconds_billed")?),
        state: parsed(row, "state")?,
        attempts: row.get("attempts")?,
        next_attempt_at: row.get("next_attempt_at")?,
        lease_owner: row.get("lease_owner")?,
        lease_until: row.get("lease_until")?,
        stripe_payment_intent: row.get("stripe_payment_intent")?,
        last_error: row.get("last_error")?,
        pay_token: row.get("pay_token")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        key_generation: row.get("key_generation")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EndCall, EndReason, NewCall, NewCharge, NewOrder, Store, TwilioStatus};

    /// Rows read by this module's mappers and by sqlx's `FromRow` are the same records, every
    /// column included (a misspelt or misread column would differ here).
    #[tokio::test]
    async fn rows_read_here_match_rows_read_through_sqlx() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        store.migrate().await.unwrap();
        let order = store
            .insert_order(&NewOrder {
                id: "ord1".into(),
                source: crate::domain::order::OrderSource::Operator,
                plan: "Talk time".into(),
                amount: Cents(1000),
                currency: Default::default(),
                seconds_included: Seconds(300),
                overage_consent: true,
                overage_price: Cents(100),
                stripe_payment_intent: Some("pi_1".into()),
                stripe_customer: Some("cus_1".into()),
                stripe_payment_method: Some("pm_1".into()),
                client_secret_hash: Some("secret-hash".into()),
                code: Some(crate::domain::codes::StoredCode {
                    hash: "hash1".into(),
                    sealed: "sealed".into(),
                    last4: "1234".into(),
                }),
                now: 99,
            })
            .await
            .unwrap();
        store
            .upsert_call(&NewCall {
                call_sid: "CA1".into(),
                from_number: "+15550001111".into(),
                to_number: "+15550002222".into(),
                now: 100,
            })
            .await
            .unwrap();
        let Hold::Held(held) = store
            .hold_order_for_call("ord1", "CA1", 4000, 101)
            .await
            .unwrap()
        else {
            panic!("not held")
        };
        assert_eq!(held.active_call_sid.as_deref(), Some("CA1"));
        assert_eq!(*held, store.order(&order.id).await.unwrap().unwrap());
        store
            .set_overage_blocked(
                "ord1",
                Some(crate::domain::charge::OverageBlock::Declined),
                102,
            )
            .await
            .unwrap();
        let (charge, _) = store
            .insert_charge(&NewCharge {
                id: "ch1".into(),
                call_sid: "CA1".into(),
                order_id: "ord1".into(),
                amount: Cents(120),
                currency: order.currency.clone(),
                seconds_billed: Seconds(60),
                now: 102,
            })
            .await
            .unwrap();
        let path = dir.path().join("t.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        fn read<T>(
            conn: &rusqlite::Connection,
            sql: &str,
            id: &str,
            map: fn(&Row<'_>) -> rusqlite::Result<T>,
        ) -> T {
            conn.query_row(sql, named_params! { "$1": id }, map)
                .unwrap()
        }
        let call = read(
            &conn,
            "SELECT * FROM calls WHERE call_sid = $1",
            "CA1",
            call_row,
        );
        assert_eq!(call, store.call("CA1").await.unwrap().unwrap());
        assert_eq!(call.order_id.as_deref(), Some("ord1"));
        let order_here = read(
            &conn,
            "SELECT * FROM orders WHERE id = $1",
            "ord1",
            order_row,
        );
        assert_eq!(order_here, store.order("ord1").await.unwrap().unwrap());
        let charge_here = read(
            &conn,
            "SELECT * FROM charges WHERE id = $1",
            "ch1",
            charge_row,
        );
        assert_eq!(charge_here, charge);

        // Ended here, read back through sqlx: the same call.
        let ended = store
            .end_call(&EndCall {
                call_sid: "CA1".into(),
                from_number: "+15550001111".into(),
                to_number: "+15550002222".into(),
                twilio_status: TwilioStatus::Completed,
                duration: Some(42),
                reason: EndReason::CallerHungUp,
                now: 150,
            })
            .await
            .unwrap();
        assert_eq!(ended, store.call("CA1").await.unwrap().unwrap());
        assert_eq!(ended.twilio_status, Some(TwilioStatus::Completed));
        assert_eq!(
            store.order("ord1").await.unwrap().unwrap().active_call_sid,
            None,
            "a call that never bridged gives its hold back when it ends"
        );

        // The status callback's end and settlement, handed over together: the call ends, then
        // settles (never bridged: nothing to debit).
        let end = EndCall {
            call_sid: "CA2".into(),
            from_number: "+15550001111".into(),
            to_number: "+15550002222".into(),
            twilio_status: TwilioStatus::Completed,
            duration: Some(5),
            reason: EndReason::CallerHungUp,
            now: 160,
        };
        let (ended, settled) = store
            .end_and_settle(&end, Rounding::default(), "ch2")
            .await
            .unwrap();
        assert_eq!(ended.ended_at, Some(160));
        assert_eq!(settled.unwrap(), Settlement::without_order(Seconds(0)));
        let stored = store.call("CA2").await.unwrap().unwrap();
        assert_eq!(stored.settled_at, Some(160));
        assert_eq!(
            store
                .end_and_settle(&end, Rounding::default(), "ch3")
                .await
                .unwrap()
                .1
                .unwrap(),
            Settlement::AlreadySettled,
            "a repeated callback settles nothing twice"
        );
    }

    /// Writes committed together stay apart: one that fails or rolls back undoes its own
    /// steps and nobody else's, and each hears its own result. The connection is held while
    /// the writes queue, so that they all land in one batch.
    #[tokio::test]
    async fn writes_in_one_batch_fail_and_roll_back_alone() {
        use std::future::Future;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        store.migrate().await.unwrap();
        let put = |db: &rusqlite::Connection, key: &str| {
            db.execute(
                "INSERT INTO webhook_events (id, kind, received_at) VALUES ($1, 'test', 0)",
                named_params! { "$1": key },
            )
        };
        // While the test holds the connection, the writer waits for it and the writes queue.
        let held = store.writer.acquire().await.unwrap();
        let mut writes = Vec::new();
        for i in 0..30 {
            let mut write = Box::pin(store.writes.write(move |db| {
                put(db, &format!("kept{i}"))?;
                put(db, &format!("other{i}"))?;
                match i % 3 {
                    // The same key again: the write fails, and its first inserts with it.
                    0 => put(db, &format!("other{i}")).map(|_| Outcome::Commit(())),
                    1 => Ok(Outcome::Rollback(())),
                    _ => Ok(Outcome::Commit(())),
                }
            }));
            // Polled once, the write is queued.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(write.as_mut().poll(&mut cx).is_pending());
            writes.push(write);
        }
        drop(held);
        for (i, write) in writes.into_iter().enumerate() {
            let result = write.await;
            match i % 3 {
                0 => assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}"),
                _ => assert!(result.is_ok(), "{result:?}"),
            }
        }
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        let ids: Vec<String> = conn
            .prepare_cached("SELECT id FROM webhook_events ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut expected: Vec<String> = (0..30)
            .filter(|i| i % 3 == 2)
            .flat_map(|i| [format!("kept{i}"), format!("other{i}")])
            .collect();
        expected.sort();
        assert_eq!(ids, expected, "exactly the committed writes stand");
    }
}
