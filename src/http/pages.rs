//! The customer's pages: the storefront (rendered with the configured plan), the success
//! page, and their assets, all embedded in the binary.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;
use crate::http::checkout::display_phone;
use crate::telephony::twilio::twiml::escape;

const INDEX: &str = include_str!("../../web/index.html");
const SUCCESS: &str = include_str!("../../web/success.html");
const PAY: &str = include_str!("../../web/pay.html");
const NOT_FOUND: &str = include_str!("../../web/404.html");
const FAVICON: &str = include_str!("../../web/assets/favicon.svg");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/assets/style.css"),
    ),
    (
        "storefront.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/assets/storefront.js"),
    ),
    (
        "success.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/assets/success.js"),
    ),
    (
        "phone.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/assets/phone.js"),
    ),
    (
        "pay.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/assets/pay.js"),
    ),
    (
        "find-code.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/assets/find-code.js"),
    ),
    (
        "find.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/assets/find.js"),
    ),
    (
        "top-up.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/assets/top-up.js"),
    ),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(storefront))
        .route("/index.html", get(storefront))
        .route("/success.html", get(success))
        .route("/assets/{name}", get(asset))
        .route("/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
}

/// The icon, for the pages' `<link rel="icon">` and for browsers that ask for
/// `/favicon.ico` on their own (Chromium and Firefox take an SVG there).
async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
        .into_response()
}

/// Any path nothing answers: a small page with a way back.
pub async fn not_found() -> Response {
    let mut resp = page(render(
        NOT_FOUND,
        &[("version", env!("CARGO_PKG_VERSION").to_string())],
    ));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

/// The 404 page's look with a 503, for a page whose store failed (logged as `what`).
pub async fn unavailable(what: &str, e: &crate::store::StoreError) -> Response {
    tracing::error!(error = %e, page = what, "store failed");
    let mut resp = not_found().await;
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp
}

/// The number to call as a `tel:` link, or the words "our number" when none is configured
/// (a link to an empty `tel:` dials nothing).
pub(super) fn call_link(number: Option<&str>) -> String {
    match number {
        Some(e164) => format!(
            "<a class=\"tel\" href=\"tel:{}\">{}</a>",
            escape(e164),
            escape(&display_phone(e164))
        ),
        None => "our number".into(),
    }
}

/// Fills `{{name}}` placeholders with HTML-escaped values.
pub fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), &escape(value));
    }
    out
}

/// A page behind a private link (the account, its top-ups): never cached, never named in a
/// `Referer`.
pub(super) fn private_page(html: String) -> Response {
    let mut resp = Html(html).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

pub(super) fn page(html: String) -> Response {
    let mut resp = Html(html).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn storefront(State(app): State<AppState>) -> Response {
    let plans = &app.config.plans;
    let plan = plans.first();
    let number = app.config.twilio.as_ref().map(|t| t.phone_number.clone());
    // Without Stripe the shop is closed: it says so, and loads nothing of Stripe's.
    let open = app.config.stripe.is_some();
    let hidden = |hide: bool| if hide { "hidden" } else { "" }.to_string();
    let several = plans.all().len() > 1;
    let title = if several {
        "Talk time".to_string()
    } else {
        plan.name.clone()
    };
    let html = render(
        INDEX,
        &[
            ("title", title),
            ("choices_hidden", hidden(!several)),
            ("price", plan.currency.format(plan.price)),
            ("minutes_phrase", minutes_phrase(plan.minutes_included)),
            (
                "overage_price",
                plan.currency.format(plan.overage_per_minute),
            ),
            ("publishable_key", publishable_key(&app)),
            (
                "stripe_js_url",
                if open {
                    app.config.stripe_js_url.to_string()
                } else {
                    String::new()
                },
            ),
            ("closed_hidden", hidden(open)),
            ("open_hidden", hidden(!open)),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
        ],
    );
    page(
        html.replacen("<!--plan-choices-->", &plan_choices(plans, "plan"), 1)
            .replacen("<!--call-link-->", &call_link(number.as_deref()), 1),
    )
}

/// The storefront's choice of plans (and the top-up page's of packs, as `field`): one radio
/// button each, the first chosen. Each carries its price and minutes for the page to show;
/// the server prices the order from the id alone.
pub(super) fn plan_choices(plans: &crate::config::Plans, field: &str) -> String {
    plans
        .all()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let price = p.currency.format(p.price);
            let minutes = minutes_phrase(p.minutes_included);
            format!(
                "<label class=\"plan\"><input type=\"radio\" name=\"{field}\" value=\"{id}\" \
                 data-price=\"{price}\" data-minutes=\"{minutes}\"{checked}>\
                 <span class=\"plan-name\">{name}</span>\
                 <span class=\"plan-terms\">{minutes} · {price}</span></label>",
                id = escape(&p.id),
                price = escape(&price),
                minutes = escape(&minutes),
                name = escape(&p.name),
                checked = if i == 0 { " checked" } else { "" },
            )
        })
        .collect::<Vec<_>>()
        .join("\n    ")
}

/// "1 minute", "10 minutes".
pub fn minutes_phrase(minutes: i64) -> String {
    if minutes == 1 {
        "1 minute".into()
    } else {
        format!("{minutes} minutes")
    }
}

/// Stripe's publishable key for Stripe.js, empty when payments are not configured.
pub(super) fn publishable_key(app: &crate::App) -> String {
    app.config
        .stripe
        .as_ref()
        .map(|s| s.publishable_key.clone())
        .unwrap_or_default()
}

/// The pay page for an overage charge's token (the token is checked by its JSON call).
pub fn pay_page(app: &crate::App, token: &str) -> Response {
    let publishable_key = publishable_key(app);
    page(render(
        PAY,
        &[
            ("publishable_key", publishable_key),
            ("stripe_js_url", app.config.stripe_js_url.to_string()),
            (
                "token",
                token
                    .chars()
                    .filter(|c| c.is_ascii_hexdigit())
                    .take(64)
                    .collect(),
            ),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
        ],
    ))
}

async fn success() -> Response {
    page(render(
        SUCCESS,
        &[("version", env!("CARGO_PKG_VERSION").to_string())],
    ))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => not_found().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every asset a page names is one this module serves.
    #[test]
    fn pages_reference_only_served_assets() {
        let top_up = include_str!("../../web/top-up.html");
        let account = include_str!("../../web/account.html");
        let find = include_str!("../../web/find.html");
        let find_code = include_str!("../../web/find-code.html");
        for page in [
            INDEX, SUCCESS, PAY, NOT_FOUND, top_up, account, find, find_code,
        ] {
            for part in page.split("/assets/").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| !matches!(c, '"' | '?'))
                    .collect();
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == name),
                    "{name} is referenced but not served"
                );
            }
        }
    }

    #[test]
    fn render_escapes_values() {
        let out = render("<p>{{x}}</p>{{x}}", &[("x", "<b>&".to_string())]);
        assert_eq!(out, "<p>&lt;b&gt;&amp;</p>&lt;b&gt;&amp;");
    }
}
