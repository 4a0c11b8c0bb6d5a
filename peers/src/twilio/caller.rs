//! A scripted caller: it places a call the way Twilio does, signs every request, follows the
//! TwiML answers verb by verb, types what it was told at each `<Gather>`, and records what
//! it heard. As a test's peer it panics on TwiML that Twilio would not run.

use std::collections::VecDeque;

use super::twiml::{self, Verb};
use super::{post, Account, Leg, Signature};

/// One thing the caller heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    Say(String),
    Play(String),
    Pause,
}

/// How the call left the TwiML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `<Hangup/>`, or the document ran out.
    HungUp,
    /// `<Connect><Stream>`: the media stream Twilio would now open.
    Stream {
        url: String,
        parameters: Vec<(String, String)>,
        /// Where Twilio goes once the stream closes (the `<Redirect>` after `<Connect>`).
        after: Option<String>,
    },
    /// `<Dial>`: the call is transferred to this number.
    Dialled(String),
    /// The server refused a request (an HTTP status other than 200).
    Refused(u16),
}

/// A simulated inbound call.
pub struct Caller {
    pub http: reqwest::Client,
    pub auth_token: String,
    pub account_sid: String,
    pub call_sid: String,
    pub from: String,
    pub to: String,
    /// What the caller types at each Gather, in order; `None` types nothing (a timeout).
    pub keypad: VecDeque<Option<String>>,
    pub heard: Vec<Heard>,
    /// Every request made: (url, HTTP status).
    pub requests: Vec<(String, u16)>,
    /// Parameters Twilio adds to this call's requests beyond the usual ones (`StirVerstat`).
    pub extra: Vec<(String, String)>,
    /// The last `<Dial>` followed: its number, `timeLimit` and `action`.
    pub dialled: Option<(String, Option<i64>, Option<String>)>,
}

enum Step {
    Request(String, Vec<(String, String)>),
    End(Ending),
}

impl Caller {
    pub fn new(auth_token: &str, account_sid: &str, from: &str, to: &str) -> Caller {
        let leg = Leg::new(from, to);
        Caller {
            http: reqwest::Client::new(),
            auth_token: auth_token.into(),
            account_sid: account_sid.into(),
            call_sid: leg.call_sid,
            from: leg.from,
            to: leg.to,
            keypad: Default::default(),
            heard: Vec::new(),
            requests: Vec::new(),
            extra: Vec::new(),
            dialled: None,
        }
    }

    /// Sends `name=value` with every voice request of the call, as Twilio does with
    /// `StirVerstat` for a caller ID it verified.
    pub fn with_param(mut self, name: &str, value: &str) -> Caller {
        self.extra.push((name.into(), value.into()));
        self
    }

    pub fn account(&self) -> Account {
        Account {
            account_sid: self.account_sid.clone(),
            auth_token: self.auth_token.clone(),
        }
    }

    pub fn leg(&self) -> Leg {
        Leg {
            call_sid: self.call_sid.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
        }
    }

    /// Queues what to type at the next Gathers.
    pub fn types<I: IntoIterator<Item = Option<&'static str>>>(mut self, entries: I) -> Caller {
        self.keypad
            .extend(entries.into_iter().map(|e| e.map(String::from)));
        self
    }

    /// The parameters Twilio sends with every voice request of this call.
    pub fn call_params(&self, status: &str) -> Vec<(String, String)> {
        let mut params = self.leg().params(&self.account(), status);
        params.extend(self.extra.iter().cloned());
        params
    }

    /// POSTs signed form parameters; returns (status, body).
    pub async fn post(&mut self, url: &str, params: &[(String, String)]) -> (u16, String) {
        let token = self.auth_token.clone();
        self.send(url, params, Signature::Sign(&token)).await
    }

    pub async fn post_with_signature(
        &mut self,
        url: &str,
        params: &[(String, String)],
        signature: Option<&str>,
    ) -> (u16, String) {
        self.send(url, params, Signature::Given(signature)).await
    }

    async fn send(
        &mut self,
        url: &str,
        params: &[(String, String)],
        signature: Signature<'_>,
    ) -> (u16, String) {
        let (status, body) = post(&self.http, url, params, signature)
            .await
            .expect("callgate answered");
        self.requests.push((url.to_string(), status));
        (status, body)
    }

    /// Dials: posts to the voice URL and follows the TwiML until the call hangs up or
    /// connects a stream.
    pub async fn dial(&mut self, voice_url: &str) -> Ending {
        let params = self.call_params("ringing");
        self.fetch_and_follow(voice_url, params).await
    }

    /// Continues after a stream has closed, as Twilio does with the verbs after `<Connect>`.
    pub async fn after_stream(&mut self, url: &str) -> Ending {
        let params = self.call_params("in-progress");
        self.fetch_and_follow(url, params).await
    }

    async fn fetch_and_follow(&mut self, url: &str, params: Vec<(String, String)>) -> Ending {
        let mut next = Some((url.to_string(), params));
        let mut hops = 0;
        while let Some((url, params)) = next.take() {
            hops += 1;
            assert!(hops < 20, "TwiML loop: more than 20 requests in one call");
            let (status, body) = self.post(&url, &params).await;
            if status != 200 {
                return Ending::Refused(status);
            }
            match self.follow(&body) {
                Step::Request(url, params) => next = Some((url, params)),
                Step::End(ending) => return ending,
            }
        }
        Ending::HungUp
    }

    /// Runs one TwiML document; returns the request it leads to, or how the call ended.
    fn follow(&mut self, document: &str) -> Step {
        let verbs = twiml::parse(document)
            .unwrap_or_else(|e| panic!("callgate sent TwiML Twilio cannot run ({e}): {document}"));
        for (i, verb) in verbs.iter().enumerate() {
            match verb {
                Verb::Say { .. } | Verb::Play { .. } | Verb::Pause { .. } => self.hear(verb),
                Verb::Gather {
                    action,
                    input,
                    num_digits,
                    finish_on_key,
                    action_on_empty_result,
                    prompts,
                    ..
                } => {
                    assert_eq!(input, "dtmf", "{document}");
                    prompts.iter().for_each(|p| self.hear(p));
                    let Some(typed) = self.keypad.pop_front().flatten() else {
                        continue;
                    };
                    // Twilio stops at the finish key or at numDigits, whichever comes first.
                    let num_digits = *num_digits as usize;
                    let mut digits: String = typed
                        .chars()
                        .take_while(|c| !finish_on_key.starts_with(*c))
                        .collect();
                    let finished_on_key = if digits.chars().count() >= num_digits {
                        digits = digits.chars().take(num_digits).collect();
                        ""
                    } else {
                        finish_on_key.as_str()
                    };
                    if digits.is_empty() && !action_on_empty_result {
                        continue;
                    }
                    assert!(!action.is_empty(), "a Gather has an action: {document}");
                    let mut params = self.call_params("in-progress");
                    params.push(("Digits".into(), digits));
                    params.push(("FinishedOnKey".into(), finished_on_key.into()));
                    return Step::Request(action.clone(), params);
                }
                Verb::Redirect { url } => {
                    return Step::Request(url.clone(), self.call_params("in-progress"));
                }
                Verb::Hangup => return Step::End(Ending::HungUp),
                Verb::Dial {
                    number,
                    time_limit,
                    action,
                } => {
                    self.dialled = Some((number.clone(), *time_limit, action.clone()));
                    return Step::End(Ending::Dialled(number.clone()));
                }
                Verb::Stream { url, parameters } => {
                    assert!(
                        !url.contains('?'),
                        "a Stream URL carries no query string: {url}"
                    );
                    let after = verbs[i + 1..].iter().find_map(|v| match v {
                        Verb::Redirect { url } => Some(url.clone()),
                        _ => None,
                    });
                    return Step::End(Ending::Stream {
                        url: url.clone(),
                        parameters: parameters.clone(),
                        after,
                    });
                }
            }
        }
        Step::End(Ending::HungUp)
    }

    fn hear(&mut self, verb: &Verb) {
        self.heard.push(match verb {
            Verb::Say { text } => Heard::Say(text.clone()),
            Verb::Play { url } => Heard::Play(url.clone()),
            Verb::Pause { .. } => Heard::Pause,
            other => panic!("unexpected {other:?} where speech belongs"),
        });
    }

    /// Everything said, as one string, for `contains` checks.
    pub fn transcript(&self) -> String {
        self.heard
            .iter()
            .map(|h| match h {
                Heard::Say(t) => t.clone(),
                Heard::Play(u) => format!("[play {u}]"),
                Heard::Pause => "[pause]".into(),
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Twilio's status callback for this call.
    /// The dialled call ended after `seconds` (capped at the `<Dial>`'s `timeLimit`, as
    /// Twilio cuts it there): Twilio posts the dial's outcome to its `action` and follows the
    /// answer. Without an action, the call goes on to the verbs after `<Dial>` (here: ends).
    pub async fn dial_ended(&mut self, seconds: i64) -> Ending {
        let Some((_, limit, action)) = self.dialled.clone() else {
            panic!("nothing was dialled");
        };
        let Some(action) = action else {
            return Ending::HungUp;
        };
        let seconds = limit.map_or(seconds, |l| seconds.min(l));
        let mut params = self.call_params("in-progress");
        params.push(("DialCallStatus".into(), "completed".into()));
        params.push(("DialCallSid".into(), super::new_sid("CA")));
        params.push(("DialCallDuration".into(), seconds.to_string()));
        self.fetch_and_follow(&action, params).await
    }

    pub async fn status_callback(
        &mut self,
        url: &str,
        status: &str,
        duration: Option<&str>,
    ) -> u16 {
        let params = self.leg().status_params(&self.account(), status, duration);
        self.post(url, &params).await.0
    }
}
