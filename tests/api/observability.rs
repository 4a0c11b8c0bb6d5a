//! What an operator's monitoring sees: `/metrics` (requests by route and status, latency
//! histograms, charges by state, Stripe and ElevenLabs errors) and request ids.

use std::collections::HashMap;

use crate::support::app::spawn;

/// The samples of a Prometheus text page, by series (name with labels).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

async fn scrape(app: &crate::support::app::TestApp) -> (String, HashMap<String, f64>) {
    let text = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let s = samples(&text);
    (text, s)
}

#[tokio::test]
async fn metrics_count_webhooks_by_route_and_status_with_latency() {
    let db = crate::support::sqlite().await;
    // Stripe configured at a closed port: a purchase attempt is a Stripe network error.
    let stripe_base = crate::support::CLOSED_URL;
    let app = spawn(
        db.store.clone(),
        &[
            ("STRIPE_SECRET_KEY", "sk_test_metrics"),
            ("STRIPE_PUBLISHABLE_KEY", "pk_test_metrics"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_metrics"),
            ("STRIPE_API_BASE", stripe_base),
        ],
    )
    .await;
    let mut caller = callgate_peers::twilio::Caller::new(
        crate::support::app::AUTH_TOKEN,
        crate::support::app::ACCOUNT_SID,
        "+15550009999",
        crate::support::app::PHONE,
    );
    caller.dial(&app.url("/voice/incoming")).await;
    let forged = reqwest::Client::new()
        .post(app.url("/voice/incoming"))
        .form(&[("CallSid", "CAforged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let (status, _) = app
        .checkout(
            "/api/create-payment-intent",
            serde_json::json!({ "overage_accepted": false }),
        )
        .await;
    assert!((500..600).contains(&status), "{status}");

    let (text, s) = scrape(&app).await;
    let ok = r#"callgate_http_requests_total{route="/voice/incoming",status="200"}"#;
    let refused = r#"callgate_http_requests_total{route="/voice/incoming",status="403"}"#;
    assert!(s.get(ok).copied().unwrap_or(0.0) >= 1.0, "{text}");
    assert!(s.get(refused).copied().unwrap_or(0.0) >= 1.0, "{text}");
    let inf = r#"callgate_http_request_duration_seconds_bucket{route="/voice/incoming",le="+Inf"}"#;
    let count = r#"callgate_http_request_duration_seconds_count{route="/voice/incoming"}"#;
    assert!(s[inf] >= 2.0 && s[inf] == s[count], "{text}");
    let le5 = r#"callgate_http_request_duration_seconds_bucket{route="/voice/incoming",le="5"}"#;
    assert!(s[le5] <= s[inf], "{text}");
    assert!(
        text.contains("# TYPE callgate_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        s[r#"callgate_stripe_errors_total{kind="network"}"#] >= 1.0,
        "{text}"
    );
    assert!(s.contains_key(r#"callgate_elevenlabs_errors_total{kind="connect"}"#));
    assert_eq!(s["callgate_store_up"], 1.0);
    assert_eq!(s[r#"callgate_charges{state="pending"}"#], 0.0, "{text}");
    assert_eq!(s["callgate_draining"], 0.0);
}

#[tokio::test]
async fn requests_carry_an_id_a_plain_given_one_is_kept() {
    let db = crate::support::sqlite().await;
    let app = spawn(db.store.clone(), &[]).await;
    let http = reqwest::Client::new();
    let made = http.get(app.url("/healthz")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "{id}");
    let other = http.get(app.url("/healthz")).send().await.unwrap();
    assert_ne!(other.headers()["x-request-id"].to_str().unwrap(), id);
    let given = http
        .get(app.url("/healthz"))
        .header("x-request-id", "lb-1234.abc_DEF")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "lb-1234.abc_DEF");
    let hostile = http
        .get(app.url("/healthz"))
        .header("x-request-id", "<script>alert(1)</script>")
        .send()
        .await
        .unwrap();
    let replaced = hostile.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(replaced.len(), 16, "{replaced}");
    // Unknown paths get an id too.
    let missing = http.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("x-request-id"));
}
