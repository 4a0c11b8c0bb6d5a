//! What the caller hears: every prompt's name, file name and default words, in one place.
//!
//! Each text can be replaced with `PROMPT_<NAME>` (e.g. `PROMPT_GREETING`); each prompt is
//! played from `AUDIO_DIR/<name>.mp3` (or `.wav`) when that file exists, else spoken with
//! `<Say>`.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prompt {
    Greeting,
    EnterCode,
    CodeRest,
    NoInput,
    InvalidCode,
    TooManyAttempts,
    TryLater,
    CodeRevoked,
    NoMinutesLeft,
    OverageSuspended,
    CodeInUse,
    Connecting,
    OneMinuteLeft,
    TimeUp,
    AgentUnavailable,
    Goodbye,
    RememberOffer,
    Remembered,
    WelcomeBack,
    ForgetOffer,
    Forgotten,
}

impl Prompt {
    pub const ALL: &'static [Prompt] = &[
        Prompt::Greeting,
        Prompt::EnterCode,
        Prompt::CodeRest,
        Prompt::NoInput,
        Prompt::InvalidCode,
        Prompt::TooManyAttempts,
        Prompt::TryLater,
        Prompt::CodeRevoked,
        Prompt::NoMinutesLeft,
        Prompt::OverageSuspended,
        Prompt::CodeInUse,
        Prompt::Connecting,
        Prompt::OneMinuteLeft,
        Prompt::TimeUp,
        Prompt::AgentUnavailable,
        Prompt::Goodbye,
        Prompt::RememberOffer,
        Prompt::Remembered,
        Prompt::WelcomeBack,
        Prompt::ForgetOffer,
        Prompt::Forgotten,
    ];

    /// The file stem under `AUDIO_DIR` and the suffix of `PROMPT_<NAME>`.
    pub fn name(self) -> &'static str {
        match self {
            Prompt::Greeting => "greeting",
            Prompt::EnterCode => "enter_code",
            Prompt::CodeRest => "code_rest",
            Prompt::NoInput => "no_input",
            Prompt::InvalidCode => "invalid_code",
            Prompt::TooManyAttempts => "too_many_attempts",
            Prompt::TryLater => "try_later",
            Prompt::CodeRevoked => "code_revoked",
            Prompt::NoMinutesLeft => "no_minutes_left",
            Prompt::OverageSuspended => "overage_suspended",
            Prompt::CodeInUse => "code_in_use",
            Prompt::Connecting => "connecting",
            Prompt::OneMinuteLeft => "one_minute_left",
            Prompt::TimeUp => "time_up",
            Prompt::AgentUnavailable => "agent_unavailable",
            Prompt::Goodbye => "goodbye",
            Prompt::RememberOffer => "remember_offer",
            Prompt::Remembered => "remembered",
            Prompt::WelcomeBack => "welcome_back",
            Prompt::ForgetOffer => "forget_offer",
            Prompt::Forgotten => "forgotten",
        }
    }

    pub fn default_text(self) -> &'static str {
        match self {
            Prompt::Greeting => "Welcome.",
            Prompt::EnterCode => "Please enter your access code, then press the pound key.",
            Prompt::CodeRest => "Please enter the rest of your code.",
            Prompt::NoInput => "We did not receive a code.",
            Prompt::InvalidCode => "That code is not valid. Please try again.",
            Prompt::TooManyAttempts => "Too many incorrect codes.",
            Prompt::TryLater => "Too many incorrect codes have been entered. Please try again later.",
            Prompt::CodeRevoked => "This code is no longer valid. Please contact support.",
            Prompt::NoMinutesLeft => "This code has no minutes left.",
            Prompt::OverageSuspended => "This code has no minutes left, and extra minutes are paused because the last payment did not go through.",
            Prompt::CodeInUse => "This code is in use on another call. Please call again when that call has ended.",
            Prompt::Connecting => "Thank you. Connecting you now.",
            Prompt::OneMinuteLeft => "You have one minute left.",
            Prompt::TimeUp => "Your time is up. Thank you for calling.",
            Prompt::AgentUnavailable => "Sorry, the assistant is not available right now. Your minutes have been kept. Please try again later.",
            Prompt::Goodbye => "Goodbye.",
            Prompt::RememberOffer => "To skip the code next time you call from this number, press 1 now.",
            Prompt::Remembered => "Done. We will recognise this number for your code.",
            Prompt::WelcomeBack => "Welcome back. We recognised your number.",
            Prompt::ForgetOffer => "To stop recognising this number, press 9.",
            Prompt::Forgotten => "This number is forgotten. Next time, please enter your code.",
        }
    }

    /// The environment variable that replaces the default text.
    pub fn env_var(self) -> String {
        format!("PROMPT_{}", self.name().to_ascii_uppercase())
    }
}
