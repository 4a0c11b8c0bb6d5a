//! A real SMTP server (aiosmtpd, through `smtp_sink.py` beside this file) that records what
//! it accepts, and can answer as a relay that is down (421) until told otherwise.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    /// The whole message, headers and body.
    pub data: String,
}

pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    stdin: tokio::sync::Mutex<ChildStdin>,
    acks: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    _child: Child,
}

impl SmtpSink {
    /// Starts one; `None` (skipped) without aiosmtpd, except under `CI=true`.
    pub async fn start() -> Option<SmtpSink> {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/api/support/smtp_sink.py"
        );
        let spawned = Command::new(super::stripe::python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return missing(&format!("cannot run the SMTP sink: {e}")),
        };
        let stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .unwrap_or_default();
        let Some(port) = first
            .strip_prefix("smtp listening on ")
            .and_then(|p| p.trim().parse().ok())
        else {
            return missing("aiosmtpd did not start (is it installed? run ./scripts/test)");
        };
        let mails = Arc::new(Mutex::new(Vec::new()));
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let seen = mails.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(ack) = line.strip_prefix("ack ") {
                    let _ = ack_tx.send(ack.to_string());
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let to = v["to"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let data = v["data"].as_str().unwrap_or_default().to_string();
                seen.lock().unwrap().push(Mail { to, data });
            }
        });
        Some(SmtpSink {
            port,
            mails,
            stdin: tokio::sync::Mutex::new(stdin),
            acks: tokio::sync::Mutex::new(ack_rx),
            _child: child,
        })
    }

    /// The `SMTP_URL` that reaches it (unencrypted, on loopback).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Answers as a relay that is down (421 to every recipient), or as one that is up.
    pub async fn set_down(&self, down: bool) {
        let command = if down { "down" } else { "up" };
        self.stdin
            .lock()
            .await
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let ack = tokio::time::timeout(Duration::from_secs(10), self.acks.lock().await.recv())
            .await
            .expect("the sink answers")
            .expect("the sink runs");
        assert_eq!(ack, command);
    }

    /// What it accepted so far (a message is recorded before the client hears it accepted).
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

fn missing(why: &str) -> Option<SmtpSink> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the SMTP sink is required under CI=true: {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}
