//! `callgate prompts generate`: every prompt, and the numbers 0 to 99 the call tells time
//! with, spoken by ElevenLabs text-to-speech in the agent's voice and written to `AUDIO_DIR`:
//! `<name>.mp3` for the menu's `<Play>` and `<name>.wav` (μ-law, 8 kHz) for the audio played
//! into a live call.
//!
//! A manifest (`prompts-manifest.json` in `AUDIO_DIR`) remembers, for each prompt, a hash of
//! what it was rendered from (voice, model, words) and of the files written. A prompt whose
//! words have not changed is skipped; a file the manifest did not write (or that changed
//! since) was recorded by the operator and is kept unless `--force`. One prompt failing is
//! reported and the others are still written; the manifest is saved after each one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::crypto::sha256_hex;
use crate::domain::prompt::Prompt;
use crate::telephony::audio::{ulaw_wav, StreamAudio};

/// The manifest's file name in `AUDIO_DIR`.
pub const MANIFEST: &str = "prompts-manifest.json";
/// The text-to-speech model.
pub const MODEL_ID: &str = "eleven_multilingual_v2";

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{0}")]
    Config(String),
    #[error("cannot find the agent's voice: {0} (set ELEVENLABS_VOICE_ID)")]
    Voice(String),
    #[error("cannot write to {0}: {1}")]
    Folder(PathBuf, String),
}

/// One thing to say and the name its files take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub name: String,
    pub text: String,
}

/// Everything rendered: the prompts (with the operator's `PROMPT_<NAME>` words), then the
/// numbers.
pub fn lines(config: &Config) -> Vec<Line> {
    let prompts = Prompt::ALL.iter().map(|p| Line {
        name: p.name().to_string(),
        text: config.voice.text(*p).to_string(),
    });
    let numbers = (0..=StreamAudio::LARGEST_NUMBER).map(|n| Line {
        name: format!("number_{n}"),
        text: n.to_string(),
    });
    prompts.chain(numbers).collect()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    #[serde(default)]
    files: BTreeMap<String, Rendered>,
}

/// What the manifest knows of one prompt it rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Rendered {
    /// Hash of voice, model and words.
    source: String,
    mp3: String,
    wav: String,
}

/// What happened to one prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Written,
    /// Its words, voice and files are as the manifest says: not rendered again.
    Unchanged,
    /// A file the operator recorded (not the manifest's): kept.
    KeptRecording {
        file: String,
    },
    Failed {
        reason: String,
    },
}

/// The decision for one prompt (pure): keep an operator's recording, skip, or render.
fn plan(
    entry: Option<&Rendered>,
    source: &str,
    mp3: Option<&str>,
    wav: Option<&str>,
    force: bool,
) -> Plan {
    let ours = |file: Option<&str>, written: fn(&Rendered) -> &str| match (file, entry) {
        (None, _) => true,
        (Some(hash), Some(e)) => written(e) == hash,
        (Some(_), None) => false,
    };
    let operators = if !ours(mp3, |e| &e.mp3) {
        Some("mp3")
    } else if !ours(wav, |e| &e.wav) {
        Some("wav")
    } else {
        None
    };
    match operators {
        Some(ext) if !force => return Plan::Keep(ext),
        Some(_) => return Plan::Render,
        None => {}
    }
    match entry {
        Some(e) if e.source == source && mp3.is_some() && wav.is_some() => Plan::Skip,
        _ => Plan::Render,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Skip,
    Render,
    Keep(&'static str),
}

/// Renders what needs it; `progress` hears each prompt's outcome as `(done, total, name)`.
pub async fn generate(
    config: &Config,
    force: bool,
    mut progress: impl FnMut(usize, usize, &str, &Outcome),
) -> Result<Vec<(String, Outcome)>, GenerateError> {
    let eleven = config
        .elevenlabs
        .as_ref()
        .ok_or_else(|| GenerateError::Config("ELEVENLABS_AGENT_ID is not set".into()))?;
    let key = eleven
        .api_key
        .as_ref()
        .ok_or_else(|| GenerateError::Config("ELEVENLABS_API_KEY is not set".into()))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| GenerateError::Config(e.to_string()))?;
    let base = eleven.api_base.as_str().trim_end_matches('/').to_string();
    let voice = match &eleven.voice_id {
        Some(v) => v.clone(),
        None => agent_voice(&http, &base, &eleven.agent_id, key.expose()).await?,
    };
    let dir = &config.voice.audio_dir;
    std::fs::create_dir_all(dir).map_err(|e| GenerateError::Folder(dir.clone(), e.to_string()))?;
    let manifest_path = dir.join(MANIFEST);
    let mut manifest: Manifest = std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let lines = lines(config);
    let total = lines.len();
    let mut outcomes = Vec::with_capacity(total);
    for (i, line) in lines.iter().enumerate() {
        let source = sha256_hex(format!("{voice}\n{MODEL_ID}\n{}", line.text));
        let (mp3_path, wav_path) = (
            dir.join(format!("{}.mp3", line.name)),
            dir.join(format!("{}.wav", line.name)),
        );
        let (mp3, wav) = (file_hash(&mp3_path), file_hash(&wav_path));
        let entry = manifest.files.get(&line.name);
        let outcome = match plan(entry, &source, mp3.as_deref(), wav.as_deref(), force) {
            Plan::Skip => Outcome::Unchanged,
            Plan::Keep(ext) => Outcome::KeptRecording {
                file: format!("{}.{ext}", line.name),
            },
            Plan::Render => {
                match render(
                    &http,
                    &base,
                    key.expose(),
                    &voice,
                    line,
                    &mp3_path,
                    &wav_path,
                )
                .await
                {
                    Ok(rendered) => {
                        manifest
                            .files
                            .insert(line.name.clone(), Rendered { source, ..rendered });
                        save(&manifest_path, &manifest)?;
                        Outcome::Written
                    }
                    Err(reason) => Outcome::Failed { reason },
                }
            }
        };
        progress(i + 1, total, &line.name, &outcome);
        outcomes.push((line.name.clone(), outcome));
    }
    Ok(outcomes)
}

/// The agent's voice, as its configuration says (`conversation_config.tts.voice_id`).
async fn agent_voice(
    http: &reqwest::Client,
    base: &str,
    agent_id: &str,
    key: &str,
) -> Result<String, GenerateError> {
    let resp = http
        .get(format!("{base}/v1/convai/agents/{agent_id}"))
        .header("xi-api-key", key)
        .send()
        .await
        .map_err(|e| GenerateError::Voice(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(GenerateError::Voice(format!("HTTP {}", resp.status())));
    }
    let agent: Value = resp
        .json()
        .await
        .map_err(|e| GenerateError::Voice(e.to_string()))?;
    agent["conversation_config"]["tts"]["voice_id"]
        .as_str()
        .filter(|v| !v.is_empty())
        .map(String::from)
        .ok_or_else(|| GenerateError::Voice("the agent's configuration names no voice".into()))
}

/// Both files of one line, written only once both were spoken (each through a temporary
/// file, so a failure leaves the old ones whole).
async fn render(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    voice: &str,
    line: &Line,
    mp3_path: &Path,
    wav_path: &Path,
) -> Result<Rendered, String> {
    let mp3 = speak(http, base, key, voice, &line.text, "mp3_44100_128").await?;
    let ulaw = speak(http, base, key, voice, &line.text, "ulaw_8000").await?;
    let wav = ulaw_wav(&ulaw);
    write(mp3_path, &mp3)?;
    write(wav_path, &wav)?;
    Ok(Rendered {
        source: String::new(),
        mp3: sha256_hex(&mp3),
        wav: sha256_hex(&wav),
    })
}

async fn speak(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    voice: &str,
    text: &str,
    format: &str,
) -> Result<Vec<u8>, String> {
    let resp = http
        .post(format!(
            "{base}/v1/text-to-speech/{voice}?output_format={format}"
        ))
        .header("xi-api-key", key)
        .json(&serde_json::json!({ "text": text, "model_id": MODEL_ID }))
        .send()
        .await
        .map_err(|e| format!("text-to-speech unreachable: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let detail: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(format!("text-to-speech answered HTTP {status}: {detail}"));
    }
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Err("text-to-speech answered no audio".into());
    }
    Ok(bytes.to_vec())
}

fn file_hash(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| sha256_hex(&b))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn save(path: &Path, manifest: &Manifest) -> Result<(), GenerateError> {
    let text = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    write(path, &text).map_err(|e| GenerateError::Folder(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(source: &str) -> Rendered {
        Rendered {
            source: source.into(),
            mp3: "m".into(),
            wav: "w".into(),
        }
    }

    #[test]
    fn decides_per_prompt() {
        let e = rendered("s");
        // Nothing on disk: rendered.
        assert_eq!(plan(None, "s", None, None, false), Plan::Render);
        // The manifest's own files, same words: skipped; other words: rendered again.
        assert_eq!(plan(Some(&e), "s", Some("m"), Some("w"), false), Plan::Skip);
        assert_eq!(
            plan(Some(&e), "t", Some("m"), Some("w"), false),
            Plan::Render
        );
        // One of them gone: rendered again.
        assert_eq!(plan(Some(&e), "s", Some("m"), None, false), Plan::Render);
        // A file the manifest did not write, or one changed since: the operator's, kept.
        assert_eq!(plan(None, "s", Some("x"), None, false), Plan::Keep("mp3"));
        assert_eq!(
            plan(Some(&e), "s", Some("m"), Some("x"), false),
            Plan::Keep("wav")
        );
        // Unless told to, even when the words are the manifest's.
        assert_eq!(plan(None, "s", Some("x"), None, true), Plan::Render);
        assert_eq!(
            plan(Some(&e), "s", Some("x"), Some("w"), true),
            Plan::Render
        );
    }
}
