//! Readiness follows the database: 200 while it answers, 503 while it cannot be reached, 200
//! again once it is back.

mod support;

use support::proxy::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_an_unreachable_database() {
    let direct = support::pg_url();
    let target = {
        let opts: sqlx::postgres::PgConnectOptions = direct.parse().unwrap();
        format!("{}:{}", opts.get_host(), opts.get_port())
    };
    let proxy = Proxy::start(target).await;
    let proxied = proxy.addr.to_string();
    let Some(db) = support::postgres_via(|_| proxied).await else {
        return;
    };
    let app = support::app::spawn(db.store.clone(), &[]).await;
    let http = reqwest::Client::new();

    let ready = http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    proxy.cut();
    let down = http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(down.status(), 503);
    let body: serde_json::Value = down.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(
        http.get(app.url("/healthz")).send().await.unwrap().status(),
        200,
        "the process is still up"
    );

    proxy.restore();
    // The pool reconnects on the next request; poll briefly rather than sleep.
    let mut status = 0;
    for _ in 0..50 {
        status = http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(status, 200, "ready again once the database is back");
    db.cleanup().await;
}

/// Every response carries the security headers; pages carry a policy that admits Stripe.js
/// only; nothing opens CORS.
#[tokio::test]
async fn security_headers_and_closed_cors() {
    let db = support::sqlite().await;
    let app = support::app::spawn(db.store.clone(), &[]).await;
    let http = reqwest::Client::new();
    let page = http.get(app.url("/")).send().await.unwrap();
    let h = page.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self' https://js.stripe.com"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let api = http
        .get(app.url("/healthz"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
    assert!(
        api.headers().get("content-security-policy").is_none(),
        "JSON needs no page policy"
    );
    assert!(
        api.headers().get("access-control-allow-origin").is_none(),
        "CORS stays closed"
    );
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            app.url("/api/create-payment-intent"),
        )
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// The public API is rate limited per client; health checks and webhooks are not.
#[tokio::test]
async fn public_api_is_rate_limited_per_client() {
    let db = support::sqlite().await;
    let app = support::app::spawn(db.store.clone(), &[("API_REQUESTS_PER_MINUTE", "5")]).await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let resp = http
            .get(app.url("/api/order-details?payment_intent=pi_x&client_secret=s"))
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            let wait: u64 = resp.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [404, 404, 404, 404, 404, 429, 429, 429]);
    for _ in 0..10 {
        assert_eq!(
            http.get(app.url("/healthz")).send().await.unwrap().status(),
            200
        );
    }
}
