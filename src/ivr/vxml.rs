//! VoiceXML 2.1 pages for an external media server, so that a media server configured with
//! `initial-page-url = http://FS-DM/fs/dm/ivr` (and `alternatevoicexml` for the peer) runs the
//! same dialogue as the built-in IVR.
//!
//! With `[ivr] initial-page-url` / `alternatevoicexml` set, the pages' `<submit>` and `<goto>`
//! targets are absolute URLs of the application that served the page, and each page catches
//! `error.badfetch` by going once to the same place in the other application
//! ([`super::app_url`]); without them the targets are the application's paths alone
//! ([`super::app_url::PAGE_PATH`], [`super::app_url::ASSIGN_PATH`]) and a failed fetch ends
//! the call with "Goodbye".
//!
//! * `GET /fs/dm/ivr[?attempt=N][&device=MAC]`: collect the DN: a `<field>` with the builtin
//!   `digits` grammar (VoiceXML 2.0 Appendix P, `maxlength` = the longest DN), the properties
//!   `termchar` `#`, `timeout` and `interdigittimeout` (VoiceXML 2.0 §6.3.3; `termchar` is a
//!   property, not a `<field>` attribute), and, once filled,
//!   `<submit next="/fs/dm/ivr/assign" namelist="dn caller device attempt" method="post"/>`.
//! * `POST /fs/dm/ivr/assign` (form-encoded): assigns through the [`Assigner`] and answers with
//!   "Extension d d d d assigned. Goodbye." and `<disconnect/>`, or "That extension is not
//!   available." and a `<goto>` back to the page with the next attempt number.
//! * `GET /fs/dm/ivr/prompts/{name}.wav`: the built-in clips as μ-law WAV, used by `<audio>`;
//!   every `<audio>` carries its text, which the media server speaks with TTS if it cannot
//!   fetch or play the file (VoiceXML 2.0 §4.1.3).
//!
//! Caller identity. `caller` is `session.connection.remote.uri` (VoiceXML 2.0 §5.1.4). The
//! device is what sipdm's router adds to the INVITE it sends to the media server, the header
//! `X-Sipdm-Device: <mac>`. VoiceXML 2.1 leaves protocol details to the platform
//! (`session.connection.protocol.<name>`), and media servers differ, so the page tries, in
//! order: a `device` query parameter of the page URL (for platforms that pass Request-URI
//! parameters into the page URL); `session.connection.protocol.sip.headers['x-sipdm-device']`
//! (an associative array of request headers by lower-case name, the GVP-style shape); and
//! `session.connection.protocol.sip['x-sipdm-device'].value` (one object per header with a
//! `value`, the Blueworx/IBM shape). Each is read inside `try` so a platform without it just
//! yields an empty device, and the assigner then decides (normally: not permitted).
//!
//! Everything that reaches the XML is either a constant, a number, a canonical MAC (hex
//! only) or escaped; a digit string is validated before any assignment.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::app_url::{AppUrls, ASSIGN_PATH, PAGE_PATH, PROMPTS_PATH};
use super::assign::{AssignRefusal, Assigner, CallerIdentity};
use super::prompts::{Prompt, PromptLibrary};
use super::settings::IvrSettings;
use crate::provisioning::mac::Mac;

/// The media type of VoiceXML documents (RFC 4267).
pub const CONTENT_TYPE: &str = "application/voicexml+xml";
/// The header sipdm adds to INVITEs it routes to a media server, naming the calling device.
pub const DEVICE_HEADER: &str = "X-Sipdm-Device";
/// Longest caller URI passed to the assigner.
const MAX_CALLER: usize = 512;

/// Escapes text for XML character data and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

fn audio(p: Prompt) -> String {
    format!(
        "<audio src=\"{PROMPTS_PATH}/{}.wav\">{}</audio>",
        p.name(),
        escape(p.text())
    )
}

fn prompt(clips: &[Prompt]) -> String {
    let inner: String = clips.iter().map(|p| audio(*p)).collect();
    format!("<prompt>{inner}</prompt>")
}

fn document(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<vxml version=\"2.1\" \
         xmlns=\"http://www.w3.org/2001/vxml\" xml:lang=\"en-US\">\n{body}</vxml>\n"
    )
}

/// A document-level `error.badfetch` handler: the first time, `fallback` (the same step in
/// the other application); after that, or with no other application, "Goodbye".
fn badfetch_catch(fallback: Option<String>) -> String {
    let goodbye = format!("{}<disconnect/>", prompt(&[Prompt::Goodbye]));
    match fallback {
        Some(step) => format!(
            "<var name=\"fellback\" expr=\"false\"/>\n\
             <catch event=\"error.badfetch\">\n\
             <if cond=\"fellback\">{goodbye}\n\
             <else/><assign name=\"fellback\" expr=\"true\"/>{step}</if>\n\
             </catch>\n"
        ),
        None => format!("<catch event=\"error.badfetch\">{goodbye}</catch>\n"),
    }
}

/// The page that collects the DN, for attempt `attempt` (1-based) of `cfg.max_attempts`.
/// `device` is a MAC the page URL carried, if any; `apps` says where its links go.
pub fn collect_document(
    cfg: &IvrSettings,
    apps: &AppUrls,
    attempt: u32,
    device: Option<Mac>,
) -> String {
    let max = cfg.max_attempts.max(1);
    let attempt = attempt.clamp(1, max);
    // Failed entries this page may still absorb before "Goodbye".
    let remaining = max - attempt + 1;
    let device = device.map(|m| m.to_string()).unwrap_or_default();
    let retry = format!(
        "<assign name=\"failures\" expr=\"failures + 1\"/>\n\
         <if cond=\"failures &gt;= {remaining}\">{goodbye}<disconnect/>\n\
         <else/>{again}<reprompt/></if>",
        goodbye = prompt(&[Prompt::Goodbye]),
        again = prompt(&[Prompt::TryAgain]),
    );
    let catch = badfetch_catch(apps.fallback_assign().map(|a| {
        format!(
            "<submit next=\"{}\" namelist=\"dn caller device attempt\" method=\"post\"/>",
            escape(&a)
        )
    }));
    let body = format!(
        r##"{catch}<var name="attempt" expr="{attempt}"/>
<var name="failures" expr="0"/>
<var name="caller" expr="''"/>
<var name="device" expr="'{device}'"/>
<script><![CDATA[
try {{ caller = String(session.connection.remote.uri); }} catch (e) {{ caller = ''; }}
function sipdmHeader(name) {{
  try {{
    var h = session.connection.protocol.sip.headers;
    if (h && h[name] != undefined) return String(h[name]);
  }} catch (e) {{}}
  try {{
    var o = session.connection.protocol.sip[name];
    if (o != undefined) return String(o.value != undefined ? o.value : o);
  }} catch (e) {{}}
  return '';
}}
if (device == '') {{ device = sipdmHeader('{header}'); }}
]]></script>
<form id="collect">
<field name="dn" type="digits?minlength=1;maxlength={maxlen}">
<property name="termchar" value="#"/>
<property name="timeout" value="{timeout}ms"/>
<property name="interdigittimeout" value="{inter}ms"/>
{enter}
<noinput>{retry}</noinput>
<nomatch>{retry}</nomatch>
<filled>
<submit next="{assign}" namelist="dn caller device attempt" method="post"/>
</filled>
</field>
</form>
"##,
        header = DEVICE_HEADER.to_ascii_lowercase(),
        maxlen = cfg.max_digits.max(1),
        timeout = cfg.first_digit_timeout.as_millis(),
        inter = cfg.inter_digit_timeout.as_millis(),
        enter = prompt(&[Prompt::EnterExtension]),
        assign = escape(&apps.assign()),
    );
    document(&body)
}

/// "Extension d d d d assigned. Goodbye." then hang up.
pub fn assigned_document(dn: &str) -> String {
    let mut clips = Prompt::read_back(dn);
    clips.push(Prompt::Goodbye);
    document(&format!(
        "<form id=\"assigned\">\n<block>{}<disconnect/></block>\n</form>\n",
        prompt(&clips)
    ))
}

/// "That extension is not available." then the page again for `next_attempt`, or
/// "Goodbye." when that would exceed the attempts.
pub fn not_available_document(
    cfg: &IvrSettings,
    apps: &AppUrls,
    next_attempt: u32,
    device: Option<Mac>,
) -> String {
    again_document(
        cfg,
        apps,
        next_attempt,
        device,
        "not_available",
        Prompt::NotAvailable,
    )
}

/// `clip`, then the page again for `next_attempt` (or goodbye), in the application that
/// served this document, else in the other one.
fn again_document(
    cfg: &IvrSettings,
    apps: &AppUrls,
    next_attempt: u32,
    device: Option<Mac>,
    id: &str,
    clip: Prompt,
) -> String {
    let goto = |url: String| format!("<goto next=\"{}\"/>", escape(&url));
    let (catch, tail) = if next_attempt > cfg.max_attempts.max(1) {
        (
            String::new(),
            format!("{}<disconnect/>", prompt(&[Prompt::Goodbye])),
        )
    } else {
        (
            badfetch_catch(apps.fallback_page(next_attempt, device).map(goto)),
            goto(apps.page(next_attempt, device)),
        )
    };
    document(&format!(
        "{catch}<form id=\"{id}\">\n<block>{}{tail}</block>\n</form>\n",
        prompt(&[clip])
    ))
}

/// "Try again", then the page again for `next_attempt` (or goodbye): for an entry that is not
/// a DN at all (non-digits, too long), which the digits grammar should already have refused.
pub fn retry_document(
    cfg: &IvrSettings,
    apps: &AppUrls,
    next_attempt: u32,
    device: Option<Mac>,
) -> String {
    again_document(cfg, apps, next_attempt, device, "retry", Prompt::TryAgain)
}

/// "Goodbye." then hang up (refused for good, or a request we cannot read).
pub fn goodbye_document(with_not_available: bool) -> String {
    closing_document(if with_not_available {
        &[Prompt::NotAvailable, Prompt::Goodbye]
    } else {
        &[Prompt::Goodbye]
    })
}

/// "The service is busy. Please call again later. Goodbye." then hang up (no writable
/// database).
pub fn try_later_document() -> String {
    closing_document(&[Prompt::TryLater, Prompt::Goodbye])
}

fn closing_document(clips: &[Prompt]) -> String {
    document(&format!(
        "<form id=\"goodbye\">\n<block>{}<disconnect/></block>\n</form>\n",
        prompt(clips)
    ))
}

/// A μ-law clip as a WAV file (RIFF, `WAVE_FORMAT_MULAW` = 7, 8 kHz mono, with the `fact`
/// chunk non-PCM formats carry).
pub fn ulaw_wav(samples: &[u8]) -> Vec<u8> {
    let n = samples.len() as u32;
    let mut v = Vec::with_capacity(58 + samples.len() + 1);
    v.extend_from_slice(b"RIFF");
    let pad = n % 2;
    v.extend_from_slice(&(4 + 26 + 12 + 8 + n + pad).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&18u32.to_le_bytes());
    v.extend_from_slice(&7u16.to_le_bytes()); // μ-law
    v.extend_from_slice(&1u16.to_le_bytes()); // mono
    v.extend_from_slice(&8000u32.to_le_bytes());
    v.extend_from_slice(&8000u32.to_le_bytes()); // bytes per second
    v.extend_from_slice(&1u16.to_le_bytes()); // block align
    v.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    v.extend_from_slice(&0u16.to_le_bytes()); // cbSize
    v.extend_from_slice(b"fact");
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&n.to_le_bytes());
    v.extend_from_slice(samples);
    if pad == 1 {
        v.push(0);
    }
    v
}

struct VxmlState<A> {
    assigner: Arc<A>,
    cfg: IvrSettings,
    prompts: PromptLibrary,
    /// `[ivr] initial-page-url` and `alternatevoicexml`.
    initial: Option<String>,
    alternate: Option<String>,
}

impl<A> VxmlState<A> {
    /// The applications as a page requested with these headers sees them.
    fn apps(&self, headers: &axum::http::HeaderMap) -> AppUrls {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        AppUrls::for_request(self.initial.as_deref(), self.alternate.as_deref(), host)
    }
}

/// The VoiceXML routes with the default [`IvrSettings`].
pub fn routes<A: Assigner + 'static>(assigner: Arc<A>) -> Router {
    routes_with_config(assigner, IvrSettings::default())
}

/// The VoiceXML routes: `GET /fs/dm/ivr`, `POST /fs/dm/ivr/assign`,
/// `GET /fs/dm/ivr/prompts/{name}.wav`.
pub fn routes_with_config<A: Assigner + 'static>(assigner: Arc<A>, cfg: IvrSettings) -> Router {
    routes_for_apps(assigner, cfg, None, None)
}

/// The VoiceXML routes of the application `initial` (`[ivr] initial-page-url`), with
/// `alternate` (`[ivr] alternatevoicexml`) as its fallback.
pub fn routes_for_apps<A: Assigner + 'static>(
    assigner: Arc<A>,
    cfg: IvrSettings,
    initial: Option<String>,
    alternate: Option<String>,
) -> Router {
    let prompts = cfg.prompts.clone();
    let state = Arc::new(VxmlState {
        assigner,
        cfg,
        prompts,
        initial,
        alternate,
    });
    Router::new()
        .route(PAGE_PATH, get(page::<A>))
        .route(ASSIGN_PATH, post(assign::<A>))
        .route(&format!("{PROMPTS_PATH}/{{file}}"), get(prompt_audio::<A>))
        .with_state(state)
}

fn vxml(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    attempt: Option<String>,
    device: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AssignForm {
    dn: Option<String>,
    caller: Option<String>,
    device: Option<String>,
    attempt: Option<String>,
}

fn parse_attempt(s: Option<&str>, max: u32) -> u32 {
    s.and_then(|a| a.trim().parse::<u32>().ok())
        .unwrap_or(1)
        .clamp(1, max.max(1))
}

fn parse_device(s: Option<&str>) -> Option<Mac> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| Mac::parse(s).ok())
}

async fn page<A: Assigner + 'static>(
    State(st): State<Arc<VxmlState<A>>>,
    headers: axum::http::HeaderMap,
    q: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (attempt, device) = match &q {
        Ok(Query(q)) => (
            parse_attempt(q.attempt.as_deref(), st.cfg.max_attempts),
            parse_device(q.device.as_deref()),
        ),
        Err(_) => (1, None),
    };
    let apps = st.apps(&headers);
    vxml(
        StatusCode::OK,
        collect_document(&st.cfg, &apps, attempt, device),
    )
}

async fn assign<A: Assigner + 'static>(
    State(st): State<Arc<VxmlState<A>>>,
    headers: axum::http::HeaderMap,
    form: Result<Form<AssignForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let apps = st.apps(&headers);
    let Ok(Form(f)) = form else {
        tracing::warn!("VoiceXML assign: unreadable form body");
        return vxml(StatusCode::BAD_REQUEST, goodbye_document(false));
    };
    let cfg = &st.cfg;
    let attempt = parse_attempt(f.attempt.as_deref(), cfg.max_attempts);
    let device = parse_device(f.device.as_deref());
    let dn = f.dn.as_deref().unwrap_or("").trim();
    if dn.is_empty() || dn.len() > cfg.max_digits.max(1) || !dn.bytes().all(|b| b.is_ascii_digit())
    {
        tracing::info!(attempt, "VoiceXML assign: entry is not a DN");
        return vxml(
            StatusCode::OK,
            retry_document(cfg, &apps, attempt + 1, device),
        );
    }
    let remote_uri: String = f
        .caller
        .as_deref()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_CALLER)
        .collect();
    let caller = CallerIdentity { device, remote_uri };
    tracing::info!(dn, caller = %caller.remote_uri, device = ?caller.device, "VoiceXML assignment requested");
    match st.assigner.assign(&caller, dn).await {
        Ok(dn) => vxml(StatusCode::OK, assigned_document(&dn)),
        Err(r) if r.retryable() => vxml(
            StatusCode::OK,
            not_available_document(cfg, &apps, attempt + 1, device),
        ),
        Err(AssignRefusal::Internal(e)) => {
            tracing::warn!(error = %e, "VoiceXML assignment failed");
            vxml(StatusCode::OK, goodbye_document(false))
        }
        Err(AssignRefusal::Unavailable(e)) => {
            tracing::warn!(error = %e, "VoiceXML assignment: no writable database; caller told to call again later");
            vxml(StatusCode::OK, try_later_document())
        }
        Err(_) => vxml(StatusCode::OK, goodbye_document(true)),
    }
}

async fn prompt_audio<A: Assigner + 'static>(
    State(st): State<Arc<VxmlState<A>>>,
    Path(file): Path<String>,
) -> Response {
    let Some(p) = file.strip_suffix(".wav").and_then(Prompt::from_name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, "audio/wav"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        ulaw_wav(st.prompts.clip(p)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event as XmlEvent;
    use quick_xml::Reader;

    /// Parses the whole document; returns the names of the elements in order.
    pub(crate) fn well_formed(doc: &str) -> Vec<String> {
        let mut r = Reader::from_str(doc);
        let mut names = vec![];
        loop {
            match r.read_event() {
                Ok(XmlEvent::Eof) => return names,
                Ok(XmlEvent::Start(e)) | Ok(XmlEvent::Empty(e)) => {
                    for a in e.attributes() {
                        let a = a.expect("attribute");
                        a.unescape_value().expect("attribute value");
                    }
                    names.push(String::from_utf8_lossy(e.name().as_ref()).into_owned())
                }
                Ok(XmlEvent::Text(t)) => {
                    t.unescape().expect("text");
                }
                Ok(_) => {}
                Err(e) => panic!("not well-formed at {}: {e}\n{doc}", r.buffer_position()),
            }
        }
    }

    fn cfg() -> IvrSettings {
        IvrSettings::default()
    }

    #[test]
    fn collect_page() {
        let mac = Mac::parse("00:04:F2:AB:CD:EF").ok();
        let doc = collect_document(&cfg(), &AppUrls::default(), 1, mac);
        let names = well_formed(&doc);
        assert_eq!(names[0], "vxml");
        for n in [
            "form", "field", "property", "filled", "submit", "noinput", "nomatch", "script",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing");
        }
        assert!(doc.contains(r##"<property name="termchar" value="#"/>"##));
        assert!(doc.contains(r#"type="digits?minlength=1;maxlength=16""#));
        assert!(doc.contains(r#"<submit next="/fs/dm/ivr/assign" namelist="dn caller device attempt" method="post"/>"#));
        assert!(doc.contains("session.connection.remote.uri"));
        assert!(doc.contains("session.connection.protocol.sip.headers"));
        assert!(doc.contains("'x-sipdm-device'"));
        assert!(doc.contains(r#"<var name="device" expr="'0004f2abcdef'"/>"#));
        assert!(doc.contains(r#"<property name="timeout" value="10000ms"/>"#));
        assert!(doc.contains("failures &gt;= 3"));
        // Last attempt: one failure ends the call.
        let last = collect_document(&cfg(), &AppUrls::default(), 99, None);
        well_formed(&last);
        assert!(last.contains("failures &gt;= 1"));
        assert!(last.contains(r#"<var name="device" expr="''"/>"#));
    }

    #[test]
    fn result_pages() {
        let doc = assigned_document("1001");
        well_formed(&doc);
        assert!(doc.contains("/fs/dm/ivr/prompts/extension.wav"));
        assert_eq!(doc.matches("/fs/dm/ivr/prompts/digit_1.wav").count(), 2);
        assert!(doc.contains("<disconnect/>"));

        let doc = not_available_document(
            &cfg(),
            &AppUrls::default(),
            2,
            Mac::parse("0004f2abcdef").ok(),
        );
        well_formed(&doc);
        assert!(
            doc.contains(r#"<goto next="/fs/dm/ivr?attempt=2&amp;device=0004f2abcdef"/>"#),
            "{doc}"
        );
        let doc = not_available_document(&cfg(), &AppUrls::default(), 4, None);
        well_formed(&doc);
        assert!(
            !doc.contains("<goto") && doc.contains("goodbye.wav") && doc.contains("<disconnect/>")
        );
        well_formed(&retry_document(&cfg(), &AppUrls::default(), 2, None));
        well_formed(&goodbye_document(true));
        well_formed(&goodbye_document(false));
    }

    #[test]
    fn application_urls_and_fallback() {
        let apps = AppUrls::for_request(
            Some("http://FS-DM:8080/fs/dm/ivr"),
            Some("http://FS-VM:8080/fs/dm/ivr"),
            Some("FS-DM:8080"),
        );
        let doc = collect_document(&cfg(), &apps, 1, None);
        well_formed(&doc);
        assert!(doc.contains(r#"<submit next="http://FS-DM:8080/fs/dm/ivr/assign" namelist="dn caller device attempt" method="post"/>"#), "{doc}");
        assert!(doc.contains(r#"<catch event="error.badfetch">"#), "{doc}");
        assert!(
            doc.contains(r#"<submit next="http://FS-VM:8080/fs/dm/ivr/assign""#),
            "{doc}"
        );
        let doc = not_available_document(&cfg(), &apps, 2, None);
        well_formed(&doc);
        assert!(
            doc.contains(r#"<goto next="http://FS-DM:8080/fs/dm/ivr?attempt=2"/>"#),
            "{doc}"
        );
        assert!(
            doc.contains(r#"<goto next="http://FS-VM:8080/fs/dm/ivr?attempt=2"/>"#),
            "{doc}"
        );
        // No alternate: a failed fetch says goodbye.
        let alone = AppUrls::for_request(Some("http://FS-DM:8080/fs/dm/ivr"), None, None);
        let doc = retry_document(&cfg(), &alone, 2, None);
        well_formed(&doc);
        assert!(
            !doc.contains("fellback") && doc.contains("error.badfetch"),
            "{doc}"
        );
    }

    #[test]
    fn hostile_text_is_escaped() {
        let doc = assigned_document("1<\"&]]>'\u{1}");
        well_formed(&doc);
        let e = escape("<a href='x'>&\"\u{0}\u{7}");
        assert_eq!(e, "&lt;a href=&apos;x&apos;&gt;&amp;&quot;");
    }

    #[test]
    fn wav_header() {
        let w = ulaw_wav(&[0xFF; 3]);
        assert_eq!(&w[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes([w[4], w[5], w[6], w[7]]) as usize,
            w.len() - 8
        );
        assert_eq!(&w[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([w[20], w[21]]), 7);
        assert_eq!(&w[50..54], b"data");
        assert_eq!(w.len() % 2, 0);
    }
}
