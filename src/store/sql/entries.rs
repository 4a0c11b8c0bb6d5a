//! The ledger's entries in SQL: `EntryStore` for both engines. An entry and its order's
//! counters are written in one transaction.

/// `EntryStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_entries {
    ($store:ty, $db:ty) => {
        /// The entries in the order they can have happened (`domain::entry::chronological`).
        fn chronological(mut entries: Vec<Entry>) -> Vec<Entry> {
            $crate::domain::entry::chronological(&mut entries);
            entries
        }

        #[async_trait::async_trait]
        impl EntryStore for $store {
            async fn record_entry(&self, e: &Entry) -> Result<Recorded, StoreError> {
                use $crate::domain::entry::Moves;
                let (included, used) = match e.moves() {
                    Moves::Nothing => (0, 0),
                    Moves::Included(s) => (s.0, 0),
                    Moves::Used(s) => (0, s.0),
                };
                let mut tx = self.writer.begin().await.map_err(classify)?;
                // The order first: it is the row two recorders of one entry queue on.
                let moved = sqlx::query::<$db>(
                    "UPDATE orders SET seconds_included = seconds_included + $2, \
                     seconds_used = seconds_used + $3, updated_at = $4 WHERE id = $1",
                )
                .bind(&e.order_id)
                .bind(included)
                .bind(used)
                .bind(e.created_at)
                .execute(&mut *tx)
                .await
                .map_err(classify)?
                .rows_affected();
                if moved == 0 {
                    return Ok(Recorded::NoOrder);
                }
                let inserted = sqlx::query::<$db>(
                    "INSERT INTO ledger_entries (id, order_id, kind, seconds, amount_cents, \
                     currency, reverses, stripe_payment_intent, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&e.id)
                .bind(&e.order_id)
                .bind(e.kind)
                .bind(e.seconds.0)
                .bind(e.amount.0)
                .bind(e.currency.code())
                .bind(&e.reverses)
                .bind(&e.stripe_payment_intent)
                .bind(e.created_at)
                .execute(&mut *tx)
                .await
                .map_err(classify)?
                .rows_affected();
                if inserted == 0 {
                    // Recorded before: the counters are left as they were.
                    tx.rollback().await.map_err(classify)?;
                    return Ok(Recorded::Already);
                }
                tx.commit().await.map_err(classify)?;
                Ok(Recorded::Now)
            }

            async fn entry(&self, id: &str) -> Result<Option<Entry>, StoreError> {
                sqlx::query_as::<$db, Entry>("SELECT * FROM ledger_entries WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(classify)
            }

            async fn entries_for_order(&self, order_id: &str) -> Result<Vec<Entry>, StoreError> {
                sqlx::query_as::<$db, Entry>(
                    "SELECT * FROM ledger_entries WHERE order_id = $1 ORDER BY created_at, id",
                )
                .bind(order_id)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
                .map(chronological)
            }

            async fn entry_paid_by(&self, pi: &str) -> Result<Option<Entry>, StoreError> {
                sqlx::query_as::<$db, Entry>(
                    "SELECT * FROM ledger_entries WHERE stripe_payment_intent = $1 \
                     AND reverses IS NULL",
                )
                .bind(pi)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)
            }

            async fn list_entries(&self, limit: i64) -> Result<Vec<Entry>, StoreError> {
                sqlx::query_as::<$db, Entry>(
                    "SELECT * FROM ledger_entries ORDER BY created_at, id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
                .map(chronological)
            }
        }
    };
}

pub(crate) use sql_entries;
