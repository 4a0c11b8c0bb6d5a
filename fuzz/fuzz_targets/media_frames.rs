//! Text frames of the two WebSockets the bridge reads: Twilio's media stream and the agent's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = callgate::telephony::twilio::stream::parse(&text);
    let _ = callgate::telephony::elevenlabs::parse(&text);
});
