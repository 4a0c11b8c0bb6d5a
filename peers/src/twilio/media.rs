//! Twilio's end of a bidirectional media stream (`<Connect><Stream>`): the signed WebSocket
//! upgrade, `connected`, `start` with the custom parameters, then `media` frames of μ-law at
//! 8 kHz, `dtmf` for keys pressed, `mark` when audio callgate sent has been played, and `stop`.
//! From callgate it takes `media`, `clear` and `mark`.
//!
//! Like Twilio, it plays the audio it is sent at 8 kHz real time, and echoes each `mark`
//! once the audio sent before it has been played (at once on `clear`). Echoes go out while
//! the test reads the stream ([`MediaStream::next`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{new_sid, sign, Account, SIGNATURE_HEADER};

/// What Twilio's side of a media stream receives from callgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Media(Vec<u8>),
    Clear,
    Mark(String),
    /// The server closed the stream (Twilio then runs the TwiML after `<Connect>`).
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The upgrade was answered with this HTTP status.
    #[error("the upgrade was refused with HTTP {0}")]
    Refused(u16),
    #[error("the stream could not be opened: {0}")]
    Failed(String),
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One open media stream.
pub struct MediaStream {
    pub stream_sid: String,
    pub call_sid: String,
    account_sid: String,
    ws: WsStream,
    sequence: u64,
    /// Milliseconds of caller audio sent (the `timestamp` of the next frame).
    sent_ms: u64,
    /// When the audio callgate sent so far will have been played.
    played_until: tokio::time::Instant,
    /// Marks to echo, each when the audio before it has been played, in order.
    marks: std::collections::VecDeque<(tokio::time::Instant, String)>,
    /// The marks echoed so far, in order.
    pub echoed: Vec<String>,
}

impl MediaStream {
    /// Opens the stream as Twilio does: the upgrade signed like a GET of `url` (no
    /// parameters), with Nagle's delay off as Twilio's media servers send; then
    /// `connected` and `start`.
    pub async fn open(
        url: &str,
        account: &Account,
        call_sid: &str,
        parameters: &[(String, String)],
    ) -> Result<MediaStream, OpenError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| OpenError::Failed(e.to_string()))?;
        let signature = sign(&account.auth_token, url, &[]);
        request.headers_mut().insert(
            SIGNATURE_HEADER,
            signature
                .parse()
                .map_err(|_| OpenError::Failed("signature header".into()))?,
        );
        let ws = match tokio_tungstenite::connect_async_with_config(request, None, true).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                return Err(OpenError::Refused(resp.status().as_u16()))
            }
            Err(e) => return Err(OpenError::Failed(e.to_string())),
        };
        let mut stream = MediaStream {
            stream_sid: new_sid("MZ"),
            call_sid: call_sid.into(),
            account_sid: account.account_sid.clone(),
            ws,
            sequence: 0,
            sent_ms: 0,
            played_until: tokio::time::Instant::now(),
            marks: Default::default(),
            echoed: Vec::new(),
        };
        stream
            .send_json(json!({ "event": "connected", "protocol": "Call", "version": "1.0.0" }))
            .await;
        let custom: serde_json::Map<String, Value> = parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let sequence = stream.next_sequence();
        let start = json!({
            "event": "start", "sequenceNumber": sequence, "streamSid": stream.stream_sid,
            "start": { "streamSid": stream.stream_sid, "accountSid": stream.account_sid,
                       "callSid": call_sid, "tracks": ["inbound"], "customParameters": custom,
                       "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 } }
        });
        if !stream.send_json(start).await {
            return Err(OpenError::Failed("the stream closed at start".into()));
        }
        Ok(stream)
    }

    fn next_sequence(&mut self) -> String {
        self.sequence += 1;
        self.sequence.to_string()
    }

    pub async fn send_json(&mut self, v: Value) -> bool {
        self.send_raw(Message::text(v.to_string())).await
    }

    pub async fn send_text(&mut self, text: String) -> bool {
        self.send_raw(Message::text(text)).await
    }

    pub async fn send_raw(&mut self, msg: Message) -> bool {
        self.ws.send(msg).await.is_ok()
    }

    /// Caller audio (one 20 ms frame is 160 bytes).
    pub async fn send_media(&mut self, ulaw: &[u8]) -> bool {
        self.send_media_base64(&B64.encode(ulaw), ulaw.len()).await
    }

    /// Caller audio already in base64, of `len` bytes.
    pub async fn send_media_base64(&mut self, payload: &str, len: usize) -> bool {
        let sequence = self.next_sequence();
        let v = json!({
            "event": "media", "sequenceNumber": sequence, "streamSid": self.stream_sid,
            "media": { "track": "inbound", "chunk": (self.sequence - 1).to_string(),
                       "timestamp": self.sent_ms.to_string(), "payload": payload }
        });
        self.sent_ms += len as u64 / 8;
        self.send_json(v).await
    }

    /// A key pressed on the caller's keypad.
    pub async fn send_dtmf(&mut self, digit: char) -> bool {
        let sequence = self.next_sequence();
        let v = json!({ "event": "dtmf", "sequenceNumber": sequence, "streamSid": self.stream_sid,
                        "dtmf": { "track": "inbound_track", "digit": digit.to_string() } });
        self.send_json(v).await
    }

    /// The audio callgate sent before its `mark` named `name` has been played.
    pub async fn send_mark(&mut self, name: &str) -> bool {
        let sequence = self.next_sequence();
        let v = json!({ "event": "mark", "sequenceNumber": sequence, "streamSid": self.stream_sid,
                        "mark": { "name": name } });
        self.send_json(v).await
    }

    /// `stop`: the caller hung up.
    pub async fn stop(&mut self) {
        let sequence = self.next_sequence();
        let v = json!({ "event": "stop", "sequenceNumber": sequence, "streamSid": self.stream_sid,
                        "stop": { "accountSid": self.account_sid, "callSid": self.call_sid } });
        self.send_json(v).await;
    }

    /// `stop`, then the socket closed, as Twilio ends a stream when the caller hangs up.
    pub async fn hang_up(&mut self) {
        self.stop().await;
        let _ = self.ws.send(Message::Close(None)).await;
    }

    /// The next text message from callgate as sent, or `None` once the stream is closed.
    /// A binary frame (which Twilio rejects with error 31950) is returned as an `Err`.
    pub async fn recv_text(&mut self) -> Option<Result<String, Vec<u8>>> {
        loop {
            match self.ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Text(t))) => return Some(Ok(t.as_str().to_string())),
                Some(Ok(Message::Close(_))) => return None,
                Some(Ok(Message::Binary(b))) => return Some(Err(b.to_vec())),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next message from callgate, or `None` after `wait`. As a test's peer it panics
    /// on what Twilio would refuse (a binary frame, malformed JSON, an unknown event).
    pub async fn next(&mut self, wait: std::time::Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.echo_played_marks().await;
            let wake = self
                .marks
                .front()
                .map_or(deadline, |(at, _)| (*at).min(deadline));
            match tokio::time::timeout_at(wake, self.recv_text()).await {
                Err(_) if tokio::time::Instant::now() >= deadline => return None,
                Err(_) => continue,
                Ok(None) => return Some(Received::Closed),
                Ok(Some(Ok(text))) => {
                    let received = decode(&text);
                    self.play(&received);
                    return Some(received);
                }
                Ok(Some(Err(_))) => panic!("callgate sent a binary frame (Twilio error 31950)"),
            }
        }
    }

    /// Plays what callgate sent: audio takes its length in real time; a mark waits for the
    /// audio before it; `clear` drops what was queued, and its marks are echoed at once.
    fn play(&mut self, received: &Received) {
        let now = tokio::time::Instant::now();
        match received {
            Received::Media(bytes) => {
                let length = std::time::Duration::from_micros(bytes.len() as u64 * 125);
                self.played_until = self.played_until.max(now) + length;
            }
            Received::Mark(name) => {
                self.marks
                    .push_back((self.played_until.max(now), name.clone()));
            }
            Received::Clear => {
                self.played_until = now;
                for mark in self.marks.iter_mut() {
                    mark.0 = now;
                }
            }
            Received::Closed => {}
        }
    }

    /// Echoes the marks whose audio has been played.
    async fn echo_played_marks(&mut self) {
        let now = tokio::time::Instant::now();
        while self.marks.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, name)) = self.marks.pop_front() else {
                break;
            };
            self.send_mark(&name).await;
            self.echoed.push(name);
        }
    }

    /// Talks at real-time pace (one frame each 20 ms) until callgate closes the stream or
    /// `limit` passes; returns everything received.
    pub async fn talk_until_closed(
        &mut self,
        frame: &[u8],
        limit: std::time::Duration,
    ) -> Vec<Received> {
        self.talk_timed(frame, limit, |_| false)
            .await
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// [`talk_until_closed`](Self::talk_until_closed), each message with when it arrived,
    /// stopping early (without waiting for the close) after a message `until` accepts.
    pub async fn talk_timed(
        &mut self,
        frame: &[u8],
        limit: std::time::Duration,
        until: impl Fn(&Received) -> bool,
    ) -> Vec<(tokio::time::Instant, Received)> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(20));
        let mut got = Vec::new();
        loop {
            tokio::select! {
                _ = pace.tick() => {
                    if !self.send_media(frame).await {
                        got.push((tokio::time::Instant::now(), Received::Closed));
                        return got;
                    }
                }
                r = self.next(std::time::Duration::from_secs(30)) => match r {
                    Some(Received::Closed) | None => {
                        got.push((tokio::time::Instant::now(), Received::Closed));
                        return got;
                    }
                    Some(r) => {
                        let stop = until(&r);
                        got.push((tokio::time::Instant::now(), r));
                        if stop {
                            return got;
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => return got,
            }
        }
    }
}

/// Reads one message from callgate; panics on what Twilio would refuse.
fn decode(text: &str) -> Received {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| {
        panic!("callgate sent malformed JSON (Twilio error 31951): {e}: {text}")
    });
    match v["event"].as_str() {
        Some("media") => {
            let payload = v["media"]["payload"].as_str().expect("media payload");
            Received::Media(B64.decode(payload).expect("media payload is base64"))
        }
        Some("clear") => Received::Clear,
        Some("mark") => Received::Mark(v["mark"]["name"].as_str().unwrap_or_default().to_string()),
        other => panic!("callgate sent an unknown event {other:?}: {text}"),
    }
}
