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
                        return Ok(pruned);
                    }
                }
            }
        }
    };
}

pub(crate) use sql_attempts;
