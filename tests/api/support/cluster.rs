//! Several `callgate serve` processes on one PostgreSQL database behind a real HAProxy
//! (Debian's package; `scripts/test` installs it), as an operator runs them: round-robin,
//! health-checked on `/readyz`, WebSocket upgrades passed. The balancer's address is every
//! instance's `BASE_URL`, so Twilio's signatures, the stream's URL and Stripe's webhooks all
//! go through it. Processes die for real: `kill -9`, or SIGTERM and a drain.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::app::{ACCOUNT_SID, AUTH_TOKEN, PHONE};

/// The HAProxy binary, or `None` (the test is skipped with a line on stderr) when it is not
/// installed, except under `CI=true`, where that is a failure.
fn haproxy() -> Option<&'static str> {
    const PATH: &str = "/usr/sbin/haproxy";
    if std::path::Path::new(PATH).exists() {
        return Some(PATH);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("HAProxy is required under CI=true (./scripts/test installs it)");
    }
    eprintln!("SKIPPED: HAProxy is not installed (./scripts/test installs it)");
    None
}

/// One `callgate serve` process.
pub struct Node {
    pub name: String,
    /// `127.0.0.1:PORT`: the same across restarts.
    pub addr: String,
    child: Option<Child>,
    /// Everything it logged, every run.
    pub log: Arc<Mutex<Vec<String>>>,
}

pub struct Cluster {
    /// The balancer: `http://127.0.0.1:PORT`, every instance's `BASE_URL`.
    pub base: String,
    pub nodes: Vec<Node>,
    env: Vec<(String, String)>,
    haproxy: Child,
    /// HAProxy's own lines (its warnings: servers going down, a bind that failed).
    haproxy_log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` instances on the test's PostgreSQL `schema`, with `extra` settings, behind HAProxy.
    pub async fn start(schema: &str, n: usize, extra: &[(&str, String)]) -> Option<Cluster> {
        let haproxy = haproxy()?;
        let dir = tempfile::tempdir().unwrap();
        // The balancer's socket is bound here, on a free port, and handed to HAProxy.
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", front.local_addr().unwrap());
        let db = format!("{}?options[search_path]={schema}", super::pg_url());
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", db.as_str()),
            ("BASE_URL", base.as_str()),
            ("CALLGATE_SECRET", "test-secret-0123456789abcdef0123456789"),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
            ("TWILIO_PHONE_NUMBER", PHONE),
            ("ELEVENLABS_AGENT_ID", "agent_test"),
            ("SHUTDOWN_HANDOVER_SECS", "1"),
            ("AUDIO_DIR", dir.path().to_str().unwrap()),
            ("RUST_LOG", "info"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut node = Node {
                name: format!("node-{}", i + 1),
                addr: "127.0.0.1:0".into(),
                child: None,
                log: Arc::default(),
            };
            node.start(&env).await;
            nodes.push(node);
        }
        let config = dir.path().join("haproxy.cfg");
        let servers: String = nodes
            .iter()
            .map(|n| format!("    server {} {} check\n", n.name, n.addr))
            .collect();
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn 4096\n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    \
                 timeout server 60s\n    timeout tunnel 1h\n    option redispatch\n    retries 3\n    \
                 retry-on conn-failure empty-response\n\
                 frontend public\n    bind fd@3\n    default_backend callgate\n\
                 backend callgate\n    balance roundrobin\n    option httpchk GET /readyz\n    \
                 default-server inter 200ms fall 1 rise 1\n{servers}"
            ),
        )
        .unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&front);
        let mut cmd = Command::new(haproxy);
        cmd.args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: between fork and exec only dup2, which is async-signal-safe; the copy on
        // fd 3 is inherited (dup2 clears close-on-exec), and HAProxy listens on it.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    // dup2 onto itself keeps close-on-exec: clear it by hand.
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut proxy = cmd.spawn().expect("start haproxy");
        let log = Arc::new(Mutex::new(Vec::new()));
        drain(proxy.stderr.take().unwrap(), log.clone(), "haproxy");
        drop(front);
        let cluster = Cluster {
            base,
            nodes,
            env,
            haproxy: proxy,
            haproxy_log: log,
            _dir: dir,
        };
        cluster.wait_until_all_up().await;
        Some(cluster)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until the balancer answers, and every instance passed its check (HAProxy
    /// starts each server up; a few rounds of requests then reach each).
    pub async fn wait_until_all_up(&self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answer = http.get(self.url("/readyz")).send().await;
            let last = match answer {
                Ok(r) if r.status() == 200 => break,
                Ok(r) => format!("status {}", r.status()),
                Err(e) => format!("{e}"),
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "the balancer never answered: {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for node in &self.nodes {
            node.wait_ready().await;
        }
    }

    /// `kill -9` of node `i`.
    pub async fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            child.start_kill().unwrap();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM to node `i`; returns once it has drained and exited.
    pub async fn stop(&mut self, i: usize) {
        self.terminate(i);
        self.exited(i).await;
    }

    /// SIGTERM to node `i`: it begins to drain.
    pub fn terminate(&self, i: usize) {
        let Some(child) = &self.nodes[i].child else {
            return;
        };
        let pid = child.id().expect("running") as i32;
        // SAFETY: a plain signal to a child of this process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Waits for node `i` to exit, as a drained instance does (exit status 0).
    pub async fn exited(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(mut child) = node.child.take() else {
            return;
        };
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("drained in time")
            .unwrap();
        assert!(status.success(), "{}: {status:?}", node.name);
    }

    /// Starts node `i` again, on its address and under its name.
    pub async fn restart(&mut self, i: usize) {
        let env = self.env.clone();
        self.nodes[i].start(&env).await;
        self.nodes[i].wait_ready().await;
    }

    /// Which node logged a line containing all of `needles`.
    pub fn who_logged(&self, needles: &[&str]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| {
                n.log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| needles.iter().all(|x| l.contains(x)))
            })
            .map(|n| n.name.clone())
            .collect()
    }

    /// Every node's log and HAProxy's, for a failure's message.
    pub fn logs(&self) -> String {
        let mut logs: String = self
            .nodes
            .iter()
            .map(|n| format!("--- {}\n{}\n", n.name, n.log.lock().unwrap().join("\n")))
            .collect();
        logs += &format!(
            "--- haproxy\n{}\n",
            self.haproxy_log.lock().unwrap().join("\n")
        );
        logs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.haproxy.start_kill();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

impl Node {
    async fn start(&mut self, env: &[(String, String)]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_callgate"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("INSTANCE_NAME", &self.name)
            .args(["serve", "--listen", &self.addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn callgate serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                self.log.lock().unwrap().push(line.clone());
                if line.contains("callgate listening") {
                    if let Some(rest) = line.split("addr=").nth(1) {
                        return rest.split_whitespace().next().unwrap().to_string();
                    }
                }
            }
            panic!(
                "{} exited before listening:\n{}",
                self.name,
                self.log.lock().unwrap().join("\n")
            );
        })
        .await
        .expect("listening in time");
        self.addr = addr;
        let log = self.log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = http
                .get(format!("http://{}/readyz", self.addr))
                .send()
                .await;
            if ok.is_ok_and(|r| r.status() == 200) {
                // One more health-check interval: HAProxy sees it up.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never became ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Keeps reading a child's stderr into `log`.
fn drain(stderr: tokio::process::ChildStderr, log: Arc<Mutex<Vec<String>>>, _who: &'static str) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log.lock().unwrap().push(line);
        }
    });
}
