//! From a requested file name (`GET /fs/dm/prov/{file}`) to a typed request.
//!
//! A phone tells us who it is mostly through the name of the file it asks for: `0004f2abcdef.cfg`,
//! `spa001122aabbcc.xml`, `snomD785-000413aabbcc.htm`, or a vendor's common file such as Polycom's
//! `000000000000.cfg` or a factory Cisco SPA's `spa504G.cfg` (`spa$PSN.cfg`). The patterns come
//! from the vendor table (data), so this module knows no vendor by name; it only matches `{mac}` /
//! `{model}` / `{hw}` placeholders.
//!
//! Two failure classes are kept apart because the route answers them differently: a name that
//! tries to leave the provisioning directory (`..`, separators, NUL, also after one more round of
//! percent-decoding) is an attack or a broken client → 400; a well-behaved name we simply do not
//! serve → 404. Neither ever creates a device.

use super::file_pattern::is_traversal;
use super::mac::Mac;
use super::vendor::VendorTable;

/// A recognised file request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRequest {
    /// A phone's own file; `vendor_hint` set when the pattern is unique to one vendor (spa…,
    /// cfg….xml, {model}-{mac}.htm), `candidates` lists the vendors whose patterns matched (e.g.
    /// polycom, yealink, audiocodes for {mac}.cfg), in table order.
    PerPhone {
        mac: Mac,
        /// Template kind, e.g. "phone" or "phone-htm".
        kind: String,
        vendor_hint: Option<String>,
        candidates: Vec<String>,
        /// The model when the file name carries one (`{model}-{mac}.htm`), as the phone spelled it.
        model: Option<String>,
    },
    /// A vendor's common/master file (Polycom 000000000000.cfg, Yealink y0000000000XX.cfg,
    /// Cisco SPA's factory `spa{model}.cfg`): served to anyone, never per-phone data.
    Common {
        vendor: String,
        kind: String,
        /// Yealink's hardware code (2 or 3 digits; `00` for the all-models file), when the
        /// pattern has `{hw}`.
        hw_code: Option<String>,
        /// The model as the file name spells it, when the pattern has `{model}` (Cisco's
        /// `$PSN`: `504G` in `spa504G.cfg`).
        model: Option<String>,
    },
}

/// Why a file name is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileNameError {
    /// The name tries to escape the provisioning directory.
    #[error("path traversal in requested file name")]
    Traversal,
    /// Not a file name any vendor asks for (or a malformed MAC).
    #[error("unknown provisioning file name")]
    Unknown,
}

impl FileNameError {
    /// The HTTP status the provisioning route answers with.
    pub fn http_status(self) -> u16 {
        match self {
            FileNameError::Traversal => 400,
            FileNameError::Unknown => 404,
        }
    }
}

/// No vendor's file name is anywhere near this long; longer input is refused before matching.
const MAX_NAME_LEN: usize = 255;

/// Parses a file name that the HTTP layer has already percent-decoded once.
pub fn parse_file_name(
    raw_percent_decoded: &str,
    table: &VendorTable,
) -> Result<FileRequest, FileNameError> {
    let name = raw_percent_decoded;
    if is_traversal(name) {
        return Err(FileNameError::Traversal);
    }
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(FileNameError::Unknown);
    }

    // Common files first: they are literal names (or nearly), and `000000000000.cfg` must never
    // fall through to a `{mac}.cfg` pattern (Mac refuses it anyway). A `{model}` that is spelled
    // like a MAC (`spa0004f2abcdef.cfg`) is the per-phone file, not a model's common file.
    for v in table.vendors() {
        for f in &v.common_files {
            if let Some(c) = f.compiled.matches(name) {
                if c.model.as_deref().is_some_and(looks_like_mac) {
                    continue;
                }
                return Ok(FileRequest::Common {
                    vendor: v.name.clone(),
                    kind: f.kind.clone(),
                    hw_code: c.hw,
                    model: c.model,
                });
            }
        }
    }

    let mut found: Option<(Mac, String, Option<String>)> = None;
    let mut candidates = Vec::new();
    for v in table.vendors() {
        for f in &v.phone_files {
            let Some(c) = f.compiled.matches(name) else {
                continue;
            };
            let Some(mac) = c.mac else { continue };
            // A model in the name must be one of this vendor's, so `foo-0004f2abcdef.htm` is not
            // mistaken for a snom request.
            if let Some(model) = &c.model {
                if !v.accepts_model(model) {
                    continue;
                }
            }
            if found.is_none() {
                found = Some((mac, f.kind.clone(), c.model));
            }
            candidates.push(v.name.clone());
            break;
        }
    }
    let (mac, kind, model) = found.ok_or(FileNameError::Unknown)?;
    let vendor_hint = match candidates.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    };
    Ok(FileRequest::PerPhone {
        mac,
        kind,
        vendor_hint,
        candidates,
        model,
    })
}

/// Twelve hex digits: what a bare MAC looks like in a file name.
fn looks_like_mac(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> Result<FileRequest, FileNameError> {
        parse_file_name(name, &VendorTable::builtin())
    }

    fn mac() -> Mac {
        Mac::parse("0004f2abcdef").unwrap()
    }

    fn per_phone(name: &str) -> (Mac, String, Option<String>, Vec<String>, Option<String>) {
        match parse(name) {
            Ok(FileRequest::PerPhone {
                mac,
                kind,
                vendor_hint,
                candidates,
                model,
            }) => (mac, kind, vendor_hint, candidates, model),
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn plain_mac_cfg_in_every_spelling() {
        for name in [
            "0004f2abcdef.cfg",
            "0004F2ABCDEF.cfg",
            "0004F2ABCDEF.CFG",
            "00:04:f2:ab:cd:ef.cfg",
            "00-04-F2-AB-CD-EF.cfg",
            "0004.f2ab.cdef.cfg",
        ] {
            let (m, kind, hint, cands, model) = per_phone(name);
            assert_eq!(m, mac(), "{name}");
            assert_eq!(kind, "phone");
            assert_eq!(hint, None);
            assert_eq!(cands, ["polycom", "yealink", "audiocodes"]);
            assert_eq!(model, None);
        }
    }

    #[test]
    fn every_vendor_file_name_form() {
        let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            ("0004f2abcdef-phone.cfg", "settings", Some("polycom"), None),
            ("0004F2ABCDEF-PHONE.cfg", "settings", Some("polycom"), None),
            ("spa0004f2abcdef.cfg", "phone", Some("cisco"), None),
            ("SPA0004F2ABCDEF.xml", "phone", Some("cisco"), None),
            ("spa00:04:f2:ab:cd:ef.xml", "phone", Some("cisco"), None),
            ("cfg0004f2abcdef.xml", "phone", Some("grandstream"), None),
            ("cfg0004F2ABCDEF.XML", "phone", Some("grandstream"), None),
            ("0004f2abcdef.xml", "phone", Some("snom"), None),
            (
                "snomD785-0004f2abcdef.htm",
                "phone-htm",
                Some("snom"),
                Some("snomD785"),
            ),
            (
                "snom370-0004F2ABCDEF.htm",
                "phone-htm",
                Some("snom"),
                Some("snom370"),
            ),
            (
                "snom370-00-04-f2-ab-cd-ef.htm",
                "phone-htm",
                Some("snom"),
                Some("snom370"),
            ),
        ];
        for (name, kind, hint, model) in cases {
            let (m, k, h, cands, md) = per_phone(name);
            assert_eq!(m, mac(), "{name}");
            assert_eq!(&k, kind, "{name}");
            assert_eq!(h.as_deref(), *hint, "{name}");
            assert_eq!(cands, [hint.unwrap()], "{name}");
            assert_eq!(md.as_deref(), *model, "{name}");
        }
    }

    fn common(vendor: &str, kind: &str, hw: Option<&str>, model: Option<&str>) -> FileRequest {
        FileRequest::Common {
            vendor: vendor.into(),
            kind: kind.into(),
            hw_code: hw.map(Into::into),
            model: model.map(Into::into),
        }
    }

    #[test]
    fn common_files() {
        assert_eq!(
            parse("000000000000.cfg"),
            Ok(common("polycom", "master", None, None))
        );
        assert_eq!(
            parse("y000000000066.cfg"),
            Ok(common("yealink", "common", Some("66"), None))
        );
        for (name, hw) in [("y000000000124.cfg", "124"), ("y000000000000.cfg", "00")] {
            assert_eq!(
                parse(name),
                Ok(common("yealink", "common", Some(hw), None)),
                "{name}"
            );
        }
        assert_eq!(
            parse("Y000000000028.CFG"),
            Ok(common("yealink", "common", Some("28"), None))
        );
    }

    /// A factory SPA asks for `spa$PSN.cfg`; a name whose "model" is spelled like a MAC is the
    /// per-phone file instead.
    #[test]
    fn cisco_factory_file_by_model() {
        for (name, model) in [
            ("spa504G.cfg", "504G"),
            ("spa525G2.cfg", "525G2"),
            ("SPA942.cfg", "942"),
        ] {
            assert_eq!(
                parse(name),
                Ok(common("cisco", "factory", None, Some(model))),
                "{name}"
            );
        }
        let (m, kind, hint, ..) = per_phone("spa0004f2abcdef.cfg");
        assert_eq!(
            (m, kind.as_str(), hint.as_deref()),
            (mac(), "phone", Some("cisco"))
        );
        assert_eq!(parse("spa504G.xml"), Err(FileNameError::Unknown));
    }

    #[test]
    fn garbage_is_unknown() {
        for name in [
            "",
            "index.html",
            "favicon.ico",
            "0004f2abcde.cfg",
            "0004f2abcdefa.cfg",
            "0004f2abcdeg.cfg",
            "0004f2abcdef",
            "0004f2abcdef.cfgx",
            "0004f2abcdef.txt",
            "ffffffffffff.cfg",
            "010203040506.cfg",
            "00:00:00:00:00:00.xml",
            "spa.cfg",
            "spa000000000000.cfg",
            "foo-0004f2abcdef.htm",
            "-0004f2abcdef.htm",
            "y00000000006.cfg",
            "y0000000000ab.cfg",
            "y0000000000666.cfg",
            "y00000000012.cfg",
            "y00000000006a.cfg",
            "y0000000001234.cfg",
            "0004f2abcdef.cfg ",
            " 0004f2abcdef.cfg",
            "0004f2abcdef.cfg%00",
            "%2e%2f",
            "0004f2abcdéf.cfg",
            "ＶＶＸ.cfg",
        ] {
            let r = parse(name);
            assert!(r.is_err(), "{name:?}: {r:?}");
        }
        let long = "a".repeat(10_000) + ".cfg";
        assert_eq!(parse(&long), Err(FileNameError::Unknown));
        let long_model = "snom".to_string() + &"1".repeat(100) + "-0004f2abcdef.htm";
        assert_eq!(parse(&long_model), Err(FileNameError::Unknown));
    }

    #[test]
    fn traversal_is_flagged_apart_from_unknown() {
        for name in [
            "..",
            "../0004f2abcdef.cfg",
            "../../etc/passwd",
            "/etc/passwd",
            "..\\..\\windows\\win.ini",
            "%2e%2e",
            "%2E%2E%2Fetc%2Fpasswd",
            "%2fetc%2fpasswd",
            "0004f2abcdef.cfg\0",
            "0004f2abcdef\0.cfg",
            "templates/polycom/phone.cfg",
            "0004f2abcdef..cfg",
        ] {
            assert_eq!(parse(name), Err(FileNameError::Traversal), "{name:?}");
        }
        assert_eq!(FileNameError::Traversal.http_status(), 400);
        assert_eq!(FileNameError::Unknown.http_status(), 404);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }

        #[test]
        fn any_device_mac_cfg_is_recognised(o in proptest::prelude::any::<[u8; 6]>()) {
            let mut o = o;
            o[0] &= 0xfe;
            o[1] |= 0x01; // never all-zero
            let m = Mac::try_from(o).unwrap();
            let (got, ..) = per_phone(&format!("{}.cfg", m.colon()));
            proptest::prop_assert_eq!(got, m);
        }
    }
}
