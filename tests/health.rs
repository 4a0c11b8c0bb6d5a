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
