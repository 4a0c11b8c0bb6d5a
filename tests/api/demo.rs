//! `callgate demo` as a newcomer uses it: buy on the storefront through the demo's Stripe
//! stand-in, call from the browser phone in a real headless Chromium (fake microphone),
//! type the code, talk to the demo agent, run into overage, hang up, and see the overage
//! charged once. Also: the demo refuses live keys and marks every page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callgate::config::BridgeSettings;
use callgate::demo::{self, DemoOptions};
use callgate::store::ChargeState;
use callgate::App;
use fantoccini::Locator;

struct Running {
    app: Arc<App>,
    url: String,
    admin_password: String,
    _demo: demo::Demo,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

/// A demo whose metered second is 20 ms, so a few seconds of call run past a 1-minute plan.
async fn start_demo() -> Running {
    start_demo_with(1, Duration::from_millis(20)).await
}

/// A demo whose plan has `minutes`, one metered second lasting `tick`.
async fn start_demo_with(minutes: i64, tick: Duration) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = demo::start(DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: dir.path().join("demo.db"),
        minutes,
        audio_dir: dir.path().join("no-audio"),
        bridge: BridgeSettings {
            tick,
            persist_every_secs: 1,
            ..BridgeSettings::default()
        },
    })
    .await
    .expect("the demo starts");
    let listener = demo.listener.take().unwrap();
    let app = demo.app.clone();
    let routes = demo.router();
    let server = tokio::spawn({
        let app = app.clone();
        async move {
            let _ =
                callgate::http::serve_router(app, routes, listener, std::future::pending()).await;
        }
    });
    Running {
        url: demo.url.clone(),
        app,
        admin_password: demo.admin_password.clone(),
        _demo: demo,
        _dir: dir,
        _server: server,
    }
}

async fn click(browser: &crate::support::browser::Browser, css: &str) {
    browser.wait_for(css).await.click().await.unwrap();
}

#[tokio::test]
async fn a_newcomer_buys_calls_talks_and_pays_overage_in_the_browser() {
    let demo = start_demo().await;
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    let b = &browser;

    // Buy, with overage accepted, on the demo's stand-in card form.
    b.client.goto(&format!("{}/", demo.url)).await.unwrap();
    b.wait_for_text(".demo-banner", "nothing is charged").await;
    click(b, "#overage").await;
    click(b, "#continue").await;
    let card = b.wait_for("#demo-card").await;
    assert_eq!(
        card.prop("value").await.unwrap().as_deref(),
        Some("4242 4242 4242 4242")
    );
    click(b, "#pay").await;
    b.wait_for("#done:not([hidden])").await;
    b.wait_for_text(".demo-banner", "Browser phone").await;
    let code: String = b
        .text("#code")
        .await
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 12, "{code}");
    b.screenshot("demo-success").await;

    // Call from the browser phone and type the code on its keypad.
    b.client
        .goto(&format!("{}/demo/phone", demo.url))
        .await
        .unwrap();
    click(b, "#call").await;
    b.wait_for_attr("#phone-app", "data-state", "gather").await;
    b.wait_for_text("#heard", "Please enter your access code")
        .await;
    for digit in code.chars() {
        click(b, &format!("#keypad button[data-key='{digit}']")).await;
    }
    b.wait_for_attr("#phone-app", "data-state", "connected")
        .await;
    b.wait_for_text("#heard", "Agent: Hello, I am the callgate demo agent")
        .await;

    // The text fallback: typed words reach the agent, its answer comes back.
    b.wait_for("#say")
        .await
        .send_keys("hello agent")
        .await
        .unwrap();
    click(b, "#send").await;
    b.wait_for_text("#heard", "You said: \u{201c}hello agent\u{201d}")
        .await;
    b.screenshot("demo-phone-connected").await;

    // Stay on past the 1-minute allowance (60 metered seconds = 1.2 s here), then hang up.
    let order = demo.app.store.list_orders(1).await.unwrap().remove(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let calls = demo.app.store.list_calls(1).await.unwrap();
        if calls.first().is_some_and(|c| c.seconds_metered.0 >= 90) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metering never passed 90 s: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Paid time was announced into the call, and the phone shows it as callgate's words.
    b.wait_for_text("#heard", "You are now in paid time").await;
    let phone = b.client.find(Locator::Css("#hangup")).await.unwrap();
    phone.click().await.unwrap();
    b.wait_for_attr("#phone-app", "data-state", "ended").await;

    // The call is metered, its transcript kept, and the overage charged exactly once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let charge = loop {
        let charges = demo.app.store.charges_for_order(&order.id).await.unwrap();
        if let Some(c) = charges.iter().find(|c| c.state == ChargeState::Succeeded) {
            assert_eq!(charges.len(), 1, "{charges:?}");
            break c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "overage never charged: {charges:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(charge.amount.0 >= 100, "{charge:?}");
    assert!(charge
        .stripe_payment_intent
        .as_deref()
        .is_some_and(|pi| pi.starts_with("pi_demo_")));
    let call = demo
        .app
        .store
        .call(&charge.call_sid)
        .await
        .unwrap()
        .unwrap();
    assert!(call.ended_at.is_some());
    let transcript = demo.app.store.transcript(&call.call_sid).await.unwrap();
    assert!(
        transcript.iter().any(|l| l.text == "hello agent"),
        "{transcript:?}"
    );

    // The operator's view shows the paid overage and the transcript.
    let admin = demo
        .url
        .replace("http://", &format!("http://admin:{}@", demo.admin_password));
    b.client
        .goto(&format!("{admin}/admin/charges"))
        .await
        .unwrap();
    b.wait_for_text("table", &charge.id).await;
    b.wait_for_text("table", "succeeded").await;
    b.client.goto(&format!("{admin}/admin")).await.unwrap();
    b.wait_for("svg.chart").await;
    b.screenshot("demo-admin").await;
    b.client
        .goto(&format!("{admin}/admin/calls/{}", call.call_sid))
        .await
        .unwrap();
    b.wait_for_text("#transcript", "hello agent").await;
    browser.close().await;
}

#[tokio::test]
async fn a_declined_demo_card_shows_the_decline_and_issues_no_code() {
    let demo = start_demo().await;
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    let b = &browser;
    b.client.goto(&format!("{}/", demo.url)).await.unwrap();
    click(b, "#continue").await;
    let card = b.wait_for("#demo-card").await;
    card.clear().await.unwrap();
    card.send_keys(demo::stripe::DECLINED_CARD).await.unwrap();
    click(b, "#pay").await;
    b.wait_for_text("#message", "declined").await;
    let orders = demo.app.store.list_orders(5).await.unwrap();
    assert_eq!(orders.len(), 1);
    assert!(orders[0].code_last4.is_none(), "{orders:?}");
    browser.close().await;
}

#[tokio::test]
async fn the_demo_refuses_live_keys() {
    let env = [("STRIPE_SECRET_KEY", "sk_live_123")];
    let err = demo::refuse_live_keys(&env).unwrap_err().to_string();
    assert!(err.contains("STRIPE_SECRET_KEY"), "{err}");
    assert!(err.contains("live"), "{err}");
    let env = [("STRIPE_SECRET_KEY", "sk_test_123")];
    assert!(demo::refuse_live_keys(&env).is_ok());
}

#[tokio::test]
async fn demo_pages_are_marked_and_the_phone_rejects_foreign_urls() {
    let demo = start_demo().await;
    let http = reqwest::Client::new();
    for path in ["/", "/success.html", "/demo/phone"] {
        let page = http
            .get(format!("{}{path}", demo.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("class=\"demo-banner\""), "{path}: {page}");
    }
    // The phone only ever calls this server, and only for calls it placed.
    let resp = http
        .post(format!("{}/demo/phone/next", demo.url))
        .json(&serde_json::json!({ "call_sid": "CAnope", "url": "http://169.254.169.254/" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let dial: serde_json::Value = http
        .post(format!("{}/demo/phone/dial", demo.url))
        .json(&serde_json::json!({ "from": "+15550001111" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sid = dial["call_sid"].as_str().unwrap();
    let resp = http
        .post(format!("{}/demo/phone/next", demo.url))
        .json(&serde_json::json!({ "call_sid": sid, "url": "http://169.254.169.254/" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = http
        .post(format!("{}/demo/phone/dial", demo.url))
        .json(&serde_json::json!({ "from": "not a number" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

/// Checks the page the browser shows: nothing it loaded answered 400 or more, and axe-core
/// finds no WCAG 2 A or AA violation. Then saves it at both sizes.
async fn look_at(b: &crate::support::browser::Browser, name: &str) {
    let failed = b.failed_resources().await;
    assert!(failed.is_empty(), "{name}: {failed:?}");
    let violations = b.accessibility_violations().await;
    assert!(violations.is_empty(), "{name}: {violations:#?}");
    b.fits_and_screenshots(name).await;
}

/// Buys in the demo's stand-in card form, with or without overage; returns the 12-digit code.
async fn buy(b: &crate::support::browser::Browser, url: &str, overage: bool) -> String {
    b.client.goto(&format!("{url}/")).await.unwrap();
    b.wait_for("main[data-state='choose']").await;
    if overage {
        click(b, "#overage").await;
    }
    click(b, "#continue").await;
    b.wait_for("#demo-card").await;
    click(b, "#pay").await;
    b.wait_for("#done:not([hidden])").await;
    b.text("#code")
        .await
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

/// Dials from the browser phone and types `code`; returns once the agent part is live.
async fn call_with(b: &crate::support::browser::Browser, url: &str, code: &str) {
    b.client.goto(&format!("{url}/demo/phone")).await.unwrap();
    click(b, "#call").await;
    b.wait_for_attr("#phone-app", "data-state", "gather").await;
    for digit in code.chars() {
        click(b, &format!("#keypad button[data-key='{digit}']")).await;
    }
    b.wait_for_attr("#phone-app", "data-state", "connected")
        .await;
}

/// Every page a customer or the operator sees, in each state, at a desktop and a phone size
/// (`test-artifacts/tour-*.png`), each checked for failed resources and accessibility.
#[tokio::test]
async fn every_page_and_state_at_desktop_and_phone_size() {
    // Two minutes, a metered second of 100 ms: the warning at 6 s, overage from 12 s.
    let demo = start_demo_with(2, Duration::from_millis(100)).await;
    let Some(browser) = crate::support::browser::start().await else {
        return;
    };
    let b = &browser;

    b.client.goto(&format!("{}/", demo.url)).await.unwrap();
    b.wait_for("main[data-state='choose']").await;
    assert_eq!(b.text("#minutes").await, "2 minutes");
    look_at(b, "tour-storefront").await;

    let code = buy(b, &demo.url, true).await;
    assert_eq!(code.len(), 12, "{code}");
    b.wait_for_text("#amount", "$").await;
    assert!(!b.text("#plan").await.is_empty());
    b.wait_for("#phone[href^='tel:+']").await;
    b.wait_for("#browser-phone:not([hidden])").await;
    look_at(b, "tour-success").await;

    b.client
        .goto(&format!("{}/demo/phone", demo.url))
        .await
        .unwrap();
    b.wait_for("#call").await;
    look_at(b, "tour-phone-idle").await;

    // With overage: the call runs on past the allowance, marked as overage.
    call_with(b, &demo.url, &code).await;
    b.wait_for("#meter:not([hidden])").await;
    b.wait_for_text("#left", "left").await;
    assert!(
        b.client
            .find(fantoccini::Locator::Css("#typed[hidden]"))
            .await
            .is_ok(),
        "the code's dots are gone once the call is connected"
    );
    b.fits_and_screenshots("tour-phone-in-call").await;
    b.wait_for("#meter.overage").await;
    b.wait_for_content("#heard", "extra minutes now cost").await;
    b.fits_and_screenshots("tour-phone-overage").await;
    click(b, "#hangup").await;
    b.wait_for_attr("#phone-app", "data-state", "ended").await;
    let ended = b.wait_for_text("#status", "Talked").await;
    assert!(ended.contains("of overage will be charged"), "{ended}");
    look_at(b, "tour-phone-ended").await;
    let overage_call = demo.app.store.list_calls(1).await.unwrap().remove(0);

    // Without overage: warned a minute before the end, then cut off politely.
    let code = buy(b, &demo.url, false).await;
    call_with(b, &demo.url, &code).await;
    let heard = b.wait_for_content("#heard", "One minute left.").await;
    assert!(
        !heard.ends_with("(you interrupted the agent)One minute left."),
        "the warning's clear is not an interruption: {heard}"
    );
    b.fits_and_screenshots("tour-phone-warning").await;
    b.wait_for_attr("#phone-app", "data-state", "ended").await;
    b.wait_for_text("#status", "Talked").await;
    b.fits_and_screenshots("tour-phone-time-up").await;
    let time_up_call = demo.app.store.list_calls(1).await.unwrap().remove(0);

    // Keys during the conversation: `*` tells the time left, `0` hands over to a person.
    let code = buy(b, &demo.url, false).await;
    call_with(b, &demo.url, &code).await;
    click(b, "#keypad button[data-key='*']").await;
    b.wait_for_content("#heard", "told you the minutes you have left")
        .await;
    click(b, "#keypad button[data-key='0']").await;
    b.wait_for_content("#heard", "Transferring you to +15550100999")
        .await;
    look_at(b, "tour-phone-transfer").await;
    b.wait_for_attr("#phone-app", "data-state", "ended").await;
    let transferred = demo.app.store.list_calls(1).await.unwrap().remove(0);
    assert_eq!(
        transferred.end_reason.map(|r| r.as_str()),
        Some("transferred")
    );

    let admin = demo
        .url
        .replace("http://", &format!("http://admin:{}@", demo.admin_password));
    let paid_order = overage_call.order_id.clone().expect("the call's order");
    // Two operator actions in the log, as the console records them.
    use callgate::store::{AuditAction, AuditResult};
    for (action, detail, result, outcome) in [
        (
            AuditAction::AddMinutes,
            "add 5 minutes",
            AuditResult::Done,
            "Order: 5 minutes added.",
        ),
        (
            AuditAction::Refund,
            "refund the purchase",
            AuditResult::Refused,
            "Stripe refused the refund: Charge ch_3Q has already been refunded.",
        ),
    ] {
        let entry = callgate::store::AuditEntry {
            id: callgate::store::new_id("aud"),
            at: demo.app.clock.now(),
            actor: "device 5f0c2a9d41be".into(),
            action,
            order_id: Some(paid_order.clone()),
            subject: paid_order.clone(),
            detail: detail.into(),
            result,
            outcome: outcome.into(),
        };
        demo.app.store.record_audit(&entry).await.unwrap();
    }
    for (path, name, shows) in [
        ("/admin".to_string(), "tour-admin-overview", "svg.chart"),
        ("/admin/orders".into(), "tour-admin-orders", "table"),
        ("/admin/calls".into(), "tour-admin-calls", "table"),
        (
            format!("/admin/calls/{}", overage_call.call_sid),
            "tour-admin-call",
            ".timeline",
        ),
        (
            format!("/admin/orders/{paid_order}/revoke"),
            "tour-admin-confirm-revoke",
            "form button.danger",
        ),
        (
            format!("/admin/orders/{paid_order}?done=minutes&minutes=5&id={paid_order}"),
            "tour-admin-order-done",
            ".summary.changed",
        ),
        (
            format!("/admin/orders/{paid_order}/refund"),
            "tour-admin-confirm-refund",
            "form button.danger",
        ),
        (
            "/admin/orders?state=paid&from=2020-01-01".into(),
            "tour-admin-orders-filtered",
            "form.filters",
        ),
        ("/admin/audit".into(), "tour-admin-audit", "table#audit"),
        (
            format!(
                "/admin/search?q={}",
                overage_call.from_number.replace('+', "%2B")
            ),
            "tour-admin-search",
            "#found",
        ),
        // Last: the charges table is read again below.
        ("/admin/charges".into(), "tour-admin-charges", "table"),
    ] {
        b.client.goto(&format!("{admin}{path}")).await.unwrap();
        b.wait_for(shows).await;
        if !path.starts_with("/admin/search") {
            b.wait_for("nav a[aria-current='page']").await;
        }
        look_at(b, name).await;
    }
    b.wait_for_text("table", "succeeded").await;
    // A problem page (its own answer is the 404 the resource check would count).
    b.client
        .goto(&format!("{admin}/admin/orders/ord_missing"))
        .await
        .unwrap();
    b.wait_for_text("p[role='alert']", "not found").await;
    let violations = b.accessibility_violations().await;
    assert!(violations.is_empty(), "tour-admin-problem: {violations:#?}");
    b.fits_and_screenshots("tour-admin-problem").await;
    for (call, events) in [
        (
            &overage_call,
            &["connected to the agent", "overage began", "Settled"][..],
        ),
        (
            &time_up_call,
            &[
                "connected to the agent",
                "One-minute warning",
                "minutes used up",
            ][..],
        ),
    ] {
        b.client
            .goto(&format!("{admin}/admin/calls/{}", call.call_sid))
            .await
            .unwrap();
        let timeline = b.wait_for_content(".timeline", "Call arrived").await;
        for event in events {
            assert!(timeline.contains(event), "{event}: {timeline}");
        }
    }

    b.client
        .goto(&format!("{}/no/such/page", demo.url))
        .await
        .unwrap();
    b.wait_for_text("h1", "Page not found").await;
    b.wait_for("a.button[href='/']").await;
    b.fits_and_screenshots("tour-not-found").await;
    browser.close().await;
}

/// The browser phone with a spoken microphone: Chromium plays an espeak-ng recording as its
/// microphone, the page streams it as μ-law frames through callgate, and the demo agent,
/// hearing speech, answers with it.
#[tokio::test]
async fn a_spoken_microphone_reaches_the_agent_and_its_reply_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("caller.wav");
    let spoken = std::process::Command::new("espeak-ng")
        .args(["-s", "140", "-w"])
        .arg(&wav)
        .arg("Hello. I would like to talk to the assistant about my order, please.")
        .status();
    if !spoken.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "espeak-ng is required under CI=true (./scripts/test installs it)"
        );
        eprintln!("SKIPPED: espeak-ng is not installed");
        return;
    }
    // Chromium loops the file: a second and a half of silence after the words makes the pause
    // that ends the caller's turn.
    pad_with_silence(&wav, 1.5);
    let demo = start_demo_with(5, Duration::from_millis(100)).await;
    let Some(browser) = crate::support::browser::start_with_microphone(&wav).await else {
        return;
    };
    let b = &browser;
    let code = buy(b, &demo.url, false).await;
    call_with(b, &demo.url, &code).await;
    b.wait_for_text("#status", "Talk, or type below").await;
    let heard = b.wait_for_content("#heard", "I heard").await;
    assert!(heard.contains("s of speech)"), "{heard}");
    b.fits_and_screenshots("tour-phone-microphone").await;
    click(b, "#hangup").await;
    b.wait_for_attr("#phone-app", "data-state", "ended").await;
    browser.close().await;
}

/// Appends `seconds` of silence to a 16-bit PCM WAV file, fixing its sizes.
fn pad_with_silence(path: &std::path::Path, seconds: f64) {
    let mut wav = std::fs::read(path).unwrap();
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let rate = u32_at(&wav, 24);
    let channels = u16::from_le_bytes([wav[22], wav[23]]) as u32;
    let data = wav
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk");
    let extra = (seconds * rate as f64) as u32 * channels * 2;
    // espeak-ng streams its WAV and may leave the data size unset: count the bytes there are.
    let size = (wav.len() - data - 8) as u32 + extra;
    wav.extend(std::iter::repeat_n(0u8, extra as usize));
    wav[data + 4..data + 8].copy_from_slice(&size.to_le_bytes());
    let riff = (wav.len() - 8) as u32;
    wav[4..8].copy_from_slice(&riff.to_le_bytes());
    std::fs::write(path, wav).unwrap();
}
