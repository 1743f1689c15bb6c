//! Rendering a phone's configuration file from its vendor's minijinja template.
//!
//! Templates are data: `config/templates/{vendor}/{file}` as named by the vendor table. The
//! shipped ones are compiled into the binary (so a bare `sipdm serve` provisions phones with no
//! files on disk); an operator's template directory, laid out the same way, overrides any of them
//! by path and supplies templates for vendors the operator added to the table.
//!
//! Every template is parsed once, when the [`Renderer`] is built: a syntax error or a missing
//! template stops startup instead of failing the first phone of that vendor, and the per-request
//! cost is rendering only (the provisioning benchmark compares us with nginx serving a file).
//!
//! Escaping is decided by the table's `format` of each template, not by the file extension
//! (Polycom's XML files end in `.cfg`): XML entities for XML formats, line breaks removed for
//! `key = value` formats, so no value (a display name typed in the admin UI, a password) can
//! break the file or inject settings. Undefined variables are an error when printed, so a typo in
//! a template fails the template tests instead of silently provisioning an empty setting.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

use super::vendor::{TemplateFormat, VendorTable};

/// The template context. Field names are the template language: keep them stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderContext {
    pub device: DeviceCtx,
    pub line: LineCtx,
    /// `[0]` is the preferred server; `[1]`, when present, the peer that a disaster-recovery
    /// profile registers to as well.
    pub sip_servers: Vec<SipServerCtx>,
    /// e.g. `http://fs1:8080/fs`
    pub fs_url: String,
    /// `fs_url` + `/dm/prov`, the directory phones fetch their files from.
    pub prov_url: String,
    pub ivr: IvrCtx,
    /// Free-form profile parameters (`ntp_server`, `timezone`, …).
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCtx {
    /// Lowercase hex, no separators.
    pub mac: String,
    /// `00:04:f2:ab:cd:ef`
    pub mac_colon: String,
    pub vendor: String,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineCtx {
    /// The DN, or `gcti_provisioning` for an unassigned phone.
    pub user: String,
    pub display_name: String,
    pub auth_user: String,
    pub password: String,
    pub assigned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipServerCtx {
    pub host: String,
    pub port: u16,
    /// `udp`, `tcp` or `tls`.
    pub transport: String,
}

/// What a template is told of a configured or stored server (parsed by
/// [`crate::domain::SipServer`]).
impl From<&crate::domain::SipServer> for SipServerCtx {
    fn from(s: &crate::domain::SipServer) -> Self {
        SipServerCtx {
            host: s.host.clone(),
            port: s.port,
            transport: s.transport.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IvrCtx {
    pub number: String,
    /// True for the default (unassigned) profile: lifting the handset dials the IVR.
    pub hotline: bool,
}

/// Why a file could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown vendor {0:?}")]
    UnknownVendor(String),
    #[error("vendor {vendor:?} has no template for file kind {kind:?}")]
    UnknownKind { vendor: String, kind: String },
    #[error("template {name} not found (neither embedded nor in the template directory)")]
    MissingTemplate { name: String },
    #[error("template directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {name}: {source}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    /// The context cannot produce a working file (no SIP server, unknown transport).
    #[error("render context: {0}")]
    InvalidContext(String),
}

/// Templates shipped in the binary, by path under `config/templates/`.
///
/// `include_str!` (rather than a directory-embedding macro) makes cargo rebuild when a template
/// changes; `tests/templates.rs` checks that this list and the directory agree, so a new
/// vendor's templates cannot be forgotten here.
macro_rules! embedded {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../config/templates/", $path)))),*]
    };
}
pub const EMBEDDED_TEMPLATES: &[(&str, &str)] = embedded![
    "polycom/phone.cfg",
    "polycom/master.cfg",
    "yealink/phone.cfg",
    "yealink/common.cfg",
    "cisco/phone.xml",
    "grandstream/phone.xml",
    "snom/phone.xml",
    "snom/phone.htm",
    "audiocodes/phone.cfg",
];

/// The custom auto-escape names our formatter understands.
const ESC_XML: &str = "xml";
const ESC_KV: &str = "kv";

/// Renders vendor files; cheap to share (`Clone` shares the compiled templates).
#[derive(Clone)]
pub struct Renderer {
    env: Arc<Environment<'static>>,
    /// vendor → kind → template name in `env` (nested so a lookup on the hot path borrows
    /// `&str` keys instead of allocating a tuple key).
    names: BTreeMap<String, BTreeMap<String, String>>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("templates", &self.names)
            .finish()
    }
}

impl Renderer {
    /// Compiles every template the table names: from `override_dir/{vendor}/{file}` when that
    /// file exists, else the embedded copy.
    pub fn new(override_dir: Option<&Path>, table: &VendorTable) -> Result<Renderer, RenderError> {
        if let Some(dir) = override_dir {
            // A configured but missing directory is an operator typo; say so at startup.
            std::fs::read_dir(dir).map_err(|source| RenderError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let embedded: HashMap<&str, &str> = EMBEDDED_TEMPLATES.iter().copied().collect();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_formatter(format_value);

        let mut names = BTreeMap::new();
        let mut escapes: HashMap<String, TemplateFormat> = HashMap::new();
        let mut sources: Vec<(String, String)> = Vec::new();
        for v in table.vendors() {
            for (kind, spec) in &v.templates {
                let name = format!("{}/{}", v.name, spec.file);
                names
                    .entry(v.name.clone())
                    .or_insert_with(BTreeMap::new)
                    .insert(kind.clone(), name.clone());
                if escapes.insert(name.clone(), spec.format).is_some() {
                    continue; // two kinds share one template file
                }
                let source = match override_dir.map(|d| d.join(&v.name).join(&spec.file)) {
                    Some(path) if path.is_file() => std::fs::read_to_string(&path)
                        .map_err(|source| RenderError::Io { path, source })?,
                    _ => embedded
                        .get(name.as_str())
                        .map(|s| s.to_string())
                        .ok_or_else(|| RenderError::MissingTemplate { name: name.clone() })?,
                };
                sources.push((name, source));
            }
        }
        env.set_auto_escape_callback(move |name| match escapes.get(name) {
            Some(TemplateFormat::Xml) => AutoEscape::Custom(ESC_XML),
            Some(TemplateFormat::Kv) => AutoEscape::Custom(ESC_KV),
            None => AutoEscape::None,
        });
        for (name, source) in sources {
            env.add_template_owned(name.clone(), source)
                .map_err(|source| RenderError::Template { name, source })?;
        }
        Ok(Renderer {
            env: Arc::new(env),
            names,
        })
    }

    /// Renders one vendor's file of one kind for a device.
    pub fn render(
        &self,
        vendor: &str,
        kind: &str,
        ctx: &RenderContext,
    ) -> Result<String, RenderError> {
        let kinds = self
            .names
            .get(vendor)
            .ok_or_else(|| RenderError::UnknownVendor(vendor.into()))?;
        let name = kinds.get(kind).ok_or_else(|| RenderError::UnknownKind {
            vendor: vendor.into(),
            kind: kind.into(),
        })?;
        check_context(ctx)?;
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|source| RenderError::Template {
                name: name.clone(),
                source,
            })?;
        tmpl.render(ctx).map_err(|source| RenderError::Template {
            name: name.clone(),
            source,
        })
    }

    /// Every (vendor, kind) this renderer can produce.
    pub fn templates(&self) -> Vec<(String, String)> {
        self.names
            .iter()
            .flat_map(|(v, kinds)| kinds.keys().map(move |k| (v.clone(), k.clone())))
            .collect()
    }
}

/// Refuses contexts no template can turn into a working file, before rendering.
fn check_context(ctx: &RenderContext) -> Result<(), RenderError> {
    if ctx.sip_servers.is_empty() {
        return Err(RenderError::InvalidContext("no SIP server".into()));
    }
    for s in &ctx.sip_servers {
        if s.host.is_empty() {
            return Err(RenderError::InvalidContext(
                "SIP server with an empty host".into(),
            ));
        }
        if !matches!(s.transport.as_str(), "udp" | "tcp" | "tls") {
            return Err(RenderError::InvalidContext(format!(
                "SIP server {}: transport {:?} is not udp, tcp or tls",
                s.host, s.transport
            )));
        }
    }
    Ok(())
}

/// Prints a value according to the template's format (see the module doc).
fn format_value(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    if value.is_none() {
        return Ok(()); // an absent Option (device.model) prints as nothing, not "none"
    }
    let text: std::borrow::Cow<'_, str> = match value.as_str() {
        Some(s) => s.into(),
        None => value.to_string().into(),
    };
    let escaped = match state.auto_escape() {
        _ if value.is_safe() => text.into_owned(),
        AutoEscape::Custom(ESC_XML) => escape_xml(&text),
        AutoEscape::Custom(ESC_KV) => escape_kv(&text),
        _ => text.into_owned(),
    };
    out.write_str(&escaped).map_err(minijinja::Error::from)
}

/// XML 1.0 text/attribute escaping. Control characters other than tab are not allowed in XML 1.0
/// (not even as character references), and in attributes newlines would be normalised away
/// anyway: they become spaces.
pub fn escape_xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' => o.push(c),
            c if c.is_control() => o.push(' '),
            '\u{FFFE}' | '\u{FFFF}' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// `key = value` escaping: a value is the rest of one line, so line breaks (and other control
/// characters) become spaces; anything else is taken literally by these phones.
pub fn escape_kv(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\t' {
            o.push(' ');
        } else {
            let _ = o.write_char(c);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RenderContext {
        RenderContext {
            device: DeviceCtx {
                mac: "0004f2abcdef".into(),
                mac_colon: "00:04:f2:ab:cd:ef".into(),
                vendor: "polycom".into(),
                model: None,
            },
            line: LineCtx {
                user: "1000".into(),
                display_name: "A <b> & \"c\"\n'd'".into(),
                auth_user: "1000".into(),
                password: "secret".into(),
                assigned: true,
            },
            sip_servers: vec![SipServerCtx {
                host: "sips1".into(),
                port: 5060,
                transport: "udp".into(),
            }],
            fs_url: "http://fs1:8080/fs".into(),
            prov_url: "http://fs1:8080/fs/dm/prov".into(),
            ivr: IvrCtx {
                number: "8000".into(),
                hotline: false,
            },
            params: BTreeMap::new(),
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_xml("a<b>&\"'\n\u{1}c"),
            "a&lt;b&gt;&amp;&quot;&apos;  c"
        );
        assert_eq!(
            escape_kv("x\r\naccount.1.password = y"),
            "x  account.1.password = y"
        );
    }

    #[test]
    fn renders_every_kind_and_reports_errors() {
        let t = VendorTable::builtin();
        let r = Renderer::new(None, &t).unwrap();
        let kinds = r.templates();
        assert!(kinds.contains(&("polycom".into(), "phone".into())));
        assert!(kinds.contains(&("snom".into(), "phone-htm".into())));
        // Polycom's settings file ("phone" is its master, which names it)
        let out = r.render("polycom", "settings", &ctx()).unwrap();
        assert!(
            out.contains("A &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos;"),
            "{out}"
        );
        let out = r.render("yealink", "phone", &ctx()).unwrap();
        assert!(out.contains("A <b> & \"c\" 'd'"), "{out}");
        assert!(matches!(
            r.render("nosuch", "phone", &ctx()),
            Err(RenderError::UnknownVendor(_))
        ));
        assert!(matches!(
            r.render("polycom", "nosuch", &ctx()),
            Err(RenderError::UnknownKind { .. })
        ));
        let mut c = ctx();
        c.sip_servers.clear();
        assert!(matches!(
            r.render("polycom", "phone", &c),
            Err(RenderError::InvalidContext(_))
        ));
        let mut c = ctx();
        c.sip_servers[0].transport = "sctp".into();
        assert!(matches!(
            r.render("polycom", "phone", &c),
            Err(RenderError::InvalidContext(_))
        ));
    }

    #[test]
    fn operator_directory_overrides_and_errors() {
        let t = VendorTable::builtin();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("yealink")).unwrap();
        std::fs::write(
            dir.path().join("yealink/phone.cfg"),
            "#!version:1.0.0.1\nx = {{ line.user }}\n",
        )
        .unwrap();
        let r = Renderer::new(Some(dir.path()), &t).unwrap();
        assert_eq!(
            r.render("yealink", "phone", &ctx()).unwrap(),
            "#!version:1.0.0.1\nx = 1000\n"
        );
        // others still come from the binary
        assert!(r
            .render("polycom", "settings", &ctx())
            .unwrap()
            .contains("polycomConfig"));

        std::fs::write(dir.path().join("yealink/phone.cfg"), "{% if %}").unwrap();
        assert!(matches!(
            Renderer::new(Some(dir.path()), &t),
            Err(RenderError::Template { .. })
        ));

        std::fs::write(
            dir.path().join("yealink/phone.cfg"),
            "{{ line.no_such_field }}",
        )
        .unwrap();
        let r = Renderer::new(Some(dir.path()), &t).unwrap();
        assert!(matches!(
            r.render("yealink", "phone", &ctx()),
            Err(RenderError::Template { .. })
        ));

        assert!(matches!(
            Renderer::new(Some(&dir.path().join("missing")), &t),
            Err(RenderError::Io { .. })
        ));
    }

    #[test]
    fn operator_vendor_needs_its_templates() {
        let mut t = VendorTable::builtin();
        t.merge(
            VendorTable::from_toml(
                r#"
[[vendor]]
name = "acme"
display_name = "Acme"
content_type = "text/plain"
check_sync_event = "check-sync"
reboot_event = "reboot"
phone_files = [{ pattern = "acme{mac}.txt", kind = "phone" }]
templates.phone = { file = "phone.txt", format = "kv" }
"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            Renderer::new(None, &t),
            Err(RenderError::MissingTemplate { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("acme")).unwrap();
        std::fs::write(dir.path().join("acme/phone.txt"), "user={{ line.user }}\n").unwrap();
        let r = Renderer::new(Some(dir.path()), &t).unwrap();
        assert_eq!(r.render("acme", "phone", &ctx()).unwrap(), "user=1000\n");
    }
}
