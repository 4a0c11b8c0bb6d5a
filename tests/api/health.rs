//! Readiness follows the database: 200 while it answers, 503 while it cannot be reached, 200
//! again once it is back.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_an_unreachable_database() {
    let Some((db, proxy)) = crate::support::postgres_behind_proxy().await else {
        return;
    };
    let app = crate::support::app::spawn(db.store.clone(), &[]).await;
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
    let db = crate::support::sqlite().await;
    let app = crate::support::app::spawn(db.store.clone(), &[]).await;
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
    let db = crate::support::sqlite().await;
    let app =
        crate::support::app::spawn(db.store.clone(), &[("API_REQUESTS_PER_MINUTE", "5")]).await;
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

/// Issue 13, point 10: the old Netlify paths share the limit of the API routes they alias, so
/// alternating between them buys nothing; and the limit follows the client that
/// `TRUSTED_PROXIES` names, not the proxy's address (nor what an untrusted peer claims).
#[tokio::test]
async fn old_paths_share_the_api_limit_and_proxied_clients_have_their_own() {
    let db = crate::support::sqlite().await;
    let app = crate::support::app::spawn(
        db.store.clone(),
        &[
            ("API_REQUESTS_PER_MINUTE", "4"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let paths = [
        "/api/order-details?payment_intent=pi_x&client_secret=s",
        "/.netlify/functions/get-order-details?payment_intent=pi_x&client_secret=s",
        "/api/create-payment-intent",
        "/.netlify/functions/create-payment-intent",
    ];
    let hit = |path: &'static str, client: &'static str| {
        let req = if path.contains("create") {
            http.post(app.url(path)).json(&serde_json::json!({}))
        } else {
            http.get(app.url(path))
        };
        async move {
            req.header("x-forwarded-for", client)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut statuses = Vec::new();
    for path in paths.iter().chain(paths.iter()) {
        statuses.push(hit(path, "198.51.100.7").await);
    }
    assert!(
        statuses[..4].iter().all(|s| *s != 429) && statuses[4..].iter().all(|s| *s == 429),
        "one bucket for every alias: {statuses:?}"
    );
    assert_ne!(
        hit(paths[1], "203.0.113.5").await,
        429,
        "another client behind the proxy has its own bucket"
    );

    // Without trust, X-Forwarded-For is only a claim: every claim shares the peer's bucket.
    let untrusted = crate::support::app::spawn(
        db.store.clone(),
        &[
            ("API_REQUESTS_PER_MINUTE", "2"),
            ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = http
            .get(untrusted.url(paths[0]))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [404, 404, 429, 429]);
}

/// Raw HTTP/1.1 on a TCP socket, for the tests that misbehave on purpose.
async fn raw(app: &crate::support::app::TestApp) -> tokio::net::TcpStream {
    let addr = app.base.trim_start_matches("http://");
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// Reads until the server closes the connection (or `limit` passes); what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut got))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// Issue 13, point 11: a client that sends its headers too slowly (slowloris) is cut off at
/// HEADER_TIMEOUT_SECS; one that sends headers but drips its body gets 408 at
/// REQUEST_TIMEOUT_SECS. Before, a request held open 45 s was still answered.
#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let db = crate::support::sqlite().await;
    let app = crate::support::app::spawn(
        db.store.clone(),
        &[("HEADER_TIMEOUT_SECS", "1"), ("REQUEST_TIMEOUT_SECS", "1")],
    )
    .await;
    let started = std::time::Instant::now();
    let mut slow = raw(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut slow, Duration::from_secs(20))
        .await
        .expect("the server closes a connection whose headers never end");
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));

    let mut dripping = raw(&app).await;
    dripping
        .write_all(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\nConnection: close\r\n\r\n{\"id\":",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut dripping, Duration::from_secs(20))
        .await
        .expect("the server ends a request whose body never ends");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// Issue 13, point 11: at MAX_CONNECTIONS the server stops accepting; the next client waits
/// in the kernel's queue and is served as soon as a connection closes.
#[tokio::test]
async fn the_connection_cap_queues_new_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = crate::support::sqlite().await;
    let app = crate::support::app::spawn(db.store.clone(), &[("MAX_CONNECTIONS", "2")]).await;
    const GET: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut c = raw(&app).await;
        c.write_all(GET).await.unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        open.push(c);
    }
    let mut third = raw(&app).await;
    third.write_all(GET).await.unwrap();
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf))
            .await
            .is_err(),
        "not served while two connections are open"
    );
    drop(open.pop());
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// Issue 13, point 16: `/metrics` is not for everyone. Without METRICS_TOKEN only a client on
/// this machine that did not come through a proxy reads it; with one, the token is required.
#[tokio::test]
async fn metrics_need_a_token_or_a_local_client() {
    let db = crate::support::sqlite().await;
    let open = crate::support::app::spawn(db.store.clone(), &[]).await;
    let http = reqwest::Client::new();
    let status = |app: &crate::support::app::TestApp, xff: Option<&str>, token: Option<&str>| {
        let mut req = http.get(app.url("/metrics"));
        if let Some(x) = xff {
            req = req.header("x-forwarded-for", x);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&open, None, None).await, 200, "loopback, no proxy");
    assert_eq!(
        status(&open, Some("198.51.100.7"), None).await,
        401,
        "through a proxy on this machine"
    );
    // Issue 25: a proxy on this machine that names its client in any other header.
    for (name, value) in [
        ("forwarded", "for=198.51.100.7;proto=https"),
        ("x-real-ip", "198.51.100.7"),
        ("x-forwarded-host", "gate.example.com"),
        ("x-forwarded-proto", "https"),
        ("via", "1.1 caddy"),
        ("true-client-ip", "198.51.100.7"),
        ("cf-connecting-ip", "198.51.100.7"),
    ] {
        let got = http
            .get(open.url("/metrics"))
            .header(name, value)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(
            got, 401,
            "a request with `{name}` read /metrics without a token"
        );
    }
    // A proxy named in TRUSTED_PROXIES on loopback: every request may be someone else's.
    let behind =
        crate::support::app::spawn(db.store.clone(), &[("TRUSTED_PROXIES", "127.0.0.1")]).await;
    assert_eq!(
        status(&behind, None, None).await,
        401,
        "loopback is a trusted proxy"
    );

    let token = "metrics-token-0123456789";
    let locked = crate::support::app::spawn(db.store.clone(), &[("METRICS_TOKEN", token)]).await;
    assert_eq!(status(&locked, None, None).await, 401);
    assert_eq!(
        status(&locked, None, Some("wrong-token-0123456789")).await,
        401
    );
    assert_eq!(
        status(&locked, Some("198.51.100.7"), Some(token)).await,
        200
    );
}

/// Issue 25: `METRICS_LISTEN` serves `/metrics` without a token on an address of the
/// operator's choosing, and nothing else; the main listener still asks for the token.
#[tokio::test]
async fn metrics_listen_serves_metrics_alone_without_a_token() {
    let db = crate::support::sqlite().await;
    let token = "metrics-token-0123456789";
    let app = crate::support::app::spawn(db.store.clone(), &[("METRICS_TOKEN", token)]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(callgate::http::metrics::serve_listener(
        app.app.clone(),
        listener,
    ));
    let http = reqwest::Client::new();
    let got = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert!(got.text().await.unwrap().contains("callgate_active_calls"));
    for path in ["/", "/admin", "/healthz", "/voice/incoming"] {
        let got = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(got.status().as_u16(), 404, "{path} on the metrics listener");
    }
    let main = http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status().as_u16(), 401, "the main listener still asks");
    served.abort();
}
