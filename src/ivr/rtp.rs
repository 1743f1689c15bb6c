//! RTP packets (RFC 3550 §5.1) and an outgoing stream's numbering.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           timestamp                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           synchronization source (SSRC) identifier            |
//! +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
//! |            contributing source (CSRC) identifiers (CC × 32)   |
//! |     header extension (X: 16-bit profile, 16-bit length in words, data)
//! |     payload …                 | padding (P: last octet = count)|
//! ```
//!
//! Parsing takes bytes straight off a socket, so it checks every length against the buffer and
//! never panics (a proptest feeds it arbitrary bytes).

use rand::Rng;

/// The only RTP version (RFC 3550 §5.1).
pub const RTP_VERSION: u8 = 2;
/// Fixed header length.
pub const HEADER_LEN: usize = 12;
/// Samples in 20 ms at 8 kHz: one G.711 packet (RFC 3551 §4.5.14, default ptime 20).
pub const SAMPLES_PER_PACKET: usize = 160;

/// Why bytes are not an RTP packet we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("datagram of {0} bytes is shorter than an RTP header")]
    TooShort(usize),
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    #[error("CSRC list or header extension runs past the datagram")]
    Truncated,
    #[error("padding count larger than the payload")]
    Padding,
    /// An RTCP packet multiplexed on the RTP port (RFC 5761 §4: PT 64–95 with the marker bit
    /// set collides with RTCP types 192–223).
    #[error("RTCP packet on the RTP port")]
    Rtcp,
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram (RFC 3550 §5.1; padding §5.1 P bit; extension §5.3.1).
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        if buf.len() < HEADER_LEN {
            return Err(RtpError::TooShort(buf.len()));
        }
        let version = buf[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::Version(version));
        }
        let padding = buf[0] & 0x20 != 0;
        let extension = buf[0] & 0x10 != 0;
        let cc = usize::from(buf[0] & 0x0F);
        let marker = buf[1] & 0x80 != 0;
        let payload_type = buf[1] & 0x7F;
        if marker && (64..=95).contains(&payload_type) {
            return Err(RtpError::Rtcp);
        }
        let sequence = u16::from_be_bytes([buf[2], buf[3]]);
        let timestamp = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let mut start = HEADER_LEN + 4 * cc;
        if start > buf.len() {
            return Err(RtpError::Truncated);
        }
        if extension {
            let ext = buf.get(start..start + 4).ok_or(RtpError::Truncated)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            start += 4 + 4 * words;
            if start > buf.len() {
                return Err(RtpError::Truncated);
            }
        }
        let mut end = buf.len();
        if padding {
            let count = usize::from(buf[buf.len() - 1]);
            if count == 0 || count > end - start {
                return Err(RtpError::Padding);
            }
            end -= count;
        }
        Ok(RtpPacket {
            marker,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            payload: &buf[start..end],
        })
    }

    /// Serialises with no CSRCs, extension or padding (all we ever send).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        v.push(RTP_VERSION << 6);
        v.push((u8::from(self.marker) << 7) | (self.payload_type & 0x7F));
        v.extend_from_slice(&self.sequence.to_be_bytes());
        v.extend_from_slice(&self.timestamp.to_be_bytes());
        v.extend_from_slice(&self.ssrc.to_be_bytes());
        v.extend_from_slice(self.payload);
        v
    }
}

/// The numbering of one outgoing RTP stream (RFC 3550 §5.1): one SSRC, a sequence number that
/// grows by one per packet, a media clock at 8 kHz.
///
/// SSRC, first sequence number and first timestamp are random, as §5.1 asks, so that a
/// known-plaintext attack on encrypted media has less to work with and two streams never
/// collide by construction.
#[derive(Debug, Clone)]
pub struct RtpStream {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    in_talkspurt: bool,
}

impl Default for RtpStream {
    fn default() -> Self {
        Self::new()
    }
}

impl RtpStream {
    /// A stream with random SSRC, sequence number and timestamp.
    pub fn new() -> Self {
        let mut rng = rand::thread_rng();
        RtpStream {
            ssrc: rng.gen(),
            seq: rng.gen(),
            timestamp: rng.gen(),
            in_talkspurt: false,
        }
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The media clock (timestamp of the next audio packet).
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The next audio packet: `payload` is G.711, one byte per sample. The marker bit is set on
    /// the first packet after silence (RFC 3551 §4.1: first packet of a talkspurt).
    pub fn audio(&mut self, payload_type: u8, payload: &[u8]) -> Vec<u8> {
        let marker = !self.in_talkspurt;
        self.in_talkspurt = true;
        let bytes = self.packet(payload_type, marker, self.timestamp, payload);
        self.timestamp = self.timestamp.wrapping_add(payload.len() as u32);
        bytes
    }

    /// Time passes without packets (silence suppression): the clock advances so the receiver
    /// sees the gap, and the next audio packet starts a talkspurt.
    pub fn silence(&mut self, samples: u32) {
        self.in_talkspurt = false;
        self.timestamp = self.timestamp.wrapping_add(samples);
    }

    /// Any packet with an explicit timestamp (telephone-events keep the event's start
    /// timestamp on every packet, RFC 4733 §2.3.1). Advances the sequence number only.
    pub fn packet(
        &mut self,
        payload_type: u8,
        marker: bool,
        timestamp: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let p = RtpPacket {
            marker,
            payload_type,
            sequence: self.seq,
            timestamp,
            ssrc: self.ssrc,
            payload,
        };
        self.seq = self.seq.wrapping_add(1);
        p.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn build_parse_round_trip_and_numbering() {
        let mut s = RtpStream::new();
        let ts0 = s.timestamp();
        let a = s.audio(0, &[0xFF; 160]);
        let b = s.audio(0, &[0xFF; 160]);
        let pa = RtpPacket::parse(&a).unwrap();
        let pb = RtpPacket::parse(&b).unwrap();
        assert!(pa.marker && !pb.marker);
        assert_eq!(pa.timestamp, ts0);
        assert_eq!(pb.timestamp, ts0.wrapping_add(160));
        assert_eq!(pb.sequence, pa.sequence.wrapping_add(1));
        assert_eq!(pa.ssrc, s.ssrc());
        assert_eq!(pb.ssrc, s.ssrc());
        assert_eq!(pa.payload.len(), 160);
        s.silence(800);
        let c = s.audio(8, &[0xD5; 160]);
        let pc = RtpPacket::parse(&c).unwrap();
        assert!(pc.marker, "talkspurt after silence");
        assert_eq!(pc.timestamp, ts0.wrapping_add(320 + 800));
        assert_eq!(pc.payload_type, 8);
        assert_eq!(
            pc.sequence,
            pb.sequence.wrapping_add(1),
            "no sequence gap for silence"
        );
    }

    #[test]
    fn parses_csrc_extension_padding() {
        let mut v = vec![
            0x80 | 0x20 | 0x10 | 0x02,
            0x60,
            0,
            1,
            0,
            0,
            0,
            2,
            0,
            0,
            0,
            3,
        ];
        v.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]); // 2 CSRCs
        v.extend_from_slice(&[0xBE, 0xDE, 0, 1, 9, 9, 9, 9]); // extension, 1 word
        v.extend_from_slice(&[7, 7, 7]); // payload
        v.extend_from_slice(&[0, 0, 3]); // padding of 3
        let p = RtpPacket::parse(&v).unwrap();
        assert_eq!(p.payload, &[7, 7, 7]);
        assert_eq!(p.payload_type, 0x60);
        assert_eq!((p.sequence, p.timestamp, p.ssrc), (1, 2, 3));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(RtpError::TooShort(5)));
        let mut v = vec![0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(RtpPacket::parse(&v), Err(RtpError::Version(1)));
        v[0] = 0x8F; // 15 CSRCs, none present
        assert_eq!(RtpPacket::parse(&v), Err(RtpError::Truncated));
        v[0] = 0x90; // extension missing
        assert_eq!(RtpPacket::parse(&v), Err(RtpError::Truncated));
        let mut p = vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 200];
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::Padding));
        p[13] = 0;
        assert_eq!(RtpPacket::parse(&p), Err(RtpError::Padding));
        let rtcp = [0x80, 200, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(RtpPacket::parse(&rtcp), Err(RtpError::Rtcp));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RtpPacket::parse(&bytes);
        }

        #[test]
        fn header_shaped_bytes_never_panic(
            first in any::<u8>(),
            rest in proptest::collection::vec(any::<u8>(), 11..80),
        ) {
            let mut v = vec![(first & 0x3F) | 0x80];
            v.extend(rest);
            if let Ok(p) = RtpPacket::parse(&v) {
                prop_assert!(p.payload.len() <= v.len());
            }
        }
    }
}
