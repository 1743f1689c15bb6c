//! Typed access to the headers sipdm reads, parsed by hand where rsip 0.4 is too strict or
//! too lossy (Via parameters like `rport` without a value, Contact lists with `+sip.instance`,
//! `q`, `expires`). Values come from rsip's untyped headers, so nothing is parsed twice unless
//! it is read.
//!
//! * [`params`] — `;name=value` lists, quoted strings, tags and branches;
//! * [`via`] — the Via header and RFC 3581 `rport`/`received`;
//! * [`name_addr`] — From, To and Contact (`name-addr` / `addr-spec` with parameters).

pub mod name_addr;
pub mod params;
pub mod via;

pub use name_addr::{ContactList, NameAddr};
pub use params::{has_param, new_branch, new_tag, Params};
pub use via::Via;

use rsip::headers::UntypedHeader;
use rsip::message::HasHeaders;
use rsip::Header;

/// The wire name and value of an rsip header.
pub fn name_value(h: &Header) -> (&str, &str) {
    macro_rules! nv {
        ($($var:ident => $name:expr),* $(,)?) => {
            match h {
                $(Header::$var(x) => ($name, x.value()),)*
                Header::Other(n, v) => (n.as_str(), v.as_str()),
            }
        };
    }
    nv!(
        Accept => "Accept", AcceptEncoding => "Accept-Encoding", AcceptLanguage => "Accept-Language",
        AlertInfo => "Alert-Info", Allow => "Allow", AuthenticationInfo => "Authentication-Info",
        Authorization => "Authorization", CSeq => "CSeq", CallId => "Call-ID", CallInfo => "Call-Info",
        Contact => "Contact", ContentDisposition => "Content-Disposition",
        ContentEncoding => "Content-Encoding", ContentLanguage => "Content-Language",
        ContentLength => "Content-Length", ContentType => "Content-Type", Date => "Date",
        ErrorInfo => "Error-Info", Event => "Event", Expires => "Expires", From => "From",
        InReplyTo => "In-Reply-To", MaxForwards => "Max-Forwards", MimeVersion => "MIME-Version",
        MinExpires => "Min-Expires", Organization => "Organization", Priority => "Priority",
        ProxyAuthenticate => "Proxy-Authenticate", ProxyAuthorization => "Proxy-Authorization",
        ProxyRequire => "Proxy-Require", RecordRoute => "Record-Route", ReplyTo => "Reply-To",
        Require => "Require", RetryAfter => "Retry-After", Route => "Route", Server => "Server",
        Subject => "Subject", SubscriptionState => "Subscription-State", Supported => "Supported",
        Timestamp => "Timestamp", To => "To", Unsupported => "Unsupported", UserAgent => "User-Agent",
        Via => "Via", Warning => "Warning", WwwAuthenticate => "WWW-Authenticate",
    )
}

/// Header look-ups by name on any rsip message.
pub trait MessageExt {
    fn header_value(&self, name: &str) -> Option<&str>;
    fn header_values<'a>(&'a self, name: &'a str) -> Box<dyn Iterator<Item = &'a str> + 'a>;

    fn call_id(&self) -> Option<&str> {
        self.header_value("Call-ID")
    }

    /// `CSeq` as (number, method text).
    fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header_value("CSeq")?;
        let mut it = v.split_ascii_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?;
        Some((n, m))
    }

    fn top_via(&self) -> Option<Via> {
        let v = self.header_value("Via")?;
        // Several Vias may share one header line; the first is the top.
        let first = params::split_top_level(v, b',').next()?;
        Via::parse(first).ok()
    }
}

impl<T: HasHeaders> MessageExt for T {
    fn header_value(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .map(name_value)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn header_values<'a>(&'a self, name: &'a str) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        Box::new(
            self.headers()
                .iter()
                .map(name_value)
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v),
        )
    }
}

/// Methods sipdm's endpoint accepts (the `Allow` header of OPTIONS, 405 and 501 replies).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, NOTIFY, INFO";

/// Body types accepted (`Accept` header).
pub const ACCEPT: &str = "application/sdp";
