//! Every shipped template, rendered for a sample phone, must be a well-formed file its phone can
//! read, and must carry what the phone needs to register.
//!
//! Rendered three ways each — an assigned DN, the default profile of an unassigned phone
//! (`gcti_provisioning` + hotline to the IVR), and a disaster-recovery profile with a preferred
//! and a peer server — plus a hostile context whose values try to break out of their field.
//! Values deliberately contain `& < > " '` so that a missing or doubled escape shows up: the
//! checks compare the *parsed* values (XML unescaped, `key = value` split) with the originals.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use quick_xml::events::Event;
use quick_xml::Reader;
use sipdm::provisioning::mac::Mac;
use sipdm::provisioning::render::{
    DeviceCtx, IvrCtx, LineCtx, RenderContext, Renderer, SipServerCtx, EMBEDDED_TEMPLATES,
};
use sipdm::provisioning::vendor::{TemplateFormat, VendorTable};

const DN: &str = "1000";
const PASSWORD: &str = "p&ss<w>\"rd'1";
const DISPLAY: &str = "Zoë O'Brien & <Sales> \"desk\"";
const PREFERRED: &str = "sips1.example.net";
const PEER: &str = "sips2.example.net";
const IVR: &str = "8999";
const PROV_HOSTPATH: &str = "fs1.example.net:8080/fs/dm/prov";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    Assigned,
    Default,
    DisasterRecovery,
}

fn context(vendor: &str, case: Case) -> RenderContext {
    let mac = Mac::parse("00:04:f2:ab:cd:ef").unwrap();
    let server = |host: &str, transport: &str| SipServerCtx {
        host: host.into(),
        port: 5060,
        transport: transport.into(),
    };
    let (line, servers, hotline) = match case {
        Case::Assigned | Case::DisasterRecovery => (
            LineCtx {
                user: DN.into(),
                display_name: DISPLAY.into(),
                auth_user: DN.into(),
                password: PASSWORD.into(),
                assigned: true,
            },
            if case == Case::Assigned {
                vec![server(PREFERRED, "udp")]
            } else {
                vec![server(PREFERRED, "tcp"), server(PEER, "tls")]
            },
            false,
        ),
        Case::Default => (
            LineCtx {
                user: "gcti_provisioning".into(),
                display_name: "Provisioning".into(),
                auth_user: format!("dm-{mac}"),
                password: PASSWORD.into(),
                assigned: false,
            },
            vec![server(PREFERRED, "udp")],
            true,
        ),
    };
    RenderContext {
        device: DeviceCtx {
            mac: mac.to_string(),
            mac_colon: mac.colon(),
            vendor: vendor.into(),
            model: None,
        },
        line,
        sip_servers: servers,
        fs_url: "http://fs1.example.net:8080/fs".into(),
        prov_url: format!("http://{PROV_HOSTPATH}"),
        ivr: IvrCtx {
            number: IVR.into(),
            hotline,
        },
        params: BTreeMap::from([("ntp_server".to_string(), "ntp.example.net".to_string())]),
    }
}

/// Parses an XML document strictly enough for a phone's parser: one root, matched tags, no
/// duplicate attributes, declaration (if any) at the very start. Returns every attribute value
/// and text node, unescaped.
fn xml_values(doc: &str) -> Result<Vec<String>, String> {
    let mut reader = Reader::from_str(doc);
    reader.config_mut().check_end_names = true;
    let mut values = Vec::new();
    let (mut depth, mut roots, mut first) = (0usize, 0usize, true);
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("at {}: {e}", reader.buffer_position()))?;
        let was_first = std::mem::replace(&mut first, false);
        match ev {
            Event::Decl(_) if !was_first => return Err("XML declaration not at the start".into()),
            Event::Decl(_) => {}
            Event::Start(ref e) | Event::Empty(ref e) => {
                if depth == 0 {
                    roots += 1;
                }
                for a in e.attributes() {
                    let a = a.map_err(|e| e.to_string())?;
                    values.push(a.unescape_value().map_err(|e| e.to_string())?.into_owned());
                }
                if matches!(ev, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth -= 1,
            Event::Text(t) => {
                let t = t.unescape().map_err(|e| e.to_string())?;
                if depth == 0 && !t.trim().is_empty() {
                    return Err(format!("text outside the root element: {t:?}"));
                }
                values.push(t.trim().to_string());
            }
            Event::CData(_) | Event::PI(_) | Event::DocType(_) => {
                return Err(format!("unexpected {ev:?}"));
            }
            Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if depth != 0 || roots != 1 {
        return Err(format!("{roots} root elements, {depth} left open"));
    }
    Ok(values)
}

/// `key = value` (Yealink) / `key=value` (AudioCodes): no empty keys, no duplicate keys, no
/// stray lines. `#` starts a comment line. Returns the values.
fn kv_values(doc: &str) -> Result<Vec<String>, String> {
    let mut keys = HashSet::new();
    let mut values = Vec::new();
    for (n, line) in doc.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or(format!("line {}: no '=': {line:?}", n + 1))?;
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(format!("line {}: bad key {k:?}", n + 1));
        }
        if !keys.insert(k.to_string()) {
            return Err(format!("line {}: duplicate key {k:?}", n + 1));
        }
        values.push(v.trim().to_string());
    }
    if keys.is_empty() {
        return Err("no settings at all".into());
    }
    Ok(values)
}

fn values_of(format: TemplateFormat, doc: &str) -> Result<Vec<String>, String> {
    match format {
        TemplateFormat::Xml => xml_values(doc),
        TemplateFormat::Kv => kv_values(doc),
    }
}

#[test]
fn every_template_renders_well_formed_with_what_the_phone_needs() {
    let table = VendorTable::builtin();
    let renderer = Renderer::new(None, &table).unwrap();
    let templates = renderer.templates();
    assert!(templates.len() >= 9, "{templates:?}");
    let mut failures = Vec::new();
    for (vendor, kind) in &templates {
        let v = table.get(vendor).unwrap();
        let per_phone = v.phone_files.iter().any(|f| &f.kind == kind);
        for case in [Case::Assigned, Case::Default, Case::DisasterRecovery] {
            let mut ctx = context(vendor, case);
            if !per_phone {
                // As sipdm renders a common file: for nobody in particular.
                ctx.device.mac.clear();
                ctx.device.mac_colon.clear();
            }
            let label = format!("{vendor}/{kind} {case:?}");
            let out = match renderer.render(vendor, kind, &ctx) {
                Ok(out) => out,
                Err(e) => {
                    failures.push(format!("{label}: render: {e}"));
                    continue;
                }
            };
            // A Polycom master names the files that carry the settings: check those, as the
            // phone reads them.
            let (kind, out) = match polycom_master(&out) {
                Some(files) if per_phone => match follow_master(&renderer, &table, &ctx, &files) {
                    Ok(followed) => followed,
                    Err(e) => {
                        failures.push(format!("{label}: master: {e}\n{out}"));
                        continue;
                    }
                },
                _ => (kind.clone(), out),
            };
            let format = v.template(&kind).unwrap().format;
            let values = match values_of(format, &out) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!("{label}: malformed: {e}\n{out}"));
                    continue;
                }
            };
            let has = |want: &str| values.iter().any(|v| v == want);
            let contains = |want: &str| values.iter().any(|v| v.contains(want));
            let mut need = |ok: bool, what: &str| {
                if !ok {
                    failures.push(format!("{label}: {what}\n{out}"));
                }
            };
            if !per_phone {
                // Common files are served to anyone: never credentials, never a DN.
                need(
                    !out.contains("p&ss") && !out.contains("p&amp;ss"),
                    "common file leaks the password",
                );
                need(!contains(DN), "common file names a DN");
                continue;
            }
            need(contains(PROV_HOSTPATH), "provisioning URL missing");
            match prov_url_key(vendor) {
                Some((key, want)) => need(
                    setting(format, &out, key).as_deref() == Some(want.as_str()),
                    &format!("provisioning URL key {key} is not {want:?}"),
                ),
                None => need(false, "no provisioning URL key known for this vendor"),
            }
            need(has(&ctx.line.user), "user (DN) missing");
            need(has(&ctx.line.auth_user), "auth user missing");
            need(has(PASSWORD), "password missing or mis-escaped");
            need(contains(PREFERRED), "preferred SIP server missing");
            match case {
                Case::Assigned => {
                    need(contains(DISPLAY), "display name missing or mis-escaped");
                    need(!contains(PEER), "peer server without a DR profile");
                    need(!contains(IVR), "hotline to the IVR on an assigned phone");
                }
                Case::Default => {
                    need(has("gcti_provisioning"), "gcti_provisioning missing");
                    need(contains(IVR), "hotline to the IVR missing");
                }
                Case::DisasterRecovery => {
                    need(contains(PEER), "peer SIP server missing");
                    need(!contains(IVR), "hotline to the IVR on an assigned phone");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Values typed into the admin UI must not be able to add settings or break the document.
#[test]
fn hostile_values_cannot_break_out() {
    let table = VendorTable::builtin();
    let renderer = Renderer::new(None, &table).unwrap();
    let evil =
        "x\r\naccount.1.password = stolen\n</flat-profile><P34>stolen</P34>\u{0}\u{1b}]]>-->";
    for (vendor, kind) in renderer.templates() {
        let mut ctx = context(&vendor, Case::Default);
        ctx.line.display_name = evil.into();
        ctx.line.password = evil.into();
        ctx.line.user = evil.into();
        ctx.params.insert("ntp_server".into(), evil.into());
        ctx.params.insert("timezone".into(), evil.into());
        let out = renderer.render(&vendor, &kind, &ctx).unwrap();
        let format = table.get(&vendor).unwrap().template(&kind).unwrap().format;
        let values =
            values_of(format, &out).unwrap_or_else(|e| panic!("{vendor}/{kind}: {e}\n{out}"));
        assert!(
            !values.iter().any(|v| v == "stolen"),
            "{vendor}/{kind}: injected a setting\n{out}"
        );
        assert!(!out.contains('\0'), "{vendor}/{kind}: NUL in output");
    }
}

/// The embedded list in render.rs and the template directory must agree, and every template
/// the vendor table names must be embedded: otherwise a vendor works from a checkout but not
/// from the installed binary.
#[test]
fn embedded_templates_match_the_directory() {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
    let mut on_disk = BTreeSet::new();
    walk(&root, &root, &mut on_disk);
    let embedded: BTreeSet<String> = EMBEDDED_TEMPLATES
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(
        on_disk, embedded,
        "update EMBEDDED_TEMPLATES in src/provisioning/render.rs"
    );

    for v in VendorTable::builtin().vendors() {
        for spec in v.templates.values() {
            let name = format!("{}/{}", v.name, spec.file);
            assert!(
                embedded.contains(&name),
                "{name} named in vendors.toml but not embedded"
            );
        }
    }
}

/// The acceptance: the same MAC.cfg rendered as Polycom, as Yealink and as AudioCodes
/// (the three vendors that share the name) each carry DN, password and SIP server.
#[test]
fn plain_mac_cfg_for_each_candidate_vendor() {
    let table = VendorTable::builtin();
    let renderer = Renderer::new(None, &table).unwrap();
    let req = sipdm::provisioning::filename::parse_file_name("0004F2ABCDEF.cfg", &table).unwrap();
    let sipdm::provisioning::filename::FileRequest::PerPhone {
        candidates, kind, ..
    } = req
    else {
        panic!("not a per-phone request");
    };
    assert_eq!(candidates, ["polycom", "yealink", "audiocodes"]);
    for vendor in candidates {
        let ctx = context(&vendor, Case::Assigned);
        let mut out = renderer.render(&vendor, &kind, &ctx).unwrap();
        if vendor == "polycom" {
            // Polycom reads MAC.cfg as its master; the settings are in the file it names.
            let files = polycom_master(&out).unwrap_or_else(|| panic!("not a master:\n{out}"));
            assert_eq!(files, ["0004f2abcdef-phone.cfg"]);
            out = follow_master(&renderer, &table, &ctx, &files).unwrap().1;
        }
        assert!(
            out.contains(DN) && out.contains(PREFERRED),
            "{vendor}\n{out}"
        );
    }
}

/// The provisioning-URL key each vendor's per-phone file must carry, with the value it must
/// have for the sample context (`http://{PROV_HOSTPATH}`, MAC 0004f2abcdef).
fn prov_url_key(vendor: &str) -> Option<(&'static str, String)> {
    let url = format!("http://{PROV_HOSTPATH}");
    Some(match vendor {
        "polycom" => ("device.prov.serverName", url),
        "yealink" => ("static.auto_provision.server.url", url),
        "cisco" => ("Profile_Rule", format!("{url}/spa$MA.xml")),
        "grandstream" => ("P237", PROV_HOSTPATH.to_string()),
        "snom" => ("setting_server", format!("{url}/0004f2abcdef.xml")),
        "audiocodes" => ("provisioning/configuration/url", format!("{url}/")),
        _ => return None,
    })
}

/// The value of one setting: an XML attribute or element of that name, or a `key = value` key.
fn setting(format: TemplateFormat, doc: &str, key: &str) -> Option<String> {
    match format {
        TemplateFormat::Kv => doc.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (!l.trim_start().starts_with('#') && k.trim() == key).then(|| v.trim().to_string())
        }),
        TemplateFormat::Xml => {
            let mut reader = Reader::from_str(doc);
            let mut in_key = false;
            loop {
                match reader.read_event().ok()? {
                    Event::Start(ref e) | Event::Empty(ref e) => {
                        for a in e.attributes().flatten() {
                            if a.key.as_ref() == key.as_bytes() {
                                return Some(a.unescape_value().ok()?.into_owned());
                            }
                        }
                        in_key = e.name().as_ref() == key.as_bytes();
                    }
                    Event::Text(t) if in_key => return Some(t.unescape().ok()?.trim().to_string()),
                    Event::End(_) => in_key = false,
                    Event::Eof => return None,
                    _ => {}
                }
            }
        }
    }
}

/// `CONFIG_FILES` of a Polycom master file (`<APPLICATION …/>`), split; `None` for any other
/// document.
fn polycom_master(doc: &str) -> Option<Vec<String>> {
    let mut reader = Reader::from_str(doc);
    loop {
        match reader.read_event().ok()? {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if e.name().as_ref() != b"APPLICATION" {
                    return None;
                }
                let files = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"CONFIG_FILES")?
                    .unescape_value()
                    .ok()?
                    .into_owned();
                return Some(
                    files
                        .split(',')
                        .map(|f| f.trim().to_string())
                        .filter(|f| !f.is_empty())
                        .collect(),
                );
            }
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Renders what a Polycom master names, as sipdm serves each name: `[PHONE_MAC_ADDRESS]`
/// becomes the phone's MAC, and each name must be this phone's per-phone file of a settings
/// kind. Returns that kind and the settings (one file: what our masters name).
fn follow_master(
    renderer: &Renderer,
    table: &VendorTable,
    ctx: &RenderContext,
    files: &[String],
) -> Result<(String, String), String> {
    let [name] = files else {
        return Err(format!("expected one settings file, got {files:?}"));
    };
    let name = name.replace("[PHONE_MAC_ADDRESS]", &ctx.device.mac);
    match sipdm::provisioning::filename::parse_file_name(&name, table) {
        Ok(sipdm::provisioning::filename::FileRequest::PerPhone {
            mac,
            kind,
            vendor_hint,
            ..
        }) => {
            if mac.to_string() != ctx.device.mac || vendor_hint.as_deref() != Some("polycom") {
                return Err(format!("{name} is not this Polycom's file"));
            }
            if polycom_master(&renderer.render("polycom", &kind, ctx).unwrap_or_default()).is_some()
            {
                return Err(format!("{name} is a master again"));
            }
            let out = renderer
                .render("polycom", &kind, ctx)
                .map_err(|e| format!("{name}: {e}"))?;
            Ok((kind, out))
        }
        other => Err(format!("{name}: {other:?}")),
    }
}

/// The files a factory phone walks before its own: Polycom's common master, Cisco's
/// `spa$PSN.cfg`, Yealink's `y0000000000XX.cfg`, each as sipdm serves it (no device), and
/// snom's `{model}-{mac}.htm` naming itself.
#[test]
fn common_files_send_the_phone_on_to_its_own() {
    use sipdm::provisioning::filename::{parse_file_name, FileRequest};
    let table = VendorTable::builtin();
    let renderer = Renderer::new(None, &table).unwrap();
    let url = format!("http://{PROV_HOSTPATH}");
    let common = |name: &str| -> String {
        let Ok(FileRequest::Common {
            vendor,
            kind,
            model,
            ..
        }) = parse_file_name(name, &table)
        else {
            panic!("{name} is not a common file");
        };
        let mut ctx = context(&vendor, Case::Default);
        ctx.device.mac.clear();
        ctx.device.mac_colon.clear();
        ctx.device.model = model;
        let out = renderer.render(&vendor, &kind, &ctx).unwrap();
        assert!(
            !out.contains("p&ss") && !out.contains("p&amp;ss") && !out.contains("dm-"),
            "{name} carries credentials:\n{out}"
        );
        out
    };

    // Polycom: the common master names the phone's settings by its MAC.
    let master = common("000000000000.cfg");
    let files = polycom_master(&master).expect("an APPLICATION master");
    assert_eq!(files, ["[PHONE_MAC_ADDRESS]-phone.cfg"]);
    let ctx = context("polycom", Case::Default);
    let (kind, settings) = follow_master(&renderer, &table, &ctx, &files).unwrap();
    assert_eq!(kind, "settings");
    for (key, want) in [
        ("device.set", "1"),
        ("device.prov.serverName.set", "1"),
        ("device.prov.serverName", url.as_str()),
    ] {
        assert_eq!(
            setting(TemplateFormat::Xml, &settings, key).as_deref(),
            Some(want),
            "{key}\n{settings}"
        );
    }

    // Cisco: spa$PSN.cfg sends the phone on to spa$MA.xml, and keeps it resyncing from SIP.
    for name in ["spa504G.cfg", "spa525G2.cfg"] {
        let out = common(name);
        xml_values(&out).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"));
        let get = |k| setting(TemplateFormat::Xml, &out, k);
        assert_eq!(
            get("Profile_Rule"),
            Some(format!("{url}/spa$MA.xml")),
            "{out}"
        );
        assert_eq!(get("Provision_Enable").as_deref(), Some("Yes"));
        assert_eq!(get("Resync_From_SIP").as_deref(), Some("Yes"));
        assert_eq!(
            get("Proxy_1_"),
            None,
            "no line settings in the factory file"
        );
        assert_eq!(get("User_ID_1_"), None);
    }
    // … and the per-MAC file keeps the same rule, so resyncs keep going there.
    let per_mac = renderer
        .render("cisco", "phone", &context("cisco", Case::Assigned))
        .unwrap();
    assert_eq!(
        setting(TemplateFormat::Xml, &per_mac, "Profile_Rule"),
        Some(format!("{url}/spa$MA.xml"))
    );
    assert_eq!(
        setting(TemplateFormat::Xml, &per_mac, "Resync_From_SIP").as_deref(),
        Some("Yes")
    );

    // Yealink: the common file carries the provisioning URL as well.
    let out = common("y000000000066.cfg");
    assert_eq!(
        setting(TemplateFormat::Kv, &out, "static.auto_provision.server.url"),
        Some(url.clone())
    );

    // snom: the .htm names itself when the model is known, {mac}.xml otherwise.
    let mut ctx = context("snom", Case::Assigned);
    ctx.device.model = Some("snomD785".into());
    let out = renderer.render("snom", "phone-htm", &ctx).unwrap();
    assert_eq!(
        setting(TemplateFormat::Xml, &out, "setting_server"),
        Some(format!("{url}/snomD785-0004f2abcdef.htm"))
    );
    let out = renderer.render("snom", "phone", &ctx).unwrap();
    assert_eq!(
        setting(TemplateFormat::Xml, &out, "setting_server"),
        Some(format!("{url}/0004f2abcdef.xml"))
    );
}
