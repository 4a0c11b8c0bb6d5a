//! The console's lists: newest first, a page at a time, one state and a time range at most.
//! A page starts after a [`Cursor`] (the last row of the page before: its time and id), so a
//! page reads only its own rows however long the list, and a row written meanwhile neither
//! repeats nor skips one.

use super::UnixTime;

/// Where the next page starts: after the row with this time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at: UnixTime,
    pub id: String,
}

impl Cursor {
    /// `at.id`, as a page's address carries it.
    pub fn to_param(&self) -> String {
        format!("{}.{}", self.at, self.id)
    }

    /// The cursor an address carries, if it is one.
    pub fn parse(param: &str) -> Option<Cursor> {
        let (at, id) = param.split_once('.')?;
        let at = at.parse().ok()?;
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| Cursor {
            at,
            id: id.to_string(),
        })
    }
}

/// One page of a list: newest first (by time, then id), optionally only rows in `state`
/// and from `from` (inclusive) until `until` (exclusive), after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<S> {
    pub state: Option<S>,
    pub from: Option<UnixTime>,
    pub until: Option<UnixTime>,
    pub after: Option<Cursor>,
    pub limit: i64,
}

impl<S> Listing<S> {
    /// The newest `limit` rows, every state.
    pub fn newest(limit: i64) -> Listing<S> {
        Listing {
            state: None,
            from: None,
            until: None,
            after: None,
            limit,
        }
    }

    /// The cursor's time, for binding (`None` without a cursor).
    pub fn after_at(&self) -> Option<UnixTime> {
        self.after.as_ref().map(|c| c.at)
    }

    /// The cursor's id, for binding.
    pub fn after_id(&self) -> Option<&str> {
        self.after.as_ref().map(|c| c.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let c = Cursor {
            at: 1_790_000_000,
            id: "ord_3f_a-1".into(),
        };
        assert_eq!(Cursor::parse(&c.to_param()), Some(c));
        for bad in ["", "12", "x.ord_1", "12.", "12.a b", "12.a'--", "12.a.b"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }
}
