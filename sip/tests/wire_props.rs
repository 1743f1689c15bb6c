//! Property tests of the wire layer: generated messages, written in any of the awkward forms
//! phones use, parse to the same thing, and print/parse round-trips; arbitrary bytes never
//! panic.

use proptest::prelude::*;
use sip::headers::{name_value, MessageExt};
use sip::rsip::SipMessage;
use sip::wire::framing::{Framed, StreamFramer};
use sip::wire::parse::parse_bytes;
use sip::wire::{encode_request, encode_response, parse_datagram};

#[derive(Debug, Clone)]
struct Msg {
    request: bool,
    method: &'static str,
    code: u16,
    user: String,
    host: String,
    headers: Vec<(&'static str, &'static str, String)>, // (full, compact, value)
    body: Vec<u8>,
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.\\-_]{0,12}"
}

fn msg() -> impl Strategy<Value = Msg> {
    let methods = prop::sample::select(vec![
        "REGISTER", "INVITE", "OPTIONS", "NOTIFY", "BYE", "MESSAGE",
    ]);
    (
        any::<bool>(),
        methods,
        100u16..700,
        token(),
        token(),
        prop::collection::vec(token(), 5),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(request, method, code, user, host, v, body)| Msg {
            request,
            method,
            code,
            headers: vec![
                (
                    "Via",
                    "v",
                    format!("SIP/2.0/UDP {}:5060;branch=z9hG4bK{}", host, v[0]),
                ),
                ("From", "f", format!("<sip:{}@{}>;tag={}", user, host, v[1])),
                ("To", "t", format!("<sip:{}@{}>", user, host)),
                ("Call-ID", "i", v[2].clone()),
                ("CSeq", "", format!("7 {}", method)),
                (
                    "Contact",
                    "m",
                    format!("<sip:{}@{}:5062>;expires=60", user, v[3]),
                ),
                ("Subject", "s", v[4].clone()),
            ],
            user,
            host,
            body,
        })
}

/// Writes a message with the chosen quirks.
fn render(m: &Msg, compact: bool, bare_lf: bool, space_colon: bool, fold: bool) -> Vec<u8> {
    let nl = if bare_lf { "\n" } else { "\r\n" };
    let mut s = if m.request {
        format!("{} sip:{}@{} SIP/2.0{nl}", m.method, m.user, m.host)
    } else {
        format!("SIP/2.0 {} Whatever{nl}", m.code)
    };
    for (full, short, value) in &m.headers {
        let name = if compact && !short.is_empty() {
            short
        } else {
            full
        };
        let sep = if space_colon { " : " } else { ": " };
        if fold && *full == "Subject" {
            s.push_str(&format!("{name}{sep}x{nl} {value}{nl}"));
        } else {
            s.push_str(&format!("{name}{sep}{value}{nl}"));
        }
    }
    let l = if compact { "l" } else { "Content-Length" };
    s.push_str(&format!("{l}: {}{nl}{nl}", m.body.len()));
    let mut out = s.into_bytes();
    out.extend_from_slice(&m.body);
    out
}

fn summary(m: &SipMessage) -> (Vec<(String, String)>, Vec<u8>, String) {
    let headers = m
        .headers()
        .iter()
        .map(name_value)
        .filter(|(n, _)| *n != "Content-Length")
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let start = match m {
        SipMessage::Request(r) => format!("{} {}", r.method, r.uri),
        SipMessage::Response(r) => r.status_code.code().to_string(),
    };
    (headers, m.body().clone(), start)
}

use sip::rsip::message::HasHeaders;

proptest! {
    #[test]
    fn quirky_forms_parse_like_the_plain_form(m in msg(), compact: bool, bare_lf: bool, space_colon: bool) {
        let plain = parse_bytes(&render(&m, false, false, false, false)).unwrap();
        let quirky = parse_bytes(&render(&m, compact, bare_lf, space_colon, false)).unwrap();
        prop_assert_eq!(summary(&plain), summary(&quirky));
        prop_assert_eq!(plain.call_id(), Some(m.headers[3].2.as_str()));
    }

    #[test]
    fn print_parse_round_trip(m in msg(), compact: bool, fold: bool) {
        let parsed = parse_bytes(&render(&m, compact, false, false, fold)).unwrap();
        let printed = match &parsed {
            SipMessage::Request(r) => encode_request(r),
            SipMessage::Response(r) => encode_response(r),
        };
        let again = parse_bytes(&printed).unwrap();
        prop_assert_eq!(summary(&parsed), summary(&again));
        if fold {
            let subject = parsed.header_value("Subject").unwrap().to_string();
            prop_assert_eq!(subject, format!("x {}", m.headers[6].2));
        }
    }

    #[test]
    fn stream_framing_any_split(m in msg(), split in 0usize..400) {
        let bytes = render(&m, true, false, false, false);
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        let cut = split.min(twice.len());
        let mut f = StreamFramer::new(65535);
        f.buffer().extend_from_slice(&twice[..cut]);
        let mut got = Vec::new();
        while let Ok(Framed::Message(b)) = f.next_frame() { got.push(b); }
        f.buffer().extend_from_slice(&twice[cut..]);
        while let Ok(Framed::Message(b)) = f.next_frame() { got.push(b); }
        prop_assert_eq!(got.len(), 2);
        prop_assert_eq!(&got[0][..], &bytes[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_datagram(&data, 65535);
        let mut f = StreamFramer::new(1024);
        f.buffer().extend_from_slice(&data);
        for _ in 0..8 { if !matches!(f.next_frame(), Ok(Framed::Message(_)) | Ok(Framed::KeepAlive { .. })) { break; } }
    }

    #[test]
    fn mutated_messages_never_panic(m in msg(), pos in any::<prop::sample::Index>(), byte: u8) {
        let mut bytes = render(&m, true, true, true, true);
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = parse_datagram(&bytes, 65535);
        if let Ok(SipMessage::Request(r)) = parse_datagram(&bytes, 65535) {
            let _ = r.top_via();
            let _ = r.cseq();
            let _ = sip::headers::ContactList::parse(r.header_values("Contact"));
        }
    }
}
