//! One built-in IVR call: the SDP answer, the media session, the dialogue, the assignment.
//!
//! The SIP layer owns signalling; this file owns everything after the offer:
//!
//! 1. [`IvrCall::start`] parses the INVITE's offer, binds an RTP port, returns the SDP answer
//!    (for the 200 OK) and an [`IvrCallHandle`]. An unusable offer is an [`IvrError::Sdp`]:
//!    answer it 488 (RFC 3261 §21.4.26).
//! 2. The call runs on its own task: it waits `start_delay` (so the first syllable is not lost
//!    while the 200 OK/ACK are in flight), then drives the [`Machine`].
//! 3. The SIP layer feeds it through an [`IvrControl`]: INFO bodies (`application/dtmf-relay`),
//!    and `hang_up()` when BYE (or CANCEL) arrives.
//! 4. [`IvrCallHandle::ended`] resolves with the [`CallEnded`]: the outcome, and whether the
//!    SIP layer must send BYE (the IVR hung up) or not (the phone did).
//!
//! Hang-up while the assigner is working: the assignment is not cancelled (a half-run commit
//! would leave the store's state unknown); the call waits for it, and the outcome says what
//! happened (`Assigned` if it committed), so the service can still send check-sync.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use super::assign::{AssignRefusal, Assigner, CallerIdentity};
use super::dtmf::{self, DtmfError};
use super::machine::{Action, Event, Machine, Outcome};
use super::media::{self, MediaCommand, MediaEvent, MediaParams, MediaSession};
use super::sdp::{self, Negotiated, SdpError};
use super::settings::IvrSettings;

/// Why a call could not start, or a control could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum IvrError {
    /// The offer is malformed or has nothing we can use: answer 488 (or 400 for syntax).
    #[error("SDP: {0}")]
    Sdp(#[from] SdpError),
    /// No RTP port could be bound: answer 500/503.
    #[error("RTP socket: {0}")]
    Io(#[from] std::io::Error),
    /// An INFO body that is not a DTMF key: answer 415/400, the call goes on.
    #[error("DTMF: {0}")]
    Dtmf(#[from] DtmfError),
    /// The call is over; the control has nothing to talk to (answer 481 to an INFO).
    #[error("the IVR call has ended")]
    Ended,
}

/// How the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The DN is assigned (committed by the assigner).
    Assigned(String),
    /// The caller used up the attempts.
    GaveUp,
    /// The assigner refused for good (not permitted, internal error).
    Refused(AssignRefusal),
    /// The caller hung up before an assignment.
    HungUp,
    /// The call task failed (media task gone): the call is torn down.
    Failed(String),
}

/// The end of a call, for the SIP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnded {
    pub outcome: CallOutcome,
    /// The IVR ended the call: send BYE. `false` when the phone hung up (BYE already received).
    pub send_bye: bool,
}

enum Input {
    Digit(char),
    HangUp,
}

/// Feeds a running call; cheap to clone, usable from any task.
#[derive(Debug, Clone)]
pub struct IvrControl {
    tx: mpsc::Sender<Input>,
}

impl IvrControl {
    /// A key from elsewhere (already decoded).
    pub fn digit(&self, key: char) -> Result<(), IvrError> {
        self.send(Input::Digit(key))
    }

    /// A SIP INFO request's body, by its Content-Type (`application/dtmf-relay` or
    /// `application/dtmf`). `Err(Dtmf)`: not a key (answer 415 or 400); `Err(Ended)`: 481.
    pub fn info(&self, content_type: &str, body: &str) -> Result<(), IvrError> {
        let d = dtmf::parse_info(content_type, body)?;
        self.digit(d.key)
    }

    /// The phone hung up (BYE or CANCEL received). Idempotent.
    pub fn hang_up(&self) {
        let _ = self.send(Input::HangUp);
    }

    fn send(&self, i: Input) -> Result<(), IvrError> {
        // A full queue means a flood of INFOs the dialogue cannot use anyway; drop, don't block.
        match self.tx.try_send(i) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(IvrError::Ended),
        }
    }
}

/// The SIP layer's end of a running call.
#[derive(Debug)]
pub struct IvrCallHandle {
    control: IvrControl,
    ended: oneshot::Receiver<CallEnded>,
    local_rtp: SocketAddr,
    negotiated: Negotiated,
}

impl IvrCallHandle {
    /// A control to push INFO keys and the hang-up.
    pub fn control(&self) -> IvrControl {
        self.control.clone()
    }

    /// Where the IVR receives RTP (the port in the answer).
    pub fn local_rtp_addr(&self) -> SocketAddr {
        self.local_rtp
    }

    /// What the offer/answer settled.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// Waits for the end of the call.
    pub async fn ended(self) -> CallEnded {
        self.ended.await.unwrap_or(CallEnded {
            outcome: CallOutcome::Failed("IVR call task ended without a result".into()),
            send_bye: true,
        })
    }
}

/// The built-in IVR.
pub struct IvrCall;

impl IvrCall {
    /// Answers an offer and starts the call (see the module doc). Returns the SDP answer for
    /// the 200 OK and the handle.
    pub async fn start<A: Assigner + 'static>(
        offer_sdp: &str,
        local_ip: IpAddr,
        caller: CallerIdentity,
        assigner: Arc<A>,
        config: IvrSettings,
    ) -> Result<(String, IvrCallHandle), IvrError> {
        let offer = sdp::parse(offer_sdp)?;
        let negotiated = sdp::negotiate(&offer)?;
        let socket = media::bind_rtp(local_ip).await?;
        let local_rtp = socket.local_addr()?;
        let session_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let answer = sdp::build_answer(&offer, &negotiated, local_ip, local_rtp.port(), session_id);

        let media = MediaSession::spawn(
            socket,
            MediaParams::from(&negotiated),
            config.prompts.clone(),
        );
        let (tx, rx) = mpsc::channel(64);
        let (done_tx, done_rx) = oneshot::channel();
        tracing::info!(remote = %negotiated.remote, codec = ?negotiated.codec, rtp = %local_rtp,
            caller = %caller.remote_uri, "IVR call answered");
        tokio::spawn(async move {
            let ended = drive(config, caller, assigner, media, rx).await;
            tracing::info!(outcome = ?ended.outcome, "IVR call ended");
            let _ = done_tx.send(ended);
        });
        Ok((
            answer,
            IvrCallHandle {
                control: IvrControl { tx },
                ended: done_rx,
                local_rtp,
                negotiated,
            },
        ))
    }
}

/// Keys kept from before the first prompt (more than a DN's worth is noise).
const EARLY_KEYS_MAX: usize = 32;

type AssignFuture = Pin<Box<dyn Future<Output = Result<String, AssignRefusal>> + Send>>;

async fn drive<A: Assigner + 'static>(
    config: IvrSettings,
    caller: CallerIdentity,
    assigner: Arc<A>,
    media: MediaSession,
    mut inputs: mpsc::Receiver<Input>,
) -> CallEnded {
    let MediaSession {
        commands,
        mut events,
        task,
    } = media;
    let mut machine = Machine::new(&config);
    let mut started = false;
    let mut timer = Some(Box::pin(tokio::time::sleep(config.start_delay)));
    let mut pending: Option<AssignFuture> = None;
    let mut play_id: u64 = 0;
    let mut inputs_open = true;
    let mut ivr_hung_up = false;
    let mut failure: Option<String> = None;
    let mut early: Vec<char> = Vec::new();

    while !machine.is_done() {
        let ev = tokio::select! {
            i = inputs.recv(), if inputs_open => match i {
                Some(Input::Digit(c)) => Event::Digit(c),
                Some(Input::HangUp) => Event::HangUp,
                None => { inputs_open = false; continue; }
            },
            e = events.recv() => match e {
                Some(MediaEvent::Digit(c)) => Event::Digit(c),
                Some(MediaEvent::PlayFinished { id }) if id == play_id => Event::PromptFinished,
                Some(MediaEvent::PlayFinished { .. }) => continue,
                None => {
                    failure = Some("media session ended".into());
                    Event::HangUp
                }
            },
            () = async { match timer.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                timer = None;
                if started { Event::Timeout } else { started = true; Event::Start }
            },
            r = async { match pending.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                pending = None;
                Event::AssignResult(r)
            },
        };
        // Keys before the first prompt (within `start_delay`) are kept and replayed after
        // Start, as type-ahead: the idle machine has nowhere to put them.
        if let (false, Event::Digit(c)) = (started, &ev) {
            if early.len() < EARLY_KEYS_MAX {
                early.push(*c);
            }
            continue;
        }
        let mut batch = vec![ev];
        if started && !early.is_empty() {
            batch.extend(early.drain(..).map(Event::Digit));
        }
        let mut actions = vec![];
        for ev in batch {
            let (m, a) = machine.step(ev);
            machine = m;
            actions.extend(a);
        }
        for a in actions {
            match a {
                Action::Play(clips) => {
                    play_id += 1;
                    if commands
                        .send(MediaCommand::Play {
                            id: play_id,
                            prompts: clips,
                        })
                        .await
                        .is_err()
                    {
                        failure.get_or_insert_with(|| "media session ended".into());
                    }
                }
                Action::StartTimer(d) => timer = Some(Box::pin(tokio::time::sleep(d))),
                Action::StopTimer => timer = None,
                Action::Assign(dn) => {
                    tracing::info!(dn = %dn, caller = %caller.remote_uri, "IVR assignment requested");
                    let (a, c) = (assigner.clone(), caller.clone());
                    pending = Some(Box::pin(async move { a.assign(&c, &dn).await }));
                }
                Action::Hangup => ivr_hung_up = true,
            }
        }
        if failure.is_some() && !machine.is_done() {
            let (m, _) = machine.step(Event::HangUp);
            machine = m;
        }
    }

    let _ = commands.send(MediaCommand::Stop).await;
    drop(commands);
    let _ = task.await;

    let outcome = match machine.outcome().cloned().unwrap_or(Outcome::HungUp) {
        Outcome::Assigned(dn) => CallOutcome::Assigned(dn),
        Outcome::GaveUp => CallOutcome::GaveUp,
        Outcome::Refused(r) => CallOutcome::Refused(r),
        Outcome::HungUp => match pending.take() {
            // Hung up while the assigner worked: let it finish and report what it did.
            Some(f) => match f.await {
                Ok(dn) => CallOutcome::Assigned(dn),
                Err(_) => CallOutcome::HungUp,
            },
            None => CallOutcome::HungUp,
        },
    };
    match failure {
        Some(f) if !matches!(outcome, CallOutcome::Assigned(_)) => CallEnded {
            outcome: CallOutcome::Failed(f),
            send_bye: true,
        },
        Some(_) => CallEnded {
            outcome,
            send_bye: true,
        },
        None => CallEnded {
            outcome,
            send_bye: ivr_hung_up,
        },
    }
}
