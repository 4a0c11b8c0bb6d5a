//! The audit log in SQL: `AuditStore` for both engines.

use std::sync::LazyLock;

/// A page of the audit log (`store::Listing`).
pub(crate) static AUDIT_PAGE: LazyLock<String> =
    LazyLock::new(|| super::listing("audit_log", "at", "id", "result"));

/// `AuditStore` for an engine's store; expanded by `sql_store!`.
macro_rules! sql_audit {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl AuditStore for $store {
            async fn record_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
                sqlx::query::<$db>(
                    "INSERT INTO audit_log (id, at, actor, action, order_id, subject, detail, \
                     result, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&e.id)
                .bind(e.at)
                .bind(&e.actor)
                .bind(e.action)
                .bind(&e.order_id)
                .bind(&e.subject)
                .bind(&e.detail)
                .bind(e.result)
                .bind(&e.outcome)
                .execute(&self.writer)
                .await
                .map(|_| ())
                .map_err(classify)
            }

            async fn audit_about(
                &self,
                id: &str,
                limit: i64,
            ) -> Result<Vec<AuditEntry>, StoreError> {
                sqlx::query_as::<$db, AuditEntry>(
                    "SELECT * FROM audit_log WHERE order_id = $1 OR subject = $1 \
                     ORDER BY at DESC, id DESC LIMIT $2",
                )
                .bind(id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)
            }

            async fn page_audit(
                &self,
                l: &Listing<AuditResult>,
            ) -> Result<Vec<AuditEntry>, StoreError> {
                bind_listing!(sqlx::query_as::<$db, AuditEntry>(&AUDIT_PAGE), l)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(classify)
            }
        }
    };
}

pub(crate) use sql_audit;
