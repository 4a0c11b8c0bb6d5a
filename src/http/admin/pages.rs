//! The admin pages: the overview, orders, calls, one call, charges.

use super::*;

pub(super) async fn dashboard(State(app): State<AppState>, _admin: Admin) -> Page {
    let now = app.clock.now();
    let today = DayTotal::day_of(now);
    let first = today - 29;
    let since = first * 86_400;
    let (paid, charged, agent, live, charges, plans) = tokio::try_join!(
        app.store.paid_per_day(since),
        app.store.succeeded_per_day(since),
        app.store.agent_seconds_per_day(since),
        app.store.count_live_calls(),
        app.store.count_charges_by_state(),
        app.store.orders_by_plan(),
    )?;
    let days: Vec<String> = (first..=today).map(|d| day_of(d * 86_400).0).collect();
    let per_day = |totals: &[&[DayTotal]]| {
        let mut out = vec![0i64; days.len()];
        for t in totals.iter().flat_map(|t| t.iter()) {
            if let Some(slot) = out.get_mut((t.day - first) as usize) {
                *slot += t.total;
            }
        }
        out
    };
    let revenue = per_day(&[&paid, &charged]);
    let agent_secs = per_day(&[&agent]);
    let total_rev: i64 = revenue.iter().sum();
    let total_min: i64 = agent_secs.iter().sum::<i64>() / 60;
    let open: i64 = charges
        .iter()
        .filter(|(state, _)| state.retryable())
        .map(|(_, n)| n)
        .sum();
    let rev_points: Vec<(String, f64)> = days
        .iter()
        .cloned()
        .zip(revenue.iter().map(|c| *c as f64 / 100.0))
        .collect();
    let min_points: Vec<(String, f64)> = days
        .iter()
        .cloned()
        .zip(agent_secs.iter().map(|s| *s as f64 / 60.0))
        .collect();
    let body = format!(
        "<ul class=\"figures\"><li><strong id=\"revenue\">{}</strong> revenue, last 30 days</li>\
         <li><strong id=\"agent-minutes\">{total_min}</strong> agent minutes, last 30 days</li>\
         <li><strong>{live}</strong> calls in progress</li>\
         <li><strong id=\"open-charges\">{open}</strong> charges needing attention</li></ul>\
         <h2>Revenue per day</h2>{}<h2>Agent minutes per day</h2>{}\
         <p class=\"hint\">Times are UTC.</p><h2>Orders by plan</h2>{}\
         <p>Export: <a href=\"/admin/export/orders.csv\">orders.csv</a> · \
         <a href=\"/admin/export/calls.csv\">calls.csv</a> · <a href=\"/admin/export/charges.csv\">charges.csv</a> · \
         <a href=\"/admin/export/plans.csv\">plans.csv</a></p>",
        money(&app, total_rev),
        bars(&rev_points, app.config.plans.currency().code()),
        bars(&min_points, "min"),
        by_plan(&app, &plans),
    );
    Ok(html(layout("/admin", "Overview", &body)))
}

/// Each plan's orders: paid (still paid) and what they brought, and those revoked or never
/// paid. All time.
fn by_plan(app: &App, totals: &[crate::store::PlanTotal]) -> String {
    let mut rows: Vec<(&str, [i64; 3], i64)> = Vec::new();
    for t in totals {
        let at = match rows.iter().position(|(plan, _, _)| *plan == t.plan) {
            Some(at) => at,
            None => {
                rows.push((&t.plan, [0; 3], 0));
                rows.len() - 1
            }
        };
        let (_, counts, paid) = &mut rows[at];
        match t.status {
            OrderStatus::Paid => {
                counts[0] += t.orders;
                *paid += t.amount;
            }
            OrderStatus::Revoked => counts[1] += t.orders,
            OrderStatus::Pending | OrderStatus::Failed => counts[2] += t.orders,
        }
    }
    if rows.is_empty() {
        return "<p class=\"hint\">No orders yet.</p>".into();
    }
    let body: String = rows
        .iter()
        .map(|(plan, [paid, revoked, unpaid], amount)| {
            format!(
                "<tr><td>{}</td><td>{paid}</td><td>{}</td><td>{revoked}</td><td>{unpaid}</td></tr>",
                escape(plan),
                money(app, *amount),
            )
        })
        .collect();
    format!(
        "{}<table id=\"by-plan\"><thead><tr><th>Plan</th><th>Paid</th><th>Paid amount</th>\
         <th>Revoked</th><th>Unpaid</th></tr></thead><tbody>{body}</tbody></table></div>",
        scroll_frame("Orders by plan")
    )
}

/// A list's table, or a line saying nothing matched.
fn table_or_none(rows: &str, head: &str, what: &str) -> String {
    if rows.is_empty() {
        format!("<p class=\"hint\">No {what} match.</p>")
    } else {
        format!(
            "{}<table>{head}{rows}</table></div>",
            scroll_frame(&format!("The {what}"))
        )
    }
}

pub(super) async fn orders_page(
    State(app): State<AppState>,
    _admin: Admin,
    Query(q): Query<ListQuery>,
) -> Page {
    let (listing, problem) = page_for::<OrderStatus>(&q);
    let orders = app.store.page_orders(&listing).await?;
    let (orders, next) = split_page(orders, ROWS, order_key);
    let mut rows = String::new();
    for o in &orders {
        let _ = write!(
            rows,
            "<tr id=\"{id}\"><td class=\"when\">{}</td><td><span class=\"badge {}\">{}</span></td><td><a href=\"{}\">{id}</a></td><td class=\"when\">…{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>",
            when(o.created_at),
            o.status,
            o.status,
            escape(&order_href(&o.id)),
            escape(o.code_last4.as_deref().unwrap_or("")),
            match o.status {
                OrderStatus::Paid | OrderStatus::Revoked => money(&app, o.amount.0),
                OrderStatus::Pending | OrderStatus::Failed =>
                    format!("{} <span class=\"hint\">not paid</span>", money(&app, o.amount.0)),
            },
            minutes(o.seconds_used),
            minutes(o.seconds_included),
            minutes(o.seconds_left()),
            if o.overage_consent { "yes" } else { "no" },
            id = escape(&o.id),
        );
    }
    let body = format!(
        "<p class=\"hint\">Open an order to add minutes, revoke its code or refund it.</p>{}{}{}",
        q.form("/admin/orders", &spellings(OrderStatus::ALL, OrderStatus::as_str), problem.as_deref()),
        table_or_none(
            &rows,
            "<tr><th>Created</th><th>Status</th><th>Order</th><th>Code</th><th>Amount</th><th>Used / included</th>\
             <th>Left</th><th>Overage</th></tr>",
            "orders"
        ),
        q.pager("/admin/orders", "/admin/export/orders.csv", next.as_ref()),
    );
    Ok(html(layout("/admin/orders", "Orders", &body)))
}

pub(super) async fn calls_page(
    State(app): State<AppState>,
    _admin: Admin,
    Query(q): Query<ListQuery>,
) -> Page {
    let (listing, problem) = page_for::<crate::store::CallState>(&q);
    let calls = app.store.page_calls(&listing).await?;
    let (calls, next) = split_page(calls, ROWS, call_key);
    let mut rows = String::new();
    for c in &calls {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/admin/calls/{sid}\">{sid}</a></td><td class=\"when\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(c.started_at),
            escape(&c.from_number),
            order_link(call_order(c)),
            minutes(c.billable_seconds()),
            c.status,
            ending(c),
            sid = escape(&c.call_sid),
        );
    }
    use crate::store::CallState;
    let body = format!(
        "{}{}{}",
        q.form("/admin/calls", &spellings(CallState::ALL, CallState::as_str), problem.as_deref()),
        table_or_none(
            &rows,
            "<tr><th>Call</th><th>Started</th><th>From</th><th>Order</th><th>Agent time</th><th>Status</th><th>Ended because</th></tr>",
            "calls"
        ),
        q.pager("/admin/calls", "/admin/export/calls.csv", next.as_ref()),
    );
    Ok(html(layout("/admin/calls", "Calls", &body)))
}

pub(super) async fn call_page(
    State(app): State<AppState>,
    _admin: Admin,
    Path(sid): Path<String>,
    Query(done): Query<DoneQuery>,
) -> Page {
    let call = app.store.call(&sid).await?.ok_or(AdminError::NotFound)?;
    let audit = app.store.audit_about(&call.call_sid, 50).await?;
    let flash = done.outcome().map(|(_, said)| said).unwrap_or_default();
    let end = if call.status == crate::store::CallState::Ended {
        String::new()
    } else {
        format!(
            "<p><a class=\"action danger\" href=\"/admin/calls/{}/end\">End call…</a></p>",
            escape(&call.call_sid)
        )
    };
    let lines = app.store.transcript(&sid).await?;
    let mut said = String::new();
    for l in &lines {
        let _ = write!(
            said,
            "<li class=\"{}\"><span class=\"hint\">{}</span> <strong>{}</strong>: {}</li>",
            l.speaker,
            when(l.at),
            l.speaker,
            escape(&l.text)
        );
    }
    if said.is_empty() {
        said =
            "<li class=\"hint\">Nothing was said, or the call never reached the agent.</li>".into();
    }
    // A call's charge is among its order's (one per call), not a scan of every charge.
    let charge = match call.order_id.as_deref() {
        Some(order) => app
            .store
            .charges_for_order(order)
            .await?
            .into_iter()
            .find(|c| c.call_sid == call.call_sid),
        None => None,
    };
    let charged = match &charge {
        Some(c) => format!(
            "<a href=\"/admin/charges#{id}\">{} ({})</a>",
            money(&app, c.amount.0),
            c.state,
            id = escape(&c.id)
        ),
        None => "<span class=\"hint\">none</span>".into(),
    };
    // Seconds given back because the agent failed (their own ledger entry).
    let waiver_id = crate::domain::entry::Entry::waiver_id(&call.call_sid);
    let waived = match app.store.entry(&waiver_id).await? {
        Some(e) => format!(
            "<span id=\"waived\">{} given back: the agent failed</span>",
            minutes(e.seconds)
        ),
        None => "<span class=\"hint\">none</span>".into(),
    };
    // What the agent made of it (ElevenLabs' post-call webhook), when it came.
    let report = match app.store.report_for_call(&call.call_sid).await? {
        Some(r) => format!(
            "<section id=\"report\" aria-label=\"The agent's report\"><h2>The agent's report</h2>\
             <p id=\"summary\">{}</p><p>Outcome: <strong id=\"outcome\">{}</strong></p>\
             <details><summary>Analysis as sent</summary><pre class=\"wrap\">{}</pre></details></section>",
            escape(&r.summary),
            escape(r.outcome.as_deref().unwrap_or("not judged")),
            escape(&r.analysis)
        ),
        None => String::new(),
    };
    let body = format!(
        "{flash}{end}<dl><dt>From</dt><dd>{}</dd><dt>Order</dt><dd>{}</dd><dt>Started</dt><dd>{}</dd>\
         <dt>Ended</dt><dd>{}</dd><dt>Agent time</dt><dd>{}</dd><dt>Ended because</dt><dd>{}</dd>\
         <dt>Waived</dt><dd>{waived}</dd><dt>Overage charge</dt><dd>{charged}</dd>\
         <dt>Conversation</dt><dd>{}</dd></dl>{report}<h2>Timeline</h2>{}\
         <h2>Transcript</h2><ol class=\"heard\" id=\"transcript\" aria-label=\"Transcript\">{said}</ol>\
         <h2>What operators did</h2>{}",
        escape(&call.from_number),
        order_link(call_order(&call)),
        when(call.started_at),
        opt_when(call.ended_at),
        minutes(call.billable_seconds()),
        ending(&call),
        escape(call.conversation_id.as_deref().unwrap_or("")),
        timeline(&call, charge.as_ref(), app.bridge.warn_before_secs),
        audit_table(&audit, "call-audit"),
    );
    Ok(html(layout("/admin/calls", &format!("Call {sid}"), &body)))
}

pub(super) async fn charges_page(
    State(app): State<AppState>,
    admin: Admin,
    Query(q): Query<ListQuery>,
) -> Page {
    use crate::store::ChargeState;
    let (listing, problem) = page_for::<ChargeState>(&q);
    let charges = app.store.page_charges(&listing).await?;
    let (charges, next) = split_page(charges, ROWS, charge_key);
    let mut rows = String::new();
    for c in &charges {
        let action = charge_actions(c, &admin);
        let _ = write!(
            rows,
            "<tr id=\"{}\"><td class=\"when\">{}</td><td class=\"id\">{}</td><td>{}</td><td><a href=\"/admin/calls/{call}\">{call}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"id\">{}</td><td>{}</td></tr>",
            escape(&c.id),
            when(c.created_at),
            escape(&c.id),
            order_link(Some(&c.order_id)),
            money(&app, c.amount.0),
            c.state,
            c.attempts,
            escape(c.last_error.as_deref().unwrap_or("")),
            escape(c.stripe_payment_intent.as_deref().unwrap_or("")),
            action,
            call = escape(&c.call_sid),
        );
    }
    let body = format!(
        "<p class=\"hint\">Retry puts a refused charge back in the queue. After a decline it runs as a \
         new payment; after running out of tries it waits until Stripe has forgotten the last \
         attempt's key (24 h), so a payment that did go through is never made twice.</p>{}{}{}",
        q.form("/admin/charges", &spellings(ChargeState::ALL, ChargeState::as_str), problem.as_deref()),
        table_or_none(
            &rows,
            "<tr><th>Created</th><th>Charge</th><th>Order</th><th>Call</th><th>Amount</th><th>State</th>\
             <th>Tries</th><th>Last error</th><th>PaymentIntent</th><th>Actions</th></tr>",
            "charges"
        ),
        q.pager("/admin/charges", "/admin/export/charges.csv", next.as_ref()),
    );
    Ok(html(layout("/admin/charges", "Overage charges", &body)))
}

/// Marks the row an action just changed.
pub(super) fn changed(outcome: Option<&(&str, String)>, id: &str) -> &'static str {
    match outcome {
        Some((changed, _)) if *changed == id => " class=\"changed\"",
        _ => "",
    }
}
