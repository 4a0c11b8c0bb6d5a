//! Twilio's request signature: HMAC-SHA1 over the URL and the sorted POST parameters.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::crypto::{constant_time_eq, hmac_sha1};

/// The signature Twilio would send for a request to `url` with these form parameters.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = String::with_capacity(url.len() + 256);
    data.push_str(url);
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    B64.encode(hmac_sha1(auth_token.as_bytes(), &[data.as_bytes()]))
}

/// Checks `header` against the URL as given and as Twilio's own validators also accept it:
/// with the scheme's default port written out, or left out.
pub fn validate(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let header = header.trim();
    if header.is_empty() {
        return false;
    }
    let mut ok = false;
    // Check every variant so the time taken does not depend on which one matched.
    for candidate in url_variants(url) {
        let expected = compute(auth_token, &candidate, params);
        ok |= constant_time_eq(expected.as_bytes(), header.as_bytes());
    }
    ok
}

/// The URL as given, plus the same URL with its default port added or removed.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return out,
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let suffix = format!(":{default_port}");
    if let Some(host) = authority.strip_suffix(&suffix) {
        out.push(format!("{scheme}://{host}{tail}"));
    } else if !authority.contains(':') || authority.ends_with(']') {
        out.push(format!("{scheme}://{authority}{suffix}{tail}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const DOC_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn doc_params() -> Vec<(String, String)> {
        // Deliberately not in sorted order.
        params(&[
            ("From", "+14158675309"),
            ("CallSid", "CA1234567890ABCDE"),
            ("To", "+18005551212"),
            ("Digits", "1234"),
            ("Caller", "+14158675309"),
        ])
    }

    /// Twilio's published example (security documentation and its SDKs' tests).
    #[test]
    fn matches_twilios_published_vector() {
        assert_eq!(
            compute("12345", DOC_URL, &doc_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(validate(
            "12345",
            DOC_URL,
            &doc_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn default_port_is_accepted_either_way() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert!(validate(
            "12345",
            with_port,
            &doc_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let signed_with_port = compute("12345", with_port, &doc_params());
        assert!(validate("12345", DOC_URL, &doc_params(), &signed_with_port));
        assert_eq!(
            url_variants("https://h:8443/x").len(),
            1,
            "a non-default port stays"
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let mut tampered = doc_params();
        tampered[3].1 = "9999".into();
        assert!(!validate("12345", DOC_URL, &tampered, sig));
        assert!(!validate("54321", DOC_URL, &doc_params(), sig));
        assert!(!validate(
            "12345",
            "https://mycompany.com/other.php?foo=1&bar=2",
            &doc_params(),
            sig
        ));
        assert!(!validate("12345", DOC_URL, &doc_params(), ""));
        assert!(!validate("12345", DOC_URL, &doc_params(), "not base64 ✗"));
    }

    #[test]
    fn repeated_parameters_sign_each_value_sorted() {
        let p = params(&[
            ("Digits", "5678"),
            ("Sid", "CA123"),
            ("Digits", "1234"),
            ("SidAccount", "AC123"),
            ("Digits", "1234"),
        ]);
        let expected = B64.encode(hmac_sha1(
            b"12345",
            &[
                format!("{DOC_URL}Digits1234Digits1234Digits5678SidCA123SidAccountAC123")
                    .as_bytes(),
            ],
        ));
        assert_eq!(compute("12345", DOC_URL, &p), expected);
    }
}
