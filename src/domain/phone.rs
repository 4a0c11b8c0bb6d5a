//! Phone numbers as callgate checks them: E.164 (`+` and 8 to 15 digits), for the operator's
//! number in the settings and for callers in Twilio's webhooks alike.

/// A phone number in E.164 form: `+` and 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct E164(String);

impl E164 {
    pub fn parse(raw: &str) -> Option<E164> {
        let digits = raw.strip_prefix('+')?;
        ((8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()))
            .then(|| E164(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::E164;

    #[test]
    fn only_a_plus_and_eight_to_fifteen_digits() {
        assert!(E164::parse("+15558880001").is_some());
        assert!(E164::parse("+12345678").is_some());
        for bad in [
            "15558880001",
            "+1555",
            "+1234567890123456",
            "+1555 888",
            "+1-555-888-0001",
            "",
        ] {
            assert!(E164::parse(bad).is_none(), "{bad}");
        }
    }
}
