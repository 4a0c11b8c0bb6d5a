//! The lists' filters and pages: one state, a range of days (UTC, both ends included), and
//! the cursor an "Older" link carries. The same filters narrow the list's CSV, which reads
//! every matching row a page at a time.

use std::future::Future;
use std::str::FromStr;

use axum::body::Body;
use futures_util::{stream, StreamExt};

use super::*;
use crate::domain::clock::parse_date;
use crate::store::{Cursor, Listing};

/// Rows an export reads at a time.
const EXPORT_PAGE: i64 = 1000;

/// A list's filters and page, as its address carries them.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    after: String,
}

impl ListQuery {
    /// The store's listing for these filters, `limit` rows; or what is wrong with them.
    pub(super) fn listing<S: FromStr>(&self, limit: i64) -> Result<Listing<S>, String> {
        let state = match self.state.trim() {
            "" => None,
            s => Some(
                s.parse::<S>()
                    .map_err(|_| "that state is not one of the list's".to_string())?,
            ),
        };
        let day = |d: &str, name: &str| match d.trim() {
            "" => Ok(None),
            d => parse_date(d)
                .map(Some)
                .ok_or_else(|| format!("the {name} date must read like 2026-12-03")),
        };
        let after = match self.after.trim() {
            "" => None,
            a => Some(Cursor::parse(a).ok_or("that page is not one of the list's")?),
        };
        Ok(Listing {
            state,
            from: day(&self.from, "from")?,
            // The last day is included: rows before the next day's first second.
            until: day(&self.until, "until")?.map(|d| d + 86_400),
            after,
            limit,
        })
    }

    /// The filters (not the page) as a query string, `&`-led pairs after `?`.
    fn filters(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("state", &self.state),
            ("from", &self.from),
            ("until", &self.until),
        ] {
            if !value.trim().is_empty() {
                q.append_pair(name, value.trim());
            }
        }
        q.finish()
    }

    /// The list's address with these filters, after `cursor` when given.
    fn address(&self, path: &str, cursor: Option<&Cursor>) -> String {
        let mut query = self.filters();
        if let Some(c) = cursor {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("after=");
            query.push_str(&c.to_param());
        }
        if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        }
    }

    /// The filter form (a GET, so it works without scripts), with `states` to pick from.
    pub(super) fn form(&self, path: &str, states: &[&str], problem: Option<&str>) -> String {
        let mut options = String::from("<option value=\"\">Any</option>");
        for s in states {
            let selected = if self.state.trim() == *s {
                " selected"
            } else {
                ""
            };
            let _ = write!(options, "<option value=\"{s}\"{selected}>{s}</option>");
        }
        let problem = problem
            .map(|p| format!("<p class=\"problem\" role=\"alert\">{}</p>", escape(p)))
            .unwrap_or_default();
        format!(
            "<form class=\"filters\" method=\"get\" action=\"{path}\" aria-label=\"Filter\">\
             <label>State <select name=\"state\">{options}</select></label>\
             <label>From <input type=\"date\" name=\"from\" value=\"{from}\"></label>\
             <label>Until <input type=\"date\" name=\"until\" value=\"{until}\"></label>\
             <button>Show</button> <a href=\"{path}\">Clear</a></form>{problem}",
            from = escape(self.from.trim()),
            until = escape(self.until.trim()),
        )
    }

    /// The links under a page: back to the newest, and on to older rows when there are any;
    /// the CSV of every row these filters match.
    pub(super) fn pager(&self, path: &str, export: &str, next: Option<&Cursor>) -> String {
        let mut links = Vec::new();
        if !self.after.trim().is_empty() {
            links.push(format!(
                "<a href=\"{}\">Newest</a>",
                escape(&self.address(path, None))
            ));
        }
        if let Some(next) = next {
            links.push(format!(
                "<a href=\"{}\" rel=\"next\">Older</a>",
                escape(&self.address(path, Some(next)))
            ));
        }
        links.push(format!(
            "<a href=\"{}\">Download CSV</a>",
            escape(&self.address(export, None))
        ));
        format!(
            "<nav class=\"pager\" aria-label=\"Pages\">{}</nav>",
            links.join(" · ")
        )
    }
}

/// Reads one page of a list for `q` (one row beyond the page, to know whether there is a
/// next); a filter that does not parse is said, and the newest rows are shown.
pub(super) fn page_for<S: FromStr>(q: &ListQuery) -> (Listing<S>, Option<String>) {
    match q.listing::<S>(ROWS + 1) {
        Ok(l) => (l, None),
        Err(p) => (Listing::newest(ROWS + 1), Some(p)),
    }
}

/// A state table's spellings, for a filter's choices.
pub(super) fn spellings<S: Copy>(all: &[S], spell: fn(S) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|s| spell(*s)).collect()
}

/// Splits a page read one row beyond `limit`: the rows to show, and where the next page
/// starts when there is one.
pub(super) fn split_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: fn(&T) -> Cursor,
) -> (Vec<T>, Option<Cursor>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(key);
    (rows, next)
}

pub(super) fn order_key(o: &Order) -> Cursor {
    Cursor {
        at: o.created_at,
        id: o.id.clone(),
    }
}

pub(super) fn call_key(c: &Call) -> Cursor {
    Cursor {
        at: c.started_at,
        id: c.call_sid.clone(),
    }
}

pub(super) fn charge_key(c: &Charge) -> Cursor {
    Cursor {
        at: c.created_at,
        id: c.id.clone(),
    }
}

pub(super) fn audit_key(e: &crate::store::AuditEntry) -> Cursor {
    Cursor {
        at: e.at,
        id: e.id.clone(),
    }
}

/// A CSV of every row `first` matches: the header, then the rows a page at a time as the
/// client reads them (memory stays one page, however long the list). A store failure part
/// way ends the body early, so the download fails rather than looking complete.
pub(super) fn csv_pages<T, S, F, Fut>(
    columns: &'static [&'static str],
    first: Listing<S>,
    fetch: F,
    key: fn(&T) -> Cursor,
    row: fn(&T) -> Vec<String>,
) -> Body
where
    T: Send + 'static,
    S: Clone + Send + 'static,
    F: Fn(Listing<S>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<T>, StoreError>> + Send + 'static,
{
    let mut header = String::new();
    csv_line(
        &mut header,
        &columns.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
    );
    let start = Listing {
        limit: EXPORT_PAGE,
        ..first
    };
    let pages = stream::unfold(Some(start), move |listing: Option<Listing<S>>| {
        let read = listing.map(|l| {
            let rows = fetch(l.clone());
            (l, rows)
        });
        async move {
            let (listing, rows) = read?;
            match rows.await {
                Ok(rows) => {
                    let mut out = String::new();
                    for r in &rows {
                        csv_line(&mut out, &row(r));
                    }
                    let full = rows.len() as i64 == listing.limit;
                    let next = rows.last().filter(|_| full).map(|r| Listing {
                        after: Some(key(r)),
                        ..listing
                    });
                    Some((Ok::<_, std::io::Error>(out), next))
                }
                Err(e) => {
                    tracing::error!(error = %e, "an export stopped part way");
                    Some((Err(std::io::Error::other("the store failed")), None))
                }
            }
        }
    });
    Body::from_stream(stream::iter([Ok(header)]).chain(pages))
}
