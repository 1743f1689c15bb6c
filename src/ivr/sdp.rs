//! SDP (RFC 4566) offer/answer (RFC 3264) for one audio stream of G.711 and telephone-events.
//!
//! Why hand-written rather than a crate: the IVR needs five line types of one audio section
//! (`c=`, `m=`, `a=rtpmap`, `a=ptime`, direction) and must answer every m-line of the offer
//! (RFC 3264 §6), including the ones it rejects. The SDP crates on crates.io target WebRTC
//! (ICE, DTLS, bundles) and would have to be configured into leniency for plain SIP phones;
//! this file stays small, total, and tested against the shapes phones actually send.
//!
//! Parsing is lenient where phones are sloppy (LF line ends, unknown lines, attributes in any
//! case) and strict where a mistake would send audio to the wrong place (addresses, ports,
//! payload type numbers).

use std::net::{IpAddr, SocketAddr};

/// Why an offer cannot be answered. The SIP layer answers these with 488 Not Acceptable Here
/// (RFC 3261 §21.4.26), or 400 for [`SdpError::Syntax`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("malformed SDP line: {0:?}")]
    Syntax(String),
    #[error("no audio stream in the offer")]
    NoAudio,
    #[error("no connection address for the audio stream")]
    NoConnection,
    #[error("the offer has no codec we speak (PCMU or PCMA at 8 kHz over RTP/AVP)")]
    NoCommonCodec,
}

/// Which way media flows (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The answer's direction for an offer's (RFC 3264 §6.1): sendonly ↔ recvonly.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]` (RFC 4566 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub media: String,
    pub port: u16,
    pub proto: String,
    /// The format list as written (payload type numbers for RTP).
    pub formats: Vec<String>,
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<RtpMap>,
    pub ptime: Option<u32>,
    pub direction: Option<Direction>,
}

impl MediaSection {
    fn rtpmap(&self, pt: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == pt)
    }

    fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt < 128)
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub connection: Option<IpAddr>,
    pub direction: Option<Direction>,
    pub media: Vec<MediaSection>,
}

/// The G.711 law we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// μ-law, static payload type 0 (RFC 3551 §6).
    Pcmu,
    /// A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The encoding name in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The static payload type (RFC 3551 Table 4).
    pub fn static_pt(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }
}

/// Default dynamic payload type for telephone-event in our offers (the de-facto choice).
pub const DEFAULT_TELEPHONE_EVENT_PT: u8 = 101;

/// What the answer settles: one audio stream the IVR sends and receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the accepted m-line in the offer.
    pub media_index: usize,
    /// The codec we send, and its payload type as the offer numbered it.
    pub codec: Codec,
    pub payload_type: u8,
    /// Every codec of ours the offer had, in the offer's order (listed in the answer).
    pub common: Vec<(Codec, u8)>,
    /// The offer's telephone-event payload type at 8 kHz, echoed in the answer; `None` when the
    /// phone offered none (it can still send SIP INFO).
    pub telephone_event_pt: Option<u8>,
    /// Where to send RTP.
    pub remote: SocketAddr,
    /// The answer's direction.
    pub direction: Direction,
}

fn syntax(line: &str) -> SdpError {
    SdpError::Syntax(line.chars().take(80).collect())
}

fn parse_connection(v: &str, line: &str) -> Result<IpAddr, SdpError> {
    // c=<nettype> <addrtype> <connection-address>[/ttl[/count]]
    let mut it = v.split_whitespace();
    let (Some(net), Some(_addrtype), Some(addr)) = (it.next(), it.next(), it.next()) else {
        return Err(syntax(line));
    };
    if !net.eq_ignore_ascii_case("IN") {
        return Err(syntax(line));
    }
    let addr = addr.split('/').next().unwrap_or(addr);
    addr.parse().map_err(|_| syntax(line))
}

fn parse_direction(a: &str) -> Option<Direction> {
    match a.to_ascii_lowercase().as_str() {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

/// Parses an SDP body (RFC 4566 §5). Lines that are not `x=value` are refused; unknown line
/// types and attributes are skipped.
pub fn parse(sdp: &str) -> Result<SessionDescription, SdpError> {
    let mut sd = SessionDescription {
        connection: None,
        direction: None,
        media: vec![],
    };
    for raw in sdp.lines() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let b = line.as_bytes();
        if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_alphabetic() {
            return Err(syntax(line));
        }
        let value = &line[2..];
        match b[0] {
            b'c' => {
                let ip = parse_connection(value, line)?;
                match sd.media.last_mut() {
                    Some(m) => m.connection = Some(ip),
                    None => sd.connection = Some(ip),
                }
            }
            b'm' => {
                // m=<media> <port>[/<count>] <proto> <fmt> ...
                let mut it = value.split_whitespace();
                let (Some(media), Some(port), Some(proto)) = (it.next(), it.next(), it.next())
                else {
                    return Err(syntax(line));
                };
                let port = port.split('/').next().unwrap_or(port);
                let port: u16 = port.parse().map_err(|_| syntax(line))?;
                sd.media.push(MediaSection {
                    media: media.to_string(),
                    port,
                    proto: proto.to_string(),
                    formats: it.map(str::to_string).collect(),
                    connection: None,
                    rtpmaps: vec![],
                    ptime: None,
                    direction: None,
                });
            }
            b'a' => {
                let (name, val) = match value.split_once(':') {
                    Some((n, v)) => (n, Some(v)),
                    None => (value, None),
                };
                let name = name.trim();
                if let Some(d) = parse_direction(name) {
                    match sd.media.last_mut() {
                        Some(m) => m.direction = Some(d),
                        None => sd.direction = Some(d),
                    }
                    continue;
                }
                let Some(m) = sd.media.last_mut() else {
                    continue;
                };
                match (name.to_ascii_lowercase().as_str(), val) {
                    ("rtpmap", Some(v)) => {
                        let mut it = v.split_whitespace();
                        let (Some(pt), Some(enc)) = (it.next(), it.next()) else {
                            return Err(syntax(line));
                        };
                        let pt: u8 = pt.parse().map_err(|_| syntax(line))?;
                        let mut parts = enc.split('/');
                        let encoding = parts.next().unwrap_or("").to_string();
                        let clock_rate = parts
                            .next()
                            .and_then(|c| c.parse().ok())
                            .ok_or_else(|| syntax(line))?;
                        m.rtpmaps.push(RtpMap {
                            payload_type: pt,
                            encoding,
                            clock_rate,
                        });
                    }
                    ("ptime", Some(v)) => m.ptime = v.trim().parse().ok(),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(sd)
}

/// Which of our codecs a payload type in this section is: the static numbers of RFC 3551
/// unless an rtpmap says otherwise, or a dynamic number mapped to PCMU/PCMA at 8 kHz.
fn codec_of(m: &MediaSection, pt: u8) -> Option<Codec> {
    match m.rtpmap(pt) {
        Some(map) if map.clock_rate == 8000 => {
            if map.encoding.eq_ignore_ascii_case("PCMU") {
                Some(Codec::Pcmu)
            } else if map.encoding.eq_ignore_ascii_case("PCMA") {
                Some(Codec::Pcma)
            } else {
                None
            }
        }
        Some(_) => None,
        None => match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        },
    }
}

/// Chooses the audio stream and codec to answer with.
///
/// The first audio m-line over RTP/AVP with a non-zero port and a G.711 codec is accepted. The
/// codec is the first of ours **in the offer's order**: RFC 3264 §5.1 makes the offer's format
/// order its preference and §6.1 recommends the answer keep it.
pub fn negotiate(offer: &SessionDescription) -> Result<Negotiated, SdpError> {
    let mut saw_audio = false;
    for (i, m) in offer.media.iter().enumerate() {
        if !m.media.eq_ignore_ascii_case("audio") {
            continue;
        }
        saw_audio = true;
        if m.port == 0 || !m.proto.eq_ignore_ascii_case("RTP/AVP") {
            continue;
        }
        let common: Vec<(Codec, u8)> = m
            .payload_types()
            .filter_map(|pt| codec_of(m, pt).map(|c| (c, pt)))
            .collect();
        let Some(&(codec, payload_type)) = common.first() else {
            continue;
        };
        let ip = m
            .connection
            .or(offer.connection)
            .ok_or(SdpError::NoConnection)?;
        let telephone_event_pt = m.payload_types().find(|pt| {
            m.rtpmap(*pt).is_some_and(|map| {
                map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == 8000
            })
        });
        let direction = m
            .direction
            .or(offer.direction)
            .unwrap_or(Direction::SendRecv)
            .reverse();
        return Ok(Negotiated {
            media_index: i,
            codec,
            payload_type,
            common,
            telephone_event_pt,
            remote: SocketAddr::new(ip, m.port),
            direction,
        });
    }
    Err(if saw_audio {
        SdpError::NoCommonCodec
    } else {
        SdpError::NoAudio
    })
}

fn addr_type(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    }
}

fn session_header(out: &mut String, ip: IpAddr, session_id: u64) {
    let at = addr_type(ip);
    out.push_str(&format!(
        "v=0\r\no=sipdm {session_id} {session_id} IN {at} {ip}\r\ns=sipdm IVR\r\nc=IN {at} {ip}\r\nt=0 0\r\n"
    ));
}

fn audio_lines(
    out: &mut String,
    port: u16,
    codecs: &[(Codec, u8)],
    te: Option<u8>,
    dir: Direction,
) {
    let mut fmts: Vec<String> = codecs.iter().map(|(_, pt)| pt.to_string()).collect();
    fmts.extend(te.map(|pt| pt.to_string()));
    out.push_str(&format!("m=audio {port} RTP/AVP {}\r\n", fmts.join(" ")));
    for (c, pt) in codecs {
        out.push_str(&format!("a=rtpmap:{pt} {}/8000\r\n", c.name()));
    }
    if let Some(pt) = te {
        // Events 0-15: the DTMF keys (RFC 4733 §3.2), all the IVR understands.
        out.push_str(&format!(
            "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-15\r\n"
        ));
    }
    out.push_str(&format!("a=ptime:20\r\na={}\r\n", dir.attr()));
}

/// The answer (RFC 3264 §6): one m-line per offered m-line, in order; the accepted audio stream
/// lists our codecs the offer had (the chosen one first) and the echoed telephone-event type;
/// every other stream is rejected with port 0.
pub fn build_answer(
    offer: &SessionDescription,
    neg: &Negotiated,
    local_ip: IpAddr,
    local_port: u16,
    session_id: u64,
) -> String {
    let mut out = String::new();
    session_header(&mut out, local_ip, session_id);
    for (i, m) in offer.media.iter().enumerate() {
        if i == neg.media_index {
            audio_lines(
                &mut out,
                local_port,
                &neg.common,
                neg.telephone_event_pt,
                neg.direction,
            );
        } else {
            let fmts = if m.formats.is_empty() {
                "0".to_string()
            } else {
                m.formats.join(" ")
            };
            out.push_str(&format!("m={} 0 {} {fmts}\r\n", m.media, m.proto));
        }
    }
    out
}

/// An offer of PCMU, PCMA and telephone-event/8000 as PT 101 (for a UAC, and for tests that
/// play the phone).
pub fn build_offer(local_ip: IpAddr, local_port: u16, session_id: u64) -> String {
    let mut out = String::new();
    session_header(&mut out, local_ip, session_id);
    audio_lines(
        &mut out,
        local_port,
        &[(Codec::Pcmu, 0), (Codec::Pcma, 8)],
        Some(DEFAULT_TELEPHONE_EVENT_PT),
        Direction::SendRecv,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLYCOM: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=Polycom IP Phone\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 2222 RTP/AVP 9 0 8 18 127\r\na=sendrecv\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=rtpmap:127 telephone-event/8000\r\n";

    #[test]
    fn polycom_offer() {
        let sd = parse(POLYCOM).unwrap();
        let n = negotiate(&sd).unwrap();
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.payload_type, 0);
        assert_eq!(n.common, vec![(Codec::Pcmu, 0), (Codec::Pcma, 8)]);
        assert_eq!(n.telephone_event_pt, Some(127));
        assert_eq!(n.remote, "192.0.2.10:2222".parse().unwrap());
        let a = build_answer(&sd, &n, "192.0.2.1".parse().unwrap(), 40000, 7);
        assert!(a.contains("m=audio 40000 RTP/AVP 0 8 127\r\n"), "{a}");
        assert!(a.contains("a=rtpmap:127 telephone-event/8000\r\n"));
        assert!(a.contains("c=IN IP4 192.0.2.1\r\n"));
        assert!(a.contains("a=sendrecv\r\n"));
        // The answer parses back as an acceptable offer-shaped description.
        let back = negotiate(&parse(&a).unwrap()).unwrap();
        assert_eq!(back.telephone_event_pt, Some(127));
    }

    #[test]
    fn pcma_first_bare_lf_media_connection_and_static_without_rtpmap() {
        let offer = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 5004/2 rtp/avp 8 0 96\nc=IN IP4 10.0.0.2/127\na=RTPMAP:96 Telephone-Event/8000\na=ptime:30\na=sendonly\n";
        let sd = parse(offer).unwrap();
        assert_eq!(sd.media[0].ptime, Some(30));
        let n = negotiate(&sd).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcma, 8));
        assert_eq!(n.remote, "10.0.0.2:5004".parse().unwrap());
        assert_eq!(n.telephone_event_pt, Some(96));
        assert_eq!(n.direction, Direction::RecvOnly);
    }

    #[test]
    fn dynamic_pcmu_and_te_at_other_rate() {
        let offer = "v=0\r\nc=IN IP6 2001:db8::1\r\nm=audio 9000 RTP/AVP 96 97 98\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:97 PCMU/8000\r\na=rtpmap:98 telephone-event/48000\r\n";
        let n = negotiate(&parse(offer).unwrap()).unwrap();
        assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, 97));
        assert_eq!(
            n.telephone_event_pt, None,
            "telephone-event must share the 8 kHz clock"
        );
        assert_eq!(n.remote, "[2001:db8::1]:9000".parse().unwrap());
    }

    #[test]
    fn rejects_unusable_offers() {
        let g729 =
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 9000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        assert_eq!(
            negotiate(&parse(g729).unwrap()),
            Err(SdpError::NoCommonCodec)
        );
        let srtp = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 9000 RTP/SAVP 0\r\n";
        assert_eq!(
            negotiate(&parse(srtp).unwrap()),
            Err(SdpError::NoCommonCodec)
        );
        let port0 = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n";
        assert_eq!(
            negotiate(&parse(port0).unwrap()),
            Err(SdpError::NoCommonCodec)
        );
        let video = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 9000 RTP/AVP 31\r\n";
        assert_eq!(negotiate(&parse(video).unwrap()), Err(SdpError::NoAudio));
        let noc = "v=0\r\nm=audio 9000 RTP/AVP 0\r\n";
        assert_eq!(negotiate(&parse(noc).unwrap()), Err(SdpError::NoConnection));
        // A payload type remapped away from PCMU is not PCMU.
        let remap =
            "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 9000 RTP/AVP 0\r\na=rtpmap:0 G722/8000\r\n";
        assert_eq!(
            negotiate(&parse(remap).unwrap()),
            Err(SdpError::NoCommonCodec)
        );
        for bad in [
            "garbage",
            "c=IN IP4 not-an-ip",
            "m=audio x RTP/AVP 0",
            "m=audio",
            "a=rtpmap:300 PCMU/8000",
        ] {
            let body = format!("v=0\r\nm=audio 1 RTP/AVP 0\r\n{bad}\r\n");
            assert!(matches!(parse(&body), Err(SdpError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn answer_rejects_other_streams_in_place() {
        let offer = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=video 9002 RTP/AVP 96\r\nm=audio 9000 RTP/AVP 0\r\nm=audio 9004 RTP/AVP 8\r\n";
        let sd = parse(offer).unwrap();
        let n = negotiate(&sd).unwrap();
        assert_eq!(n.media_index, 1);
        assert_eq!(n.telephone_event_pt, None);
        let a = build_answer(&sd, &n, "10.0.0.9".parse().unwrap(), 7000, 1);
        let ms: Vec<&str> = a.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            ms,
            [
                "m=video 0 RTP/AVP 96",
                "m=audio 7000 RTP/AVP 0",
                "m=audio 0 RTP/AVP 8"
            ]
        );
        assert!(!a.contains("telephone-event"));
    }

    #[test]
    fn our_offer_negotiates_with_ourselves() {
        let o = build_offer("127.0.0.1".parse().unwrap(), 4000, 3);
        let n = negotiate(&parse(&o).unwrap()).unwrap();
        assert_eq!((n.codec, n.telephone_event_pt), (Codec::Pcmu, Some(101)));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "(?s).{0,400}") {
            if let Ok(sd) = parse(&s) {
                if let Ok(n) = negotiate(&sd) {
                    let _ = build_answer(&sd, &n, "127.0.0.1".parse().unwrap(), 1, 1);
                }
            }
        }

        #[test]
        fn sdp_shaped_lines_never_panic(lines in proptest::collection::vec("[cma]=[ -~]{0,40}", 0..12)) {
            let s = lines.join("\r\n");
            if let Ok(sd) = parse(&s) {
                let _ = negotiate(&sd);
            }
        }
    }
}
