//! Messages to customers (receipts with their code, a lost code sent again), by SMS or email,
//! kept in an outbox until sent: their states, whose address they go to, and when a failed
//! send is tried again. A message's text is made when it is sent, from its order, so the
//! outbox never holds a code.

use serde::Serialize;

use super::clock::UnixTime;
use super::text_enum;

text_enum!(
    /// How a message travels.
    Channel {
        Sms = "sms",
        Email = "email",
    }
);

text_enum!(
    /// What a message says.
    MessageKind {
        /// After a purchase: the code, the number to call, the account link.
        Receipt = "receipt",
        /// Asked for on the find-my-code page: the codes this address received.
        Codes = "codes",
        /// A top-up chosen during a call that the bank wants confirmed: the top-up page's link.
        TopUpLink = "top_up_link",
    }
);

text_enum!(
    /// Where a message stands.
    MessageState {
        /// Waiting for its (next) send.
        Pending = "pending",
        /// Handed to the relay (SMTP accepted it, Twilio queued it).
        Sent = "sent",
        /// Twilio reported it delivered.
        Delivered = "delivered",
        /// Given up: every try failed, or Twilio reported it undelivered.
        Failed = "failed",
    }
);

impl MessageState {
    /// Whether a message may move from this state to `next` on Twilio's report: only
    /// forward (queued or sent, then delivered or failed), whatever order the callbacks
    /// come in.
    pub fn may_become(self, next: MessageState) -> bool {
        use MessageState::*;
        matches!(
            (self, next),
            (Pending, Sent | Delivered | Failed) | (Sent, Delivered | Failed)
        )
    }

    /// The states a report may move a message to `next` from.
    pub fn sources(next: MessageState) -> impl Iterator<Item = MessageState> {
        MessageState::ALL
            .iter()
            .copied()
            .filter(move |s| s.may_become(next))
    }

    /// What Twilio's `MessageStatus` callback says of an SMS, when it settles it: `delivered`,
    /// or `failed` / `undelivered`; `sent` once the carrier has it. The steps before (queued,
    /// sending) change nothing.
    pub fn from_twilio(status: &str) -> Option<MessageState> {
        match status {
            "delivered" => Some(MessageState::Delivered),
            "failed" | "undelivered" => Some(MessageState::Failed),
            "sent" => Some(MessageState::Sent),
            _ => None,
        }
    }
}

/// How many times a message is tried before it is `failed` (and shown so in `/admin`).
pub const MAX_TRIES: i64 = 6;

/// When a message that failed its `tries`-th send is tried again: 30 s, then doubling
/// (30 s, 1 min, 2 min, 4 min, 8 min); `None` once it has had [`MAX_TRIES`].
pub fn retry_at(tries: i64, now: UnixTime) -> Option<UnixTime> {
    (tries < MAX_TRIES).then(|| now + 30 * (1 << (tries - 1).clamp(0, 10)))
}

/// A contact address as the customer typed it, checked: an email address or an E.164 number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Address {
    pub channel: Channel,
    pub to: String,
}

impl Address {
    /// An email address, lower-cased (the same person types it in any case).
    pub fn email(raw: &str) -> Option<Address> {
        let s = raw.trim();
        let plausible = s.len() <= 254
            && s.split_once('@').is_some_and(|(a, d)| {
                !a.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
            })
            && s.matches('@').count() == 1
            && !s.chars().any(|c| {
                c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
            });
        plausible.then(|| Address {
            channel: Channel::Email,
            to: s.to_ascii_lowercase(),
        })
    }

    /// A mobile number in E.164 (spaces, dashes and brackets dropped).
    pub fn sms(raw: &str) -> Option<Address> {
        let cleaned: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        super::phone::E164::parse(&cleaned).map(|n| Address {
            channel: Channel::Sms,
            to: n.as_str().to_string(),
        })
    }

    /// Either, whichever the text is.
    pub fn parse(raw: &str) -> Option<Address> {
        if raw.contains('@') {
            Address::email(raw)
        } else {
            Address::sms(raw)
        }
    }
}

/// An address as it may be shown back to whoever holds the order's link: enough to recognise,
/// not enough to learn (`a•••@example.com`, `+1•••0100`).
pub fn masked(channel: Channel, to: &str) -> String {
    match channel {
        Channel::Email => match to.split_once('@') {
            Some((local, domain)) => {
                format!("{}•••@{domain}", local.chars().next().unwrap_or('•'))
            }
            None => "•••".into(),
        },
        Channel::Sms => {
            let digits: Vec<char> = to.chars().collect();
            let tail: String = digits[digits.len().saturating_sub(4)..].iter().collect();
            let head: String = digits.iter().take(2).collect();
            format!("{head}•••{tail}")
        }
    }
}

/// A message in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Message {
    pub id: String,
    pub order_id: String,
    pub kind: MessageKind,
    pub channel: Channel,
    #[sqlx(rename = "to_address")]
    pub to: String,
    pub state: MessageState,
    pub tries: i64,
    /// When it is next tried (while pending).
    pub next_attempt_at: Option<UnixTime>,
    pub last_error: Option<String>,
    /// Twilio's message SID, once queued there.
    pub provider_id: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_kept_in_one_form() {
        assert_eq!(
            Address::email(" Ann@Example.COM ").unwrap().to,
            "ann@example.com"
        );
        for bad in [
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
            "ann@example.com>",
        ] {
            assert!(Address::email(bad).is_none(), "{bad}");
        }
        assert_eq!(
            Address::sms("+1 (555) 010-0200").unwrap().to,
            "+15550100200"
        );
        assert!(Address::sms("555 0100").is_none());
        assert_eq!(
            Address::parse("+15550100200").unwrap().channel,
            Channel::Sms
        );
        assert_eq!(Address::parse("a@b.co").unwrap().channel, Channel::Email);
    }

    #[test]
    fn addresses_are_shown_masked() {
        assert_eq!(
            masked(Channel::Email, "ann@example.com"),
            "a•••@example.com"
        );
        assert_eq!(masked(Channel::Sms, "+15557770100"), "+1•••0100");
    }

    #[test]
    fn reports_move_a_message_forward_only() {
        use MessageState::*;
        assert!(Sent.may_become(Delivered));
        assert!(
            !Delivered.may_become(Sent),
            "a late `sent` after `delivered`"
        );
        assert!(!Failed.may_become(Delivered));
        assert_eq!(MessageState::sources(Sent).collect::<Vec<_>>(), [Pending]);
    }

    #[test]
    fn a_failed_send_is_tried_again_later_then_given_up() {
        assert_eq!(retry_at(1, 100), Some(130));
        assert_eq!(retry_at(2, 100), Some(160));
        assert_eq!(retry_at(5, 100), Some(100 + 480));
        assert_eq!(retry_at(MAX_TRIES, 100), None);
    }
}
