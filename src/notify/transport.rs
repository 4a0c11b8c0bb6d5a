//! The two ways a message leaves: SMTP to the operator's relay (lettre), and Twilio's
//! Messages API. Each answers whether a failure is worth trying again.

use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{MailConfig, TwilioConfig};

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The channel is not configured (no `SMTP_URL`, no Twilio): never sent.
    #[error("{0} is not configured")]
    NotConfigured(&'static str),
    /// Worth another try later (the relay down, a timeout, a 5xx).
    #[error("{0}")]
    Transient(String),
    /// Trying again would fail the same way (a refused address, a 4xx).
    #[error("{0}")]
    Permanent(String),
}

/// Sends one email; nothing of its text is logged.
pub async fn email(
    mail: Option<&MailConfig>,
    to: &str,
    subject: &str,
    body: String,
) -> Result<(), SendError> {
    let mail = mail.ok_or(SendError::NotConfigured("email (SMTP_URL)"))?;
    let from: Mailbox = mail
        .from
        .parse()
        .map_err(|e| SendError::Permanent(format!("MAIL_FROM: {e}")))?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| SendError::Permanent(format!("address refused: {e}")))?;
    let message = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| SendError::Permanent(e.to_string()))?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(mail.smtp_url.expose())
        .map_err(|e| SendError::Permanent(format!("SMTP_URL: {e}")))?
        .timeout(Some(std::time::Duration::from_secs(20)))
        .build();
    match transport.send(message).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
        Err(e) => Err(SendError::Transient(e.to_string())),
    }
}

/// Sends one SMS through Twilio's Messages API from the operator's number, with a status
/// callback; Twilio's message SID once it is queued.
pub async fn sms(
    twilio: Option<&TwilioConfig>,
    status_callback: String,
    to: &str,
    body: String,
) -> Result<String, SendError> {
    use crate::telephony::twilio::rest::{self, TwilioApiError};
    let twilio = twilio.ok_or(SendError::NotConfigured("SMS (Twilio)"))?;
    let form = [
        ("To", to.to_string()),
        ("From", twilio.phone_number.clone()),
        ("Body", body),
        ("StatusCallback", status_callback),
    ];
    let body = rest::post(twilio, "Messages.json", &form)
        .await
        .map_err(|e| match e {
            TwilioApiError::Transient(why) => SendError::Transient(why),
            TwilioApiError::Refused(why) => SendError::Permanent(why),
        })?;
    body.get("sid")
        .and_then(|s| s.as_str())
        .map(String::from)
        .ok_or_else(|| SendError::Transient("Twilio answered without a message SID".into()))
}
