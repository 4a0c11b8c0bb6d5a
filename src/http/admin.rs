//! The operator's view at `/admin`: orders, calls with their transcripts, charges, revenue and
//! agent minutes per day, and the day-to-day actions (revoke a code, add minutes, retry a
//! refused charge), with CSV exports.
//!
//! Access is HTTP Basic with `ADMIN_PASSWORD` (any user name), compared in constant time.
//! Only wrong passwords count against a client address (10, then one a minute; the address
//! comes through `TRUSTED_PROXIES`). A browser that once logged in carries a signed device
//! cookie, and with it the right password always works, even from an address that is locked
//! out (OWASP's device cookies): an attacker can lock out only addresses, not the operator,
//! and guesses without the cookie stay throttled. Actions are POST
//! forms carrying a token derived from the password, so another site cannot make an
//! administrator's browser act (Basic credentials are sent along automatically).
//! Pages are rendered on the server without scripts; the charts are inline SVG.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

use super::client_ip::ClientIp;
use super::ratelimit::RateLimiter;
use super::AppState;
use crate::billing::retry::NoRetry;
use crate::crypto::{constant_time_eq, hmac_sha256, secrets_equal};
use crate::domain::money::Seconds;
use crate::store::{Call, Charge, ChargeState, Order, OrderStatus, StoreError};
use crate::telephony::twilio::twiml::escape;
use crate::App;

/// Rows shown per table, and read for the daily figures.
const ROWS: i64 = 200;
const DAYS_READ: i64 = 5000;

pub fn router(app: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin", get(dashboard))
        .route("/admin/orders", get(orders_page))
        .route("/admin/calls", get(calls_page))
        .route("/admin/calls/{sid}", get(call_page))
        .route("/admin/charges", get(charges_page))
        .route("/admin/export/{what}", get(export))
        .route("/admin/orders/{id}/revoke", post(revoke))
        .route("/admin/orders/{id}/minutes", post(add_minutes))
        .route("/admin/charges/{id}/retry", post(retry))
        .route_layer(axum::middleware::from_fn_with_state(
            (app.clone(), Arc::new(LoginGuard::default())),
            gate,
        ))
}

/// Failed logins per client: 10 at once, then one a minute.
pub struct LoginGuard(RateLimiter);

impl Default for LoginGuard {
    fn default() -> Self {
        LoginGuard(RateLimiter::with_burst(10, 1))
    }
}

/// Proof that the request carries the admin password.
#[derive(Clone)]
pub struct Admin {
    csrf: String,
}

pub enum Refusal {
    Off,
    Unauthorized,
    Locked(u64),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Off => StatusCode::NOT_FOUND.into_response(),
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Basic realm=\"callgate admin\", charset=\"UTF-8\"",
                )],
                "the admin password is required",
            )
                .into_response(),
            Refusal::Locked(wait) => super::ratelimit::too_many(
                wait,
                "too many wrong passwords from this address; try again later \
                 (a browser that has logged in before is not locked out)",
            ),
        }
    }
}

fn csrf_token(password: &str) -> String {
    hex::encode(hmac_sha256(password.as_bytes(), &[b"callgate-admin-csrf"]))
}

const DEVICE_COOKIE: &str = "cg_admin_device";
/// A device cookie is good for this long after the login that made it.
const DEVICE_SECS: i64 = 30 * 24 * 3600;

/// The signature of a device cookie's `expires.nonce`, keyed by the password (changing the
/// password forgets every device).
fn device_mac(password: &str, body: &str) -> String {
    let key = hmac_sha256(password.as_bytes(), &[b"callgate-admin-device"]);
    hex::encode(hmac_sha256(&key, &[body.as_bytes()]))
}

fn new_device_cookie(password: &str, now: i64, secure: bool) -> Option<HeaderValue> {
    let body = format!("{}.{:032x}", now + DEVICE_SECS, rand::random::<u128>());
    let mac = device_mac(password, &body);
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{DEVICE_COOKIE}={body}.{mac}; Path=/admin; Max-Age={DEVICE_SECS}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// Whether the request carries a device cookie this server signed and that has not expired.
fn has_device_cookie(headers: &axum::http::HeaderMap, password: &str, now: i64) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(DEVICE_COOKIE)?.strip_prefix('='))
        .any(|value| {
            let Some((body, mac)) = value.rsplit_once('.') else {
                return false;
            };
            let fresh = body
                .split_once('.')
                .and_then(|(expires, _)| expires.parse::<i64>().ok())
                .is_some_and(|expires| expires > now);
            fresh && constant_time_eq(mac.as_bytes(), device_mac(password, body).as_bytes())
        })
}

/// Middleware on every admin route: checks the password (and the lock-out), hands the
/// handler an [`Admin`], and gives a browser that logged in its device cookie.
async fn gate(
    State((app, logins)): State<(AppState, Arc<LoginGuard>)>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(password) = app.config.admin_password.as_ref() else {
        return Refusal::Off.into_response();
    };
    let ip = ClientIp::of(req.extensions());
    let now = app.clock.now();
    let known_device = has_device_cookie(req.headers(), password.expose(), now);
    let guard = &logins.0;
    if !known_device {
        if let Some(wait) = guard.wait(ip, Instant::now()) {
            return Refusal::Locked(wait).into_response();
        }
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, p)| p.to_string()));
    let Some(given) = given else {
        // No credentials yet: the browser asks for them. Not a wrong guess.
        return Refusal::Unauthorized.into_response();
    };
    if !secrets_equal(&given, password.expose()) {
        tracing::warn!(%ip, "wrong admin password");
        let _ = guard.check(ip, Instant::now());
        return Refusal::Unauthorized.into_response();
    }
    req.extensions_mut().insert(Admin {
        csrf: csrf_token(password.expose()),
    });
    let mut resp = next.run(req).await;
    if !known_device {
        let secure = app
            .config
            .base_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https");
        if let Some(cookie) = new_device_cookie(password.expose(), now, secure) {
            resp.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    resp
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _app: &AppState) -> Result<Admin, Refusal> {
        // Set by `gate`, which every admin route passes through.
        parts
            .extensions
            .get::<Admin>()
            .cloned()
            .ok_or(Refusal::Unauthorized)
    }
}

/// Why an admin page or action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Refused(String),
    #[error("the form is stale or came from another site; reload the page and try again")]
    Forged,
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::Store(e) => {
                tracing::error!(error = %e, "admin page failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::Refused(_) => StatusCode::CONFLICT,
            AdminError::Forged => StatusCode::FORBIDDEN,
        };
        (
            status,
            layout(
                "",
                "Problem",
                &format!("<p>{}</p>", escape(&self.to_string())),
            ),
        )
            .into_response()
    }
}

type Page = Result<Response, AdminError>;

/// The admin sections, for the navigation (the current one is marked).
const SECTIONS: &[(&str, &str)] = &[
    ("/admin", "Overview"),
    ("/admin/orders", "Orders"),
    ("/admin/calls", "Calls"),
    ("/admin/charges", "Charges"),
];

fn layout(section: &str, title: &str, body: &str) -> Html<String> {
    let mut nav = String::new();
    for (href, name) in SECTIONS {
        let current = if *href == section {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{name}</a>");
    }
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · callgate admin</title>\
         <link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"/assets/style.css?v={v}\"></head>\
         <body class=\"admin-page\"><main class=\"card wide admin\"><header class=\"admin-head\">\
         <p class=\"brand\">callgate admin</p><nav aria-label=\"Admin sections\">{nav}</nav></header>\
         <h1>{t}</h1>{body}</main></body></html>",
        t = escape(title),
        v = env!("CARGO_PKG_VERSION"),
    ))
}

fn html(page: Html<String>) -> Response {
    let mut resp = page.into_response();
    // Operator data: never cached by the browser or a proxy.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn when(t: i64) -> String {
    let (date, secs) = day_of(t);
    format!("{date} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

use crate::domain::clock::utc_date as day_of;

fn opt_when(t: Option<i64>) -> String {
    t.map(when).unwrap_or_default()
}

fn minutes(s: Seconds) -> String {
    format!("{}:{:02}", s.0 / 60, s.0 % 60)
}

fn money(app: &App, cents: i64) -> String {
    app.config
        .plan
        .currency
        .format(crate::domain::money::Cents(cents))
}

/// A bar chart of `(label, value)` as inline SVG: a value axis (zero, half, the top), a date
/// under every seventh bar, each day's value above its bar when it has one, and on hover.
fn bars(points: &[(String, f64)], unit: &str) -> String {
    let top = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let max = nice_ceiling(top);
    let (w, h, gap, left, above) = (24.0, 120.0, 4.0, 44.0, 14.0);
    let width = left + points.len() as f64 * (w + gap);
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" viewBox=\"0 0 {width} {}\" aria-label=\"{} per day, \
         last {} days, top of scale {} {}\">",
        h + above + 20.0,
        escape(unit),
        points.len(),
        fmt_value(max),
        escape(unit)
    );
    for frac in [0.0, 0.5, 1.0] {
        let y = above + h - frac * h;
        let _ = write!(
            svg,
            "<line class=\"axis\" x1=\"{left}\" x2=\"{width}\" y1=\"{y}\" y2=\"{y}\"></line>\
             <text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 4.0,
            y + 3.0,
            fmt_value(max * frac)
        );
    }
    for (i, (label, v)) in points.iter().enumerate() {
        let bh = (v / max * h).max(if *v > 0.0 { 1.0 } else { 0.0 });
        let x = left + i as f64 * (w + gap);
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"{w}\" height=\"{bh}\"><title>{} {v:.2} {}</title></rect>",
            above + h - bh,
            escape(label),
            escape(unit)
        );
        if *v > 0.0 {
            let _ = write!(
                svg,
                "<text class=\"value\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + w / 2.0,
                above + h - bh - 3.0,
                fmt_value(*v)
            );
        }
        if (i % 7 == 0 && i + 3 < points.len()) || i + 1 == points.len() {
            let _ = write!(
                svg,
                "<text x=\"{x}\" y=\"{}\">{}</text>",
                above + h + 15.0,
                escape(label.get(5..).unwrap_or(label))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The chart's top: 1, 2 or 5 times a power of ten, at least `v` (and at least 1).
fn nice_ceiling(v: f64) -> f64 {
    let mut step = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if m * step >= v {
                return m * step;
            }
        }
        step *= 10.0;
    }
}

/// A chart value: whole numbers plainly, others with one decimal.
fn fmt_value(v: f64) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

async fn dashboard(State(app): State<AppState>, _admin: Admin) -> Page {
    let now = app.clock.now();
    let orders = app.store.list_orders(DAYS_READ).await?;
    let calls = app.store.list_calls(DAYS_READ).await?;
    let charges = app
        .store
        .list_charges(Some(ChargeState::Succeeded), DAYS_READ)
        .await?;
    let days: Vec<String> = (0..30)
        .rev()
        .map(|back| day_of(now - back * 86_400).0)
        .collect();
    let mut revenue = vec![0i64; days.len()];
    let mut agent_secs = vec![0i64; days.len()];
    let slot = |t: i64| days.iter().position(|d| *d == day_of(t).0);
    for o in &orders {
        if let (Some(paid), OrderStatus::Paid) = (o.paid_at, o.status) {
            if let Some(i) = slot(paid) {
                revenue[i] += o.amount.0;
            }
        }
    }
    for c in &charges {
        if let Some(i) = slot(c.updated_at) {
            revenue[i] += c.amount.0;
        }
    }
    for c in &calls {
        if let Some(i) = slot(c.started_at) {
            agent_secs[i] += c.billable_seconds().0;
        }
    }
    let total_rev: i64 = revenue.iter().sum();
    let total_min: i64 = agent_secs.iter().sum::<i64>() / 60;
    let open = app
        .store
        .list_charges(Some(ChargeState::Declined), ROWS)
        .await?
        .len()
        + app
            .store
            .list_charges(Some(ChargeState::RequiresAction), ROWS)
            .await?
            .len()
        + app
            .store
            .list_charges(Some(ChargeState::Failed), ROWS)
            .await?
            .len();
    let live = calls.iter().filter(|c| c.ended_at.is_none()).count();
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
         <p class=\"hint\">Figures from the newest {DAYS_READ} orders, calls and charges. Times are UTC.</p>\
         <p>Export: <a href=\"/admin/export/orders.csv\">orders.csv</a> · \
         <a href=\"/admin/export/calls.csv\">calls.csv</a> · <a href=\"/admin/export/charges.csv\">charges.csv</a></p>",
        money(&app, total_rev),
        bars(&rev_points, app.config.plan.currency.code()),
        bars(&min_points, "min"),
    );
    Ok(html(layout("/admin", "Overview", &body)))
}

fn hidden(admin: &Admin) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        admin.csrf
    )
}

async fn orders_page(State(app): State<AppState>, admin: Admin) -> Page {
    let orders = app.store.list_orders(ROWS).await?;
    let mut rows = String::new();
    for o in &orders {
        let mut actions = String::new();
        if o.status == OrderStatus::Paid {
            let _ = write!(
                actions,
                "<form method=\"post\" action=\"/admin/orders/{id}/minutes\">{h}\
                 <label class=\"inline\">Minutes <input name=\"minutes\" type=\"number\" min=\"1\" max=\"600\" value=\"5\"></label>\
                 <button>Add minutes</button></form>\
                 <form method=\"post\" action=\"/admin/orders/{id}/revoke\">{h}<button class=\"danger\">Revoke code</button></form>",
                id = escape(&o.id),
                h = hidden(&admin)
            );
        }
        let _ = write!(
            rows,
            "<tr id=\"{}\"><td>{}</td><td><span class=\"badge {}\">{}</span></td><td>{}</td><td>…{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>",
            escape(&o.id),
            when(o.created_at),
            o.status,
            o.status,
            escape(&o.id),
            escape(o.code_last4.as_deref().unwrap_or("")),
            match o.status {
                OrderStatus::Paid | OrderStatus::Revoked => money(&app, o.amount.0),
                OrderStatus::Pending | OrderStatus::Failed =>
                    format!("{} <span class=\"hint\">not paid</span>", money(&app, o.amount.0)),
            },
            minutes(o.seconds_used),
            minutes(o.seconds_included),
            if o.overage_consent { "yes" } else { "no" },
            actions
        );
    }
    let body = format!(
        "<p><a href=\"/admin/export/orders.csv\">Download CSV</a></p><div class=\"scroll\"><table>\
         <tr><th>Created</th><th>Status</th><th>Order</th><th>Code</th><th>Amount</th><th>Used / included</th>\
         <th>Overage</th><th></th></tr>{rows}</table></div>"
    );
    Ok(html(layout("/admin/orders", "Orders", &body)))
}

async fn calls_page(State(app): State<AppState>, _admin: Admin) -> Page {
    let calls = app.store.list_calls(ROWS).await?;
    let mut rows = String::new();
    for c in &calls {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/admin/calls/{sid}\">{sid}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(c.started_at),
            escape(&c.from_number),
            order_link(c.order_id.as_deref()),
            minutes(c.billable_seconds()),
            c.status,
            ending(c),
            sid = escape(&c.call_sid),
        );
    }
    let body = format!(
        "<p><a href=\"/admin/export/calls.csv\">Download CSV</a></p><div class=\"scroll\"><table>\
         <tr><th>Call</th><th>Started</th><th>From</th><th>Order</th><th>Agent time</th><th>Status</th><th>Ended because</th></tr>\
         {rows}</table></div>"
    );
    Ok(html(layout("/admin/calls", "Calls", &body)))
}

async fn call_page(State(app): State<AppState>, _admin: Admin, Path(sid): Path<String>) -> Page {
    let call = app.store.call(&sid).await?.ok_or(AdminError::NotFound)?;
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
    let body = format!(
        "<dl><dt>From</dt><dd>{}</dd><dt>Order</dt><dd>{}</dd><dt>Started</dt><dd>{}</dd>\
         <dt>Ended</dt><dd>{}</dd><dt>Agent time</dt><dd>{}</dd><dt>Ended because</dt><dd>{}</dd>\
         <dt>Overage charge</dt><dd>{charged}</dd>\
         <dt>Conversation</dt><dd>{}</dd></dl><h2>Timeline</h2>{}\
         <h2>Transcript</h2><ol class=\"heard\" id=\"transcript\" tabindex=\"0\" aria-label=\"Transcript\">{said}</ol>",
        escape(&call.from_number),
        order_link(call.order_id.as_deref()),
        when(call.started_at),
        opt_when(call.ended_at),
        minutes(call.billable_seconds()),
        ending(&call),
        escape(call.conversation_id.as_deref().unwrap_or("")),
        timeline(&call, charge.as_ref(), app.bridge.warn_before_secs),
    );
    Ok(html(layout("/admin/calls", &format!("Call {sid}"), &body)))
}

/// A call's life as a timeline: what is stored, and the warning and the start of overage
/// worked out from the allowance the call had (marked as worked out).
fn timeline(call: &Call, charge: Option<&Charge>, warn_before: i64) -> String {
    let mut events: Vec<(i64, String, &str)> = vec![(
        call.started_at,
        "Call arrived at the phone menu".into(),
        "start",
    )];
    let talked = call.billable_seconds().0;
    // Worked-out times fall inside the agent part (its metered seconds are wall seconds, but
    // a clock may drift a little from the bridge's).
    let inside = |at: i64| call.bridge_ended_at.map_or(at, |end| at.min(end));
    if let Some(bridged) = call.bridged_at {
        events.push((
            bridged,
            "Code accepted; connected to the agent".into(),
            "bridge",
        ));
        let overage = charge.map(|c| c.seconds_billed.0).unwrap_or(0);
        if overage > 0 {
            // Overage was allowed: no warning, the call ran on past the allowance.
            events.push((
                inside(bridged + talked - overage),
                format!(
                    "Included minutes used up; overage began, {} charged (worked out)",
                    minutes(Seconds(overage))
                ),
                "overage",
            ));
        } else if call.end_reason == Some(crate::domain::call::EndReason::TimeUp)
            && talked > warn_before
        {
            // Without overage the caller is warned this long before the allowance ends.
            events.push((
                inside(bridged + talked - warn_before),
                "One-minute warning played (worked out)".into(),
                "warn",
            ));
        }
    }
    if let Some(done) = call.bridge_ended_at {
        events.push((
            done,
            format!(
                "Agent part ended after {}: {}",
                minutes(Seconds(talked)),
                ending(call)
            ),
            "end",
        ));
    }
    if let Some(ended) = call.ended_at {
        let status = call.twilio_status.map(|s| s.as_str()).unwrap_or("reported");
        events.push((ended, format!("Twilio: call {status}"), "end"));
    }
    if let (Some(settled), Some(seconds)) = (call.settled_at, call.settled_seconds) {
        events.push((
            settled,
            format!(
                "Settled: {} taken from the allowance",
                minutes(Seconds(seconds))
            ),
            "settle",
        ));
    }
    events.sort_by_key(|(at, _, _)| *at);
    let mut out = String::from("<ol class=\"timeline\">");
    for (at, what, kind) in events {
        let (date, secs) = day_of(at);
        let _ = write!(
            out,
            "<li class=\"{kind}\"><time datetime=\"{}\">{date} {:02}:{:02}:{:02}</time> {}</li>",
            crate::domain::clock::iso8601(at),
            secs / 3600,
            secs % 3600 / 60,
            secs % 60,
            escape(&what)
        );
    }
    out.push_str("</ol>");
    out
}

/// A link to an order's row, or a dash for a call that never had one.
fn order_link(order_id: Option<&str>) -> String {
    match order_id {
        Some(id) => format!("<a href=\"/admin/orders#{id}\">{id}</a>", id = escape(id)),
        None => "<span class=\"hint\">none</span>".into(),
    }
}

/// Why a call ended, in the operator's words.
fn ending(call: &Call) -> String {
    use crate::domain::call::EndReason::*;
    let Some(reason) = call.end_reason else {
        return match call.status {
            crate::domain::call::CallState::Ended => "ended".into(),
            _ => "in progress".into(),
        };
    };
    let at_menu = call.bridged_at.is_none();
    match reason {
        CallerHungUp => "caller hung up",
        TimeUp => "minutes used up",
        AgentFailed => "agent unavailable",
        Shutdown => "server restarting",
        Revoked => "code revoked during the call",
        HoldLost => "lost its hold on the code",
        TwilioCompleted if at_menu && call.order_id.is_none() => {
            "hung up at the menu (no valid code)"
        }
        TwilioCompleted if at_menu => "hung up at the menu",
        TwilioCompleted => "call completed",
        TwilioBusy => "busy",
        TwilioFailed => "call failed to connect",
        TwilioNoAnswer => "no answer",
        TwilioCanceled => "caller hung up while ringing",
    }
    .into()
}

async fn charges_page(State(app): State<AppState>, admin: Admin) -> Page {
    let charges = app.store.list_charges(None, ROWS).await?;
    let mut rows = String::new();
    for c in &charges {
        let action = if c.state.retryable() {
            format!(
                "<form method=\"post\" action=\"/admin/charges/{}/retry\">{}<button>Retry</button></form>",
                escape(&c.id),
                hidden(&admin)
            )
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr id=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/admin/calls/{call}\">{call}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
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
        "<p><a href=\"/admin/export/charges.csv\">Download CSV</a></p>\
         <p class=\"hint\">Retry puts a refused charge back in the queue. After a decline it runs as a \
         new payment; after running out of tries it waits until Stripe has forgotten the last \
         attempt's key (24 h), so a payment that did go through is never made twice.</p>\
         <div class=\"scroll\"><table><tr><th>Created</th><th>Charge</th><th>Order</th><th>Call</th><th>Amount</th><th>State</th>\
         <th>Tries</th><th>Last error</th><th>PaymentIntent</th><th></th></tr>{rows}</table></div>"
    );
    Ok(html(layout("/admin/charges", "Overage charges", &body)))
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    minutes: Option<String>,
}

/// An admin action's form, its CSRF token checked against the admin's.
struct Action(ActionForm);

impl FromRequest<AppState> for Action {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, app: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let admin = Admin::from_request_parts(&mut parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let Form(form) =
            Form::<ActionForm>::from_request(axum::extract::Request::from_parts(parts, body), app)
                .await
                .map_err(IntoResponse::into_response)?;
        if constant_time_eq(admin.csrf.as_bytes(), form.csrf.as_bytes()) {
            Ok(Action(form))
        } else {
            Err(AdminError::Forged.into_response())
        }
    }
}

async fn revoke(State(app): State<AppState>, Path(id): Path<String>, _checked: Action) -> Page {
    let order = app.store.order(&id).await?.ok_or(AdminError::NotFound)?;
    crate::orders::revoke(&app, &order).await?;
    tracing::info!(order_id = %id, "admin revoked a code");
    Ok(Redirect::to(&format!("/admin/orders#{id}")).into_response())
}

async fn add_minutes(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Action(form): Action,
) -> Page {
    let minutes = form
        .minutes
        .as_deref()
        .and_then(|m| m.trim().parse::<i64>().ok())
        .filter(|m| (1..=600).contains(m))
        .ok_or_else(|| {
            AdminError::Refused("minutes must be a whole number from 1 to 600".into())
        })?;
    app.store
        .add_seconds_included(&id, Seconds::from_minutes(minutes), app.clock.now())
        .await?
        .ok_or(AdminError::NotFound)?;
    tracing::info!(order_id = %id, minutes, "admin added minutes");
    Ok(Redirect::to(&format!("/admin/orders#{id}")).into_response())
}

async fn retry(State(app): State<AppState>, Path(id): Path<String>, _checked: Action) -> Page {
    match crate::billing::retry::retry(&app, &id).await {
        Ok(_) => Ok(Redirect::to(&format!("/admin/charges#{id}")).into_response()),
        Err(NoRetry::NotFound) => Err(AdminError::NotFound),
        Err(NoRetry::Store(e)) => Err(e.into()),
        Err(NoRetry::TooSoon { failed_at, until }) => Err(AdminError::Refused(format!(
            "this charge ran out of tries at {} UTC; Stripe replays that answer for 24 hours, \
             so retry after {} UTC (or check the payment in the Stripe dashboard)",
            when(failed_at),
            when(until)
        ))),
        Err(refused) => Err(AdminError::Refused(refused.to_string())),
    }
}

/// One CSV field: quoted when needed; a leading `=`, `@`, or a sign not followed by digits
/// is defused so a spreadsheet does not run it as a formula.
fn field(v: &str) -> String {
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

fn csv_line(out: &mut String, fields: &[String]) {
    let line: Vec<String> = fields.iter().map(|f| field(f)).collect();
    out.push_str(&line.join(","));
    out.push_str("\r\n");
}

fn o<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// A time for the CSV files: ISO 8601 in UTC, empty when unset.
fn iso(t: Option<i64>) -> String {
    t.map(crate::domain::clock::iso8601).unwrap_or_default()
}

/// A CSV file: the header, then one line a record.
fn csv<T>(columns: &[&str], records: &[T], row: fn(&T) -> Vec<String>) -> String {
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

const ORDER_COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "status",
    "source",
    "plan",
    "amount_cents",
    "currency",
    "seconds_included",
    "seconds_used",
    "overage_consent",
    "code_last4",
    "stripe_payment_intent",
    "paid_at",
    "revoked_at",
];
const CALL_COLUMNS: &[&str] = &[
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
const CHARGE_COLUMNS: &[&str] = &[
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

async fn export(State(app): State<AppState>, _admin: Admin, Path(what): Path<String>) -> Page {
    let out = match what.as_str() {
        "orders.csv" => csv(
            ORDER_COLUMNS,
            &app.store.list_orders(DAYS_READ).await?,
            order_row,
        ),
        "calls.csv" => csv(
            CALL_COLUMNS,
            &app.store.list_calls(DAYS_READ).await?,
            call_row,
        ),
        "charges.csv" => csv(
            CHARGE_COLUMNS,
            &app.store.list_charges(None, DAYS_READ).await?,
            charge_row,
        ),
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

fn order_row(r: &Order) -> Vec<String> {
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
        r.overage_consent.to_string(),
        o(&r.code_last4),
        o(&r.stripe_payment_intent),
        iso(r.paid_at),
        iso(r.revoked_at),
    ]
}

fn call_row(r: &Call) -> Vec<String> {
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

fn charge_row(r: &Charge) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_days() {
        assert_eq!(day_of(0).0, "1970-01-01");
        assert_eq!(when(1_795_547_498), "2026-11-24 19:11");
        assert_eq!(day_of(951_782_400).0, "2000-02-29");
        assert_eq!(day_of(-1).0, "1969-12-31");
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("+15551234567"), "+15551234567");
        assert_eq!(field("+cmd"), "'+cmd");
        assert_eq!(field("-12.5"), "-12.5");
    }

    fn call(
        order: Option<&str>,
        bridged: bool,
        reason: Option<crate::domain::call::EndReason>,
    ) -> Call {
        Call {
            call_sid: "CA1".into(),
            order_id: order.map(String::from),
            from_number: "+15550001111".into(),
            to_number: "+15550002222".into(),
            status: crate::domain::call::CallState::Ended,
            started_at: 0,
            bridged_at: bridged.then_some(5),
            ended_at: Some(60),
            seconds_metered: Seconds(if bridged { 55 } else { 0 }),
            twilio_duration: Some(60),
            end_reason: reason,
            updated_at: 60,
            twilio_status: None,
            settled_at: None,
            bridge_ended_at: None,
            conversation_id: None,
            settled_seconds: None,
        }
    }

    #[test]
    fn a_call_s_end_reads_as_words() {
        use crate::domain::call::EndReason::*;
        assert_eq!(
            ending(&call(None, false, Some(TwilioCompleted))),
            "hung up at the menu (no valid code)"
        );
        assert_eq!(
            ending(&call(Some("ord_1"), true, Some(TwilioCompleted))),
            "call completed"
        );
        assert_eq!(
            ending(&call(Some("ord_1"), true, Some(TimeUp))),
            "minutes used up"
        );
        assert!(!ending(&call(None, false, Some(TwilioNoAnswer))).contains('_'));
    }

    #[test]
    fn charts_scale_to_the_largest_day() {
        let svg = bars(
            &[("2026-11-01".into(), 0.0), ("2026-11-02".into(), 10.0)],
            "usd",
        );
        assert!(svg.contains("height=\"120\""), "{svg}");
        assert!(svg.contains("height=\"0\""), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        // The axis names zero, half and the top; the day with a value shows it.
        for tick in [">0<", ">5<", ">10<"] {
            assert!(svg.contains(tick), "{tick}: {svg}");
        }
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(37.0), 50.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
    }
}
