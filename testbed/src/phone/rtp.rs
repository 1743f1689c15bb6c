//! RTP (RFC 3550) and telephone-events (RFC 4733): the media a phone sends during the IVR call.
//!
//! The phone streams 20 ms packets of silence like a real one (an IVR may latch on the first
//! packet it receives, and a phone never goes quiet mid-call), and a keyed digit replaces the
//! audio with an event: a start packet with the marker bit, updates with a growing duration,
//! then three end packets with the E bit, all with the RTP timestamp of the event's start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Samples per 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: u32 = 160;
/// Packet interval.
pub const PTIME: Duration = Duration::from_millis(20);

/// The fixed RTP header fields the phone sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// A packet that is not RTP version 2 or is cut short.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an RTP packet: {0}")]
pub struct RtpError(pub &'static str);

/// Serialises an RTP packet (no CSRCs, no extension).
pub fn build_packet(h: &RtpHeader, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push((u8::from(h.marker) << 7) | (h.payload_type & 0x7f));
    p.extend_from_slice(&h.sequence.to_be_bytes());
    p.extend_from_slice(&h.timestamp.to_be_bytes());
    p.extend_from_slice(&h.ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Reads the header and finds the payload (skipping CSRCs, extension and padding).
pub fn parse_packet(p: &[u8]) -> Result<(RtpHeader, &[u8]), RtpError> {
    if p.len() < 12 {
        return Err(RtpError("shorter than the fixed header"));
    }
    if p[0] >> 6 != 2 {
        return Err(RtpError("version is not 2"));
    }
    let cc = usize::from(p[0] & 0x0f);
    let mut start = 12 + 4 * cc;
    if p[0] & 0x10 != 0 {
        let ext = p
            .get(start + 2..start + 4)
            .ok_or(RtpError("cut extension header"))?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        let pad = usize::from(*p.last().unwrap_or(&0));
        end = end.checked_sub(pad).ok_or(RtpError("bad padding"))?;
    }
    if start > end {
        return Err(RtpError("header longer than packet"));
    }
    let header = RtpHeader {
        marker: p[1] & 0x80 != 0,
        payload_type: p[1] & 0x7f,
        sequence: u16::from_be_bytes([p[2], p[3]]),
        timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
    };
    Ok((header, &p[start..end]))
}

/// RFC 4733 §3.2 event code of a DTMF key.
pub fn dtmf_event_code(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(key as u8 - b'A' + 12),
        'a'..='d' => Some(key as u8 - b'a' + 12),
        _ => None,
    }
}

/// The 4-byte telephone-event payload: event, E bit, volume (dBm0 below 0, 10 is typical),
/// duration in timestamp units.
pub fn event_payload(event: u8, end: bool, volume: u8, duration: u16) -> [u8; 4] {
    let d = duration.to_be_bytes();
    [event, (u8::from(end) << 7) | (volume & 0x3f), d[0], d[1]]
}

/// Parses a telephone-event payload into (event, end, duration).
pub fn parse_event_payload(p: &[u8]) -> Option<(u8, bool, u16)> {
    if p.len() < 4 {
        return None;
    }
    Some((p[0], p[1] & 0x80 != 0, u16::from_be_bytes([p[2], p[3]])))
}

/// How one key press is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfShape {
    /// Packets before the end packets (the first carries the marker): 5 = 100 ms of tone.
    pub tone_packets: u16,
    /// End packets (RFC 4733 §2.5.1.4 recommends three).
    pub end_packets: u16,
    /// Packets of audio between two key presses.
    pub gap_packets: u16,
}

impl Default for DtmfShape {
    fn default() -> Self {
        DtmfShape {
            tone_packets: 5,
            end_packets: 3,
            gap_packets: 3,
        }
    }
}

/// The payloads (with marker flag) of one key press, in sending order; every packet carries the
/// event's start timestamp.
pub fn event_packets(event: u8, shape: DtmfShape) -> Vec<(bool, [u8; 4])> {
    let per = SAMPLES_PER_PACKET as u16;
    let mut out = Vec::new();
    for k in 0..shape.tone_packets {
        out.push((
            k == 0,
            event_payload(event, false, 10, per.saturating_mul(k + 1)),
        ));
    }
    let total = per.saturating_mul(shape.tone_packets.max(1));
    for _ in 0..shape.end_packets {
        out.push((false, event_payload(event, true, 10, total)));
    }
    out
}

/// What was negotiated for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaParams {
    pub remote: SocketAddr,
    /// 0 (PCMU) or 8 (PCMA).
    pub audio_pt: u8,
    /// Payload type of telephone-event the answer gave, if any.
    pub event_pt: Option<u8>,
}

/// Counters the media task keeps, for the call flow and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    pub received: u64,
    pub sent: u64,
    pub events_sent: u64,
}

/// One 20 ms slot of the outgoing stream: an event packet, or audio when `event` is `None`.
#[derive(Default)]
struct Queued {
    marker: bool,
    event: Option<[u8; 4]>,
    /// First packet of a key press: takes the current timestamp as the event's.
    new_event: bool,
    /// First end packet: the key press is complete.
    counts_event: bool,
}

enum Cmd {
    Keys(String, DtmfShape, oneshot::Sender<()>),
}

/// A running RTP stream of the call: silence out, counting what comes in, keys on demand.
pub struct MediaSession {
    cmd: mpsc::Sender<Cmd>,
    stats: watch::Receiver<MediaStats>,
    task: JoinHandle<()>,
    params: MediaParams,
}

/// The audio payload of 20 ms of silence in the codec.
fn silence(audio_pt: u8) -> Vec<u8> {
    let byte = if audio_pt == 8 { 0xd5 } else { 0xff };
    vec![byte; SAMPLES_PER_PACKET as usize]
}

impl MediaSession {
    /// Starts streaming from `socket` (already bound: its port is in the SDP offer).
    pub fn start(socket: UdpSocket, params: MediaParams) -> MediaSession {
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<Cmd>(4);
        let (stats_tx, stats_rx) = watch::channel(MediaStats::default());
        let socket = Arc::new(socket);
        let task = tokio::spawn(async move {
            let ssrc: u32 = rand::random();
            let mut seq: u16 = rand::random();
            let mut ts: u32 = rand::random();
            let mut stats = MediaStats::default();
            let quiet = silence(params.audio_pt);
            let mut ticker = tokio::time::interval(PTIME);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut queue: std::collections::VecDeque<Queued> = Default::default();
            let mut done: Vec<(u64, oneshot::Sender<()>)> = Vec::new();
            let mut queued_total: u64 = 0;
            let mut sent_total: u64 = 0;
            let mut event_ts = ts;
            let mut buf = vec![0u8; 2048];
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        let q = queue.pop_front().unwrap_or_default();
                        let packet = match (q.event, params.event_pt) {
                            (Some(ev), Some(pt)) => {
                                if q.new_event {
                                    event_ts = ts;
                                }
                                if q.counts_event {
                                    stats.events_sent += 1;
                                }
                                build_packet(&RtpHeader { marker: q.marker, payload_type: pt, sequence: seq, timestamp: event_ts, ssrc }, &ev)
                            }
                            _ => build_packet(&RtpHeader { marker: false, payload_type: params.audio_pt, sequence: seq, timestamp: ts, ssrc }, &quiet),
                        };
                        if q.event.is_some() {
                            sent_total += 1;
                        }
                        seq = seq.wrapping_add(1);
                        ts = ts.wrapping_add(SAMPLES_PER_PACKET);
                        if socket.send_to(&packet, params.remote).await.is_ok() {
                            stats.sent += 1;
                        }
                        let _ = stats_tx.send(stats);
                    }
                    r = socket.recv_from(&mut buf) => {
                        if let Ok((n, _)) = r {
                            if parse_packet(&buf[..n]).is_ok() {
                                stats.received += 1;
                                let _ = stats_tx.send(stats);
                            }
                        }
                    }
                    cmd = cmd_rx.recv() => match cmd {
                        None => break,
                        Some(Cmd::Keys(keys, shape, reply)) => {
                            for key in keys.chars() {
                                let Some(code) = dtmf_event_code(key) else { continue };
                                let packets = event_packets(code, shape);
                                let n = packets.len();
                                for (i, (marker, p)) in packets.into_iter().enumerate() {
                                    queue.push_back(Queued {
                                        marker,
                                        event: Some(p),
                                        new_event: i == 0,
                                        // The first end packet completes the key press.
                                        counts_event: i == usize::from(shape.tone_packets),
                                    });
                                }
                                queued_total += n as u64;
                                for _ in 0..shape.gap_packets {
                                    queue.push_back(Queued::default());
                                }
                            }
                            done.push((queued_total, reply));
                        }
                    }
                }
                // Fire the replies whose packets are all out.
                let mut i = 0;
                while i < done.len() {
                    if done[i].0 <= sent_total {
                        let (_, tx) = done.swap_remove(i);
                        let _ = tx.send(());
                    } else {
                        i += 1;
                    }
                }
            }
        });
        MediaSession {
            cmd: cmd_tx,
            stats: stats_rx,
            task,
            params,
        }
    }

    /// What was negotiated.
    pub fn params(&self) -> MediaParams {
        self.params
    }

    /// Current counters.
    pub fn stats(&self) -> MediaStats {
        *self.stats.borrow()
    }

    /// Waits until `n` RTP packets have arrived (the IVR's prompt is playing), at most `limit`.
    pub async fn wait_received(&mut self, n: u64, limit: Duration) -> bool {
        let wait = self.stats.wait_for(|s| s.received >= n);
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_)))
    }

    /// Sends `keys` as telephone-events, paced at 20 ms, and returns once the last end packet
    /// is out. Fails when the media task is gone or no telephone-event was negotiated.
    pub async fn send_keys(&self, keys: &str, shape: DtmfShape) -> Result<(), RtpError> {
        if self.params.event_pt.is_none() {
            return Err(RtpError("the answer has no telephone-event"));
        }
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Keys(keys.to_string(), shape, tx))
            .await
            .map_err(|_| RtpError("media task ended"))?;
        rx.await.map_err(|_| RtpError("media task ended"))
    }

    /// Stops the stream and returns the final counters.
    pub async fn stop(self) -> MediaStats {
        let stats = *self.stats.borrow();
        self.task.abort();
        let _ = self.task.await;
        stats
    }
}
