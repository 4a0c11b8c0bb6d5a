//! The phone menu: greet, gather the access code, judge it, throttle guessing, and hand the
//! call to the bridge.

pub mod arrivals;
pub mod attempts;
pub mod flow;
pub mod group;
