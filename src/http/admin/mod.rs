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

use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

mod actions;
mod auth;
mod chart;
mod export;
mod listing;
mod messages;
mod order;
mod pages;
mod search;
mod timeline;

use actions::*;
use auth::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chart::*;
use export::*;
use listing::*;
use messages::*;
use order::*;
use pages::*;
use search::*;
use serde::Deserialize;
use timeline::*;

use super::client_ip::ClientIp;
use super::ratelimit::RateLimiter;
use super::AppState;
use crate::billing::retry::NoRetry;
use crate::crypto::{constant_time_eq, hmac_sha256, secrets_equal};
use crate::domain::money::Seconds;
use crate::store::{Call, Charge, DayTotal, Order, OrderStatus, StoreError};
use crate::telephony::twilio::twiml::escape;
use crate::App;

/// Rows shown per table.
const ROWS: i64 = 200;
/// Ledger entries an export reads at most (newest first).
const EXPORT_ROWS: i64 = 5000;

pub fn router(app: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin", get(dashboard))
        .route("/admin/orders", get(orders_page))
        .route("/admin/calls", get(calls_page))
        .route("/admin/calls/{sid}", get(call_page))
        .route(
            "/admin/calls/{sid}/end",
            get(confirm_end_call).post(end_call),
        )
        .route("/admin/charges", get(charges_page))
        .route("/admin/messages", get(messages_page))
        .route("/admin/search", get(search))
        .route("/admin/export/{what}", get(export))
        .route(
            "/admin/orders/{id}/revoke",
            get(confirm_revoke).post(revoke),
        )
        .route("/admin/orders/{id}/minutes", post(add_minutes))
        .route("/admin/orders/{id}/forget", post(forget_caller))
        .route("/admin/orders/{id}", get(order_page))
        .route(
            "/admin/orders/{id}/refund",
            get(confirm_refund_purchase).post(refund_purchase),
        )
        .route("/admin/charges/{id}/retry", post(retry))
        .route(
            "/admin/charges/{id}/refund",
            get(confirm_refund_charge).post(refund_charge),
        )
        .route("/admin/audit", get(audit_page))
        .route_layer(axum::middleware::from_fn_with_state(
            (app.clone(), Arc::new(LoginGuard::default())),
            gate,
        ))
}

/// Why an admin page or action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("not found: no order, call or charge has that id")]
    NotFound,
    #[error("{0}")]
    Refused(String),
    #[error("the form is stale or came from another site; reload the page and try again")]
    Forged,
    /// An outside service did not answer; what happened there is not known.
    #[error("{0}")]
    Unknown(String),
}

impl AdminError {
    /// The problem's page; with `back` (an address and its name), a link back there.
    pub(super) fn page(self, back: Option<(&str, &str)>) -> Response {
        let status = match &self {
            AdminError::Store(e) => {
                tracing::error!(error = %e, "admin page failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
            AdminError::NotFound => StatusCode::NOT_FOUND,
            AdminError::Refused(_) => StatusCode::CONFLICT,
            AdminError::Forged => StatusCode::FORBIDDEN,
            AdminError::Unknown(_) => StatusCode::BAD_GATEWAY,
        };
        let (href, name) = back.unwrap_or(("/admin", "the overview"));
        let back = format!(
            "<p><a href=\"{}\">Back to {}</a></p>",
            escape(href),
            escape(name)
        );
        let body = format!("<p role=\"alert\">{}</p>{back}", escape(&self.to_string()));
        html_with(status, layout("", "Problem", &body))
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        self.page(None)
    }
}

pub(super) type Page = Result<Response, AdminError>;

/// The admin sections, for the navigation (the current one is marked).
pub(super) const SECTIONS: &[(&str, &str)] = &[
    ("/admin", "Overview"),
    ("/admin/orders", "Orders"),
    ("/admin/calls", "Calls"),
    ("/admin/charges", "Charges"),
    ("/admin/messages", "Messages"),
    ("/admin/audit", "Audit"),
];

pub(super) fn layout(section: &str, title: &str, body: &str) -> Html<String> {
    layout_with(section, title, body, "")
}

/// [`layout`], with `q` in the search box.
pub(super) fn layout_with(section: &str, title: &str, body: &str, q: &str) -> Html<String> {
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
         <p class=\"brand\">callgate admin</p><nav aria-label=\"Admin sections\">{nav}</nav>{find}</header>\
         <h1>{t}</h1>{body}</main></body></html>",
        t = escape(title),
        find = search_box(q),
        v = env!("CARGO_PKG_VERSION"),
    ))
}

/// The opening of a table's frame, which scrolls sideways when the table is wider than the
/// page: focusable and named, so it can be scrolled from the keyboard.
pub(super) fn scroll_frame(label: &str) -> String {
    format!(
        "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"{}\">",
        escape(label)
    )
}

pub(super) fn html(page: Html<String>) -> Response {
    html_with(StatusCode::OK, page)
}

/// [`html`] with another status.
pub(super) fn html_with(status: StatusCode, page: Html<String>) -> Response {
    let mut resp = (status, page).into_response();
    // Operator data: never cached by the browser or a proxy.
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `YYYY-MM-DD HH:MM` in UTC.
pub(super) fn when(t: i64) -> String {
    let (date, secs) = day_of(t);
    format!("{date} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

use crate::domain::clock::utc_date as day_of;

pub(super) fn opt_when(t: Option<i64>) -> String {
    t.map(when).unwrap_or_default()
}

pub(super) fn minutes(s: Seconds) -> String {
    format!("{}:{:02}", s.0 / 60, s.0 % 60)
}

pub(super) fn money(app: &App, cents: i64) -> String {
    app.config
        .plans
        .currency()
        .format(crate::domain::money::Cents(cents))
}

pub(super) fn hidden(admin: &Admin) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        admin.csrf
    )
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
            refused: None,
            refused_order_id: None,
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
        let mut refused = call(None, false, Some(TwilioCompleted));
        refused.refused = Some(crate::domain::call::Refusal::InUse);
        refused.refused_order_id = Some("ord_9".into());
        assert_eq!(
            ending(&refused),
            "Code refused: in use on another call; the caller heard: \u{201c}This code is in use on another call. Please call again when that call has ended.\u{201d}"
        );
        assert_eq!(super::timeline::call_order(&refused), Some("ord_9"));
    }

    #[test]
    fn charts_scale_to_the_largest_day() {
        let svg = bars(
            &[("2026-11-01".into(), 0.0), ("2026-11-02".into(), 10.0)],
            "usd",
        );
        assert!(svg.contains("height=\"150\""), "{svg}");
        assert!(svg.contains("height=\"0\""), "{svg}");
        assert!(svg.starts_with("<div class=\"chart-frame\"") && svg.ends_with("</svg></div>"));
        // The axis names zero, half and the top with its unit; the day with a value shows it.
        for tick in [">0<", ">5<", ">10 usd<", ">10<"] {
            assert!(svg.contains(tick), "{tick}: {svg}");
        }
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(37.0), 50.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
    }
}
