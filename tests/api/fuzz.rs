//! Property-based fuzzing of every parser that takes input from outside (cargo fuzz needs a
//! nightly toolchain this project does not assume): none may panic, whatever arrives.

use callgate::stripe::signature as stripe_sig;
use callgate::telephony::elevenlabs;
use callgate::telephony::twilio::signature as twilio_sig;
use callgate::telephony::twilio::stream;
use callgate::telephony::twilio::twiml::{escape, Gather, Speech, Twiml};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn json_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\u{FFFE}\u{FFFF}<&>a]{0,8}",
        "\\{\"(event|type)\":\"[a-z_]{0,20}\"(,\"[a-z_]{1,12}\":(\\{\\}|null|[0-9]{1,4}|\"[ -~]{0,20}\"))*\\}",
        Just(r#"{"event":"media","media":{"payload":"////"}}"#.to_string()),
        Just(r#"{"type":"audio","audio_event":{"audio_base_64":"AAAA","event_id":-5}}"#.to_string()),
    ]
}

proptest! {
    // FUZZ_CASES raises the count for a long run (see README: Fuzzing).
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn demo_phone_twiml_reader_never_panics(text in prop_oneof![
        json_like(),
        "<Response>(<(Say|Play|Gather|Redirect|Connect|Stream|Hangup|Pause)( [a-zA-Z]{1,9}=\"[ -~]{0,9}\")*/?>){0,6}</Response>",
    ]) {
        let _ = callgate::demo::phone::steps(&text);
    }

    #[test]
    fn twilio_media_frames_never_panic(text in json_like()) {
        let _ = stream::parse(&text);
    }

    #[test]
    fn agent_messages_never_panic(text in json_like()) {
        let _ = elevenlabs::parse(&text);
    }

    #[test]
    fn stripe_signature_headers_never_panic(header in any::<Option<String>>(), body in any::<Vec<u8>>(), now in any::<i64>()) {
        let _ = stripe_sig::verify(header.as_deref(), &body, "whsec_x", now);
    }

    #[test]
    fn stripe_signatures_verify_only_their_own_body(body in any::<Vec<u8>>(), other in any::<Vec<u8>>(), t in 0i64..4_000_000_000) {
        let header = format!("t={t},v1={}", stripe_sig::sign("whsec_x", t, &body));
        prop_assert!(stripe_sig::verify(Some(&header), &body, "whsec_x", t).is_ok());
        if other != body {
            prop_assert!(stripe_sig::verify(Some(&header), &other, "whsec_x", t).is_err());
        }
    }

    #[test]
    fn twilio_forms_and_signatures_never_panic(body in any::<Vec<u8>>(), url in any::<String>(), header in any::<String>()) {
        let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
        let _ = twilio_sig::validate("token", &url, &params, &header);
        let sig = twilio_sig::compute("token", &url, &params);
        prop_assert!(twilio_sig::validate("token", &url, &params, &sig));
    }

    #[test]
    fn twiml_is_always_well_formed(
        text in prop_oneof![any::<String>(), "[\u{FFFE}\u{FFFF}<&>\"'a\x01\r\n]{0,12}"],
        url in any::<String>(),
        name in any::<String>(),
    ) {
        let say = Speech::Say { text: text.clone(), voice: name.clone(), language: "en-US".into() };
        let doc = Twiml::new()
            .gather(&Gather { action: url.clone(), num_digits: 12, timeout_secs: 8 }, &[&say])
            .speak(&Speech::Play { url: url.clone() })
            .connect_stream(&url, &[(name.as_str(), text.as_str())])
            .redirect(&url)
            .hangup()
            .finish();
        let parsed = roxmltree::Document::parse(&doc);
        prop_assert!(parsed.is_ok(), "{doc}");
        let parsed = parsed.unwrap();
        // What the caller hears is exactly the text (less characters XML cannot carry).
        let said = parsed.descendants().find(|n| n.has_tag_name("Say")).and_then(|n| n.text()).unwrap_or("");
        let expected: String = text
            .chars()
            .filter(|c| ((*c as u32) >= 0x20 || matches!(c, '\t' | '\n' | '\r')) && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
            .collect();
        prop_assert_eq!(said.replace("\r\n", "\n").replace('\r', "\n"), expected.replace("\r\n", "\n").replace('\r', "\n"));
        prop_assert!(!escape(&text).contains('<'));
    }
}
