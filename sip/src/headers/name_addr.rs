//! `name-addr` / `addr-spec` with header parameters: From, To, Contact (RFC 3261 §20.10,
//! §25.1). Without angle brackets, everything after the first `;` is a header parameter.

use super::params::{split_top_level, Params};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    /// The URI text, without angle brackets.
    pub uri: String,
    pub params: Params,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed address: {0}")]
pub struct AddrError(&'static str);

impl NameAddr {
    pub fn parse(s: &str) -> Result<NameAddr, AddrError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AddrError("empty"));
        }
        if let Some(open) = find_unquoted(s, b'<') {
            let close = s[open..]
                .find('>')
                .map(|i| open + i)
                .ok_or(AddrError("unclosed <"))?;
            let display = s[..open].trim();
            let display = if display.is_empty() {
                None
            } else {
                Some(super::params::unquote(display).into_owned())
            };
            let uri = s[open + 1..close].trim();
            if uri.is_empty() || !uri.contains(':') {
                return Err(AddrError("uri"));
            }
            return Ok(NameAddr {
                display,
                uri: uri.to_string(),
                params: Params::parse(&s[close + 1..]),
            });
        }
        let (uri, params) = match s.find(';') {
            Some(i) => (&s[..i], Params::parse(&s[i..])),
            None => (s, Params::default()),
        };
        if uri.contains(char::is_whitespace) || !uri.contains(':') {
            return Err(AddrError("uri"));
        }
        Ok(NameAddr {
            display: None,
            uri: uri.to_string(),
            params,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }
}

impl std::fmt::Display for NameAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "\"{}\" ", d.replace('\\', "\\\\").replace('"', "\\\""))?;
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

fn find_unquoted(s: &str, c: u8) -> Option<usize> {
    let mut quoted = false;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            x if x == c && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The Contact header(s) of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactList {
    /// `Contact: *` (remove every binding; only with Expires: 0).
    Star,
    Addresses(Vec<NameAddr>),
}

impl ContactList {
    /// Parses all Contact header values of a message (each may hold a comma-separated list).
    pub fn parse<'a>(values: impl Iterator<Item = &'a str>) -> Result<ContactList, AddrError> {
        let mut addrs = Vec::new();
        let mut star = false;
        for v in values {
            for part in split_top_level(v, b',') {
                let part = part.trim();
                if part.is_empty() {
                    continue;
                }
                if part == "*" {
                    star = true;
                } else {
                    addrs.push(NameAddr::parse(part)?);
                }
            }
        }
        match (star, addrs.is_empty()) {
            (true, true) => Ok(ContactList::Star),
            (true, false) => Err(AddrError("* mixed with addresses")),
            (false, _) => Ok(ContactList::Addresses(addrs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let a = NameAddr::parse("\"Alice, A\" <sip:alice@a.example;transport=tcp>;tag=88").unwrap();
        assert_eq!(a.display.as_deref(), Some("Alice, A"));
        assert_eq!(a.uri, "sip:alice@a.example;transport=tcp");
        assert_eq!(a.tag(), Some("88"));
        let b = NameAddr::parse("sip:bob@b.example;tag=1").unwrap();
        assert_eq!(b.uri, "sip:bob@b.example");
        assert_eq!(b.tag(), Some("1"));
        assert!(NameAddr::parse("<sip:unclosed").is_err());
        assert!(NameAddr::parse("").is_err());
        assert!(NameAddr::parse("nonsense").is_err());
    }

    #[test]
    fn contact_lists() {
        let c = ContactList::parse(
            [
                "<sip:a@1.2.3.4>;expires=60;q=0.5, <sip:b@1.2.3.4>",
                "sip:c@h",
            ]
            .into_iter(),
        )
        .unwrap();
        let ContactList::Addresses(v) = c else {
            panic!()
        };
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].params.value("q"), Some("0.5"));
        assert_eq!(
            ContactList::parse(["*"].into_iter()).unwrap(),
            ContactList::Star
        );
        assert!(ContactList::parse(["*, <sip:a@b>"].into_iter()).is_err());
    }
}
