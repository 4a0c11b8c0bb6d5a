//! The operator's command line: `serve`, `migrate`, and day-to-day tasks.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{Config, LogFormat};
use crate::domain::codes::AccessCode;
use crate::orders::{self, OperatorGrant};
use crate::store::{Call, Order, OrderStatus};
use crate::{telemetry, App, StartError};

#[derive(Debug, Parser)]
#[command(
    name = "callgate",
    version,
    about = "A paid phone gateway to an ElevenLabs voice agent"
)]
pub struct Cli {
    /// Log JSON lines instead of text (same as LOG_FORMAT=json).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve {
        /// Address to listen on; overrides LISTEN_ADDR.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Try the whole product without accounts: local stand-ins for Stripe, Twilio and
    /// ElevenLabs, a browser phone at /demo/phone, and a SQLite file of its own.
    #[cfg(feature = "demo")]
    Demo {
        /// Address to listen on.
        #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The demo's SQLite file (separate from DATABASE_URL).
        #[arg(long, default_value = "callgate-demo.db")]
        database: std::path::PathBuf,
        /// Minutes included in the demo plan (small, so the warning and overage come soon).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i64).range(1..=60))]
        minutes: i64,
    },
    /// Bring the database schema up to date and exit.
    Migrate,
    /// Issue, list and revoke access codes.
    #[command(subcommand)]
    Codes(CodesCommand),
    /// Inspect calls.
    #[command(subcommand)]
    Calls(CallsCommand),
    /// Overage billing without a server: settle ended calls and charge what is due.
    #[command(subcommand)]
    Billing(BillingCommand),
    /// Check the ledger: the store reconciled with Stripe and with itself.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// The prompts in the agent's voice (ElevenLabs text-to-speech into AUDIO_DIR).
    #[command(subcommand)]
    Prompts(PromptsCommand),
    /// Import the old deployment's orders (with their access codes) into this store.
    Import {
        /// The old MongoDB, e.g. mongodb+srv://user:pass@cluster/DATABASE.
        #[arg(
            long,
            conflicts_with = "from_file",
            required_unless_present = "from_file"
        )]
        from_mongodb: Option<String>,
        /// Collection holding the orders (with --from-mongodb).
        #[arg(long, default_value = "orders")]
        collection: String,
        /// A `mongoexport` file instead (JSON lines, or --jsonArray).
        #[arg(long)]
        from_file: Option<std::path::PathBuf>,
        /// JSON file naming the source fields for each callgate field (see README).
        #[arg(long)]
        mapping: Option<std::path::PathBuf>,
        /// Show what would be imported; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep codes shorter than ACCESS_CODE_DIGITS instead of issuing new ones. Short codes
        /// are easier to guess: keep them only for a cut-over, and reissue soon.
        #[arg(long)]
        keep_short_codes: bool,
        /// Where the codes issued in place of short ones are written (CSV, readable by you
        /// only; never an existing file). Default: callgate-reissued-codes-UNIXTIME.csv.
        #[arg(long)]
        reissued_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum PromptsCommand {
    /// Speak every prompt (and the numbers 0 to 99) with ElevenLabs text-to-speech, in
    /// ELEVENLABS_VOICE_ID or the agent's own voice: `<name>.mp3` and a μ-law `<name>.wav`
    /// in AUDIO_DIR. Prompts whose words did not change are skipped; files you recorded
    /// yourself are kept.
    Generate {
        /// Replace files recorded by hand too.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Args)]
pub struct Output {
    /// Print JSON for scripts instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CodesCommand {
    /// Create a paid order outside Stripe and print its new access code.
    Issue {
        /// Agent minutes included.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        minutes: i64,
        /// Let calls run past the allowance; overage is charged to --payment-method.
        #[arg(long)]
        overage: bool,
        /// Stripe customer to charge overage to (with --overage).
        #[arg(long, requires = "overage")]
        customer: Option<String>,
        /// Saved Stripe payment method to charge overage to (with --overage).
        #[arg(long, requires = "customer")]
        payment_method: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// List orders and their codes (last four digits only), newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        output: Output,
    },
    /// Revoke a code so it no longer opens a call.
    Revoke {
        /// The full access code.
        code: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Settle ended calls and process due charges once, then exit (for cron).
    Run {
        #[command(flatten)]
        output: Output,
    },
    /// List overage charges, newest first.
    List {
        /// Only charges in this state: pending, succeeded, declined, requires_action, failed, canceled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// List every mismatch between orders, calls, charges and Stripe's PaymentIntents; exits
    /// 1 when there is one (run it daily from cron).
    Check {
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum CallsCommand {
    /// List calls, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        output: Output,
    },
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// Parses the command line, runs the command and turns any error into one line and exit 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callgate: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callgate: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `prompts generate`: one line per prompt as it is done, then the counts.
async fn prompts_generate(config: &Config, force: bool, json: bool) -> Result<(), CliError> {
    use crate::recordings::{generate, Outcome};
    let outcomes = generate(config, force, |done, total, name, outcome| {
        if json {
            return;
        }
        let said = match outcome {
            Outcome::Written => "written".to_string(),
            Outcome::Unchanged => "unchanged".to_string(),
            Outcome::KeptRecording { file } => {
                format!("kept: {file} was recorded by hand (--force replaces it)")
            }
            Outcome::Failed { reason } => format!("FAILED: {reason}"),
        };
        println!("[{done}/{total}] {name}: {said}");
    })
    .await
    .map_err(|e| CliError::Input(e.to_string()))?;
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
    let failed = count(|o| matches!(o, Outcome::Failed { .. }));
    if json {
        print_json(&outcomes);
    } else {
        println!(
            "{} written, {} unchanged, {} recorded by hand kept, {failed} failed",
            count(|o| matches!(o, Outcome::Written)),
            count(|o| matches!(o, Outcome::Unchanged)),
            count(|o| matches!(o, Outcome::KeptRecording { .. })),
        );
    }
    if failed > 0 {
        return Err(CliError::Input(format!(
            "{failed} prompts failed; run it again to retry them"
        )));
    }
    Ok(())
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    #[cfg(feature = "demo")]
    if let Command::Demo {
        listen,
        database,
        minutes,
    } = cli.command
    {
        telemetry::init(if cli.log_json {
            LogFormat::Json
        } else {
            LogFormat::Text
        });
        let options = crate::demo::DemoOptions {
            listen,
            database,
            minutes,
            audio_dir: std::env::var("AUDIO_DIR")
                .unwrap_or_else(|_| "audio".into())
                .into(),
            bridge: crate::config::BridgeSettings::default(),
        };
        return crate::demo::run(options)
            .await
            .map_err(|e| CliError::Input(e.to_string()));
    }
    let mut config = Config::load().map_err(StartError::from)?;
    if cli.log_json {
        config.log_format = LogFormat::Json;
    }
    telemetry::init(config.log_format);
    match cli.command {
        Command::Serve { listen } => {
            if let Some(addr) = listen {
                config.listen = addr;
            }
            serve(config).await
        }
        Command::Migrate => {
            let app = App::build(config).await?;
            println!("database is up to date ({})", app.store.backend());
            Ok(())
        }
        Command::Codes(cmd) => codes(App::build(config).await?, cmd).await,
        #[cfg(feature = "demo")]
        Command::Demo { .. } => Ok(()),
        Command::Billing(cmd) => billing(App::build(config).await?, cmd).await,
        Command::Prompts(PromptsCommand::Generate { force, output }) => {
            prompts_generate(&config, force, output.json).await
        }
        Command::Ledger(LedgerCommand::Check { output }) => {
            let app = App::build(config).await?;
            let report = crate::billing::reconcile::check(&app)
                .await
                .map_err(|e| CliError::Input(format!("ledger check: {e}")))?;
            if output.json {
                print_json(&report);
            } else {
                let stripe = match report.payment_intents {
                    Some(n) => format!("{n} PaymentIntents"),
                    None => "Stripe not configured: money not checked".into(),
                };
                println!(
                    "read {} orders, {} calls, {} charges, {stripe}",
                    report.orders, report.calls, report.charges
                );
                for m in &report.mismatches {
                    println!("  {}", serde_json::to_string(m).unwrap_or_default());
                }
                println!("{} mismatches", report.mismatches.len());
            }
            if report.mismatches.is_empty() {
                Ok(())
            } else {
                Err(CliError::Input(format!(
                    "the ledger has {} mismatches",
                    report.mismatches.len()
                )))
            }
        }
        Command::Import {
            from_mongodb,
            collection,
            from_file,
            mapping,
            dry_run,
            keep_short_codes,
            reissued_file,
            output,
        } => {
            let app = App::build(config).await?;
            let mapping = match mapping {
                Some(path) => crate::import::load_mapping(&path)
                    .map_err(|e| CliError::Input(e.to_string()))?,
                None => crate::import::Mapping::default(),
            };
            let docs = match (from_mongodb, from_file) {
                (Some(uri), _) => crate::import::read_mongodb(&uri, &collection).await,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .map_err(|e| {
                        crate::import::ImportError::Source(format!("{}: {e}", path.display()))
                    })
                    .and_then(|text| crate::import::read_export(&text)),
                (None, None) => {
                    return Err(CliError::Input(
                        "give --from-mongodb URI or --from-file PATH".into(),
                    ))
                }
            }
            .map_err(|e| CliError::Input(e.to_string()))?;
            let bar = progress_bar(Some(docs.len() as u64), "importing", output.json);
            let options = crate::import::ImportOptions {
                dry_run,
                keep_short_codes,
                progress: bar.progress(),
            };
            // Decided before anything is written, so a taken file name stops the import early.
            let reissued_file = reissued_file.unwrap_or_else(|| {
                format!("callgate-reissued-codes-{}.csv", app.clock.now()).into()
            });
            if !dry_run && reissued_file.exists() {
                return Err(CliError::Input(format!(
                    "{} exists; name another file with --reissued-file",
                    reissued_file.display()
                )));
            }
            let report = crate::import::run(&app, &docs, &mapping, options)
                .await
                .map_err(|e| CliError::Input(e.to_string()))?;
            bar.finish();
            if !report.reissued.is_empty() {
                crate::import::write_reissued(&reissued_file, &report.reissued).map_err(|e| {
                    CliError::Input(format!(
                        "{}: {e} (the orders were imported with new codes; rerun is safe but \
                         those codes are lost: revoke and reissue them with `callgate codes`)",
                        reissued_file.display()
                    ))
                })?;
                eprintln!(
                    "{} codes were shorter than ACCESS_CODE_DIGITS and were replaced; the new codes \
                     are in {} (readable by you only): give them to their customers",
                    report.reissued.len(),
                    reissued_file.display()
                );
            }
            if report.kept_short > 0 {
                eprintln!(
                    "warning: kept {} codes shorter than ACCESS_CODE_DIGITS (--keep-short-codes); \
                     they are easier to guess: reissue them soon",
                    report.kept_short
                );
            }
            if output.json {
                print_json(&report);
            } else {
                let verb = if dry_run { "would import" } else { "imported" };
                println!(
                    "read {}, {verb} {}, already present {}, skipped {}",
                    report.read, report.imported, report.already_present, report.skipped
                );
                for (why, n) in &report.reasons {
                    println!("  skipped {n}: {why}");
                }
                for s in &report.sample {
                    println!("  e.g. {s}");
                }
            }
            Ok(())
        }
        Command::Calls(CallsCommand::List { limit, output }) => {
            let app = App::build(config).await?;
            let calls = app.store.list_calls(limit).await?;
            print_calls(&calls, output.json);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> Result<(), CliError> {
    // Bind first: a taken port should fail before anything else happens.
    let listener = crate::app::bind(config.listen).await?;
    for feature in config.disabled_features() {
        tracing::warn!("not configured, switched off: {feature}");
    }
    let database = config.database.describe();
    let app = Arc::new(App::build(config).await?);
    let addr = listener.local_addr().map_err(StartError::Serve)?;
    tracing::info!(%addr, %database, "callgate listening");
    crate::http::serve(app, listener, crate::app::shutdown_signal()).await?;
    tracing::info!("callgate stopped");
    Ok(())
}

async fn codes(app: App, cmd: CodesCommand) -> Result<(), CliError> {
    match cmd {
        CodesCommand::Issue {
            minutes,
            overage,
            customer,
            payment_method,
            output,
        } => {
            let grant = OperatorGrant {
                minutes,
                overage,
                customer,
                payment_method,
            };
            let (order, code) = orders::issue_operator_code(&app, &grant).await?;
            if output.json {
                print_json(&serde_json::json!({
                    "code": code.expose(),
                    "order": order,
                }));
            } else {
                println!("access code: {}", code.grouped());
                println!("order:       {}", order.id);
                println!("minutes:     {minutes}");
                println!("overage:     {}", if overage { "allowed" } else { "no" });
                if overage && grant.payment_method.is_none() {
                    println!("note:        no payment method given, so overage will be recorded but cannot be charged");
                }
            }
            Ok(())
        }
        CodesCommand::List { limit, output } => {
            let orders = app.store.list_orders(limit).await?;
            print_orders(&orders, output.json);
            Ok(())
        }
        CodesCommand::Revoke { code, output } => {
            let code =
                AccessCode::parse(&code).map_err(|e| CliError::Input(format!("CODE: {e}")))?;
            let Some(order) = orders::find_by_code(&app, &code).await? else {
                return Err(CliError::Input("no order has that access code".into()));
            };
            let was = order.status;
            let order = orders::revoke(&app, &order).await?;
            if output.json {
                print_json(&order);
            } else if was == OrderStatus::Revoked {
                println!("order {} was already revoked", order.id);
            } else {
                println!("revoked order {} (code …{})", order.id, code.last4());
            }
            Ok(())
        }
    }
}

async fn billing(app: App, cmd: BillingCommand) -> Result<(), CliError> {
    match cmd {
        BillingCommand::Run { output } => {
            let owner = crate::store::new_id("cli");
            let bar = progress_bar(None, "settling and charging", output.json);
            let report = crate::billing::run_once_with(&app, &owner, &bar.progress()).await?;
            bar.finish();
            if output.json {
                print_json(&report);
            } else {
                println!("calls settled:    {}", report.settled);
                println!("charges attempted: {}", report.charged.len());
                for (id, state) in &report.charged {
                    println!("  {id}  {state}");
                }
            }
            Ok(())
        }
        BillingCommand::List {
            state,
            limit,
            output,
        } => {
            let state = state
                .map(|s| s.parse::<crate::store::ChargeState>())
                .transpose()
                .map_err(|_| CliError::Input("--state: one of pending, succeeded, declined, requires_action, failed, canceled".into()))?;
            let charges = app.store.list_charges(state, limit).await?;
            if output.json {
                print_json(&charges);
                return Ok(());
            }
            println!(
                "{:<24} {:<16} {:>9} {:>4} {:<24} {:<30} PAY LINK",
                "CHARGE", "STATE", "AMOUNT", "TRY", "ORDER", "LAST ERROR"
            );
            for c in charges {
                let currency = &c.currency;
                let link = match (&c.pay_token, c.state) {
                    (Some(t), crate::store::ChargeState::RequiresAction) => {
                        crate::http::pay::pay_url(&app, t)
                    }
                    _ => "-".into(),
                };
                println!(
                    "{:<24} {:<16} {:>9} {:>4} {:<24} {:<30} {link}",
                    c.id,
                    c.state,
                    currency.format(c.amount),
                    c.attempts,
                    c.order_id,
                    c.last_error.as_deref().unwrap_or("-"),
                );
            }
            Ok(())
        }
    }
}

fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("callgate: error: cannot print JSON: {e}"),
    }
}

fn time(t: Option<i64>) -> String {
    match t {
        Some(t) if t >= 0 => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t as u64),
        )
        .to_string(),
        _ => "-".into(),
    }
}

fn print_orders(orders: &[Order], json: bool) {
    if json {
        return print_json(orders);
    }
    println!(
        "{:<24} {:<8} {:<8} {:<6} {:>9} {:>9} {:>9} {:<7} {:<20}",
        "ORDER", "STATUS", "SOURCE", "CODE", "MIN", "USED", "LEFT", "OVERAGE", "CREATED"
    );
    for o in orders {
        println!(
            "{:<24} {:<8} {:<8} {:<6} {:>9} {:>9} {:>9} {:<7} {:<20}",
            o.id,
            o.status,
            o.source,
            o.code_last4
                .as_deref()
                .map(|l| format!("…{l}"))
                .unwrap_or_else(|| "-".into()),
            o.seconds_included.0 / 60,
            format!("{}:{:02}", o.seconds_used.0 / 60, o.seconds_used.0 % 60),
            format!("{}:{:02}", o.seconds_left().0 / 60, o.seconds_left().0 % 60),
            if o.overage_consent { "yes" } else { "no" },
            time(Some(o.created_at)),
        );
    }
}

fn print_calls(calls: &[Call], json: bool) {
    if json {
        return print_json(calls);
    }
    println!(
        "{:<36} {:<16} {:<8} {:<24} {:>8} {:<20}",
        "CALL", "FROM", "STATUS", "ORDER", "SECONDS", "STARTED"
    );
    for c in calls {
        println!(
            "{:<36} {:<16} {:<8} {:<24} {:>8} {:<20}",
            c.call_sid,
            c.from_number,
            c.status,
            c.order_id.as_deref().unwrap_or("-"),
            c.seconds_metered.0,
            time(Some(c.started_at)),
        );
    }
}

/// A progress bar on stderr (a counter when the length is unknown), with a rate and, when the
/// length is known, an estimate. Drawn only on a terminal; never in `--json` mode.
struct Bar(indicatif::ProgressBar);

fn progress_bar(len: Option<u64>, what: &str, json: bool) -> Bar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    if json {
        return Bar(ProgressBar::hidden());
    }
    let (bar, template) = match len {
        Some(n) => (
            ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            "{msg} [{bar:30}] {pos}/{len} ({per_sec}, about {eta} left)",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {msg}: {pos} done ({per_sec})",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    Bar(bar)
}

impl Bar {
    fn progress(&self) -> crate::app::Progress {
        let bar = self.0.clone();
        crate::app::Progress::new(move |n| bar.inc(n))
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
