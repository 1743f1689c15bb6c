//! The digest parsers: Authorization / Proxy-Authorization (`DigestResponse::parse`) and
//! WWW-Authenticate / Proxy-Authenticate (`DigestChallenge::parse`), plus what is computed from
//! a parsed value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip::auth::digest::{Algorithm, DigestChallenge, DigestResponse};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(d) = DigestResponse::parse(s) {
        let _ = d.algorithm();
        let _ = d.nc_value();
        let _ = d.expected("REGISTER", "0123456789abcdef0123456789abcdef");
    }

    if let Ok(c) = DigestChallenge::parse(s) {
        if let Ok(v) = c.answer("NOTIFY", "sip:1000@192.0.2.1", "u", "p", 1, "cn") {
            // The answer is built with quoted values; when the challenge's values need no
            // escaping it must parse back and verify.
            let plain = |t: &str| t.bytes().all(|b| b.is_ascii_alphanumeric());
            if plain(&c.realm) && plain(&c.nonce) && c.opaque.as_deref().is_none_or(plain) {
                let d = DigestResponse::parse(&v).expect("our own answer parses");
                let alg = d.algorithm().expect("our own algorithm");
                let ha1 = alg.base().hash(&["u", &c.realm, "p"]);
                let _ = Algorithm::parse(alg.as_str()).expect("algorithm name round-trips");
                assert_eq!(d.realm, c.realm);
                assert_eq!(d.nonce, c.nonce);
                assert_eq!(d.expected("NOTIFY", &ha1).expect("verifiable"), d.response);
            }
        }
    }
});
