//! mongoeco, the test MongoDB: servers started on first use through the launcher beside this
//! file, a fresh database per test. mongoeco keeps every database in one SQLite file served
//! by one Python process, which slows as the file grows and runs one command at a time: a
//! server takes a few tests' databases, then the next test starts a fresh server (so the
//! suite's MongoDB tests also run side by side, on both cores).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

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
    _stdin: std::process::ChildStdin,
    _dir: tempfile::TempDir,
}

/// Databases a server is given before the next test starts a new one.
const DATABASES_PER_SERVER: usize = 6;

/// The servers started so far (kept until the process ends), the newest last, and how many
/// databases the newest has.
type Servers = (Vec<Server>, usize);

/// The servers, or why none could start; `None` before the first test asks.
static SERVERS: Mutex<Option<Result<Servers, String>>> = Mutex::new(None);

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
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(|e| e.to_string())?;
    // The pipe stays read for the server's life: a closed pipe would make its next print
    // raise (Python ignores SIGPIPE), and a server dying mid-suite would hand its port to the
    // next one started, whose empty databases the driver would quietly reconnect to.
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            eprintln!("mongoeco: {line}");
        }
    });
    let port = line
        .trim()
        .strip_prefix("mongoeco listening on ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| {
            format!("the launcher did not start (its error is above); it said {line:?}")
        })?;
    // Held open for the test process's life: the launcher exits when it closes (and
    // `wait` would close it).
    let stdin = child.stdin.take().ok_or("no stdin")?;
    // Every test on a server that died would fail in a puzzling way: stop there, saying why.
    std::thread::spawn(move || {
        let status = child.wait();
        eprintln!(
            "mongoeco on port {port} exited mid-suite ({status:?}); its tests cannot be trusted"
        );
        std::process::abort();
    });
    Ok(Server {
        port,
        _stdin: stdin,
        _dir: dir,
    })
}

/// The port of the server the next database goes to, starting one when due.
fn next_port() -> Result<u16, String> {
    let mut servers = SERVERS.lock().unwrap_or_else(|p| p.into_inner());
    let state = servers.get_or_insert_with(|| start().map(|s| (vec![s], 0)));
    let (list, used) = state.as_mut().map_err(|e| e.clone())?;
    if *used >= DATABASES_PER_SERVER {
        list.push(start()?);
        *used = 0;
    }
    *used += 1;
    Ok(list.last().map(|s| s.port).unwrap_or_default())
}

/// The URI of a fresh database (`PREFIX_<random>`) on a test server. `None` (skipped) when
/// mongoeco is not installed, except under `CI=true`, where that is a failure.
pub fn fresh_uri(prefix: &str) -> Option<String> {
    let port = match next_port() {
        Ok(port) => port,
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("mongoeco is required under CI=true (./scripts/test installs it): {why}");
            }
            eprintln!("SKIPPED: mongoeco: {why}; ./scripts/test installs it");
            return None;
        }
    };
    let name = format!(
        "{prefix}_{}",
        callgate::store::new_id("d").trim_start_matches("d_")
    );
    Some(format!(
        "mongodb://127.0.0.1:{port}/{name}?directConnection=true"
    ))
}

/// A fresh, migrated database for one test.
pub async fn mongo() -> Option<TestDb> {
    let uri = fresh_uri("cg_test")?;
    let store = MongoStore::open(&uri).await.expect("connect to mongoeco");
    store
        .migrate()
        .await
        .expect("create collections and indexes");
    Some(TestDb::from_store(Arc::new(store)))
}
