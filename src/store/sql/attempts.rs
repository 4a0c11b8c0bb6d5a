//! Code attempts in SQL: the code check's one statement, the bounded failure counts, and
//! `AttemptStore` for both engines.

use crate::store::{AttemptScope, CodeCheckFacts, Order};

/// Attempts deleted by one statement when old ones are pruned.
pub(crate) const PRUNE_CHUNK: i64 = 5000;

/// The columns and the source of [`CODE_CHECK`] (after its `SELECT`), shared with
/// [`code_check_taking`].
macro_rules! code_check_facts {
    () => {
        "EXISTS (SELECT 1 FROM calls WHERE call_sid = $1) AS call_known, \
         (SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
             WHERE caller = $2 AND ok = FALSE AND at >= $4 \
             AND NOT COALESCE(writer = $7 AND batch > $8, FALSE) LIMIT $5) AS c) AS caller_failures, \
         (SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
             WHERE code_hash = $3 AND ok = FALSE AND at >= $4 \
             AND NOT COALESCE(writer = $7 AND batch > $8, FALSE) LIMIT $6) AS h) AS code_failures, \
         (SELECT order_id FROM remembered_callers WHERE caller = $2) AS remembered_order_id, \
         o.* FROM (SELECT 1 AS one) AS q LEFT JOIN orders o ON o.code_hash = $3"
    };
}

/// Everything the code check reads, in one statement: whether the call is stored, the
/// caller's and the code's recent failures (each counted up to its limit, `$5` and `$6`: the
/// index walk stops there however many are stored; leaving out writer `$7`'s groups numbered
/// above `$8`, which its attempt log counts from memory), the id of the order the caller's number
/// is remembered for (NULL when none), and the code's whole order row beside them (its
/// columns NULL when no order has the code: read with [`CODE_CHECK_ORDER_ID`]).
pub(crate) const CODE_CHECK: &str = concat!("SELECT ", code_check_facts!());

/// [`CODE_CHECK`] and [`slot_take`] for `n` keys in one statement (PostgreSQL: the slots are
/// taken in a data-modifying `WITH`): `$1` to `$8` as in the code check, `$9` now, then each
/// key and its limit from `$10`. Before the code check's columns, for each key `i`: `slot_i`,
/// the slot taken (NULL when none), and `held_i`, how many of its slots were held before (a
/// key without a slot is full, or lost a race, as in `take_slots`).
#[cfg(feature = "postgres")]
pub(crate) fn code_check_taking(n: usize) -> String {
    let slots: Vec<String> = (0..n)
        .map(|i| {
            let key = 10 + 2 * i;
            format!(
                "(SELECT slot FROM taken WHERE key = ${key}) AS slot_{i}, \
                 (SELECT held FROM slot_facts WHERE key = ${key}) AS held_{i}"
            )
        })
        .collect();
    format!(
        "WITH {}, taken AS ({}) SELECT {}, {}",
        slot_facts(4, 10, n),
        slot_insert(4, 9),
        slots.join(", "),
        code_check_facts!()
    )
}

/// The [`CODE_CHECK`] column that is NULL exactly when no order has the code.
pub(crate) const CODE_CHECK_ORDER_ID: &str = "id";

/// [`failure_count`]'s statement for one scope's condition on `$2`.
macro_rules! failures_where {
    ($scope:literal) => {
        concat!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM code_attempts \
             WHERE ok = FALSE AND at >= $1 AND ",
            $scope,
            " AND NOT COALESCE(writer = $4 AND batch > $5, FALSE) LIMIT $3) AS f"
        )
    };
}

/// Wrong attempts in a scope since `$1`, counted up to `$3`, leaving out writer `$4`'s groups
/// numbered above `$5`: the statement and the value bound to `$2` (the caller, the code's
/// hash, or NULL for everyone's).
pub(crate) fn failure_count(scope: AttemptScope<'_>) -> (&'static str, Option<&str>) {
    match scope {
        AttemptScope::Caller(c) => (failures_where!("caller = $2"), Some(c)),
        AttemptScope::Code(h) => (failures_where!("code_hash = $2"), Some(h)),
        AttemptScope::Global => (failures_where!("$2 IS NULL"), None),
    }
}

/// Takes a slot of each of `n` keys in one statement (`$1` the hour's start, `$2` now, then
/// each key and its limit): the key's first expired slot (last taken before `$1`, or freed),
/// else slot number N (the count of its slots: they are numbered from 0 without gaps) while
/// there are fewer than its limit. A compare-and-set per key: a key whose slot a concurrent
/// taker got first (it is no longer expired, or number N exists) returns no row; PostgreSQL
/// re-reads the conflicting row under its lock before the `WHERE`.
pub(crate) fn slot_take(n: usize) -> String {
    format!("WITH {} {}", slot_facts(1, 3, n), slot_insert(1, 2))
}

/// The common table `slot_facts` (after `k`, the wanted keys and their limits, bound from
/// `$first_key`): for each key, its first expired slot (`free`, last taken before `$since`),
/// how many it has (`n`) and how many are held (`held`). Each is a subquery on the key (an
/// index lookup whatever the table's size: a join grouped by key was planned as a scan of the
/// whole table once it grew).
fn slot_facts(since: usize, first_key: usize, n: usize) -> String {
    let keys: Vec<String> = (0..n)
        .map(|i| {
            let key = first_key + 2 * i;
            format!("(${key}, ${})", key + 1)
        })
        .collect();
    format!(
        "k(key, lim) AS (VALUES {}), \
         slot_facts AS (SELECT k.key, k.lim, \
         (SELECT MIN(s.slot) FROM attempt_slots s WHERE s.key = k.key AND s.at < ${since}) AS free, \
         (SELECT COUNT(*) FROM attempt_slots s WHERE s.key = k.key) AS n, \
         (SELECT COUNT(*) FROM attempt_slots s WHERE s.key = k.key AND s.at >= ${since}) AS held \
         FROM k)",
        keys.join(", ")
    )
}

/// The compare-and-set of [`slot_take`] over `slot_facts` (`$since` the hour's start, `$now`):
/// each key's first expired slot, else the next number while under its limit; a slot another
/// taker got first is left alone.
fn slot_insert(since: usize, now: usize) -> String {
    format!(
        "INSERT INTO attempt_slots (key, slot, at) \
         SELECT key, COALESCE(free, n), ${now} FROM slot_facts WHERE free IS NOT NULL OR n < lim \
         ON CONFLICT (key, slot) DO UPDATE SET at = excluded.at WHERE attempt_slots.at < ${since} \
         RETURNING key, slot"
    )
}

/// Frees `n` slots in one statement (each a key and a slot number).
pub(crate) fn slot_free(n: usize) -> String {
    let slots: Vec<String> = (0..n)
        .map(|i| format!("(key = ${} AND slot = ${})", 1 + 2 * i, 2 + 2 * i))
        .collect();
    format!(
        "UPDATE attempt_slots SET at = 0 WHERE {}",
        slots.join(" OR ")
    )
}

/// A [`CODE_CHECK`] row: call known, caller failures, code failures, the code's order, the
/// caller's remembered order id.
pub(crate) type CodeCheckRow = (bool, i64, i64, Option<Order>, Option<String>);

/// A [`CodeCheckRow`] as the store answers it.
pub(crate) fn code_check_facts(row: CodeCheckRow) -> CodeCheckFacts {
    let (call_known, caller_failures, code_failures, order, remembered_order_id) = row;
    CodeCheckFacts {
        call_known,
        caller_failures,
        code_failures,
        order,
        remembered_order_id,
    }
}

/// `AttemptStore` for an engine's store (`pool` for reads, `writer` for writes, `lax` for the
/// gate's slots, whose loss costs no money); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_attempts {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl AttemptStore for $store {
            async fn record_group(
                &self,
                attempts: &[CodeAttempt],
                group: Option<AttemptGroup>,
            ) -> Result<(), StoreError> {
                self.write_attempts(attempts, group).await
            }

            async fn count_failures_written(
                &self,
                scope: AttemptScope<'_>,
                since: UnixTime,
                up_to: i64,
                written_up_to: Option<AttemptGroup>,
            ) -> Result<i64, StoreError> {
                self.count_failures_row(scope, since, up_to, written_up_to)
                    .await
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

            async fn take_slots(
                &self,
                wants: &[SlotWant<'_>],
                since: UnixTime,
                now: UnixTime,
            ) -> Result<Vec<Option<i64>>, StoreError> {
                let mut taken: Vec<Option<i64>> = vec![None; wants.len()];
                let mut open: Vec<usize> = (0..wants.len()).collect();
                for _ in 0..crate::store::attempts::SLOT_TRIES {
                    if open.is_empty() {
                        break;
                    }
                    let sql = slot_take(open.len());
                    let mut take = sqlx::query_as::<$db, (String, i64)>(&sql)
                        .bind(since)
                        .bind(now);
                    for &i in &open {
                        take = take.bind(wants[i].key).bind(wants[i].limit);
                    }
                    let rows = take.fetch_all(&self.lax).await.map_err(classify)?;
                    for (key, slot) in rows {
                        if let Some(i) = wants.iter().position(|w| w.key == key) {
                            taken[i] = Some(slot);
                        }
                    }
                    // A key without a slot is full, or lost a race: another try tells which.
                    let mut again = Vec::new();
                    for i in open.into_iter().filter(|&i| taken[i].is_none()) {
                        let held: i64 = sqlx::query_scalar::<$db, i64>(
                            "SELECT COUNT(*) FROM attempt_slots WHERE key = $1 AND at >= $2",
                        )
                        .bind(wants[i].key)
                        .bind(since)
                        .fetch_one(&self.writer)
                        .await
                        .map_err(classify)?;
                        if held < wants[i].limit {
                            again.push(i);
                        }
                    }
                    open = again;
                }
                if !open.is_empty() {
                    return Err(StoreError::Unavailable(
                        "attempt slots: too much contention".into(),
                    ));
                }
                Ok(taken)
            }

            async fn free_slots(&self, slots: &[(String, i64)]) -> Result<(), StoreError> {
                if slots.is_empty() {
                    return Ok(());
                }
                let sql = slot_free(slots.len());
                let mut free = sqlx::query::<$db>(&sql);
                for (key, slot) in slots {
                    free = free.bind(key).bind(*slot);
                }
                free.execute(&self.lax).await.map(|_| ()).map_err(classify)
            }
        }
    };
}

pub(crate) use sql_attempts;
