//! One order's page: where it stands, what can be done to it (add minutes, forget a number,
//! revoke, refund), its overage charges, its calls, its ledger, and what operators did to it;
//! and the audit log as a whole.

use super::*;
use crate::orders::refund;
use crate::store::{AuditEntry, AuditResult};

/// Audit entries shown on an order's or call's page.
const AUDIT_ROWS: i64 = 50;
/// Calls shown on an order's page.
const ORDER_CALLS: i64 = 50;

/// The address of order `id`'s page.
pub(super) fn order_href(id: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!("/admin/orders/{id}")
}

pub(super) async fn order_page(
    State(app): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    Query(done): Query<DoneQuery>,
) -> Page {
    let order = app.store.order(&id).await?.ok_or(AdminError::NotFound)?;
    let (charges, calls, entries, remembered, audit) = tokio::try_join!(
        app.store.charges_for_order(&id),
        app.store.calls_for_order(&id, ORDER_CALLS),
        app.store.entries_for_order(&id),
        app.store.remembered_callers(Some(&id)),
        app.store.audit_about(&id, AUDIT_ROWS),
    )?;
    let outcome = done.outcome();
    let flash = outcome
        .as_ref()
        .map(|(_, said)| said.clone())
        .unwrap_or_default();
    let oid = escape(&order.id);
    let h = hidden(&admin);

    let mut actions = String::new();
    for r in &remembered {
        let _ = write!(
            actions,
            "<form method=\"post\" action=\"/admin/orders/{oid}/forget\">{h}\
             <input type=\"hidden\" name=\"caller\" value=\"{caller}\">\
             <span class=\"remembered\">Remembers {caller}</span> <button>Forget number</button></form>",
            caller = escape(&r.caller),
        );
    }
    if order.status == OrderStatus::Paid {
        let _ = write!(
            actions,
            "<form method=\"post\" action=\"/admin/orders/{oid}/minutes\">{h}\
             <label class=\"inline\">Minutes <input name=\"minutes\" type=\"number\" min=\"1\" max=\"600\" value=\"5\"></label>\
             <button>Add minutes</button></form>\
             <a class=\"action danger\" href=\"/admin/orders/{oid}/revoke\">Revoke code…</a>"
        );
    }
    let refundable = refund::purchase_payment(&order)
        .is_ok_and(|pi| refund::reversal_of(&entries, pi).is_none());
    if refundable {
        let _ = write!(
            actions,
            " <a class=\"action danger\" href=\"/admin/orders/{oid}/refund\">Refund purchase…</a>"
        );
    }
    if actions.is_empty() {
        actions = "<p class=\"hint\">Nothing to do on this order.</p>".into();
    }

    let overage = match (order.overage_consent, order.overage_blocked) {
        (false, _) => "not accepted".to_string(),
        (true, None) => format!("accepted, {} a minute", money(&app, order.overage_price.0)),
        (true, Some(why)) => format!("accepted, suspended ({why})"),
    };
    let summary = format!(
        "<section id=\"{oid}\" class=\"summary{mark}\" aria-label=\"The order\"><dl>\
         <dt>Status</dt><dd><span class=\"badge {status}\">{status}</span></dd>\
         <dt>Plan</dt><dd>{plan}</dd><dt>Amount</dt><dd>{amount}</dd><dt>Source</dt><dd>{source}</dd>\
         <dt>Code</dt><dd>…{last4}</dd><dt>Minutes</dt><dd>{used} used of {included}, {left} left</dd>\
         <dt>Overage</dt><dd>{overage}</dd><dt>Created</dt><dd>{created}</dd><dt>Paid</dt><dd>{paid}</dd>\
         <dt>Revoked</dt><dd>{revoked}</dd><dt>PaymentIntent</dt><dd class=\"id\">{pi}</dd>\
         <dt>Live call</dt><dd>{live}</dd></dl><div class=\"actions\">{actions}</div></section>",
        mark = if outcome.as_ref().is_some_and(|(row, _)| *row == order.id) {
            " changed"
        } else {
            ""
        },
        status = order.status,
        plan = escape(&order.plan),
        amount = money(&app, order.amount.0),
        source = order.source,
        last4 = escape(order.code_last4.as_deref().unwrap_or("")),
        used = minutes(order.seconds_used),
        included = minutes(order.seconds_included),
        left = minutes(order.seconds_left()),
        created = when(order.created_at),
        paid = opt_when(order.paid_at),
        revoked = opt_when(order.revoked_at),
        pi = escape(order.stripe_payment_intent.as_deref().unwrap_or("")),
        live = match &order.active_call_sid {
            Some(sid) => format!("<a href=\"/admin/calls/{sid}\">{sid}</a>", sid = escape(sid)),
            None => "<span class=\"hint\">none</span>".into(),
        },
    );

    let mut charge_rows = String::new();
    for c in &charges {
        let act = charge_actions(c, &admin);
        let _ = write!(
            charge_rows,
            "<tr id=\"{id}\"{mark}><td class=\"when\">{}</td><td class=\"id\">{id}</td>\
             <td><a href=\"/admin/calls/{call}\">{call}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"id\">{}</td><td>{act}</td></tr>",
            when(c.created_at),
            money(&app, c.amount.0),
            c.state,
            escape(c.last_error.as_deref().unwrap_or("")),
            escape(c.stripe_payment_intent.as_deref().unwrap_or("")),
            id = escape(&c.id),
            call = escape(&c.call_sid),
            mark = changed(outcome.as_ref(), &c.id),
        );
    }
    let charges_table = if charges.is_empty() {
        "<p class=\"hint\">No overage charges.</p>".to_string()
    } else {
        format!(
            "{}<table id=\"order-charges\"><tr><th>Created</th><th>Charge</th><th>Call</th>\
             <th>Amount</th><th>State</th><th>Last error</th><th>PaymentIntent</th><th>Actions</th></tr>\
             {charge_rows}</table></div>",
            scroll_frame("Overage charges")
        )
    };

    let mut call_rows = String::new();
    for c in &calls {
        let _ = write!(
            call_rows,
            "<tr><td><a href=\"/admin/calls/{sid}\">{sid}</a></td><td class=\"when\">{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            when(c.started_at),
            escape(&c.from_number),
            minutes(c.billable_seconds()),
            ending(c),
            sid = escape(&c.call_sid),
        );
    }
    let calls_table = if calls.is_empty() {
        "<p class=\"hint\">No calls on this code yet.</p>".to_string()
    } else {
        format!(
            "{}<table id=\"order-calls\"><tr><th>Call</th><th>Started</th><th>From</th>\
             <th>Agent time</th><th>Ended because</th></tr>{call_rows}</table></div>",
            scroll_frame("Calls")
        )
    };

    let mut entry_rows = String::new();
    for e in &entries {
        let _ = write!(
            entry_rows,
            "<tr><td class=\"when\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"id\">{}</td></tr>",
            when(e.created_at),
            e.kind,
            minutes(e.seconds),
            money(&app, e.amount.0),
            escape(e.stripe_payment_intent.as_deref().unwrap_or("")),
        );
    }
    let ledger = if entries.is_empty() {
        "<p class=\"hint\">No ledger entries.</p>".to_string()
    } else {
        format!(
            "{}<table id=\"order-ledger\"><tr><th>When</th><th>Entry</th><th>Minutes</th>\
             <th>Amount</th><th>PaymentIntent</th></tr>{entry_rows}</table></div>",
            scroll_frame("Ledger")
        )
    };

    let body = format!(
        "{flash}{summary}<h2>Overage charges</h2>{charges_table}<h2>Calls</h2>{calls_table}\
         <h2>Ledger</h2>{ledger}<h2>What operators did</h2>{}",
        audit_table(&audit, "order-audit"),
    );
    Ok(html(layout(
        "/admin/orders",
        &format!("Order {}", order.id),
        &body,
    )))
}

/// A charge's actions, wherever it is listed: retry a refused one, refund a paid one.
pub(super) fn charge_actions(c: &crate::store::Charge, admin: &Admin) -> String {
    let mut act = String::new();
    if c.state.retryable() {
        let _ = write!(
            act,
            "<form method=\"post\" action=\"/admin/charges/{}/retry\">{}<button>Retry</button></form>",
            escape(&c.id),
            hidden(admin)
        );
    }
    if refund::charge_payment(c).is_ok() {
        let _ = write!(
            act,
            "<a class=\"action danger\" href=\"/admin/charges/{}/refund\">Refund…</a>",
            escape(&c.id)
        );
    }
    act
}

/// Audit entries as a table (newest first), or a line saying there are none.
pub(super) fn audit_table(entries: &[AuditEntry], id: &str) -> String {
    if entries.is_empty() {
        return "<p class=\"hint\">No operator actions recorded.</p>".into();
    }
    let mut rows = String::new();
    for e in entries {
        let _ = write!(
            rows,
            "<tr><td class=\"when\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"badge {result}\">{result}</span></td><td>{}</td></tr>",
            when(e.at),
            escape(&e.actor),
            e.action.as_str().replace('_', " "),
            escape(&e.detail),
            escape(&e.outcome),
            result = e.result,
        );
    }
    format!(
        "{}<table id=\"{id}\"><tr><th>When</th><th>Who</th><th>Action</th>\
         <th>Asked</th><th>Result</th><th>What came of it</th></tr>{rows}</table></div>",
        scroll_frame("Operator actions")
    )
}

/// The whole audit log, newest first, paged; filtered by result and days.
pub(super) async fn audit_page(
    State(app): State<AppState>,
    _admin: Admin,
    Query(q): Query<ListQuery>,
) -> Page {
    let (listing, problem) = page_for::<AuditResult>(&q);
    let entries = app.store.page_audit(&listing).await?;
    let (entries, next) = split_page(entries, ROWS, audit_key);
    let states = spellings(AuditResult::ALL, AuditResult::as_str);
    let body = format!(
        "<p class=\"hint\">Every action taken in this console: who (the admin device, from its \
         signed cookie), when (UTC), what was asked and what came of it.</p>{}{}{}",
        q.form("/admin/audit", &states, problem.as_deref()),
        audit_table(&entries, "audit"),
        q.pager("/admin/audit", "/admin/export/audit.csv", next.as_ref()),
    );
    Ok(html(layout("/admin/audit", "Audit log", &body)))
}
