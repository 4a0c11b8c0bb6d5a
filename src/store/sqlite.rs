//! SQLite backend: the default, a single file with WAL and a busy timeout.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub struct SqliteStore {
    /// Readers, several at once (WAL lets them read while one writes).
    pool: SqlitePool,
    /// Writers: the same pool. (A single writing connection, so that writers queue instead of
    /// sleeping on the file lock, shortened the webhooks' tail latency but could not keep up
    /// with a thousand live calls' metering on a busy 2-core machine; see the README.)
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file.
    pub async fn open(path: &Path) -> Result<SqliteStore, super::StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let open = |connections: u32| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                // A file does not drop connections: no ping (a round trip to the connection's
                // thread) before every query.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options.clone())
        };
        let err = |e: sqlx::Error| {
            super::StoreError::Open(format!("SQLite file {}: {e}", path.display()))
        };
        let pool = open(8).await.map_err(err)?;
        Ok(SqliteStore {
            writer: pool.clone(),
            pool,
        })
    }
}

super::sql::sql_store!(SqliteStore, sqlx::Sqlite, "sqlite", MIGRATOR);
