//! Test support: real databases, localstripe's launcher, whole calls and the browser. The
//! Twilio caller, the agent and the Stripe stand-in are the workspace's `callgate-peers`.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Arc;

use callgate::store::{DynStore, PostgresStore, SqliteStore, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tempfile::TempDir;

/// The PostgreSQL server tests use; each test gets its own schema in it.
pub fn pg_url() -> String {
    std::env::var("CALLGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A URL where nothing listens, for a peer that is down. Port 1 lies below the ephemeral
/// range every test server binds from (port 0), so no test running beside this one can take
/// it (a port bound and released for the purpose can be, and was: a server there answered).
pub const CLOSED_URL: &str = "http://127.0.0.1:1";

/// A fresh, migrated database for one test, removed when the test is done.
pub struct TestDb {
    pub store: DynStore,
    _dir: Option<TempDir>,
    pg: Option<(PgPool, String)>,
    /// How another process would reach the same database.
    again: Option<Again>,
}

/// Where a test database is, for a second connection to it.
#[derive(Clone)]
pub enum Again {
    Sqlite(std::path::PathBuf),
    Postgres(Box<PgConnectOptions>),
}

impl Again {
    /// PostgreSQL's `host:port` as this database reaches it.
    pub fn pg_target(&self) -> String {
        match self {
            Again::Postgres(options) => format!("{}:{}", options.get_host(), options.get_port()),
            Again::Sqlite(_) => panic!("PostgreSQL only"),
        }
    }

    /// The same PostgreSQL database reached through `addr` (a proxy in front of it).
    pub fn via(&self, addr: std::net::SocketAddr) -> Again {
        match self {
            Again::Postgres(options) => Again::Postgres(Box::new(
                (**options)
                    .clone()
                    .host(&addr.ip().to_string())
                    .port(addr.port()),
            )),
            Again::Sqlite(_) => panic!("PostgreSQL only"),
        }
    }

    /// Another store on the same database, as another process would open it (migrations
    /// already run).
    pub async fn open(&self) -> DynStore {
        match self {
            Again::Sqlite(path) => Arc::new(SqliteStore::open(path).await.expect("open sqlite")),
            Again::Postgres(options) => Arc::new(
                PostgresStore::connect((**options).clone())
                    .await
                    .expect("connect postgres"),
            ),
        }
    }
}

impl TestDb {
    /// A database whose cleanup is its own (MongoDB: a fresh database name per test).
    pub fn from_store(store: DynStore) -> TestDb {
        TestDb {
            store,
            _dir: None,
            pg: None,
            again: None,
        }
    }

    /// The PostgreSQL schema this test's tables are in.
    pub fn pg_schema(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, schema)| schema.as_str())
    }

    /// How to open this database again (SQLite and PostgreSQL).
    pub fn again(&self) -> Again {
        self.again.clone().expect("SQLite or PostgreSQL")
    }

    /// Runs each of `setup`, then answers the query plan of each of `queries`, one text each
    /// (`EXPLAIN` on PostgreSQL, `EXPLAIN QUERY PLAN` on SQLite), on a connection of its own.
    pub async fn plans(&self, setup: &[&str], queries: &[&str]) -> Vec<String> {
        use sqlx::{Connection, Row};
        let mut plans = Vec::new();
        match (&self.pg, &self.again) {
            (Some((admin, schema)), _) => {
                let mut conn = admin.acquire().await.expect("admin connection");
                let path = format!("SET search_path TO {schema}");
                sqlx::query(&path).execute(&mut *conn).await.unwrap();
                for sql in setup {
                    sqlx::query(sql).execute(&mut *conn).await.unwrap();
                }
                for sql in queries {
                    let rows = sqlx::query(&format!("EXPLAIN {sql}"))
                        .fetch_all(&mut *conn)
                        .await
                        .unwrap();
                    let lines: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
                    plans.push(lines.join("\n"));
                }
                sqlx::query("RESET search_path")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            }
            (None, Some(Again::Sqlite(path))) => {
                let url = format!("sqlite:{}", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                for sql in setup {
                    sqlx::query(sql).execute(&mut conn).await.unwrap();
                }
                for sql in queries {
                    let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                    let lines: Vec<String> = rows.iter().map(|r| r.get::<String, _>(3)).collect();
                    plans.push(lines.join("\n"));
                }
            }
            _ => panic!("plans are SQL engines' only"),
        }
        plans
    }

    /// Drops a PostgreSQL test schema (a failed test leaves its schema for inspection).
    pub async fn cleanup(self) {
        if let Some((admin, schema)) = self.pg {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&admin)
                .await;
        }
    }
}

/// A new SQLite file in a temporary folder.
pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("test.db");
    let store = SqliteStore::open(&path).await.expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    TestDb {
        store: Arc::new(store),
        _dir: Some(dir),
        pg: None,
        again: Some(Again::Sqlite(path)),
    }
}

/// Like [`postgres`], but the store reaches the server through a proxy of the test's, which
/// can cut the link (see [`proxy::Proxy`]).
pub async fn postgres_behind_proxy() -> Option<(TestDb, proxy::Proxy)> {
    let direct = PgConnectOptions::from_str(&pg_url()).expect("test PostgreSQL URL");
    let proxy = proxy::Proxy::start(format!("{}:{}", direct.get_host(), direct.get_port())).await;
    let via = proxy.addr.to_string();
    let db = postgres_with(|_| via).await?;
    Some((db, proxy))
}

/// A new schema on the test PostgreSQL server. `None` (the test is skipped with a line on
/// stderr) when the server is down, except under `CI=true`, where that is a failure.
pub async fn postgres() -> Option<TestDb> {
    postgres_with(|addr| addr.to_string()).await
}

async fn postgres_with(route: impl FnOnce(&str) -> String) -> Option<TestDb> {
    let url = pg_url();
    let admin = match PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&url)
        .await
    {
        Ok(pool) => pool,
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL at {url} is required under CI=true: {e}");
            }
            eprintln!("SKIPPED: PostgreSQL at {url} is not reachable: {e}");
            return None;
        }
    };
    let schema = format!(
        "cg_test_{}",
        callgate::store::new_id("s").trim_start_matches("s_")
    );
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .expect("create test schema");
    let direct = PgConnectOptions::from_str(&url).expect("test PostgreSQL URL");
    let routed = route(&format!("{}:{}", direct.get_host(), direct.get_port()));
    let (host, port) = routed.rsplit_once(':').expect("host:port");
    let options = direct
        .host(host)
        .port(port.parse().expect("port"))
        .options([("search_path", schema.as_str())]);
    let store = PostgresStore::connect(options.clone())
        .await
        .expect("connect postgres");
    store.migrate().await.expect("migrate postgres");
    Some(TestDb {
        store: Arc::new(store),
        _dir: None,
        pg: Some((admin, schema)),
        again: Some(Again::Postgres(Box::new(options))),
    })
}

/// Runs `body` on each backend; a backend that is unavailable outside CI is skipped.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::support::sqlite().await;
                    super::$name(db.store.clone()).await;
                    db.cleanup().await;
                }
            )*
        }
        mod mongodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::support::mongo::mongo().await else { return };
                    super::$name(db.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::support::postgres().await else { return };
                    super::$name(db.store.clone()).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

pub mod app;
pub mod browser;
pub mod calls;
pub mod cluster;
pub mod logs;
pub mod mongo;
pub mod proxy;
pub mod sms;
pub mod smtp;
pub mod stripe;
