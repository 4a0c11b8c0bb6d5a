//! TwiML as Twilio reads it: a `<Response>` of verbs, run in order. Only the verbs callgate
//! uses are known; any other is an error (real Twilio would reject or misplay it).

use serde::Serialize;

/// One verb of a TwiML document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verb {
    Say {
        text: String,
    },
    Play {
        url: String,
    },
    Pause {
        seconds: u32,
    },
    /// Collect keypad digits while `prompts` play; post them to `action`. With nothing typed
    /// before `timeout` seconds, go on with the next verb (unless `action_on_empty_result`).
    Gather {
        action: String,
        /// `dtmf`, `speech` or both.
        input: String,
        num_digits: u32,
        timeout: u32,
        finish_on_key: String,
        action_on_empty_result: bool,
        prompts: Vec<Verb>,
    },
    Redirect {
        url: String,
    },
    /// `<Connect><Stream>`: a bidirectional media stream with custom parameters.
    Stream {
        url: String,
        #[serde(serialize_with = "as_map")]
        parameters: Vec<(String, String)>,
    },
    /// `<Dial>` a number: its `timeLimit` in seconds, and the `action` Twilio posts to when
    /// the dialled call ends (then follows that TwiML; without one it goes on after `<Dial>`).
    Dial {
        number: String,
        time_limit: Option<i64>,
        action: Option<String>,
    },
    Hangup,
}

fn as_map<S: serde::Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TwimlError {
    #[error("not XML: {0}")]
    Xml(String),
    #[error("the root is not <Response>")]
    Root,
    #[error("<Connect> without <Stream>")]
    ConnectWithoutStream,
    #[error("unknown verb <{0}>")]
    Unknown(String),
}

fn speech(node: &roxmltree::Node) -> Option<Verb> {
    let text = node.text().unwrap_or_default().trim().to_string();
    match node.tag_name().name() {
        "Say" => Some(Verb::Say { text }),
        "Play" => Some(Verb::Play { url: text }),
        "Pause" => Some(Verb::Pause {
            seconds: node
                .attribute("length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(1),
        }),
        _ => None,
    }
}

/// Reads a TwiML document into its verbs.
pub fn parse(twiml: &str) -> Result<Vec<Verb>, TwimlError> {
    let doc = roxmltree::Document::parse(twiml).map_err(|e| TwimlError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Response" {
        return Err(TwimlError::Root);
    }
    let mut out = Vec::new();
    for verb in root.children().filter(|n| n.is_element()) {
        let attr = |name: &str| verb.attribute(name);
        let number =
            |name: &str, default: u32| attr(name).and_then(|n| n.parse().ok()).unwrap_or(default);
        out.push(match verb.tag_name().name() {
            "Say" | "Play" | "Pause" => speech(&verb).expect("a speech verb"),
            "Gather" => Verb::Gather {
                action: attr("action").unwrap_or_default().to_string(),
                input: attr("input").unwrap_or("dtmf").to_string(),
                num_digits: number("numDigits", u32::MAX),
                timeout: number("timeout", 5),
                finish_on_key: attr("finishOnKey").unwrap_or("#").to_string(),
                action_on_empty_result: attr("actionOnEmptyResult") == Some("true"),
                prompts: verb
                    .children()
                    .filter(|n| n.is_element())
                    .map(|n| {
                        speech(&n).ok_or_else(|| TwimlError::Unknown(n.tag_name().name().into()))
                    })
                    .collect::<Result<_, _>>()?,
            },
            "Redirect" => Verb::Redirect {
                url: verb.text().unwrap_or_default().trim().to_string(),
            },
            "Hangup" => Verb::Hangup,
            "Dial" => Verb::Dial {
                time_limit: verb.attribute("timeLimit").and_then(|t| t.parse().ok()),
                action: verb.attribute("action").map(String::from),
                number: verb
                    .children()
                    .find(|n| n.has_tag_name("Number"))
                    .and_then(|n| n.text())
                    .or(verb.text())
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            },
            "Connect" => {
                let stream = verb
                    .children()
                    .find(|n| n.has_tag_name("Stream"))
                    .ok_or(TwimlError::ConnectWithoutStream)?;
                Verb::Stream {
                    url: stream.attribute("url").unwrap_or_default().to_string(),
                    parameters: stream
                        .children()
                        .filter(|n| n.has_tag_name("Parameter"))
                        .map(|p| {
                            (
                                p.attribute("name").unwrap_or_default().to_string(),
                                p.attribute("value").unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                }
            }
            other => return Err(TwimlError::Unknown(other.into())),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_becomes_its_verbs() {
        let twiml = r##"<?xml version="1.0" encoding="UTF-8"?><Response>
            <Gather input="dtmf" numDigits="12" finishOnKey="#" timeout="8" action="http://x/voice/code?try=1" method="POST">
              <Say voice="Polly.Joanna">Enter your code.</Say><Play>http://x/audio/a.mp3</Play></Gather>
            <Say>Nothing typed.</Say><Redirect>http://x/voice/incoming</Redirect>
            <Connect><Stream url="ws://x/media"><Parameter name="token" value="t1"/></Stream></Connect>
            <Hangup/></Response>"##;
        let verbs = parse(twiml).unwrap();
        assert_eq!(verbs.len(), 5);
        match &verbs[0] {
            Verb::Gather {
                action,
                num_digits,
                timeout,
                prompts,
                input,
                ..
            } => {
                assert_eq!(action, "http://x/voice/code?try=1");
                assert_eq!((*num_digits, *timeout), (12, 8));
                assert_eq!(input, "dtmf");
                assert_eq!(prompts.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            verbs[3],
            Verb::Stream {
                url: "ws://x/media".into(),
                parameters: vec![("token".into(), "t1".into())]
            }
        );
        assert_eq!(verbs[4], Verb::Hangup);
        let page = serde_json::to_value(&verbs[3]).unwrap();
        assert_eq!(page["parameters"]["token"], "t1");
        assert_eq!(page["kind"], "stream");
    }

    #[test]
    fn bad_twiml_is_an_error_not_a_panic() {
        assert!(parse("not xml").is_err());
        assert_eq!(parse("<Other/>"), Err(TwimlError::Root));
        assert!(parse("<Response><Enqueue>1</Enqueue></Response>").is_err());
        assert_eq!(
            parse("<Response><Connect/></Response>"),
            Err(TwimlError::ConnectWithoutStream)
        );
        assert!(parse("<Response><Gather><Hangup/></Gather></Response>").is_err());
    }
}
