//! A code's ledger entries, written from one place: its opening entry when it is paid or
//! issued, the operator's grants, an import's earlier usage, and the reversal of exactly the
//! entry a refunded or disputed payment paid for. Each entry is recorded once by its id
//! (`store::EntryStore`), so a replayed webhook or a repeated step changes nothing.

use crate::domain::entry::{Balance, Entry, EntryKind};
use crate::domain::money::Seconds;
use crate::store::{new_id, Order, Recorded, StoreError};
use crate::App;

/// Records `entry` once; when it is new, a live call of its order, on whichever instance,
/// reads its balance again (a top-up moves its end, a reversal may end it). Every entry is
/// recorded here.
pub async fn record(app: &App, entry: &Entry) -> Result<Recorded, StoreError> {
    let recorded = app.store.record_entry(entry).await?;
    if recorded == Recorded::Now {
        super::changed(app, &entry.order_id).await;
    }
    Ok(recorded)
}

/// Records the order's opening entry (its purchase or issue) unless it stands.
pub async fn open(app: &App, order: &Order) -> Result<(), StoreError> {
    if order.paid_at.is_none() {
        return Ok(());
    }
    let entries = app.store.entries_for_order(&order.id).await?;
    if entries
        .iter()
        .any(|e| matches!(e.kind, EntryKind::Purchase | EntryKind::Issued))
    {
        return Ok(());
    }
    record(app, &Entry::opening(order, &entries, app.clock.now()))
        .await
        .map(|_| ())
}

/// The operator's grant of `seconds` to an order; `None` if there is no such order.
pub async fn grant(
    app: &App,
    order_id: &str,
    seconds: Seconds,
) -> Result<Option<Order>, StoreError> {
    let Some(order) = app.store.order(order_id).await? else {
        return Ok(None);
    };
    let entry = Entry::grant(&order, &new_id("grant"), seconds, app.clock.now());
    match record(app, &entry).await? {
        Recorded::NoOrder => Ok(None),
        Recorded::Now | Recorded::Already => app.store.order(order_id).await,
    }
}

/// Gives back `seconds` of call `call_sid`, whose agent failed, to its order; once per call.
/// Recorded before the call is settled, so its debit and any overage count without them.
pub async fn waive(
    app: &App,
    order: &Order,
    call_sid: &str,
    seconds: Seconds,
) -> Result<(), StoreError> {
    if seconds.0 <= 0 {
        return Ok(());
    }
    let entry = Entry::waiver(order, call_sid, seconds, app.clock.now());
    record(app, &entry).await.map(|_| ())
}

/// Takes `seconds` the caller of `call_sid` spent with the operator from the included
/// minutes (`TRANSFER_METERED`); once per call, never beyond what is left.
pub async fn transfer_time(
    app: &App,
    order: &Order,
    call_sid: &str,
    seconds: Seconds,
) -> Result<(), StoreError> {
    let seconds = Seconds(seconds.0.min(order.seconds_left().0).max(0));
    if seconds.0 == 0 {
        return Ok(());
    }
    let entry = Entry::transfer(order, call_sid, seconds, app.clock.now());
    record(app, &entry).await.map(|_| ())
}

/// An imported code's usage before callgate.
pub async fn prior_use(app: &App, order: &Order, seconds: Seconds) -> Result<(), StoreError> {
    if seconds.0 <= 0 {
        return Ok(());
    }
    let entry = Entry::prior_use(order, seconds, app.clock.now());
    record(app, &entry).await.map(|_| ())
}

/// Takes back the entry `payment_intent` paid for (refunded, or `disputed`), once; the
/// reversal if there was such an entry.
pub async fn reverse_payment(
    app: &App,
    payment_intent: &str,
    disputed: bool,
) -> Result<Option<Entry>, StoreError> {
    let Some(paid) = app.store.entry_paid_by(payment_intent).await? else {
        return Ok(None);
    };
    let Ok(reversal) = paid.reversal(disputed, app.clock.now()) else {
        return Ok(None);
    };
    record(app, &reversal).await?;
    // A refund after a dispute (or the reverse) finds the first one's reversal.
    Ok(app.store.entry(&reversal.id).await?.or(Some(reversal)))
}

/// The order's balance from its entries and its settled calls.
pub async fn balance(app: &App, order_id: &str) -> Result<(Vec<Entry>, Balance), StoreError> {
    let entries = app.store.entries_for_order(order_id).await?;
    let calls = app.store.calls_for_order(order_id, i64::MAX).await?;
    let balance = Balance::of(&entries, calls.iter().filter_map(|c| c.settled_seconds));
    Ok((entries, balance))
}
