//! The demo's Twilio: the browser phone's server side. It places the call the way Twilio
//! does (signed webhook requests to callgate's own voice URLs), turns each TwiML answer into
//! steps the page plays out, relays the page's microphone to callgate's real `/media`
//! WebSocket as a Twilio media stream, and reports the call's end with a status callback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message as PageMessage, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use callgate_peers::twilio::twiml::{self, Verb};
use callgate_peers::twilio::{self, Account, Leg, MediaStream, Signature};
use serde::Deserialize;
use serde_json::{json, Value};

use super::DemoServices;
use crate::http::AppState;
use crate::telephony::twilio::{INCOMING_PATH, STATUS_PATH};

#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    #[error("callgate sent TwiML the demo phone cannot follow: {0}")]
    Twiml(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("callgate did not answer: {0}")]
    Upstream(String),
}

impl IntoResponse for PhoneError {
    fn into_response(self) -> Response {
        let status = match self {
            PhoneError::BadRequest(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// What the page plays out from one TwiML document.
pub fn steps(document: &str) -> Result<Vec<Verb>, PhoneError> {
    twiml::parse(document).map_err(|e| PhoneError::Twiml(e.to_string()))
}

/// A call placed from the browser phone.
pub struct DemoCall {
    from: String,
    answered: Instant,
}

/// The demo's Twilio account and phone number.
fn account(app: &crate::App) -> (Account, String) {
    let twilio = app.config.twilio.as_ref();
    (
        Account {
            account_sid: twilio.map(|t| t.account_sid.clone()).unwrap_or_default(),
            auth_token: twilio
                .map(|t| t.auth_token.expose().to_string())
                .unwrap_or_default(),
        },
        twilio.map(|t| t.phone_number.clone()).unwrap_or_default(),
    )
}

/// Twilio's parameters for a call in `status`.
fn call_params(app: &crate::App, sid: &str, from: &str, status: &str) -> Vec<(String, String)> {
    let (account, to) = account(app);
    let leg = Leg {
        call_sid: sid.into(),
        from: from.into(),
        to,
    };
    leg.params(&account, status)
}

/// Posts a signed request to one of callgate's own voice URLs, as Twilio would.
async fn twilio_post(
    app: &crate::App,
    url: &str,
    params: &[(String, String)],
) -> Result<String, PhoneError> {
    let own = app.public_url("/");
    if !url.starts_with(&own) {
        return Err(PhoneError::BadRequest(format!(
            "the demo phone only calls this server ({own})"
        )));
    }
    let (account, _) = account(app);
    let (status, body) = twilio::post(&app.http, url, params, Signature::Sign(&account.auth_token))
        .await
        .map_err(|e| PhoneError::Upstream(e.to_string()))?;
    if !(200..300).contains(&status) {
        return Err(PhoneError::Upstream(format!("{status}: {body}")));
    }
    Ok(body)
}

#[derive(Deserialize)]
pub struct Dial {
    /// The caller's number; each browser phone picks its own.
    from: String,
}

fn valid_number(n: &str) -> bool {
    n.starts_with('+') && (8..=16).contains(&n.len()) && n[1..].chars().all(|c| c.is_ascii_digit())
}

/// `POST /demo/phone/dial`: the call rings callgate's voice URL.
pub async fn dial(
    State(app): State<AppState>,
    Extension(demo): Extension<Arc<DemoServices>>,
    Json(dial): Json<Dial>,
) -> Response {
    let result = async {
        if !valid_number(&dial.from) {
            return Err(PhoneError::BadRequest(
                "from must be a number like +15550123456".into(),
            ));
        }
        let sid = twilio::new_sid("CA");
        demo.calls.lock().unwrap_or_else(|p| p.into_inner()).insert(
            sid.clone(),
            DemoCall {
                from: dial.from.clone(),
                answered: Instant::now(),
            },
        );
        let params = call_params(&app, &sid, &dial.from, "ringing");
        let twiml = twilio_post(&app, &app.public_url(INCOMING_PATH), &params).await?;
        Ok(json!({ "call_sid": sid, "steps": steps(&twiml)? }))
    }
    .await;
    answer(result)
}

fn answer(result: Result<Value, PhoneError>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn caller_of(demo: &DemoServices, sid: &str) -> Result<String, PhoneError> {
    demo.calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(sid)
        .map(|c| c.from.clone())
        .ok_or_else(|| PhoneError::BadRequest("no such call".into()))
}

#[derive(Deserialize)]
pub struct Next {
    call_sid: String,
    url: String,
    digits: Option<String>,
    finished_on_key: Option<String>,
}

/// `POST /demo/phone/next`: fetch the next TwiML (a Gather's action or a Redirect).
pub async fn next(
    State(app): State<AppState>,
    Extension(demo): Extension<Arc<DemoServices>>,
    Json(next): Json<Next>,
) -> Response {
    let result = async {
        let from = caller_of(&demo, &next.call_sid)?;
        let mut params = call_params(&app, &next.call_sid, &from, "in-progress");
        if let Some(digits) = next.digits {
            let digits: String = digits
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '*')
                .take(32)
                .collect();
            params.push(("Digits".into(), digits));
            params.push((
                "FinishedOnKey".into(),
                next.finished_on_key
                    .unwrap_or_default()
                    .chars()
                    .take(1)
                    .collect(),
            ));
        }
        let twiml = twilio_post(&app, &next.url, &params).await?;
        Ok(json!({ "steps": steps(&twiml)? }))
    }
    .await;
    answer(result)
}

#[derive(Deserialize)]
pub struct Hangup {
    call_sid: String,
}

/// `POST /demo/phone/hangup`: the call ended; Twilio's status callback follows.
pub async fn hangup(
    State(app): State<AppState>,
    Extension(demo): Extension<Arc<DemoServices>>,
    Json(h): Json<Hangup>,
) -> Response {
    let result = async {
        let call = demo
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&h.call_sid)
            .ok_or_else(|| PhoneError::BadRequest("no such call".into()))?;
        let mut params = call_params(&app, &h.call_sid, &call.from, "completed");
        params.push((
            "CallDuration".into(),
            call.answered.elapsed().as_secs().max(1).to_string(),
        ));
        twilio_post(&app, &app.public_url(STATUS_PATH), &params).await?;
        Ok(summary(&app, &h.call_sid).await)
    }
    .await;
    answer(result)
}

/// What the caller sees after hanging up: time talked, minutes left, the overage charge.
/// The call is settled when both Twilio's end and the bridge's have arrived (or by the
/// billing worker's next pass): this waits a few seconds for that, as a phone bill would.
async fn summary(app: &crate::App, call_sid: &str) -> Value {
    let deadline = Instant::now() + std::time::Duration::from_secs(6);
    let call = loop {
        let call = app.store.call(call_sid).await.ok().flatten();
        let settled = call.as_ref().is_some_and(|c| c.settled_at.is_some());
        if settled || Instant::now() >= deadline {
            break call;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let Some(call) = call else {
        return json!({ "ended": true });
    };
    let order = match call.order_id.as_deref() {
        Some(id) => app.store.order(id).await.ok().flatten(),
        None => None,
    };
    let charge = match &order {
        Some(o) => app
            .store
            .charges_for_order(&o.id)
            .await
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.call_sid == call_sid),
        None => None,
    };
    json!({
        "ended": true,
        "settled": call.settled_at.is_some(),
        "talkedSeconds": call.billable_seconds().0,
        "secondsLeft": order.as_ref().map(|o| o.seconds_left().0),
        "charge": charge.map(|c| c.currency.format(c.amount)),
    })
}

/// What the page shows during the agent part: the allowance left, and overage's terms.
async fn allowance(app: &crate::App, call_sid: &str) -> Option<Value> {
    let call = app.store.call(call_sid).await.ok()??;
    let order = app.store.order(call.order_id.as_deref()?).await.ok()??;
    Some(json!({
        "event": "account",
        "secondsLeft": order.seconds_left().0,
        "overage": crate::domain::ledger::overage_allowed(&order).is_ok(),
        "overagePrice": order.currency.format(order.overage_price),
        "warnBefore": app.bridge.warn_before_secs,
        "tick": app.bridge.tick.as_secs_f64(),
    }))
}

/// `GET /demo/phone/media`: the page's audio socket, relayed to `/media` as Twilio's stream.
pub async fn media(
    State(app): State<AppState>,
    Extension(demo): Extension<Arc<DemoServices>>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            if let Err(e) = relay(app, demo, socket).await {
                tracing::info!(error = %e, "demo phone media relay ended");
            }
        })
}

#[derive(Deserialize)]
struct StartFromPage {
    call_sid: String,
    url: String,
    #[serde(default)]
    parameters: HashMap<String, String>,
}

/// Why a relay ended early.
type RelayError = Box<dyn std::error::Error + Send + Sync>;

async fn relay(
    app: AppState,
    demo: Arc<DemoServices>,
    mut page: WebSocket,
) -> Result<(), RelayError> {
    // The page names the stream it was told to open.
    let start: StartFromPage = match page.recv().await {
        Some(Ok(PageMessage::Text(t))) => serde_json::from_str(&t)?,
        _ => return Ok(()),
    };
    let caller = caller_of(&demo, &start.call_sid)?;
    let url = app.stream_url();
    if start.url != url {
        return Err("the stream is not this server's".into());
    }
    let (account, _) = account(&app);
    let parameters: Vec<(String, String)> = start.parameters.into_iter().collect();
    let mut callgate = MediaStream::open(&url, &account, &start.call_sid, &parameters).await?;
    // Subscribed before anything is awaited: the agent's greeting may come at once.
    let mut lines = demo.hub.subscribe();
    if let Some(allowance) = allowance(&app, &start.call_sid).await {
        page.send(PageMessage::text(allowance.to_string())).await?;
    }
    loop {
        tokio::select! {
            from_page = page.recv() => {
                let Some(Ok(PageMessage::Text(text))) = from_page else { break };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                match v["event"].as_str() {
                    Some("media") => {
                        let Some(payload) = v["payload"].as_str() else { continue };
                        // Only well-formed audio goes on, at most one second per message.
                        let Ok(len) = B64.decode(payload).map(|b| b.len()) else { continue };
                        if len > 8000 {
                            continue;
                        }
                        if !callgate.send_media_base64(payload, len).await {
                            break;
                        }
                    }
                    Some("mark") => {
                        callgate.send_mark(v["name"].as_str().unwrap_or_default()).await;
                    }
                    Some("dtmf") => {
                        if let Some(digit) = v["digit"].as_str().and_then(|d| d.chars().next()) {
                            if digit.is_ascii_digit() || digit == '*' || digit == '#' {
                                callgate.send_dtmf(digit).await;
                            }
                        }
                    }
                    Some("text") => {
                        let text = v["text"].as_str().unwrap_or_default().trim();
                        if !text.is_empty() && !demo.hub.type_text(&caller, text) {
                            let _ = page.send(PageMessage::text(json!({ "event": "notice",
                                "text": "The agent is not listening yet." }).to_string())).await;
                        }
                    }
                    Some("stop") => break,
                    _ => {}
                }
            }
            from_callgate = callgate.recv_text() => {
                match from_callgate {
                    Some(Ok(text)) => page.send(PageMessage::text(text)).await?,
                    Some(Err(_binary)) => {}
                    None => {
                        // callgate ended the stream: the call goes on with the next TwiML.
                        let _ = page.send(PageMessage::text(json!({ "event": "closed" }).to_string())).await;
                        let _ = page.send(PageMessage::Close(None)).await;
                        return Ok(());
                    }
                }
            }
            line = lines.recv() => {
                if let Ok(line) = line {
                    if line.caller == caller {
                        let v = json!({ "event": "transcript", "speaker": line.speaker, "text": line.text });
                        page.send(PageMessage::text(v.to_string())).await?;
                    }
                }
            }
        }
    }
    // The caller hung up (or the page went away): Twilio stops the stream.
    callgate.hang_up().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_the_page_cannot_follow_is_an_error() {
        assert!(steps("not xml").is_err());
        assert!(steps("<Response><Say>hi</Say></Response>").is_ok());
    }

    #[test]
    fn numbers() {
        assert!(valid_number("+15550123456"));
        assert!(!valid_number("15550123456"));
        assert!(!valid_number("+1555abc"));
    }
}
