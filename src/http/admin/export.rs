//! The lists as CSV, each cell quoted and defused against spreadsheet formulas.

use axum::body::Body;

use super::*;

/// One CSV field: quoted when needed; a leading `=`, `@`, or a sign not followed by digits
/// is defused so a spreadsheet does not run it as a formula.
pub(super) fn field(v: &str) -> String {
    let risky = v.starts_with(['=', '@', '\t', '\r'])
        || (v.starts_with(['+', '-']) && !v[1..].chars().all(|c| c.is_ascii_digit() || c == '.'));
    let v = if risky {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

pub(super) fn csv_line(out: &mut String, fields: &[String]) {
    let line: Vec<String> = fields.iter().map(|f| field(f)).collect();
    out.push_str(&line.join(","));
    out.push_str("\r\n");
}

pub(super) fn o<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// A time for the CSV files: ISO 8601 in UTC, empty when unset.
pub(super) fn iso(t: Option<i64>) -> String {
    t.map(crate::domain::clock::iso8601).unwrap_or_default()
}

/// A CSV file: the header, then one line a record.
pub(super) fn csv<T>(columns: &[&str], records: &[T], row: fn(&T) -> Vec<String>) -> String {
    let mut out = String::new();
    csv_line(
        &mut out,
        &columns.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
    );
    for r in records {
        csv_line(&mut out, &row(r));
    }
    out
}

pub(super) const ORDER_COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "status",
    "source",
    "plan",
    "amount_cents",
    "currency",
    "seconds_included",
    "seconds_used",
    "seconds_left",
    "overage_consent",
    "code_last4",
    "stripe_payment_intent",
    "paid_at",
    "revoked_at",
];
pub(super) const CALL_COLUMNS: &[&str] = &[
    "call_sid",
    "order_id",
    "from_number",
    "started_at",
    "bridged_at",
    "ended_at",
    "agent_seconds",
    "twilio_duration",
    "end_reason",
    "settled_seconds",
];
pub(super) const CHARGE_COLUMNS: &[&str] = &[
    "id",
    "order_id",
    "call_sid",
    "amount_cents",
    "currency",
    "seconds_billed",
    "state",
    "attempts",
    "stripe_payment_intent",
    "last_error",
    "created_at",
    "updated_at",
];

/// The ledger's entries (`EntryStore::list_entries`): every credit to a code and its reversals.
pub(super) const ENTRY_COLUMNS: &[&str] = &[
    "id",
    "order_id",
    "kind",
    "seconds",
    "amount_cents",
    "currency",
    "reverses",
    "stripe_payment_intent",
    "created_at",
];

pub(super) fn entry_row(e: &crate::store::Entry) -> Vec<String> {
    vec![
        e.id.clone(),
        e.order_id.clone(),
        e.kind.to_string(),
        e.seconds.0.to_string(),
        e.amount.0.to_string(),
        e.currency.code().to_string(),
        o(&e.reverses),
        o(&e.stripe_payment_intent),
        iso(Some(e.created_at)),
    ]
}

/// Orders counted by plan and state (`OrderStore::orders_by_plan`).
pub(super) const PLAN_COLUMNS: &[&str] = &["plan", "status", "orders", "amount_cents"];

pub(super) fn plan_row(r: &crate::store::PlanTotal) -> Vec<String> {
    vec![
        r.plan.clone(),
        r.status.to_string(),
        r.orders.to_string(),
        r.amount.to_string(),
    ]
}

/// Every row a list's filters match, as CSV (see [`csv_pages`]): the store's page method
/// for the list, its cursor and its row.
macro_rules! whole {
    ($app:expr, $filters:expr, $columns:expr, $page:ident, $key:expr, $row:expr) => {{
        let store = $app.store.clone();
        csv_pages(
            $columns,
            $filters.listing(0).map_err(AdminError::Refused)?,
            move |l| {
                let store = store.clone();
                async move { store.$page(&l).await }
            },
            $key,
            $row,
        )
    }};
}

/// A list as CSV: orders, calls and charges whole (every row the list's filters match, read
/// a page at a time); the plans' totals; the ledger's newest entries; the audit log.
pub(super) async fn export(
    State(app): State<AppState>,
    _admin: Admin,
    Path(what): Path<String>,
    Query(filters): Query<ListQuery>,
) -> Page {
    let out: Body = match what.as_str() {
        "orders.csv" => whole!(
            app,
            filters,
            ORDER_COLUMNS,
            page_orders,
            order_key,
            order_row
        ),
        "calls.csv" => whole!(app, filters, CALL_COLUMNS, page_calls, call_key, call_row),
        "charges.csv" => whole!(
            app,
            filters,
            CHARGE_COLUMNS,
            page_charges,
            charge_key,
            charge_row
        ),
        "audit.csv" => whole!(
            app,
            filters,
            AUDIT_COLUMNS,
            page_audit,
            audit_key,
            audit_row
        ),
        "plans.csv" => csv(PLAN_COLUMNS, &app.store.orders_by_plan().await?, plan_row).into(),
        "entries.csv" => csv(
            ENTRY_COLUMNS,
            &app.store.list_entries(EXPORT_ROWS).await?,
            entry_row,
        )
        .into(),
        _ => return Err(AdminError::NotFound),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"callgate-{what}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        out,
    )
        .into_response())
}

/// The audit log (`AuditStore`): every operator action.
pub(super) const AUDIT_COLUMNS: &[&str] = &[
    "id", "at", "actor", "action", "order_id", "subject", "detail", "result", "outcome",
];

pub(super) fn audit_row(e: &crate::store::AuditEntry) -> Vec<String> {
    vec![
        e.id.clone(),
        iso(Some(e.at)),
        e.actor.clone(),
        e.action.to_string(),
        o(&e.order_id),
        e.subject.clone(),
        e.detail.clone(),
        e.result.to_string(),
        e.outcome.clone(),
    ]
}

pub(super) fn order_row(r: &Order) -> Vec<String> {
    vec![
        r.id.clone(),
        iso(Some(r.created_at)),
        r.status.to_string(),
        r.source.to_string(),
        r.plan.clone(),
        r.amount.0.to_string(),
        r.currency.code().to_string(),
        r.seconds_included.0.to_string(),
        r.seconds_used.0.to_string(),
        r.seconds_left().0.to_string(),
        r.overage_consent.to_string(),
        o(&r.code_last4),
        o(&r.stripe_payment_intent),
        iso(r.paid_at),
        iso(r.revoked_at),
    ]
}

pub(super) fn call_row(r: &Call) -> Vec<String> {
    vec![
        r.call_sid.clone(),
        o(&r.order_id),
        r.from_number.clone(),
        iso(Some(r.started_at)),
        iso(r.bridged_at),
        iso(r.ended_at),
        r.billable_seconds().0.to_string(),
        o(&r.twilio_duration),
        o(&r.end_reason),
        o(&r.settled_seconds),
    ]
}

pub(super) fn charge_row(r: &Charge) -> Vec<String> {
    vec![
        r.id.clone(),
        r.order_id.clone(),
        r.call_sid.clone(),
        r.amount.0.to_string(),
        r.currency.code().to_string(),
        r.seconds_billed.0.to_string(),
        r.state.to_string(),
        r.attempts.to_string(),
        o(&r.stripe_payment_intent),
        o(&r.last_error),
        iso(Some(r.created_at)),
        iso(Some(r.updated_at)),
    ]
}
