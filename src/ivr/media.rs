//! One RTP media session of the built-in IVR: speak prompts, hear DTMF.
//!
//! Sending follows RFC 3550 §5.1 / RFC 3551 §4.5.14: one G.711 packet of 160 samples every
//! 20 ms, paced by a tokio interval (missed ticks burst, so the average rate stays exact and the
//! timestamps stay continuous). Between prompts nothing is sent (silence suppression); the media
//! clock still advances across the gap and the next packet carries the marker bit (RFC 3551
//! §4.1), so the phone's jitter buffer sees the silence for what it is.
//!
//! Receiving: RTP from the phone is parsed; packets of the negotiated telephone-event payload
//! type go through [`DtmfReceiver`] (RFC 4733, one key per event). Audio from the phone is
//! ignored (the IVR does not listen to voice).
//!
//! Where packets come from: the session sends to the SDP address and accepts packets from it.
//! If the first packet comes from elsewhere (a phone behind NAT advertising its private
//! address), the session latches onto that source ("symmetric RTP", RFC 4961) and ignores
//! other sources from then on.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::dtmf::{DtmfReceiver, TelephoneEvent};
use super::g711;
use super::prompts::{Prompt, PromptLibrary};
use super::rtp::{RtpPacket, RtpStream, SAMPLES_PER_PACKET};
use super::sdp::{Codec, Negotiated};

/// Packet interval.
pub const PTIME: Duration = Duration::from_millis(20);

/// What the session needs from the offer/answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaParams {
    pub remote: SocketAddr,
    pub codec: Codec,
    pub payload_type: u8,
    pub telephone_event_pt: Option<u8>,
}

impl From<&Negotiated> for MediaParams {
    fn from(n: &Negotiated) -> Self {
        MediaParams {
            remote: n.remote,
            codec: n.codec,
            payload_type: n.payload_type,
            telephone_event_pt: n.telephone_event_pt,
        }
    }
}

/// Orders to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaCommand {
    /// Play these clips, replacing what is playing; report `PlayFinished { id }` at the end.
    Play { id: u64, prompts: Vec<Prompt> },
    /// Stop and close.
    Stop,
}

/// What the session reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The play with this id has been sent completely (not reported for a replaced play).
    PlayFinished { id: u64 },
    /// A DTMF key heard as an RFC 4733 telephone-event.
    Digit(char),
}

/// Binds the RTP socket on `ip`, preferring an even port (RFC 3550 §11: RTP on even ports,
/// RTCP on the next odd one) but accepting an odd one rather than failing.
pub async fn bind_rtp(ip: IpAddr) -> std::io::Result<UdpSocket> {
    let mut last = None;
    for _ in 0..8 {
        let s = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        if s.local_addr()?.port() % 2 == 0 {
            return Ok(s);
        }
        last = Some(s);
    }
    match last {
        Some(s) => Ok(s),
        None => UdpSocket::bind(SocketAddr::new(ip, 0)).await,
    }
}

/// A running media session.
pub struct MediaSession {
    pub commands: mpsc::Sender<MediaCommand>,
    pub events: mpsc::Receiver<MediaEvent>,
    pub task: JoinHandle<()>,
}

impl MediaSession {
    /// Starts the session on `socket` (already bound; its port is in the SDP answer).
    pub fn spawn(socket: UdpSocket, params: MediaParams, prompts: PromptLibrary) -> MediaSession {
        let (ctx, crx) = mpsc::channel(16);
        let (etx, erx) = mpsc::channel(256);
        let task = tokio::spawn(run(socket, params, prompts, crx, etx));
        MediaSession {
            commands: ctx,
            events: erx,
            task,
        }
    }
}

struct Playback {
    id: u64,
    samples: Vec<u8>,
    pos: usize,
}

fn render(prompts: &PromptLibrary, clips: &[Prompt], codec: Codec) -> Vec<u8> {
    let mut ulaw = Vec::new();
    for p in clips {
        ulaw.extend_from_slice(prompts.clip(*p));
    }
    match codec {
        Codec::Pcmu => ulaw,
        Codec::Pcma => g711::ulaw_to_alaw(&ulaw),
    }
}

async fn run(
    socket: UdpSocket,
    mut params: MediaParams,
    prompts: PromptLibrary,
    mut commands: mpsc::Receiver<MediaCommand>,
    events: mpsc::Sender<MediaEvent>,
) {
    let silence = match params.codec {
        Codec::Pcmu => g711::ULAW_SILENCE,
        Codec::Pcma => g711::ALAW_SILENCE,
    };
    let mut stream = RtpStream::new();
    let mut dtmf = DtmfReceiver::new();
    let mut latched = false;
    let mut playing: Option<Playback> = None;
    // When the last talkspurt ended (None before the first one).
    let mut idle_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(PTIME);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut buf = vec![0u8; 2048];

    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None | Some(MediaCommand::Stop) => break,
                Some(MediaCommand::Play { id, prompts: clips }) => {
                    let samples = render(&prompts, &clips, params.codec);
                    if samples.is_empty() {
                        playing = None;
                        let _ = events.try_send(MediaEvent::PlayFinished { id });
                        continue;
                    }
                    if playing.is_none() {
                        // A new talkspurt: account for the silence, restart the pacing now.
                        if let Some(t) = idle_since.take() {
                            let packets = (t.elapsed().as_millis() / PTIME.as_millis()) as u32;
                            stream.silence(packets.saturating_mul(SAMPLES_PER_PACKET as u32));
                        }
                        ticker.reset_immediately();
                    }
                    playing = Some(Playback { id, samples, pos: 0 });
                }
            },
            _ = ticker.tick(), if playing.is_some() => {
                let Some(p) = playing.as_mut() else { continue };
                let end = (p.pos + SAMPLES_PER_PACKET).min(p.samples.len());
                let mut chunk = [silence; SAMPLES_PER_PACKET];
                chunk[..end - p.pos].copy_from_slice(&p.samples[p.pos..end]);
                p.pos = end;
                let pkt = stream.audio(params.payload_type, &chunk);
                if let Err(e) = socket.send_to(&pkt, params.remote).await {
                    tracing::debug!(remote = %params.remote, error = %e, "RTP send failed");
                }
                if p.pos >= p.samples.len() {
                    let id = p.id;
                    playing = None;
                    idle_since = Some(Instant::now());
                    stream.silence(0);
                    let _ = events.try_send(MediaEvent::PlayFinished { id });
                }
            },
            r = socket.recv_from(&mut buf) => {
                let (n, from) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        // ICMP errors surface here on some systems; they are not fatal.
                        tracing::debug!(error = %e, "RTP receive error");
                        continue;
                    }
                };
                if from != params.remote {
                    if latched {
                        continue;
                    }
                    tracing::debug!(sdp = %params.remote, actual = %from, "latching RTP peer");
                    params.remote = from;
                }
                latched = true;
                let Ok(pkt) = RtpPacket::parse(&buf[..n]) else { continue };
                if Some(pkt.payload_type) != params.telephone_event_pt {
                    continue;
                }
                let Ok(ev) = TelephoneEvent::parse(pkt.payload) else { continue };
                if let Some(key) = dtmf.on_packet(pkt.ssrc, pkt.timestamp, ev) {
                    if events.try_send(MediaEvent::Digit(key)).is_err() {
                        tracing::warn!("DTMF key dropped: call driver not keeping up");
                    }
                }
            },
        }
    }
}
