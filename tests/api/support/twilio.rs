//! A Twilio caller simulator: it places a call the way Twilio's voice platform does, signs
//! every request with the account's auth token, follows the TwiML answers verb by verb, types
//! digits at each `<Gather>`, and reports what the caller heard.
//!
//! Its signing is written here independently of callgate's own validator, from Twilio's
//! documented scheme: URL, then each POST parameter sorted by name as name+value,
//! HMAC-SHA1 with the auth token, base64.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

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
    pub keypad: std::collections::VecDeque<Option<String>>,
    pub heard: Vec<Heard>,
    /// Every request made: (url, HTTP status).
    pub requests: Vec<(String, u16)>,
}

impl Caller {
    pub fn new(auth_token: &str, account_sid: &str, from: &str, to: &str) -> Caller {
        let sid = format!(
            "CA{}",
            callgate::store::new_id("x").trim_start_matches("x_")
        );
        Caller {
            http: reqwest::Client::new(),
            auth_token: auth_token.into(),
            account_sid: account_sid.into(),
            call_sid: format!("{sid:0<34}"),
            from: from.into(),
            to: to.into(),
            keypad: Default::default(),
            heard: Vec::new(),
            requests: Vec::new(),
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
        [
            ("CallSid", self.call_sid.as_str()),
            ("AccountSid", self.account_sid.as_str()),
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

    /// POSTs signed form parameters; returns (status, body).
    pub async fn post(&mut self, url: &str, params: &[(String, String)]) -> (u16, String) {
        let signature = sign(&self.auth_token, url, params);
        self.post_with_signature(url, params, Some(&signature))
            .await
    }

    pub async fn post_with_signature(
        &mut self,
        url: &str,
        params: &[(String, String)],
        signature: Option<&str>,
    ) -> (u16, String) {
        let mut req = self.http.post(url).form(params);
        if let Some(sig) = signature {
            req = req.header("X-Twilio-Signature", sig);
        }
        let resp = req.send().await.expect("callgate answered");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
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

    /// Executes one TwiML document; returns the request it leads to, or how the call ended.
    fn follow(&mut self, twiml: &str) -> Step {
        let doc = roxmltree::Document::parse(twiml)
            .unwrap_or_else(|e| panic!("callgate sent malformed TwiML ({e}): {twiml}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "Response", "{twiml}");
        let verbs: Vec<_> = root.children().filter(|n| n.is_element()).collect();
        for (i, verb) in verbs.iter().enumerate() {
            match verb.tag_name().name() {
                "Say" | "Play" | "Pause" => self.hear(verb),
                "Gather" => {
                    assert_eq!(verb.attribute("input"), Some("dtmf"));
                    for child in verb.children().filter(|n| n.is_element()) {
                        self.hear(&child);
                    }
                    let num_digits: usize = verb
                        .attribute("numDigits")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(usize::MAX);
                    let finish_key = verb.attribute("finishOnKey").unwrap_or("#");
                    let typed = self.keypad.pop_front().flatten();
                    let Some(typed) = typed else { continue };
                    // Twilio stops at the finish key or at numDigits, whichever comes first.
                    let mut digits: String = typed
                        .chars()
                        .take_while(|c| !finish_key.starts_with(*c))
                        .collect();
                    let finished_on_key = if digits.chars().count() >= num_digits {
                        digits = digits.chars().take(num_digits).collect();
                        ""
                    } else {
                        finish_key
                    };
                    if digits.is_empty() && verb.attribute("actionOnEmptyResult") != Some("true") {
                        continue;
                    }
                    let action = verb
                        .attribute("action")
                        .expect("Gather has an action")
                        .to_string();
                    let mut params = self.call_params("in-progress");
                    params.push(("Digits".into(), digits));
                    params.push(("FinishedOnKey".into(), finished_on_key.into()));
                    return Step::Request(action, params);
                }
                "Redirect" => {
                    let url = verb.text().unwrap_or_default().trim().to_string();
                    return Step::Request(url, self.call_params("in-progress"));
                }
                "Hangup" => return Step::End(Ending::HungUp),
                "Connect" => {
                    let stream = verb
                        .children()
                        .find(|n| n.has_tag_name("Stream"))
                        .expect("Connect holds a Stream");
                    let url = stream.attribute("url").expect("Stream url").to_string();
                    assert!(
                        !url.contains('?'),
                        "a Stream URL carries no query string: {url}"
                    );
                    let parameters = stream
                        .children()
                        .filter(|n| n.has_tag_name("Parameter"))
                        .map(|p| {
                            (
                                p.attribute("name").unwrap_or_default().to_string(),
                                p.attribute("value").unwrap_or_default().to_string(),
                            )
                        })
                        .collect();
                    let after = verbs[i + 1..]
                        .iter()
                        .find(|n| n.has_tag_name("Redirect"))
                        .and_then(|n| n.text())
                        .map(|t| t.trim().to_string());
                    return Step::End(Ending::Stream {
                        url,
                        parameters,
                        after,
                    });
                }
                other => panic!("the simulator does not know <{other}>: {twiml}"),
            }
        }
        Step::End(Ending::HungUp)
    }

    fn hear(&mut self, node: &roxmltree::Node) {
        let text = node.text().unwrap_or_default().trim().to_string();
        match node.tag_name().name() {
            "Say" => self.heard.push(Heard::Say(text)),
            "Play" => self.heard.push(Heard::Play(text)),
            "Pause" => self.heard.push(Heard::Pause),
            other => panic!("unexpected <{other}> inside a Gather"),
        }
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
    pub async fn status_callback(
        &mut self,
        url: &str,
        status: &str,
        duration: Option<&str>,
    ) -> u16 {
        let mut params = self.call_params(status);
        if let Some(d) = duration {
            params.push(("CallDuration".into(), d.into()));
        }
        params.push(("Timestamp".into(), "Tue, 24 Nov 2026 16:00:00 +0000".into()));
        params.push(("SequenceNumber".into(), "0".into()));
        self.post(url, &params).await.0
    }
}

enum Step {
    Request(String, Vec<(String, String)>),
    End(Ending),
}

/// What Twilio's side of a media stream receives from callgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Media(Vec<u8>),
    Clear,
    Mark(String),
    /// The server closed the stream (Twilio then runs the TwiML after `<Connect>`).
    Closed,
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Twilio's end of a bidirectional media stream: signed upgrade, `connected`, `start`
/// with the custom parameters, then 20 ms μ-law `media` frames.
pub struct MediaStream {
    pub stream_sid: String,
    ws: WsStream,
    sequence: u64,
}

impl MediaStream {
    /// Opens the stream as Twilio does; `Err` with the HTTP status if the upgrade is refused.
    pub async fn open(
        url: &str,
        auth_token: &str,
        account_sid: &str,
        call_sid: &str,
        parameters: &[(String, String)],
    ) -> Result<MediaStream, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().expect("stream url");
        let signature = sign(auth_token, url, &[]);
        request
            .headers_mut()
            .insert("X-Twilio-Signature", signature.parse().unwrap());
        let ws = match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                return Err(resp.status().as_u16())
            }
            Err(e) => panic!("stream connect failed: {e}"),
        };
        let stream_sid = format!(
            "MZ{}",
            callgate::store::new_id("x").trim_start_matches("x_")
        );
        let mut stream = MediaStream {
            stream_sid,
            ws,
            sequence: 0,
        };
        stream
            .send_json(
                serde_json::json!({ "event": "connected", "protocol": "Call", "version": "1.0.0" }),
            )
            .await;
        let custom: serde_json::Map<String, serde_json::Value> = parameters
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let start = serde_json::json!({
            "event": "start", "sequenceNumber": "1", "streamSid": stream.stream_sid,
            "start": { "streamSid": stream.stream_sid, "accountSid": account_sid, "callSid": call_sid,
                       "tracks": ["inbound"], "customParameters": custom,
                       "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 } }
        });
        stream.send_json(start).await;
        Ok(stream)
    }

    pub async fn send_json(&mut self, v: serde_json::Value) -> bool {
        self.send_raw(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
            .await
    }

    pub async fn send_raw(&mut self, msg: tokio_tungstenite::tungstenite::Message) -> bool {
        use futures_util::SinkExt;
        self.ws.send(msg).await.is_ok()
    }

    /// One 20 ms frame of caller audio.
    pub async fn send_media(&mut self, ulaw: &[u8]) -> bool {
        self.sequence += 1;
        let v = serde_json::json!({
            "event": "media", "sequenceNumber": self.sequence.to_string(), "streamSid": self.stream_sid,
            "media": { "track": "inbound", "chunk": self.sequence.to_string(),
                       "timestamp": (self.sequence * 20).to_string(), "payload": B64.encode(ulaw) }
        });
        self.send_json(v).await
    }

    pub async fn stop(&mut self, call_sid: &str) {
        let v = serde_json::json!({ "event": "stop", "streamSid": self.stream_sid,
                                     "stop": { "accountSid": "AC", "callSid": call_sid } });
        self.send_json(v).await;
    }

    /// The next message from callgate, or `None` after `wait`.
    pub async fn next(&mut self, wait: std::time::Duration) -> Option<Received> {
        use futures_util::StreamExt;
        loop {
            let msg = match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) | Ok(Some(Err(_))) => return Some(Received::Closed),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                tokio_tungstenite::tungstenite::Message::Text(t) => return Some(Self::decode(&t)),
                tokio_tungstenite::tungstenite::Message::Close(_) => return Some(Received::Closed),
                tokio_tungstenite::tungstenite::Message::Binary(_) => {
                    panic!("callgate sent a binary frame (Twilio error 31950)")
                }
                _ => continue,
            }
        }
    }

    fn decode(text: &str) -> Received {
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| {
            panic!("callgate sent malformed JSON (Twilio error 31951): {e}: {text}")
        });
        match v["event"].as_str() {
            Some("media") => {
                let payload = v["media"]["payload"].as_str().expect("media payload");
                Received::Media(B64.decode(payload).expect("media payload is base64"))
            }
            Some("clear") => Received::Clear,
            Some("mark") => {
                Received::Mark(v["mark"]["name"].as_str().unwrap_or_default().to_string())
            }
            other => panic!("callgate sent an unknown event {other:?}: {text}"),
        }
    }

    /// Talks at real-time pace (one frame each 20 ms) until callgate closes the stream or
    /// `limit` passes; returns everything received.
    pub async fn talk_until_closed(
        &mut self,
        frame: &[u8],
        limit: std::time::Duration,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(20));
        let mut got = Vec::new();
        loop {
            tokio::select! {
                _ = pace.tick() => {
                    if !self.send_media(frame).await {
                        got.push(Received::Closed);
                        return got;
                    }
                }
                r = self.next(std::time::Duration::from_secs(30)) => match r {
                    Some(Received::Closed) | None => { got.push(Received::Closed); return got; }
                    Some(r) => got.push(r),
                },
                _ = tokio::time::sleep_until(deadline) => return got,
            }
        }
    }
}
