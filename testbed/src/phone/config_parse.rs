//! Reading a configuration file the way each phone family reads it, into the few facts the
//! simulated phone acts on: where to register, as whom, with which password, which number the
//! hotline dials, where to re-fetch its files from, and what a check-sync makes it do.
//!
//! A file that leaves out what a real phone needs (a SIP server, a line user, the provisioning
//! URL, the hotline of an unassigned line) is an error naming the missing key: the simulated
//! phone never falls back on something it was told out of band. The files *before* the
//! settings (Polycom's master, Cisco's `spa$PSN.cfg`) are read by [`polycom_master`] and
//! [`cisco_profile_rule`]; [`super::chain`] walks them.
//!
//! The keys are the vendors' own (shared/VENDORS.md); the parser is checked against the text
//! sipdm's templates (config/templates/) render, so a template that drifts from what phones read
//! shows up as a failed simulated phone rather than as a silent success.

use std::collections::HashMap;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::vendor::Vendor;

/// SIP transport a registrar is reached over. The simulator itself speaks UDP only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// One SIP server the phone registers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registrar {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

/// How a phone with two registrars uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redundancy {
    /// Registers to every registrar at once (Polycom, Yealink type 0, snom failover identity,
    /// Cisco dual registration, Grandstream secondary server): the business-continuity setup.
    Concurrent,
    /// Registers to the first and moves to the next only when it fails (AudioCodes redundant
    /// proxy, Yealink redundancy type 1).
    Failover,
}

/// The user an unassigned phone's line registers as; such a line must have a hotline.
pub const PROVISIONING_USER: &str = "gcti_provisioning";

/// What a check-sync NOTIFY makes the phone do, as its file configures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSyncPolicy {
    /// The event decides: `reboot=true` / `reboot_now` reboot, anything else re-fetches (Yealink
    /// `sip.notify_reboot_enable = 0`, Cisco, Grandstream, snom).
    ByEvent,
    /// Re-fetches, and reboots only when a file changed (Polycom
    /// `voIpProt.SIP.specialEvent.checkSync.alwaysReboot = 0`, AudioCodes).
    RebootIfChanged,
    /// Reboots on every check-sync (Yealink `sip.notify_reboot_enable = 1`, its default;
    /// Polycom `…alwaysReboot = 1`).
    AlwaysReboot,
    /// Ignores check-sync (Yealink `sip.notify_reboot_enable = 2`, Cisco `Resync_From_SIP = No`).
    Ignore,
}

/// What the phone did on one check-sync NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSyncAction {
    /// Fetched its files again and applied them.
    Refetch,
    /// Rebooted: fetched its files from the start of its chain and registered again.
    Reboot,
    /// Did nothing.
    Ignore,
}

impl CheckSyncPolicy {
    /// What a NOTIFY with `event` (the Event header) does under this policy; `changed` says
    /// whether the re-fetched files differed.
    pub fn action(self, event: &str, changed: bool) -> CheckSyncAction {
        let e = event.to_ascii_lowercase().replace(' ', "");
        let reboot_asked = e.contains("reboot=true") || e.starts_with("reboot");
        match self {
            CheckSyncPolicy::Ignore => CheckSyncAction::Ignore,
            CheckSyncPolicy::AlwaysReboot => CheckSyncAction::Reboot,
            CheckSyncPolicy::ByEvent if reboot_asked => CheckSyncAction::Reboot,
            CheckSyncPolicy::ByEvent => CheckSyncAction::Refetch,
            CheckSyncPolicy::RebootIfChanged if changed || reboot_asked => CheckSyncAction::Reboot,
            CheckSyncPolicy::RebootIfChanged => CheckSyncAction::Refetch,
        }
    }
}

/// What the simulated phone needs from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneConfig {
    /// Preferred first. Never empty after a successful parse.
    pub registrars: Vec<Registrar>,
    pub redundancy: Redundancy,
    /// The line's user (DN), `gcti_provisioning` for an unassigned phone.
    pub user: String,
    pub display_name: String,
    /// Digest user name; the line's user when the file names none.
    pub auth_user: String,
    pub password: String,
    /// Number the phone dials as soon as the handset is lifted (the provisioning IVR).
    pub hotline: Option<String>,
    /// Where the file tells the phone to fetch from next time, as the file says it: the
    /// directory of its files (Polycom `device.prov.serverName`, Yealink
    /// `static.auto_provision.server.url`, AudioCodes `provisioning/configuration/url`,
    /// Grandstream `P212` + `P237`), or its own file (Cisco `Profile_Rule`, with `$MA` and
    /// `$PSN` still in it; snom `setting_server`). [`super::chain`] turns it into URLs.
    pub prov_url: String,
    /// What a check-sync makes it do.
    pub check_sync: CheckSyncPolicy,
}

/// The file does not say what a phone needs to register.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("expected a <{expected}> document, found <{found}>")]
    WrongRoot {
        expected: &'static str,
        found: String,
    },
    #[error("no SIP server configured ({0})")]
    NoRegistrar(&'static str),
    #[error("no line user configured ({0})")]
    NoUser(&'static str),
    #[error("bad port {0:?}")]
    BadPort(String),
    /// A key a real phone needs is missing or empty.
    #[error("{vendor} file has no {key}")]
    MissingKey {
        vendor: &'static str,
        key: &'static str,
    },
    /// A value the phone cannot use.
    #[error("{vendor} file: {key} = {value:?} {why}")]
    BadValue {
        vendor: &'static str,
        key: &'static str,
        value: String,
        why: &'static str,
    },
}

/// Parses `text` as `vendor`'s per-phone file.
pub fn parse(vendor: Vendor, text: &str) -> Result<PhoneConfig, ConfigError> {
    match vendor {
        Vendor::Polycom => parse_polycom(text),
        Vendor::Yealink => parse_yealink(text),
        Vendor::Cisco => parse_cisco(text),
        Vendor::Grandstream => parse_grandstream(text),
        Vendor::Snom => parse_snom(text),
        Vendor::AudioCodes => parse_audiocodes(text),
    }
}

/// An element of an XML configuration document: name, attributes, and its own text.
#[derive(Debug, Default)]
struct XmlElem {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
}

impl XmlElem {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every element of the document in document order (phones' files are flat enough that
/// position in the tree never matters beyond the root).
fn xml_elements(text: &str) -> Result<Vec<XmlElem>, ConfigError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut out: Vec<XmlElem> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let xml_err = |e: &dyn std::fmt::Display| ConfigError::Xml(e.to_string());
    loop {
        match reader.read_event().map_err(|e| xml_err(&e))? {
            Event::Start(e) => {
                out.push(element(&e)?);
                stack.push(out.len() - 1);
            }
            Event::Empty(e) => out.push(element(&e)?),
            Event::End(_) => {
                stack.pop();
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| xml_err(&e))?;
                if let Some(&i) = stack.last() {
                    out[i].text.push_str(&s);
                }
            }
            Event::CData(c) => {
                let s = String::from_utf8_lossy(&c).into_owned();
                if let Some(&i) = stack.last() {
                    out[i].text.push_str(&s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn element(e: &quick_xml::events::BytesStart<'_>) -> Result<XmlElem, ConfigError> {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| ConfigError::Xml(err.to_string()))?;
        let k = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let v = a
            .unescape_value()
            .map_err(|err| ConfigError::Xml(err.to_string()))?
            .into_owned();
        attrs.push((k, v));
    }
    Ok(XmlElem {
        name,
        attrs,
        text: String::new(),
    })
}

fn check_root(elems: &[XmlElem], expected: &'static str) -> Result<(), ConfigError> {
    match elems.first() {
        Some(e) if e.name == expected => Ok(()),
        Some(e) => Err(ConfigError::WrongRoot {
            expected,
            found: e.name.clone(),
        }),
        None => Err(ConfigError::WrongRoot {
            expected,
            found: String::new(),
        }),
    }
}

/// `key = value` / `key=value` lines; `#` starts a comment line. Later keys win, as on phones.
fn kv_lines(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn parse_port(s: Option<&str>) -> Result<u16, ConfigError> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(5060),
        Some(p) => p.parse().map_err(|_| ConfigError::BadPort(p.to_string())),
    }
}

/// `host`, `host:port`, `[v6]:port`.
fn split_host_port(s: &str) -> Result<(String, u16), ConfigError> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            let port = parse_port(p.strip_prefix(':'))?;
            return Ok((h.to_string(), port));
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_string(), parse_port(Some(p))?)),
        _ => Ok((s.to_string(), 5060)),
    }
}

fn transport_word(s: Option<&str>) -> Transport {
    match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("tcp") | Some("tcponly") | Some("1") => Transport::Tcp,
        Some("tls") | Some("2") => Transport::Tls,
        _ => Transport::Udp,
    }
}

/// A line user may be written as a full AOR (`1001@host`); phones register its user part.
fn user_part(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("sip:").unwrap_or(s);
    s.split('@').next().unwrap_or(s).to_string()
}

/// The keys of one vendor a phone cannot do without, for the error messages.
struct Keys {
    vendor: &'static str,
    prov_url: &'static str,
    hotline: &'static str,
}

/// What every parser collected.
struct Collected {
    registrars: Vec<Registrar>,
    redundancy: Redundancy,
    user: Option<String>,
    display_name: Option<String>,
    auth_user: Option<String>,
    password: Option<String>,
    hotline: Option<String>,
    prov_url: Option<String>,
    check_sync: CheckSyncPolicy,
}

fn finish(c: Collected, keys: Keys) -> Result<PhoneConfig, ConfigError> {
    let vendor = keys.vendor;
    if c.registrars.is_empty() {
        return Err(ConfigError::NoRegistrar(vendor));
    }
    let user = c
        .user
        .map(|u| user_part(&u))
        .ok_or(ConfigError::NoUser(vendor))?;
    let prov_url = c.prov_url.ok_or(ConfigError::MissingKey {
        vendor,
        key: keys.prov_url,
    })?;
    if user == PROVISIONING_USER && c.hotline.is_none() {
        // An unassigned phone that cannot reach the IVR can never be assigned.
        return Err(ConfigError::MissingKey {
            vendor,
            key: keys.hotline,
        });
    }
    Ok(PhoneConfig {
        registrars: c.registrars,
        redundancy: c.redundancy,
        display_name: c.display_name.unwrap_or_default(),
        auth_user: c.auth_user.unwrap_or_else(|| user.clone()),
        user,
        password: c.password.unwrap_or_default(),
        hotline: c.hotline,
        prov_url,
        check_sync: c.check_sync,
    })
}

/// `url` with a scheme: as is; without one, `scheme://` in front (Polycom's serverName may be a
/// bare host/path, with `device.prov.serverType` saying how to reach it).
fn with_scheme(url: &str, scheme: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("{scheme}://{url}")
    }
}

/// The files a Polycom master (`<APPLICATION … CONFIG_FILES="a.cfg, b.cfg"/>`) names, in its
/// order (the first file's settings win), `[PHONE_MAC_ADDRESS]` left for the caller.
pub fn polycom_master(text: &str) -> Result<Vec<String>, ConfigError> {
    let elems = xml_elements(text)?;
    check_root(&elems, "APPLICATION")?;
    let files: Vec<String> = elems[0]
        .attr("CONFIG_FILES")
        .unwrap_or_default()
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    if files.is_empty() {
        return Err(ConfigError::MissingKey {
            vendor: "polycom",
            key: "CONFIG_FILES (master file)",
        });
    }
    Ok(files)
}

/// `Profile_Rule` of a Cisco SPA profile, as written (`$MA`, `$PSN` not substituted); an error
/// when the profile has none or turns provisioning off.
pub fn cisco_profile_rule(text: &str) -> Result<String, ConfigError> {
    let elems = xml_elements(text)?;
    check_root(&elems, "flat-profile")?;
    let get = |k: &str| {
        elems
            .iter()
            .rev()
            .find(|e| e.name == k)
            .map(|e| e.text.as_str())
    };
    if let Some(v) = get("Provision_Enable").map(str::trim) {
        if v.eq_ignore_ascii_case("no") {
            return Err(ConfigError::BadValue {
                vendor: "cisco",
                key: "Provision_Enable",
                value: v.to_string(),
                why: "turns provisioning off",
            });
        }
    }
    non_empty(get("Profile_Rule")).ok_or(ConfigError::MissingKey {
        vendor: "cisco",
        key: "Profile_Rule",
    })
}

/// Polycom: everything is an attribute of `<polycomConfig …/>` (or of several elements in
/// hand-written files: all attributes of the document are read).
fn parse_polycom(text: &str) -> Result<PhoneConfig, ConfigError> {
    parse_polycom_files(&[text])
}

/// Polycom settings spread over the files a master names, in the master's order: a setting in
/// an earlier file wins over the same setting in a later one, as on the phone.
pub fn parse_polycom_files(texts: &[&str]) -> Result<PhoneConfig, ConfigError> {
    let mut docs = Vec::with_capacity(texts.len());
    for t in texts {
        docs.push(xml_elements(t)?);
    }
    let mut attrs: HashMap<&str, &str> = HashMap::new();
    for e in docs.iter().rev().flatten() {
        for (k, v) in &e.attrs {
            attrs.insert(k.as_str(), v.as_str());
        }
    }
    if attrs.is_empty() {
        return Err(ConfigError::NoRegistrar("polycom"));
    }
    let get = |k: &str| attrs.get(k).copied();
    let mut registrars = Vec::new();
    for i in 1..=2 {
        let p = format!("reg.1.server.{i}");
        let Some(addr) = non_empty(get(&format!("{p}.address"))) else {
            continue;
        };
        if get(&format!("{p}.register")).map(str::trim) == Some("0") {
            continue;
        }
        let transport = match get(&format!("{p}.transport")).map(str::trim) {
            Some("TCPOnly") => Transport::Tcp,
            Some("TLS") => Transport::Tls,
            _ => Transport::Udp,
        };
        let (host, port_in_addr) = split_host_port(&addr)?;
        let port = match non_empty(get(&format!("{p}.port"))) {
            Some(p) => parse_port(Some(&p))?,
            None => port_in_addr,
        };
        registrars.push(Registrar {
            host,
            port,
            transport,
        });
    }
    let hotline = if get("call.autoOffHook.1.enabled").map(str::trim) == Some("1") {
        non_empty(get("call.autoOffHook.1.contact")).map(|c| user_part(&c))
    } else {
        None
    };
    // The phone stores device.* settings only when device.set and the setting's own .set are 1.
    let prov_url = (get("device.set").map(str::trim) == Some("1")
        && get("device.prov.serverName.set").map(str::trim) == Some("1"))
    .then(|| non_empty(get("device.prov.serverName")))
    .flatten()
    .map(|name| {
        let scheme = match get("device.prov.serverType").map(str::trim) {
            Some(t) if t.eq_ignore_ascii_case("https") || t == "3" => "https",
            _ => "http",
        };
        with_scheme(&name, scheme)
    });
    let check_sync = match get("voIpProt.SIP.specialEvent.checkSync.alwaysReboot").map(str::trim) {
        Some("1") => CheckSyncPolicy::AlwaysReboot,
        _ => CheckSyncPolicy::RebootIfChanged,
    };
    finish(
        Collected {
            registrars,
            redundancy: Redundancy::Concurrent,
            user: non_empty(get("reg.1.address")),
            display_name: non_empty(get("reg.1.displayName")),
            auth_user: non_empty(get("reg.1.auth.userId")),
            password: get("reg.1.auth.password").map(str::to_string),
            hotline,
            prov_url,
            check_sync,
        },
        Keys {
            vendor: "polycom",
            prov_url: "device.prov.serverName (with device.set and device.prov.serverName.set = 1)",
            hotline: "call.autoOffHook.1.contact (enabled)",
        },
    )
}

/// Yealink: `#!version:1.0.0.1` then `key = value`.
fn parse_yealink(text: &str) -> Result<PhoneConfig, ConfigError> {
    parse_yealink_files(None, text)
}

/// Yealink's common file (`y0000000000XX.cfg`, when there was one) then its own `{mac}.cfg`:
/// the phone's own file wins.
pub fn parse_yealink_files(common: Option<&str>, own: &str) -> Result<PhoneConfig, ConfigError> {
    let mut kv = common.map(kv_lines).unwrap_or_default();
    kv.extend(kv_lines(own));
    let get = |k: &str| kv.get(k).map(String::as_str);
    let mut registrars = Vec::new();
    for i in 1..=2 {
        let p = format!("account.1.sip_server.{i}");
        let Some(addr) = non_empty(get(&format!("{p}.address"))) else {
            continue;
        };
        registrars.push(Registrar {
            host: addr,
            port: parse_port(get(&format!("{p}.port")))?,
            transport: transport_word(get(&format!("{p}.transport_type"))),
        });
    }
    // Firmware older than V70 used a single server key.
    if registrars.is_empty() {
        if let Some(h) = non_empty(get("account.1.sip_server_host")) {
            registrars.push(Registrar {
                host: h,
                port: parse_port(get("account.1.sip_server_port"))?,
                transport: transport_word(get("account.1.transport")),
            });
        }
    }
    let redundancy = if get("account.1.fallback.redundancy_type").map(str::trim) == Some("1") {
        Redundancy::Failover
    } else {
        Redundancy::Concurrent
    };
    let check_sync = match get("sip.notify_reboot_enable").map(str::trim) {
        Some("0") => CheckSyncPolicy::ByEvent,
        Some("2") => CheckSyncPolicy::Ignore,
        // 1, and the default when the file does not say.
        _ => CheckSyncPolicy::AlwaysReboot,
    };
    finish(
        Collected {
            registrars,
            redundancy,
            user: non_empty(get("account.1.user_name")),
            display_name: non_empty(get("account.1.display_name")),
            auth_user: non_empty(get("account.1.auth_name")),
            password: get("account.1.password").map(str::to_string),
            hotline: non_empty(get("features.hotline_number")),
            prov_url: non_empty(get("static.auto_provision.server.url")),
            check_sync,
        },
        Keys {
            vendor: "yealink",
            prov_url: "static.auto_provision.server.url",
            hotline: "features.hotline_number",
        },
    )
}

/// Cisco SPA: `<flat-profile>` of `<Tag_1_ ua="na">value</Tag_1_>`.
fn parse_cisco(text: &str) -> Result<PhoneConfig, ConfigError> {
    let elems = xml_elements(text)?;
    check_root(&elems, "flat-profile")?;
    let tags: HashMap<&str, &str> = elems
        .iter()
        .map(|e| (e.name.as_str(), e.text.as_str()))
        .collect();
    let get = |k: &str| tags.get(k).copied();
    let transport = transport_word(get("SIP_Transport_1_"));
    let mut registrars = Vec::new();
    if get("Line_Enable_1_").map(str::trim) != Some("No")
        && get("Register_1_").map(str::trim) != Some("No")
    {
        if let Some(proxy) = non_empty(get("Proxy_1_")) {
            // DNS-SRV emulation: `name:SRV=ip1:5060:p=0|ip2:5060:p=1`, one registrar each.
            if let Some((_, list)) = proxy.split_once(":SRV=") {
                for entry in list.split('|') {
                    let mut parts = entry.split(':');
                    let host = parts.next().unwrap_or_default().trim().to_string();
                    let port = parse_port(parts.next())?;
                    if !host.is_empty() {
                        registrars.push(Registrar {
                            host,
                            port,
                            transport,
                        });
                    }
                }
            } else {
                let (host, port) = split_host_port(&proxy)?;
                registrars.push(Registrar {
                    host,
                    port,
                    transport,
                });
            }
        }
        if get("Dual_Registration_1_").map(str::trim) == Some("Yes") {
            if let Some(alt) = non_empty(get("Alternate_Proxy_1_")) {
                let (host, port) = split_host_port(&alt)?;
                registrars.push(Registrar {
                    host,
                    port,
                    transport,
                });
            }
        }
    }
    let user = non_empty(get("User_ID_1_"));
    let auth_user = if get("Use_Auth_ID_1_").map(str::trim) == Some("Yes") {
        non_empty(get("Auth_ID_1_"))
    } else {
        None
    };
    let check_sync = match get("Resync_From_SIP").map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("no") => CheckSyncPolicy::Ignore,
        _ => CheckSyncPolicy::ByEvent,
    };
    let prov_url = match get("Provision_Enable").map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("no") => None,
        _ => non_empty(get("Profile_Rule")),
    };
    finish(
        Collected {
            registrars,
            redundancy: Redundancy::Concurrent,
            user,
            display_name: non_empty(get("Display_Name_1_")),
            auth_user,
            password: get("Password_1_").map(str::to_string),
            hotline: get("Dial_Plan_1_").and_then(cisco_hotline),
            prov_url,
            check_sync,
        },
        Keys {
            vendor: "cisco",
            prov_url: "Profile_Rule (with Provision_Enable = Yes)",
            hotline: "Dial_Plan_1_ ( S0 <:number> )",
        },
    )
}

/// The number of an immediate hotline dial plan `( S0 <:8800> )`: a dial plan whose only
/// alternative is "after 0 s, dial this".
fn cisco_hotline(plan: &str) -> Option<String> {
    let compact: String = plan.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = compact.strip_prefix('(')?.strip_suffix(')')?;
    let rest = inner.strip_prefix("S0<:")?;
    let number = rest.strip_suffix('>')?;
    (!number.is_empty() && !number.contains(['|', '<', '>'])).then(|| number.to_string())
}

/// Grandstream: `<gs_provision><config>` of P-values.
fn parse_grandstream(text: &str) -> Result<PhoneConfig, ConfigError> {
    let elems = xml_elements(text)?;
    check_root(&elems, "gs_provision")?;
    let p: HashMap<&str, &str> = elems
        .iter()
        .map(|e| (e.name.as_str(), e.text.as_str()))
        .collect();
    let get = |k: &str| p.get(k).copied();
    let transport = transport_word(get("P130"));
    let mut registrars = Vec::new();
    if get("P271").map(str::trim) != Some("0") {
        for key in ["P47", "P2312"] {
            if let Some(server) = non_empty(get(key)) {
                let (host, port) = split_host_port(&server)?;
                registrars.push(Registrar {
                    host,
                    port,
                    transport,
                });
            }
        }
    }
    // P237 is host[:port]/path without a scheme; P212 says how to reach it.
    let prov_url = match non_empty(get("P237")) {
        Some(path) => {
            let scheme = match get("P212").map(str::trim) {
                Some("2") => "https",
                Some("1") | None => "http",
                Some(other) => {
                    return Err(ConfigError::BadValue {
                        vendor: "grandstream",
                        key: "P212",
                        value: other.to_string(),
                        why: "is not 1 (HTTP) or 2 (HTTPS)",
                    })
                }
            };
            Some(with_scheme(&path, scheme))
        }
        None => None,
    };
    finish(
        Collected {
            registrars,
            redundancy: Redundancy::Concurrent,
            user: non_empty(get("P35")),
            display_name: non_empty(get("P3")),
            auth_user: non_empty(get("P36")),
            password: get("P34").map(str::to_string),
            hotline: non_empty(get("P71")),
            prov_url,
            check_sync: CheckSyncPolicy::ByEvent,
        },
        Keys {
            vendor: "grandstream",
            prov_url: "P237",
            hotline: "P71",
        },
    )
}

/// snom: `<settings><phone-settings>` whose per-identity settings carry `idx`.
fn parse_snom(text: &str) -> Result<PhoneConfig, ConfigError> {
    let elems = xml_elements(text)?;
    check_root(&elems, "settings")?;
    let mut s: HashMap<(&str, u32), &str> = HashMap::new();
    for e in &elems {
        let idx = e
            .attr("idx")
            .and_then(|i| i.trim().parse().ok())
            .unwrap_or(1);
        s.insert((e.name.as_str(), idx), e.text.as_str());
    }
    let get = |k: &str, i: u32| s.get(&(k, i)).copied();
    let identity = |i: u32| -> Result<Option<Registrar>, ConfigError> {
        if get("user_active", i).map(str::trim) != Some("on") {
            return Ok(None);
        }
        // The outbound proxy, when set, is where REGISTERs really go.
        let target = non_empty(get("user_outbound", i)).or_else(|| non_empty(get("user_host", i)));
        let Some(target) = target else {
            return Ok(None);
        };
        let mut parts = target.split(';');
        let (host, port) = split_host_port(parts.next().unwrap_or_default())?;
        let transport = parts
            .find_map(|p| p.trim().strip_prefix("transport="))
            .map(|t| transport_word(Some(t)))
            .unwrap_or(Transport::Udp);
        Ok(Some(Registrar {
            host,
            port,
            transport,
        }))
    };
    let mut registrars: Vec<Registrar> = identity(1)?.into_iter().collect();
    if let Some(failover) = non_empty(get("user_failover_identity", 1)) {
        if let Ok(i) = failover.parse::<u32>() {
            if i != 1 {
                registrars.extend(identity(i)?);
            }
        }
    }
    let hotline = match get("auto_dial", 1).map(str::trim) {
        Some("off") | Some("") | None => None,
        Some(_) => non_empty(get("auto_dial_target", 1)).map(|t| user_part(&t)),
    };
    finish(
        Collected {
            registrars,
            redundancy: Redundancy::Concurrent,
            user: non_empty(get("user_name", 1)),
            display_name: non_empty(get("user_realname", 1)),
            auth_user: non_empty(get("user_pname", 1)),
            password: get("user_pass", 1).map(str::to_string),
            hotline,
            prov_url: non_empty(get("setting_server", 1)),
            check_sync: CheckSyncPolicy::ByEvent,
        },
        Keys {
            vendor: "snom",
            prov_url: "setting_server",
            hotline: "auto_dial + auto_dial_target",
        },
    )
}

/// AudioCodes 4xxHD: `path/like/key=value`.
fn parse_audiocodes(text: &str) -> Result<PhoneConfig, ConfigError> {
    let kv = kv_lines(text);
    let get = |k: &str| kv.get(k).map(String::as_str);
    let transport = transport_word(get("voip/signalling/sip/transport_protocol"));
    let mut registrars = Vec::new();
    if get("voip/line/0/enabled").map(str::trim) != Some("0") {
        let primary =
            if get("voip/signalling/sip/sip_registrar/enabled").map(str::trim) == Some("1") {
                non_empty(get("voip/signalling/sip/sip_registrar/addr"))
                    .map(|h| (h, get("voip/signalling/sip/sip_registrar/port")))
            } else {
                None
            };
        let primary = primary.or_else(|| {
            non_empty(get("voip/signalling/sip/proxy_address"))
                .map(|h| (h, get("voip/signalling/sip/proxy_port")))
        });
        if let Some((host, port)) = primary {
            let (host, port_in_host) = split_host_port(&host)?;
            let port = match non_empty(port) {
                Some(p) => parse_port(Some(&p))?,
                None => port_in_host,
            };
            registrars.push(Registrar {
                host,
                port,
                transport,
            });
        }
        if get("voip/signalling/sip/redundant_proxy/enabled").map(str::trim) == Some("1") {
            if let Some(h) = non_empty(get("voip/signalling/sip/redundant_proxy/address")) {
                registrars.push(Registrar {
                    host: h,
                    port: parse_port(get("voip/signalling/sip/redundant_proxy/port"))?,
                    transport,
                });
            }
        }
    }
    let hotline = if get("voip/line/0/auto_dial/enabled").map(str::trim) == Some("1") {
        non_empty(get("voip/line/0/auto_dial/dest"))
    } else {
        None
    };
    finish(
        Collected {
            registrars,
            redundancy: Redundancy::Failover,
            user: non_empty(get("voip/line/0/id")),
            display_name: non_empty(get("voip/line/0/description")),
            auth_user: non_empty(get("voip/line/0/auth_name")),
            password: get("voip/line/0/auth_password").map(str::to_string),
            hotline,
            prov_url: non_empty(get("provisioning/configuration/url")),
            check_sync: CheckSyncPolicy::RebootIfChanged,
        },
        Keys {
            vendor: "audiocodes",
            prov_url: "provisioning/configuration/url",
            hotline: "voip/line/0/auto_dial/dest (enabled)",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("10.0.0.1:5070").unwrap(),
            ("10.0.0.1".into(), 5070)
        );
        assert_eq!(split_host_port("sips1").unwrap(), ("sips1".into(), 5060));
        assert_eq!(split_host_port("[::1]:5080").unwrap(), ("::1".into(), 5080));
        assert!(split_host_port("h:99999").is_err());
    }

    #[test]
    fn cisco_hotline_forms() {
        assert_eq!(cisco_hotline("( S0 <:8800> )").as_deref(), Some("8800"));
        assert_eq!(cisco_hotline("(S0<:8800>)").as_deref(), Some("8800"));
        assert_eq!(cisco_hotline("(*xx|xx.)"), None);
        assert_eq!(cisco_hotline("( P5 <:8800> | xxxx )"), None);
    }
}
