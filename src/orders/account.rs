//! The customer's account page: reached by a link signed for the order (unguessable, never
//! stored), it shows what the code has left, each call with its length and cost, and each
//! payment. The link is given with the code (the success page) and nowhere else.

use crate::store::{Call, Charge, Entry, Order, OrderStatus, StoreError};
use crate::App;

/// Calls shown, newest first.
const CALLS_SHOWN: i64 = 200;

/// What the account page shows.
#[derive(Debug, Clone)]
pub struct Account {
    pub order: Order,
    /// Newest first.
    pub calls: Vec<Call>,
    /// The overage charges, oldest first.
    pub charges: Vec<Charge>,
    /// The code's ledger entries (purchase, top-ups, grants, reversals), oldest first.
    pub entries: Vec<Entry>,
}

/// The path of an order's top-up page (the account link's token).
pub fn top_up_path(app: &App, order_id: &str) -> String {
    format!("/top-up/{order_id}/{}", app.vault.account_token(order_id))
}

/// The path of an order's account page.
pub fn path(app: &App, order_id: &str) -> String {
    format!("/account/{order_id}/{}", app.vault.account_token(order_id))
}

/// The order behind an account link (the account page's, the top-up page's): `None` for an
/// unknown order, a wrong token, and an order not paid (yet) alike, so a link tells nothing
/// it was not made for. A revoked order is returned: its page says so.
pub async fn order_for_link(
    app: &App,
    order_id: &str,
    token: &str,
) -> Result<Option<Order>, StoreError> {
    if order_id.len() > 100 || !app.vault.account_token_ok(order_id, token) {
        return Ok(None);
    }
    let order = app.store.order(order_id).await?;
    Ok(order.filter(|o| matches!(o.status, OrderStatus::Paid | OrderStatus::Revoked)))
}

/// The account behind a link (see [`order_for_link`]).
pub async fn open(app: &App, order_id: &str, token: &str) -> Result<Option<Account>, StoreError> {
    let Some(order) = order_for_link(app, order_id, token).await? else {
        return Ok(None);
    };
    let (calls, charges, entries) = tokio::try_join!(
        app.store.calls_for_order(order_id, CALLS_SHOWN),
        app.store.charges_for_order(order_id),
        app.store.entries_for_order(order_id),
    )?;
    Ok(Some(Account {
        order,
        calls,
        charges,
        entries,
    }))
}

/// What looking an account up by its typed code found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The account page's path (and the top-up page's).
    Account { account: String, top_up: String },
    /// No paid code is that: the same answer whatever the reason.
    Nothing,
    /// Too many wrong codes from this client, or from everyone, lately.
    Throttled,
}

/// The account of a code typed on the web by `client` (its address). Every wrong code counts
/// against the same limits as at the phone menu (the client's, and everyone's together), so
/// the web is no faster a way to guess than the phone.
pub async fn find_by_code(app: &App, typed: &str, client: &str) -> Result<Found, StoreError> {
    let caller = format!("web:{client}");
    let now = app.clock.now();
    let mine = app
        .attempts
        .failures(
            &app.store,
            crate::store::AttemptScope::Caller(&caller),
            now - 3600,
            app.config.voice.failures_per_caller_per_hour,
        )
        .await?;
    if super::code_entry_refused(app, mine).await? {
        return Ok(Found::Throttled);
    }
    let code = crate::domain::codes::AccessCode::parse(typed).ok();
    let order = match &code {
        Some(code) => super::find_by_code(app, code).await?,
        None => None,
    };
    let order = order.filter(|o| matches!(o.status, OrderStatus::Paid | OrderStatus::Revoked));
    let attempt = crate::store::CodeAttempt {
        caller,
        code_hash: code
            .as_ref()
            .map(|c| app.vault.fingerprint(c))
            .unwrap_or_default(),
        ok: order.is_some(),
        at: now,
    };
    app.attempts.record(&app.store, attempt).await?;
    Ok(match order {
        Some(o) => Found::Account {
            account: path(app, &o.id),
            top_up: top_up_path(app, &o.id),
        },
        None => Found::Nothing,
    })
}
