//! The parsers of the settings that take more than a number: URLs, the database, Twilio's
//! identifiers, the agent id, proxy ranges. Each answers the reason a value is refused; the
//! table names the variable.

use std::path::PathBuf;

use url::Url;

use super::{DatabaseConfig, Secret};
use crate::domain::phone::E164;

/// An http or https URL with a host.
pub fn http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("`{value}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "`{value}` must be an http or https URL with a host"
        ));
    }
    Ok(url)
}

/// The public URL: no query or fragment, no trailing slash (paths are joined onto it).
pub fn base_url(value: &str) -> Result<Url, String> {
    let mut url = http_url(value)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment".into());
    }
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

/// `DATABASE_URL`: `sqlite:PATH`, `sqlite://PATH`, `postgres://...`, `postgresql://...` or
/// `mongodb://...`.
pub fn database_url(value: &str) -> Result<DatabaseConfig, String> {
    if let Some(rest) = value.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err("a sqlite URL needs a file path, e.g. sqlite:callgate.db".into());
        }
        if path == ":memory:" {
            return Err(
                "an in-memory database would lose every order at restart; name a file".into(),
            );
        }
        return Ok(DatabaseConfig::Sqlite {
            path: PathBuf::from(path),
        });
    }
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        let parsed = Url::parse(value).map_err(|e| format!("not a valid PostgreSQL URL ({e})"))?;
        if parsed.host().is_none() && !value.contains("host=") {
            return Err(
                "a PostgreSQL URL needs a host, e.g. postgres://user@localhost/callgate".into(),
            );
        }
        return Ok(DatabaseConfig::Postgres {
            url: Secret::new(value),
        });
    }
    if value.starts_with("mongodb://") || value.starts_with("mongodb+srv://") {
        return mongodb_uri(value);
    }
    Err("expected sqlite:PATH or postgres://user@host/database".into())
}

/// `MONGODB_URI`, as the old deployment set it.
pub fn mongodb_uri(value: &str) -> Result<DatabaseConfig, String> {
    if !(value.starts_with("mongodb://") || value.starts_with("mongodb+srv://")) {
        return Err("must start with mongodb:// or mongodb+srv://".into());
    }
    Ok(DatabaseConfig::Mongo {
        uri: Secret::new(value),
    })
}

/// `AC` and 32 hexadecimal characters.
pub fn twilio_sid(value: &str) -> Result<String, String> {
    let ok = value.len() == 34
        && value.starts_with("AC")
        && value[2..].chars().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(value.to_string())
    } else {
        Err("expected `AC` followed by 32 hexadecimal characters".into())
    }
}

/// A phone number in E.164 form.
pub fn e164(value: &str) -> Result<String, String> {
    E164::parse(value)
        .map(|n| n.as_str().to_string())
        .ok_or_else(|| "expected E.164 form: `+` and 8 to 15 digits, e.g. +15551234567".into())
}

/// An agent id, bare or from a URL's `agent_id` query parameter, as the old deployment
/// allowed.
pub fn agent_id(value: &str) -> Result<String, String> {
    let id = if value.contains("://") || value.contains('?') {
        let url = Url::parse(value)
            .or_else(|_| Url::parse(&format!("https://placeholder/{value}")))
            .map_err(|_| "neither an agent id nor a URL".to_string())?;
        url.query_pairs()
            .find(|(k, _)| k == "agent_id")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| "the URL has no agent_id= parameter".to_string())?
    } else {
        value.to_string()
    };
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("an agent id is letters, digits, `_` and `-`".into());
    }
    Ok(id)
}

/// Comma-separated addresses or CIDR ranges.
pub fn proxies(list: &str) -> Result<Vec<ipnet::IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!("`{p}` is neither an address nor a CIDR range such as 10.0.0.0/8")
                })
        })
        .collect()
}
