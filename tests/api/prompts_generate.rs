//! `callgate prompts generate` (issue 27) against a text-to-speech server of the test's own,
//! speaking as ElevenLabs' does (`POST /v1/text-to-speech/{voice}?output_format=...` with
//! `xi-api-key`; the agent's voice from `GET /v1/convai/agents/{id}`): files written in both
//! formats, skipped when unchanged, progress printed, one failing prompt reported while the
//! others are written, the operator's own recordings kept unless `--force`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use callgate::domain::prompt::Prompt;
use callgate::telephony::audio::wav_to_ulaw;
use serde_json::{json, Value};

const KEY: &str = "xi-tts-test";
const AGENT: &str = "agent_tts";
/// The voice the agent's configuration names.
const AGENT_VOICE: &str = "voice_of_the_agent";

#[derive(Default)]
struct Tts {
    /// (voice, format, text) of each request answered.
    spoken: Vec<(String, String, String)>,
    /// Texts answered with HTTP 500.
    failing: Vec<String>,
}

type Shared = Arc<Mutex<Tts>>;

/// The audio for `text` in `format`: its own bytes, so a file says what it was made from.
fn audio_of(text: &str, format: &str) -> Vec<u8> {
    let tag = if format.starts_with("mp3") {
        "MP3:"
    } else {
        "ULAW:"
    };
    format!("{tag}{text}").into_bytes()
}

async fn speak(
    State(tts): State<Shared>,
    UrlPath(voice): UrlPath<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if headers.get("xi-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let text = body["text"].as_str().unwrap_or_default().to_string();
    let format = q.get("output_format").cloned().unwrap_or_default();
    let mut tts = tts.lock().unwrap();
    if tts.failing.contains(&text) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "voice engine busy").into_response();
    }
    tts.spoken.push((voice, format.clone(), text.clone()));
    audio_of(&text, &format).into_response()
}

async fn agent(UrlPath(id): UrlPath<String>, headers: HeaderMap) -> Response {
    if id != AGENT || headers.get("xi-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(
        json!({ "agent_id": AGENT, "conversation_config": { "tts": { "voice_id": AGENT_VOICE } } }),
    )
    .into_response()
}

async fn start() -> (String, Shared) {
    let tts: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/text-to-speech/{voice}", post(speak))
        .route("/v1/convai/agents/{id}", get(agent))
        .with_state(tts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, tts)
}

/// Runs `callgate prompts generate` with `args`: (exit code, stdout).
async fn generate(base: &str, audio: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_callgate"));
    cmd.current_dir(audio)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AUDIO_DIR", audio)
        .env("ELEVENLABS_AGENT_ID", AGENT)
        .env("ELEVENLABS_API_KEY", KEY)
        .env("ELEVENLABS_API_BASE", base)
        .args(["prompts", "generate"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("finished in time")
        .expect("ran");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn prompts_are_generated_skipped_retried_and_the_operators_kept() {
    let (base, tts) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let audio = dir.path();
    // One prompt the operator recorded by hand, before any generation.
    std::fs::write(audio.join("goodbye.mp3"), b"my own voice").unwrap();
    // One prompt whose text-to-speech fails this time.
    tts.lock()
        .unwrap()
        .failing
        .push(Prompt::TimeUp.default_text().into());

    let (code, out) = generate(&base, audio, &[], &[]).await;
    assert_eq!(code, 1, "a failed prompt fails the run: {out}");
    let total = out.lines().filter(|l| l.starts_with('[')).count();
    assert!(
        total > 100,
        "one progress line per prompt and number: {out}"
    );
    assert!(out.contains(&format!("[1/{total}] ")) && out.contains(&format!("[{total}/{total}] ")));
    assert!(
        out.contains("time_up: FAILED: text-to-speech answered HTTP 500"),
        "{out}"
    );
    assert!(
        out.contains("goodbye: kept: goodbye.mp3 was recorded by hand"),
        "{out}"
    );
    assert!(out.contains(&format!("{} written", total - 2)), "{out}");

    // Written in the agent's voice (no ELEVENLABS_VOICE_ID), in both formats.
    let greeting_text = Prompt::Greeting.default_text();
    let spoken = tts.lock().unwrap().spoken.clone();
    assert!(spoken.iter().all(|(voice, _, _)| voice == AGENT_VOICE));
    assert_eq!(
        std::fs::read(audio.join("greeting.mp3")).unwrap(),
        audio_of(greeting_text, "mp3_44100_128")
    );
    let wav = std::fs::read(audio.join("greeting.wav")).unwrap();
    assert_eq!(
        wav_to_ulaw(&wav),
        Some(audio_of(greeting_text, "ulaw_8000")),
        "a μ-law 8 kHz WAV the call plays"
    );
    assert_eq!(
        std::fs::read(audio.join("number_42.wav"))
            .map(|w| wav_to_ulaw(&w))
            .unwrap(),
        Some(audio_of("42", "ulaw_8000"))
    );
    assert!(
        !audio.join("time_up.mp3").exists(),
        "nothing half-written for the failure"
    );
    assert_eq!(
        std::fs::read(audio.join("goodbye.mp3")).unwrap(),
        b"my own voice"
    );

    // Again, the engine working: only the failed one is spoken; the rest is unchanged.
    tts.lock().unwrap().failing.clear();
    tts.lock().unwrap().spoken.clear();
    let (code, out) = generate(&base, audio, &[], &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("time_up: written"), "{out}");
    assert!(
        out.contains(&format!(
            "1 written, {} unchanged, 1 recorded by hand kept, 0 failed",
            total - 2
        )),
        "{out}"
    );
    let spoken = tts.lock().unwrap().spoken.clone();
    assert_eq!(
        spoken.len(),
        2,
        "mp3 and μ-law of the one prompt: {spoken:?}"
    );

    // New words for one prompt, and another voice: what changed is spoken again.
    tts.lock().unwrap().spoken.clear();
    let (code, out) = generate(&base, audio, &[("PROMPT_GREETING", "Hello there.")], &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("greeting: written") && out.contains("1 written"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(audio.join("greeting.mp3")).unwrap(),
        audio_of("Hello there.", "mp3_44100_128")
    );
    // A generated file the operator replaced since is theirs now: kept.
    std::fs::write(audio.join("number_7.wav"), b"RIFF recorded by hand").unwrap();
    let (code, out) = generate(&base, audio, &[("PROMPT_GREETING", "Hello there.")], &[]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("number_7: kept: number_7.wav was recorded by hand"),
        "{out}"
    );

    // --force replaces the operator's recordings, in ELEVENLABS_VOICE_ID when set.
    tts.lock().unwrap().spoken.clear();
    let forced = [
        ("PROMPT_GREETING", "Hello there."),
        ("ELEVENLABS_VOICE_ID", "voice_chosen"),
    ];
    let (code, out) = generate(&base, audio, &forced, &["--force"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read(audio.join("goodbye.mp3")).unwrap(),
        audio_of(Prompt::Goodbye.default_text(), "mp3_44100_128")
    );
    let spoken = tts.lock().unwrap().spoken.clone();
    assert!(!spoken.is_empty() && spoken.iter().all(|(v, _, _)| v == "voice_chosen"));
}
