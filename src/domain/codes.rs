//! Access codes: generated from the OS's cryptographic RNG, typed on a keypad, and stored so
//! that a stolen database dump does not hand out working codes.
//!
//! The store keeps, per code, a keyed hash (HMAC-SHA256 under a key derived from
//! `CALLGATE_SECRET`) for look-ups and uniqueness, the code sealed with XChaCha20-Poly1305
//! under a second derived key (so the success page can show it again), and its last four
//! digits for operators. Without the secret, a dump yields neither the codes nor a way to test
//! guesses offline.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::XChaCha20Poly1305;
use rand::Rng;

use crate::crypto::hmac_sha256;
use crate::crypto::Secret;

/// A numeric access code. Its `Debug` and `Display` show only the last digits.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessCode(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodeError {
    #[error("an access code is digits only")]
    NotDigits,
    #[error("an access code has 6 to 32 digits")]
    WrongLength,
}

impl AccessCode {
    /// A fresh code of `digits` uniformly random decimal digits from the OS RNG.
    pub fn generate(digits: usize) -> AccessCode {
        let mut rng = rand::rngs::OsRng;
        AccessCode(
            (0..digits)
                .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
                .collect(),
        )
    }

    /// Parses what a person typed or pasted: spaces and dashes are ignored.
    pub fn parse(input: &str) -> Result<AccessCode, CodeError> {
        let cleaned: String = input
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '#'))
            .collect();
        if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_ascii_digit()) {
            return Err(CodeError::NotDigits);
        }
        if !(6..=32).contains(&cleaned.len()) {
            return Err(CodeError::WrongLength);
        }
        Ok(AccessCode(cleaned))
    }

    /// The digits themselves: for the customer's eyes and ears only, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn last4(&self) -> String {
        let n = self.0.len();
        self.0[n.saturating_sub(4)..].to_string()
    }

    /// Grouped by four for reading aloud or on screen: "1234 5678 9012".
    pub fn grouped(&self) -> String {
        self.0
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Debug for AccessCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessCode(…{})", self.last4())
    }
}

impl fmt::Display for AccessCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "…{}", self.last4())
    }
}

/// What the store keeps of a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// Keyed hash, hex: unique, used for look-ups.
    pub hash: String,
    /// The code sealed with the vault key: nonce and ciphertext, base64.
    pub sealed: String,
    pub last4: String,
}

/// Keys derived from the master secret for hashing and sealing codes.
#[derive(Clone)]
pub struct CodeVault {
    hash_key: [u8; 32],
    seal_key: [u8; 32],
    link_key: [u8; 32],
}

impl fmt::Debug for CodeVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeVault([redacted])")
    }
}

fn derive(master: &[u8], label: &str) -> [u8; 32] {
    // Keys are HMAC(master, label): independent keys from one secret.
    hmac_sha256(master, &[label.as_bytes()])
}

impl CodeVault {
    pub fn new(master: &Secret) -> CodeVault {
        let m = master.expose().as_bytes();
        CodeVault {
            hash_key: derive(m, "callgate/access-code/hash/v1"),
            seal_key: derive(m, "callgate/access-code/seal/v1"),
            link_key: derive(m, "callgate/account-link/v1"),
        }
    }

    /// The keyed hash of a code, for look-up and throttling.
    pub fn fingerprint(&self, code: &AccessCode) -> String {
        self.fingerprint_digits(&code.0)
    }

    /// The keyed hash of whatever was typed, even if it is not a well-formed code.
    pub fn fingerprint_digits(&self, typed: &str) -> String {
        hex::encode(hmac_sha256(&self.hash_key, &[typed.as_bytes()]))
    }

    pub fn store(&self, code: &AccessCode) -> StoredCode {
        let cipher = XChaCha20Poly1305::new((&self.seal_key).into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encrypting a short in-memory buffer cannot fail.
        let sealed = cipher
            .encrypt(&nonce, code.0.as_bytes())
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        StoredCode {
            hash: self.fingerprint(code),
            sealed: B64.encode(blob),
            last4: code.last4(),
        }
    }

    /// The token of an order's account link: 128 bits of a keyed hash of its id, hex. Only
    /// this server can make one; it is not stored.
    pub fn account_token(&self, order_id: &str) -> String {
        hex::encode(&hmac_sha256(&self.link_key, &[b"account:", order_id.as_bytes()])[..16])
    }

    /// Whether `token` is the order's account token (compared in constant time).
    pub fn account_token_ok(&self, order_id: &str, token: &str) -> bool {
        crate::crypto::constant_time_eq(self.account_token(order_id).as_bytes(), token.as_bytes())
    }

    /// Recovers a code sealed by [`CodeVault::store`]; `None` if it was sealed under another key.
    pub fn open(&self, sealed: &str) -> Option<AccessCode> {
        let blob = B64.decode(sealed).ok()?;
        if blob.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = blob.split_at(24);
        let cipher = XChaCha20Poly1305::new((&self.seal_key).into());
        let plain = cipher.decrypt(nonce.into(), ciphertext).ok()?;
        let text = String::from_utf8(plain).ok()?;
        AccessCode::parse(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_digits_of_the_right_length_and_differ() {
        let a = AccessCode::generate(12);
        let b = AccessCode::generate(12);
        assert_eq!(a.expose().len(), 12);
        assert!(a.expose().chars().all(|c| c.is_ascii_digit()));
        assert_ne!(a, b, "two 12-digit codes from the OS RNG collided");
    }

    #[test]
    fn debug_and_display_hide_the_code() {
        let code = AccessCode::parse("1234 5678 9012").unwrap();
        assert_eq!(format!("{code:?}"), "AccessCode(…9012)");
        assert_eq!(code.to_string(), "…9012");
        assert_eq!(code.grouped(), "1234 5678 9012");
    }

    #[test]
    fn parse_rejects_non_digits() {
        assert_eq!(AccessCode::parse("12ab56"), Err(CodeError::NotDigits));
        assert_eq!(AccessCode::parse(""), Err(CodeError::NotDigits));
        assert!(AccessCode::parse("123").is_err());
        assert_eq!(
            AccessCode::parse("123-456-789#").unwrap().expose(),
            "123456789"
        );
    }

    #[test]
    fn vault_round_trips_and_hashes_are_keyed() {
        let vault = CodeVault::new(&Secret::new("a".repeat(32)));
        let other = CodeVault::new(&Secret::new("b".repeat(32)));
        let code = AccessCode::generate(12);
        let stored = vault.store(&code);
        assert_eq!(stored.last4, code.last4());
        assert!(!stored.sealed.contains(code.expose()));
        assert_eq!(vault.open(&stored.sealed), Some(code.clone()));
        assert_eq!(other.open(&stored.sealed), None);
        assert_ne!(vault.fingerprint(&code), other.fingerprint(&code));
        assert_eq!(vault.fingerprint(&code), stored.hash);
        assert_eq!(vault.open("not base64!"), None);
        assert_eq!(vault.open(""), None);
    }
}
