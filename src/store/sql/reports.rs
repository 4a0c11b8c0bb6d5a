//! Conversation reports in SQL: `ReportStore` for both engines.

/// `ReportStore` for an engine's store (`pool` for reads, `writer` for writes); expanded by
/// `sql_store!` where the store's names are in scope.
macro_rules! sql_reports {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl ReportStore for $store {
            async fn save_report(&self, r: &ConversationReport) -> Result<bool, StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO conversation_reports (conversation_id, call_sid, caller, \
                     summary, outcome, analysis, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (conversation_id) DO NOTHING",
                )
                .bind(&r.conversation_id)
                .bind(&r.call_sid)
                .bind(&r.caller)
                .bind(&r.summary)
                .bind(&r.outcome)
                .bind(&r.analysis)
                .bind(r.received_at)
                .execute(&self.writer)
                .await
                .map(|done| done.rows_affected() == 1)
                .map_err(classify)
            }

            async fn report_for_call(
                &self,
                call_sid: &str,
            ) -> Result<Option<ConversationReport>, StoreError> {
                sqlx::query_as::<$db, ConversationReport>(
                    "SELECT * FROM conversation_reports WHERE call_sid = $1 \
                     ORDER BY received_at DESC LIMIT 1",
                )
                .bind(call_sid)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)
            }

            async fn last_report_from(
                &self,
                caller: &str,
            ) -> Result<Option<ConversationReport>, StoreError> {
                sqlx::query_as::<$db, ConversationReport>(
                    "SELECT * FROM conversation_reports WHERE caller = $1 \
                     ORDER BY received_at DESC, conversation_id DESC LIMIT 1",
                )
                .bind(caller)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)
            }
        }
    };
}

pub(crate) use sql_reports;
