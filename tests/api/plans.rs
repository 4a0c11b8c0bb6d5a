//! What runs for every live call at every metering interval stays a lookup however many orders
//! are stored: renewing a call's hold (the metering flush) and capping a gone instance's holds
//! find the held order by its call through an index, not by reading every paid order. Checked
//! on each SQL engine's own plan, with thousands of paid orders stored and their statistics
//! gathered (MongoDB gets the same index at start-up: `orders.active_call_sid`).

/// The shapes of `ORDER_RENEW_HOLD` (the metering flush) and of `cap_hold` (liveness), with
/// values in place of their parameters.
const PER_LIVE_CALL: [&str; 2] = [
    "UPDATE orders SET active_call_until = 5 WHERE active_call_sid = 'CA-held' AND status = 'paid'",
    "UPDATE orders SET active_call_until = 5 WHERE active_call_sid = 'CA-held' AND active_call_until > 5",
];

const HELD: &str =
    "UPDATE orders SET active_call_sid = 'CA-held', active_call_until = 10 WHERE id = 'o7'";

fn assert_lookups(plans: &[String]) {
    for (sql, plan) in PER_LIVE_CALL.iter().zip(plans) {
        assert!(
            plan.contains("orders_active_call"),
            "{sql}\nis not a lookup of the held order:\n{plan}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_finds_a_held_order_by_its_call() {
    let Some(db) = crate::support::postgres().await else {
        return;
    };
    let seed = "INSERT INTO orders (id, status, source, plan, amount_cents, currency, \
                seconds_included, overage_consent, overage_price_cents, created_at, updated_at) \
                SELECT 'o' || g, 'paid', 'stripe', 'basic', 1000, 'usd', 600, FALSE, 0, g, g \
                FROM generate_series(1, 5000) AS g";
    let plans = db
        .plans(&[seed, HELD, "ANALYZE orders"], &PER_LIVE_CALL)
        .await;
    assert_lookups(&plans);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_finds_a_held_order_by_its_call() {
    let db = crate::support::sqlite().await;
    let seed = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000) \
                INSERT INTO orders (id, status, source, plan, amount_cents, currency, \
                seconds_included, overage_consent, overage_price_cents, created_at, updated_at) \
                SELECT 'o' || n, 'paid', 'stripe', 'basic', 1000, 'usd', 600, 0, 0, n, n FROM g";
    let plans = db.plans(&[seed, HELD, "ANALYZE"], &PER_LIVE_CALL).await;
    assert_lookups(&plans);
}
