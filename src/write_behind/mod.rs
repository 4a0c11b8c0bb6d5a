//! Writes that go behind the answer, in groups: the greetings' first call rows (`arrivals`),
//! the code attempts and the failure counts the menu's throttles read (`attempts`), and live
//! calls' metering, which is also each call's heartbeat on its hold (`metering`). `group` is the
//! one queue they share. The `App` holds one of each; the decisions (throttles, the allowance)
//! stay with the features that use them. Nothing on the money path is written here.

pub mod arrivals;
pub mod attempts;
pub mod group;
pub mod metering;
