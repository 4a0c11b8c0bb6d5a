//! The outbox in SQL: `MessageStore` for both engines. States are bound as values from
//! their enum, never written into the text.

/// `MessageStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_messages {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl MessageStore for $store {
            async fn queue_message(&self, m: &NewMessage) -> Result<bool, StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO messages (id, order_id, kind, channel, to_address, state, tries, \
                     next_attempt_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7, $7) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&m.id)
                .bind(&m.order_id)
                .bind(m.kind)
                .bind(m.channel)
                .bind(&m.to)
                .bind(MessageState::Pending)
                .bind(m.now)
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected() == 1)
                .map_err(classify)
            }

            async fn lease_messages(
                &self,
                now: UnixTime,
                lease_until: UnixTime,
                limit: i64,
            ) -> Result<Vec<Message>, StoreError> {
                // The outer condition is checked again on each row as it is locked, so a
                // message another worker leased meanwhile is not taken twice.
                sqlx::query_as::<$db, Message>(
                    "UPDATE messages SET tries = tries + 1, next_attempt_at = $2, updated_at = $1 \
                     WHERE state = $3 AND next_attempt_at <= $1 AND id IN \
                     (SELECT id FROM messages WHERE state = $3 AND next_attempt_at <= $1 \
                      ORDER BY next_attempt_at, id LIMIT $4) RETURNING *",
                )
                .bind(now)
                .bind(lease_until)
                .bind(MessageState::Pending)
                .bind(limit)
                .fetch_all(&self.writer)
                .await
                .map_err(classify)
            }

            async fn message_outcome(
                &self,
                id: &str,
                o: &SendOutcome<'_>,
            ) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "UPDATE messages SET state = $2, provider_id = COALESCE($3, provider_id), \
                     last_error = $4, next_attempt_at = $5, updated_at = $6 WHERE id = $1",
                )
                .bind(id)
                .bind(o.state)
                .bind(o.provider_id)
                .bind(o.error)
                .bind(o.next_attempt_at)
                .bind(o.now)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn message_delivery(
                &self,
                provider_id: &str,
                state: MessageState,
                error: Option<&str>,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                let from = spelling_list(MessageState::sources(state).map(|s| s.as_str()));
                if from.is_empty() {
                    return Ok(false);
                }
                let sql = format!(
                    "UPDATE messages SET state = $2, last_error = COALESCE($3, last_error), \
                     updated_at = $4 WHERE provider_id = $1 AND state IN ({from})"
                );
                sqlx::query::<$db>(&sql)
                .bind(provider_id)
                .bind(state)
                .bind(error)
                .bind(now)
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected() > 0)
                .map_err(classify)
            }

            async fn messages_for_order(&self, order_id: &str) -> Result<Vec<Message>, StoreError> {
                sqlx::query_as::<$db, Message>(
                    "SELECT * FROM messages WHERE order_id = $1 ORDER BY created_at, id",
                )
                .bind(order_id)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn list_messages(&self, limit: i64) -> Result<Vec<Message>, StoreError> {
                sqlx::query_as::<$db, Message>(
                    "SELECT * FROM messages ORDER BY created_at DESC, id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn orders_receipted(
                &self,
                channel: Channel,
                to: &str,
            ) -> Result<Vec<String>, StoreError> {
                let rows: Vec<(String, i64)> = sqlx::query_as::<$db, (String, i64)>(
                    "SELECT order_id, MIN(created_at) AS first FROM messages \
                     WHERE to_address = $1 AND channel = $2 AND kind = $3 \
                     GROUP BY order_id ORDER BY first, order_id",
                )
                .bind(to)
                .bind(channel)
                .bind(MessageKind::Receipt)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
                Ok(rows.into_iter().map(|(id, _)| id).collect())
            }

            async fn count_messages_to(
                &self,
                to: &str,
                kind: MessageKind,
                since: UnixTime,
            ) -> Result<i64, StoreError> {
                sqlx::query_scalar::<$db, i64>(
                    "SELECT COUNT(*) FROM messages WHERE to_address = $1 AND kind = $2 \
                     AND created_at >= $3",
                )
                .bind(to)
                .bind(kind)
                .bind(since)
                .fetch_one(&self.pool)
                .await
                .map_err(classify)
            }
        }
    };
}

pub(crate) use sql_messages;
