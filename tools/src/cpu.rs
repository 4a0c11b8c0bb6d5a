//! CPU time from Linux's `/proc`: a process's or one of its threads' (user and system), and
//! where it went in a benchmark (the server's threads, the rest of this process, a local
//! PostgreSQL's processes).

/// One `/proc/.../stat` file: the command (or thread) name and its CPU seconds so far.
#[derive(Debug, Clone, Default)]
pub struct Stat {
    pub name: String,
    pub user_secs: f64,
    pub system_secs: f64,
}

impl Stat {
    /// Reads `path` (`/proc/<pid>/stat` or `/proc/self/task/<tid>/stat`); `None` when it is
    /// gone (the process or thread ended).
    pub fn read(path: &str) -> Option<Stat> {
        let text = std::fs::read_to_string(path).ok()?;
        // The name is between the first '(' and the last ')' (it may hold spaces and
        // parentheses); the fields after it are space-separated.
        let name = text.get(text.find('(')? + 1..text.rfind(')')?)?.to_string();
        let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
        // utime and stime, in clock ticks (100 a second on Linux).
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        Some(Stat {
            name,
            user_secs: ticks(11)? as f64 / 100.0,
            system_secs: ticks(12)? as f64 / 100.0,
        })
    }

    pub fn cpu_secs(&self) -> f64 {
        self.user_secs + self.system_secs
    }
}

/// CPU seconds used so far: by this process's threads whose name starts with the server's
/// prefix, by its other threads (the load generator; ended threads count here), and by the
/// processes named `postgres` on this machine (`None` when not asked for).
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub server: f64,
    pub client: f64,
    pub postgres: Option<f64>,
}

impl Split {
    pub fn now(server_threads: &str, postgres: bool) -> Split {
        let total = Stat::read("/proc/self/stat").map_or(0.0, |s| s.cpu_secs());
        let server = in_dir("/proc/self/task", |name| name.starts_with(server_threads));
        Split {
            server,
            client: total - server,
            postgres: postgres.then(|| in_dir("/proc", |name| name == "postgres")),
        }
    }

    /// What was used from `before` to `self`, per `units` (calls, requests), in milliseconds,
    /// as a line to print.
    pub fn per(&self, before: &Split, units: u64, what: &str) -> String {
        let ms = |after: f64, before: f64| (after - before) * 1e3 / units.max(1) as f64;
        let server = ms(self.server, before.server);
        let postgres = match (self.postgres, before.postgres) {
            (Some(after), Some(before)) => format!(", PostgreSQL {:.3} ms", ms(after, before)),
            _ => String::new(),
        };
        format!(
            "CPU per {what}: callgate {server:.3} ms{postgres}, load generator {:.3} ms \
             (one core of callgate alone: {:.0} {what}s/s)",
            ms(self.client, before.client),
            if server > 0.0 { 1e3 / server } else { 0.0 },
        )
    }
}

/// CPU seconds of the entries of `dir` (processes, or this process's threads) whose name
/// passes `keep`.
fn in_dir(dir: &str, keep: impl Fn(&str) -> bool) -> f64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0.0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| Stat::read(&format!("{}/stat", e.path().display())))
        .filter(|s| keep(&s.name))
        .map(|s| s.cpu_secs())
        .sum()
}
