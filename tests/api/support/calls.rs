//! Whole calls for the bridge and fault tests: a code issued, dialled, typed, streamed.

use std::time::Duration;

use callgate::orders::{self, OperatorGrant};
use callgate::store::DynStore;

use super::app::{spawn_with, TestApp, ACCOUNT_SID, AUTH_TOKEN, PHONE};
use callgate_peers::agent::FakeAgent;
use callgate_peers::twilio::{Caller, Ending, MediaStream};

/// One metered "second" in these tests.
pub const TICK: Duration = Duration::from_millis(10);
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn app_with_agent(store: DynStore, agent: &FakeAgent, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("ELEVENLABS_API_BASE", agent.base.as_str())];
    vars.extend_from_slice(extra);
    spawn_with(store, &vars, |app| {
        app.bridge.tick = TICK;
        app.bridge.setup_timeout = Duration::from_secs(5);
    })
    .await
}

/// Issues a code, dials, types it: the caller and the stream Twilio is told to open.
pub async fn connected_call(
    app: &TestApp,
    minutes: i64,
    overage: bool,
) -> (Caller, String, Vec<(String, String)>, String) {
    // Overage needs a saved card as well as consent.
    let grant = OperatorGrant {
        minutes,
        overage,
        customer: overage.then(|| "cus_test".to_string()),
        payment_method: overage.then(|| "pm_test".to_string()),
    };
    connected_call_with(app, &grant).await
}

/// [`connected_call`] for an order granted as `grant` says.
pub async fn connected_call_with(
    app: &TestApp,
    grant: &OperatorGrant,
) -> (Caller, String, Vec<(String, String)>, String) {
    let (_, code) = orders::issue_operator_code(&app.app, grant).await.unwrap();
    connected_at(&app.base, "+15558880001", leak(code.expose().to_string())).await
}

/// A caller from `from` dials `base` and types `code`, which connects: the caller, the
/// stream Twilio is told to open (its URL and parameters), and where Twilio goes after it.
pub async fn connected_at(
    base: &str,
    from: &str,
    code: &'static str,
) -> (Caller, String, Vec<(String, String)>, String) {
    let (caller, ending) = dial_at(base, from, code).await;
    let Ending::Stream {
        url,
        parameters,
        after,
    } = ending
    else {
        panic!("not connected: {ending:?}\n{}", caller.transcript())
    };
    (
        caller,
        url,
        parameters,
        after.expect("a Redirect after Connect"),
    )
}

pub async fn open(caller: &Caller, url: &str, params: &[(String, String)]) -> MediaStream {
    MediaStream::open(url, &caller.account(), &caller.call_sid, params)
        .await
        .expect("stream accepted")
}

/// Waits for the bridge to record its end (it does so before closing the stream).
pub async fn ended_call(app: &TestApp, sid: &str) -> callgate::store::Call {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let call = app.app.store.call(sid).await.unwrap().unwrap();
        if call.bridge_ended_at.is_some() || tokio::time::Instant::now() > deadline {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the call to be settled: its seconds debited and its code freed (the bridge
/// settles right after recording its end).
/// The order a call holds (or held).
pub async fn order_of(app: &TestApp, call_sid: &str) -> callgate::store::Order {
    let call = app.app.store.call(call_sid).await.unwrap().unwrap();
    let order_id = call.order_id.expect("the call has an order");
    app.app.store.order(&order_id).await.unwrap().unwrap()
}

/// The call's order once the call's settlement is finished (debited, its hold released).
pub async fn settled_order(app: &TestApp, call_sid: &str) -> callgate::store::Order {
    let call = settled_call(app, call_sid).await;
    assert!(call.settled_at.is_some(), "never settled");
    order_of(app, call_sid).await
}

/// The call once its settlement is finished (on every engine a call shows settled only once
/// its debit and charge are written).
pub async fn settled_call(app: &TestApp, sid: &str) -> callgate::store::Call {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let call = app.app.store.call(sid).await.unwrap().unwrap();
        if call.settled_at.is_some() || tokio::time::Instant::now() > deadline {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends one frame and waits until the agent's echo comes back: the bridge is pumping (frames
/// sent while it still sets up would reach the agent all at once, before a second is metered).
pub async fn heard_the_agent(stream: &mut MediaStream) {
    assert!(stream.send_media(&[0x55; 160]).await);
    while !matches!(
        stream.next(WAIT).await,
        Some(callgate_peers::twilio::Received::Media(_))
    ) {}
}

/// The admin page of a call, as the operator (`password`) sees it.
pub async fn admin_call_page(app: &TestApp, password: &str, call_sid: &str) -> String {
    let resp = reqwest::Client::new()
        .get(app.url(&format!("/admin/calls/{call_sid}")))
        .basic_auth("admin", Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// A `'static` copy of `s` (a code typed by a scripted caller).
pub fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// An operator's code of `minutes`, without overage: its order and the digits.
pub async fn operator_code(
    app: &callgate::App,
    minutes: i64,
) -> (callgate::store::Order, &'static str) {
    let grant = OperatorGrant {
        minutes,
        overage: false,
        customer: None,
        payment_method: None,
    };
    let (order, code) = orders::issue_operator_code(app, &grant).await.unwrap();
    (order, leak(code.expose().to_string()))
}

/// A caller from `from` dials callgate at `base` and types `code`.
pub async fn dial_at(base: &str, from: &str, code: &'static str) -> (Caller, Ending) {
    let mut caller = Caller::new(AUTH_TOKEN, ACCOUNT_SID, from, PHONE).types([Some(code)]);
    let ending = caller.dial(&format!("{base}/voice/incoming")).await;
    (caller, ending)
}

/// Dials `base`, types `code`, opens the stream: the call is bridged and the agent heard.
/// The caller, its stream, and the URL Twilio goes on to after the stream.
pub async fn live_call_at(
    base: &str,
    from: &str,
    code: &'static str,
) -> (Caller, MediaStream, String) {
    let (caller, url, parameters, after) = connected_at(base, from, code).await;
    let mut stream = open(&caller, &url, &parameters).await;
    heard_the_agent(&mut stream).await;
    (caller, stream, after)
}

/// Reads until callgate closes the stream; `false` if `wait` passes first.
pub async fn until_closed(stream: &mut MediaStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match stream.next(left).await {
            Some(callgate_peers::twilio::Received::Closed) => return true,
            Some(_) => continue,
            None => return false,
        }
    }
}
