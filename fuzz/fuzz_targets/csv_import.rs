//! The device-import CSV parser (`mac,model,profile,dn` lines).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sipdm::provisioning::mac::Mac;
use sipdm::provisioning::vendor::VendorTable;
use sipdm::service::parse_import;

fn table() -> &'static VendorTable {
    static T: OnceLock<VendorTable> = OnceLock::new();
    T.get_or_init(VendorTable::builtin)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (lines, errors) = parse_import(text, table());
    for l in &lines {
        assert!(l.line >= 1);
        // The MAC is stored in its canonical spelling.
        let mac = Mac::parse(&l.device.mac).expect("an accepted line's MAC parses");
        assert_eq!(mac.to_string(), l.device.mac);
        if let Some(dn) = &l.device.dn {
            assert!(!dn.is_empty() && dn.bytes().all(|b| b.is_ascii_digit()));
        }
    }
    for (line, _) in &errors {
        assert!(*line >= 1);
    }
});
