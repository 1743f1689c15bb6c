//! The SDP of the IVR call: the phone's offer (PCMU, PCMA, telephone-event) and reading the
//! answer for where to send media and which payload types were kept.

use std::net::{IpAddr, SocketAddr};

use super::rtp::MediaParams;

/// Payload type the phone offers for telephone-event (the common dynamic choice).
pub const OFFER_EVENT_PT: u8 = 101;

/// The offer: one audio stream on `rtp`, PCMU 0, PCMA 8, telephone-event 101 (events 0-15).
pub fn offer(rtp: SocketAddr, session_id: u64) -> String {
    let (ip_kind, ip) = match rtp.ip() {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    };
    format!(
        "v=0\r\n\
         o=- {session_id} {session_id} IN {ip_kind} {ip}\r\n\
         s=-\r\n\
         c=IN {ip_kind} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 {ev}\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:{ev} telephone-event/8000\r\n\
         a=fmtp:{ev} 0-15\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n",
        port = rtp.port(),
        ev = OFFER_EVENT_PT,
    )
}

/// An answer the phone cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("answer has no connection address")]
    NoConnection,
    #[error("answer has no audio stream")]
    NoAudio,
    #[error("answer rejected the audio stream (port 0)")]
    Rejected,
    #[error("answer kept neither PCMU nor PCMA")]
    NoCodec,
}

/// Reads the answer: the media-level `c=` wins over the session-level one, the first of
/// PCMU/PCMA in the answer's order is the codec, telephone-event is found by its rtpmap.
pub fn parse_answer(sdp: &str) -> Result<MediaParams, SdpError> {
    let mut session_c: Option<IpAddr> = None;
    let mut media_c: Option<IpAddr> = None;
    let mut audio: Option<(u16, Vec<u8>)> = None;
    let mut event_pt: Option<u8> = None;
    let mut in_audio = false;
    let mut seen_media = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("c=") {
            let ip = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse().ok());
            if !seen_media {
                session_c = ip;
            } else if in_audio {
                media_c = ip;
            }
        } else if let Some(m) = line.strip_prefix("m=") {
            seen_media = true;
            let mut f = m.split_whitespace();
            in_audio = f.next() == Some("audio") && audio.is_none();
            if in_audio {
                let port = f
                    .next()
                    .and_then(|p| p.split('/').next()?.parse().ok())
                    .unwrap_or(0);
                let _proto = f.next();
                let pts = f.filter_map(|p| p.parse().ok()).collect();
                audio = Some((port, pts));
            }
        } else if let Some(r) = line.strip_prefix("a=rtpmap:") {
            if in_audio {
                let mut f = r.split_whitespace();
                let pt = f.next().and_then(|p| p.parse::<u8>().ok());
                let enc = f.next().unwrap_or_default().to_ascii_lowercase();
                if enc.starts_with("telephone-event/") {
                    event_pt = pt;
                }
            }
        }
    }
    let (port, pts) = audio.ok_or(SdpError::NoAudio)?;
    if port == 0 {
        return Err(SdpError::Rejected);
    }
    let ip = media_c.or(session_c).ok_or(SdpError::NoConnection)?;
    let audio_pt = pts
        .iter()
        .copied()
        .find(|p| *p == 0 || *p == 8)
        .ok_or(SdpError::NoCodec)?;
    // Static-free answers without rtpmap for the event: keep the offered number if listed.
    let event_pt = event_pt.or_else(|| pts.contains(&OFFER_EVENT_PT).then_some(OFFER_EVENT_PT));
    Ok(MediaParams {
        remote: SocketAddr::new(ip, port),
        audio_pt,
        event_pt,
    })
}
