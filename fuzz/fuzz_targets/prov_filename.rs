//! The provisioning file-name parser with the built-in vendor table.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sipdm::provisioning::filename::{parse_file_name, FileRequest};
use sipdm::provisioning::mac::Mac;
use sipdm::provisioning::vendor::VendorTable;

fn table() -> &'static VendorTable {
    static T: OnceLock<VendorTable> = OnceLock::new();
    T.get_or_init(VendorTable::builtin)
}

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let t = table();
    let r = parse_file_name(name, t);
    if let Ok(req) = &r {
        // Longer names are refused before matching.
        assert!(!name.is_empty() && name.len() <= 255);
        // Nothing is served for a name containing `..` or a separator.
        assert!(!name.contains(".."), "served {name:?}");
        assert!(!name.contains('/') && !name.contains('\\'), "served {name:?}");
        assert!(!name.contains('\0'), "served {name:?}");
        match req {
            FileRequest::PerPhone { mac, candidates, .. } => {
                assert_eq!(Mac::parse(&mac.to_string()).as_ref(), Ok(mac));
                assert!(!candidates.is_empty());
                for c in candidates {
                    assert!(t.get(c).is_some(), "unknown vendor {c}");
                }
            }
            FileRequest::Common { vendor, .. } => {
                assert!(t.get(vendor).is_some(), "unknown vendor {vendor}");
            }
        }
    }
    // Deterministic.
    assert_eq!(r, parse_file_name(name, t));
});
