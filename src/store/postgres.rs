//! PostgreSQL backend: for several instances behind a load balancer.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
    /// The same pool: PostgreSQL runs concurrent writers itself.
    writer: PgPool,
}

impl PostgresStore {
    /// Connects to the server named by a `postgres://` URL.
    pub async fn open(url: &str) -> Result<PostgresStore, super::StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| super::StoreError::Open(format!("DATABASE_URL: {e}")))?;
        PostgresStore::connect(options).await
    }

    /// Connects with ready-made options (tests use this to pick a schema).
    pub async fn connect(options: PgConnectOptions) -> Result<PostgresStore, super::StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| super::StoreError::Open(format!("PostgreSQL: {e}")))?;
        Ok(PostgresStore {
            writer: pool.clone(),
            pool,
        })
    }
}

impl PostgresStore {
    /// Nothing to start once the schema is in place.
    fn migrated(&self) {}

    /// The order whose `column` (one of callgate's own column names) is `value`.
    async fn order_where(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<super::Order>, super::StoreError> {
        let sql = format!("SELECT * FROM orders WHERE {column} = $1");
        sqlx::query_as::<sqlx::Postgres, super::Order>(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await
            .map_err(super::classify)
    }

    async fn code_check_row(
        &self,
        q: &super::CodeCheckQuery<'_>,
    ) -> Result<super::sql::CodeCheckRow, super::StoreError> {
        sqlx::query_as(super::sql::CODE_CHECK)
            .bind(q.call_sid)
            .bind(q.caller)
            .bind(q.code_hash)
            .bind(q.since)
            .bind(q.caller_up_to.max(0))
            .bind(q.code_up_to.max(0))
            .fetch_one(&self.pool)
            .await
            .map_err(super::classify)
    }

    async fn count_failures_row(
        &self,
        scope: super::AttemptScope<'_>,
        since: super::UnixTime,
        up_to: i64,
    ) -> Result<i64, super::StoreError> {
        let (sql, value) = super::sql::failure_count(scope);
        sqlx::query_scalar(sql)
            .bind(since)
            .bind(value)
            .bind(up_to.max(0))
            .fetch_one(&self.pool)
            .await
            .map_err(super::classify)
    }
}

super::sql::sql_store!(PostgresStore, sqlx::Postgres, "postgres", MIGRATOR);
super::sql::sqlx_hot_writes!(PostgresStore, sqlx::Postgres);
