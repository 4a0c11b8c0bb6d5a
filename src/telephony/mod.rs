//! The voice protocols, pure parse and format where they can be: Twilio (webhook form,
//! signature, TwiML, media stream frames), ElevenLabs (the agent socket and its URLs, the post-call webhook), and
//! the audio both carry.

pub mod audio;
pub mod elevenlabs;
pub mod post_call;
pub mod prompts;
pub mod twilio;
