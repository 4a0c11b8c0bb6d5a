//! Remembered callers in SQL: `CallerStore` for both engines.

/// `CallerStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_callers {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl CallerStore for $store {
            async fn remember_caller(
                &self,
                caller: &str,
                order_id: &str,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO remembered_callers (caller, order_id, remembered_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (caller) DO UPDATE \
                     SET order_id = excluded.order_id, remembered_at = excluded.remembered_at",
                )
                .bind(caller)
                .bind(order_id)
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn remembered_order(&self, caller: &str) -> Result<Option<Order>, StoreError> {
                sqlx::query_as::<$db, Order>(
                    "SELECT o.* FROM remembered_callers r JOIN orders o ON o.id = r.order_id \
                     WHERE r.caller = $1",
                )
                .bind(caller)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)
            }

            async fn forget_caller(
                &self,
                caller: &str,
                order_id: Option<&str>,
            ) -> Result<bool, StoreError> {
                sqlx::query::<$db>(
                    "DELETE FROM remembered_callers WHERE caller = $1 \
                     AND ($2 IS NULL OR order_id = $2)",
                )
                .bind(caller)
                .bind(order_id)
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(classify)
            }

            async fn remembered_callers(
                &self,
                order_id: Option<&str>,
            ) -> Result<Vec<RememberedCaller>, StoreError> {
                sqlx::query_as::<$db, RememberedCaller>(
                    "SELECT * FROM remembered_callers WHERE ($1 IS NULL OR order_id = $1) \
                     ORDER BY remembered_at, caller",
                )
                .bind(order_id)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }
        }
    };
}

pub(crate) use sql_callers;
