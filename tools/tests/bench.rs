//! The measuring tools run and print their figures (what they measure is the README's
//! Performance section; no figure is asserted here, since a test must not depend on speed).

use std::process::Stdio;

/// Runs `callgate-tools` with `args` (no database in the environment): success, stdout, stderr.
async fn tools(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_callgate-tools"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("MONGODB_URI")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_webhook_benchmark_prints_every_webhook_s_figures() {
    let (ok, stdout, stderr) =
        tools(&["bench-webhooks", "--seconds", "1", "--concurrency", "2"]).await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("on sqlite"), "{stdout}");
    for webhook in [
        "incoming (greeting)",
        "code check (valid)",
        "status callback",
        "code check (wrong)",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(webhook))
            .unwrap_or_else(|| panic!("no {webhook} line: {stdout}"));
        assert!(line.contains("req/s") && line.contains("p99"), "{line}");
    }
    assert!(stdout.contains("0 errors"), "{stdout}");
    assert!(!stdout.contains(" 0 req/s"), "{stdout}");
    // Each pass says what CPU the server used per request, apart from the load generator's
    // (its threads are told apart by name); SQLite runs in the server, so nothing else.
    for unit in ["call", "check"] {
        assert!(cpu_ms(&stdout, unit, "callgate") > 0.0, "{stdout}");
        assert!(!cpu_line(&stdout, unit).contains("PostgreSQL"), "{stdout}");
    }
}

/// The `CPU per {unit}:` line of a benchmark's output.
fn cpu_line<'a>(stdout: &'a str, unit: &str) -> &'a str {
    let start = format!("CPU per {unit}:");
    stdout
        .lines()
        .find(|l| l.starts_with(&start))
        .unwrap_or_else(|| panic!("no `{start}` line: {stdout}"))
}

/// The milliseconds that line gives `who` (`callgate 0.711 ms`).
fn cpu_ms(stdout: &str, unit: &str, who: &str) -> f64 {
    let line = cpu_line(stdout, unit);
    let after = line
        .split(&format!("{who} "))
        .nth(1)
        .unwrap_or_else(|| panic!("no {who} in {line}"));
    after
        .split(" ms")
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no figure for {who} in {line}"))
}

#[tokio::test]
async fn the_load_test_says_where_the_callgate_binary_is_missing() {
    let (ok, _, stderr) = tools(&[
        "loadtest",
        "--calls",
        "1",
        "--seconds",
        "1",
        "--callgate",
        "/nonexistent/callgate",
    ])
    .await;
    assert!(!ok);
    assert!(stderr.contains("cargo build --release"), "{stderr}");
}

/// On PostgreSQL the benchmark makes a schema and drops it when done: the server and the
/// attempt writer behind it stop first, so nothing writes into a dropped schema.
#[tokio::test]
async fn the_webhook_benchmark_on_postgres_cleans_up_after_its_writers() {
    let url = std::env::var("CALLGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    if tokio::net::TcpStream::connect("127.0.0.1:5432")
        .await
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL is required under CI=true"
        );
        eprintln!("SKIPPED: no PostgreSQL on 127.0.0.1:5432");
        return;
    }
    let (ok, stdout, stderr) = tools(&[
        "bench-webhooks",
        "--seconds",
        "1",
        "--concurrency",
        "2",
        "--database-url",
        &url,
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("on postgres"), "{stdout}");
    // PostgreSQL on this machine: its processes' CPU per request is read too.
    for unit in ["call", "check"] {
        assert!(cpu_ms(&stdout, unit, "callgate") > 0.0, "{stdout}");
        assert!(cpu_ms(&stdout, unit, "PostgreSQL") > 0.0, "{stdout}");
    }
    assert!(!stderr.contains("does not exist"), "{stderr}");
    assert!(!stderr.contains("dropped"), "{stderr}");
}
