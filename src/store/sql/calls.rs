//! Calls in SQL: their statements (the money path's among them, shared with the SQLite
//! writer), and `CallStore` for both engines.

use std::sync::LazyLock;

use crate::domain::{call::CallState, order::OrderStatus};

/// A page of calls (`store::Listing`), by when they started.
pub(crate) static CALLS_PAGE: LazyLock<String> =
    LazyLock::new(|| super::listing("calls", "started_at", "call_sid", "status"));

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

/// Stores a stream token's hash: `$1` hash, `$2` call, `$3` order, `$4` expiry.
pub(crate) const STREAM_TOKEN_INSERT: &str =
    "INSERT INTO stream_tokens (token_hash, call_sid, order_id, expires_at) VALUES ($1, $2, $3, $4)";

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

/// Marks a call ended, keeping the first report's facts, and stores it ended if its start was
/// never seen (one statement: the status callback's first write): `$1` call, `$2` now, `$3`
/// Twilio's duration, `$4` its status, `$5` the reason, `$6` from, `$7` to.
pub(crate) static CALL_END: LazyLock<String> = statement!(
    "INSERT INTO calls (call_sid, from_number, to_number, status, started_at, updated_at, \
     ended_at, twilio_duration, twilio_status, end_reason) \
     VALUES ($1, $6, $7, '{ended}', $2, $2, $2, $3, $4, $5) \
     ON CONFLICT (call_sid) DO UPDATE SET status = '{ended}', \
     ended_at = COALESCE(calls.ended_at, $2), \
     twilio_duration = COALESCE(calls.twilio_duration, $3), twilio_status = $4, \
     end_reason = COALESCE(calls.end_reason, $5), updated_at = $2 RETURNING *",
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

/// Reads an order for its debit, its row locked until the debit commits (PostgreSQL; SQLite's
/// money path reads it on the writer's one thread, which is the lock there): `$1` order.
#[cfg(feature = "postgres")]
pub(crate) const ORDER_FOR_DEBIT: &str = "SELECT * FROM orders WHERE id = $1 FOR UPDATE";

/// The debit and the release of this call's hold, in one write, if the order's usage is what
/// the debit read: `$1` order, `$2` seconds used after, `$3` call, `$4` now, `$5` seconds used
/// before (`ORDER_FOR_DEBIT`'s lock makes it hold on PostgreSQL, the writer's one thread on
/// SQLite; the comparison keeps the statement right on its own).
pub(crate) const ORDER_DEBIT: &str = "UPDATE orders SET seconds_used = $2, \
     active_call_until = CASE WHEN active_call_sid = $3 THEN NULL ELSE active_call_until END, \
     active_call_sid = CASE WHEN active_call_sid = $3 THEN NULL ELSE active_call_sid END, \
     updated_at = $4 WHERE id = $1 AND seconds_used = $5";

/// The bridge is up: `$1` call, `$2` now, `$3` conversation id, `$4` the instance carrying
/// it. Not for a call that ended or was settled.
pub(crate) static CALL_BRIDGED: LazyLock<String> = statement!(
    "UPDATE calls SET status = '{bridged}', bridged_at = COALESCE(bridged_at, $2), \
     conversation_id = COALESCE($3, conversation_id), instance_id = $4, updated_at = $2 \
     WHERE call_sid = $1 AND status <> '{ended}' AND settled_at IS NULL",
    bridged = CallState::Bridged,
    ended = CallState::Ended,
);

/// The bridge's heartbeat on its hold: `$1` call, `$2` hold until. Only a paid order's.
pub(crate) static ORDER_RENEW_HOLD: LazyLock<String> = statement!(
    "UPDATE orders SET active_call_until = $2 WHERE active_call_sid = $1 AND status = '{paid}'",
    paid = OrderStatus::Paid,
);

/// Agent seconds per day started, from `$1`: a bridged call's metered seconds, never negative
/// (`Call::billable_seconds`; the conformance tests hold the two together).
pub(crate) const AGENT_SECONDS_PER_DAY: &str = "SELECT started_at / 86400 AS day, \
     CAST(SUM(CASE WHEN seconds_metered > 0 THEN seconds_metered ELSE 0 END) AS BIGINT) AS total \
     FROM calls WHERE bridged_at IS NOT NULL AND started_at >= $1 GROUP BY started_at / 86400";

/// `CallStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_calls {
    ($store:ty, $db:ty $(, $own:item)*) => {
        #[async_trait::async_trait]
        impl CallStore for $store {
            $($own)*

            async fn hold_order_for_call(
                &self,
                order_id: &str,
                call_sid: &str,
                until: UnixTime,
                now: UnixTime,
            ) -> Result<Hold, StoreError> {
                self.write_hold(order_id, call_sid, until, now, None).await
            }

            async fn hold_and_grant(
                &self,
                order_id: &str,
                call_sid: &str,
                until: UnixTime,
                now: UnixTime,
                token: &TokenIssue,
            ) -> Result<Hold, StoreError> {
                self.write_hold(order_id, call_sid, until, now, Some(token)).await
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
                carrier: &str,
            ) -> Result<bool, StoreError> {
                let mut tx = self.writer.begin().await.map_err(classify)?;
                let started = sqlx::query::<$db>(&CALL_BRIDGED)
                .bind(call_sid)
                .bind(now)
                .bind(conversation_id)
                .bind(carrier)
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

            async fn agent_seconds_per_day(&self, since: UnixTime) -> Result<Vec<DayTotal>, StoreError> {
                day_totals::<$db>(&self.pool, AGENT_SECONDS_PER_DAY, since).await
            }

            async fn count_live_calls(&self) -> Result<i64, StoreError> {
                sqlx::query_scalar::<$db, i64>("SELECT COUNT(*) FROM calls WHERE ended_at IS NULL")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(classify)
            }

            async fn page_calls(&self, l: &Listing<CallState>) -> Result<Vec<Call>, StoreError> {
                bind_listing!(sqlx::query_as::<$db, Call>(&CALLS_PAGE), l)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn calls_for_order(&self, order_id: &str, limit: i64) -> Result<Vec<Call>, StoreError> {
                sqlx::query_as::<$db, Call>(
                    "SELECT * FROM calls WHERE order_id = $1 \
                     ORDER BY started_at DESC, call_sid DESC LIMIT $2",
                )
                .bind(order_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn calls_from(&self, from: &str, limit: i64) -> Result<Vec<Call>, StoreError> {
                sqlx::query_as::<$db, Call>(
                    "SELECT * FROM calls WHERE from_number = $1 \
                     ORDER BY started_at DESC, call_sid DESC LIMIT $2",
                )
                .bind(from)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
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

            async fn record_refusal(
                &self,
                call_sid: &str,
                order_id: &str,
                why: Refusal,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE calls SET refused = $2, refused_order_id = $3, updated_at = $4 \
                     WHERE call_sid = $1",
                )
                .bind(call_sid)
                .bind(why)
                .bind(order_id)
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(classify)
            }
        }
    };
}

pub(crate) use sql_calls;
