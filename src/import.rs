//! `callgate import`: bring the old deployment's orders, with their access codes, into any
//! callgate store, so customers' codes keep working after the switch.
//!
//! The old schema is not fixed, so the field mapping is explicit: each callgate field names
//! the source fields to try, in order (dot paths into nested documents). The defaults cover
//! the usual spellings; `--mapping FILE` (JSON) replaces any of them. Imports are idempotent:
//! an order's id is derived from the source document's `_id`, so a second run finds it present.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::codes::AccessCode;
use crate::domain::money::{Cents, Seconds};
use crate::store::{NewOrder, OrderSource, StoreError};
use crate::App;

/// Source field names (tried in order) for each callgate field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Mapping {
    pub id: Vec<String>,
    pub access_code: Vec<String>,
    pub minutes: Vec<String>,
    pub minutes_used: Vec<String>,
    pub seconds_used: Vec<String>,
    pub overage: Vec<String>,
    pub payment_intent: Vec<String>,
    pub customer: Vec<String>,
    pub payment_method: Vec<String>,
    pub amount_cents: Vec<String>,
    pub currency: Vec<String>,
    pub created_at: Vec<String>,
    /// A source field whose value, if one of `revoked_values`, imports the order revoked.
    pub status: Vec<String>,
    pub revoked_values: Vec<String>,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            id: names(&["_id", "id"]),
            access_code: names(&["accessCode", "access_code", "code"]),
            minutes: names(&[
                "minutes",
                "minutesIncluded",
                "minutes_included",
                "plan.minutes",
            ]),
            minutes_used: names(&["minutesUsed", "minutes_used"]),
            seconds_used: names(&["secondsUsed", "seconds_used"]),
            overage: names(&[
                "acceptOverage",
                "overageAccepted",
                "overage_accepted",
                "overage",
            ]),
            payment_intent: names(&[
                "paymentIntentId",
                "payment_intent",
                "paymentIntent",
                "stripePaymentIntentId",
            ]),
            customer: names(&["customerId", "stripeCustomerId", "customer"]),
            payment_method: names(&["paymentMethodId", "stripePaymentMethodId", "payment_method"]),
            amount_cents: names(&["amount", "amountCents", "amount_cents"]),
            currency: names(&["currency"]),
            created_at: names(&["createdAt", "created_at", "created"]),
            status: names(&["status"]),
            revoked_values: names(&["revoked", "refunded", "disputed", "cancelled", "canceled"]),
        }
    }
}

/// What an import did (or, in a dry run, would do).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub read: usize,
    pub imported: usize,
    pub already_present: usize,
    pub skipped: usize,
    /// Why documents were skipped, with counts.
    pub reasons: BTreeMap<String, usize>,
    /// A few mapped records, codes shown by their last four digits.
    pub sample: Vec<Value>,
    /// Codes shorter than `ACCESS_CODE_DIGITS` replaced by new ones (`reissued`), or kept
    /// because `--keep-short-codes` said so (`kept_short`).
    pub reissued_count: usize,
    pub kept_short: usize,
    /// The new codes, for the operator's file only: never printed or logged.
    #[serde(skip)]
    pub reissued: Vec<Reissued>,
}

/// A short code the import replaced: what the operator must tell the customer.
#[derive(Debug)]
pub struct Reissued {
    pub source_id: String,
    pub order_id: String,
    pub old_last4: String,
    pub new_code: AccessCode,
}

/// Choices about the source's codes.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub dry_run: bool,
    /// Told of each document handled.
    pub progress: crate::app::Progress,
    /// Keep codes shorter than `ACCESS_CODE_DIGITS` (they are easier to guess).
    pub keep_short_codes: bool,
}

/// Writes the reissued codes as CSV to a new file only its owner can read (mode 0600): the
/// operator hands them to the customers. Refuses to overwrite a file.
pub fn write_reissued(path: &std::path::Path, codes: &[Reissued]) -> std::io::Result<()> {
    let mut text = String::from("source_id,order_id,old_code_last4,new_code\n");
    for r in codes {
        text.push_str(&format!(
            "{},{},{},{}\n",
            csv_field(&r.source_id),
            r.order_id,
            r.old_last4,
            r.new_code.expose()
        ));
    }
    crate::app::write_private(path, &text)
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the source: {0}")]
    Source(String),
    #[error("mapping file: {0}")]
    Mapping(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads a mapping file (JSON; fields left out keep their defaults).
pub fn load_mapping(path: &std::path::Path) -> Result<Mapping, ImportError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ImportError::Mapping(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ImportError::Mapping(format!("{}: {e}", path.display())))
}

/// Reads documents from a MongoDB collection, as relaxed extended JSON.
#[cfg(not(feature = "mongodb"))]
pub async fn read_mongodb(_uri: &str, _collection: &str) -> Result<Vec<Value>, ImportError> {
    Err(ImportError::Source(
        "this callgate was built without the mongodb feature: import from a mongoexport file"
            .into(),
    ))
}

/// Reads documents from a MongoDB collection, as relaxed extended JSON.
#[cfg(feature = "mongodb")]
pub async fn read_mongodb(uri: &str, collection: &str) -> Result<Vec<Value>, ImportError> {
    use futures_util::TryStreamExt;
    let options = mongodb::options::ClientOptions::parse(uri)
        .await
        .map_err(|e| ImportError::Source(e.to_string()))?;
    let db_name = options.default_database.clone().ok_or_else(|| {
        ImportError::Source("the URI names no database (mongodb://host/DATABASE)".into())
    })?;
    let client =
        mongodb::Client::with_options(options).map_err(|e| ImportError::Source(e.to_string()))?;
    let cursor = client
        .database(&db_name)
        .collection::<mongodb::bson::Document>(collection)
        .find(mongodb::bson::doc! {})
        .await
        .map_err(|e| ImportError::Source(e.to_string()))?;
    let docs: Vec<mongodb::bson::Document> = cursor
        .try_collect()
        .await
        .map_err(|e| ImportError::Source(e.to_string()))?;
    Ok(docs
        .into_iter()
        .map(|d| mongodb::bson::Bson::Document(d).into_relaxed_extjson())
        .collect())
}

/// Reads a `mongoexport` file: one JSON document per line, or a JSON array (`--jsonArray`).
pub fn read_export(text: &str) -> Result<Vec<Value>, ImportError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed)
            .map_err(|e| ImportError::Source(format!("not a JSON array: {e}")));
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| ImportError::Source(format!("line {}: {e}", i + 1)))
        })
        .collect()
}

/// The value at a dot path, unwrapping extended JSON (`{"$oid"}`, `{"$numberLong"}`, `{"$date"}`).
fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut v = doc;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    for key in [
        "$oid",
        "$numberLong",
        "$numberInt",
        "$numberDouble",
        "$date",
    ] {
        if let Some(inner) = v.get(key) {
            return Some(inner);
        }
    }
    (!v.is_null()).then_some(v)
}

fn first<'a>(doc: &'a Value, fields: &[String]) -> Option<&'a Value> {
    fields.iter().find_map(|f| lookup(doc, f))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f.round() as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn boolean(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "1"),
        Value::Number(n) => n.as_i64() == Some(1),
        _ => false,
    }
}

/// Unix seconds from a number (seconds or milliseconds) or an RFC 3339 date.
fn timestamp(v: &Value) -> Option<i64> {
    if let Some(n) = number(v) {
        return Some(if n > 100_000_000_000 { n / 1000 } else { n });
    }
    let s = v.as_str()?;
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z').split('.').next().unwrap_or(s))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
}

/// Imports (or with `dry_run`, only maps) the documents.
pub async fn run(
    app: &App,
    docs: &[Value],
    mapping: &Mapping,
    options: ImportOptions,
) -> Result<Report, ImportError> {
    let dry_run = options.dry_run;
    let digits = app.config.access_code_digits;
    let mut report = Report {
        read: docs.len(),
        ..Report::default()
    };
    let plan = app.config.plans.first();
    let skip = |report: &mut Report, why: &str| {
        report.skipped += 1;
        *report.reasons.entry(why.to_string()).or_default() += 1;
    };
    for doc in docs {
        options.progress.advance(1);
        let Some(source_id) = first(doc, &mapping.id).and_then(text) else {
            skip(&mut report, "no id");
            continue;
        };
        let Some(code) = first(doc, &mapping.access_code).and_then(text) else {
            skip(&mut report, "no access code");
            continue;
        };
        let Ok(old_code) = AccessCode::parse(&code) else {
            skip(&mut report, "access code is not 6 to 32 digits");
            continue;
        };
        // A short code is easier to guess than the codes callgate issues: replace it unless
        // the operator chose to keep it.
        let short = old_code.expose().len() < digits;
        let reissue = short && !options.keep_short_codes;
        let code = if reissue {
            AccessCode::generate(digits)
        } else {
            old_code.clone()
        };
        let tally = |report: &mut Report| {
            if reissue {
                report.reissued_count += 1;
            } else if short {
                report.kept_short += 1;
            }
        };
        let Some(minutes) = first(doc, &mapping.minutes)
            .and_then(number)
            .filter(|m| *m >= 0)
        else {
            skip(&mut report, "no minutes");
            continue;
        };
        let used = first(doc, &mapping.seconds_used)
            .and_then(number)
            .or_else(|| {
                first(doc, &mapping.minutes_used)
                    .and_then(number)
                    .map(|m| m * 60)
            })
            .unwrap_or(0)
            .max(0);
        let revoked = first(doc, &mapping.status).and_then(text).is_some_and(|s| {
            mapping
                .revoked_values
                .iter()
                .any(|r| r.eq_ignore_ascii_case(&s))
        });
        let id = format!("ord_imp_{}", &crate::crypto::sha256_hex(&source_id)[..20]);
        let order = NewOrder {
            id: id.clone(),
            source: OrderSource::Import,
            plan: format!("{} (imported)", plan.name),
            amount: Cents(
                first(doc, &mapping.amount_cents)
                    .and_then(number)
                    .unwrap_or(0),
            ),
            currency: first(doc, &mapping.currency)
                .and_then(text)
                .and_then(|c| crate::domain::money::Currency::parse(&c))
                .unwrap_or_else(|| plan.currency.clone()),
            seconds_included: Seconds::from_minutes(minutes),
            overage_consent: first(doc, &mapping.overage).is_some_and(boolean),
            overage_price: plan.overage_per_minute,
            stripe_payment_intent: first(doc, &mapping.payment_intent).and_then(text),
            stripe_customer: first(doc, &mapping.customer).and_then(text),
            stripe_payment_method: first(doc, &mapping.payment_method).and_then(text),
            client_secret_hash: None,
            code: Some(app.vault.store(&code)),
            now: first(doc, &mapping.created_at)
                .and_then(timestamp)
                .unwrap_or_else(|| app.clock.now()),
        };
        if report.sample.len() < 5 {
            report.sample.push(serde_json::json!({
                "source_id": source_id, "order_id": id, "code": format!("…{}", code.last4()),
                "minutes": minutes, "seconds_used": used, "overage": order.overage_consent,
                "customer": order.stripe_customer, "payment_method": order.stripe_payment_method,
                "revoked": revoked,
            }));
        }
        if dry_run {
            if app.store.order(&id).await?.is_some() {
                report.already_present += 1;
            } else {
                report.imported += 1;
                tally(&mut report);
            }
            continue;
        }
        match app.store.insert_order(&order).await {
            Ok(stored) => {
                tally(&mut report);
                if reissue {
                    report.reissued.push(Reissued {
                        source_id: source_id.clone(),
                        order_id: id.clone(),
                        old_last4: old_code.last4().to_string(),
                        new_code: code.clone(),
                    });
                }
                crate::orders::ledger::open(app, &stored).await?;
                crate::orders::ledger::prior_use(app, &stored, Seconds(used)).await?;
                if revoked {
                    app.store
                        .move_order(&id, crate::store::OrderStatus::Revoked, app.clock.now())
                        .await?;
                }
                report.imported += 1;
            }
            Err(StoreError::Conflict(_)) => {
                if app.store.order(&id).await?.is_some() {
                    report.already_present += 1;
                } else {
                    skip(
                        &mut report,
                        "access code or PaymentIntent already used by another order",
                    );
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}
