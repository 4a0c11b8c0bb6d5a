//! Instances in SQL: `InstanceStore` for both engines.

/// Bridged calls whose end is not recorded and which are not settled: `calls_carried`.
pub(crate) const CALL_ORPHANED: &str = "SELECT c.call_sid FROM calls c \
     LEFT JOIN instances i ON i.id = c.instance_id \
     WHERE c.bridged_at IS NOT NULL AND c.bridge_ended_at IS NULL AND c.settled_at IS NULL \
     AND c.instance_id IS NOT NULL AND c.instance_id <> $1 \
     AND (i.id IS NULL OR i.name = $2 OR i.beat_at < $3)";

/// `InstanceStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_instances {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl InstanceStore for $store {
            async fn beat(&self, instance: &Instance, now: UnixTime) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO instances (id, name, started_at, beat_at) VALUES ($1, $2, $3, $3) \
                     ON CONFLICT (id) DO UPDATE SET beat_at = $3",
                )
                .bind(&instance.id)
                .bind(&instance.name)
                .bind(now)
                // A beat lost in a crash of the database is renewed a second later.
                .execute(&self.lax)
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn instance_stopped(&self, id: &str) -> Result<(), StoreError> {
                sqlx::query::<$db>("DELETE FROM instances WHERE id = $1")
                    .bind(id)
                    .execute(&self.writer)
                    .await
                    .map(|_| ())
                    .map_err(classify)
            }

            async fn orphaned_calls(
                &self,
                me: &Instance,
                silent_before: UnixTime,
            ) -> Result<Vec<String>, StoreError> {
                sqlx::query_scalar::<$db, String>(CALL_ORPHANED)
                    .bind(&me.id)
                    .bind(&me.name)
                    .bind(silent_before)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(classify)
            }

            async fn cap_hold(&self, call_sid: &str, until: UnixTime) -> Result<bool, StoreError> {
                sqlx::query::<$db>(
                    "UPDATE orders SET active_call_until = $2 \
                     WHERE active_call_sid = $1 AND active_call_until > $2",
                )
                .bind(call_sid)
                .bind(until)
                .execute(&self.writer)
                .await
                .map(|done| done.rows_affected() == 1)
                .map_err(classify)
            }
        }
    };
}

pub(crate) use sql_instances;
