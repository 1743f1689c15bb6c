//! Tunables of the IVR dialogue, shared by the built-in IVR and the VoiceXML documents; built
//! from the `[ivr]` section of the configuration.

use std::time::Duration;

use super::prompts::PromptLibrary;

/// How long the IVR waits, how much it accepts, how often it lets the caller retry.
///
/// The defaults follow what callers expect from carrier IVRs and what VoiceXML media servers
/// use by default (`timeout` 10 s before the first key, `interdigittimeout` 5 s between keys).
#[derive(Debug, Clone)]
pub struct IvrSettings {
    /// Silence allowed after the prompt before the first key (VoiceXML `timeout`).
    pub first_digit_timeout: Duration,
    /// Silence allowed between keys (VoiceXML `interdigittimeout`).
    pub inter_digit_timeout: Duration,
    /// Longest DN accepted; a longer entry is a failed attempt (never truncated: a truncated DN
    /// could name someone else's extension).
    pub max_digits: usize,
    /// Failed entries (silence, empty `#`, too long, not available) before "Goodbye".
    pub max_attempts: u32,
    /// Silence before the first prompt of the built-in IVR, so the first syllable is not
    /// played while the 200 OK and the ACK are still in flight.
    pub start_delay: Duration,
    /// The audio the built-in IVR plays.
    pub prompts: PromptLibrary,
}

impl Default for IvrSettings {
    fn default() -> Self {
        IvrSettings {
            first_digit_timeout: Duration::from_secs(10),
            inter_digit_timeout: Duration::from_secs(5),
            max_digits: 16,
            max_attempts: 3,
            start_delay: Duration::from_millis(300),
            prompts: PromptLibrary::builtin(),
        }
    }
}
