//! The few cryptographic primitives callgate uses, in one place.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A value that must never appear in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call this only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// `bytes` random bytes from the operating system, as lowercase hex: tokens, keys, ids.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// SHA-256 of `data` (text or bytes), hex: how tokens and client secrets are stored, and
/// how generated recordings are recognised.
pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(data.as_ref()))
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA1 over the concatenation of `parts` (Twilio's request signatures).
pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Why a webhook's timestamped signature was refused ([`verify_timestamped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no signature header")]
    Missing,
    #[error("the signature header has no timestamp, or no signature of its scheme")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// How far from now a signature's timestamp may be: `max_age` seconds behind, `max_ahead`
/// seconds ahead (a clock a little fast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerance {
    pub max_age: i64,
    pub max_ahead: i64,
}

/// The hex HMAC-SHA256 under `secret` of `TIMESTAMP.BODY`: how Stripe (`v1`) and ElevenLabs
/// (`v0`) sign their webhooks.
pub fn sign_timestamped(secret: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(hmac_sha256(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    ))
}

/// Checks a `t=TIMESTAMP,<scheme>=HEX[,<scheme>=HEX...]` header against the raw body: every
/// signature under `scheme` is compared in constant time (a rolled secret's two both work),
/// then the timestamp against `now` and the tolerance.
pub fn verify_timestamped(
    header: Option<&str>,
    scheme: &str,
    body: &[u8],
    secret: &str,
    now: i64,
    tolerance: Tolerance,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some((name, sig)) if name == scheme => candidates.push(sig),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let expected = sign_timestamped(secret, timestamp, body);
    let mut matched = false;
    for sig in candidates {
        matched |= constant_time_eq(expected.as_bytes(), sig.as_bytes());
    }
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if now - timestamp > tolerance.max_age || timestamp - now > tolerance.max_ahead {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

/// Whether `given` equals the configured `secret`, in time that depends on neither: both are
/// hashed to equal length first, so not even the secret's length leaks.
pub fn secrets_equal(given: &str, secret: &str) -> bool {
    let digest = |text: &str| hmac_sha256(b"callgate-secret-compare", &[text.as_bytes()]);
    constant_time_eq(&digest(given), &digest(secret))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_sha1_matches_rfc2202_case_2() {
        let mac = hmac_sha1(b"Jefe", &[b"what do ya want for nothing?"]);
        assert_eq!(hex::encode(mac), "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn secrets_equal_compares_whatever_the_lengths() {
        assert!(secrets_equal("correct horse", "correct horse"));
        assert!(!secrets_equal("correct horse", "correct horsf"));
        assert!(!secrets_equal("correct", "correct horse"));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
