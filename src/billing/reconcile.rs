//! `callgate ledger check`: the store reconciled with Stripe, and with itself.
//!
//! Every mismatch is a line an operator acts on: money taken without minutes, minutes given
//! without money, an overage charge the store and Stripe disagree on, or an order whose
//! debited seconds differ from what its calls were settled at. The model-based ledger test
//! uses it as an oracle; operators run it daily (README).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::store::{
    Balance, Call, Charge, ChargeState, Entry, EntryKind, Order, OrderSource, OrderStatus,
    StoreError,
};
use crate::stripe::client::{PaymentIntent, StripeClient, StripeError};
use crate::stripe::intent::IntentStatus;
use crate::App;

/// Records read from the store at most, per kind.
const READ_LIMIT: i64 = 10_000_000;
/// PaymentIntents read from Stripe per page.
const PAGE: usize = 100;

use crate::stripe::client::{PaymentKind, KIND_KEY};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// A paid order whose PaymentIntent did not take its money.
    OrderWithoutPayment {
        order_id: String,
        payment_intent: Option<String>,
        why: String,
    },
    /// Money callgate took for a plan that no paid order stands for.
    PaymentWithoutOrder {
        payment_intent: String,
        amount: i64,
        currency: String,
        why: String,
    },
    /// An overage charge recorded as paid that Stripe does not confirm.
    ChargeWithoutPayment {
        charge_id: String,
        payment_intent: Option<String>,
        why: String,
    },
    /// An overage PaymentIntent that succeeded while its charge is not recorded as paid.
    PaymentWithoutCharge {
        payment_intent: String,
        charge_id: Option<String>,
        why: String,
    },
    /// An order's debited seconds differ from the seconds its calls were settled at (and,
    /// for an import, its usage before callgate).
    SecondsMismatch {
        order_id: String,
        debited: i64,
        settled_calls: i64,
    },
    /// An order's allowance differs from the sum of its ledger entries.
    CreditMismatch {
        order_id: String,
        included: i64,
        entries: i64,
    },
    /// A paid order without the entry for its purchase or issue.
    MissingOpening { order_id: String },
    /// A top-up PaymentIntent that succeeded while no entry credits it.
    PaymentWithoutCredit {
        payment_intent: String,
        amount: i64,
        currency: String,
    },
    /// A top-up entry whose PaymentIntent did not take its money.
    CreditWithoutPayment {
        entry_id: String,
        payment_intent: Option<String>,
        why: String,
    },
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub orders: usize,
    pub calls: usize,
    pub charges: usize,
    pub entries: usize,
    /// PaymentIntents read from Stripe (`None` without Stripe configured).
    pub payment_intents: Option<usize>,
    pub mismatches: Vec<Mismatch>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stripe(#[from] StripeError),
}

/// Reads the store (and Stripe, when configured) and lists every mismatch.
pub async fn check(app: &App) -> Result<Report, CheckError> {
    let orders = app.store.list_orders(READ_LIMIT).await?;
    let calls = app.store.list_calls(READ_LIMIT).await?;
    let charges = app.store.list_charges(None, READ_LIMIT).await?;
    let entries = app.store.list_entries(READ_LIMIT).await?;
    let mut report = Report {
        orders: orders.len(),
        calls: calls.len(),
        charges: charges.len(),
        entries: entries.len(),
        ..Report::default()
    };
    report
        .mismatches
        .extend(seconds_mismatches(&orders, &calls, &entries));
    if let Some(stripe) = &app.stripe {
        let intents = payment_intents(stripe, &orders, &charges, &entries).await?;
        report.payment_intents = Some(intents.len());
        report
            .mismatches
            .extend(money_mismatches(&orders, &charges, &intents));
        report
            .mismatches
            .extend(credit_mismatches(&entries, &intents));
    }
    Ok(report)
}

/// Top-up entries against Stripe: each credited top-up was paid for exactly, and each paid
/// top-up is credited.
pub fn credit_mismatches(
    entries: &[Entry],
    intents: &HashMap<String, PaymentIntent>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let top_ups: HashMap<&str, &Entry> = entries
        .iter()
        .filter(|e| e.kind == EntryKind::TopUp)
        .filter_map(|e| Some((e.stripe_payment_intent.as_deref()?, e)))
        .collect();
    for e in entries.iter().filter(|e| e.kind == EntryKind::TopUp) {
        let pi = e.stripe_payment_intent.as_deref();
        let why = payment_problem("top-up", pi, intents, e.amount.0, e.currency.code());
        if let Some(why) = why {
            out.push(Mismatch::CreditWithoutPayment {
                entry_id: e.id.clone(),
                payment_intent: pi.map(String::from),
                why,
            });
        }
    }
    let mut ids: Vec<&String> = intents.keys().collect();
    ids.sort();
    for id in ids {
        let pi = &intents[id];
        let top_up = pi.kind() == Some(PaymentKind::TopUp);
        if top_up && pi.status == IntentStatus::Succeeded && !top_ups.contains_key(id.as_str()) {
            out.push(Mismatch::PaymentWithoutCredit {
                payment_intent: id.clone(),
                amount: pi.amount,
                currency: pi.currency.clone(),
            });
        }
    }
    out
}

/// Each order's counters against its ledger: its allowance is the sum of its entries, its
/// debited seconds the seconds its calls were settled at (with an import's earlier usage);
/// a paid order has its opening entry. An order never paid has no entries.
pub fn seconds_mismatches(orders: &[Order], calls: &[Call], entries: &[Entry]) -> Vec<Mismatch> {
    let mut settled: HashMap<&str, Vec<i64>> = HashMap::new();
    for call in calls {
        if let (Some(order), Some(seconds)) = (&call.order_id, call.settled_seconds) {
            settled.entry(order.as_str()).or_default().push(seconds);
        }
    }
    let mut by_order: HashMap<&str, Vec<Entry>> = HashMap::new();
    for e in entries {
        by_order
            .entry(e.order_id.as_str())
            .or_default()
            .push(e.clone());
    }
    let mut out = Vec::new();
    for o in orders {
        let mine = by_order
            .get(o.id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let calls = settled.get(o.id.as_str()).cloned().unwrap_or_default();
        let settled_calls: i64 = calls.iter().sum();
        let balance = Balance::of(mine, calls);
        if balance.used != o.seconds_used.0 {
            out.push(Mismatch::SecondsMismatch {
                order_id: o.id.clone(),
                debited: o.seconds_used.0,
                settled_calls,
            });
        }
        if o.paid_at.is_none() {
            continue;
        }
        if !mine
            .iter()
            .any(|e| matches!(e.kind, EntryKind::Purchase | EntryKind::Issued))
        {
            out.push(Mismatch::MissingOpening {
                order_id: o.id.clone(),
            });
        } else if balance.credited != o.seconds_included.0 {
            out.push(Mismatch::CreditMismatch {
                order_id: o.id.clone(),
                included: o.seconds_included.0,
                entries: balance.credited,
            });
        }
    }
    out
}

/// Every PaymentIntent callgate created (by its metadata), and every one the store names.
async fn payment_intents(
    stripe: &StripeClient,
    orders: &[Order],
    charges: &[Charge],
    entries: &[Entry],
) -> Result<HashMap<String, PaymentIntent>, StripeError> {
    let mut found = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/payment_intents?limit={PAGE}");
        if let Some(id) = &after {
            path.push_str(&format!("&starting_after={id}"));
        }
        let page = stripe.get(&path).await?;
        let data = page
            .get("data")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default();
        for v in &data {
            let pi = PaymentIntent::from_json(v)?;
            if pi.metadata.contains_key(KIND_KEY) {
                found.insert(pi.id.clone(), pi);
            }
        }
        let more = page.get("has_more").and_then(|m| m.as_bool()) == Some(true);
        after = data
            .last()
            .and_then(|v| v.get("id"))
            .and_then(|id| id.as_str())
            .map(String::from);
        if !more || after.is_none() {
            break;
        }
    }
    // Those the store names but the listing did not carry (made before the metadata key).
    let named: HashSet<&str> = orders
        .iter()
        .filter(|o| o.status != OrderStatus::Pending)
        .filter_map(|o| o.stripe_payment_intent.as_deref())
        .chain(
            charges
                .iter()
                .filter_map(|c| c.stripe_payment_intent.as_deref()),
        )
        .chain(
            entries
                .iter()
                .filter(|e| e.kind == EntryKind::TopUp)
                .filter_map(|e| e.stripe_payment_intent.as_deref()),
        )
        .collect();
    for id in named {
        if found.contains_key(id) {
            continue;
        }
        match stripe.retrieve_payment_intent(id).await {
            Ok(pi) => {
                found.insert(pi.id.clone(), pi);
            }
            Err(StripeError::Api { status: 404, .. }) | Err(StripeError::Decode(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Why the PaymentIntent a `what` (order or charge) names did not take `amount` `currency`,
/// if it did not.
fn payment_problem(
    what: &str,
    pi_id: Option<&str>,
    intents: &HashMap<String, PaymentIntent>,
    amount: i64,
    currency: &str,
) -> Option<String> {
    let Some(id) = pi_id else {
        return Some(format!("the {what} names no PaymentIntent"));
    };
    let Some(pi) = intents.get(id) else {
        return Some("its PaymentIntent is not at Stripe".into());
    };
    if pi.status != IntentStatus::Succeeded {
        return Some(format!("its PaymentIntent is {}", pi.status));
    }
    if pi.amount != amount || !pi.currency.eq_ignore_ascii_case(currency) {
        return Some(format!(
            "Stripe took {} {} for a {what} of {amount} {currency}",
            pi.amount, pi.currency
        ));
    }
    None
}

/// The store's orders and charges against Stripe's PaymentIntents.
pub fn money_mismatches(
    orders: &[Order],
    charges: &[Charge],
    intents: &HashMap<String, PaymentIntent>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let succeeded = |pi: &PaymentIntent| pi.status == IntentStatus::Succeeded;
    let by_pi: HashMap<&str, &Order> = orders
        .iter()
        .filter_map(|o| Some((o.stripe_payment_intent.as_deref()?, o)))
        .collect();
    for order in orders {
        let sold = matches!(order.status, OrderStatus::Paid | OrderStatus::Revoked);
        if !sold || order.source != OrderSource::Stripe {
            continue;
        }
        let pi_id = order.stripe_payment_intent.clone();
        let why = payment_problem(
            "order",
            pi_id.as_deref(),
            intents,
            order.amount.0,
            order.currency.code(),
        );
        if let Some(why) = why {
            out.push(Mismatch::OrderWithoutPayment {
                order_id: order.id.clone(),
                payment_intent: pi_id,
                why,
            });
        }
    }
    let paid_charge = |c: &Charge| {
        matches!(
            c.state,
            ChargeState::Succeeded | ChargeState::Refunded | ChargeState::Disputed
        )
    };
    for charge in charges.iter().filter(|c| paid_charge(c)) {
        let pi_id = charge.stripe_payment_intent.clone();
        let why = payment_problem(
            "charge",
            pi_id.as_deref(),
            intents,
            charge.amount.0,
            charge.currency.code(),
        );
        if let Some(why) = why {
            out.push(Mismatch::ChargeWithoutPayment {
                charge_id: charge.id.clone(),
                payment_intent: pi_id,
                why,
            });
        }
    }
    let charge_by_id: HashMap<&str, &Charge> = charges.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut ids: Vec<&String> = intents.keys().collect();
    ids.sort();
    for id in ids {
        let pi = &intents[id];
        if !succeeded(pi) {
            continue;
        }
        match pi.kind() {
            Some(PaymentKind::Purchase) => {
                let why = match by_pi.get(id.as_str()) {
                    None => Some("no order names it".to_string()),
                    Some(o) if !matches!(o.status, OrderStatus::Paid | OrderStatus::Revoked) => {
                        Some(format!("its order is {}", o.status))
                    }
                    Some(_) => None,
                };
                if let Some(why) = why {
                    out.push(Mismatch::PaymentWithoutOrder {
                        payment_intent: id.clone(),
                        amount: pi.amount,
                        currency: pi.currency.clone(),
                        why,
                    });
                }
            }
            Some(PaymentKind::Overage) => {
                let charge_id = pi.metadata.get("charge_id").cloned();
                let charge = charge_id.as_deref().and_then(|c| charge_by_id.get(c));
                let why = match charge {
                    None => Some("no charge names it".to_string()),
                    Some(c) if !paid_charge(c) => Some(format!("its charge is {}", c.state)),
                    Some(c) if c.stripe_payment_intent.as_deref() != Some(id.as_str()) => {
                        Some("its charge names another PaymentIntent".to_string())
                    }
                    Some(_) => None,
                };
                if let Some(why) = why {
                    out.push(Mismatch::PaymentWithoutCharge {
                        payment_intent: id.clone(),
                        charge_id,
                        why,
                    });
                }
            }
            _ => {}
        }
    }
    out
}
