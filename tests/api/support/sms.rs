//! A stand-in for Twilio's REST API, Basic auth with the account SID and auth token: the
//! Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`), which records each message
//! and answers as Twilio does, or, when told, with a 503 (Twilio down) or a 400 (a number it
//! refuses); and a call's update (`POST .../Calls/{CallSid}.json` with `Status=completed`),
//! which records the call asked to end. Twilio then ends the call's media stream and sends
//! its status callback: the test, playing Twilio's part on the call, does that.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::{json, Value};

/// How the stand-in answers the next messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Queued,
    Down,
    Refused,
}

#[derive(Debug, Clone)]
pub struct Sms {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub status_callback: Option<String>,
}

#[derive(Default)]
struct Shared {
    sent: Vec<Sms>,
    answer: Option<Answer>,
    /// Calls asked to end (`Status=completed`), in order.
    ended: Vec<String>,
}

pub struct MessagesApi {
    pub base: String,
    shared: Arc<Mutex<Shared>>,
    _server: tokio::task::JoinHandle<()>,
}

impl MessagesApi {
    pub async fn start(account_sid: &'static str, auth_token: &'static str) -> MessagesApi {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = (shared.clone(), account_sid, auth_token);
        let app = Router::new()
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(create))
            .route("/2010-04-01/Accounts/{sid}/Calls/{call}", post(update_call))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MessagesApi {
            base,
            shared,
            _server: server,
        }
    }

    pub fn answer(&self, answer: Answer) {
        self.shared.lock().unwrap().answer = Some(answer);
    }

    pub fn sent(&self) -> Vec<Sms> {
        self.shared.lock().unwrap().sent.clone()
    }

    /// The calls Twilio was asked to end.
    pub fn ended(&self) -> Vec<String> {
        self.shared.lock().unwrap().ended.clone()
    }
}

type St = (Arc<Mutex<Shared>>, &'static str, &'static str);

async fn create(
    State((shared, account_sid, auth_token)): State<St>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> (StatusCode, Json<Value>) {
    if let Err(refused) = authenticate(&headers, &sid, account_sid, auth_token) {
        return refused;
    }
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut shared = shared.lock().unwrap();
    match shared.answer.unwrap_or(Answer::Queued) {
        Answer::Down => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "code": 20500, "message": "Service unavailable", "status": 503 })),
            )
        }
        Answer::Refused => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({ "code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400 }),
                ),
            )
        }
        Answer::Queued => {}
    }
    let message_sid = format!("SM{:032x}", shared.sent.len() + 1);
    shared.sent.push(Sms {
        sid: message_sid.clone(),
        to: get("To").unwrap_or_default(),
        from: get("From").unwrap_or_default(),
        body: get("Body").unwrap_or_default(),
        status_callback: get("StatusCallback"),
    });
    (
        StatusCode::CREATED,
        Json(
            json!({ "sid": message_sid, "status": "queued", "to": get("To"), "from": get("From") }),
        ),
    )
}

/// `POST .../Calls/{CallSid}.json`: `Status=completed` ends a call in progress (Twilio answers
/// the call's resource); a call it does not know is a 404, as Twilio's.
async fn update_call(
    State((shared, account_sid, auth_token)): State<St>,
    Path((sid, call)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> (StatusCode, Json<Value>) {
    if let Err(refused) = authenticate(&headers, &sid, account_sid, auth_token) {
        return refused;
    }
    let Some(call_sid) = call.strip_suffix(".json").filter(|c| c.starts_with("CA")) else {
        return (
            StatusCode::NOT_FOUND,
            Json(
                json!({ "code": 20404, "message": "The requested resource was not found", "status": 404 }),
            ),
        );
    };
    let status = form
        .iter()
        .find(|(n, _)| n == "Status")
        .map(|(_, v)| v.as_str());
    if status != Some("completed") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "code": 21218, "message": "Invalid Status", "status": 400 })),
        );
    }
    shared.lock().unwrap().ended.push(call_sid.to_string());
    (
        StatusCode::OK,
        Json(json!({ "sid": call_sid, "status": "completed" })),
    )
}

/// Twilio's Basic auth: the account SID and auth token, for the account in the path.
fn authenticate(
    headers: &HeaderMap,
    sid: &str,
    account_sid: &str,
    auth_token: &str,
) -> Result<(), (StatusCode, Json<Value>)> {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{account_sid}:{auth_token}"))
    );
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&expected);
    if authorized && sid == account_sid {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({ "code": 20003, "message": "Authenticate", "status": 401 })),
        ))
    }
}
