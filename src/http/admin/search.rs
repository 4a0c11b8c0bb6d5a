//! One search box on every page: an order id, a call sid, a caller's number or a PaymentIntent
//! id, found across orders, calls and charges. Exact matches only, and never by access code:
//! typed digits are looked up as a number someone called from, not as a code.

use super::*;

/// Rows shown per kind of result.
const FOUND: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub(super) struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// The box, as every page's header carries it.
pub(super) fn search_box(q: &str) -> String {
    format!(
        "<form class=\"search\" role=\"search\" method=\"get\" action=\"/admin/search\">\
         <label for=\"q\">Find</label><input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" \
         maxlength=\"100\" placeholder=\"order, call, number or PaymentIntent\">\
         <button>Find</button></form>",
        escape(q)
    )
}

/// A number as callers' rows hold it (E.164): spaces, dashes, dots and brackets dropped, a
/// `+` added to bare digits.
fn as_number(q: &str) -> Option<String> {
    let kept: String = q
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = kept.strip_prefix('+').unwrap_or(&kept);
    (!digits.is_empty() && digits.len() <= 15 && digits.chars().all(|c| c.is_ascii_digit()))
        .then(|| format!("+{digits}"))
}

pub(super) async fn search(
    State(app): State<AppState>,
    _admin: Admin,
    Query(query): Query<SearchQuery>,
) -> Page {
    let q = query.q.trim();
    let q = q.get(..q.len().min(100)).unwrap_or(q);
    if q.is_empty() {
        let body = "<p class=\"hint\">Type an order id, a call sid, a caller's number or a \
                    PaymentIntent id.</p>";
        return Ok(html(layout_with("/admin/search", "Find", body, "")));
    }
    let number = as_number(q);
    let (order, paid_by, call, charge, charged_by, from) = tokio::try_join!(
        app.store.order(q),
        app.store.order_by_payment_intent(q),
        app.store.call(q),
        app.store.charge(q),
        app.store.charge_by_payment_intent(q),
        async {
            match &number {
                Some(n) => app.store.calls_from(n, FOUND).await,
                None => Ok(Vec::new()),
            }
        },
    )?;
    let mut orders: Vec<Order> = order.into_iter().chain(paid_by).collect();
    orders.dedup_by(|a, b| a.id == b.id);
    let mut calls: Vec<Call> = call.into_iter().chain(from).collect();
    calls.dedup_by(|a, b| a.call_sid == b.call_sid);
    let mut charges: Vec<Charge> = charge.into_iter().chain(charged_by).collect();
    charges.dedup_by(|a, b| a.id == b.id);

    let mut body = String::new();
    if orders.is_empty() && calls.is_empty() && charges.is_empty() {
        let _ = write!(
            body,
            "<p id=\"found\" role=\"status\">Nothing found for <strong>{}</strong>. Search takes a \
             whole id or number; access codes are never searched.</p>",
            escape(q)
        );
    } else {
        let _ = write!(
            body,
            "<p id=\"found\" role=\"status\">{} for <strong>{}</strong>.</p>",
            found(orders.len() + calls.len() + charges.len()),
            escape(q)
        );
    }
    if !orders.is_empty() {
        body.push_str("<h2>Orders</h2><ul class=\"found\">");
        for o in &orders {
            let _ = write!(
                body,
                "<li><a href=\"{href}\">{id}</a> <span class=\"badge {s}\">{s}</span> \
                 {} · {} used of {}, {} left · created {}</li>",
                money(&app, o.amount.0),
                minutes(o.seconds_used),
                minutes(o.seconds_included),
                minutes(o.seconds_left()),
                when(o.created_at),
                id = escape(&o.id),
                href = escape(&order_href(&o.id)),
                s = o.status,
            );
        }
        body.push_str("</ul>");
    }
    if !calls.is_empty() {
        body.push_str("<h2>Calls</h2><ul class=\"found\">");
        for c in &calls {
            let _ = write!(
                body,
                "<li><a href=\"/admin/calls/{sid}\">{sid}</a> from {} · {} · {}</li>",
                escape(&c.from_number),
                when(c.started_at),
                ending(c),
                sid = escape(&c.call_sid),
            );
        }
        body.push_str("</ul>");
    }
    if !charges.is_empty() {
        body.push_str("<h2>Charges</h2><ul class=\"found\">");
        for c in &charges {
            let _ = write!(
                body,
                "<li><a href=\"{href}#{id}\">{id}</a> {} {} · order {} · {}</li>",
                money(&app, c.amount.0),
                c.state,
                order_link(Some(&c.order_id)),
                escape(
                    c.stripe_payment_intent
                        .as_deref()
                        .unwrap_or("no PaymentIntent yet")
                ),
                id = escape(&c.id),
                href = escape(&order_href(&c.order_id)),
            );
        }
        body.push_str("</ul>");
    }
    Ok(html(layout_with("/admin/search", "Find", &body, q)))
}

fn found(n: usize) -> String {
    match n {
        1 => "1 result".into(),
        n => format!("{n} results"),
    }
}

#[cfg(test)]
mod tests {
    use super::as_number;

    #[test]
    fn numbers_are_read_as_callers_rows_hold_them() {
        assert_eq!(
            as_number("+1 555 010-0200").as_deref(),
            Some("+15550100200")
        );
        assert_eq!(as_number("(555) 010.0200").as_deref(), Some("+5550100200"));
        assert_eq!(as_number("ord_12"), None);
        assert_eq!(as_number("+"), None);
    }
}
