//! A Stripe webhook delivery: Stripe-Signature header and raw body, then the event JSON.
//! Input: header, NUL, body. Nothing may panic; a body we sign verifies, another does not.
#![no_main]

use callgate::stripe::events::Event;
use callgate::stripe::signature;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_fuzz";
const NOW: i64 = 1_790_000_000;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let header = String::from_utf8_lossy(header);
    let _ = signature::verify(Some(&header), body, SECRET, NOW);
    let _ = signature::verify(None, body, SECRET, NOW);
    let signed = format!("t={NOW},v1={}", signature::sign(SECRET, NOW, body));
    assert!(signature::verify(Some(&signed), body, SECRET, NOW).is_ok());
    if !body.is_empty() {
        assert!(signature::verify(Some(&signed), &body[1..], SECRET, NOW).is_err());
    }
    // What the webhook does next with a verified body.
    if let Ok(event) = serde_json::from_slice::<Event>(body) {
        let _ = (event.id.len(), event.kind.len(), event.data.object.get("payment_intent"));
    }
});
