//! Twilio's voice platform as a caller sees it from callgate's side: signed webhook requests
//! with Twilio's call parameters, TwiML read verb by verb ([`twiml`]), Twilio's end of a
//! bidirectional media stream ([`media`]), and a scripted caller that does all of it
//! ([`Caller`]).
//!
//! The signing is written here independently of callgate's own validator, from Twilio's
//! documented scheme: the URL, then each POST parameter sorted by name as name+value,
//! HMAC-SHA1 with the auth token, base64.

mod caller;
pub mod media;
pub mod twiml;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

pub use caller::{Caller, Ending, Heard};
pub use media::{MediaStream, OpenError, Received};

/// The header Twilio signs its requests with.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Twilio's signature for a POST of `params` to `url`.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in &sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(data.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// A Twilio account as its webhooks show it.
#[derive(Debug, Clone)]
pub struct Account {
    pub account_sid: String,
    pub auth_token: String,
}

/// One inbound call: who calls which number, under which sid.
#[derive(Debug, Clone)]
pub struct Leg {
    pub call_sid: String,
    pub from: String,
    pub to: String,
}

impl Leg {
    /// A new call from `from` to `to` with a fresh `CA...` sid.
    pub fn new(from: &str, to: &str) -> Leg {
        Leg {
            call_sid: new_sid("CA"),
            from: from.into(),
            to: to.into(),
        }
    }

    /// The parameters Twilio sends with every voice request of this call.
    pub fn params(&self, account: &Account, status: &str) -> Vec<(String, String)> {
        [
            ("CallSid", self.call_sid.as_str()),
            ("AccountSid", account.account_sid.as_str()),
            ("From", self.from.as_str()),
            ("To", self.to.as_str()),
            ("Caller", self.from.as_str()),
            ("Called", self.to.as_str()),
            ("CallStatus", status),
            ("Direction", "inbound"),
            ("ApiVersion", "2010-04-01"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Twilio's status callback parameters for this call ending in `status` after
    /// `duration` seconds.
    pub fn status_params(
        &self,
        account: &Account,
        status: &str,
        duration: Option<&str>,
    ) -> Vec<(String, String)> {
        let mut params = self.params(account, status);
        if let Some(d) = duration {
            params.push(("CallDuration".into(), d.into()));
        }
        params.push(("Timestamp".into(), "Tue, 24 Nov 2026 16:00:00 +0000".into()));
        params.push(("SequenceNumber".into(), "0".into()));
        params
    }
}

/// A Twilio sid: the two-letter prefix and 32 hex digits.
pub fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", crate::random_hex(16))
}

/// POSTs `params` to `url` signed with `auth_token` (or with `signature` as given, to try a
/// forged one); answers (HTTP status, body).
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    params: &[(String, String)],
    signature: Signature<'_>,
) -> reqwest::Result<(u16, String)> {
    let mut req = http.post(url).form(params);
    match signature {
        Signature::Sign(auth_token) => {
            req = req.header(SIGNATURE_HEADER, sign(auth_token, url, params));
        }
        Signature::Given(Some(sig)) => req = req.header(SIGNATURE_HEADER, sig),
        Signature::Given(None) => {}
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// How a request is signed.
#[derive(Debug, Clone, Copy)]
pub enum Signature<'a> {
    /// As Twilio signs, with this auth token.
    Sign(&'a str),
    /// This header value, or none.
    Given(Option<&'a str>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Twilio's security documentation.
    #[test]
    fn signs_as_twilios_documented_example() {
        let params: Vec<(String, String)> = [
            ("From", "+14158675309"),
            ("CallSid", "CA1234567890ABCDE"),
            ("To", "+18005551212"),
            ("Digits", "1234"),
            ("Caller", "+14158675309"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            sign(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }
}
