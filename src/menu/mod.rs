//! The phone menu: greet, gather the access code, judge it, throttle guessing, and hand the
//! call to the bridge.

mod answer;
pub mod flow;
mod limits;
pub mod returning;
