//! TwiML built from outside text (prompt words, URLs, stream parameters) is always well-formed
//! XML that carries the text; and the demo phone's TwiML reader never panics on any document.
#![no_main]

use callgate::telephony::twilio::twiml::{Gather, Speech, Twiml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{0}');
    let (words, url, name) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let say = Speech::Say {
        text: words.to_string(),
        voice: name.to_string(),
        language: "en-US".into(),
    };
    let gather = Gather {
        action: url.to_string(),
        num_digits: 12,
        timeout_secs: 8,
    };
    let doc = Twiml::new()
        .gather(&gather, &[&say])
        .speak(&Speech::Play { url: url.to_string() })
        .connect_stream(url, &[(name, words)])
        .redirect(url)
        .hangup()
        .finish();
    let parsed = roxmltree::Document::parse(&doc);
    assert!(parsed.is_ok(), "not well-formed: {doc}");
    let _ = callgate::demo::phone::steps(&doc);
    let _ = callgate::demo::phone::steps(&text);
});
