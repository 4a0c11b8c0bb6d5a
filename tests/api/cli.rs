//! The `callgate` binary as an operator runs it: start-up, health, shutdown, bad input, and
//! the operator commands.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn callgate(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callgate"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to completion: (exit code, stdout, stderr).
async fn run(mut cmd: Command) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("command finished in time")
        .expect("command ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `serve` on a free port and returns the child and the address it logged.
async fn start_server(dir: &Path) -> (Child, String) {
    let mut cmd = callgate(dir);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn callgate serve");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if let Some(rest) = line.split("addr=").nth(1) {
                if line.contains("callgate listening") {
                    return rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                }
            }
        }
        panic!("server exited before listening");
    })
    .await
    .expect("server started in time");
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

#[tokio::test]
async fn serve_answers_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start_server(dir.path()).await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], "sqlite");
    assert!(
        dir.path().join("callgate.db").exists(),
        "default database file"
    );
    assert!(
        dir.path().join("callgate.key").exists(),
        "generated key file"
    );

    let pid = child.id().expect("running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stopped in time")
        .unwrap();
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
}

#[tokio::test]
async fn bad_configuration_ends_start_up_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("DATABASE_URL", "mysql://localhost/x")],
            "DATABASE_URL is malformed",
        ),
        (
            &[("DATABASE_URL", "sqlite:/nonexistent-dir/sub/x.db")],
            "unable to open database file",
        ),
        (
            &[("STRIPE_SECRET_KEY", "sk_test_abcdef")],
            "STRIPE_PUBLISHABLE_KEY is required",
        ),
        (&[("PLAN_MINUTES", "lots")], "PLAN_MINUTES is malformed"),
        (&[("LISTEN_ADDR", "nowhere")], "LISTEN_ADDR is malformed"),
        (
            &[("DATABASE_URL", "postgres://u@127.0.0.1:1/x")],
            "CALLGATE_SECRET is required",
        ),
    ];
    for (vars, expected) in cases {
        let mut cmd = callgate(dir.path());
        // Never the default port: 8080 may be taken on this machine.
        cmd.arg("serve").env("LISTEN_ADDR", "127.0.0.1:0");
        for (k, v) in *vars {
            cmd.env(k, v);
        }
        let (code, _, stderr) = run(cmd).await;
        assert_eq!(code, 1, "{vars:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{vars:?}: expected `{expected}` in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains("backtrace"), "{stderr}");
        let error_lines = stderr
            .lines()
            .filter(|l| l.starts_with("callgate: error:"))
            .count();
        assert_eq!(error_lines, 1, "{stderr}");
    }
}

#[tokio::test]
async fn a_taken_port_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = callgate(dir.path());
    cmd.args(["serve", "--listen", &addr]);
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("LISTEN_ADDR"), "{stderr}");
}

#[tokio::test]
async fn env_file_is_read_and_environment_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "DATABASE_URL=sqlite:from-dotenv.db\nPLAN_MINUTES=7\n",
    )
    .unwrap();
    let mut cmd = callgate(dir.path());
    cmd.arg("migrate");
    let (code, stdout, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("up to date"));
    assert!(dir.path().join("from-dotenv.db").exists());

    let mut cmd = callgate(dir.path());
    cmd.arg("migrate").env("DATABASE_URL", "sqlite:from-env.db");
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(dir.path().join("from-env.db").exists());

    std::fs::write(
        dir.path().join(".env"),
        "NOT A VALID LINE ===\n\"unterminated",
    )
    .unwrap();
    let (code, _, stderr) = run({
        let mut c = callgate(dir.path());
        c.arg("migrate");
        c
    })
    .await;
    assert_eq!(code, 1);
    assert!(stderr.contains(".env"), "{stderr}");
}

#[tokio::test]
async fn operator_issues_lists_and_revokes_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        let mut c = callgate(dir.path());
        c.args(args);
        c
    };
    let (code, stdout, stderr) = run(cmd(&["codes", "issue", "--minutes", "5", "--json"])).await;
    assert_eq!(code, 0, "{stderr}");
    let issued: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let access_code = issued["code"].as_str().unwrap().to_string();
    assert_eq!(access_code.len(), 12);
    assert!(access_code.chars().all(|c| c.is_ascii_digit()));
    assert_eq!(issued["order"]["status"], "paid");
    assert_eq!(issued["order"]["seconds_included"], 300);
    assert!(
        issued["order"].get("code_hash").is_none(),
        "hashes stay inside"
    );
    assert!(
        !stderr.contains(&access_code),
        "the code must not be logged"
    );

    let (_, human, _) = run(cmd(&["codes", "issue", "--minutes", "10", "--overage"])).await;
    assert!(human.contains("access code:"));
    assert!(human.contains("overage:     allowed"));

    let (code, stdout, _) = run(cmd(&["codes", "list", "--json"])).await;
    assert_eq!(code, 0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        !stdout.contains(&access_code),
        "lists show the last four digits only"
    );
    let (_, table, _) = run(cmd(&["codes", "list"])).await;
    assert!(table.contains(&format!("…{}", &access_code[8..])));

    let (code, stdout, stderr) = run(cmd(&["codes", "revoke", &access_code])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("revoked order"));
    let (_, stdout, _) = run(cmd(&["codes", "revoke", &access_code])).await;
    assert!(stdout.contains("already revoked"));

    let (code, _, stderr) = run(cmd(&["codes", "revoke", "000000000000"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no order has that access code"));
    let (code, _, stderr) = run(cmd(&["codes", "revoke", "12ab"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("digits only"), "{stderr}");
    let (code, _, _) = run(cmd(&["codes", "issue", "--minutes", "0"])).await;
    assert_eq!(code, 2, "clap refuses a zero allowance");

    let (code, stdout, _) = run(cmd(&["calls", "list", "--json"])).await;
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "[]");
}

#[tokio::test]
async fn import_from_an_export_file_dry_run_then_for_real() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orders.json"),
        "{\"_id\":{\"$oid\":\"65f0c0ffee0000000000cccc\"},\"accessCode\":\"987654\",\"minutes\":4}\n",
    )
    .unwrap();
    let cmd = |args: &[&str]| {
        let mut c = callgate(dir.path());
        c.args(args);
        c
    };
    let (code, stdout, stderr) = run(cmd(&[
        "import",
        "--from-file",
        "orders.json",
        "--dry-run",
        "--json",
    ]))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["imported"], 1);
    assert!(!stdout.contains("987654"), "codes are masked");
    let (_, listed, _) = run(cmd(&["codes", "list", "--json"])).await;
    assert_eq!(listed.trim(), "[]", "a dry run writes nothing");
    let (code, stdout, _) = run(cmd(&["import", "--from-file", "orders.json"])).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("imported 1"), "{stdout}");
    let (code, _, stderr) = run(cmd(&["import", "--from-file", "missing.json"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("missing.json"), "{stderr}");
    let (code, _, _) = run(cmd(&["import"])).await;
    assert_eq!(code, 2, "a source is required");
}

#[tokio::test]
async fn the_demo_refuses_live_stripe_keys_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = callgate(dir.path());
    cmd.args(["demo", "--listen", "127.0.0.1:0"])
        .env("STRIPE_SECRET_KEY", "sk_live_abc");
    let (code, _out, err) = run(cmd).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("STRIPE_SECRET_KEY") && err.contains("live"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Issue 13, point 16: `callgate demo` listens where LISTEN_ADDR says (its own error message
/// recommends that variable).
#[tokio::test]
async fn the_demo_honours_listen_addr() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut cmd = callgate(dir.path());
    cmd.arg("demo").env("LISTEN_ADDR", &addr);
    let (code, _out, err) = run(cmd).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

/// Long work draws a progress bar with a rate on a terminal (here a pseudo-terminal made by
/// util-linux `script`), and stays quiet without one and in `--json` mode.
#[tokio::test]
async fn long_work_shows_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let docs: String = (0..300)
        .map(|i| {
            format!(
                "{{\"_id\":\"old{i}\",\"accessCode\":\"{:012}\",\"minutes\":4}}\n",
                100_000_000_000u64 + i
            )
        })
        .collect();
    std::fs::write(dir.path().join("orders.json"), docs).unwrap();
    let import = "import --from-file orders.json --dry-run";
    let on_terminal = |args: &str| {
        let mut s = Command::new("sh");
        s.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TERM", "xterm")
            .args([
                "-c".to_string(),
                format!(
                    "script -qefc '{} {args}' /dev/null",
                    env!("CARGO_BIN_EXE_callgate")
                ),
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        s
    };
    let (code, terminal, _) = run(on_terminal(import)).await;
    assert_eq!(code, 0, "{terminal}");
    assert!(terminal.contains("importing ["), "{terminal}");
    assert!(terminal.contains("/300"), "{terminal}");
    assert!(terminal.contains("/s"), "a rate: {terminal}");

    let (code, _, terminal_json) = run(on_terminal(&format!("{import} --json"))).await;
    assert_eq!(code, 0);
    assert!(!terminal_json.contains("importing"), "{terminal_json}");

    let mut piped = callgate(dir.path());
    piped.args(import.split(' '));
    let (code, _, stderr) = run(piped).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("importing ["), "{stderr}");
}
