//! Twilio's webhooks: the signed form, and the menu's answers as TwiML.
//!
//! Every handler answers TwiML, even on failure: an apology and a hang-up, never an error
//! page Twilio would read out as "an application error has occurred".

use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use crate::http::AppState;
use crate::menu::flow;
use crate::telephony::twilio::webhook::{StatusCallback, VoiceRequest};
pub use crate::telephony::twilio::TwilioForm;
use crate::telephony::twilio::{signature, twiml};

pub use crate::telephony::twilio::{
    AFTER_STREAM_PATH, CODE_PATH, FORGET_PATH, INCOMING_PATH, OLD_INCOMING_PATH, OLD_STATUS_PATH,
    REMEMBER_PATH, SMS_STATUS_PATH, STATUS_PATH, TRANSFER_ENDED_PATH,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(INCOMING_PATH, post(incoming))
        .route(OLD_INCOMING_PATH, post(incoming))
        .route(CODE_PATH, post(code))
        .route(STATUS_PATH, post(status))
        .route(OLD_STATUS_PATH, post(status))
        .route(AFTER_STREAM_PATH, post(after_stream))
        .route(TRANSFER_ENDED_PATH, post(transfer_ended))
        .route(REMEMBER_PATH, post(remember))
        .route(FORGET_PATH, post(forget))
        .route(SMS_STATUS_PATH, post(sms_status))
}

/// `POST /sms/status`: Twilio's signed report on an SMS, recorded on its message.
async fn sms_status(State(app): State<AppState>, form: TwilioForm) -> Response {
    let (Some(sid), Some(status)) = (form.get("MessageSid"), form.get("MessageStatus")) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let Some(state) = crate::domain::message::MessageState::from_twilio(status) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let error = form.get("ErrorCode").map(|c| format!("Twilio error {c}"));
    match app
        .store
        .message_delivery(sid, state, error.as_deref(), app.clock.now())
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "SMS status not recorded");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// A TwiML document as an HTTP response.
pub struct TwimlResponse(pub String);

impl IntoResponse for TwimlResponse {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], self.0).into_response()
    }
}

impl FromRequest<AppState> for TwilioForm {
    type Rejection = Response;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let Some(twilio) = app.config.twilio.as_ref() else {
            return Err(
                (StatusCode::SERVICE_UNAVAILABLE, "phone menu not configured").into_response(),
            );
        };
        let signature = req
            .headers()
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri().path().to_string());
        let body = Bytes::from_request(req, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        let url = app.public_url(&path);
        if !signature::validate(twilio.auth_token.expose(), &url, &params, &signature) {
            tracing::warn!(
                path = %path,
                signed = !signature.is_empty(),
                "refused a request without a valid X-Twilio-Signature"
            );
            return Err((StatusCode::FORBIDDEN, "invalid Twilio signature").into_response());
        }
        Ok(TwilioForm { params })
    }
}

/// Which try at entering a code this is (carried in the signed Gather action URL).
#[derive(Debug, Deserialize)]
pub struct TryQuery {
    #[serde(rename = "try")]
    pub attempt: Option<u32>,
    /// The digits of this try typed before a pause (the caller is asked for the rest).
    pub sofar: Option<String>,
}

/// A voice webhook, signed and typed; one without a usable `CallSid` is answered with an
/// apology and a hang-up.
pub struct Voice(pub VoiceRequest);

impl FromRequest<AppState> for Voice {
    type Rejection = Response;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let form = TwilioForm::from_request(req, app).await?;
        match VoiceRequest::parse(&form) {
            Some(request) => Ok(Voice(request)),
            None => {
                tracing::warn!("voice webhook without a usable CallSid");
                Err(TwimlResponse(flow::no_call(app)).into_response())
            }
        }
    }
}

/// Twilio's status callback, signed and typed; one without a usable `CallSid` is acknowledged
/// and ignored.
pub struct Status(pub StatusCallback);

impl FromRequest<AppState> for Status {
    type Rejection = Response;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let form = TwilioForm::from_request(req, app).await?;
        match StatusCallback::parse(&form) {
            Some(callback) => Ok(Status(callback)),
            None => {
                tracing::warn!("status callback without CallSid: ignored");
                Err(TwimlResponse(twiml::Twiml::new().finish()).into_response())
            }
        }
    }
}

async fn incoming(State(app): State<AppState>, Voice(req): Voice) -> TwimlResponse {
    // The old deployment took the digits at the same URL: keep doing so.
    let twiml = if req.digits.is_some() {
        flow::code(&app, &req, 1, "").await
    } else {
        flow::incoming(&app, &req).await
    };
    TwimlResponse(twiml)
}

async fn code(
    State(app): State<AppState>,
    Query(q): Query<TryQuery>,
    Voice(req): Voice,
) -> TwimlResponse {
    let sofar = q.sofar.as_deref().unwrap_or_default();
    TwimlResponse(flow::code(&app, &req, q.attempt.unwrap_or(1), sofar).await)
}

async fn status(State(app): State<AppState>, Status(callback): Status) -> Response {
    match flow::status(&app, &callback).await {
        Ok(()) => TwimlResponse(twiml::Twiml::new().finish()).into_response(),
        // A 5xx makes Twilio retry the callback later; the handler is idempotent.
        Err(e) => {
            tracing::error!(error = %e, "status callback not recorded");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}

async fn after_stream(State(app): State<AppState>, Voice(req): Voice) -> TwimlResponse {
    TwimlResponse(flow::after_stream(&app, &req).await)
}

/// `POST /voice/transfer-ended`: the `<Dial>` to the operator ended.
async fn transfer_ended(State(app): State<AppState>, Voice(req): Voice) -> TwimlResponse {
    TwimlResponse(flow::transfer_ended(&app, &req).await)
}

async fn remember(State(app): State<AppState>, Voice(req): Voice) -> TwimlResponse {
    TwimlResponse(crate::menu::returning::remember(&app, &req).await)
}

async fn forget(State(app): State<AppState>, Voice(req): Voice) -> TwimlResponse {
    TwimlResponse(crate::menu::returning::forget(&app, &req).await)
}
