//! Audio for the phone line: G.711 μ-law <-> 16-bit PCM, and resampling between rates.
//! Used only when the agent's audio format is not `ulaw_8000`; otherwise payloads pass
//! through untouched. Also what callgate plays into a call itself ([`StreamAudio`]).

use crate::domain::prompt::Prompt;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// Encodes one 16-bit sample as μ-law (ITU-T G.711).
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // The segment is the position of the highest set bit above bit 7.
    let exponent = (31 - (s >> 7).max(1).leading_zeros()) as i32;
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// Decodes one μ-law byte to a 16-bit sample.
pub fn ulaw_decode(byte: u8) -> i16 {
    let u = !byte as i32;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0F;
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    (if sign != 0 { -magnitude } else { magnitude }) as i16
}

/// PCM 16-bit little-endian bytes to samples (a trailing odd byte is dropped).
pub fn pcm_from_le(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

pub fn pcm_to_le(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Linear-interpolation resampling; adequate for speech between telephone and agent rates.
pub fn resample(samples: &[i16], from: u32, to: u32) -> Vec<i16> {
    if from == to || samples.is_empty() || from == 0 || to == 0 {
        return samples.to_vec();
    }
    let out_len = (samples.len() as u64 * to as u64 / from as u64) as usize;
    let step = from as f64 / to as f64;
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * step;
            let idx = pos as usize;
            let frac = pos - idx as f64;
            let a = samples[idx.min(samples.len() - 1)] as f64;
            let b = samples[(idx + 1).min(samples.len() - 1)] as f64;
            (a + (b - a) * frac).round() as i16
        })
        .collect()
}

/// Base64 text that was checked to decode (standard alphabet, canonical padding): audio that
/// can be passed on as it came. Its characters never need escaping in JSON, so the messages
/// that carry it are written without a scan (see `twilio::stream::MediaWriter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base64Audio<'a>(&'a str);

impl<'a> Base64Audio<'a> {
    /// Decodes `text` into `scratch` (kept by the caller between frames: it grows to the
    /// largest frame once, and is not cleared) to prove it is base64.
    pub fn check(text: &'a str, scratch: &mut Vec<u8>) -> Option<Base64Audio<'a>> {
        Self::decode(text, scratch).map(|(audio, _)| audio)
    }

    /// [`Base64Audio::check`], also giving the audio it decoded (for transcoding).
    pub fn decode<'s>(
        text: &'a str,
        scratch: &'s mut Vec<u8>,
    ) -> Option<(Base64Audio<'a>, &'s [u8])> {
        use base64::Engine;
        let need = base64::decoded_len_estimate(text.len());
        if scratch.len() < need {
            scratch.resize(need, 0);
        }
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(text.as_bytes(), &mut scratch[..need])
            .ok()?;
        Some((Base64Audio(text), &scratch[..n]))
    }

    /// Encodes `audio` into `out`: base64 by construction, so nothing to check.
    pub fn encode(audio: &[u8], out: &'a mut String) -> Base64Audio<'a> {
        use base64::Engine;
        out.clear();
        base64::engine::general_purpose::STANDARD.encode_string(audio, out);
        Base64Audio(out)
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// An agent audio format the bridge can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentFormat {
    Ulaw8000,
    Pcm(u32),
}

impl AgentFormat {
    /// `ulaw_8000`, or `pcm_<rate>` for the rates ElevenLabs offers.
    pub fn parse(name: &str) -> Option<AgentFormat> {
        if name == "ulaw_8000" {
            return Some(AgentFormat::Ulaw8000);
        }
        let rate: u32 = name.strip_prefix("pcm_")?.parse().ok()?;
        matches!(rate, 8000 | 16000 | 22050 | 24000 | 44100 | 48000)
            .then_some(AgentFormat::Pcm(rate))
    }
}

/// Telephone μ-law at 8 kHz to the agent's format.
pub fn from_phone(ulaw: &[u8], to: AgentFormat) -> Vec<u8> {
    match to {
        AgentFormat::Ulaw8000 => ulaw.to_vec(),
        AgentFormat::Pcm(rate) => {
            let pcm: Vec<i16> = ulaw.iter().map(|b| ulaw_decode(*b)).collect();
            pcm_to_le(&resample(&pcm, 8000, rate))
        }
    }
}

/// The agent's format to telephone μ-law at 8 kHz.
pub fn to_phone(audio: &[u8], from: AgentFormat) -> Vec<u8> {
    match from {
        AgentFormat::Ulaw8000 => audio.to_vec(),
        AgentFormat::Pcm(rate) => resample(&pcm_from_le(audio), rate, 8000)
            .into_iter()
            .map(ulaw_encode)
            .collect(),
    }
}

/// A short two-beep tone in μ-law, the warning played when no recorded prompt exists.
pub fn warning_tone() -> Vec<u8> {
    let beep = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| {
                let t = i as f64 / 8000.0;
                ulaw_encode(((2.0 * std::f64::consts::PI * 660.0 * t).sin() * 8000.0) as i16)
            })
            .collect()
    };
    let silence = vec![ulaw_encode(0); 1200];
    [beep(2000), silence, beep(2000)].concat()
}

/// An 8 kHz mono μ-law WAV of `ulaw` (what [`wav_to_ulaw`] reads back unchanged).
pub fn ulaw_wav(ulaw: &[u8]) -> Vec<u8> {
    let len = u32::try_from(ulaw.len()).unwrap_or(u32::MAX - 44);
    let mut wav = Vec::with_capacity(ulaw.len() + 44);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&7u16.to_le_bytes()); // μ-law
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes()); // bytes a second
    wav.extend_from_slice(&1u16.to_le_bytes()); // block
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&len.to_le_bytes());
    wav.extend_from_slice(ulaw);
    wav
}

/// Reads an 8 kHz mono WAV (16-bit PCM or μ-law) into μ-law bytes; `None` for anything else.
pub fn wav_to_ulaw(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12;
    let mut format = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().ok()?) as usize;
        let body = bytes.get(pos + 8..pos + 8 + len.min(bytes.len() - pos - 8))?;
        if id == b"fmt " && body.len() >= 16 {
            let tag = u16::from_le_bytes([body[0], body[1]]);
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            format = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            return match format? {
                (7, 1, 8000, 8) => Some(body.to_vec()),
                (1, 1, rate, 16) => Some(
                    resample(&pcm_from_le(body), rate, 8000)
                        .into_iter()
                        .map(ulaw_encode)
                        .collect(),
                ),
                _ => None,
            };
        }
        pos += 8 + len + (len & 1);
    }
    None
}

/// What callgate itself plays into a live call (not the agent): each prompt's μ-law audio at
/// 8 kHz, from `AUDIO_DIR/<name>.wav` (8 kHz mono, 16-bit PCM or μ-law) when recorded, else a
/// tone of its own, so a caller can tell them apart even unrecorded.
#[derive(Debug, Clone)]
pub struct StreamAudio {
    prompts: std::collections::BTreeMap<Prompt, Vec<u8>>,
    /// `number_<n>.wav` for 0 to 99, where recorded.
    numbers: Vec<Option<Vec<u8>>>,
}

impl StreamAudio {
    /// The numbers that can be spoken (0 to this).
    pub const LARGEST_NUMBER: u32 = 99;

    pub fn load(dir: &std::path::Path) -> StreamAudio {
        let prompts = Prompt::ALL
            .iter()
            .filter(|p| p.plays_in_stream())
            .map(|&prompt| {
                let path = dir.join(format!("{}.wav", prompt.name()));
                let audio = match std::fs::read(&path) {
                    Ok(bytes) => wav_to_ulaw(&bytes).unwrap_or_else(|| {
                        tracing::warn!(path = %path.display(), "not an 8 kHz mono WAV: using its tone");
                        tone_of(prompt)
                    }),
                    Err(_) => tone_of(prompt),
                };
                (prompt, audio)
            })
            .collect();
        let numbers = (0..=Self::LARGEST_NUMBER)
            .map(|n| {
                let path = dir.join(format!("number_{n}.wav"));
                std::fs::read(&path).ok().and_then(|b| wav_to_ulaw(&b))
            })
            .collect();
        StreamAudio { prompts, numbers }
    }

    /// `n` spoken from its recording (`n` at most [`Self::LARGEST_NUMBER`]); unrecorded, as
    /// `n` short beeps (at most 20).
    pub fn number(&self, n: u32) -> Vec<u8> {
        let n = n.min(Self::LARGEST_NUMBER);
        match self.numbers.get(n as usize) {
            Some(Some(audio)) => audio.clone(),
            _ => (0..n.min(20))
                .flat_map(|_| [tone(740.0, 90), tone(0.0, 110)].concat())
                .collect(),
        }
    }

    /// A prompt's μ-law audio (empty for one not played into calls).
    pub fn get(&self, prompt: Prompt) -> &[u8] {
        self.prompts.get(&prompt).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// `ms` of a sine at `hz` in μ-law (`hz` 0 is silence).
fn tone(hz: f64, ms: usize) -> Vec<u8> {
    (0..ms * 8)
        .map(|i| {
            let t = i as f64 / 8000.0;
            ulaw_encode(((2.0 * std::f64::consts::PI * hz * t).sin() * 8000.0) as i16)
        })
        .collect()
}

/// The tone played for a prompt with no recording: each its own pattern.
fn tone_of(prompt: Prompt) -> Vec<u8> {
    let steps: &[(f64, usize)] = match prompt {
        Prompt::OneMinuteLeft => return warning_tone(),
        Prompt::PaidTime => &[
            (880.0, 150),
            (0.0, 100),
            (880.0, 150),
            (0.0, 100),
            (880.0, 150),
        ],
        Prompt::TopUpOffer => &[(0.0, 200), (523.0, 120), (0.0, 80), (523.0, 120)],
        Prompt::TopUpConfirm => &[(988.0, 200)],
        Prompt::TopUpAdded => &[(523.0, 150), (659.0, 150), (784.0, 250)],
        Prompt::TopUpDeclined => &[(494.0, 250), (330.0, 400)],
        Prompt::TopUpConfirmOnline => &[(494.0, 250), (392.0, 250), (330.0, 400)],
        Prompt::TimeLeft | Prompt::PerMinute => &[(0.0, 150)],
        Prompt::InPaidTime => &[(880.0, 150), (0.0, 150)],
        _ => &[],
    };
    steps.iter().flat_map(|&(hz, ms)| tone(hz, ms)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_matches_g711_reference_points() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(32767), 0x80);
        assert_eq!(ulaw_encode(-32768), 0x00);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
    }

    #[test]
    fn ulaw_round_trip_is_close() {
        for s in (-32000i32..32000).step_by(97) {
            let back = ulaw_decode(ulaw_encode(s as i16)) as i32;
            let tolerance = (s.abs() / 16).max(8);
            assert!((back - s).abs() <= tolerance, "{s} -> {back}");
        }
        // Every byte decodes and re-encodes to itself (0x7F and 0xFF both mean zero).
        for b in 0..=255u8 {
            let again = ulaw_encode(ulaw_decode(b));
            assert!(again == b || (ulaw_decode(b) == 0), "{b:#x} -> {again:#x}");
        }
    }

    #[test]
    fn resampling_keeps_duration() {
        let tone: Vec<i16> = (0..160).map(|i| (i * 100) as i16).collect();
        assert_eq!(resample(&tone, 8000, 16000).len(), 320);
        assert_eq!(
            resample(&resample(&tone, 8000, 16000), 16000, 8000).len(),
            160
        );
        assert_eq!(from_phone(&[0xFF; 160], AgentFormat::Pcm(16000)).len(), 640);
        assert_eq!(
            to_phone(&vec![0u8; 640], AgentFormat::Pcm(16000)).len(),
            160
        );
        assert_eq!(from_phone(&[1, 2, 3], AgentFormat::Ulaw8000), vec![1, 2, 3]);
    }

    #[test]
    fn base64_audio_is_checked() {
        let mut scratch = Vec::new();
        for good in ["", "AA==", "/w==", "AAAA", "+/+/"] {
            assert_eq!(
                Base64Audio::check(good, &mut scratch).map(|a| a.as_str()),
                Some(good)
            );
        }
        for bad in [
            "A", "AA=", "AA=A", "AA\"=", "AA\\=", "ÿÿÿÿ", "AA==AA==", "A A=",
        ] {
            assert!(Base64Audio::check(bad, &mut scratch).is_none(), "{bad}");
        }
        let (_, bytes) = Base64Audio::decode("AAEC", &mut scratch).unwrap();
        assert_eq!(bytes, [0, 1, 2]);
        let mut out = String::new();
        let encoded = Base64Audio::encode(&[0, 1, 2, 255], &mut out);
        assert_eq!(
            Base64Audio::check(encoded.as_str(), &mut scratch),
            Some(encoded)
        );
        // A long frame after short ones: the scratch grows.
        let long = "QUJD".repeat(5000);
        assert!(Base64Audio::check(&long, &mut scratch).is_some());
    }

    #[test]
    fn formats() {
        assert_eq!(AgentFormat::parse("ulaw_8000"), Some(AgentFormat::Ulaw8000));
        assert_eq!(
            AgentFormat::parse("pcm_16000"),
            Some(AgentFormat::Pcm(16000))
        );
        assert_eq!(AgentFormat::parse("mp3_44100"), None);
        assert_eq!(AgentFormat::parse("pcm_abc"), None);
    }

    #[test]
    fn ulaw_wav_reads_back() {
        let ulaw: Vec<u8> = (0..=255).collect();
        assert_eq!(wav_to_ulaw(&ulaw_wav(&ulaw)), Some(ulaw));
        assert_eq!(ulaw_wav(&[]).len(), 44);
    }

    #[test]
    fn wav_files() {
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
        wav.extend_from_slice(&1u16.to_le_bytes()); // mono
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend_from_slice(&16000u32.to_le_bytes());
        wav.extend_from_slice(&2u16.to_le_bytes());
        wav.extend_from_slice(&16u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&8u32.to_le_bytes());
        wav.extend_from_slice(&[0u8; 8]);
        assert_eq!(wav_to_ulaw(&wav), Some(vec![0xFF; 4]));
        assert_eq!(wav_to_ulaw(b"not a wav"), None);
        assert_eq!(wav_to_ulaw(&wav[..30]), None);
        assert!(!warning_tone().is_empty());
    }
}
