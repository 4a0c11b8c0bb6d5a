//! The SQL shared by the SQLite and PostgreSQL backends.
//!
//! Both engines accept `$N` placeholders, `ON CONFLICT` and `RETURNING`, so one text serves
//! both; `sql_store!` expands the same method bodies once per driver, with concrete types, so
//! neither pays for a runtime-generic driver.

use std::sync::LazyLock;

use super::AttemptScope;
use crate::domain::call::CallState;
use crate::domain::charge::ChargeState;
use crate::domain::order::OrderStatus;

/// A statement built once, its state values taken from the enums' spelling tables: the
/// template names variants (`'{paid}'` with `paid = OrderStatus::Paid`), never their spellings,
/// so a renamed spelling changes every statement with it (`tests/api/architecture.rs` refuses
/// a spelling typed into SQL).
macro_rules! statement {
    ($($fmt:tt)*) => {
        LazyLock::new(|| format!($($fmt)*))
    };
}

pub(crate) const ORDER_INSERT: &str =
    "INSERT INTO orders (id, status, source, plan, amount_cents, currency, seconds_included, \
     seconds_used, overage_consent, overage_price_cents, stripe_payment_intent, stripe_customer, \
     stripe_payment_method, code_hash, code_sealed, code_last4, created_at, updated_at, paid_at, client_secret_hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17, $18)";

pub(crate) static ORDER_FULFIL: LazyLock<String> = statement!(
    "UPDATE orders SET status = '{paid}', code_hash = $2, code_sealed = $3, code_last4 = $4, \
     stripe_customer = COALESCE($5, stripe_customer), \
     stripe_payment_method = COALESCE($6, stripe_payment_method), paid_at = $7, updated_at = $7 \
     WHERE stripe_payment_intent = $1 AND status IN ('{pending}', '{failed}') RETURNING *",
    paid = OrderStatus::Paid,
    pending = OrderStatus::Pending,
    failed = OrderStatus::Failed,
);

/// Inserts a call, or leaves the stored one as it is; either way returns the stored row, in
/// one statement (the no-op update is what lets `RETURNING` see an existing row). It writes
/// back a column no key or index holds: writing the key itself, even unchanged, has SQLite
/// check every row that refers to the call by it.
pub(crate) static CALL_UPSERT: LazyLock<String> = statement!(
    "INSERT INTO calls (call_sid, from_number, to_number, status, started_at, updated_at) \
     VALUES ($1, $2, $3, '{menu}', $4, $4) \
     ON CONFLICT (call_sid) DO UPDATE SET updated_at = calls.updated_at RETURNING *",
    menu = CallState::Menu,
);

pub(crate) static CHARGE_INSERT: LazyLock<String> = statement!(
    "INSERT INTO charges (id, call_sid, order_id, amount_cents, currency, seconds_billed, state, \
     attempts, next_attempt_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, '{pending}', 0, $7, $7, $7) ON CONFLICT DO NOTHING RETURNING *",
    pending = ChargeState::Pending,
);

/// Stores a stream token's hash: `$1` hash, `$2` call, `$3` order, `$4` expiry.
pub(crate) const STREAM_TOKEN_INSERT: &str =
    "INSERT INTO stream_tokens (token_hash, call_sid, order_id, expires_at) VALUES ($1, $2, $3, $4)";

/// Rows in one multi-row attempt INSERT (4 parameters each; SQLite allows 32,766).
pub(crate) const ATTEMPTS_PER_INSERT: usize = 256;

/// Attempts deleted by one statement when old ones are pruned.
pub(crate) const PRUNE_CHUNK: i64 = 5000;

/// Everything the code check reads, in one statement: whether the call is stored, the
/// caller's and the code's recent failures (each counted up to its limit, `$5` and `$6`: the
/// index walk stops there however many are stored), and the id of the code's order (NULL
/// when none).
pub(crate) const CODE_CHECK: &str = "SELECT EXISTS (SELECT 1 FROM calls WHERE call_sid = $1), \
     (SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
         WHERE caller = $2 AND ok = FALSE AND at >= $4 LIMIT $5) AS c), \
     (SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
         WHERE code_hash = $3 AND ok = FALSE AND at >= $4 LIMIT $6) AS h), \
     (SELECT id FROM orders WHERE code_hash = $3)";

/// A call ready for settlement at `$2`: its bridge finished; or it never bridged and ended; or
/// its hold on its order lapsed or is gone (the instance running its bridge died).
pub(crate) static SETTLE_READY: LazyLock<String> = statement!(
    "(bridge_ended_at IS NOT NULL \
     OR (bridged_at IS NULL AND status = '{ended}') \
     OR (order_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = calls.order_id \
         AND o.active_call_sid = calls.call_sid AND o.active_call_until >= $2)))",
    ended = CallState::Ended,
);

// The money path's statements, shared by the sqlx bodies below (PostgreSQL) and the SQLite
// writer's (`store::sqlite`), which run the same steps in the same order.

/// Links a call to the order it is about to hold: `$1` call, `$2` order, `$3` now. The call
/// first (the same order of locks as ending and settling it): one that has ended or was
/// settled links nothing. On PostgreSQL this row lock makes a racing end wait for the hold.
pub(crate) static CALL_LINK_ORDER: LazyLock<String> = statement!(
    "UPDATE calls SET order_id = $2, updated_at = $3 \
     WHERE call_sid = $1 AND status <> '{ended}' AND settled_at IS NULL",
    ended = CallState::Ended,
);

/// Compare-and-set of an order's one live call: `$1` order, `$2` call, `$3` hold until, `$4`
/// now. A lapsed hold is not taken here: its call must be settled first, which releases it.
pub(crate) const ORDER_HOLD: &str = "UPDATE orders SET active_call_sid = $2, active_call_until = $3, \
     updated_at = $4 WHERE id = $1 AND (active_call_sid IS NULL OR active_call_sid = $2) RETURNING *";

/// Marks a call ended, keeping the first report's facts: `$1` call, `$2` now, `$3` Twilio's
/// duration, `$4` its status, `$5` the reason.
pub(crate) static CALL_END: LazyLock<String> = statement!(
    "UPDATE calls SET status = '{ended}', ended_at = COALESCE(ended_at, $2), \
     twilio_duration = COALESCE(twilio_duration, $3), twilio_status = $4, \
     end_reason = COALESCE(end_reason, $5), updated_at = $2 WHERE call_sid = $1 RETURNING *",
    ended = CallState::Ended,
);

/// Releases an order held by a call that never bridged (a bridged call keeps its hold until
/// settlement debits it in the same step): `$1` order, `$2` call.
pub(crate) const ORDER_RELEASE: &str = "UPDATE orders SET active_call_sid = NULL, \
     active_call_until = NULL WHERE id = $1 AND active_call_sid = $2";

/// Claims a call for settlement, once: `$1` call, `$2` now.
pub(crate) static CALL_CLAIM_SETTLEMENT: LazyLock<String> = statement!(
    "UPDATE calls SET settled_at = $2, updated_at = $2 WHERE call_sid = $1 \
     AND settled_at IS NULL AND {ready} RETURNING *",
    ready = *SETTLE_READY,
);

/// The seconds a settled call took from its order: `$1` call, `$2` seconds.
pub(crate) const CALL_SETTLED_SECONDS: &str =
    "UPDATE calls SET settled_seconds = $2 WHERE call_sid = $1";

/// Reads an order for its debit. A no-op write, so that on PostgreSQL it locks the order's row
/// until the debit commits: `$1` order.
pub(crate) const ORDER_FOR_DEBIT: &str =
    "UPDATE orders SET updated_at = updated_at WHERE id = $1 RETURNING *";

/// The debit and the release of this call's hold, in one write: `$1` order, `$2` seconds used
/// after, `$3` call, `$4` now.
pub(crate) const ORDER_DEBIT: &str = "UPDATE orders SET seconds_used = $2, \
     active_call_until = CASE WHEN active_call_sid = $3 THEN NULL ELSE active_call_until END, \
     active_call_sid = CASE WHEN active_call_sid = $3 THEN NULL ELSE active_call_sid END, \
     updated_at = $4 WHERE id = $1";

/// The bridge is up: `$1` call, `$2` now, `$3` conversation id. Not for a call that ended or
/// was settled.
pub(crate) static CALL_BRIDGED: LazyLock<String> = statement!(
    "UPDATE calls SET status = '{bridged}', bridged_at = COALESCE(bridged_at, $2), \
     conversation_id = COALESCE($3, conversation_id), updated_at = $2 \
     WHERE call_sid = $1 AND status <> '{ended}' AND settled_at IS NULL",
    bridged = CallState::Bridged,
    ended = CallState::Ended,
);

/// The bridge's heartbeat on its hold: `$1` call, `$2` hold until. Only a paid order's.
pub(crate) static ORDER_RENEW_HOLD: LazyLock<String> = statement!(
    "UPDATE orders SET active_call_until = $2 WHERE active_call_sid = $1 AND status = '{paid}'",
    paid = OrderStatus::Paid,
);

/// Leases the next due pending charge: `$1` owner, `$2` lease until, `$3` now.
pub(crate) static CHARGE_CLAIM: LazyLock<String> = statement!(
    "UPDATE charges SET lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3 \
     WHERE id = (SELECT id FROM charges WHERE state = '{pending}' AND next_attempt_at <= $3 \
                 AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at, id LIMIT 1) \
     AND state = '{pending}' AND (lease_until IS NULL OR lease_until < $3) RETURNING *",
    pending = ChargeState::Pending,
);

/// An attempt's outcome, by the lease's owner: `$1` id, `$2` owner, `$3` state, `$4` PI,
/// `$5` error, `$6` next attempt, `$7` pay token, `$8` now.
pub(crate) static CHARGE_FINISH: LazyLock<String> = statement!(
    "UPDATE charges SET state = $3, stripe_payment_intent = COALESCE($4, stripe_payment_intent), \
     last_error = $5, next_attempt_at = COALESCE($6, next_attempt_at), \
     pay_token = COALESCE($7, pay_token), lease_owner = NULL, lease_until = NULL, updated_at = $8 \
     WHERE id = $1 AND lease_owner = $2 AND state = '{pending}'",
    pending = ChargeState::Pending,
);

/// The operator's retry: `$1` id, `$2` now, `$3` 1 for a new idempotency key.
pub(crate) static CHARGE_RETRY: LazyLock<String> = statement!(
    "UPDATE charges SET state = '{pending}', next_attempt_at = $2, attempts = 0, \
     last_error = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $2, \
     key_generation = key_generation + $3 \
     WHERE id = $1 AND state IN ({retryable}) RETURNING *",
    pending = ChargeState::Pending,
    retryable = spelling_list(ChargeState::RETRYABLE.iter().map(|s| s.as_str())),
);

/// Paid on-session: `$1` id, `$2` PaymentIntent, `$3` now.
pub(crate) static CHARGE_PAID: LazyLock<String> = statement!(
    "UPDATE charges SET state = '{succeeded}', stripe_payment_intent = $2, last_error = NULL, updated_at = $3 \
     WHERE id = $1 AND state IN ({payable})",
    succeeded = ChargeState::Succeeded,
    payable = spelling_list(ChargeState::PAYABLE_ON_SESSION.iter().map(|s| s.as_str())),
);

/// An order's open charges cancelled with it: `$1` order, `$2` now. A charge leased to a
/// worker right now finishes on its own.
pub(crate) static CHARGES_CANCEL_WITH_ORDER: LazyLock<String> = statement!(
    "UPDATE charges SET state = '{canceled}', updated_at = $2 WHERE order_id = $1 \
     AND (state = '{requires_action}' OR (state = '{pending}' AND (lease_until IS NULL OR lease_until < $2)))",
    canceled = ChargeState::Canceled,
    requires_action = ChargeState::RequiresAction,
    pending = ChargeState::Pending,
);

/// Unpaid orders created before `$1`, oldest first, at most `$2`.
pub(crate) static ORDERS_STALE_PENDING: LazyLock<String> = statement!(
    "SELECT * FROM orders WHERE status = '{pending}' AND created_at < $1 \
     ORDER BY created_at, id LIMIT $2",
    pending = OrderStatus::Pending,
);

/// Deletes order `$1` if it is still unpaid.
pub(crate) static ORDER_DELETE_PENDING: LazyLock<String> = statement!(
    "DELETE FROM orders WHERE id = $1 AND status = '{pending}'",
    pending = OrderStatus::Pending,
);

/// `'a', 'b'` for an `IN (...)` of state spellings: callgate's own constants (the
/// `text_enum!` tables), so they can be written into the SQL text.
pub(crate) fn spelling_list<'a>(spellings: impl Iterator<Item = &'a str>) -> String {
    spellings
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Wrong attempts in a scope since `$1`, counted up to `$3`: the statement and the value
/// bound to `$2` (the caller, the code's hash, or NULL for everyone's).
pub(crate) fn failure_count(scope: AttemptScope<'_>) -> (&'static str, Option<&str>) {
    match scope {
        AttemptScope::Caller(c) => (
            "SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
             WHERE ok = FALSE AND at >= $1 AND caller = $2 LIMIT $3) AS f",
            Some(c),
        ),
        AttemptScope::Code(h) => (
            "SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
             WHERE ok = FALSE AND at >= $1 AND code_hash = $2 LIMIT $3) AS f",
            Some(h),
        ),
        AttemptScope::Global => (
            "SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
             WHERE ok = FALSE AND at >= $1 AND $2 IS NULL LIMIT $3) AS f",
            None,
        ),
    }
}

/// A [`CODE_CHECK`] row: call known, caller failures, code failures, order id.
pub(crate) type CodeCheckRow = (bool, i64, i64, Option<String>);

/// Implements [`crate::store::Store`] for a struct with `pool` and `writer` fields (both
/// `sqlx::Pool<$db>`): reads go to `pool`, writes to `writer` (today the same pool for both
/// engines; the split lets a backend give its writers their own connections).
macro_rules! sql_store {
    ($store:ty, $db:ty, $backend:literal, $migrator:expr $(, $own:item)* $(,)?) => {
        use $crate::store::sql::*;
        use $crate::store::*;

        impl $store {
            async fn insert_order_returning(
                &self,
                o: &NewOrder,
                on_conflict_nothing: bool,
            ) -> Result<Option<Order>, StoreError> {
                let (status, paid_at) = match o.code {
                    Some(_) => (OrderStatus::Paid, Some(o.now)),
                    None => (OrderStatus::Pending, None),
                };
                let suffix = if on_conflict_nothing {
                    " ON CONFLICT DO NOTHING RETURNING *"
                } else {
                    " RETURNING *"
                };
                let sql = format!("{ORDER_INSERT}{suffix}");
                sqlx::query_as::<$db, Order>(&sql)
                    .bind(&o.id)
                    .bind(status.as_str())
                    .bind(o.source.as_str())
                    .bind(&o.plan)
                    .bind(o.amount.0)
                    .bind(o.currency.code())
                    .bind(o.seconds_included.0)
                    .bind(o.overage_consent)
                    .bind(o.overage_price.0)
                    .bind(&o.stripe_payment_intent)
                    .bind(&o.stripe_customer)
                    .bind(&o.stripe_payment_method)
                    .bind(o.code.as_ref().map(|c| c.hash.as_str()))
                    .bind(o.code.as_ref().map(|c| c.sealed.as_str()))
                    .bind(o.code.as_ref().map(|c| c.last4.as_str()))
                    .bind(o.now)
                    .bind(paid_at)
                    .bind(&o.client_secret_hash)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(classify)
            }

        }

        #[async_trait::async_trait]
        impl Store for $store {
            // The backend's own versions of the trait's provided methods.
            $($own)*

            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                $migrator
                    .run(&self.pool)
                    .await
                    .map_err(|e| StoreError::Migrate(e.to_string()))?;
                self.migrated();
                Ok(())
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query::<$db>("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn insert_order(&self, order: &NewOrder) -> Result<Order, StoreError> {
                self.insert_order_returning(order, false)
                    .await?
                    .ok_or_else(|| StoreError::Database("insert returned no row".into()))
            }

            async fn fulfil_order(&self, f: &Fulfilment) -> Result<Fulfilled, StoreError> {
                let updated = sqlx::query_as::<$db, Order>(&ORDER_FULFIL)
                    .bind(&f.payment_intent)
                    .bind(&f.code.hash)
                    .bind(&f.code.sealed)
                    .bind(&f.code.last4)
                    .bind(&f.customer)
                    .bind(&f.payment_method)
                    .bind(f.now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(classify)?;
                if let Some(order) = updated {
                    return Ok(Fulfilled::Now(order));
                }
                Ok(match self.order_by_payment_intent(&f.payment_intent).await? {
                    Some(order) => Fulfilled::Already(order),
                    None => Fulfilled::NoOrder,
                })
            }

            async fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
                self.order_where("id", id).await
            }

            async fn order_by_payment_intent(&self, pi: &str) -> Result<Option<Order>, StoreError> {
                self.order_where("stripe_payment_intent", pi).await
            }

            async fn order_by_code(&self, code_hash: &str) -> Result<Option<Order>, StoreError> {
                self.order_where("code_hash", code_hash).await
            }

            async fn list_orders(&self, limit: i64) -> Result<Vec<Order>, StoreError> {
                sqlx::query_as::<$db, Order>(
                    "SELECT * FROM orders ORDER BY created_at DESC, id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn set_client_secret_hash(&self, id: &str, hash: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE orders SET client_secret_hash = $2 WHERE id = $1")
                    .bind(id)
                    .bind(hash)
                    .execute(&self.writer)
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn set_order_status(
                &self,
                id: &str,
                from: &[OrderStatus],
                to: OrderStatus,
                now: UnixTime,
            ) -> Result<Option<Order>, StoreError> {
                if from.is_empty() {
                    return Ok(None);
                }
                let allowed = spelling_list(from.iter().map(|s| s.as_str()));
                let revoked_at = if to == OrderStatus::Revoked { "$3" } else { "revoked_at" };
                let sql = format!(
                    "UPDATE orders SET status = $2, updated_at = $3, revoked_at = {revoked_at} \
                     WHERE id = $1 AND status IN ({allowed}) RETURNING *"
                );
                sqlx::query_as::<$db, Order>(&sql)
                    .bind(id)
                    .bind(to.as_str())
                    .bind(now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(classify)
            }

            async fn add_seconds_used(
                &self,
                order_id: &str,
                seconds: Seconds,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE orders SET seconds_used = seconds_used + $2, updated_at = $3 WHERE id = $1",
                )
                .bind(order_id)
                .bind(seconds.0.max(0))
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn hold_order_for_call(
                &self,
                order_id: &str,
                call_sid: &str,
                until: UnixTime,
                now: UnixTime,
            ) -> Result<Hold, StoreError> {
                self.write_hold(order_id, call_sid, until, now).await
            }
            async fn end_call(&self, end: &EndCall) -> Result<Call, StoreError> {
                self.write_end(end).await
            }
            async fn bridge_started(
                &self,
                call_sid: &str,
                conversation_id: Option<&str>,
                hold_until: UnixTime,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                let started = sqlx::query::<$db>(&CALL_BRIDGED)
                .bind(call_sid)
                .bind(now)
                .bind(conversation_id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?
                .rows_affected()
                    == 1;
                let held = started
                    && sqlx::query::<$db>(&ORDER_RENEW_HOLD)
                    .bind(call_sid)
                    .bind(hold_until)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?
                    .rows_affected()
                        == 1;
                if held {
                    tx.commit().await.map_err(classify)?;
                } else {
                    tx.rollback().await.map_err(classify)?;
                }
                Ok(held)
            }

            async fn record_metering(
                &self,
                call_sid: &str,
                seconds: Seconds,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE calls SET seconds_metered = CASE WHEN seconds_metered > $2 THEN seconds_metered ELSE $2 END, \
                     updated_at = $3 WHERE call_sid = $1",
                )
                .bind(call_sid)
                .bind(seconds.0)
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn record_metering_many(
                &self,
                figures: &[(String, Seconds)],
                hold_until: UnixTime,
                now: UnixTime,
            ) -> Result<Vec<String>, StoreError> {
                if figures.is_empty() {
                    return Ok(Vec::new());
                }
                let mut stop = Vec::new();
                let mut tx = self.writer.begin().await.map_err(classify)?;
                for (call_sid, seconds) in figures {
                    sqlx::query::<$db>(
                        "UPDATE calls SET seconds_metered = CASE WHEN seconds_metered > $2 THEN seconds_metered ELSE $2 END, \
                         updated_at = $3 WHERE call_sid = $1",
                    )
                    .bind(call_sid)
                    .bind(seconds.0)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                    // The write is the bridge's heartbeat: it renews the hold of a call that
                    // still has it on a paid order, and every other call must stop.
                    let renewed = sqlx::query::<$db>(&ORDER_RENEW_HOLD)
                    .bind(call_sid)
                    .bind(hold_until)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?
                    .rows_affected();
                    if renewed == 0 {
                        stop.push(call_sid.clone());
                    }
                }
                tx.commit().await.map_err(classify)?;
                Ok(stop)
            }

            async fn bridge_finished(
                &self,
                call_sid: &str,
                seconds: Seconds,
                reason: EndReason,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE calls SET seconds_metered = CASE WHEN seconds_metered > $2 THEN seconds_metered ELSE $2 END, \
                     end_reason = COALESCE(end_reason, $3), bridge_ended_at = COALESCE(bridge_ended_at, $4), \
                     updated_at = $4 WHERE call_sid = $1",
                )
                .bind(call_sid)
                .bind(seconds.0)
                .bind(reason)
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn append_transcript(
                &self,
                call_sid: &str,
                lines: &[TranscriptLine],
            ) -> Result<(), StoreError> {
                for line in lines {
                    sqlx::query::<$db>(
                        "INSERT INTO call_transcript (call_sid, seq, speaker, text, at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(call_sid)
                    .bind(line.seq)
                    .bind(&line.speaker)
                    .bind(&line.text)
                    .bind(line.at)
                    .execute(&self.writer)
                    .await
                    .map_err(classify)?;
                }
                Ok(())
            }

            async fn transcript(&self, call_sid: &str) -> Result<Vec<TranscriptLine>, StoreError> {
                sqlx::query_as::<$db, TranscriptLine>(
                    "SELECT seq, speaker, text, at FROM call_transcript WHERE call_sid = $1 ORDER BY seq",
                )
                .bind(call_sid)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn insert_stream_token(
                &self,
                token_hash: &str,
                grant: &StreamGrant,
                expires_at: UnixTime,
            ) -> Result<(), StoreError> {
                self.write_stream_token(token_hash, grant, expires_at).await
            }

            async fn consume_stream_token(
                &self,
                token_hash: &str,
                call_sid: &str,
                now: UnixTime,
            ) -> Result<Option<StreamOpening>, StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                let grant = sqlx::query_as::<$db, StreamGrant>(
                    "UPDATE stream_tokens SET used_at = $3 WHERE token_hash = $1 AND call_sid = $2 \
                     AND used_at IS NULL AND expires_at > $3 RETURNING call_sid, order_id",
                )
                .bind(token_hash)
                .bind(call_sid)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
                let Some(grant) = grant else {
                    tx.rollback().await.map_err(classify)?;
                    return Ok(None);
                };
                let call = sqlx::query_as::<$db, Call>("SELECT * FROM calls WHERE call_sid = $1")
                    .bind(&grant.call_sid)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
                let order = sqlx::query_as::<$db, Order>("SELECT * FROM orders WHERE id = $1")
                    .bind(&grant.order_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                Ok(Some(StreamOpening { grant, call, order }))
            }

            async fn upsert_call(&self, call: &NewCall) -> Result<Call, StoreError> {
                self.write_call(call).await
            }

            async fn record_calls(&self, calls: &[NewCall]) -> Result<(), StoreError> {
                self.write_calls(calls).await
            }

            async fn call(&self, call_sid: &str) -> Result<Option<Call>, StoreError> {
                sqlx::query_as::<$db, Call>("SELECT * FROM calls WHERE call_sid = $1")
                    .bind(call_sid)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(classify)
            }

            async fn list_calls(&self, limit: i64) -> Result<Vec<Call>, StoreError> {
                sqlx::query_as::<$db, Call>(
                    "SELECT * FROM calls ORDER BY started_at DESC, call_sid DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn insert_charge(&self, c: &NewCharge) -> Result<(Charge, bool), StoreError> {
                let inserted = sqlx::query_as::<$db, Charge>(&CHARGE_INSERT)
                    .bind(&c.id)
                    .bind(&c.call_sid)
                    .bind(&c.order_id)
                    .bind(c.amount.0)
                    .bind(c.currency.code())
                    .bind(c.seconds_billed.0)
                    .bind(c.now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(classify)?;
                if let Some(charge) = inserted {
                    return Ok((charge, true));
                }
                sqlx::query_as::<$db, Charge>("SELECT * FROM charges WHERE call_sid = $1")
                    .bind(&c.call_sid)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(classify)?
                    .map(|charge| (charge, false))
                    .ok_or_else(|| StoreError::Conflict(format!("charge id {} already used", c.id)))
            }

            async fn settle_call(
                &self,
                call_sid: &str,
                rounding: Rounding,
                charge_id: &str,
                now: UnixTime,
            ) -> Result<Settlement, StoreError> {
                self.write_settlement(call_sid, rounding, charge_id, now).await
            }
            async fn calls_to_settle(&self, limit: i64, now: UnixTime) -> Result<Vec<String>, StoreError> {
                sqlx::query_scalar::<$db, String>(&format!(
                    "SELECT call_sid FROM calls WHERE settled_at IS NULL AND {} \
                     ORDER BY updated_at LIMIT $1",
                    *SETTLE_READY
                ))
                .bind(limit)
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn claim_charge(
                &self,
                owner: &str,
                lease_until: UnixTime,
                now: UnixTime,
            ) -> Result<Option<Charge>, StoreError> {
                sqlx::query_as::<$db, Charge>(&CHARGE_CLAIM)
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .fetch_optional(&self.writer)
                .await
                .map_err(classify)
            }

            async fn finish_charge(
                &self,
                id: &str,
                owner: &str,
                u: &ChargeUpdate,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                sqlx::query::<$db>(&CHARGE_FINISH)
                .bind(id)
                .bind(owner)
                .bind(u.state.as_str())
                .bind(&u.stripe_payment_intent)
                .bind(&u.last_error)
                .bind(u.next_attempt_at)
                .bind(&u.pay_token)
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected() == 1)
                .map_err(classify)
            }

            async fn count_charges_by_state(&self) -> Result<Vec<(ChargeState, i64)>, StoreError> {
                let rows = sqlx::query_as::<$db, (String, i64)>(
                    "SELECT state, COUNT(*) FROM charges GROUP BY state",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
                let mut out: Vec<(ChargeState, i64)> =
                    ChargeState::ALL.iter().map(|s| (*s, 0)).collect();
                for (state, n) in rows {
                    let state: ChargeState = state.parse()?;
                    if let Some(slot) = out.iter_mut().find(|(s, _)| *s == state) {
                        slot.1 = n;
                    }
                }
                Ok(out)
            }

            async fn add_seconds_included(
                &self,
                order_id: &str,
                seconds: Seconds,
                now: UnixTime,
            ) -> Result<Option<Order>, StoreError> {
                sqlx::query_as::<$db, Order>(
                    "UPDATE orders SET seconds_included = seconds_included + $2, updated_at = $3 \
                     WHERE id = $1 RETURNING *",
                )
                .bind(order_id)
                .bind(seconds.0)
                .bind(now)
                .fetch_optional(&self.writer)
                .await
                .map_err(classify)
            }

            async fn retry_charge(
                &self,
                id: &str,
                new_key: bool,
                now: UnixTime,
            ) -> Result<Option<Charge>, StoreError> {
                sqlx::query_as::<$db, Charge>(&CHARGE_RETRY)
                .bind(id)
                .bind(now)
                .bind(i64::from(new_key))
                .fetch_optional(&self.writer)
                .await
                .map_err(classify)
            }

            async fn charge(&self, id: &str) -> Result<Option<Charge>, StoreError> {
                sqlx::query_as::<$db, Charge>("SELECT * FROM charges WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(classify)
            }

            async fn charge_by_pay_token(&self, token: &str) -> Result<Option<Charge>, StoreError> {
                sqlx::query_as::<$db, Charge>("SELECT * FROM charges WHERE pay_token = $1")
                    .bind(token)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(classify)
            }

            async fn charge_by_payment_intent(&self, pi: &str) -> Result<Option<Charge>, StoreError> {
                sqlx::query_as::<$db, Charge>("SELECT * FROM charges WHERE stripe_payment_intent = $1")
                    .bind(pi)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(classify)
            }

            async fn set_charge_state(
                &self,
                id: &str,
                from: &[ChargeState],
                to: ChargeState,
                now: UnixTime,
            ) -> Result<Option<Charge>, StoreError> {
                if from.is_empty() {
                    return Ok(None);
                }
                let allowed = spelling_list(from.iter().map(|s| s.as_str()));
                sqlx::query_as::<$db, Charge>(&format!(
                    "UPDATE charges SET state = $2, updated_at = $3 WHERE id = $1 AND state IN ({allowed}) RETURNING *"
                ))
                .bind(id)
                .bind(to.as_str())
                .bind(now)
                .fetch_optional(&self.writer)
                .await
                .map_err(classify)
            }

            async fn charge_paid(&self, id: &str, payment_intent: &str, now: UnixTime) -> Result<bool, StoreError> {
                sqlx::query::<$db>(&CHARGE_PAID)
                .bind(id)
                .bind(payment_intent)
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected() == 1)
                .map_err(classify)
            }

            async fn cancel_open_charges(&self, order_id: &str, now: UnixTime) -> Result<u64, StoreError> {
                // A charge leased to a worker right now finishes on its own; the others stop here.
                sqlx::query::<$db>(&CHARGES_CANCEL_WITH_ORDER)
                .bind(order_id)
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected())
                .map_err(classify)
            }

            async fn set_overage_blocked(
                &self,
                order_id: &str,
                reason: Option<OverageBlock>,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE orders SET overage_blocked = $2, updated_at = $3 WHERE id = $1")
                    .bind(order_id)
                    .bind(reason)
                    .bind(now)
                    .execute(&self.writer)
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn charges_for_order(&self, order_id: &str) -> Result<Vec<Charge>, StoreError> {
                sqlx::query_as::<$db, Charge>("SELECT * FROM charges WHERE order_id = $1 ORDER BY created_at, id")
                    .bind(order_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(classify)
            }

            async fn list_charges(
                &self,
                state: Option<ChargeState>,
                limit: i64,
            ) -> Result<Vec<Charge>, StoreError> {
                sqlx::query_as::<$db, Charge>(
                    "SELECT * FROM charges WHERE ($1 IS NULL OR state = $1) \
                     ORDER BY created_at DESC, id DESC LIMIT $2",
                )
                .bind(state.map(|s| s.as_str()))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn record_event(&self, id: &str, kind: &str, now: UnixTime) -> Result<bool, StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO webhook_events (id, kind, received_at) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(kind)
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected() == 1)
                .map_err(classify)
            }

            async fn event_seen(&self, id: &str) -> Result<bool, StoreError> {
                sqlx::query_scalar::<$db, i64>("SELECT COUNT(*) FROM webhook_events WHERE id = $1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
                    .map(|n| n > 0)
                    .map_err(classify)
            }

            async fn record_attempts(&self, attempts: &[CodeAttempt]) -> Result<(), StoreError> {
                self.write_attempts(attempts).await
            }

            async fn code_check(&self, q: &CodeCheckQuery<'_>) -> Result<CodeCheckFacts, StoreError> {
                let (call_known, caller_failures, code_failures, order_id) =
                    self.code_check_row(q).await?;
                let order = match order_id {
                    Some(id) => self.order(&id).await?,
                    None => None,
                };
                Ok(CodeCheckFacts {
                    call_known,
                    caller_failures,
                    code_failures,
                    order,
                })
            }

            async fn count_failures(
                &self,
                scope: AttemptScope<'_>,
                since: UnixTime,
                up_to: i64,
            ) -> Result<i64, StoreError> {
                self.count_failures_row(scope, since, up_to).await
            }

            async fn caller_has_used_code(
                &self,
                from: &str,
                order_id: Option<&str>,
                except_call: &str,
            ) -> Result<bool, StoreError> {
                sqlx::query_scalar::<$db, i64>(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM calls WHERE from_number = $1 \
                     AND order_id IS NOT NULL AND ($2 IS NULL OR order_id = $2) \
                     AND call_sid <> $3 LIMIT 1) AS used",
                )
                .bind(from)
                .bind(order_id)
                .bind(except_call)
                .fetch_one(&self.pool)
                .await
                .map(|n| n > 0)
                .map_err(classify)
            }

            async fn stale_pending_orders(
                &self,
                before: UnixTime,
                limit: i64,
            ) -> Result<Vec<Order>, StoreError> {
                sqlx::query_as::<$db, Order>(&ORDERS_STALE_PENDING)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn delete_pending_order(&self, id: &str) -> Result<bool, StoreError> {
                sqlx::query::<$db>(&ORDER_DELETE_PENDING)
                    .bind(id)
                    .execute(&self.writer)
                    .await
                    .map(|r| r.rows_affected() == 1)
                    .map_err(classify)
            }

            async fn prune_attempts(&self, before: UnixTime) -> Result<u64, StoreError> {
                // In chunks, each its own transaction: after a guessing attack there may be
                // millions, and other writes go on in between.
                let mut pruned = 0;
                loop {
                    let deleted = sqlx::query::<$db>(
                        "DELETE FROM code_attempts WHERE id IN \
                         (SELECT id FROM code_attempts WHERE at < $1 LIMIT $2)",
                    )
                    .bind(before)
                    .bind(PRUNE_CHUNK)
                    .execute(&self.writer)
                    .await
                    .map_err(classify)?
                    .rows_affected();
                    pruned += deleted;
                    if deleted < PRUNE_CHUNK as u64 {
                        return Ok(pruned);
                    }
                }
            }
        }
    };
}

pub(crate) use sql_store;

/// The hot writes through sqlx, for PostgreSQL: the money path's multi-step writes and the
/// single or grouped writes every call makes. SQLite runs the same steps, with the same
/// statements, on its own writer thread (`store::sqlite_writer`). Each is called by the
/// `Store` method of the same meaning that `sql_store!` generates. Expands beside it, in the
/// module where `sql_store!` brought the store's names in.
macro_rules! sqlx_hot_writes {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Inserts `rows` in one transaction, one multi-row INSERT per chunk: each page
            /// touched is written once for the whole group. `head` names the table and its
            /// columns, `bind` binds one row's values in that order, `tail` ends each INSERT.
            async fn insert_group<'a, T>(
                &self,
                head: &str,
                rows: &'a [T],
                bind: impl Fn(&mut sqlx::query_builder::Separated<'_, 'a, $db, &'static str>, &'a T),
                tail: &str,
            ) -> Result<(), StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                for chunk in rows.chunks(ATTEMPTS_PER_INSERT) {
                    let mut insert = sqlx::QueryBuilder::<$db>::new(head);
                    insert.push_values(chunk, |mut row, r| bind(&mut row, r));
                    insert.push(tail);
                    insert
                        .build()
                        .persistent(chunk.len() == 1)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                }
                tx.commit().await.map_err(classify)
            }

            async fn write_stream_token(
                &self,
                token_hash: &str,
                grant: &StreamGrant,
                expires_at: UnixTime,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>(STREAM_TOKEN_INSERT)
                .bind(token_hash)
                .bind(&grant.call_sid)
                .bind(&grant.order_id)
                .bind(expires_at)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn write_call(&self, call: &NewCall) -> Result<Call, StoreError> {
                sqlx::query_as::<$db, Call>(&CALL_UPSERT)
                    .bind(&call.call_sid)
                    .bind(&call.from_number)
                    .bind(&call.to_number)
                    .bind(call.now)
                    .fetch_one(&self.writer)
                    .await
                    .map_err(classify)
            }

            async fn write_calls(&self, calls: &[NewCall]) -> Result<(), StoreError> {
                self.insert_group(
                    "INSERT INTO calls (call_sid, from_number, to_number, status, started_at, updated_at) ",
                    calls,
                    |row, c| {
                        row.push_bind(&c.call_sid)
                            .push_bind(&c.from_number)
                            .push_bind(&c.to_number)
                            .push_bind(CallState::Menu)
                            .push_bind(c.now)
                            .push_bind(c.now);
                    },
                    " ON CONFLICT (call_sid) DO NOTHING",
                )
                .await
            }

            async fn write_attempts(&self, attempts: &[CodeAttempt]) -> Result<(), StoreError> {
                self.insert_group(
                    "INSERT INTO code_attempts (caller, code_hash, ok, at) ",
                    attempts,
                    |row, a| {
                        row.push_bind(&a.caller)
                            .push_bind(&a.code_hash)
                            .push_bind(a.ok)
                            .push_bind(a.at);
                    },
                    "",
                )
                .await
            }

            async fn write_hold(
                &self,
                order_id: &str,
                call_sid: &str,
                until: UnixTime,
                now: UnixTime,
            ) -> Result<Hold, StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                let linked = sqlx::query::<$db>(&CALL_LINK_ORDER)
                    .bind(call_sid)
                    .bind(order_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?
                    .rows_affected()
                    == 1;
                if !linked {
                    tx.rollback().await.map_err(classify)?;
                    return Ok(Hold::CallOver);
                }
                let held = sqlx::query_as::<$db, Order>(ORDER_HOLD)
                    .bind(order_id)
                    .bind(call_sid)
                    .bind(until)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
                if let Some(order) = held {
                    tx.commit().await.map_err(classify)?;
                    return Ok(Hold::Held(Box::new(order)));
                }
                tx.rollback().await.map_err(classify)?;
                Ok(Hold::refused(self.order(order_id).await?, now))
            }

            async fn write_end(&self, end: &EndCall) -> Result<Call, StoreError> {
                self.upsert_call(&end.as_new_call()).await?;
                let call = sqlx::query_as::<$db, Call>(&CALL_END)
                    .bind(&end.call_sid)
                    .bind(end.now)
                    .bind(end.duration)
                    .bind(&end.twilio_status)
                    .bind(&end.reason)
                    .fetch_one(&self.writer)
                    .await
                    .map_err(classify)?;
                if let Some(order_id) = call.releases_hold() {
                    sqlx::query::<$db>(ORDER_RELEASE)
                        .bind(order_id)
                        .bind(&call.call_sid)
                        .execute(&self.writer)
                        .await
                        .map_err(classify)?;
                }
                Ok(call)
            }

            async fn write_settlement(
                &self,
                call_sid: &str,
                rounding: Rounding,
                charge_id: &str,
                now: UnixTime,
            ) -> Result<Settlement, StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                // Claiming the call first makes the whole settlement happen once.
                let claimed = sqlx::query_as::<$db, Call>(&CALL_CLAIM_SETTLEMENT)
                    .bind(call_sid)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
                let Some(call) = claimed else {
                    tx.rollback().await.map_err(classify)?;
                    return Ok(Settlement::unclaimed(self.call(call_sid).await?));
                };
                let used = call.billable_seconds();
                sqlx::query::<$db>(CALL_SETTLED_SECONDS)
                    .bind(call_sid)
                    .bind(used.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                let Some(order_id) = call.order_id.as_deref() else {
                    tx.commit().await.map_err(classify)?;
                    return Ok(Settlement::without_order(used));
                };
                let order = sqlx::query_as::<$db, Order>(ORDER_FOR_DEBIT)
                    .bind(order_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(classify)?;
                let debit = $crate::domain::ledger::debit(&order, used, rounding);
                sqlx::query::<$db>(ORDER_DEBIT)
                    .bind(order_id)
                    .bind(debit.used_after.0)
                    .bind(call_sid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                let charge = match debit.charge {
                    Some(amount) => sqlx::query_as::<$db, Charge>(&CHARGE_INSERT)
                        .bind(charge_id)
                        .bind(call_sid)
                        .bind(order_id)
                        .bind(amount.0)
                        .bind(order.currency.code())
                        .bind(debit.overage.0)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(classify)?
                        .map(Box::new),
                    None => None,
                };
                tx.commit().await.map_err(classify)?;
                Ok(Settlement::Settled {
                    seconds: used,
                    overage: debit.overage,
                    charge,
                })
            }
        }
    };
}

pub(crate) use sqlx_hot_writes;
