//! Overage charges in SQL: their statements, and `ChargeStore` for both engines.

use std::sync::LazyLock;

use super::spelling_list;
use crate::domain::charge::ChargeState;

pub(crate) static CHARGE_INSERT: LazyLock<String> = statement!(
    "INSERT INTO charges (id, call_sid, order_id, amount_cents, currency, seconds_billed, state, \
     attempts, next_attempt_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, '{pending}', 0, $7, $7, $7) ON CONFLICT DO NOTHING RETURNING *",
    pending = ChargeState::Pending,
);

/// A page of charges (`store::Listing`).
pub(crate) static CHARGES_PAGE: LazyLock<String> =
    LazyLock::new(|| super::listing("charges", "created_at", "id", "state"));

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

/// Succeeded charges' amounts per day they succeeded (their last update), from `$1`.
pub(crate) static SUCCEEDED_PER_DAY: LazyLock<String> = statement!(
    "SELECT updated_at / 86400 AS day, CAST(SUM(amount_cents) AS BIGINT) AS total FROM charges \
     WHERE state = '{succeeded}' AND updated_at >= $1 GROUP BY updated_at / 86400",
    succeeded = ChargeState::Succeeded,
);

/// Binds a `NewCharge` to [`CHARGE_INSERT`]'s parameters through sqlx: the one binding the
/// charge store and PostgreSQL's money path share.
macro_rules! bind_charge_insert {
    ($query:expr, $c:expr) => {
        $query
            .bind(&$c.id)
            .bind(&$c.call_sid)
            .bind(&$c.order_id)
            .bind($c.amount.0)
            .bind($c.currency.code())
            .bind($c.seconds_billed.0)
            .bind($c.now)
    };
}

pub(crate) use bind_charge_insert;

/// `ChargeStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_charges {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl ChargeStore for $store {
            async fn insert_charge(&self, c: &NewCharge) -> Result<(Charge, bool), StoreError> {
                let inserted = $crate::store::sql::bind_charge_insert!(sqlx::query_as::<$db, Charge>(&CHARGE_INSERT), c)
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

            async fn charges_for_order(&self, order_id: &str) -> Result<Vec<Charge>, StoreError> {
                sqlx::query_as::<$db, Charge>("SELECT * FROM charges WHERE order_id = $1 ORDER BY created_at, id")
                    .bind(order_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(classify)
            }

            async fn succeeded_per_day(&self, since: UnixTime) -> Result<Vec<DayTotal>, StoreError> {
                day_totals::<$db>(&self.pool, &SUCCEEDED_PER_DAY, since).await
            }

            async fn page_charges(&self, l: &Listing<ChargeState>) -> Result<Vec<Charge>, StoreError> {
                bind_listing!(sqlx::query_as::<$db, Charge>(&CHARGES_PAGE), l)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }
        }
    };
}

pub(crate) use sql_charges;
