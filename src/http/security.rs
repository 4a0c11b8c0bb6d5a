//! Security headers on every response, and a content security policy for the pages that lets
//! Stripe.js (and only it) run, frame and connect.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Config;

/// The pages' policy: our own scripts and styles, Stripe.js from its configured origin, and
/// the hosts Stripe documents for its Payment Element.
pub fn content_security_policy(config: &Config) -> String {
    let js = config.stripe_js_url.origin().ascii_serialization();
    let stripe_hosted = config.stripe_js_url.host_str() == Some("js.stripe.com");
    let (extra_script, extra_frame, extra_connect, extra_img) = if stripe_hosted {
        (
            " https://*.js.stripe.com",
            " https://*.js.stripe.com https://hooks.stripe.com",
            " https://api.stripe.com",
            " https://*.stripe.com",
        )
    } else {
        ("", "", "", "")
    };
    format!(
        "default-src 'self'; script-src 'self' {js}{extra_script}; frame-src {js}{extra_frame}; \
         connect-src 'self' {js}{extra_connect}; img-src 'self' data:{extra_img}; \
         style-src 'self' 'unsafe-inline'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

fn set(resp: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().entry(name).or_insert(v);
    }
}

/// Adds the headers; the policy goes on HTML responses only.
pub async fn headers(State(csp): State<std::sync::Arc<str>>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    set(&mut resp, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // The success page's address carries the PaymentIntent's client secret: never pass it on.
    set(&mut resp, header::REFERRER_POLICY, "no-referrer");
    set(&mut resp, header::X_FRAME_OPTIONS, "DENY");
    let html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    if html {
        set(&mut resp, header::CONTENT_SECURITY_POLICY, &csp);
    }
    resp
}
