//! SQLite backend: the default, a single file with WAL, one writing connection and readers.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};

mod money;
mod rows;
mod writer;

use crate::store::sql::{failure_count, CodeCheckRow, CODE_CHECK, CODE_CHECK_ORDER_ID};
use crate::store::{AttemptGroup, AttemptScope, CodeCheckQuery, Order, StoreError, UnixTime};
use rows::sqlite_error;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long SQLite waits for a lock before it reports the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    /// Readers, several at once (WAL lets them read while one writes).
    pool: SqlitePool,
    /// The one writing connection. SQLite admits one writer at a time anyway; with several
    /// connections the losers sleep in SQLite's busy handler (1 ms, 2 ms, 5 ms, ...) and
    /// retry, so a burst of writes costs milliseconds each. One connection makes them queue
    /// in order instead, and the hot writes come in groups (code attempts, live metering).
    pub(super) writer: SqlitePool,
    /// Writes whose loss in a crash costs no money (throttling data): on SQLite the same
    /// connection as `writer` (its commits are already `synchronous = NORMAL`).
    lax: SqlitePool,
    /// The hot writes, run back to back on `writer`'s connection by a thread of their own.
    writes: writer::Writer,
    /// The code check's read, on the calling thread.
    inline: InlineReads,
    /// Started once the schema is migrated (see [`SqliteStore::migrated`]).
    checkpoints: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(task) = self.checkpoints.get() {
            task.abort();
        }
    }
}

/// The writer's page cache, in KiB as SQLite counts a negative `cache_size` (64 MiB).
const WRITER_CACHE_KIB: i64 = -65536;

/// Pages the WAL may hold before the writer itself waits for a full checkpoint (16 MiB).
const WAL_LIMIT_PAGES: i64 = 4096;

/// Copies the WAL back into the database file every second, on a reader connection. PASSIVE
/// never waits for (nor blocks) the writer or the readers: it copies what it can. Under a
/// steady stream of writes it can never catch up with the end of the WAL, and SQLite starts a
/// WAL over only once all of it is copied, so past [`WAL_LIMIT_PAGES`] a RESTART checkpoint
/// is queued on the writer: writes wait for it (tens of milliseconds, once in a while), and
/// the file stays bounded. When the last connection closes, SQLite checkpoints by itself, so a
/// CLI command leaves no WAL behind either.
async fn checkpoints(readers: SqlitePool, writer: SqlitePool) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if readers.is_closed() {
            return;
        }
        let passive = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&readers)
            .await;
        let result = match passive {
            Ok((_, pages, _)) if pages > WAL_LIMIT_PAGES => {
                sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(RESTART)")
                    .fetch_one(&writer)
                    .await
            }
            other => other,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "WAL checkpoint skipped");
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Checkpoints are taken by `checkpoints` below, not by whichever commit crosses
            // SQLite's threshold: a checkpoint waits for the disk (fsync), and on the single
            // writer that wait would stall every write queued behind it.
            .pragma("wal_autocheckpoint", "0")
            // After the WAL starts over, its file is cut back to this size.
            .pragma("journal_size_limit", (WAL_LIMIT_PAGES * 4096).to_string());
        // The file holds phone numbers and transcripts: only its owner may read it. SQLite
        // gives its -wal and -shm files the database file's mode, so creating it right covers
        // all three.
        private_file(path)?;
        // The file must open now, so that a bad path is a start-up error.
        let err = |e: sqlx::Error| StoreError::Open(format!("SQLite file {}: {e}", path.display()));
        SqliteConnection::connect_with(&options)
            .await
            .map_err(err)?
            .close()
            .await
            .map_err(err)?;
        // Connections are made when first used, after the migrations: a connection that had
        // read the schema before them would compile `SELECT *` against the old columns, and
        // sqlx, which remembers a statement's columns, would misread its rows.
        let open = |connections: u32, options: SqliteConnectOptions| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                // A file does not drop connections: no ping (a round trip to the connection's
                // thread) before every query.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(options)
        };
        let pool = open(4, options.clone());
        // The writer's page cache survives other connections' reads (only another writer would
        // make it stale), so a large one keeps the indexes it inserts into in memory instead of
        // reading their pages back for every write. SQLite's default is 2 MiB.
        let writer = open(
            1,
            options.pragma("cache_size", WRITER_CACHE_KIB.to_string()),
        );
        Ok(SqliteStore {
            checkpoints: std::sync::OnceLock::new(),
            pool,
            writes: writer::Writer::start(writer.clone())?,
            lax: writer.clone(),
            writer,
            inline: InlineReads {
                path: path.to_path_buf(),
                idle: Mutex::default(),
            },
        })
    }

    /// The schema is in place: background checkpoints may start (not before, for the reason
    /// the pools connect lazily).
    fn migrated(&self) {
        self.checkpoints
            .get_or_init(|| tokio::spawn(checkpoints(self.pool.clone(), self.writer.clone())));
    }

    async fn code_check_row(&self, q: &CodeCheckQuery<'_>) -> Result<CodeCheckRow, StoreError> {
        let (writer, batch) = AttemptGroup::columns(q.written_up_to);
        self.inline.read(|conn| {
            conn.prepare_cached(CODE_CHECK)?.query_row(
                rusqlite::named_params! {
                    "$1": q.call_sid,
                    "$2": q.caller,
                    "$3": q.code_hash,
                    "$4": q.since,
                    "$5": q.caller_up_to.max(0),
                    "$6": q.code_up_to.max(0),
                    "$7": writer,
                    "$8": batch,
                },
                |row| {
                    let order = match row.get::<_, Option<String>>(CODE_CHECK_ORDER_ID)? {
                        Some(_) => Some(rows::order_row(row)?),
                        None => None,
                    };
                    Ok((
                        row.get("call_known")?,
                        row.get("caller_failures")?,
                        row.get("code_failures")?,
                        order,
                        row.get("remembered_order_id")?,
                    ))
                },
            )
        })
    }

    /// The code check and the gate's slots: the check read in place, the slots taken on the
    /// writer thread, both at once.
    async fn check_and_take_here(
        &self,
        q: &CodeCheckQuery<'_>,
        wants: &[crate::store::SlotWant<'_>],
        now: UnixTime,
    ) -> Result<(crate::store::CodeCheckFacts, Vec<Option<i64>>), StoreError> {
        crate::store::check_then_take(self, q, wants, now).await
    }

    /// The order whose `column` (one of callgate's own column names) is `value`, read in place
    /// like the code check's facts (a few index entries).
    async fn order_where(&self, column: &str, value: &str) -> Result<Option<Order>, StoreError> {
        use rusqlite::OptionalExtension;
        let sql = format!("SELECT * FROM orders WHERE {column} = $1");
        self.inline.read(|conn| {
            conn.prepare_cached(&sql)?
                .query_row(rusqlite::named_params! { "$1": value }, rows::order_row)
                .optional()
        })
    }

    /// A caller's or a code's failures are read in place too (the greeting reads the caller's
    /// on every call: a few index entries). Everyone's may walk up to the global limit's
    /// worth of entries, once a second: that read goes to the pool, off the calling thread.
    async fn count_failures_row(
        &self,
        scope: AttemptScope<'_>,
        since: UnixTime,
        up_to: i64,
        written_up_to: Option<AttemptGroup>,
    ) -> Result<i64, StoreError> {
        let (sql, value) = failure_count(scope);
        let (writer, batch) = AttemptGroup::columns(written_up_to);
        if let AttemptScope::Global = scope {
            return sqlx::query_scalar::<sqlx::Sqlite, i64>(sql)
                .bind(since)
                .bind(value)
                .bind(up_to.max(0))
                .bind(writer)
                .bind(batch)
                .fetch_one(&self.pool)
                .await
                .map_err(crate::store::classify);
        }
        self.inline.read(|conn| {
            conn.prepare_cached(sql)?.query_row(
                rusqlite::named_params! {
                    "$1": since, "$2": value, "$3": up_to.max(0), "$4": writer, "$5": batch,
                },
                |row| row.get(0),
            )
        })
    }
}

/// Read-only connections used on the calling thread, for the one read every code check makes
/// (thousands a second under a guessing attack). Through the pool, each statement is a hand-off
/// to the connection's own thread and back, which on a small machine costs more than the read:
/// the kernel's thread switches were over half the code check's time. A WAL reader never waits
/// for the writer, and this read is a few index look-ups in cached pages (microseconds), so
/// it runs in place like any short computation. Connections are made on demand; no more
/// are ever in use than threads run code checks at once.
struct InlineReads {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

impl InlineReads {
    /// Idle connections kept for reuse; more are closed after use.
    const KEEP: usize = 16;

    fn read<T>(
        &self,
        query: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect().map_err(sqlite_error)?,
        };
        let result = query(&conn).map_err(sqlite_error);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < Self::KEEP {
            idle.push(conn);
        }
        result
    }

    fn connect(&self) -> rusqlite::Result<rusqlite::Connection> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }
}

/// One instance: its own changes are told in process.
impl crate::store::Signals for SqliteStore {}

crate::store::sql::sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    "sqlite",
    MIGRATOR,
    // The hot writes are `money.rs`'s, on the writer thread; there the status callback's two go together.
    async fn end_and_settle(
        &self,
        end: &EndCall,
        rounding: Rounding,
        charge_id: &str,
    ) -> Result<(Call, Result<Settlement, StoreError>), StoreError> {
        self.write_end_and_settlement(end, rounding, charge_id)
            .await
    }
);

/// Creates the database file readable by its owner only (0600), or warns when an existing
/// one is readable by others.
fn private_file(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Ok(meta) = std::fs::metadata(path) {
                    if meta.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(
                            path = %path.display(),
                            "the SQLite file is readable by other users; `chmod 600` it and its -wal and -shm files"
                        );
                    }
                }
            }
            // A missing folder and the like: the open below reports it with its path.
            Err(_) => {}
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CodeAttempt, Store};

    /// The code check's work, counted as SQLite counts it: virtual-machine steps, the same
    /// on every run and machine (a timing would be neither).
    fn steps(path: &Path, q: &CodeCheckQuery<'_>) -> (i64, i64, i32) {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn.prepare(CODE_CHECK).unwrap();
        let counts = stmt
            .query_row(
                rusqlite::named_params! {
                    "$1": q.call_sid, "$2": q.caller, "$3": q.code_hash, "$4": q.since,
                    "$5": q.caller_up_to, "$6": q.code_up_to,
                },
                |row| Ok((row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        let steps = stmt.get_status(rusqlite::StatementStatus::VmStep);
        (counts.0, counts.1, steps)
    }

    /// An attacker who piles up wrong codes for one code and one caller does not make the
    /// next check of that code or caller any dearer: the counts stop at the limits.
    #[tokio::test]
    async fn the_code_check_costs_the_same_however_many_failures_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        let wrong = |i: i64| CodeAttempt {
            caller: "+15550001111".into(),
            code_hash: "target".into(),
            ok: false,
            at: 1_000_000 + i,
        };
        let query = CodeCheckQuery {
            call_sid: "CA1",
            caller: "+15550001111",
            code_hash: Some("target"),
            since: 1_000_000,
            caller_up_to: 20,
            code_up_to: 5,
            written_up_to: None,
        };
        // The same question without the bounds (SQLite reads `LIMIT -1` as none): what the
        // statement cost before, to show that the measure moves.
        let unbounded = CodeCheckQuery {
            caller_up_to: -1,
            code_up_to: -1,
            ..query
        };
        let few: Vec<CodeAttempt> = (0..30).map(wrong).collect();
        store.record_attempts(&few).await.unwrap();
        let (caller, code, steps_few) = steps(&path, &query);
        assert_eq!((caller, code), (20, 5));
        let (_, _, unbounded_few) = steps(&path, &unbounded);

        let many: Vec<CodeAttempt> = (30..20_030).map(wrong).collect();
        store.record_attempts(&many).await.unwrap();
        let (caller, code, steps_many) = steps(&path, &query);
        assert_eq!((caller, code), (20, 5));
        assert_eq!(
            steps_many, steps_few,
            "the check walked further with more failures stored"
        );
        let (caller, _, unbounded_many) = steps(&path, &unbounded);
        assert_eq!(caller, 20_030);
        assert!(
            unbounded_many > 100 * unbounded_few.max(1) / 2,
            "an unbounded count grows with what is stored ({unbounded_few} -> {unbounded_many})"
        );
    }

    /// Every status callback stores its call if missing (the upsert): its cost must not grow
    /// with the stream tokens stored over the life of the database (a foreign key checked
    /// from the parent's side once read them all).
    #[tokio::test]
    async fn storing_a_known_call_costs_the_same_however_many_tokens_are_stored() {
        use crate::store::{NewCall, StreamGrant};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.migrate().await.unwrap();
        let call = |sid: String| NewCall {
            call_sid: sid,
            from_number: "+15550001111".into(),
            to_number: "+15550002222".into(),
            now: 100,
        };
        let order = sqlx::query(
            "INSERT INTO orders (id, status, source, plan, amount_cents, currency, seconds_included, \
             seconds_used, overage_consent, overage_price_cents, created_at, updated_at) \
             VALUES ('ord1', $1, $2, 'p', 0, 'usd', 60, 0, FALSE, 0, 1, 1)",
        )
        .bind(crate::store::OrderStatus::Paid)
        .bind(crate::store::OrderSource::Operator);
        order.execute(&store.writer).await.unwrap();
        let tokens = |from: usize, to: usize| {
            let store = &store;
            async move {
                for i in from..to {
                    store.upsert_call(&call(format!("CA{i}"))).await.unwrap();
                    let grant = StreamGrant {
                        call_sid: format!("CA{i}"),
                        order_id: "ord1".into(),
                    };
                    store
                        .insert_stream_token(&format!("t{i}"), &grant, 1000)
                        .await
                        .unwrap();
                }
            }
        };
        let upsert_steps = || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            let mut stmt = conn.prepare(&crate::store::sql::CALL_UPSERT).unwrap();
            stmt.query_row(
                rusqlite::named_params! {
                    "$1": "CA0", "$2": "+15550001111", "$3": "+15550002222", "$4": 100,
                },
                |_| Ok(()),
            )
            .unwrap();
            stmt.get_status(rusqlite::StatementStatus::VmStep)
        };
        tokens(0, 10).await;
        let few = upsert_steps();
        tokens(10, 2_010).await;
        let many = upsert_steps();
        assert_eq!(many, few, "storing a known call walked the stream tokens");
    }
}
