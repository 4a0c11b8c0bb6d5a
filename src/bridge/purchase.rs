//! What the call does around a top-up bought with its keys, and around its balance: the
//! purchase run beside the socket loop, what its outcome changes and says, and the watcher
//! that reads the order's balance again when it changes.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::allowance::Allowance;
use super::announce;
use super::keys::Keys;
use crate::config::Plan;
use crate::domain::money::Seconds;
use crate::domain::prompt::Prompt;
use crate::orders::top_up::{self, InCall};
use crate::store::Order;
use crate::write_behind::metering::LiveCall;
use crate::App;

/// Starts the call's `nth` purchase beside the socket loop; it finishes even if the call
/// ends first. When the bank wants the customer present, the top-up page's link goes where
/// the receipt went.
pub fn start(app: &Arc<App>, order_id: &str, call_sid: &str, nth: u32) -> JoinHandle<InCall> {
    let (app, order_id, call_sid) = (app.clone(), order_id.to_string(), call_sid.to_string());
    tokio::spawn(async move {
        let outcome = top_up::charge_in_call(&app, &order_id, &call_sid, nth).await;
        if let InCall::NeedsAuthentication { payment_intent } = &outcome {
            let key = payment_intent
                .clone()
                .unwrap_or_else(|| format!("{call_sid}:{nth}"));
            if let Err(e) = crate::notify::queue_top_up_link(&app, &order_id, &key).await {
                tracing::warn!(error = %e, "top-up link not queued");
            }
        }
        outcome
    })
}

/// What the caller hears and the agent is told of a purchase's outcome.
pub struct Told {
    pub prompt: Option<Prompt>,
    pub context: Option<String>,
}

/// Applies a purchase's outcome to the call: the keys may buy again unless the card was
/// refused, after which the call ends at its included time (its end after a success moves
/// when the balance watcher has read the order, which the ledger told).
pub fn outcome(
    outcome: InCall,
    allowance: &mut Allowance,
    keys: &mut Keys,
    order: &Order,
    pack: &Plan,
) -> Told {
    keys.bought(outcome.card_works());
    let (prompt, context) = match outcome {
        InCall::Added(Seconds(seconds)) => (
            Some(Prompt::TopUpAdded),
            Some(announce::top_up_added(
                order,
                pack,
                allowance.included_left() + seconds,
            )),
        ),
        InCall::Processing => (None, None),
        InCall::Declined => {
            allowance.end_at_included();
            (
                Some(Prompt::TopUpDeclined),
                Some(announce::top_up_failed(false)),
            )
        }
        InCall::NeedsAuthentication { .. } => {
            allowance.end_at_included();
            (
                Some(Prompt::TopUpConfirmOnline),
                Some(announce::top_up_failed(true)),
            )
        }
        InCall::Unavailable => (None, Some(announce::top_up_failed(false))),
    };
    Told { prompt, context }
}

/// Reads the order's included seconds for the call (its seconds included less those used
/// before the call began) when told it changed, or every `balance_recheck`; a new figure is
/// sent to the socket loop. Ends with the loop.
pub async fn watch_balance(
    app: Arc<App>,
    order_id: String,
    used_before: Seconds,
    live: Arc<LiveCall>,
    included: watch::Sender<i64>,
) {
    loop {
        tokio::select! {
            () = live.changed.notified() => {}
            () = tokio::time::sleep(app.bridge.balance_recheck) => {}
            () = included.closed() => return,
        }
        match app.store.order(&order_id).await {
            Ok(Some(order)) if order.status != crate::store::OrderStatus::Paid => {
                // Revoked (a refund, a dispute, the operator): the call stops.
                live.stop.notify_one();
                return;
            }
            Ok(Some(order)) => {
                let now = (order.seconds_included.0 - used_before.0).max(0);
                included.send_if_modified(|v| std::mem::replace(v, now) != now);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "the call's balance not read again"),
        }
    }
}
