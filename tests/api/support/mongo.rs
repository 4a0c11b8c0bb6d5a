//! mongoeco, the test MongoDB: one server per test process (started on first use through the
//! launcher beside this file), a fresh database per test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};

use callgate::store::{MongoStore, Store};

use super::TestDb;

/// The Python 3.13 that has mongoeco: `CALLGATE_TEST_MONGO_PYTHON`, or the venv scripts/test makes.
pub fn python() -> String {
    std::env::var("CALLGATE_TEST_MONGO_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-mongo/bin/python").to_string()
    })
}

struct Server {
    port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

fn start() -> Result<Server, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let launcher = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/support/mongoeco_launcher.py"
    );
    let mut child = Command::new(python())
        .arg(launcher)
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let port = line
        .trim()
        .strip_prefix("mongoeco listening on ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| {
            format!("the launcher did not start (its error is above); it said {line:?}")
        })?;
    Ok(Server {
        port,
        _child: child,
        _dir: dir,
    })
}

/// The shared mongoeco server's port, once started.
pub fn port() -> Option<u16> {
    SERVER.get().and_then(|s| s.as_ref().ok()).map(|s| s.port)
}

/// A fresh database on the shared mongoeco server. `None` (skipped) when mongoeco is not
/// installed, except under `CI=true`, where that is a failure.
pub async fn mongo() -> Option<TestDb> {
    let server = match SERVER.get_or_init(start) {
        Ok(server) => server,
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("mongoeco is required under CI=true (./scripts/test installs it): {why}");
            }
            eprintln!("SKIPPED: mongoeco: {why}; ./scripts/test installs it");
            return None;
        }
    };
    let name = format!(
        "cg_test_{}",
        callgate::store::new_id("d").trim_start_matches("d_")
    );
    let uri = format!(
        "mongodb://127.0.0.1:{}/{name}?directConnection=true",
        server.port
    );
    let store = MongoStore::open(&uri).await.expect("connect to mongoeco");
    store
        .migrate()
        .await
        .expect("create collections and indexes");
    Some(TestDb::from_store(Arc::new(store)))
}
