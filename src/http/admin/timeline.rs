//! A call's life in words: its timeline and why it ended.

use super::*;

/// A call's life as a timeline: what is stored, and the warning and the start of overage
/// worked out from the allowance the call had (marked as worked out).
pub(super) fn timeline(call: &Call, charge: Option<&Charge>, warn_before: i64) -> String {
    let mut events: Vec<(i64, String, &str)> = vec![(
        call.started_at,
        "Call arrived at the phone menu".into(),
        "start",
    )];
    if let Some(why) = call.refused {
        // At the code step, before any end: what the caller heard (stamped with the call's
        // last change, the moment of the refusal or later).
        events.push((
            call.ended_at
                .map_or(call.updated_at, |e| e.min(call.updated_at)),
            format!("{} ({})", refusal_words(why), why.prompt().default_text()),
            "warn",
        ));
    }
    let talked = call.billable_seconds().0;
    // Worked-out times fall inside the agent part (its metered seconds are wall seconds, but
    // a clock may drift a little from the bridge's).
    let inside = |at: i64| call.bridge_ended_at.map_or(at, |end| at.min(end));
    if let Some(bridged) = call.bridged_at {
        events.push((
            bridged,
            "Code accepted; connected to the agent".into(),
            "bridge",
        ));
        let overage = charge.map(|c| c.seconds_billed.0).unwrap_or(0);
        if overage > 0 {
            // Overage was allowed: no warning, the call ran on past the allowance.
            events.push((
                inside(bridged + talked - overage),
                format!(
                    "Included minutes used up; overage began, {} charged (worked out)",
                    minutes(Seconds(overage))
                ),
                "overage",
            ));
        } else if call.end_reason == Some(crate::domain::call::EndReason::TimeUp)
            && talked > warn_before
        {
            // Without overage the caller is warned this long before the allowance ends.
            events.push((
                inside(bridged + talked - warn_before),
                "One-minute warning played (worked out)".into(),
                "warn",
            ));
        }
    }
    if let Some(done) = call.bridge_ended_at {
        events.push((
            done,
            format!(
                "Agent part ended after {}: {}",
                minutes(Seconds(talked)),
                ending(call)
            ),
            "end",
        ));
    }
    if let Some(ended) = call.ended_at {
        let status = call.twilio_status.map(|s| s.as_str()).unwrap_or("reported");
        events.push((ended, format!("Twilio: call {status}"), "end"));
    }
    let never_bridged = call.bridged_at.is_none();
    if let (Some(settled), Some(seconds)) = (call.settled_at, call.settled_seconds) {
        let what = if never_bridged && seconds == 0 {
            "Settled: nothing taken (never connected to the agent)".to_string()
        } else {
            format!(
                "Settled: {} taken from the allowance",
                minutes(Seconds(seconds))
            )
        };
        events.push((settled, what, "settle"));
    }
    events.sort_by_key(|(at, _, _)| *at);
    let mut out = String::from("<ol class=\"timeline\">");
    for (at, what, kind) in events {
        let (date, secs) = day_of(at);
        let _ = write!(
            out,
            "<li class=\"{kind}\"><time datetime=\"{}\">{date} {:02}:{:02}:{:02}</time> {}</li>",
            crate::domain::clock::iso8601(at),
            secs / 3600,
            secs % 3600 / 60,
            secs % 60,
            escape(&what)
        );
    }
    out.push_str("</ol>");
    out
}

/// A link to an order's row, or a dash for a call that never had one.
pub(super) fn order_link(order_id: Option<&str>) -> String {
    match order_id {
        Some(id) => format!(
            "<a href=\"{}\">{}</a>",
            escape(&super::order_href(id)),
            escape(id)
        ),
        None => "<span class=\"hint\">none</span>".into(),
    }
}

/// A refused code, in the operator's words.
fn refusal_words(why: crate::domain::call::Refusal) -> &'static str {
    use crate::domain::call::Refusal::*;
    match why {
        NoMinutes => "Code refused: no minutes left",
        Revoked => "Code refused: the order was refunded or revoked",
        OverageSuspended => "Code refused: overage suspended after a declined card",
        InUse => "Code refused: in use on another call",
    }
}

/// The order a call belongs to: the one it held, or the one whose code it was refused.
pub(super) fn call_order(call: &Call) -> Option<&str> {
    call.order_id
        .as_deref()
        .or(call.refused_order_id.as_deref())
}

/// Why a call ended, in the operator's words.
pub(super) fn ending(call: &Call) -> String {
    use crate::domain::call::EndReason::*;
    if let Some(why) = call.refused {
        if call.bridged_at.is_none() {
            return format!(
                "{}; the caller heard: \u{201c}{}\u{201d}",
                refusal_words(why),
                why.prompt().default_text()
            );
        }
    }
    let Some(reason) = call.end_reason else {
        return match call.status {
            crate::domain::call::CallState::Ended => "ended".into(),
            _ => "in progress".into(),
        };
    };
    let at_menu = call.bridged_at.is_none();
    match reason {
        CallerHungUp => "caller hung up",
        TimeUp => "minutes used up",
        AgentFailed => "agent unavailable",
        Shutdown => "server restarting",
        Revoked => "code revoked during the call",
        HoldLost => "lost its hold on the code",
        Transferred => "caller asked for a person (transferred)",
        AgentEnded => "the agent ended the conversation",
        TwilioCompleted if at_menu && call.order_id.is_none() => {
            "hung up at the menu (no valid code)"
        }
        TwilioCompleted if at_menu => "hung up at the menu",
        TwilioCompleted => "call completed",
        TwilioBusy => "busy",
        TwilioFailed => "call failed to connect",
        TwilioNoAnswer => "no answer",
        TwilioCanceled => "caller hung up while ringing",
    }
    .into()
}
