//! Money in integer minor units and time in whole seconds: no floats anywhere near a price.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount in the currency's minor unit (cents for USD, yen for JPY).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Cents(pub i64);

/// A duration in whole seconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Seconds(pub i64);

impl Seconds {
    pub fn from_minutes(minutes: i64) -> Seconds {
        Seconds(minutes.saturating_mul(60))
    }
}

/// How overage seconds become billed minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Every started minute is billed whole, per call (how telephony is usually billed).
    #[default]
    PerStartedMinute,
    /// Billed to the second, the total rounded up to the minor unit.
    PerSecond,
}

/// The part of a call's `used` seconds beyond the allowance, given the order's seconds used
/// after this call (`used_after`) and its allowance. Never negative, never more than `used`.
pub fn overage_seconds(used: Seconds, used_after: Seconds, included: Seconds) -> Seconds {
    let beyond = (used_after.0 - included.0).max(0);
    Seconds(beyond.min(used.0.max(0)))
}

/// What `overage` seconds cost at `per_minute`, in minor units.
pub fn overage_amount(overage: Seconds, per_minute: Cents, rounding: Rounding) -> Cents {
    let secs = overage.0.max(0);
    let price = per_minute.0.max(0);
    match rounding {
        Rounding::PerStartedMinute => Cents(((secs + 59) / 60).saturating_mul(price)),
        Rounding::PerSecond => Cents((secs.saturating_mul(price) + 59) / 60),
    }
}

/// Currencies Stripe charges without a minor unit.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// A lower-case ISO 4217 code, as Stripe spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Currency(String);

impl Default for Currency {
    fn default() -> Self {
        Currency("usd".into())
    }
}

impl TryFrom<String> for Currency {
    type Error = super::UnknownSpelling;
    fn try_from(code: String) -> Result<Self, Self::Error> {
        Currency::parse(&code).ok_or(super::UnknownSpelling {
            kind: "Currency",
            text: code,
        })
    }
}

impl Currency {
    pub fn parse(code: &str) -> Option<Currency> {
        let code = code.trim().to_ascii_lowercase();
        (code.len() == 3 && code.chars().all(|c| c.is_ascii_lowercase())).then_some(Currency(code))
    }

    pub fn code(&self) -> &str {
        &self.0
    }

    /// Digits after the decimal point in this currency's major unit.
    pub fn decimals(&self) -> u32 {
        if ZERO_DECIMAL.contains(&self.0.as_str()) {
            0
        } else {
            2
        }
    }

    /// Parses "12", "12.5" or "12.50" into minor units, exactly.
    pub fn parse_amount(&self, text: &str) -> Result<Cents, String> {
        let text = text.trim();
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let decimals = self.decimals() as usize;
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        if !digits(whole)
            || (!frac.is_empty() && !digits(frac))
            || (text.contains('.') && frac.is_empty())
        {
            return Err("expected an amount such as 10 or 10.50".into());
        }
        if frac.len() > decimals {
            return Err(format!(
                "{} allows at most {decimals} digits after the point",
                self.0.to_uppercase()
            ));
        }
        let scale = 10i64.pow(decimals as u32);
        let whole: i64 = whole.parse().map_err(|_| "amount too large".to_string())?;
        let frac_value: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<decimals$}")
                .parse()
                .map_err(|_| "bad fraction".to_string())?
        };
        whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(frac_value))
            .filter(|v| *v <= 10_000_000_000)
            .map(Cents)
            .ok_or_else(|| "amount too large".into())
    }

    /// Formats minor units for people: "$10.00", "€1.50", "¥500", or "12.00 CHF".
    pub fn format(&self, amount: Cents) -> String {
        let decimals = self.decimals();
        let negative = amount.0 < 0;
        let abs = amount.0.unsigned_abs();
        let number = if decimals == 0 {
            abs.to_string()
        } else {
            let scale = 10u64.pow(decimals);
            format!(
                "{}.{:0width$}",
                abs / scale,
                abs % scale,
                width = decimals as usize
            )
        };
        let sign = if negative { "-" } else { "" };
        match self.0.as_str() {
            "usd" => format!("{sign}${number}"),
            "eur" => format!("{sign}€{number}"),
            "gbp" => format!("{sign}£{number}"),
            "jpy" => format!("{sign}¥{number}"),
            other => format!("{sign}{number} {}", other.to_uppercase()),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<i64> for Cents {
    fn from(v: i64) -> Self {
        Cents(v)
    }
}

impl From<i64> for Seconds {
    fn from(v: i64) -> Self {
        Seconds(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_amounts_exactly() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(usd.parse_amount("10").unwrap(), Cents(1000));
        assert_eq!(usd.parse_amount("10.5").unwrap(), Cents(1050));
        assert_eq!(usd.parse_amount("0.07").unwrap(), Cents(7));
        for bad in [
            "",
            "1.",
            ".5",
            "1.234",
            "-1",
            "1e3",
            "ten",
            "99999999999999",
        ] {
            assert!(usd.parse_amount(bad).is_err(), "{bad}");
        }
        let jpy = Currency::parse("jpy").unwrap();
        assert_eq!(jpy.parse_amount("500").unwrap(), Cents(500));
        assert!(jpy.parse_amount("500.5").is_err());
    }

    #[test]
    fn overage_rules() {
        let s = Seconds;
        assert_eq!(overage_seconds(s(100), s(400), s(300)), s(100));
        assert_eq!(
            overage_seconds(s(100), s(350), s(300)),
            s(50),
            "only the part beyond"
        );
        assert_eq!(overage_seconds(s(100), s(200), s(300)), s(0));
        // (seconds of overage, price a minute, rounding) -> charged.
        for (seconds, rounding, charged) in [
            (1, Rounding::PerStartedMinute, 100),
            (60, Rounding::PerStartedMinute, 100),
            (61, Rounding::PerStartedMinute, 200),
            (0, Rounding::PerStartedMinute, 0),
            (30, Rounding::PerSecond, 50),
            (1, Rounding::PerSecond, 2),
        ] {
            assert_eq!(
                overage_amount(s(seconds), Cents(100), rounding),
                Cents(charged),
                "{seconds} s {rounding:?}"
            );
        }
    }

    #[test]
    fn formats_amounts() {
        let usd = Currency::parse("usd").unwrap();
        assert_eq!(usd.format(Cents(1050)), "$10.50");
        assert_eq!(usd.format(Cents(7)), "$0.07");
        assert_eq!(Currency::parse("jpy").unwrap().format(Cents(500)), "¥500");
        assert_eq!(
            Currency::parse("chf").unwrap().format(Cents(1200)),
            "12.00 CHF"
        );
        assert!(Currency::parse("us").is_none());
    }
}
