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
            connections: super::settings::DEFAULT_DATABASE_CONNECTIONS,
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

/// One plan as `PLANS` writes it: its price still as written, read in the currency later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSpec {
    pub name: String,
    pub minutes: i64,
    pub price: String,
}

/// `PLANS`: `NAME=MINUTES@PRICE`, separated by `;` (a trailing `;` is allowed): at least one,
/// at most 12, names unique (by their id), minutes 1 to 10000.
pub fn plans(value: &str) -> Result<Vec<PlanSpec>, String> {
    let mut plans: Vec<PlanSpec> = Vec::new();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |why: &str| {
            format!("`{entry}`: {why}; write NAME=MINUTES@PRICE, e.g. `Quick chat=5@5.00`")
        };
        let (name, terms) = entry.rsplit_once('=').ok_or_else(|| bad("no `=`"))?;
        let (minutes, price) = terms.split_once('@').ok_or_else(|| bad("no `@`"))?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 60 || name.chars().any(char::is_control) {
            return Err(bad("the name must be 1 to 60 printable characters"));
        }
        if plan_id(name).is_empty() {
            return Err(bad("the name needs a letter or a digit"));
        }
        let minutes: i64 = minutes
            .trim()
            .parse()
            .ok()
            .filter(|m| (1..=10_000).contains(m))
            .ok_or_else(|| bad("minutes must be a whole number from 1 to 10000"))?;
        let price = price.trim();
        if price.is_empty() || !price.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(bad("the price must be an amount such as 10.00"));
        }
        if plans.iter().any(|p| plan_id(&p.name) == plan_id(name)) {
            return Err(bad("two plans with the same name"));
        }
        plans.push(PlanSpec {
            name: name.to_string(),
            minutes,
            price: price.to_string(),
        });
    }
    match plans.len() {
        0 => Err("no plan; write NAME=MINUTES@PRICE, separated by `;`".into()),
        n if n > 12 => Err(format!("{n} plans; at most 12")),
        _ => Ok(plans),
    }
}

/// A plan's id, from its name: lower-case letters and digits, words joined by `-`. What the
/// storefront sends back, so renaming a plan's capitals or spaces keeps its id.
pub fn plan_id(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}
