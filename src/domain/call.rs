//! A call's life, in one place: where it stands ([`CallState`]), what Twilio says of it
//! ([`TwilioStatus`]), why it ended ([`EndReason`]), who spoke ([`Speaker`]), and which
//! moves between states are allowed.
//!
//! ```text
//!   (Twilio rings)        code accepted, stream started        bridge or Twilio ends it
//!  ─────────────► Menu ───────────────────────────► Bridged ───────────────────────► Ended
//!                   └──────────────── Twilio ends it (no code, wrong code, hang-up) ──┘
//! ```
//! Ended is final: a late "bridged" (a stream that opens after the status callback) changes
//! nothing, and the call is settled once, from Ended.

use serde::Serialize;

use super::clock::UnixTime;
use super::money::Seconds;
use super::order::{Order, OrderStatus};
use super::text_enum;

text_enum!(
    /// Where a call stands.
    CallState {
        /// At the phone menu: greeted, typing a code.
        Menu = "menu",
        /// Its media stream is bridged to the agent, and metered.
        Bridged = "bridged",
        /// Over, for Twilio or for the bridge (whichever said so first).
        Ended = "ended",
    }
);

impl CallState {
    /// Whether a call in this state may move to `next`. The stores apply exactly these moves
    /// (SQL in its `WHERE`, MongoDB in its filter); `store_conformance` checks them against
    /// this table.
    pub fn may_become(self, next: CallState) -> bool {
        use CallState::*;
        matches!(
            (self, next),
            (Menu, Bridged) | (Menu, Ended) | (Bridged, Ended)
        )
    }
}

text_enum!(
    /// Twilio's `CallStatus` (the spellings are Twilio's own).
    TwilioStatus {
        Queued = "queued",
        Ringing = "ringing",
        InProgress = "in-progress",
        Completed = "completed",
        Busy = "busy",
        Failed = "failed",
        NoAnswer = "no-answer",
        Canceled = "canceled",
    }
);

impl TwilioStatus {
    /// The call is over: Twilio sends nothing more for it.
    pub fn is_final(self) -> bool {
        use TwilioStatus::*;
        matches!(self, Completed | Busy | Failed | NoAnswer | Canceled)
    }
}

text_enum!(
    /// Why a call ended, as stored: the bridge's reasons, or Twilio's final status when
    /// Twilio reported the end first.
    EndReason {
        /// The caller hung up during the conversation.
        CallerHungUp = "caller_hung_up",
        /// The allowance (without overage) or the longest call ran out.
        TimeUp = "time_up",
        /// The agent could not be reached, or stopped answering.
        AgentFailed = "agent_failed",
        /// The server shut down and its grace period ran out.
        Shutdown = "shutdown",
        /// The order was refunded, disputed or revoked mid-call.
        Revoked = "revoked",
        /// The call lost its hold on the order (its heartbeat lapsed and another call settled it).
        HoldLost = "hold_lost",
        /// The caller pressed `0`: the conversation ended and the operator is dialled.
        Transferred = "transferred",
        /// The agent ended the conversation (its `end_call` tool, or a normal close).
        AgentEnded = "agent_ended",
        TwilioCompleted = "twilio_completed",
        TwilioBusy = "twilio_busy",
        TwilioFailed = "twilio_failed",
        TwilioNoAnswer = "twilio_no_answer",
        TwilioCanceled = "twilio_canceled",
    }
);

text_enum!(
    /// Why the menu refused a code that matched an order, as the caller was told it.
    Refusal {
        /// "This code has no minutes left."
        NoMinutes = "no_minutes",
        /// The order was refunded, disputed or revoked.
        Revoked = "revoked",
        /// Overage charges are suspended after a declined card.
        OverageSuspended = "overage_suspended",
        /// Another call holds the code.
        InUse = "in_use",
    }
);

impl Refusal {
    /// The prompt the caller heard.
    pub fn prompt(self) -> super::prompt::Prompt {
        use super::prompt::Prompt;
        match self {
            Refusal::NoMinutes => Prompt::NoMinutesLeft,
            Refusal::Revoked => Prompt::CodeRevoked,
            Refusal::OverageSuspended => Prompt::OverageSuspended,
            Refusal::InUse => Prompt::CodeInUse,
        }
    }
}

impl EndReason {
    /// The reason for a call Twilio reported over with `status`, if it is final.
    pub fn from_twilio(status: TwilioStatus) -> Option<EndReason> {
        Some(match status {
            TwilioStatus::Completed => EndReason::TwilioCompleted,
            TwilioStatus::Busy => EndReason::TwilioBusy,
            TwilioStatus::Failed => EndReason::TwilioFailed,
            TwilioStatus::NoAnswer => EndReason::TwilioNoAnswer,
            TwilioStatus::Canceled => EndReason::TwilioCanceled,
            TwilioStatus::Queued | TwilioStatus::Ringing | TwilioStatus::InProgress => return None,
        })
    }

    /// Whether the agent may finish what it is saying before the stream ends: when callgate
    /// or the agent ends the call, not when the caller did, the agent is gone, or the
    /// caller asked for a person (they pressed `0` to leave the agent).
    pub fn lets_agent_finish(self) -> bool {
        matches!(
            self,
            EndReason::TimeUp
                | EndReason::Shutdown
                | EndReason::Revoked
                | EndReason::HoldLost
                | EndReason::AgentEnded
        )
    }

    /// What the caller hears as the stream closes (the menu's farewell picks its prompt).
    pub fn farewell(self) -> Farewell {
        match self {
            EndReason::TimeUp => Farewell::TimeUp,
            EndReason::AgentFailed | EndReason::Shutdown | EndReason::HoldLost => {
                Farewell::AgentUnavailable
            }
            EndReason::Revoked => Farewell::CodeRevoked,
            EndReason::Transferred => Farewell::Transfer,
            EndReason::AgentEnded => Farewell::Silent,
            EndReason::CallerHungUp
            | EndReason::TwilioCompleted
            | EndReason::TwilioBusy
            | EndReason::TwilioFailed
            | EndReason::TwilioNoAnswer
            | EndReason::TwilioCanceled => Farewell::Goodbye,
        }
    }
}

/// The closing words a call's end calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Farewell {
    TimeUp,
    /// Dial the operator.
    Transfer,
    AgentUnavailable,
    CodeRevoked,
    Goodbye,
    /// Nothing: the agent said goodbye itself.
    Silent,
}

text_enum!(
    /// Who said a line of the transcript.
    Speaker {
        Caller = "caller",
        Agent = "agent",
    }
);

/// A call as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Call {
    pub call_sid: String,
    pub order_id: Option<String>,
    pub from_number: String,
    pub to_number: String,
    pub status: CallState,
    pub started_at: UnixTime,
    pub bridged_at: Option<UnixTime>,
    pub ended_at: Option<UnixTime>,
    #[sqlx(try_from = "i64")]
    pub seconds_metered: Seconds,
    pub twilio_duration: Option<i64>,
    pub end_reason: Option<EndReason>,
    pub updated_at: UnixTime,
    /// Twilio's final `CallStatus`, once reported.
    pub twilio_status: Option<TwilioStatus>,
    /// When billing accounted for the ended call; `None` means billing still owes it a look.
    pub settled_at: Option<UnixTime>,
    /// When the media bridge finished (its metering is then final).
    pub bridge_ended_at: Option<UnixTime>,
    /// The agent's conversation id, for looking the call up at ElevenLabs.
    pub conversation_id: Option<String>,
    /// Seconds this call took from its order's allowance (set by settlement).
    pub settled_seconds: Option<i64>,
    /// The menu refused the code typed on this call, and why (what the caller was told).
    pub refused: Option<Refusal>,
    /// The order whose code was refused (the call never held it).
    pub refused_order_id: Option<String>,
}

impl Call {
    /// The order whose hold this call gives up when it ends: one it held without ever
    /// bridging. A bridged call keeps its hold until settlement debits it in the same step.
    pub fn releases_hold(&self) -> Option<&str> {
        match (&self.order_id, self.bridged_at) {
            (Some(order_id), None) => Some(order_id),
            _ => None,
        }
    }

    /// Whether the call is over: ended, or settled already. An over call may hold nothing.
    pub fn is_over(&self) -> bool {
        self.status == CallState::Ended || self.settled_at.is_some()
    }

    /// The agent seconds this call used: what its bridge metered (the bridge is the meter; a
    /// bridge that died loses at most its last metering interval).
    pub fn billable_seconds(&self) -> Seconds {
        if self.bridged_at.is_none() {
            return Seconds(0);
        }
        Seconds(self.seconds_metered.0.max(0))
    }
}

/// Seconds of a call whose agent failed that are not billed: all of them when the agent was
/// last heard within the first `free_secs` (a call that never got going costs nothing), else
/// those after it was last heard (at `heard_at` metered seconds of `elapsed`).
pub fn waived_after_agent_failure(elapsed: i64, heard_at: i64, free_secs: i64) -> i64 {
    let heard_at = heard_at.clamp(0, elapsed.max(0));
    if heard_at <= free_secs {
        elapsed.max(0)
    } else {
        elapsed - heard_at
    }
}

/// Why a media stream may not open, though its token was valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefusal {
    /// The call is over (ended or settled), already bridged, or unknown: nothing connects and
    /// nothing is written for it.
    CallOver,
    /// The call is live but may not use the code: its order is gone or no longer paid
    /// (refunded, disputed, revoked), or another call holds it. The call ends for this reason.
    CodeUnusable(EndReason),
}

/// Whether the stream of `call`, granted on `order`, may open: decided before anything
/// outside is touched (the agent's conversation is opened only after this says yes). The
/// store reads both in the same step that spends the stream token.
pub fn stream_refusal(call: Option<&Call>, order: Option<&Order>) -> Option<StreamRefusal> {
    let call = match call {
        Some(c) if c.status == CallState::Menu && c.settled_at.is_none() => c,
        _ => return Some(StreamRefusal::CallOver),
    };
    match order {
        Some(o) if o.status != OrderStatus::Paid => {
            Some(StreamRefusal::CodeUnusable(EndReason::Revoked))
        }
        Some(o) if o.active_call_sid.as_deref() == Some(call.call_sid.as_str()) => None,
        _ => Some(StreamRefusal::CodeUnusable(EndReason::HoldLost)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_is_final_and_nothing_goes_back_to_the_menu() {
        for &from in CallState::ALL {
            assert!(!CallState::Ended.may_become(from));
            assert!(!from.may_become(CallState::Menu));
            assert!(!from.may_become(from), "{from} to itself is not a move");
        }
        assert!(CallState::Menu.may_become(CallState::Bridged));
        assert!(CallState::Bridged.may_become(CallState::Ended));
    }

    fn call(status: CallState, settled: bool) -> Call {
        Call {
            call_sid: "CA1".into(),
            order_id: Some("ord_1".into()),
            from_number: "+15550001111".into(),
            to_number: "+15550002222".into(),
            status,
            started_at: 0,
            bridged_at: None,
            ended_at: None,
            seconds_metered: Seconds(0),
            twilio_duration: None,
            end_reason: None,
            updated_at: 0,
            twilio_status: None,
            settled_at: settled.then_some(1),
            bridge_ended_at: None,
            conversation_id: None,
            settled_seconds: None,
            refused: None,
            refused_order_id: None,
        }
    }

    fn order(status: OrderStatus, holder: Option<&str>) -> Order {
        Order {
            status,
            active_call_sid: holder.map(String::from),
            active_call_until: holder.map(|_| 100),
            ..crate::domain::ledger::tests::order(300, 0, false, false)
        }
    }

    #[test]
    fn a_stream_opens_only_for_a_live_call_holding_a_paid_order() {
        let held = order(OrderStatus::Paid, Some("CA1"));
        let menu = call(CallState::Menu, false);
        assert_eq!(stream_refusal(Some(&menu), Some(&held)), None);
        // Over, in any way: nothing connects.
        for c in [
            call(CallState::Ended, false),
            call(CallState::Ended, true),
            call(CallState::Menu, true),
            call(CallState::Bridged, false),
        ] {
            assert_eq!(
                stream_refusal(Some(&c), Some(&held)),
                Some(StreamRefusal::CallOver),
                "{c:?}"
            );
        }
        assert_eq!(
            stream_refusal(None, Some(&held)),
            Some(StreamRefusal::CallOver)
        );
        // Live, but the code may not be used.
        for status in [
            OrderStatus::Revoked,
            OrderStatus::Pending,
            OrderStatus::Failed,
        ] {
            assert_eq!(
                stream_refusal(Some(&menu), Some(&order(status, Some("CA1")))),
                Some(StreamRefusal::CodeUnusable(EndReason::Revoked))
            );
        }
        for holder in [None, Some("CA2")] {
            assert_eq!(
                stream_refusal(Some(&menu), Some(&order(OrderStatus::Paid, holder))),
                Some(StreamRefusal::CodeUnusable(EndReason::HoldLost))
            );
        }
        assert_eq!(
            stream_refusal(Some(&menu), None),
            Some(StreamRefusal::CodeUnusable(EndReason::HoldLost))
        );
    }

    #[test]
    fn every_final_twilio_status_has_an_end_reason_and_no_other_does() {
        for &s in TwilioStatus::ALL {
            assert_eq!(s.is_final(), EndReason::from_twilio(s).is_some(), "{s}");
        }
    }

    #[test]
    fn spellings_round_trip_and_strangers_are_refused() {
        for &r in EndReason::ALL {
            assert_eq!(r.as_str().parse::<EndReason>(), Ok(r));
        }
        assert!("in_progress".parse::<TwilioStatus>().is_err());
        assert_eq!(
            "no-answer".parse::<TwilioStatus>(),
            Ok(TwilioStatus::NoAnswer)
        );
    }
}
