//! Remembered callers: when a caller's number may stand in for their code.
//!
//! A caller ID can be spoofed. A number is trusted in place of the code only when the
//! carrier that placed the call attested it fully under SHAKEN/STIR (attestation A: it knows
//! the caller and that they may use the number), which Twilio reports as `StirVerstat`. Any
//! other verdict (B, C, failed, none, or no such header, as on calls from outside the United
//! States) is asked for the code as on any call.

/// Twilio's `StirVerstat` for a fully attested caller ID.
pub const FULL_ATTESTATION: &str = "TN-Validation-Passed-A";

/// The key a caller presses, after their code was accepted, to have their number remembered.
pub const REMEMBER_KEY: &str = "1";
/// The key a recognised caller presses to have their number forgotten.
pub const FORGET_KEY: &str = "9";

/// Whether a call may skip the code on its remembered number: only a phone number, fully
/// attested.
pub fn may_skip_code(is_number: bool, stir_verstat: Option<&str>) -> bool {
    is_number && stir_verstat == Some(FULL_ATTESTATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fully_attested_number_skips_the_code() {
        assert!(may_skip_code(true, Some("TN-Validation-Passed-A")));
        for verdict in [
            None,
            Some("TN-Validation-Passed-B"),
            Some("TN-Validation-Passed-C"),
            Some("TN-Validation-Failed-A"),
            Some("TN-Validation-Failed"),
            Some("No-TN-Validation"),
            Some("tn-validation-passed-a"),
            Some(""),
        ] {
            assert!(!may_skip_code(true, verdict), "{verdict:?}");
        }
        assert!(
            !may_skip_code(false, Some(FULL_ATTESTATION)),
            "not a number"
        );
    }
}
