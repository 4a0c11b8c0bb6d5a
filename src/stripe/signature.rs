//! Stripe's webhook signature: `Stripe-Signature: t=TIMESTAMP,v1=HEX[,v1=HEX...]`, where each
//! `v1` is HMAC-SHA256 under the endpoint secret over `TIMESTAMP.BODY`.

pub use crate::crypto::SignatureError;
use crate::crypto::{sign_timestamped, verify_timestamped, Tolerance};

/// How far a signature's timestamp may be from now, as Stripe's libraries default to.
pub const TOLERANCE_SECS: i64 = 300;

/// The `v1` signature of `body` at `timestamp` (what Stripe sends; tests sign with this too).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    sign_timestamped(secret, timestamp, body)
}

/// Checks the `Stripe-Signature` header against the raw body, then its timestamp.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let tolerance = Tolerance {
        max_age: TOLERANCE_SECS,
        max_ahead: TOLERANCE_SECS,
    };
    verify_timestamped(header, "v1", body, secret, now, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    #[test]
    fn accepts_a_good_signature_among_several() {
        let t = 1_700_000_000;
        let good = sign(SECRET, t, BODY);
        let header = format!("t={t},v1={},v0=abc,v1={good}", "0".repeat(64));
        assert_eq!(verify(Some(&header), BODY, SECRET, t + 10), Ok(()));
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256("whsec_test_secret", "1700000000.{body}") computed independently.
        let sig = sign(SECRET, 1_700_000_000, BODY);
        assert_eq!(sig.len(), 64);
        assert_eq!(
            sig,
            hex::encode(crate::crypto::hmac_sha256(
                SECRET.as_bytes(),
                &[b"1700000000.", BODY]
            ))
        );
    }

    #[test]
    fn rejects_bad_headers() {
        let t = 1_700_000_000;
        let good = sign(SECRET, t, BODY);
        assert_eq!(verify(None, BODY, SECRET, t), Err(SignatureError::Missing));
        assert_eq!(
            verify(Some("garbage"), BODY, SECRET, t),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some(&format!("v1={good}")), BODY, SECRET, t),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some(&format!("t={t}")), BODY, SECRET, t),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some(&format!("t=abc,v1={good}")), BODY, SECRET, t),
            Err(SignatureError::Malformed)
        );
        let header = format!("t={t},v1={good}");
        assert_eq!(
            verify(Some(&header), b"{}", SECRET, t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, "whsec_other", t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, SECRET, t + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(Some(&header), BODY, SECRET, t - 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(verify(Some(&header), BODY, SECRET, t + 300), Ok(()));
        // A signature over another timestamp does not verify with this one.
        let header = format!("t={},v1={good}", t + 1);
        assert_eq!(
            verify(Some(&header), BODY, SECRET, t),
            Err(SignatureError::Mismatch)
        );
    }
}
