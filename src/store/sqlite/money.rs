//! SQLite's side of the hot writes: a call's row, its hold, its stream token, its end and its
//! settlement, and the grouped arrivals and code attempts, each one closure handed to the
//! writer thread (`writer.rs`). The statements and their order are PostgreSQL's
//! (`store::sql`); the decisions are `domain`'s.

use rusqlite::{named_params, OptionalExtension};

use super::rows::{call_row, charge_row, order_by_id, order_row};
use futures_util::FutureExt;

use super::writer::Outcome;
use super::SqliteStore;
use crate::domain::call::CallState;
use crate::domain::money::Rounding;
use crate::store::money::{self, MoneyTx};
use crate::store::sql::{
    CALL_CLAIM_SETTLEMENT, CALL_END, CALL_LINK_ORDER, CALL_SETTLED_SECONDS, CALL_UPSERT,
    CHARGE_INSERT, ORDER_DEBIT, ORDER_HOLD, ORDER_RELEASE, STREAM_TOKEN_INSERT,
};
use crate::store::{
    AttemptGroup, Call, Charge, CodeAttempt, EndCall, Hold, NewCall, NewCharge, Order, Seconds,
    Settlement, StoreError, StreamGrant, TokenIssue, UnixTime,
};

impl SqliteStore {
    pub(super) async fn write_hold(
        &self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
        token: Option<&TokenIssue>,
    ) -> Result<Hold, StoreError> {
        let (order_id, call_sid) = (order_id.to_owned(), call_sid.to_owned());
        let token = token.cloned();
        self.writes
            .write(move |db| {
                at_once(money::hold(
                    &mut Rusqlite(db),
                    &order_id,
                    &call_sid,
                    until,
                    now,
                    token.as_ref(),
                ))
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
        let token = TokenIssue {
            token_hash: token_hash.to_owned(),
            expires_at,
        };
        let grant = grant.clone();
        self.writes
            .write(move |db| {
                at_once(async {
                    Rusqlite(db)
                        .insert_token(&token, &grant.call_sid, &grant.order_id)
                        .await
                        .map(Outcome::Commit)
                })
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
    pub(super) async fn write_attempts(
        &self,
        attempts: &[CodeAttempt],
        group: Option<AttemptGroup>,
    ) -> Result<(), StoreError> {
        let attempts = attempts.to_vec();
        let (writer, batch) = AttemptGroup::columns(group);
        self.writes
            .write(move |db| {
                let mut insert = db.prepare_cached(
                    "INSERT INTO code_attempts (caller, code_hash, ok, at, writer, batch) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )?;
                for a in &attempts {
                    insert.execute(named_params! {
                        "$1": a.caller, "$2": a.code_hash, "$3": a.ok, "$4": a.at,
                        "$5": writer, "$6": batch,
                    })?;
                }
                Ok(Outcome::Commit(()))
            })
            .await
    }
}

/// Ends a call: `store::money::end` on the writer's connection.
fn end_steps(
    end: EndCall,
) -> impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Outcome<Call>> + Send + 'static {
    move |db| at_once(money::end(&mut Rusqlite(db), &end))
}

/// Settles a call once: `store::money::settle` on the writer's connection.
fn settlement_steps(
    call_sid: String,
    rounding: Rounding,
    charge_id: String,
    now: UnixTime,
) -> impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Outcome<Settlement>> + Send + 'static {
    move |db| {
        at_once(money::settle(
            &mut Rusqlite(db),
            &call_sid,
            rounding,
            &charge_id,
            now,
        ))
    }
}

/// Runs a money-path sequence on the writer's connection. Its primitives never wait (rusqlite
/// is synchronous), so the sequence is done in one poll; one that waited would be a bug,
/// reported as a failed write rather than a stalled writer.
fn at_once<T>(
    sequence: impl std::future::Future<Output = rusqlite::Result<Outcome<T>>>,
) -> rusqlite::Result<Outcome<T>> {
    sequence.now_or_never().unwrap_or_else(|| {
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
            Some("a money step waited on SQLite's writer thread".into()),
        ))
    })
}

/// The money path's primitives on the writer's connection, inside the batch's transaction.
struct Rusqlite<'a>(&'a rusqlite::Connection);

impl MoneyTx for Rusqlite<'_> {
    type Error = rusqlite::Error;
    const ISOLATED: bool = true;

    fn contended(order_id: &str) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some(format!("order {order_id} kept changing under its debit")),
        )
    }

    async fn link_call(
        &mut self,
        call_sid: &str,
        order_id: &str,
        now: UnixTime,
    ) -> rusqlite::Result<bool> {
        Ok(self
            .0
            .prepare_cached(&CALL_LINK_ORDER)?
            .execute(named_params! { "$1": call_sid, "$2": order_id, "$3": now })?
            == 1)
    }

    async fn take_hold(
        &mut self,
        order_id: &str,
        call_sid: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> rusqlite::Result<Option<Order>> {
        self.0
            .prepare_cached(ORDER_HOLD)?
            .query_row(
                named_params! { "$1": order_id, "$2": call_sid, "$3": until, "$4": now },
                order_row,
            )
            .optional()
    }

    async fn insert_token(
        &mut self,
        token: &TokenIssue,
        call_sid: &str,
        order_id: &str,
    ) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(STREAM_TOKEN_INSERT)?
            .execute(named_params! {
                "$1": token.token_hash, "$2": call_sid, "$3": order_id, "$4": token.expires_at,
            })?;
        Ok(())
    }

    async fn order(&mut self, id: &str) -> rusqlite::Result<Option<Order>> {
        order_by_id(self.0, id)
    }

    async fn call(&mut self, call_sid: &str) -> rusqlite::Result<Option<Call>> {
        self.0
            .prepare_cached("SELECT * FROM calls WHERE call_sid = $1")?
            .query_row(named_params! { "$1": call_sid }, call_row)
            .optional()
    }

    async fn mark_ended(&mut self, end: &EndCall) -> rusqlite::Result<Call> {
        self.0.prepare_cached(&CALL_END)?.query_row(
            named_params! {
                "$1": end.call_sid,
                "$2": end.now,
                "$3": end.duration,
                "$4": end.twilio_status.as_str(),
                "$5": end.reason.as_str(),
                "$6": end.from_number,
                "$7": end.to_number,
            },
            call_row,
        )
    }

    async fn release_hold(&mut self, order_id: &str, call_sid: &str) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(ORDER_RELEASE)?
            .execute(named_params! { "$1": order_id, "$2": call_sid })?;
        Ok(())
    }

    async fn claim_settlement(
        &mut self,
        call_sid: &str,
        now: UnixTime,
    ) -> rusqlite::Result<Option<Call>> {
        self.0
            .prepare_cached(&CALL_CLAIM_SETTLEMENT)?
            .query_row(named_params! { "$1": call_sid, "$2": now }, call_row)
            .optional()
    }

    async fn set_settled_seconds(
        &mut self,
        call_sid: &str,
        seconds: Seconds,
    ) -> rusqlite::Result<()> {
        self.0
            .prepare_cached(CALL_SETTLED_SECONDS)?
            .execute(named_params! { "$1": call_sid, "$2": seconds.0 })?;
        Ok(())
    }

    async fn order_for_debit(
        &mut self,
        order_id: &str,
        _call_sid: &str,
        _seconds: Seconds,
    ) -> rusqlite::Result<Order> {
        // The writer's one thread keeps other writes off until the debit commits.
        order_by_id(self.0, order_id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
    }

    async fn debit_order(
        &mut self,
        before: &Order,
        used_after: Seconds,
        call_sid: &str,
        now: UnixTime,
    ) -> rusqlite::Result<bool> {
        Ok(self.0.prepare_cached(ORDER_DEBIT)?.execute(named_params! {
            "$1": before.id, "$2": used_after.0, "$3": call_sid, "$4": now,
            "$5": before.seconds_used.0,
        })? == 1)
    }

    async fn insert_charge(&mut self, c: &NewCharge) -> rusqlite::Result<Option<Charge>> {
        self.0
            .prepare_cached(&CHARGE_INSERT)?
            .query_row(
                named_params! {
                    "$1": c.id,
                    "$2": c.call_sid,
                    "$3": c.order_id,
                    "$4": c.amount.0,
                    "$5": c.currency.code(),
                    "$6": c.seconds_billed.0,
                    "$7": c.now,
                },
                charge_row,
            )
            .optional()
    }
}

#[cfg(test)]
mod tests {
    use super::super::rows::{call_row, charge_row, order_row};
    use super::*;
    use crate::store::prelude::*;
    use crate::store::{
        Cents, EndCall, EndReason, NewCall, NewCharge, NewOrder, Seconds, TwilioStatus,
    };
    use rusqlite::Row;

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
