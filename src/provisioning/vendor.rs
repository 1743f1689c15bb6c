//! The vendor table: everything sipdm knows about a phone family, loaded from data.
//!
//! Vendor knowledge is data (shared/STYLE.md, guideline 10): the file names a phone asks for,
//! how to recognise it from its User-Agent, the content type it expects, which SIP event makes it
//! re-fetch or reboot, and which template renders each of its files all live in
//! `config/vendors.toml`. That file is compiled into the binary so a bare `sipdm serve` knows
//! every shipped vendor; an operator file of the same shape may replace entries (by name) or add
//! new vendors without a rebuild. This module only loads, validates and answers lookups; it
//! contains no per-vendor branches.
//!
//! Everything is validated at load time (patterns, regular expressions, template paths, kinds)
//! so that a bad table is refused when sipdm starts, not when the first phone of that vendor
//! boots.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;

use super::file_pattern::Pattern;
use super::mac::Mac;

/// The table shipped with sipdm.
const BUILTIN_TOML: &str = include_str!("../../config/vendors.toml");

/// Why a vendor table was refused.
#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    /// The TOML itself is malformed or has unknown keys (the message names the line).
    #[error("vendor table: {0}")]
    Toml(#[from] toml::de::Error),
    /// The TOML parsed but an entry makes no sense.
    #[error("vendor table: vendor {vendor:?}: {reason}")]
    Invalid { vendor: String, reason: String },
    /// The operator's table file could not be read.
    #[error("vendor table {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a template's output is escaped: decides what an interpolated value may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateFormat {
    /// XML (attributes and text): `& < > " '` become entities, control characters are dropped.
    Xml,
    /// `key = value` lines: line breaks and other control characters become spaces, so a
    /// display name can never smuggle in a second key.
    Kv,
}

/// Which template renders one kind of file, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Path relative to `config/templates/{vendor}/`.
    pub file: String,
    pub format: TemplateFormat,
    /// Overrides the vendor's content type for this kind of file.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// One file-name pattern (`{mac}.cfg`, `y0000000000{hw}.cfg`) and the template kind it serves.
#[derive(Debug, Clone)]
pub struct FilePattern {
    pub pattern: String,
    pub kind: String,
    pub(crate) compiled: Pattern,
}

/// One phone family.
#[derive(Debug, Clone)]
pub struct Vendor {
    pub name: String,
    pub display_name: String,
    pub content_type: String,
    pub check_sync_event: String,
    pub reboot_event: String,
    pub user_agents: Vec<String>,
    pub model_prefixes: Vec<String>,
    pub phone_files: Vec<FilePattern>,
    pub common_files: Vec<FilePattern>,
    pub templates: BTreeMap<String, TemplateSpec>,
    /// The kind of per-phone file that carries the line's settings: what the console shows
    /// an operator as "the phone's file" (Polycom's `{mac}.cfg` is only a master naming it).
    pub settings_kind: String,
    ua_lower: Vec<String>,
    ua_regex: Vec<Regex>,
}

impl Vendor {
    /// The template spec for a kind of file, if this vendor has one.
    pub fn template(&self, kind: &str) -> Option<&TemplateSpec> {
        self.templates.get(kind)
    }

    /// The Content-Type to answer with for a kind of file.
    pub fn content_type_for(&self, kind: &str) -> &str {
        self.template(kind)
            .and_then(|t| t.content_type.as_deref())
            .unwrap_or(&self.content_type)
    }

    /// Does the User-Agent name this vendor (case-insensitive substring)?
    fn ua_matches(&self, ua_lower: &str) -> bool {
        self.ua_lower.iter().any(|p| ua_lower.contains(p.as_str()))
    }

    /// Does `model` start with one of this vendor's prefixes? Returns the prefix length.
    fn model_prefix_len(&self, model: &str) -> Option<usize> {
        self.model_prefixes
            .iter()
            .filter(|p| starts_with_ignore_case(model, p))
            .map(|p| p.len())
            .max()
    }

    /// True when the vendor declares no model prefixes or `model` starts with one of them.
    pub(crate) fn accepts_model(&self, model: &str) -> bool {
        self.model_prefixes.is_empty() || self.model_prefix_len(model).is_some()
    }
}

/// What a User-Agent told us about the phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UaMatch {
    pub vendor: String,
    pub model: Option<String>,
    /// Set when the vendor puts the MAC in its User-Agent (Yealink, Cisco SPA, Polycom over
    /// HTTP): lets the server cross-check the MAC in the requested file name.
    pub mac: Option<Mac>,
    pub firmware: Option<String>,
}

/// The validated vendor table, in file order (order decides User-Agent precedence).
#[derive(Debug, Clone)]
pub struct VendorTable {
    vendors: Vec<Vendor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    vendor: Vec<RawVendor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVendor {
    name: String,
    display_name: String,
    content_type: String,
    check_sync_event: String,
    reboot_event: String,
    #[serde(default)]
    user_agents: Vec<String>,
    #[serde(default)]
    ua_regex: Vec<String>,
    #[serde(default)]
    model_prefixes: Vec<String>,
    #[serde(default)]
    phone_files: Vec<RawFile>,
    #[serde(default)]
    common_files: Vec<RawFile>,
    #[serde(default)]
    templates: BTreeMap<String, TemplateSpec>,
    #[serde(default)]
    settings_kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    pattern: String,
    kind: String,
}

impl VendorTable {
    /// The table compiled into the binary.
    pub fn builtin() -> VendorTable {
        static BUILTIN: OnceLock<VendorTable> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                // The embedded file is validated by this module's tests; failing here would
                // mean a broken build, not bad input.
                VendorTable::from_toml(BUILTIN_TOML).expect("embedded config/vendors.toml is valid")
            })
            .clone()
    }

    /// Parses and validates a complete table.
    pub fn from_toml(s: &str) -> Result<Self, VendorError> {
        let raw: RawTable = toml::from_str(s)?;
        let mut vendors = Vec::with_capacity(raw.vendor.len());
        for rv in raw.vendor {
            let v = Vendor::from_raw(rv)?;
            if vendors.iter().any(|o: &Vendor| o.name == v.name) {
                return Err(invalid(&v.name, "defined twice"));
            }
            vendors.push(v);
        }
        let table = VendorTable { vendors };
        table.check_shared_patterns()?;
        Ok(table)
    }

    /// The builtin table, with an operator's file (same shape) merged over it: an entry with a
    /// builtin vendor's name replaces that vendor, any other entry is added after the builtins.
    pub fn load(operator_file: Option<&Path>) -> Result<Self, VendorError> {
        let mut table = Self::builtin();
        if let Some(path) = operator_file {
            let text = std::fs::read_to_string(path).map_err(|source| VendorError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            table.merge(Self::from_toml(&text)?)?;
        }
        Ok(table)
    }

    /// Merges `other` over `self` (replace by name, append new) and re-validates; on error
    /// `self` is left as it was.
    pub fn merge(&mut self, other: VendorTable) -> Result<(), VendorError> {
        let mut merged = self.vendors.clone();
        for v in other.vendors {
            match merged.iter_mut().find(|o| o.name == v.name) {
                Some(slot) => *slot = v,
                None => merged.push(v),
            }
        }
        let merged = VendorTable { vendors: merged };
        merged.check_shared_patterns()?;
        *self = merged;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Vendor> {
        self.vendors.iter().find(|v| v.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vendors.iter().map(|v| v.name.as_str())
    }

    pub fn vendors(&self) -> impl Iterator<Item = &Vendor> {
        self.vendors.iter()
    }

    /// Identifies the vendor, and where the User-Agent says so the model, firmware and MAC.
    /// The first vendor (in table order) with a matching substring wins.
    pub fn match_user_agent(&self, ua: &str) -> Option<UaMatch> {
        let lower = ua.to_ascii_lowercase();
        let v = self.vendors.iter().find(|v| v.ua_matches(&lower))?;
        let mut m = UaMatch {
            vendor: v.name.clone(),
            model: None,
            mac: None,
            firmware: None,
        };
        for re in &v.ua_regex {
            let Some(c) = re.captures(ua) else { continue };
            if m.model.is_none() {
                m.model = c.name("model").map(|x| x.as_str().to_string());
            }
            if m.firmware.is_none() {
                m.firmware = c.name("firmware").map(|x| x.as_str().to_string());
            }
            if m.mac.is_none() {
                // A group address or garbage in the UA is ignored, not an error: the UA is
                // advisory, the file name is authoritative.
                m.mac = c.name("mac").and_then(|x| Mac::parse(x.as_str()).ok());
            }
        }
        Some(m)
    }

    /// The vendor whose model prefix is the longest (case-insensitive) prefix of `model`.
    pub fn vendor_for_model(&self, model: &str) -> Option<&Vendor> {
        let mut best: Option<(usize, &Vendor)> = None;
        for v in &self.vendors {
            if let Some(len) = v.model_prefix_len(model) {
                // (not `Option::is_none_or`: the workspace supports Rust 1.80)
                match best {
                    Some((b, _)) if b >= len => {}
                    _ => best = Some((len, v)),
                }
            }
        }
        best.map(|(_, v)| v)
    }

    /// Several vendors may share a file name (`{mac}.cfg`); they must then agree on its kind,
    /// because a request for that name is answered before we know which vendor is asking.
    fn check_shared_patterns(&self) -> Result<(), VendorError> {
        let mut seen: HashMap<String, (&str, &str)> = HashMap::new();
        for v in &self.vendors {
            for f in v.phone_files.iter().chain(&v.common_files) {
                let key = f.pattern.to_ascii_lowercase();
                match seen.get(&key) {
                    Some((other, kind)) if *kind != f.kind => {
                        return Err(invalid(
                            &v.name,
                            format!(
                                "file pattern {:?} has kind {:?} here but {:?} in vendor {:?}",
                                f.pattern, f.kind, kind, other
                            ),
                        ))
                    }
                    _ => {
                        seen.insert(key, (&v.name, &f.kind));
                    }
                }
            }
        }
        Ok(())
    }
}

fn invalid(vendor: &str, reason: impl Into<String>) -> VendorError {
    VendorError::Invalid {
        vendor: vendor.to_string(),
        reason: reason.into(),
    }
}

/// Vendor names and kinds become directory names and template names: keep them tame.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A template path must stay inside the vendor's template directory.
fn is_safe_relative_path(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('/')
        && !s.contains('\\')
        && !s.contains('\0')
        && s.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

impl Vendor {
    fn from_raw(r: RawVendor) -> Result<Vendor, VendorError> {
        let name = r.name;
        if !is_identifier(&name) {
            return Err(invalid(
                &name,
                "name must be lowercase letters, digits, '-' or '_'",
            ));
        }
        for (field, value) in [
            ("content_type", &r.content_type),
            ("check_sync_event", &r.check_sync_event),
            ("reboot_event", &r.reboot_event),
        ] {
            if value.trim().is_empty() || value.chars().any(|c| c.is_control()) {
                return Err(invalid(
                    &name,
                    format!("{field} must be a non-empty single line"),
                ));
            }
        }
        if r.user_agents.iter().any(|u| u.is_empty()) {
            return Err(invalid(
                &name,
                "empty User-Agent pattern would match every phone",
            ));
        }
        if r.model_prefixes.iter().any(|p| p.is_empty()) {
            return Err(invalid(&name, "empty model prefix would match every model"));
        }
        let mut ua_regex = Vec::with_capacity(r.ua_regex.len());
        for src in &r.ua_regex {
            let re =
                Regex::new(src).map_err(|e| invalid(&name, format!("ua_regex {src:?}: {e}")))?;
            for group in re.capture_names().flatten() {
                if !matches!(group, "model" | "firmware" | "mac") {
                    return Err(invalid(
                        &name,
                        format!(
                            "ua_regex {src:?}: unknown group {group:?} (use model, firmware, mac)"
                        ),
                    ));
                }
            }
            ua_regex.push(re);
        }
        for (kind, spec) in &r.templates {
            if !is_identifier(kind) {
                return Err(invalid(
                    &name,
                    format!("template kind {kind:?} is not an identifier"),
                ));
            }
            if !is_safe_relative_path(&spec.file) {
                return Err(invalid(
                    &name,
                    format!(
                        "template file {:?} must be a relative path inside the vendor directory",
                        spec.file
                    ),
                ));
            }
        }
        let compile =
            |files: Vec<RawFile>, common: bool| -> Result<Vec<FilePattern>, VendorError> {
                files
                    .into_iter()
                    .map(|f| {
                        let compiled = Pattern::parse(&f.pattern, common).map_err(|e| {
                            invalid(&name, format!("file pattern {:?}: {e}", f.pattern))
                        })?;
                        if !r.templates.contains_key(&f.kind) {
                            return Err(invalid(
                                &name,
                                format!(
                                    "file pattern {:?} names kind {:?} with no template",
                                    f.pattern, f.kind
                                ),
                            ));
                        }
                        Ok(FilePattern {
                            pattern: f.pattern,
                            kind: f.kind,
                            compiled,
                        })
                    })
                    .collect()
            };
        let phone_files = compile(r.phone_files, false)?;
        let common_files = compile(r.common_files, true)?;
        if let Some(kind) = &r.settings_kind {
            if !phone_files.iter().any(|f| &f.kind == kind) {
                return Err(invalid(
                    &name,
                    format!("settings_kind {kind:?} is not the kind of any phone file"),
                ));
            }
        }
        let settings_kind = r.settings_kind.unwrap_or_else(|| "phone".to_owned());
        Ok(Vendor {
            ua_lower: r
                .user_agents
                .iter()
                .map(|u| u.to_ascii_lowercase())
                .collect(),
            name,
            display_name: r.display_name,
            content_type: r.content_type,
            check_sync_event: r.check_sync_event,
            reboot_event: r.reboot_event,
            user_agents: r.user_agents,
            model_prefixes: r.model_prefixes,
            phone_files,
            common_files,
            templates: r.templates,
            settings_kind,
            ua_regex,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> VendorTable {
        VendorTable::builtin()
    }

    #[test]
    fn builtin_has_the_six_vendors_with_their_events() {
        let t = t();
        let names: Vec<_> = t.names().collect();
        assert_eq!(
            names,
            [
                "polycom",
                "yealink",
                "cisco",
                "grandstream",
                "snom",
                "audiocodes"
            ]
        );
        let ev = |n: &str| {
            let v = t.get(n).unwrap();
            (v.check_sync_event.as_str(), v.reboot_event.as_str())
        };
        assert_eq!(ev("polycom").0, "check-sync");
        assert_eq!(
            ev("yealink"),
            ("check-sync;reboot=false", "check-sync;reboot=true")
        );
        assert_eq!(ev("cisco"), ("resync", "reboot_now"));
        assert_eq!(ev("grandstream").0, "resync");
        assert_eq!(ev("snom").0, "check-sync;reboot=false");
        assert_eq!(ev("audiocodes").0, "check-sync;reboot=false");
        assert!(t.get("nosuch").is_none());
    }

    #[test]
    fn every_file_kind_has_a_template_and_content_type() {
        for v in t().vendors() {
            for f in v.phone_files.iter().chain(&v.common_files) {
                assert!(v.template(&f.kind).is_some(), "{} {}", v.name, f.kind);
                assert!(!v.content_type_for(&f.kind).is_empty());
            }
        }
    }

    #[test]
    fn user_agents_of_real_phones() {
        let t = t();
        let m = t
            .match_user_agent("Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc")
            .unwrap();
        assert_eq!(m.vendor, "yealink");
        assert_eq!(m.model.as_deref(), Some("T46S"));
        assert_eq!(m.firmware.as_deref(), Some("66.86.0.15"));
        assert_eq!(m.mac, Some(Mac::parse("001565aabbcc").unwrap()));

        let m = t
            .match_user_agent("PolycomVVX-VVX_450-UA/6.3.0.14929")
            .unwrap();
        assert_eq!(m.vendor, "polycom");
        assert_eq!(m.model.as_deref(), Some("VVX_450"));
        assert_eq!(m.firmware.as_deref(), Some("6.3.0.14929"));
        assert_eq!(m.mac, None);

        let m = t
            .match_user_agent(
                "FileTransport PolycomVVX-VVX_410-UA/5.9.0.9373 (SN:0004f2e6d000) Type/Application",
            )
            .unwrap();
        assert_eq!(m.vendor, "polycom");
        assert_eq!(m.model.as_deref(), Some("VVX_410"));
        assert_eq!(m.mac, Some(Mac::parse("0004f2e6d000").unwrap()));

        let m = t
            .match_user_agent("Cisco/SPA504G-7.6.2c (001122AABBCC)(CCQ162512345)")
            .unwrap();
        assert_eq!(m.vendor, "cisco");
        assert_eq!(m.model.as_deref(), Some("SPA504G"));
        assert_eq!(m.firmware.as_deref(), Some("7.6.2c"));
        assert_eq!(m.mac, Some(Mac::parse("001122aabbcc").unwrap()));

        let m = t.match_user_agent("Linksys/SPA942-6.1.5(a)").unwrap();
        assert_eq!(m.vendor, "cisco");
        assert_eq!(m.model.as_deref(), Some("SPA942"));

        let m = t.match_user_agent("Grandstream GXP2170 1.0.9.135").unwrap();
        assert_eq!(
            (m.vendor.as_str(), m.model.as_deref()),
            ("grandstream", Some("GXP2170"))
        );
        let m = t
            .match_user_agent("Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 000b82aabbcc")
            .unwrap();
        assert_eq!(m.model.as_deref(), Some("GXP2170"));
        assert_eq!(m.firmware.as_deref(), Some("1.0.11.3"));
        assert_eq!(m.mac, Some(Mac::parse("000b82aabbcc").unwrap()));

        let m = t.match_user_agent("snomD785/10.1.33.33").unwrap();
        assert_eq!(
            (m.vendor.as_str(), m.model.as_deref()),
            ("snom", Some("snomD785"))
        );
        let m = t
            .match_user_agent("Mozilla/4.0 (compatible; snom370-SIP 8.7.5.35 1.1.3-s)")
            .unwrap();
        assert_eq!(
            (m.model.as_deref(), m.firmware.as_deref()),
            (Some("snom370"), Some("8.7.5.35"))
        );

        let m = t
            .match_user_agent("AUDC-IPPhone/3.4.4.1000 (440HD-Rev1; 00908F4A5B6C)")
            .unwrap();
        assert_eq!(m.vendor, "audiocodes");
        assert_eq!(m.model.as_deref(), Some("440HD"));
        assert_eq!(m.mac, Some(Mac::parse("00908f4a5b6c").unwrap()));
        assert_eq!(
            t.match_user_agent("Genesys 420HD").unwrap().vendor,
            "audiocodes"
        );

        // case-insensitive substrings
        assert_eq!(
            t.match_user_agent("YEALINK something").unwrap().vendor,
            "yealink"
        );
        assert_eq!(t.match_user_agent("curl/8.0"), None);
        assert_eq!(t.match_user_agent(""), None);
    }

    #[test]
    fn models_map_to_vendors() {
        let t = t();
        for (model, vendor) in [
            ("VVX_450", "polycom"),
            ("vvx411", "polycom"),
            ("SoundPointIP550", "polycom"),
            ("T46S", "yealink"),
            ("SIP-T54W", "yealink"),
            ("SPA504G", "cisco"),
            ("GXP2170", "grandstream"),
            ("GRP2614", "grandstream"),
            ("snomD785", "snom"),
            ("snom370", "snom"),
            ("420HD", "audiocodes"),
            ("445HD", "audiocodes"),
            ("450HD", "audiocodes"),
        ] {
            assert_eq!(
                t.vendor_for_model(model).map(|v| v.name.as_str()),
                Some(vendor),
                "{model}"
            );
        }
        assert!(t.vendor_for_model("XYZ100").is_none());
        assert!(t.vendor_for_model("").is_none());
    }

    const MINI: &str = r#"
[[vendor]]
name = "acme"
display_name = "Acme"
content_type = "text/plain"
check_sync_event = "check-sync"
reboot_event = "reboot"
user_agents = ["Acme"]
phone_files = [{ pattern = "acme{mac}.txt", kind = "phone" }]
templates.phone = { file = "phone.txt", format = "kv" }
"#;

    #[test]
    fn operator_table_adds_and_replaces() {
        let mut t = t();
        t.merge(VendorTable::from_toml(MINI).unwrap()).unwrap();
        assert_eq!(t.names().last(), Some("acme"));
        assert_eq!(t.match_user_agent("Acme/1.0").unwrap().vendor, "acme");

        let replaced = MINI.replace("acme", "yealink").replace("Acme", "Yealink");
        t.merge(VendorTable::from_toml(&replaced).unwrap()).unwrap();
        assert_eq!(t.names().filter(|n| *n == "yealink").count(), 1);
        assert_eq!(t.get("yealink").unwrap().reboot_event, "reboot");
    }

    #[test]
    fn operator_file_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vendors.toml");
        std::fs::write(&p, MINI).unwrap();
        assert!(VendorTable::load(Some(&p)).unwrap().get("acme").is_some());
        assert!(VendorTable::load(None).unwrap().get("acme").is_none());
        assert!(matches!(
            VendorTable::load(Some(&dir.path().join("missing.toml"))),
            Err(VendorError::Io { .. })
        ));
    }

    #[test]
    fn bad_tables_are_refused() {
        let bad = [
            MINI.replace("name = \"acme\"", "name = \"Acme Corp\""),
            MINI.replace("acme{mac}.txt", "acme.txt"),
            MINI.replace("acme{mac}.txt", "acme{mac}{mac}.txt"),
            MINI.replace("acme{mac}.txt", "../{mac}.txt"),
            MINI.replace("acme{mac}.txt", "{mac}.{bogus}"),
            MINI.replace("kind = \"phone\"", "kind = \"nokind\""),
            MINI.replace("phone.txt", "../../etc/passwd"),
            MINI.replace("phone.txt", "/etc/passwd"),
            MINI.replace("format = \"kv\"", "format = \"yaml\""),
            MINI.replace("user_agents = [\"Acme\"]", "user_agents = [\"\"]"),
            MINI.replace(
                "check_sync_event = \"check-sync\"",
                "check_sync_event = \"\"",
            ),
            MINI.replace("user_agents = [\"Acme\"]", "ua_regex = [\"(\"]"),
            MINI.replace("user_agents = [\"Acme\"]", "ua_regex = [\"(?P<serial>x)\"]"),
            MINI.replace("display_name", "display_nam"),
            format!("{MINI}\n{MINI}"),
            "not toml at all [".to_string(),
        ];
        for b in bad {
            assert!(VendorTable::from_toml(&b).is_err(), "accepted:\n{b}");
        }
        // a shared file name must keep one kind across vendors
        let clash = MINI
            .replace("acme{mac}.txt", "{mac}.cfg")
            .replace("kind = \"phone\"", "kind = \"cfg\"")
            .replace("templates.phone", "templates.cfg");
        let mut t = t();
        assert!(t.merge(VendorTable::from_toml(&clash).unwrap()).is_err());
    }
}
