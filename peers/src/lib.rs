//! The peers callgate talks to, as local stand-ins, written once and used by the tests, the
//! tools (load test, webhook benchmark) and `callgate demo`:
//!
//! - [`twilio`]: a caller that places calls the way Twilio's voice platform does (signed
//!   webhooks, TwiML followed verb by verb) and Twilio's end of a bidirectional media stream;
//! - [`agent`]: an ElevenLabs Conversational AI agent's end of its WebSocket, with the
//!   behaviours the tests need (drops, stalls, floods, interruptions) and an echo for the
//!   load test;
//! - [`stripe`]: an in-memory Stripe API (customers, PaymentIntents, idempotency keys, card
//!   errors, scripted outages) that signs and delivers its webhooks.
//!
//! Each speaks its peer's documented protocol and signs as that peer signs, written here
//! independently of callgate's own validators, so that a test of callgate against them
//! proves something about callgate. Nothing here depends on callgate.

pub mod agent;
pub mod stripe;
pub mod twilio;

/// `n` random bytes as lower-case hex, for identifiers (call and stream sids).
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A server running in the background, stopped when the last holder lets go.
#[derive(Debug)]
pub struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds a listener on loopback port 0 and serves `app` on it in the background; returns the
/// base URL (`http://127.0.0.1:PORT`) and the server.
pub async fn serve_local(app: axum::Router) -> std::io::Result<(String, Server)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((base, Server(task)))
}
