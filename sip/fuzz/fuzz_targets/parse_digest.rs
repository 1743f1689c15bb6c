//! Authorization header parsing and response computation. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::auth::DigestResponse;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(d) = DigestResponse::parse(s) {
            let _ = d.expected("REGISTER", "0123456789abcdef0123456789abcdef");
            let _ = d.nc_value();
        }
    }
});
