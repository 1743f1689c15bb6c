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
        let format = v.template(kind).unwrap().format;
        let per_phone = v.phone_files.iter().any(|f| &f.kind == kind);
        for case in [Case::Assigned, Case::Default, Case::DisasterRecovery] {
            let ctx = context(vendor, case);
            let label = format!("{vendor}/{kind} {case:?}");
            let out = match renderer.render(vendor, kind, &ctx) {
                Ok(out) => out,
                Err(e) => {
                    failures.push(format!("{label}: render: {e}"));
                    continue;
                }
            };
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
                continue;
            }
            need(contains(PROV_HOSTPATH), "provisioning URL missing");
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
        let out = renderer
            .render(&vendor, &kind, &context(&vendor, Case::Assigned))
            .unwrap();
        assert!(
            out.contains(DN) && out.contains(PREFERRED),
            "{vendor}\n{out}"
        );
    }
}
