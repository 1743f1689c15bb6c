//! The IVR dialogue as a pure state machine: events in, actions out, no I/O, no clock.
//!
//! Why pure: the same dialogue runs whether digits arrive as RFC 4733 telephone-events, SIP
//! INFO `application/dtmf-relay` bodies or (the same rules, rendered as VoiceXML) a media
//! server's form post; and tests drive every branch with plain values, without sockets or
//! sleeping. The driver ([`super::call`]) performs the [`Action`]s and feeds back the
//! [`Event`]s they cause.
//!
//! ```text
//!            Start                 PromptFinished            '#' (digits)
//!   Idle ───────────▶ Prompting ─────────────────▶ Collecting ───────────▶ Assigning
//!                      ▲   │ type-ahead digits         │ Timeout / empty '#' /  │
//!                      │   │ ('#' ⇒ Assigning)         │ too many digits        │ Ok(dn)
//!                      │   ▼                           ▼                        ▼
//!                      └──── attempts left ◀──── failed attempt ◀── Err(retryable)
//!                                                       │ no attempts left      │
//!                                                       ▼                       ▼
//!                                               Closing(GaveUp) ─────▶ Closing(Assigned)
//!                                                       │ PromptFinished        │
//!                                                       ▼                       ▼
//!                                                  Done + Hangup          Done + Hangup
//!   HangUp in any state ⇒ Done(HungUp) (Done(Assigned) once the assignment was made).
//! ```
//!
//! Rules, following VoiceXML 2.0 §6.3.3 (`termchar`, `timeout`, `interdigittimeout`) so the
//! built-in IVR and the VoiceXML document behave alike:
//! * `#` ends the entry; `*` clears it; other keys (`A`–`D`, anything else) are ignored.
//! * Keys pressed while a prompt plays are kept (type-ahead); the timers only run once the
//!   prompt has finished, so a slow prompt never eats the caller's time.
//! * An inter-digit timeout without `#` is a failed attempt, not a submission: assigning a
//!   half-typed DN would give the phone someone else's extension.
//! * An entry longer than `max_digits` is a failed attempt (never truncated).
//! * At most `max_attempts` failed attempts; then "Goodbye" and hang up.
//! * After a hang-up nothing is assigned: `Assign` is only ever emitted from a live state.

use std::time::Duration;

use super::assign::AssignRefusal;
use super::prompts::Prompt;
use super::settings::IvrSettings;

/// What happens to the IVR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The call is answered and media flows.
    Start,
    /// A key: `0`–`9`, `*`, `#` (anything else is ignored).
    Digit(char),
    /// The last `Play` finished playing (the driver drops completions of superseded plays).
    PromptFinished,
    /// The last `StartTimer` expired.
    Timeout,
    /// The answer to the last `Assign`.
    AssignResult(Result<String, AssignRefusal>),
    /// The caller hung up (BYE received, or media failed).
    HangUp,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Play these clips in order, replacing whatever is playing (barge-in of a result over a
    /// prompt). Completion is reported with [`Event::PromptFinished`].
    Play(Vec<Prompt>),
    /// (Re)arm the single timer; replaces a running one.
    StartTimer(Duration),
    /// Disarm the timer.
    StopTimer,
    /// Ask the [`Assigner`](super::assign::Assigner) to assign this DN; answer with
    /// [`Event::AssignResult`].
    Assign(String),
    /// End the call (the SIP layer sends BYE).
    Hangup,
}

/// How the dialogue ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The DN was assigned (committed by the assigner).
    Assigned(String),
    /// The caller used up the attempts.
    GaveUp,
    /// The assigner refused for a reason retrying cannot fix (not permitted, internal error).
    Refused(AssignRefusal),
    /// The caller hung up first.
    HungUp,
}

/// Where the dialogue is. Read it with [`Machine::state`]; only [`Machine::step`] moves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started.
    Idle,
    /// The "enter the extension" prompt (possibly after "try again") is playing; `typed` holds
    /// type-ahead keys.
    Prompting { attempt: u32, typed: String },
    /// Waiting for keys with a timer running.
    Collecting { attempt: u32, digits: String },
    /// Waiting for the assigner.
    Assigning { attempt: u32, dn: String },
    /// Playing the last words before hanging up.
    Closing { outcome: Outcome },
    /// Finished.
    Done(Outcome),
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    first_digit: Duration,
    inter_digit: Duration,
    max_digits: usize,
    max_attempts: u32,
}

/// The IVR dialogue. Transitions consume the machine, so a stale copy cannot be stepped.
#[derive(Debug, Clone)]
pub struct Machine {
    limits: Limits,
    state: State,
}

impl Machine {
    /// A machine in [`State::Idle`]; feed it [`Event::Start`].
    pub fn new(cfg: &IvrSettings) -> Self {
        Machine {
            limits: Limits {
                first_digit: cfg.first_digit_timeout,
                inter_digit: cfg.inter_digit_timeout,
                max_digits: cfg.max_digits.max(1),
                max_attempts: cfg.max_attempts.max(1),
            },
            state: State::Idle,
        }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The outcome once [`State::Done`].
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.state {
            State::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Whether the dialogue is over.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    /// Applies one event; returns the next machine and the actions to perform, in order.
    pub fn step(self, ev: Event) -> (Machine, Vec<Action>) {
        let limits = self.limits;
        let (state, actions) = transition(limits, self.state, ev);
        (Machine { limits, state }, actions)
    }
}

fn enter_prompt(attempt: u32) -> State {
    State::Prompting {
        attempt,
        typed: String::new(),
    }
}

/// A failed attempt: "try again" while attempts remain, else "goodbye".
fn fail(l: Limits, attempt: u32, mut actions: Vec<Action>) -> (State, Vec<Action>) {
    if attempt < l.max_attempts {
        actions.push(Action::Play(vec![Prompt::TryAgain, Prompt::EnterExtension]));
        (enter_prompt(attempt + 1), actions)
    } else {
        actions.push(Action::Play(vec![Prompt::Goodbye]));
        (
            State::Closing {
                outcome: Outcome::GaveUp,
            },
            actions,
        )
    }
}

enum Key {
    Digit(char),
    Pound,
    Star,
    Ignored,
}

fn key(c: char) -> Key {
    match c {
        '0'..='9' => Key::Digit(c),
        '#' => Key::Pound,
        '*' => Key::Star,
        _ => Key::Ignored,
    }
}

fn transition(l: Limits, state: State, ev: Event) -> (State, Vec<Action>) {
    use State::*;
    match (state, ev) {
        // Hang-up wins everywhere. An assignment already made stays the outcome: it is
        // committed, and the service must still send check-sync.
        (Done(o), _) => (Done(o), vec![]),
        (
            Closing {
                outcome: Outcome::Assigned(dn),
            },
            Event::HangUp,
        ) => (Done(Outcome::Assigned(dn)), vec![]),
        (_, Event::HangUp) => (Done(Outcome::HungUp), vec![]),

        (Idle, Event::Start) => (
            enter_prompt(1),
            vec![Action::Play(vec![Prompt::EnterExtension])],
        ),
        (Idle, _) => (Idle, vec![]),

        (Prompting { attempt, mut typed }, Event::Digit(c)) => match key(c) {
            Key::Digit(d) => {
                typed.push(d);
                if typed.len() > l.max_digits {
                    fail(l, attempt, vec![])
                } else {
                    (Prompting { attempt, typed }, vec![])
                }
            }
            Key::Pound if typed.is_empty() => fail(l, attempt, vec![]),
            Key::Pound => (
                Assigning {
                    attempt,
                    dn: typed.clone(),
                },
                vec![Action::Assign(typed)],
            ),
            Key::Star => (
                Prompting {
                    attempt,
                    typed: String::new(),
                },
                vec![],
            ),
            Key::Ignored => (Prompting { attempt, typed }, vec![]),
        },
        (Prompting { attempt, typed }, Event::PromptFinished) => {
            let wait = if typed.is_empty() {
                l.first_digit
            } else {
                l.inter_digit
            };
            (
                Collecting {
                    attempt,
                    digits: typed,
                },
                vec![Action::StartTimer(wait)],
            )
        }
        (s @ Prompting { .. }, _) => (s, vec![]),

        (
            Collecting {
                attempt,
                mut digits,
            },
            Event::Digit(c),
        ) => match key(c) {
            Key::Digit(d) => {
                digits.push(d);
                if digits.len() > l.max_digits {
                    fail(l, attempt, vec![Action::StopTimer])
                } else {
                    (
                        Collecting { attempt, digits },
                        vec![Action::StartTimer(l.inter_digit)],
                    )
                }
            }
            Key::Pound if digits.is_empty() => fail(l, attempt, vec![Action::StopTimer]),
            Key::Pound => (
                Assigning {
                    attempt,
                    dn: digits.clone(),
                },
                vec![Action::StopTimer, Action::Assign(digits)],
            ),
            Key::Star => (
                Collecting {
                    attempt,
                    digits: String::new(),
                },
                vec![Action::StartTimer(l.first_digit)],
            ),
            Key::Ignored => (Collecting { attempt, digits }, vec![]),
        },
        (Collecting { attempt, .. }, Event::Timeout) => fail(l, attempt, vec![]),
        (s @ Collecting { .. }, _) => (s, vec![]),

        (Assigning { .. }, Event::AssignResult(Ok(dn))) => {
            let mut clips = Prompt::read_back(&dn);
            clips.push(Prompt::Goodbye);
            (
                Closing {
                    outcome: Outcome::Assigned(dn),
                },
                vec![Action::Play(clips)],
            )
        }
        (Assigning { attempt, .. }, Event::AssignResult(Err(r))) if r.retryable() => {
            if attempt < l.max_attempts {
                (
                    enter_prompt(attempt + 1),
                    vec![Action::Play(vec![
                        Prompt::NotAvailable,
                        Prompt::EnterExtension,
                    ])],
                )
            } else {
                (
                    Closing {
                        outcome: Outcome::GaveUp,
                    },
                    vec![Action::Play(vec![Prompt::NotAvailable, Prompt::Goodbye])],
                )
            }
        }
        (Assigning { .. }, Event::AssignResult(Err(r))) => {
            let clips = match r {
                AssignRefusal::Internal(_) => vec![Prompt::Goodbye],
                AssignRefusal::Unavailable(_) => vec![Prompt::TryLater, Prompt::Goodbye],
                _ => vec![Prompt::NotAvailable, Prompt::Goodbye],
            };
            (
                Closing {
                    outcome: Outcome::Refused(r),
                },
                vec![Action::Play(clips)],
            )
        }
        (s @ Assigning { .. }, _) => (s, vec![]),

        (Closing { outcome }, Event::PromptFinished) => (Done(outcome), vec![Action::Hangup]),
        (s @ Closing { .. }, _) => (s, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ivr::prompts::DecimalDigit;

    fn cfg() -> IvrSettings {
        IvrSettings {
            first_digit_timeout: Duration::from_secs(10),
            inter_digit_timeout: Duration::from_secs(5),
            max_digits: 4,
            max_attempts: 3,
            ..IvrSettings::default()
        }
    }

    const FIRST: Duration = Duration::from_secs(10);
    const INTER: Duration = Duration::from_secs(5);

    struct Run {
        m: Option<Machine>,
        log: Vec<Action>,
    }

    impl Run {
        fn new() -> Self {
            Run {
                m: Some(Machine::new(&cfg())),
                log: vec![],
            }
        }
        fn ev(&mut self, e: Event) -> Vec<Action> {
            let m = self.m.take().expect("machine");
            let (m, a) = m.step(e);
            self.m = Some(m);
            self.log.extend(a.iter().cloned());
            a
        }
        fn keys(&mut self, s: &str) -> Vec<Action> {
            let mut all = vec![];
            for c in s.chars() {
                all.extend(self.ev(Event::Digit(c)));
            }
            all
        }
        fn state(&self) -> &State {
            self.m.as_ref().expect("machine").state()
        }
        fn outcome(&self) -> Option<Outcome> {
            self.m.as_ref().and_then(|m| m.outcome().cloned())
        }
        /// Start and let the first prompt finish.
        fn started() -> Self {
            let mut r = Run::new();
            assert_eq!(
                r.ev(Event::Start),
                vec![Action::Play(vec![Prompt::EnterExtension])]
            );
            assert_eq!(r.ev(Event::PromptFinished), vec![Action::StartTimer(FIRST)]);
            r
        }
        fn assigns(&self) -> Vec<String> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Action::Assign(d) => Some(d.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    fn d(c: char) -> Prompt {
        Prompt::Digit(DecimalDigit::from_char(c).unwrap())
    }

    fn retry_prompt() -> Action {
        Action::Play(vec![Prompt::TryAgain, Prompt::EnterExtension])
    }

    #[test]
    fn happy_path() {
        let mut r = Run::started();
        assert_eq!(r.ev(Event::Digit('1')), vec![Action::StartTimer(INTER)]);
        r.keys("001");
        assert_eq!(
            r.ev(Event::Digit('#')),
            vec![Action::StopTimer, Action::Assign("1001".into())]
        );
        assert!(matches!(r.state(), State::Assigning { .. }));
        let a = r.ev(Event::AssignResult(Ok("1001".into())));
        assert_eq!(
            a,
            vec![Action::Play(vec![
                Prompt::Extension,
                d('1'),
                d('0'),
                d('0'),
                d('1'),
                Prompt::Assigned,
                Prompt::Goodbye
            ])]
        );
        assert_eq!(r.ev(Event::PromptFinished), vec![Action::Hangup]);
        assert_eq!(r.outcome(), Some(Outcome::Assigned("1001".into())));
        // Dead afterwards.
        assert!(r.ev(Event::Digit('1')).is_empty());
        assert!(r.ev(Event::Start).is_empty());
        assert!(r.ev(Event::HangUp).is_empty());
        assert_eq!(r.outcome(), Some(Outcome::Assigned("1001".into())));
    }

    #[test]
    fn type_ahead_during_prompt_and_pound_before_prompt_end() {
        let mut r = Run::new();
        r.ev(Event::Start);
        assert!(r.keys("42").is_empty(), "no timer while the prompt plays");
        assert_eq!(r.ev(Event::Digit('#')), vec![Action::Assign("42".into())]);
        // The prompt's completion while assigning is ignored.
        assert!(r.ev(Event::PromptFinished).is_empty());
        assert!(matches!(r.state(), State::Assigning { .. }));
    }

    #[test]
    fn type_ahead_then_prompt_end_starts_inter_digit_timer() {
        let mut r = Run::new();
        r.ev(Event::Start);
        r.keys("1");
        assert_eq!(r.ev(Event::PromptFinished), vec![Action::StartTimer(INTER)]);
        assert_eq!(
            r.state(),
            &State::Collecting {
                attempt: 1,
                digits: "1".into()
            }
        );
    }

    #[test]
    fn star_clears_entry() {
        let mut r = Run::started();
        r.keys("99");
        assert_eq!(r.ev(Event::Digit('*')), vec![Action::StartTimer(FIRST)]);
        r.keys("12#");
        assert_eq!(r.assigns(), vec!["12".to_string()]);

        let mut r = Run::new();
        r.ev(Event::Start);
        r.keys("77*5#");
        assert_eq!(r.assigns(), vec!["5".to_string()]);
    }

    #[test]
    fn non_digit_input_is_ignored() {
        let mut r = Run::started();
        for c in ['A', 'D', 'x', ' ', '\0', 'é'] {
            assert!(r.ev(Event::Digit(c)).is_empty());
        }
        r.keys("1A0B0C1#");
        assert_eq!(r.assigns(), vec!["1001".to_string()]);
        let mut r = Run::new();
        r.ev(Event::Start);
        assert!(r.ev(Event::Digit('B')).is_empty());
    }

    #[test]
    fn first_digit_timeout_retries_then_gives_up() {
        let mut r = Run::started();
        assert_eq!(r.ev(Event::Timeout), vec![retry_prompt()]);
        assert_eq!(
            r.state(),
            &State::Prompting {
                attempt: 2,
                typed: String::new()
            }
        );
        // Timeouts while a prompt plays are stale: ignored.
        assert!(r.ev(Event::Timeout).is_empty());
        assert_eq!(r.ev(Event::PromptFinished), vec![Action::StartTimer(FIRST)]);
        assert_eq!(r.ev(Event::Timeout), vec![retry_prompt()]);
        r.ev(Event::PromptFinished);
        assert_eq!(
            r.ev(Event::Timeout),
            vec![Action::Play(vec![Prompt::Goodbye])]
        );
        assert_eq!(
            r.state(),
            &State::Closing {
                outcome: Outcome::GaveUp
            }
        );
        assert!(
            r.ev(Event::Digit('1')).is_empty(),
            "keys during goodbye are ignored"
        );
        assert_eq!(r.ev(Event::PromptFinished), vec![Action::Hangup]);
        assert_eq!(r.outcome(), Some(Outcome::GaveUp));
        assert!(r.assigns().is_empty());
    }

    #[test]
    fn inter_digit_timeout_is_a_failed_attempt_not_a_submission() {
        let mut r = Run::started();
        r.keys("100");
        assert_eq!(r.ev(Event::Timeout), vec![retry_prompt()]);
        assert!(r.assigns().is_empty());
        // The next attempt starts empty.
        r.ev(Event::PromptFinished);
        r.keys("1#");
        assert_eq!(r.assigns(), vec!["1".to_string()]);
    }

    #[test]
    fn empty_pound_is_a_failed_attempt() {
        let mut r = Run::started();
        assert_eq!(
            r.ev(Event::Digit('#')),
            vec![Action::StopTimer, retry_prompt()]
        );
        let mut r = Run::new();
        r.ev(Event::Start);
        assert_eq!(r.ev(Event::Digit('#')), vec![retry_prompt()]);
    }

    #[test]
    fn too_many_digits_is_a_failed_attempt_never_truncated() {
        let mut r = Run::started();
        r.keys("1234");
        assert_eq!(
            r.ev(Event::Digit('5')),
            vec![Action::StopTimer, retry_prompt()]
        );
        r.ev(Event::PromptFinished);
        r.keys("#");
        assert!(r.assigns().is_empty());
        // Also during type-ahead.
        let mut r = Run::new();
        r.ev(Event::Start);
        assert_eq!(r.keys("12345"), vec![retry_prompt()]);
    }

    #[test]
    fn refusal_retries_then_gives_up() {
        let mut r = Run::started();
        r.keys("9999#");
        assert_eq!(
            r.ev(Event::AssignResult(Err(AssignRefusal::UnknownDn))),
            vec![Action::Play(vec![
                Prompt::NotAvailable,
                Prompt::EnterExtension
            ])]
        );
        assert_eq!(
            r.state(),
            &State::Prompting {
                attempt: 2,
                typed: String::new()
            }
        );
        r.ev(Event::PromptFinished);
        r.keys("8888#");
        r.ev(Event::AssignResult(Err(AssignRefusal::Taken)));
        r.ev(Event::PromptFinished);
        r.keys("7777#");
        assert_eq!(
            r.ev(Event::AssignResult(Err(AssignRefusal::OtherSite))),
            vec![Action::Play(vec![Prompt::NotAvailable, Prompt::Goodbye])]
        );
        assert_eq!(r.ev(Event::PromptFinished), vec![Action::Hangup]);
        assert_eq!(r.outcome(), Some(Outcome::GaveUp));
        assert_eq!(r.assigns(), vec!["9999", "8888", "7777"]);
    }

    #[test]
    fn refusal_then_success() {
        let mut r = Run::started();
        r.keys("9999#");
        r.ev(Event::AssignResult(Err(AssignRefusal::Taken)));
        r.ev(Event::PromptFinished);
        r.keys("1001#");
        r.ev(Event::AssignResult(Ok("1001".into())));
        r.ev(Event::PromptFinished);
        assert_eq!(r.outcome(), Some(Outcome::Assigned("1001".into())));
    }

    #[test]
    fn non_retryable_refusals_end_the_call() {
        for (r0, clips) in [
            (
                AssignRefusal::NotPermitted,
                vec![Prompt::NotAvailable, Prompt::Goodbye],
            ),
            (
                AssignRefusal::Internal("unreadable row".into()),
                vec![Prompt::Goodbye],
            ),
            (
                AssignRefusal::Unavailable("no writable database".into()),
                vec![Prompt::TryLater, Prompt::Goodbye],
            ),
        ] {
            let mut r = Run::started();
            r.keys("1001#");
            assert_eq!(
                r.ev(Event::AssignResult(Err(r0.clone()))),
                vec![Action::Play(clips)]
            );
            assert_eq!(r.ev(Event::PromptFinished), vec![Action::Hangup]);
            assert_eq!(r.outcome(), Some(Outcome::Refused(r0)));
        }
    }

    #[test]
    fn the_assigner_answer_names_the_dn_read_back() {
        let mut r = Run::started();
        r.keys("0101#");
        assert_eq!(r.assigns(), vec!["0101".to_string()]);
        // The assigner may normalise; what is read back is what it stored.
        let a = r.ev(Event::AssignResult(Ok("1001".into())));
        let Action::Play(clips) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(clips.len(), 7);
        assert_eq!(clips[1], d('1'));
    }

    #[test]
    fn hang_up_in_every_state() {
        // Idle, Prompting, Collecting, Assigning, Closing(GaveUp), Closing(Assigned).
        let mut r = Run::new();
        r.ev(Event::HangUp);
        assert_eq!(r.outcome(), Some(Outcome::HungUp));

        let mut r = Run::new();
        r.ev(Event::Start);
        r.keys("10");
        assert!(r.ev(Event::HangUp).is_empty());
        assert_eq!(r.outcome(), Some(Outcome::HungUp));
        r.keys("01#");
        assert!(r.assigns().is_empty(), "no assignment after a hang-up");

        let mut r = Run::started();
        r.keys("1001");
        r.ev(Event::HangUp);
        r.ev(Event::Digit('#'));
        r.ev(Event::Timeout);
        assert!(r.assigns().is_empty());
        assert_eq!(r.outcome(), Some(Outcome::HungUp));

        let mut r = Run::started();
        r.keys("1001#");
        r.ev(Event::HangUp);
        assert_eq!(r.outcome(), Some(Outcome::HungUp));
        // A late answer changes nothing (the driver reports a committed one itself).
        assert!(r.ev(Event::AssignResult(Ok("1001".into()))).is_empty());
        assert_eq!(r.outcome(), Some(Outcome::HungUp));

        let mut r = Run::started();
        r.ev(Event::Timeout);
        r.ev(Event::PromptFinished);
        r.ev(Event::Timeout);
        r.ev(Event::PromptFinished);
        r.ev(Event::Timeout);
        r.ev(Event::HangUp);
        assert_eq!(r.outcome(), Some(Outcome::HungUp));

        let mut r = Run::started();
        r.keys("1001#");
        r.ev(Event::AssignResult(Ok("1001".into())));
        assert!(r.ev(Event::HangUp).is_empty());
        assert_eq!(r.outcome(), Some(Outcome::Assigned("1001".into())));
        assert_eq!(r.assigns().len(), 1);
    }

    #[test]
    fn stray_events_are_ignored_in_each_state() {
        // Idle ignores everything but Start and HangUp.
        let mut r = Run::new();
        for e in [
            Event::Digit('1'),
            Event::PromptFinished,
            Event::Timeout,
            Event::AssignResult(Ok("1".into())),
        ] {
            assert!(r.ev(e).is_empty());
            assert_eq!(r.state(), &State::Idle);
        }
        // A second Start, or an unsolicited AssignResult, is ignored while prompting/collecting.
        let mut r = Run::new();
        r.ev(Event::Start);
        assert!(r.ev(Event::Start).is_empty());
        assert!(r.ev(Event::AssignResult(Ok("1".into()))).is_empty());
        r.ev(Event::PromptFinished);
        assert!(r.ev(Event::Start).is_empty());
        assert!(r.ev(Event::PromptFinished).is_empty());
        assert!(r.ev(Event::AssignResult(Ok("1".into()))).is_empty());
        assert!(matches!(r.state(), State::Collecting { .. }));
        // Assigning ignores keys, timeouts, prompt ends.
        r.keys("1#");
        for e in [
            Event::Digit('2'),
            Event::Timeout,
            Event::PromptFinished,
            Event::Start,
        ] {
            assert!(r.ev(e).is_empty());
        }
        assert_eq!(
            r.state(),
            &State::Assigning {
                attempt: 1,
                dn: "1".into()
            }
        );
        assert_eq!(r.assigns().len(), 1);
    }

    #[test]
    fn zero_limits_are_clamped() {
        let c = IvrSettings {
            max_attempts: 0,
            max_digits: 0,
            ..cfg()
        };
        let m = Machine::new(&c);
        let (m, _) = m.step(Event::Start);
        let (m, _) = m.step(Event::PromptFinished);
        let (m, a) = m.step(Event::Timeout);
        assert_eq!(a, vec![Action::Play(vec![Prompt::Goodbye])]);
        let (m, _) = m.step(Event::PromptFinished);
        assert_eq!(m.outcome(), Some(&Outcome::GaveUp));
    }
}
