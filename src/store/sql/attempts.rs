//! Code attempts in SQL: the code check's one statement, the bounded failure counts, and
//! `AttemptStore` for both engines.

use crate::store::AttemptScope;

/// Attempts deleted by one statement when old ones are pruned.
pub(crate) const PRUNE_CHUNK: i64 = 5000;

/// Everything the code check reads, in one statement: whether the call is stored, the
/// caller's and the code's recent failures (each counted up to its limit, `$5` and `$6`: the
/// index walk stops there however many are stored), the id of the code's order (NULL when
/// none), and the id of the order the caller's number is remembered for (NULL when none).
pub(crate) const CODE_CHECK: &str = "SELECT EXISTS (SELECT 1 FROM calls WHERE call_sid = $1), \
     (SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
         WHERE caller = $2 AND ok = FALSE AND at >= $4 LIMIT $5) AS c), \
     (SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
         WHERE code_hash = $3 AND ok = FALSE AND at >= $4 LIMIT $6) AS h), \
     (SELECT id FROM orders WHERE code_hash = $3), \
     (SELECT order_id FROM remembered_callers WHERE caller = $2)";

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

/// Takes the first expired slot of `$1` (last taken before `$2`) at `$3`, if it is still
/// expired when its row is written (PostgreSQL re-reads a row a concurrent writer changed).
pub(crate) const SLOT_REUSE: &str = "UPDATE attempt_slots SET at = $3 \
     WHERE key = $1 AND at < $2 AND slot = \
     (SELECT MIN(slot) FROM attempt_slots WHERE key = $1 AND at < $2) RETURNING slot";

/// Adds slot number N (the count of `$1`'s slots: they are numbered from 0 without gaps)
/// taken at `$2`, while there are fewer than `$3`; a concurrent taker of the same number
/// makes it a no-op.
pub(crate) const SLOT_ADD: &str = "INSERT INTO attempt_slots (key, slot, at) \
     SELECT $1, COUNT(*), $2 FROM attempt_slots WHERE key = $1 HAVING COUNT(*) < $3 \
     ON CONFLICT (key, slot) DO NOTHING RETURNING slot";

/// A [`CODE_CHECK`] row: call known, caller failures, code failures, order id, the caller's
/// remembered order id.
pub(crate) type CodeCheckRow = (bool, i64, i64, Option<String>, Option<String>);

/// `AttemptStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_attempts {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl AttemptStore for $store {
            async fn record_attempts(&self, attempts: &[CodeAttempt]) -> Result<(), StoreError> {
                self.write_attempts(attempts).await
            }

            async fn count_failures(
                &self,
                scope: AttemptScope<'_>,
                since: UnixTime,
                up_to: i64,
            ) -> Result<i64, StoreError> {
                self.count_failures_row(scope, since, up_to).await
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
                        break;
                    }
                }
                // A key's slots go together, once all are old: numbers stay without gaps.
                sqlx::query::<$db>(
                    "DELETE FROM attempt_slots WHERE key IN \
                     (SELECT key FROM attempt_slots GROUP BY key HAVING MAX(at) < $1)",
                )
                .bind(before)
                .execute(&self.writer)
                .await
                .map_err(classify)?;
                Ok(pruned)
            }

            async fn take_slot(
                &self,
                key: &str,
                limit: i64,
                since: UnixTime,
                now: UnixTime,
            ) -> Result<Option<i64>, StoreError> {
                for _ in 0..crate::store::attempts::SLOT_TRIES {
                    let reused: Option<i64> = sqlx::query_scalar::<$db, i64>(SLOT_REUSE)
                        .bind(key)
                        .bind(since)
                        .bind(now)
                        .fetch_optional(&self.writer)
                        .await
                        .map_err(classify)?;
                    if reused.is_some() {
                        return Ok(reused);
                    }
                    let added: Option<i64> = sqlx::query_scalar::<$db, i64>(SLOT_ADD)
                        .bind(key)
                        .bind(now)
                        .bind(limit)
                        .fetch_optional(&self.writer)
                        .await
                        .map_err(classify)?;
                    if added.is_some() {
                        return Ok(added);
                    }
                    let taken: i64 = sqlx::query_scalar::<$db, i64>(
                        "SELECT COUNT(*) FROM attempt_slots WHERE key = $1 AND at >= $2",
                    )
                    .bind(key)
                    .bind(since)
                    .fetch_one(&self.writer)
                    .await
                    .map_err(classify)?;
                    if taken >= limit {
                        return Ok(None);
                    }
                }
                Err(StoreError::Unavailable(
                    "attempt slots: too much contention".into(),
                ))
            }

            async fn free_slot(&self, key: &str, slot: i64) -> Result<(), StoreError> {
                sqlx::query::<$db>("UPDATE attempt_slots SET at = 0 WHERE key = $1 AND slot = $2")
                    .bind(key)
                    .bind(slot)
                    .execute(&self.writer)
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }
        }
    };
}

pub(crate) use sql_attempts;
