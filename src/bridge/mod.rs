//! The media bridge: Twilio's bidirectional media stream <-> the ElevenLabs agent, metered,
//! with the allowance enforced here (ElevenLabs does not know it).

pub mod metering;
pub mod session;

/// Read and write buffer of each WebSocket, per call and side.
pub const SOCKET_BUFFER: usize = 4 * 1024;
