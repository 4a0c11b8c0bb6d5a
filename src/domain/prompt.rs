//! What the caller hears: every prompt's name, file name and default words, in one place.
//!
//! Each text can be replaced with `PROMPT_<NAME>` (e.g. `PROMPT_GREETING`); each prompt is
//! played from `AUDIO_DIR/<name>.mp3` (or `.wav`) when that file exists, else spoken with
//! `<Say>`. The ones played into a live call (the warning, paid time, the in-call top-up)
//! are played from `AUDIO_DIR/<name>.wav` (8 kHz mono), else as a tone of their own; the
//! time told with `*` joins them with the numbers `AUDIO_DIR/number_<n>.wav` (0 to 99).

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
    PaidTime,
    TopUpOffer,
    TopUpConfirm,
    TopUpAdded,
    TopUpDeclined,
    TopUpConfirmOnline,
    TimeLeft,
    InPaidTime,
    CurrencyMajor,
    CurrencyMinor,
    PerMinute,
    Transferring,
}

impl Prompt {
    /// Whether callgate plays it into a live call itself (from `<name>.wav`, else a tone),
    /// beside the menu's `<Play>`.
    pub fn plays_in_stream(self) -> bool {
        use Prompt::*;
        matches!(
            self,
            OneMinuteLeft
                | PaidTime
                | TopUpOffer
                | TopUpConfirm
                | TopUpAdded
                | TopUpDeclined
                | TopUpConfirmOnline
                | TimeLeft
                | InPaidTime
                | CurrencyMajor
                | CurrencyMinor
                | PerMinute
        )
    }

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
        Prompt::PaidTime,
        Prompt::TopUpOffer,
        Prompt::TopUpConfirm,
        Prompt::TopUpAdded,
        Prompt::TopUpDeclined,
        Prompt::TopUpConfirmOnline,
        Prompt::TimeLeft,
        Prompt::InPaidTime,
        Prompt::CurrencyMajor,
        Prompt::CurrencyMinor,
        Prompt::PerMinute,
        Prompt::Transferring,
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
            Prompt::PaidTime => "paid_time",
            Prompt::TopUpOffer => "top_up_offer",
            Prompt::TopUpConfirm => "top_up_confirm",
            Prompt::TopUpAdded => "top_up_added",
            Prompt::TopUpDeclined => "top_up_declined",
            Prompt::TopUpConfirmOnline => "top_up_confirm_online",
            Prompt::TimeLeft => "time_left",
            Prompt::InPaidTime => "in_paid_time",
            Prompt::CurrencyMajor => "currency_major",
            Prompt::CurrencyMinor => "currency_minor",
            Prompt::PerMinute => "per_minute",
            Prompt::Transferring => "transferring",
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
            Prompt::PaidTime => "You are now in paid time, charged by the minute to your saved card.",
            Prompt::TopUpOffer => "To add more minutes with your saved card, press the pound key twice.",
            Prompt::TopUpConfirm => "To buy more minutes with your saved card, press the pound key again.",
            Prompt::TopUpAdded => "Your minutes have been added. Thank you.",
            Prompt::TopUpDeclined => "Your card was declined, so no minutes were added. The call ends when your minutes run out.",
            Prompt::TopUpConfirmOnline => "Your bank asks you to confirm this payment, so no minutes were added. We have sent you a link to add them online.",
            Prompt::TimeLeft => "minutes left.",
            Prompt::InPaidTime => "You are in paid time, at",
            Prompt::CurrencyMajor => "dollars",
            Prompt::CurrencyMinor => "cents",
            Prompt::PerMinute => "a minute.",
            Prompt::Transferring => "Connecting you to a person. Please hold.",
        }
    }

    /// The environment variable that replaces the default text.
    pub fn env_var(self) -> String {
        format!("PROMPT_{}", self.name().to_ascii_uppercase())
    }
}
