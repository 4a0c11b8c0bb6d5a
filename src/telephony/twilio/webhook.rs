//! Twilio's voice webhooks as types: the form a signature checked, read once into a
//! [`VoiceRequest`] (the greeting, the code step, after the stream) or a [`StatusCallback`],
//! so that nothing past this boundary reads a field by its name.

use crate::domain::call::TwilioStatus;
pub use crate::domain::phone::E164;

use super::TwilioForm;

/// Twilio's id of a call (`CA` and 32 hex digits in production). Bounded and plain: letters,
/// digits, `_` and `-`, at most 64.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallSid(String);

impl CallSid {
    pub fn parse(raw: &str) -> Option<CallSid> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        ok.then(|| CallSid(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who is calling, as Twilio says: a number, or something else (`anonymous`, a SIP or client
/// address) that still names the caller for the throttles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Number(E164),
    Other(String),
}

impl Caller {
    /// Longest caller id kept as it came (anything longer is cut: it only keys throttles).
    const MAX: usize = 128;

    fn parse(raw: Option<&str>) -> Caller {
        let raw = raw.map(str::trim).unwrap_or_default();
        match E164::parse(raw) {
            Some(number) => Caller::Number(number),
            None if raw.is_empty() => Caller::Other("anonymous".into()),
            None => Caller::Other(raw.chars().take(Caller::MAX).collect()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Caller::Number(n) => n.as_str(),
            Caller::Other(s) => s,
        }
    }
}

/// A voice webhook: the incoming call, a Gather's digits, or the return after the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceRequest {
    pub call_sid: CallSid,
    pub from: Caller,
    /// The number called (not checked: Twilio routes only the operator's numbers here).
    pub to: String,
    /// The keys a `<Gather>` collected, when this is its action.
    pub digits: Option<String>,
    /// How the caller ID was verified (SHAKEN/STIR), when Twilio says: `StirVerstat`.
    pub stir_verstat: Option<String>,
    /// Seconds of a `<Dial>`ed call, when this is its action: `DialCallDuration`.
    pub dial_call_duration: Option<i64>,
}

impl VoiceRequest {
    /// `None` without a usable `CallSid`.
    pub fn parse(form: &TwilioForm) -> Option<VoiceRequest> {
        Some(VoiceRequest {
            call_sid: CallSid::parse(form.get("CallSid")?)?,
            from: Caller::parse(form.get("From")),
            to: form
                .get("To")
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect(),
            digits: form.get("Digits").map(String::from),
            stir_verstat: form
                .get("StirVerstat")
                .map(|v| v.chars().take(64).collect()),
            dial_call_duration: form
                .get("DialCallDuration")
                .and_then(|d| d.parse::<i64>().ok())
                .filter(|d| (0..=86_400).contains(d)),
        })
    }
}

/// Twilio's status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    pub call: VoiceRequest,
    /// `CallStatus`; the raw text when Twilio sent one callgate does not know.
    pub status: Result<TwilioStatus, String>,
    /// `CallDuration` in seconds, when sent; the raw text when it is not a whole number.
    pub duration: Option<Result<i64, String>>,
}

impl StatusCallback {
    /// `None` without a usable `CallSid`.
    pub fn parse(form: &TwilioForm) -> Option<StatusCallback> {
        let raw_status = form.get("CallStatus").unwrap_or_default();
        Some(StatusCallback {
            call: VoiceRequest::parse(form)?,
            status: raw_status.parse().map_err(|_| raw_status.to_string()),
            duration: form
                .get("CallDuration")
                .map(|raw| match raw.trim().parse::<i64>() {
                    Ok(d) if d >= 0 => Ok(d),
                    _ => Err(raw.to_string()),
                }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> TwilioForm {
        TwilioForm {
            params: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_voice_request_needs_a_plain_call_sid() {
        let ok = VoiceRequest::parse(&form(&[
            ("CallSid", "CA0123456789abcdef0123456789abcdef"),
            ("From", "+15558880001"),
            ("To", "+15550100200"),
            ("Digits", "1234#"),
        ]))
        .unwrap();
        assert_eq!(
            ok.from,
            Caller::Number(E164::parse("+15558880001").unwrap())
        );
        assert_eq!(ok.digits.as_deref(), Some("1234#"));
        assert_eq!(ok.stir_verstat, None);
        let attested = VoiceRequest::parse(&form(&[
            ("CallSid", "CA1"),
            ("StirVerstat", "TN-Validation-Passed-A"),
        ]))
        .unwrap();
        assert_eq!(
            attested.stir_verstat.as_deref(),
            Some("TN-Validation-Passed-A")
        );
        for bad in ["", "CA 1", "CA<x>", &"C".repeat(65)] {
            assert!(
                VoiceRequest::parse(&form(&[("CallSid", bad)])).is_none(),
                "{bad}"
            );
        }
        assert!(VoiceRequest::parse(&form(&[("From", "+15558880001")])).is_none());
    }

    #[test]
    fn callers_without_a_number_are_still_named() {
        let anonymous = VoiceRequest::parse(&form(&[("CallSid", "CA1")])).unwrap();
        assert_eq!(anonymous.from.as_str(), "anonymous");
        let client =
            VoiceRequest::parse(&form(&[("CallSid", "CA1"), ("From", "client:alice")])).unwrap();
        assert_eq!(client.from, Caller::Other("client:alice".into()));
    }

    #[test]
    fn status_and_duration_keep_what_they_could_not_read() {
        let s = StatusCallback::parse(&form(&[
            ("CallSid", "CA1"),
            ("CallStatus", "completed"),
            ("CallDuration", "75"),
        ]))
        .unwrap();
        assert_eq!(s.status, Ok(TwilioStatus::Completed));
        assert_eq!(s.duration, Some(Ok(75)));
        let odd = StatusCallback::parse(&form(&[
            ("CallSid", "CA1"),
            ("CallStatus", "exploded"),
            ("CallDuration", "-3"),
        ]))
        .unwrap();
        assert_eq!(odd.status, Err("exploded".into()));
        assert_eq!(odd.duration, Some(Err("-3".into())));
    }
}
