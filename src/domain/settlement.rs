//! When a call is ready to be settled: the rule, once. The SQL stores write it as
//! `SETTLE_READY` (one indexed query finds every ready call) and MongoDB applies this
//! function; `store_conformance` checks both against it.

use super::call::{Call, CallState};
use super::clock::UnixTime;

/// Whether `call` may be settled at `now`. `hold_until` is when this call's hold on its order
/// lapses, if the order is still held by this call.
///
/// Ready when nothing more can be metered: its bridge finished; or it never bridged and it
/// ended; or it has an order but no live hold on it (the instance running its bridge died,
/// or another call settled it away). A settled call is never ready again.
pub fn ready(call: &Call, hold_until: Option<UnixTime>, now: UnixTime) -> bool {
    if call.settled_at.is_some() {
        return false;
    }
    if call.bridge_ended_at.is_some() {
        return true;
    }
    if call.bridged_at.is_none() && call.status == CallState::Ended {
        return true;
    }
    call.order_id.is_some() && hold_until.is_none_or(|until| until < now)
}
