//! SQLite backend: the default, a single file with WAL and a busy timeout.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub struct SqliteStore {
    /// Readers, several at once (WAL lets them read while one writes).
    pool: SqlitePool,
    /// The one writing connection: writers wait their turn here, in order, rather than
    /// retrying the file lock with the busy handler's growing sleeps.
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
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options.clone())
        };
        let err = |e: sqlx::Error| {
            super::StoreError::Open(format!("SQLite file {}: {e}", path.display()))
        };
        let writer = open(1).await.map_err(err)?;
        let pool = open(8).await.map_err(err)?;
        Ok(SqliteStore { pool, writer })
    }
}

super::sql::sql_store!(SqliteStore, sqlx::Sqlite, "sqlite", MIGRATOR);
