//! Webhook events in SQL: `EventStore` for both engines.

/// `EventStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_events {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl EventStore for $store {
            async fn record_event(
                &self,
                id: &str,
                kind: &str,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
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
        }
    };
}

pub(crate) use sql_events;
