//! Twilio's REST API, for what callgate asks of Twilio outside a webhook's answer: an SMS
//! (`Messages.json`) and ending a live call (`Calls/{sid}.json` with `Status=completed`).
//! Basic auth with the account SID and auth token.

use crate::config::TwilioConfig;

/// Why Twilio did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwilioApiError {
    /// Twilio could not be reached, or answered 429 or 5xx: asking again may work.
    #[error("{0}")]
    Transient(String),
    /// Twilio refused (its status, its error code and message): asking again will not help.
    #[error("{0}")]
    Refused(String),
}

/// POSTs `form` to `{api_base}/2010-04-01/Accounts/{account}/{resource}`; Twilio's JSON.
pub async fn post(
    twilio: &TwilioConfig,
    resource: &str,
    form: &[(&str, String)],
) -> Result<serde_json::Value, TwilioApiError> {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/{resource}",
        twilio.api_base.as_str().trim_end_matches('/'),
        twilio.account_sid
    );
    let resp = reqwest::Client::new()
        .post(url)
        .basic_auth(&twilio.account_sid, Some(twilio.auth_token.expose()))
        .form(form)
        .timeout(std::time::Duration::from_secs(20))
        .send()
        .await
        .map_err(|e| TwilioApiError::Transient(e.to_string()))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let why = format!(
        "Twilio {} (error {}): {}",
        status.as_u16(),
        body.get("code")
            .and_then(|c| c.as_i64())
            .unwrap_or_default(),
        body.get("message").and_then(|m| m.as_str()).unwrap_or("")
    );
    if status.is_server_error() || status.as_u16() == 429 {
        Err(TwilioApiError::Transient(why))
    } else {
        Err(TwilioApiError::Refused(why))
    }
}

/// Asks Twilio to hang up call `call_sid` now. Twilio then ends the call's media stream and
/// sends its final status callback, as when the caller hangs up, on whichever instance
/// carries the call: its end is metered and settled as any other.
pub async fn end_call(twilio: &TwilioConfig, call_sid: &str) -> Result<(), TwilioApiError> {
    let safe = !call_sid.is_empty() && call_sid.chars().all(|c| c.is_ascii_alphanumeric());
    if !safe {
        return Err(TwilioApiError::Refused("not a call SID".into()));
    }
    post(
        twilio,
        &format!("Calls/{call_sid}.json"),
        &[("Status", "completed".to_string())],
    )
    .await
    .map(|_| ())
}
