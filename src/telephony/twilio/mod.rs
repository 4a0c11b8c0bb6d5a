//! Twilio: the signed webhook form, TwiML and the media stream.

pub mod rest;
pub mod signature;
pub mod stream;
pub mod twiml;
pub mod webhook;

/// Paths Twilio is pointed at, with the old deployment's as aliases.
pub const INCOMING_PATH: &str = "/voice/incoming";
pub const CODE_PATH: &str = "/voice/code";
pub const STATUS_PATH: &str = "/voice/status";
/// Where Twilio reports how an SMS (a receipt, a lost code) fared.
pub const SMS_STATUS_PATH: &str = "/sms/status";
pub const AFTER_STREAM_PATH: &str = "/voice/after-stream";
/// Twilio's report that the `<Dial>` to the operator ended (`DialCallDuration`).
pub const TRANSFER_ENDED_PATH: &str = "/voice/transfer-ended";
/// The key pressed at the offer to remember the caller's number (after the code).
pub const REMEMBER_PATH: &str = "/voice/remember";
/// The key pressed at the offer to forget it (a recognised caller).
pub const FORGET_PATH: &str = "/voice/forget";
pub const OLD_INCOMING_PATH: &str = "/.netlify/functions/twilio-call-handler";
pub const OLD_STATUS_PATH: &str = "/.netlify/functions/call-billing-webhook";
/// Where Twilio opens the media stream.
pub const MEDIA_PATH: &str = "/media";

/// The form parameters of a request whose `X-Twilio-Signature` checked out.
#[derive(Debug, Clone)]
pub struct TwilioForm {
    pub params: Vec<(String, String)>,
}

impl TwilioForm {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}
