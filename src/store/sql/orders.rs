//! Orders in SQL: their statements, and `OrderStore` for both engines.

use std::sync::LazyLock;

use crate::domain::order::OrderStatus;

pub(crate) const ORDER_INSERT: &str =
    "INSERT INTO orders (id, status, source, plan, amount_cents, currency, seconds_included, \
     seconds_used, overage_consent, overage_price_cents, stripe_payment_intent, stripe_customer, \
     stripe_payment_method, code_hash, code_sealed, code_last4, created_at, updated_at, paid_at, client_secret_hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17, $18)";

pub(crate) static ORDER_FULFIL: LazyLock<String> = statement!(
    "UPDATE orders SET status = '{paid}', code_hash = $2, code_sealed = $3, code_last4 = $4, \
     stripe_customer = COALESCE($5, stripe_customer), \
     stripe_payment_method = COALESCE($6, stripe_payment_method), paid_at = $7, updated_at = $7 \
     WHERE stripe_payment_intent = $1 AND status IN ({payable}) RETURNING *",
    paid = OrderStatus::Paid,
    payable = super::spelling_list(OrderStatus::sources(OrderStatus::Paid).map(|s| s.as_str())),
);

/// A page of orders (`store::Listing`).
pub(crate) static ORDERS_PAGE: LazyLock<String> =
    LazyLock::new(|| super::listing("orders", "created_at", "id", "status"));

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

/// Paid orders' amounts per day paid, from `$1`.
pub(crate) static PAID_PER_DAY: LazyLock<String> = statement!(
    "SELECT paid_at / 86400 AS day, CAST(SUM(amount_cents) AS BIGINT) AS total FROM orders \
     WHERE status = '{paid}' AND paid_at >= $1 GROUP BY paid_at / 86400",
    paid = OrderStatus::Paid,
);

/// `OrderStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_orders {
    ($store:ty, $db:ty) => {
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
        impl OrderStore for $store {
            async fn insert_order(&self, order: &NewOrder) -> Result<Order, StoreError> {
                self.insert_order_returning(order, false)
                    .await?
                    .ok_or_else(|| StoreError::Database("insert returned no row".into()))
            }

            async fn mark_paid(&self, f: &Fulfilment) -> Result<Option<Order>, StoreError> {
                sqlx::query_as::<$db, Order>(&ORDER_FULFIL)
                    .bind(&f.payment_intent)
                    .bind(&f.code.hash)
                    .bind(&f.code.sealed)
                    .bind(&f.code.last4)
                    .bind(&f.customer)
                    .bind(&f.payment_method)
                    .bind(f.now)
                    .fetch_optional(&self.writer)
                    .await
                    .map_err(classify)
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

            async fn paid_per_day(&self, since: UnixTime) -> Result<Vec<DayTotal>, StoreError> {
                day_totals::<$db>(&self.pool, &PAID_PER_DAY, since).await
            }

            async fn orders_by_plan(&self) -> Result<Vec<PlanTotal>, StoreError> {
                sqlx::query_as::<$db, PlanTotal>(
                    "SELECT plan, status, COUNT(*) AS orders, \
                     CAST(SUM(amount_cents) AS BIGINT) AS amount_cents \
                     FROM orders GROUP BY plan, status ORDER BY plan, status",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn page_orders(&self, l: &Listing<OrderStatus>) -> Result<Vec<Order>, StoreError> {
                bind_listing!(sqlx::query_as::<$db, Order>(&ORDERS_PAGE), l)
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

            async fn move_order(
                &self,
                id: &str,
                to: OrderStatus,
                now: UnixTime,
            ) -> Result<Option<Order>, StoreError> {
                let allowed = spelling_list(OrderStatus::sources(to).map(|s| s.as_str()));
                if allowed.is_empty() {
                    return Ok(None);
                }
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
        }
    };
}

pub(crate) use sql_orders;
