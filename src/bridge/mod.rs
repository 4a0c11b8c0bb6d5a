//! The media bridge: Twilio's bidirectional media stream <-> the ElevenLabs agent, metered,
//! with the allowance enforced here (ElevenLabs does not know it).

pub mod allowance;
mod announce;
mod ending;
mod handshake;
pub mod keys;
mod purchase;
pub mod session;

/// Read and write buffer of each WebSocket, per call and side.
pub const SOCKET_BUFFER: usize = 4 * 1024;

/// Most read at once from Twilio's socket. Twilio's frames are small and alike (a 20 ms media
/// frame is about 300 bytes), and the WebSocket reader zeroes this much of its buffer before
/// every read: with 4 KiB that zeroing was the largest single cost of a frame in user space.
pub const TWILIO_READ: usize = 1024;
