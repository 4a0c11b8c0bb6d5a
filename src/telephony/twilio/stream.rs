//! Twilio Media Streams messages (bidirectional `<Connect><Stream>`).
//!
//! A call carries fifty media frames a second each way, so the media messages are read
//! borrowing from the frame (no copy of the payload) and written into one buffer sized for
//! them (see [`MediaWriter`]).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::telephony::audio::Base64Audio;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    Connected,
    Start {
        stream_sid: String,
        call_sid: String,
        parameters: HashMap<String, String>,
    },
    /// Base64 μ-law 8 kHz from the caller, borrowed from the frame where it needs no
    /// unescaping (always, for base64).
    Media {
        track: Cow<'a, str>,
        payload: Cow<'a, str>,
    },
    Dtmf {
        digit: String,
    },
    Mark {
        name: String,
    },
    Stop,
    Other(String),
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default)]
    start: Option<RawStart>,
    #[serde(default, borrow)]
    media: Option<RawMedia<'a>>,
    #[serde(default)]
    dtmf: Option<RawDtmf>,
    #[serde(default)]
    mark: Option<RawMark>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStart {
    stream_sid: String,
    call_sid: String,
    #[serde(default)]
    custom_parameters: HashMap<String, String>,
}

#[derive(Deserialize)]
struct RawMedia<'a> {
    #[serde(default, borrow)]
    track: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawDtmf {
    #[serde(default)]
    digit: String,
}

#[derive(Deserialize)]
struct RawMark {
    #[serde(default)]
    name: String,
}

/// Parses one text frame from Twilio.
pub fn parse(text: &str) -> Result<StreamEvent<'_>, String> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(match raw.event.as_ref() {
        "connected" => StreamEvent::Connected,
        "start" => {
            let s = raw.start.ok_or("start event without start")?;
            StreamEvent::Start {
                stream_sid: s.stream_sid,
                call_sid: s.call_sid,
                parameters: s.custom_parameters,
            }
        }
        "media" => {
            let m = raw.media.ok_or("media event without media")?;
            StreamEvent::Media {
                track: m.track.unwrap_or(Cow::Borrowed("inbound")),
                payload: m.payload,
            }
        }
        "dtmf" => StreamEvent::Dtmf {
            digit: raw.dtmf.map(|d| d.digit).unwrap_or_default(),
        },
        "mark" => StreamEvent::Mark {
            name: raw.mark.map(|m| m.name).unwrap_or_default(),
        },
        "stop" => StreamEvent::Stop,
        other => StreamEvent::Other(other.to_string()),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outgoing<'a> {
    event: &'a str,
    stream_sid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<Payload<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mark: Option<Name<'a>>,
}

#[derive(Serialize)]
struct Payload<'a> {
    payload: &'a str,
}

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

fn out(o: Outgoing<'_>) -> String {
    serde_json::to_string(&o).unwrap_or_default()
}

/// Audio for the caller (base64 μ-law 8 kHz).
pub fn media(stream_sid: &str, payload: &str) -> String {
    out(Outgoing {
        event: "media",
        stream_sid,
        media: Some(Payload { payload }),
        mark: None,
    })
}

/// Writes one stream's media messages: the part before the payload is escaped once per
/// stream, and a checked base64 payload needs no escaping, so each frame is two copies
/// into a buffer of the right size. The same bytes as [`media`].
pub struct MediaWriter {
    head: String,
}

const MEDIA_TAIL: &str = "\"}}";

impl MediaWriter {
    pub fn new(stream_sid: &str) -> MediaWriter {
        let whole = media(stream_sid, "");
        let head = whole
            .strip_suffix(MEDIA_TAIL)
            .unwrap_or_default()
            .to_string();
        MediaWriter { head }
    }

    pub fn media(&self, payload: Base64Audio<'_>) -> String {
        let payload = payload.as_str();
        let mut out = String::with_capacity(self.head.len() + payload.len() + MEDIA_TAIL.len());
        out.push_str(&self.head);
        out.push_str(payload);
        out.push_str(MEDIA_TAIL);
        out
    }
}

/// Drops the audio Twilio has buffered (barge-in).
pub fn clear(stream_sid: &str) -> String {
    out(Outgoing {
        event: "clear",
        stream_sid,
        media: None,
        mark: None,
    })
}

pub fn mark(stream_sid: &str, name: &str) -> String {
    out(Outgoing {
        event: "mark",
        stream_sid,
        media: None,
        mark: Some(Name { name }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_twilio_events() {
        let start = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":{"token":"t"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#;
        assert_eq!(
            parse(start).unwrap(),
            StreamEvent::Start {
                stream_sid: "MZ1".into(),
                call_sid: "CA1".into(),
                parameters: [("token".to_string(), "t".to_string())].into()
            }
        );
        let media = r#"{"event":"media","sequenceNumber":"2","media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"/w=="},"streamSid":"MZ1"}"#;
        // Read in place: the payload is the frame's own bytes.
        let StreamEvent::Media { payload, .. } = parse(media).unwrap() else {
            panic!("not media")
        };
        assert!(matches!(payload, Cow::Borrowed(_)));
        // Escaped (`\/` is a legal spelling of `/`): unescaped into a copy.
        let escaped = r#"{"event":"media","media":{"payload":"\/w=="}}"#;
        assert_eq!(
            parse(escaped).unwrap(),
            StreamEvent::Media {
                track: "inbound".into(),
                payload: "/w==".into()
            }
        );
        assert_eq!(
            parse(media).unwrap(),
            StreamEvent::Media {
                track: "inbound".into(),
                payload: "/w==".into()
            }
        );
        assert_eq!(
            parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#).unwrap(),
            StreamEvent::Connected
        );
        assert_eq!(
            parse(
                r#"{"event":"stop","streamSid":"MZ1","stop":{"accountSid":"AC1","callSid":"CA1"}}"#
            )
            .unwrap(),
            StreamEvent::Stop
        );
        assert_eq!(
            parse(r#"{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"5"}}"#).unwrap(),
            StreamEvent::Dtmf { digit: "5".into() }
        );
        assert_eq!(
            parse(r#"{"event":"mark","mark":{"name":"w"}}"#).unwrap(),
            StreamEvent::Mark { name: "w".into() }
        );
        for bad in [
            "",
            "{}",
            r#"{"event":"start"}"#,
            r#"{"event":"media","media":{}}"#,
            "[1]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builds_server_messages() {
        assert_eq!(
            media("MZ1", "AA=="),
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AA=="}}"#
        );
        assert_eq!(clear("MZ1"), r#"{"event":"clear","streamSid":"MZ1"}"#);
        // The writer gives the same bytes, escaping included.
        let mut scratch = Vec::new();
        for sid in ["MZ1", "MZ\"quoted\"\\", ""] {
            let audio = Base64Audio::check("AA==", &mut scratch).unwrap();
            assert_eq!(MediaWriter::new(sid).media(audio), media(sid, "AA=="));
        }
        assert_eq!(
            mark("MZ1", "w"),
            r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"w"}}"#
        );
    }
}
