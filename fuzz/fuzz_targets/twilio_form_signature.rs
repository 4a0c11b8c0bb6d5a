//! A Twilio webhook request: form body, URL and X-Twilio-Signature header, all from outside.
//! Input: URL, NUL, header, NUL, body. Nothing may panic; a signature we compute validates.
#![no_main]

use callgate::telephony::twilio::signature;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let _ = signature::validate("token", &url, &params, &header);
    let good = signature::compute("token", &url, &params);
    assert!(signature::validate("token", &url, &params, &good));
    assert!(header == good || !signature::validate("token", &url, &params, &header));
});
