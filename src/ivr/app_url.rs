//! The VoiceXML application URLs of the device-management IVR: `[ivr] initial-page-url`
//! (`http://FS-DM:8080/fs/dm/ivr`) and `[ivr] alternatevoicexml` (`http://FS-VM:8080/fs/dm/ivr`),
//! the same application served by the two nodes of a pair (or two sites).
//!
//! * In the VoiceXML pages ([`super::vxml`]): the `<submit>` and `<goto>` targets are the
//!   absolute URLs of the application that served the page (the alternate when the page was
//!   fetched from the alternate's host, else the initial one), and every page catches
//!   `error.badfetch` (the node died during the call) by going to the same place in the other
//!   application once; both nodes share the database, so the assignment goes on there.
//! * In the INVITE to a media server (RFC 5552 §2.1): the Request-URI names the application
//!   in its `voicexml` parameter, with the calling device in the page URL's `device` query
//!   parameter, which the page reads first: [`voicexml_request_uri`].
//! * The paths of the application ([`PAGE_PATH`], [`ASSIGN_PATH`], [`PROMPTS_PATH`]), which the
//!   VoiceXML router serves and the links above extend.
//!
//! Pure functions, no I/O.

use crate::provisioning::mac::Mac;

/// Path of the collecting page.
pub const PAGE_PATH: &str = "/fs/dm/ivr";
/// Path the page posts to.
pub const ASSIGN_PATH: &str = "/fs/dm/ivr/assign";
/// Prefix of the prompt audio URLs.
pub const PROMPTS_PATH: &str = "/fs/dm/ivr/prompts";

/// The two applications as one page sees them: where its links go, and where they go when
/// that fails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppUrls {
    /// Base of the links (`http://FS-DM:8080/fs/dm/ivr`); `None`: the paths alone, relative to
    /// whatever served the page.
    pub primary: Option<String>,
    /// Base of the fallback on `error.badfetch`; `None`: no fallback (goodbye).
    pub fallback: Option<String>,
}

impl AppUrls {
    /// The applications for a page requested with `host` (the request's `Host`): the
    /// alternate's links when the page came from the alternate's host, the initial's
    /// otherwise; the fallback is the other one.
    pub fn for_request(initial: Option<&str>, alternate: Option<&str>, host: Option<&str>) -> Self {
        let initial = initial.map(base);
        let alternate = alternate.map(base);
        let from_alternate = match (host, alternate.as_deref()) {
            (Some(h), Some(a)) => authority(a).eq_ignore_ascii_case(h.trim()),
            _ => false,
        };
        let (primary, fallback) = if from_alternate {
            (alternate, initial)
        } else {
            (initial, alternate)
        };
        let primary = primary.or_else(|| fallback.clone());
        // The same application twice (one name for both nodes) has no fallback of its own.
        let fallback = fallback.filter(|f| primary.as_deref() != Some(f.as_str()));
        AppUrls { primary, fallback }
    }

    /// The collecting page (`…/fs/dm/ivr?attempt=2&device=…`) of the primary application.
    pub fn page(&self, attempt: u32, device: Option<Mac>) -> String {
        page_at(self.primary.as_deref(), attempt, device)
    }

    /// The collecting page of the fallback application, if there is one.
    pub fn fallback_page(&self, attempt: u32, device: Option<Mac>) -> Option<String> {
        self.fallback
            .as_deref()
            .map(|b| page_at(Some(b), attempt, device))
    }

    /// Where the page posts the keyed DN.
    pub fn assign(&self) -> String {
        assign_at(self.primary.as_deref())
    }

    /// Where the page posts the keyed DN when the primary cannot be fetched.
    pub fn fallback_assign(&self) -> Option<String> {
        self.fallback.as_deref().map(|b| assign_at(Some(b)))
    }
}

/// The application URL without query, fragment or trailing `/`.
fn base(url: &str) -> String {
    let url = url.trim();
    let end = url.find(['?', '#']).unwrap_or(url.len());
    url[..end].trim_end_matches('/').to_owned()
}

/// `host[:port]` of an absolute URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    auth.rsplit_once('@').map(|x| x.1).unwrap_or(auth)
}

fn page_at(base: Option<&str>, attempt: u32, device: Option<Mac>) -> String {
    let base = base.unwrap_or(PAGE_PATH);
    match device {
        Some(m) => format!("{base}?attempt={attempt}&device={m}"),
        None => format!("{base}?attempt={attempt}"),
    }
}

fn assign_at(base: Option<&str>) -> String {
    match base {
        // The assign route hangs under the page's path (`/fs/dm/ivr` + `/assign`).
        Some(b) => format!("{b}{}", &ASSIGN_PATH[PAGE_PATH.len()..]),
        None => ASSIGN_PATH.to_owned(),
    }
}

/// Whether `url` can be an application URL: absolute `http`/`https` with a host.
pub fn check(url: &str) -> Result<(), String> {
    let lower = url.trim().to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    if authority(rest).is_empty() || url.chars().any(|c| c.is_whitespace() || c == '"') {
        return Err(format!("`{url}` names no host or has spaces or quotes"));
    }
    Ok(())
}

/// The Request-URI of an INVITE to a media server for the IVR (RFC 5552 §2.1):
/// `trunk_uri` (`sip:8800@ms.example:5070`) with `;voicexml=<app>` where `app` is the initial
/// application's page, carrying `device=<mac>` when the caller is a known device. Returns
/// `trunk_uri` unchanged when there is no application or the call is not for the IVR
/// (`dialled` is not `ivr_number`) or the URI already names one.
///
/// Meant for the B2BUA, where it builds the B-leg Request-URI from the trunk's
/// `SipTarget::uri(user)`.
pub fn voicexml_request_uri(
    trunk_uri: &str,
    dialled: &str,
    ivr_number: &str,
    initial: Option<&str>,
    device: Option<Mac>,
) -> String {
    let Some(initial) = initial else {
        return trunk_uri.to_owned();
    };
    if dialled != ivr_number || trunk_uri.to_ascii_lowercase().contains(";voicexml=") {
        return trunk_uri.to_owned();
    }
    let page = match device {
        Some(m) => format!("{}?device={m}", base(initial)),
        None => base(initial),
    };
    // A transport (or any) parameter stays; `voicexml` goes after the URI's parameters and
    // before its headers.
    let (uri, headers) = match trunk_uri.split_once('?') {
        Some((u, h)) => (u, format!("?{h}")),
        None => (trunk_uri, String::new()),
    };
    format!("{uri};voicexml={}{headers}", escape_param(&page))
}

/// RFC 3261 §25.1 `paramchar`: unreserved, param-unreserved, or `%HH`.
/// A URI parameter value (RFC 3261 `paramchar`): unreserved characters as they are, all
/// others escaped. `paramchar` also allows `[]/:&+$` unescaped, but the SIP message model
/// (rsip) cuts a parameter value at the first of them, and an escaped character means the same
/// to the media server reading the value.
fn escape_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DM: &str = "http://FS-DM:8080/fs/dm/ivr";
    const VM: &str = "http://FS-VM:8080/fs/dm/ivr/";

    #[test]
    fn links_follow_the_application_that_served_the_page() {
        let mac = Mac::parse("0004f2abcdef").ok();
        let a = AppUrls::for_request(Some(DM), Some(VM), Some("fs-dm:8080"));
        assert_eq!(a.assign(), "http://FS-DM:8080/fs/dm/ivr/assign");
        assert_eq!(
            a.fallback_assign().as_deref(),
            Some("http://FS-VM:8080/fs/dm/ivr/assign")
        );
        assert_eq!(
            a.page(2, mac),
            "http://FS-DM:8080/fs/dm/ivr?attempt=2&device=0004f2abcdef"
        );
        let b = AppUrls::for_request(Some(DM), Some(VM), Some("FS-VM:8080"));
        assert_eq!(b.assign(), "http://FS-VM:8080/fs/dm/ivr/assign");
        assert_eq!(
            b.fallback_page(3, None).as_deref(),
            Some("http://FS-DM:8080/fs/dm/ivr?attempt=3")
        );
        // Unknown host: the initial application first.
        let c = AppUrls::for_request(Some(DM), Some(VM), Some("10.0.0.9:8080"));
        assert_eq!(c, a);
        // Nothing configured: the relative paths, no fallback.
        let none = AppUrls::for_request(None, None, Some("x"));
        assert_eq!(none.assign(), "/fs/dm/ivr/assign");
        assert_eq!(none.page(1, None), "/fs/dm/ivr?attempt=1");
        assert_eq!(none.fallback_assign(), None);
        // Only an alternate: it is the one application.
        let alt = AppUrls::for_request(None, Some(VM), None);
        assert_eq!(alt.assign(), "http://FS-VM:8080/fs/dm/ivr/assign");
        assert_eq!(alt.fallback, None);
    }

    #[test]
    fn rfc5552_request_uri() {
        let mac = Mac::parse("0004f2abcdef").ok();
        assert_eq!(
            voicexml_request_uri("sip:8800@10.0.0.9:5070;transport=tcp", "8800", "8800", Some(DM), mac),
            "sip:8800@10.0.0.9:5070;transport=tcp;voicexml=http%3A%2F%2FFS-DM%3A8080%2Ffs%2Fdm%2Fivr%3Fdevice%3D0004f2abcdef"
        );
        assert_eq!(
            voicexml_request_uri("sip:8800@ms", "8800", "8800", Some(DM), None),
            "sip:8800@ms;voicexml=http%3A%2F%2FFS-DM%3A8080%2Ffs%2Fdm%2Fivr"
        );
        assert_eq!(
            voicexml_request_uri("sip:9123@sbc", "9123", "8800", Some(DM), mac),
            "sip:9123@sbc"
        );
        assert_eq!(
            voicexml_request_uri("sip:8800@ms", "8800", "8800", None, mac),
            "sip:8800@ms"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert!(check(DM).is_ok());
        assert!(check("https://fs1/fs/dm/ivr").is_ok());
        assert!(check("fs1/fs/dm/ivr").is_err());
        assert!(check("http:///fs/dm/ivr").is_err());
        assert!(check("http://fs1/a b").is_err());
    }
}
