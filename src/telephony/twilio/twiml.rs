//! TwiML documents, built with escaping so no caller number or configured text can break them.

use std::fmt::Write;

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Something to play: a recorded prompt or text to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speech {
    Play {
        url: String,
    },
    Say {
        text: String,
        voice: String,
        language: String,
    },
}

/// The options of a `<Gather>` for keypad input.
#[derive(Debug, Clone)]
pub struct Gather {
    pub action: String,
    pub num_digits: usize,
    pub timeout_secs: u32,
}

/// A TwiML `<Response>` under construction.
#[derive(Debug, Default)]
pub struct Twiml {
    body: String,
}

impl Twiml {
    pub fn new() -> Twiml {
        Twiml::default()
    }

    fn speech(out: &mut String, speech: &Speech) {
        match speech {
            Speech::Play { url } => {
                let _ = write!(out, "<Play>{}</Play>", escape(url));
            }
            Speech::Say {
                text,
                voice,
                language,
            } => {
                let _ = write!(
                    out,
                    "<Say voice=\"{}\" language=\"{}\">{}</Say>",
                    escape(voice),
                    escape(language),
                    escape(text)
                );
            }
        }
    }

    pub fn speak(mut self, speech: &Speech) -> Twiml {
        Twiml::speech(&mut self.body, speech);
        self
    }

    pub fn pause(mut self, seconds: u32) -> Twiml {
        let _ = write!(self.body, "<Pause length=\"{seconds}\"/>");
        self
    }

    /// A keypad `<Gather>` that plays `prompts` while it listens.
    pub fn gather(mut self, gather: &Gather, prompts: &[&Speech]) -> Twiml {
        let _ = write!(
            self.body,
            "<Gather input=\"dtmf\" numDigits=\"{}\" finishOnKey=\"#\" timeout=\"{}\" action=\"{}\" method=\"POST\" actionOnEmptyResult=\"false\">",
            gather.num_digits,
            gather.timeout_secs,
            escape(&gather.action)
        );
        for p in prompts {
            Twiml::speech(&mut self.body, p);
        }
        self.body.push_str("</Gather>");
        self
    }

    pub fn redirect(mut self, url: &str) -> Twiml {
        let _ = write!(
            self.body,
            "<Redirect method=\"POST\">{}</Redirect>",
            escape(url)
        );
        self
    }

    /// `<Connect><Stream>` with custom parameters, which arrive in the stream's `start` event.
    pub fn connect_stream(mut self, url: &str, parameters: &[(&str, &str)]) -> Twiml {
        let _ = write!(self.body, "<Connect><Stream url=\"{}\">", escape(url));
        for (name, value) in parameters {
            let _ = write!(
                self.body,
                "<Parameter name=\"{}\" value=\"{}\"/>",
                escape(name),
                escape(value)
            );
        }
        self.body.push_str("</Stream></Connect>");
        self
    }

    /// `<Dial>` to `number`; `time_limit_secs` caps the call with it, and `action` is told
    /// how it went (`DialCallDuration`) when it ends.
    pub fn dial(
        mut self,
        number: &str,
        time_limit_secs: Option<i64>,
        action: Option<&str>,
    ) -> Twiml {
        self.body.push_str("<Dial");
        if let Some(limit) = time_limit_secs {
            let _ = write!(self.body, " timeLimit=\"{limit}\"");
        }
        if let Some(url) = action {
            let _ = write!(self.body, " action=\"{}\" method=\"POST\"", escape(url));
        }
        let _ = write!(self.body, ">{}</Dial>", escape(number));
        self
    }

    pub fn hangup(mut self) -> Twiml {
        self.body.push_str("<Hangup/>");
        self
    }

    pub fn finish(self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>{}</Response>",
            self.body
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped() {
        let say = Speech::Say {
            text: "</Say><Hangup/> & \"quotes\" \u{0007}".into(),
            voice: "alice\"><Hangup/>".into(),
            language: "en-US".into(),
        };
        let doc = Twiml::new().speak(&say).finish();
        assert_eq!(doc.matches("<Hangup/>").count(), 0, "{doc}");
        assert!(
            doc.contains("&lt;/Say&gt;&lt;Hangup/&gt; &amp; &quot;quotes&quot; </Say>"),
            "{doc}"
        );
        assert!(!doc.contains('\u{0007}'));
    }

    #[test]
    fn gather_and_stream_render() {
        let doc = Twiml::new()
            .gather(
                &Gather {
                    action: "https://x/voice/code?try=1&a=b".into(),
                    num_digits: 12,
                    timeout_secs: 8,
                },
                &[&Speech::Play {
                    url: "https://x/audio/greeting.mp3".into(),
                }],
            )
            .connect_stream("wss://x/media", &[("token", "a&b")])
            .hangup()
            .finish();
        assert!(doc.contains("numDigits=\"12\""));
        assert!(doc.contains("action=\"https://x/voice/code?try=1&amp;a=b\""));
        assert!(doc.contains("<Parameter name=\"token\" value=\"a&amp;b\"/>"));
        assert!(doc.starts_with("<?xml"));
    }
}
