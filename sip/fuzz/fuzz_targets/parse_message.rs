//! Whole-message parsing as the endpoint does it: datagram, stream framing, and the typed
//! header reads that follow. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::headers::{ContactList, MessageExt};
use sip::wire::framing::{Framed, StreamFramer};
use sip::wire::{normalise, parse_datagram};

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = normalise(data) {
        let _ = sip::wire::reply::error_response(&raw, 400, "Bad Request", "sipdm");
    }
    if let Ok(m) = parse_datagram(data, 65_535) {
        let _ = m.top_via();
        let _ = m.cseq();
        let _ = ContactList::parse(m.header_values("Contact"));
        for n in ["From", "To"] {
            if let Some(v) = m.header_value(n) {
                let _ = sip::headers::NameAddr::parse(v);
            }
        }
    }
    let mut f = StreamFramer::new(4096);
    f.buffer().extend_from_slice(data);
    for _ in 0..16 {
        match f.next_frame() {
            Ok(Framed::Message(_)) | Ok(Framed::KeepAlive { .. }) => continue,
            _ => break,
        }
    }
});
