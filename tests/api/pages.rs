//! The customer's pages in a real headless Chromium: the storefront, the success page's
//! loading state and code, and a clear message for an unknown payment.

use crate::support::app::{spawn, TestApp};
use crate::support::stripe::LocalStripe;
use fantoccini::Locator;

async fn shop() -> Option<(TestApp, LocalStripe, crate::support::TestDb)> {
    shop_with(&[]).await
}

async fn shop_with(
    extra: &[(&'static str, &str)],
) -> Option<(TestApp, LocalStripe, crate::support::TestDb)> {
    let stripe = crate::support::stripe::start().await?;
    let db = crate::support::sqlite().await;
    let mut env = stripe.env();
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env.push((
        "STRIPE_JS_URL",
        format!("{}/js.stripe.com/v3/", stripe.base),
    ));
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn(db.store.clone(), &vars).await;
    stripe.register_webhook(&app.url("/webhooks/stripe")).await;
    Some((app, stripe, db))
}

#[tokio::test]
async fn storefront_shows_the_plan_and_an_unticked_consent_box() {
    let Some((app, _stripe, _db)) = shop().await else {
        return;
    };
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    browser.client.goto(&app.url("/")).await.unwrap();
    browser.wait_for("main[data-state='choose']").await;
    assert_eq!(browser.text("#price").await, "$10.00");
    assert_eq!(browser.text("#minutes").await, "5 minutes");
    assert!(
        browser
            .client
            .find(Locator::Css("#plans[hidden]"))
            .await
            .is_ok(),
        "one plan: no choice to make"
    );
    let consent = browser.text(".consent").await;
    assert!(consent.contains("I accept overage charges of $1.00 per extra minute, charged to this card after the call"), "{consent}");
    let checkbox = browser.client.find(Locator::Css("#overage")).await.unwrap();
    assert_eq!(
        checkbox.prop("checked").await.unwrap().as_deref(),
        Some("false")
    );
    browser.screenshot("storefront").await;

    // Ticking consent and continuing creates the PaymentIntent and mounts the payment form.
    checkbox.click().await.unwrap();
    browser
        .client
        .find(Locator::Css("#continue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("main[data-state='pay']").await;
    let orders = app.app.store.list_orders(10).await.unwrap();
    assert_eq!(orders.len(), 1);
    assert!(
        orders[0].overage_consent,
        "the ticked box reached the order"
    );
    assert!(orders[0].stripe_customer.is_some());
    browser.screenshot("storefront-pay").await;
    browser.close().await;
}

/// Three plans: each a choice, the first chosen; choosing another shows its price and minutes
/// on the page and the pay button, and the order made is for the plan chosen.
#[tokio::test]
async fn the_storefront_offers_each_plan() {
    let plans = "Quick chat=5@5.00;Quarter hour=15@12.00;Half hour=30@20.00";
    let Some((app, _stripe, _db)) = shop_with(&[("PLANS", plans)]).await else {
        return;
    };
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    browser.client.goto(&app.url("/")).await.unwrap();
    browser.wait_for("main[data-state='choose']").await;
    let choices = browser
        .client
        .find_all(Locator::Css("#plans input[name='plan']"))
        .await
        .unwrap();
    assert_eq!(choices.len(), 3);
    assert_eq!(browser.text("#plans").await.matches(" minutes").count(), 3);
    assert_eq!(browser.text("#price").await, "$5.00");
    assert!(browser.text("#plans").await.contains("Quarter hour"));
    browser.fits_and_screenshots("storefront-plans").await;

    browser
        .client
        .find(Locator::Css("label.plan:has(input[value='half-hour'])"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_text("#price", "$20.00").await;
    assert_eq!(browser.text("#minutes").await, "30 minutes");
    let violations = browser.accessibility_violations().await;
    assert!(violations.is_empty(), "{violations:#?}");
    browser
        .client
        .find(Locator::Css("#continue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("main[data-state='pay']").await;
    assert_eq!(browser.text("#pay-amount").await, "$20.00");
    let orders = app.app.store.list_orders(10).await.unwrap();
    assert_eq!(orders.len(), 1);
    assert_eq!(
        (
            orders[0].plan.as_str(),
            orders[0].amount.0,
            orders[0].seconds_included.0
        ),
        ("Half hour", 2000, 1800)
    );
    browser.screenshot("storefront-plans-pay").await;
    browser.close().await;
}

/// Where Stripe returns the customer after paying `pi`.
async fn open_success_page(
    app: &TestApp,
    browser: &crate::support::browser::Browser,
    pi: &str,
    secret: &str,
) {
    let url = app.url(&format!(
        "/success.html?payment_intent={pi}&payment_intent_client_secret={secret}&redirect_status=succeeded"
    ));
    browser.client.goto(&url).await.unwrap();
}

#[tokio::test]
async fn success_page_waits_for_the_webhook_then_shows_the_code() {
    let Some((app, stripe, _db)) = shop().await else {
        return;
    };
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    let (pi, secret) = app.start_purchase(false).await;
    let (pi, secret) = (pi.as_str(), secret.as_str());
    open_success_page(&app, &browser, pi, secret).await;
    // Not paid yet: the loading state, and no code anywhere on the page.
    browser.wait_for("main[data-state='loading']").await;
    assert!(browser
        .text("#loading")
        .await
        .contains("Confirming your payment"));
    browser.screenshot("success-loading").await;

    assert_eq!(stripe.pay(pi, "4242424242424242").await.0, 200);
    browser.wait_for("main[data-state='done']").await;
    let shown = browser.text("#code").await.replace(' ', "");
    let stored = app
        .app
        .store
        .order_by_payment_intent(pi)
        .await
        .unwrap()
        .unwrap();
    let code = callgate::orders::code_of(&app.app, &stored).unwrap();
    assert_eq!(shown, code.expose());
    let phone = browser.client.find(Locator::Css("#phone")).await.unwrap();
    assert_eq!(
        phone.attr("href").await.unwrap().as_deref(),
        Some("tel:+15550100200")
    );
    assert_eq!(phone.text().await.unwrap(), "+1 555 010 0200");
    assert!(browser.text("#minutes").await.contains("5 minutes"));
    browser.screenshot("success-code").await;
    browser.close().await;
}

/// The account page, reached from the success page's link: the minutes left, each call with
/// its talk time and cost, and each payment. A wrong token, another order's token and an
/// unpaid order all get the same 404.
#[tokio::test]
async fn the_account_page_shows_minutes_calls_and_payments() {
    use callgate::store::{EndCall, EndReason, NewCall, Rounding, Seconds};
    let Some((app, stripe, _db)) = shop().await else {
        return;
    };
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    let (pi, secret) = app.start_purchase(false).await;
    let (pi, secret) = (pi.as_str(), secret.as_str());
    // An unpaid order has no account yet; its link answers as any wrong one.
    let unpaid = app
        .app
        .store
        .order_by_payment_intent(pi)
        .await
        .unwrap()
        .unwrap();
    let unpaid_path = callgate::orders::account::path(&app.app, &unpaid.id);
    assert_eq!(
        reqwest::get(app.url(&unpaid_path)).await.unwrap().status(),
        404
    );

    open_success_page(&app, &browser, pi, secret).await;
    assert_eq!(stripe.pay(pi, "4242424242424242").await.0, 200);
    browser.wait_for("main[data-state='done']").await;
    let link = browser.client.find(Locator::Css("#account")).await.unwrap();
    let href = link.attr("href").await.unwrap().unwrap();
    let order = app
        .app
        .store
        .order_by_payment_intent(pi)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(href, callgate::orders::account::path(&app.app, &order.id));

    // One call of 90 s of agent time on the code, ended and settled.
    let store = &app.app.store;
    let now = app.app.clock.now();
    store
        .upsert_call(&NewCall {
            call_sid: "CA_acct".into(),
            from_number: "+15550001111".into(),
            to_number: "+15550100200".into(),
            now,
        })
        .await
        .unwrap();
    store
        .hold_order_for_call(&order.id, "CA_acct", now + 150, now)
        .await
        .unwrap();
    assert!(store
        .bridge_started("CA_acct", None, now + 40, now + 1, "inst_test")
        .await
        .unwrap());
    store
        .bridge_finished("CA_acct", Seconds(90), EndReason::CallerHungUp, now + 91)
        .await
        .unwrap();
    store
        .end_call(&EndCall {
            call_sid: "CA_acct".into(),
            from_number: "+15550001111".into(),
            to_number: "+15550100200".into(),
            twilio_status: "completed".parse().unwrap(),
            duration: Some(95),
            reason: EndReason::CallerHungUp,
            now: now + 95,
        })
        .await
        .unwrap();
    store
        .settle_call("CA_acct", Rounding::PerStartedMinute, "chg_acct", now + 96)
        .await
        .unwrap();

    // Wrong links: a changed token, another order's token on this order, a made-up order.
    let (base, token) = href.rsplit_once('/').unwrap();
    // The token's last digit changed (to another digit, whatever it was).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let flipped = format!("{base}/{}{last}", &token[..token.len() - 1]);
    let other = callgate::orders::account::path(&app.app, "ord_other");
    let other_token = other.rsplit_once('/').unwrap().1;
    for wrong in [
        flipped,
        format!("{base}/{other_token}"),
        other.clone(),
        format!("{base}/"),
    ] {
        let resp = reqwest::get(app.url(&wrong)).await.unwrap();
        assert_eq!(resp.status(), 404, "{wrong}");
        assert!(!resp.text().await.unwrap().contains("Your talk time"));
    }

    link.click().await.unwrap();
    browser.wait_for("main#account").await;
    assert_eq!(browser.text("#left").await, "3 min 30 s");
    assert_eq!(
        browser.text("#last4").await,
        order.code_last4.clone().unwrap()
    );
    let calls = browser.text("#calls").await;
    assert!(
        calls.contains("1 min 30 s") && calls.contains("included"),
        "{calls}"
    );
    let payments = browser.text("#payments").await;
    assert!(
        payments.contains("$10.00") && payments.contains("Talk time"),
        "{payments}"
    );
    let page = browser.client.source().await.unwrap();
    let code = callgate::orders::code_of(&app.app, &order).unwrap();
    assert!(
        !page.contains(code.expose()),
        "the page never shows the whole code"
    );
    assert!(browser.failed_resources().await.is_empty());
    let violations = browser.accessibility_violations().await;
    assert!(violations.is_empty(), "{violations:#?}");
    browser.fits_and_screenshots("account").await;
    browser.close().await;
}

/// The top-up page, reached from the account page: two packs, the chosen one paid, and the
/// minutes shown once the webhook has credited them (as after Stripe's redirect back).
#[tokio::test]
async fn the_top_up_page_adds_minutes_to_the_same_code() {
    let packs = "Ten more=10@8.00;Thirty more=30@20.00";
    let Some((app, stripe, _db)) = shop_with(&[("TOP_UPS", packs)]).await else {
        return;
    };
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    let (pi, _secret) = app.start_purchase(false).await;
    assert_eq!(stripe.pay(&pi, "4242424242424242").await.0, 200);
    let order = app.paid_order(&pi).await;
    browser
        .client
        .goto(&app.url(&callgate::orders::account::path(&app.app, &order.id)))
        .await
        .unwrap();
    browser.wait_for("main#account").await;
    browser
        .client
        .find(Locator::Css("#top-up"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("main#top-up[data-state='choose']").await;
    assert_eq!(browser.text("#left").await, "5 min 00 s");
    let choices = browser
        .client
        .find_all(Locator::Css("#packs input[name='pack']"))
        .await
        .unwrap();
    assert_eq!(choices.len(), 2);
    let violations = browser.accessibility_violations().await;
    assert!(violations.is_empty(), "{violations:#?}");
    browser.fits_and_screenshots("top-up").await;

    browser
        .client
        .find(Locator::Css("label.plan:has(input[value='thirty-more'])"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_content("#pay-amount", "$20.00").await;
    browser
        .client
        .find(Locator::Css("#continue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("main[data-state='pay']").await;
    let top_up_pi = browser
        .client
        .find(Locator::Css("main#top-up"))
        .await
        .unwrap()
        .attr("data-payment-intent")
        .await
        .unwrap()
        .expect("the page names its PaymentIntent");
    // Paid at Stripe (localstripe's Stripe.js has no Payment Element to confirm with), then
    // back on the page as Stripe's redirect brings the customer.
    assert_eq!(stripe.pay(&top_up_pi, "4242424242424242").await.0, 200);
    let page = browser.client.current_url().await.unwrap();
    browser
        .client
        .goto(&format!("{page}?payment_intent={top_up_pi}"))
        .await
        .unwrap();
    browser.wait_for("main#top-up[data-state='done']").await;
    assert_eq!(browser.text("#left").await, "35 min 00 s");
    assert!(browser.text("#done").await.contains("Minutes added"));
    assert!(browser.failed_resources().await.is_empty());
    browser.fits_and_screenshots("top-up-done").await;
    let order = app.app.store.order(&order.id).await.unwrap().unwrap();
    assert_eq!(
        order.seconds_included.0,
        35 * 60,
        "the same code, 30 minutes more"
    );
    browser.close().await;
}

/// The account finder: a wrong code is told so, the right one (typed with spaces) opens the
/// account page.
#[tokio::test]
async fn a_typed_code_finds_its_account() {
    let Some((app, _stripe, _db)) = shop().await else {
        return;
    };
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    let grant = callgate::orders::OperatorGrant {
        minutes: 5,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let (order, code) = callgate::orders::issue_operator_code(&app.app, &grant)
        .await
        .unwrap();
    browser.client.goto(&app.url("/")).await.unwrap();
    browser
        .client
        .find(Locator::Css("a[href='/account']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("main#find").await;
    let input = browser.client.find(Locator::Css("#code")).await.unwrap();
    input.send_keys("1111 2222 3333").await.unwrap();
    browser
        .client
        .find(Locator::Css("#open"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for_text("#message", "No code matches").await;
    let violations = browser.accessibility_violations().await;
    assert!(violations.is_empty(), "{violations:#?}");
    browser.fits_and_screenshots("find").await;
    input.clear().await.unwrap();
    input.send_keys(&code.grouped()).await.unwrap();
    browser
        .client
        .find(Locator::Css("#open"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("main#account").await;
    assert_eq!(
        browser.text("#last4").await,
        order.code_last4.clone().unwrap()
    );
    browser.close().await;
}

/// Find my code: the page asks for the address the receipt went to and says the same for
/// any address, never showing a code; a malformed one is told so.
#[tokio::test]
async fn the_find_my_code_page_never_shows_a_code() {
    let Some((app, _stripe, _db)) = shop().await else {
        return;
    };
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    browser.client.goto(&app.url("/account")).await.unwrap();
    browser
        .client
        .find(Locator::Css("a[href='/find-code']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("main#find-code[data-state='ask']").await;
    let input = browser.client.find(Locator::Css("#contact")).await.unwrap();
    input.send_keys("not an address").await.unwrap();
    browser
        .client
        .find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_for_text("#message", "email address or the mobile number")
        .await;
    input.clear().await.unwrap();
    input.send_keys("someone@example.com").await.unwrap();
    browser
        .client
        .find(Locator::Css("#send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_for("main#find-code[data-state='sent']").await;
    assert!(browser.text("#message").await.contains("on its way"));
    let violations = browser.accessibility_violations().await;
    assert!(violations.is_empty(), "{violations:#?}");
    browser.fits_and_screenshots("find-code").await;
    browser.close().await;
}

#[tokio::test]
async fn success_page_explains_an_unknown_payment() {
    let Some((app, _stripe, _db)) = shop().await else {
        return;
    };
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    for query in [
        "?payment_intent=pi_unknown&payment_intent_client_secret=pi_unknown_secret_x",
        "",
    ] {
        browser
            .client
            .goto(&app.url(&format!("/success.html{query}")))
            .await
            .unwrap();
        browser.wait_for("main[data-state='problem']").await;
        assert!(browser
            .text("#problem-title")
            .await
            .contains("could not find this payment"));
        // A way back to the storefront, demo or not.
        browser.wait_for("#problem a.button[href='/']").await;
    }
    browser.fits_and_screenshots("success-unknown").await;
    browser.close().await;
}

/// A `serve` without Stripe: the storefront says plainly that it is not taking orders, shows
/// no form, loads nothing of Stripe's, and the checkout API answers 503.
#[tokio::test]
async fn a_shop_without_stripe_says_it_is_closed() {
    let db = crate::support::sqlite().await;
    // A shop set up as far as its agent: no Stripe and no Twilio number yet.
    let unset = [
        ("TWILIO_ACCOUNT_SID", ""),
        ("TWILIO_AUTH_TOKEN", ""),
        ("TWILIO_PHONE_NUMBER", ""),
    ];
    let app = spawn(db.store.clone(), &unset).await;
    let page = reqwest::get(app.url("/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("stripe.com"), "{page}");
    // No Twilio number either: no link that would dial nothing.
    assert!(!page.contains("tel:"), "{page}");
    assert!(page.contains("Call our number and type"), "{page}");
    let (status, _) = app
        .checkout("/api/create-payment-intent", serde_json::json!({}))
        .await;
    assert_eq!(status, 503);
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    browser.client.goto(&app.url("/")).await.unwrap();
    browser
        .wait_for_text("#closed", "not taking orders right now")
        .await;
    assert!(
        browser
            .client
            .find(Locator::Css("#checkout[hidden]"))
            .await
            .is_ok(),
        "no purchase form"
    );
    assert!(browser.failed_resources().await.is_empty());
    let violations = browser.accessibility_violations().await;
    assert!(violations.is_empty(), "{violations:#?}");
    browser.fits_and_screenshots("tour-storefront-closed").await;
    browser.close().await;
}

/// Every page's icon is there (browsers ask for `/favicon.ico` on their own), and an
/// unknown address gets a small page with a way back, not an empty answer.
#[tokio::test]
async fn the_icon_is_served_and_unknown_paths_get_a_page() {
    let db = crate::support::sqlite().await;
    let app = spawn(db.store.clone(), &[]).await;
    for path in ["/favicon.ico", "/favicon.svg"] {
        let resp = reqwest::get(app.url(path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "image/svg+xml");
    }
    let resp = reqwest::get(app.url("/no/such/page")).await.unwrap();
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("Page not found") && body.contains("href=\"/\""),
        "{body}"
    );
}
