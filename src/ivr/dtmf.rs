//! DTMF in the two forms phones send it during a call: RFC 4733 telephone-events inside RTP,
//! and SIP INFO bodies of type `application/dtmf-relay` (or `application/dtmf`).
//!
//! RFC 4733 §2.3 payload (4 octets):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! One key press is many packets: a start packet (marker bit), updates every packet interval
//! with a growing duration, and the end packet (E bit) sent three times (§2.5.1.4) because it
//! is the one that matters and UDP loses packets. Every packet of one event carries the RTP
//! timestamp of the event's start (§2.5.1.2), so [`DtmfReceiver`] counts a key **once per
//! timestamp**, whichever of its packets arrives first.

use std::collections::VecDeque;

use super::rtp::RtpStream;

/// Why a payload is not a telephone-event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("telephone-event payload of {0} bytes, expected at least 4")]
    Short(usize),
    #[error("no key in the dtmf-relay body")]
    NoSignal,
    #[error("unknown DTMF signal {0:?}")]
    BadSignal(String),
    #[error("content type {0:?} is not a DTMF relay type")]
    ContentType(String),
}

/// One RFC 4733 telephone-event payload (§2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (§3.2: 0–9 digits, 10 `*`, 11 `#`, 12–15 `A`–`D`).
    pub event: u8,
    /// E bit: this packet ends the event.
    pub end: bool,
    /// Power level, 0 to -63 dBm0 as a positive number (§2.3.4).
    pub volume: u8,
    /// Duration so far, in RTP clock units (§2.3.5).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first four payload octets (a payload may carry redundant events after them,
    /// RFC 4733 §2.4; the first one is the current event). The reserved bit is ignored, as
    /// §2.3.3 asks of receivers.
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(DtmfError::Short(payload.len())),
        }
    }

    /// Serialises (reserved bit zero).
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }

    /// The key of a DTMF event code, if it is one (§3.2, Table 3).
    pub fn key(self) -> Option<char> {
        event_key(self.event)
    }
}

/// The key of an RFC 4733 §3.2 DTMF event code.
pub fn event_key(event: u8) -> Option<char> {
    match event {
        0..=9 => char::from_digit(u32::from(event), 10),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + (event - 12))),
        _ => None,
    }
}

/// The RFC 4733 §3.2 event code of a key.
pub fn key_event(key: char) -> Option<u8> {
    match key {
        '0'..='9' => key.to_digit(10).map(|d| d as u8),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(12 + (key as u8 - b'A')),
        'a'..='d' => Some(12 + (key as u8 - b'a')),
        _ => None,
    }
}

/// Turns a stream of telephone-event packets into keys, each counted once.
///
/// An event is identified by its RTP timestamp (RFC 4733 §2.5.2.1). The receiver remembers the
/// last few timestamps, so repeated start packets, updates, the three end packets and packets
/// reordered within a key press are all absorbed. Two deliberate exceptions:
/// * a key press longer than the 16-bit duration (§2.5.1.3, ~8 s at 8 kHz) is continued under a
///   new timestamp equal to the old one plus the duration; that continuation is not a new key;
/// * a packet older than the newest event seen (a late straggler) is ignored.
#[derive(Debug, Default)]
pub struct DtmfReceiver {
    ssrc: Option<u32>,
    recent: VecDeque<u32>,
    newest: Option<Current>,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    event: u8,
    duration: u16,
    ended: bool,
}

const RECENT: usize = 16;

impl DtmfReceiver {
    /// A receiver with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one telephone-event packet; returns the key if this packet starts a new DTMF key
    /// press.
    pub fn on_packet(&mut self, ssrc: u32, timestamp: u32, ev: TelephoneEvent) -> Option<char> {
        if self.ssrc != Some(ssrc) {
            // A new source (re-INVITE, SBC switch-over): its timestamps mean nothing to ours.
            self.ssrc = Some(ssrc);
            self.recent.clear();
            self.newest = None;
        }
        if self.recent.contains(&timestamp) {
            if let Some(cur) = self.newest.as_mut().filter(|c| c.timestamp == timestamp) {
                cur.duration = cur.duration.max(ev.duration);
                cur.ended |= ev.end;
            }
            return None;
        }
        if let Some(cur) = self.newest {
            let delta = timestamp.wrapping_sub(cur.timestamp) as i32;
            if delta < 0 {
                return None;
            }
            let continuation = !cur.ended
                && cur.event == ev.event
                && cur.duration >= 0xF000
                && (delta as u32) >= u32::from(cur.duration)
                && (delta as u32) <= u32::from(cur.duration) + 1600;
            self.remember(timestamp, ev);
            if continuation {
                return None;
            }
        } else {
            self.remember(timestamp, ev);
        }
        ev.key()
    }

    fn remember(&mut self, timestamp: u32, ev: TelephoneEvent) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(timestamp);
        self.newest = Some(Current {
            timestamp,
            event: ev.event,
            duration: ev.duration,
            ended: ev.end,
        });
    }
}

/// The RTP packets of one key press as a phone sends them (RFC 4733 §2.5.1): a start packet
/// with the marker bit, updates every `step` samples, then three end packets; all with the
/// event's start timestamp. The stream's clock is advanced past the event.
pub fn key_press_packets(
    stream: &mut RtpStream,
    payload_type: u8,
    key: char,
    duration: u16,
    step: u16,
) -> Vec<Vec<u8>> {
    let Some(event) = key_event(key) else {
        return vec![];
    };
    let step = step.max(1);
    let ts = stream.timestamp();
    let mut out = vec![];
    let mut d: u16 = 0;
    let mut first = true;
    loop {
        d = d.saturating_add(step).min(duration);
        if d >= duration {
            break;
        }
        let ev = TelephoneEvent {
            event,
            end: false,
            volume: 10,
            duration: d,
        };
        out.push(stream.packet(payload_type, first, ts, &ev.to_bytes()));
        first = false;
    }
    let end = TelephoneEvent {
        event,
        end: true,
        volume: 10,
        duration,
    };
    for _ in 0..3 {
        out.push(stream.packet(payload_type, first, ts, &end.to_bytes()));
        first = false;
    }
    stream.silence(u32::from(duration));
    out
}

/// A key received in a SIP INFO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDigit {
    pub key: char,
    /// `Duration=` in milliseconds, when given.
    pub duration_ms: Option<u32>,
}

/// Parses a SIP INFO DTMF body by content type:
/// * `application/dtmf-relay` (the de-facto format of Cisco and most phones):
///   `Signal=5\r\nDuration=160\r\n`; keys are case-insensitive, spaces around `=` tolerated,
///   CRLF or LF; `Signal=10`/`11` are taken as `*`/`#` (some gateways send the event code);
/// * `application/dtmf`: the body is just the key.
pub fn parse_info(content_type: &str, body: &str) -> Result<InfoDigit, DtmfError> {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/dtmf-relay" => parse_dtmf_relay(body),
        "application/dtmf" => Ok(InfoDigit {
            key: parse_signal(body.trim())?,
            duration_ms: None,
        }),
        _ => Err(DtmfError::ContentType(
            content_type.chars().take(64).collect(),
        )),
    }
}

/// Parses an `application/dtmf-relay` body (see [`parse_info`]).
pub fn parse_dtmf_relay(body: &str) -> Result<InfoDigit, DtmfError> {
    let mut key = None;
    let mut duration_ms = None;
    for line in body.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "signal" => key = Some(parse_signal(value)?),
            "duration" => duration_ms = value.parse().ok(),
            _ => {}
        }
    }
    key.map(|key| InfoDigit { key, duration_ms })
        .ok_or(DtmfError::NoSignal)
}

fn parse_signal(v: &str) -> Result<char, DtmfError> {
    let mut chars = v.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if key_event(c).is_some() => Ok(c.to_ascii_uppercase()),
        _ => match v {
            "10" => Ok('*'),
            "11" => Ok('#'),
            _ => Err(DtmfError::BadSignal(v.chars().take(16).collect())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ivr::rtp::RtpPacket;
    use proptest::prelude::*;

    #[test]
    fn event_round_trip() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        let b = e.to_bytes();
        assert_eq!(b, [11, 0x8A, 0x05, 0x00]);
        assert_eq!(TelephoneEvent::parse(&b), Ok(e));
        assert_eq!(e.key(), Some('#'));
        // Reserved bit ignored.
        assert_eq!(
            TelephoneEvent::parse(&[5, 0xCA, 0, 160]).unwrap().volume,
            10
        );
        assert_eq!(TelephoneEvent::parse(&[5, 0]), Err(DtmfError::Short(2)));
    }

    #[test]
    fn codes() {
        for (k, e) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('D', 15),
        ] {
            assert_eq!(key_event(k), Some(e));
            assert_eq!(event_key(e), Some(k));
        }
        assert_eq!(event_key(16), None);
        assert_eq!(key_event('x'), None);
    }

    fn feed(rx: &mut DtmfReceiver, packets: &[Vec<u8>]) -> String {
        let mut s = String::new();
        for p in packets {
            let p = RtpPacket::parse(p).unwrap();
            let ev = TelephoneEvent::parse(p.payload).unwrap();
            if let Some(k) = rx.on_packet(p.ssrc, p.timestamp, ev) {
                s.push(k);
            }
        }
        s
    }

    #[test]
    fn a_key_press_counts_once_despite_updates_and_triple_end() {
        let mut st = RtpStream::new();
        let mut rx = DtmfReceiver::new();
        let mut all = vec![];
        for k in "1001#".chars() {
            let pk = key_press_packets(&mut st, 101, k, 800, 160);
            assert_eq!(pk.len(), 4 + 3);
            all.extend(pk);
        }
        assert_eq!(feed(&mut rx, &all), "1001#");
        // Replaying everything adds nothing.
        assert_eq!(feed(&mut rx, &all), "");
    }

    #[test]
    fn only_end_packets_still_count_once() {
        let mut st = RtpStream::new();
        let mut rx = DtmfReceiver::new();
        let pk = key_press_packets(&mut st, 101, '5', 800, 160);
        assert_eq!(feed(&mut rx, &pk[4..]), "5");
    }

    #[test]
    fn repeated_same_key_counts_twice() {
        let mut st = RtpStream::new();
        let mut rx = DtmfReceiver::new();
        let mut all = key_press_packets(&mut st, 101, '0', 800, 160);
        st.silence(400);
        all.extend(key_press_packets(&mut st, 101, '0', 800, 160));
        assert_eq!(feed(&mut rx, &all), "00");
    }

    #[test]
    fn stragglers_and_new_ssrc() {
        let mut st = RtpStream::new();
        let mut rx = DtmfReceiver::new();
        let a = key_press_packets(&mut st, 101, '1', 800, 160);
        let b = key_press_packets(&mut st, 101, '2', 800, 160);
        assert_eq!(feed(&mut rx, &b[..1]), "2");
        assert_eq!(
            feed(&mut rx, &a),
            "",
            "an older event arriving late is ignored"
        );
        let mut other = RtpStream::new();
        let c = key_press_packets(&mut other, 101, '3', 800, 160);
        assert_eq!(feed(&mut rx, &c), "3");
    }

    #[test]
    fn long_press_continuation_is_one_key() {
        let mut rx = DtmfReceiver::new();
        let e = |end, duration| TelephoneEvent {
            event: 5,
            end,
            volume: 10,
            duration,
        };
        assert_eq!(rx.on_packet(1, 1000, e(false, 160)), Some('5'));
        assert_eq!(rx.on_packet(1, 1000, e(false, 0xFFFF)), None);
        assert_eq!(rx.on_packet(1, 1000 + 0xFFFF, e(false, 160)), None);
        assert_eq!(rx.on_packet(1, 1000 + 0xFFFF, e(true, 800)), None);
        assert_eq!(
            rx.on_packet(1, 1000 + 0xFFFF + 2000, e(false, 160)),
            Some('5')
        );
    }

    #[test]
    fn dtmf_relay_bodies() {
        let d = parse_info("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n").unwrap();
        assert_eq!(
            d,
            InfoDigit {
                key: '5',
                duration_ms: Some(160)
            }
        );
        let d = parse_info(
            "Application/DTMF-Relay; charset=utf-8",
            "signal= #\nduration = x\n",
        )
        .unwrap();
        assert_eq!(
            d,
            InfoDigit {
                key: '#',
                duration_ms: None
            }
        );
        assert_eq!(parse_dtmf_relay("Signal=11").unwrap().key, '#');
        assert_eq!(parse_dtmf_relay("Signal=10").unwrap().key, '*');
        assert_eq!(parse_dtmf_relay("Signal=b").unwrap().key, 'B');
        assert_eq!(parse_dtmf_relay("Duration=160"), Err(DtmfError::NoSignal));
        assert!(matches!(
            parse_dtmf_relay("Signal=55"),
            Err(DtmfError::BadSignal(_))
        ));
        assert!(matches!(
            parse_dtmf_relay("Signal="),
            Err(DtmfError::BadSignal(_))
        ));
        assert_eq!(parse_info("application/dtmf", " 7\r\n").unwrap().key, '7');
        assert!(matches!(
            parse_info("text/plain", "Signal=1"),
            Err(DtmfError::ContentType(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..16),
            ts in any::<u32>(),
            ssrc in 0u32..3,
        ) {
            let mut rx = DtmfReceiver::new();
            if let Ok(ev) = TelephoneEvent::parse(&bytes) {
                let _ = rx.on_packet(ssrc, ts, ev);
                let _ = rx.on_packet(ssrc, ts.wrapping_add(1), ev);
            }
        }

        #[test]
        fn arbitrary_info_bodies_never_panic(ct in ".{0,40}", body in ".{0,200}") {
            let _ = parse_info(&ct, &body);
            let _ = parse_dtmf_relay(&body);
        }
    }
}
