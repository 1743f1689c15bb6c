//! The SIP message parser: a datagram's bytes to an rsip request or response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::rsip::SipMessage;
use sip::wire::encode::{encode_request, encode_response};
use sip::wire::normalise::salvage;
use sip::wire::parse::{parse_bytes, parse_datagram};
use sip::wire::WireError;

/// A size limit below most inputs' length, so the TooLarge branch is exercised too.
const LIMIT: usize = 1300;

fuzz_target!(|data: &[u8]| {
    // No size limit: the parser proper on every input.
    if let Ok(msg) = parse_bytes(data) {
        // Printing what was parsed must not panic either.
        match &msg {
            SipMessage::Request(r) => drop(encode_request(r)),
            SipMessage::Response(r) => drop(encode_response(r)),
        }
    }

    // The datagram limit is checked before anything else.
    let limited = parse_datagram(data, LIMIT);
    if data.len() > LIMIT {
        assert!(
            matches!(limited, Err(WireError::TooLarge { .. })),
            "a datagram over the limit was not refused as too large"
        );
    }

    // What the UDP path uses to answer a message that did not parse.
    let _ = salvage(data);
});
