//! ElevenLabs' post-call webhook: the signature (`ElevenLabs-Signature: t=TIMESTAMP,v0=HEX`,
//! HMAC-SHA256 under the webhook secret over `TIMESTAMP.BODY`) and the parts of a
//! `post_call_transcription` callgate keeps.

use serde::Deserialize;
use serde_json::Value;

pub use crate::crypto::SignatureError;
use crate::crypto::{sign_timestamped, verify_timestamped, Tolerance};

/// How old a signature's timestamp may be: ElevenLabs' own libraries refuse one older than
/// 30 minutes (deliveries may be retried that late). One from the future is refused too.
pub const TOLERANCE_SECS: i64 = 30 * 60;

/// The header the signature comes in.
pub const SIGNATURE_HEADER: &str = "elevenlabs-signature";

/// The dynamic variable the bridge names its call in, which the webhook sends back.
pub const CALL_VARIABLE: &str = "callgate_call_sid";
/// The dynamic variable holding the caller's number.
pub const CALLER_VARIABLE: &str = "caller_number";

/// The `v0` signature of `body` at `timestamp` (what ElevenLabs sends; tests sign with it).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    sign_timestamped(secret, timestamp, body)
}

/// Checks the `ElevenLabs-Signature` header against the raw body, then its timestamp.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let tolerance = Tolerance {
        max_age: TOLERANCE_SECS,
        max_ahead: 300,
    };
    verify_timestamped(header, "v0", body, secret, now, tolerance)
}

/// What callgate keeps of a `post_call_transcription`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostCall {
    pub conversation_id: String,
    /// The call, from the dynamic variables the bridge sent; `None` for a conversation that
    /// did not come through callgate.
    pub call_sid: Option<String>,
    pub caller: Option<String>,
    pub summary: String,
    pub outcome: Option<String>,
    /// `analysis` as sent (JSON).
    pub analysis: String,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    conversation_id: String,
    #[serde(default)]
    analysis: Value,
    #[serde(default)]
    conversation_initiation_client_data: Value,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("not a post-call webhook: {0}")]
    Malformed(String),
}

/// Reads a webhook body: `Ok(None)` for another kind of event (audio, initiation failure),
/// which callgate does not keep.
pub fn parse(body: &[u8]) -> Result<Option<PostCall>, PayloadError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    if envelope.kind != "post_call_transcription" {
        return Ok(None);
    }
    let data = envelope.data;
    let variables = &data.conversation_initiation_client_data["dynamic_variables"];
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
    Ok(Some(PostCall {
        conversation_id: data.conversation_id,
        call_sid: text(&variables[CALL_VARIABLE]),
        caller: text(&variables[CALLER_VARIABLE]),
        summary: text(&data.analysis["transcript_summary"]).unwrap_or_default(),
        outcome: text(&data.analysis["call_successful"]),
        analysis: data.analysis.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wsec_test";
    const BODY: &[u8] = br#"{"type":"post_call_transcription","event_timestamp":1,"data":{"agent_id":"a","conversation_id":"conv_1","status":"done","transcript":[],"metadata":{},"analysis":{"call_successful":"success","transcript_summary":"Talked about tides."},"conversation_initiation_client_data":{"dynamic_variables":{"callgate_call_sid":"CA1","caller_number":"+1555"}}}}"#;

    #[test]
    fn verifies_and_refuses() {
        let t = 1_700_000_000;
        let good = format!("t={t},v0={}", sign(SECRET, t, BODY));
        assert_eq!(verify(Some(&good), BODY, SECRET, t + 60), Ok(()));
        assert_eq!(
            verify(Some(&good), BODY, SECRET, t + TOLERANCE_SECS + 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(Some(&good), b"{}", SECRET, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&good), BODY, "other", t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(None, BODY, SECRET, t), Err(SignatureError::Missing));
        assert_eq!(
            verify(Some(&format!("t={t}")), BODY, SECRET, t),
            Err(SignatureError::Malformed)
        );
        // Stripe's v1 is not ElevenLabs' v0.
        let v1 = format!("t={t},v1={}", sign(SECRET, t, BODY));
        assert_eq!(
            verify(Some(&v1), BODY, SECRET, t),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn reads_what_is_kept() {
        let got = parse(BODY).unwrap().unwrap();
        assert_eq!(got.conversation_id, "conv_1");
        assert_eq!(got.call_sid.as_deref(), Some("CA1"));
        assert_eq!(got.caller.as_deref(), Some("+1555"));
        assert_eq!(got.summary, "Talked about tides.");
        assert_eq!(got.outcome.as_deref(), Some("success"));
        assert!(
            parse(br#"{"type":"post_call_audio","data":{"conversation_id":"c"}}"#)
                .unwrap()
                .is_none()
        );
        assert!(parse(b"[]").is_err());
    }
}
