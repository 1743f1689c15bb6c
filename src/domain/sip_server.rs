//! A SIP server as the configuration and the catalog name it: `host`, `host:port`,
//! `[v6]:port` (or a bare IPv6 address), optionally `sip:` before and `;transport=udp|tcp|tls`
//! after (other parameters are ignored). The port defaults to 5060, 5061 over TLS.
//!
//! Parsed once where the text comes in (`[dm] sip-servers`, `[[sites]] sip-servers`,
//! `[[switches]] address`); templates get it as a `SipServerCtx`, check-sync through a switch
//! sends to it. [`Display`](fmt::Display) prints one form, `host:port` (`[v6]:port`) with
//! `;transport=` when not UDP: that is what the store keeps.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A SIP server to register to or send to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SipServer {
    /// A host name or an IP address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

/// The transport a SIP server is reached over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// `udp`, `tcp` or `tls`: the `transport=` value, and what templates are given.
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// 5060, or 5061 over TLS (RFC 3261 §19.1.2).
    pub const fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            Transport::Udp | Transport::Tcp => 5060,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a SIP server; names the text and the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "SIP server `{0}`: want host, host:port or [v6]:port, optionally sip: before and \
     ;transport=udp|tcp|tls after"
)]
pub struct SipServerError(pub String);

impl SipServer {
    /// `host:port`, `[v6]:port` for an IPv6 address: the authority of a SIP URI.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for SipServer {
    type Err = SipServerError;

    /// Refuses an empty host, a port that is not a number, an unknown transport, and a host
    /// with characters no host name or address has (spaces, `,`, `@`, `/`…).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || SipServerError(text.to_owned());
        let s = text.trim();
        let s = s.strip_prefix("sip:").unwrap_or(s);
        let (addr, params) = s.split_once(';').unwrap_or((s, ""));
        let mut transport = Transport::Udp;
        for p in params.split(';') {
            if let Some((key, value)) = p.split_once('=') {
                if key.trim().eq_ignore_ascii_case("transport") {
                    transport = match value.trim().to_ascii_lowercase().as_str() {
                        "udp" => Transport::Udp,
                        "tcp" => Transport::Tcp,
                        "tls" => Transport::Tls,
                        _ => return Err(bad()),
                    };
                }
            }
        }
        let port = |p: &str| -> Result<u16, SipServerError> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(bad)?;
            h.parse::<Ipv6Addr>().map_err(|_| bad())?;
            let p = match after {
                "" => None,
                _ => Some(port(after.strip_prefix(':').ok_or_else(bad)?)?),
            };
            (h, p)
        } else if addr.matches(':').count() > 1 {
            // A bare IPv6 address: no port can be told from its last group.
            addr.parse::<Ipv6Addr>().map_err(|_| bad())?;
            (addr, None)
        } else {
            match addr.split_once(':') {
                Some((h, p)) => (h, Some(port(p)?)),
                None => (addr, None),
            }
        };
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
        if host.is_empty() || !host.chars().all(name_char) {
            return Err(bad());
        }
        Ok(SipServer {
            host: host.to_owned(),
            port: port.unwrap_or(transport.default_port()),
            transport,
        })
    }
}

impl fmt::Display for SipServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host_port())?;
        match self.transport {
            Transport::Udp => Ok(()),
            t => write!(f, ";transport={t}"),
        }
    }
}

impl TryFrom<String> for SipServer {
    type Error = SipServerError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<SipServer> for String {
    fn from(s: SipServer) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(s: &str) -> (String, u16, &'static str) {
        let s: SipServer = s.parse().unwrap();
        (s.host, s.port, s.transport.as_str())
    }

    #[test]
    fn server_forms() {
        for (given, host, port, transport, printed) in [
            (
                "sips1.example.com",
                "sips1.example.com",
                5060,
                "udp",
                "sips1.example.com:5060",
            ),
            (" sips1:5070 ", "sips1", 5070, "udp", "sips1:5070"),
            (
                "10.0.0.1:5070;transport=tcp",
                "10.0.0.1",
                5070,
                "tcp",
                "10.0.0.1:5070;transport=tcp",
            ),
            ("[::1]:5080", "::1", 5080, "udp", "[::1]:5080"),
            (
                "[2001:db8::1]",
                "2001:db8::1",
                5060,
                "udp",
                "[2001:db8::1]:5060",
            ),
            (
                "2001:db8::1",
                "2001:db8::1",
                5060,
                "udp",
                "[2001:db8::1]:5060",
            ),
            (
                "sip:sips1;transport=TLS",
                "sips1",
                5061,
                "tls",
                "sips1:5061;transport=tls",
            ),
            (
                "sip:sips1:5062;lr;transport=udp",
                "sips1",
                5062,
                "udp",
                "sips1:5062",
            ),
            (
                "sips_1.corp",
                "sips_1.corp",
                5060,
                "udp",
                "sips_1.corp:5060",
            ),
        ] {
            assert_eq!(
                parts(given),
                (host.to_owned(), port, transport),
                "{given:?}"
            );
            assert_eq!(given.parse::<SipServer>().unwrap().to_string(), printed);
        }
        let s: SipServer = "[::1]:5080".parse().unwrap();
        assert_eq!(s.host_port(), "[::1]:5080");
        // Two spellings of one server are one value.
        assert_eq!(
            "sip:host;transport=udp".parse::<SipServer>(),
            "host:5060".parse::<SipServer>()
        );
    }

    #[test]
    fn refuses_bad_servers_naming_them() {
        for bad in [
            "",
            "  ",
            ":5060",
            "host:notaport",
            "host:",
            "host:70000",
            "host:-1",
            "host;transport=sctp",
            "[::1",
            "[::1]5060",
            "[nothex]:5060",
            "a:b:c",
            "sips1 sips2",
            "sips1,sips2",
            "user@sips1",
            "http://sips1",
        ] {
            let err = bad.parse::<SipServer>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{bad}`")) && err.contains("[v6]:port"),
                "{err}"
            );
        }
    }

    #[test]
    fn serde_uses_the_text() {
        let s: SipServer = serde_json::from_str("\"sip:sips1;transport=tcp\"").unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"sips1:5060;transport=tcp\""
        );
        let err = serde_json::from_str::<SipServer>("\"host:x\"").unwrap_err();
        assert!(err.to_string().contains("host:x"), "{err}");
    }

    proptest! {
        #[test]
        fn display_parses_back(
            host in "[a-z][a-z0-9.-]{0,20}|[0-9]{1,3}(\\.[0-9]{1,3}){3}",
            port: u16,
            t in 0usize..3,
        ) {
            let s = SipServer {
                host,
                port,
                transport: [Transport::Udp, Transport::Tcp, Transport::Tls][t],
            };
            prop_assert_eq!(s.to_string().parse::<SipServer>(), Ok(s));
        }

        #[test]
        fn any_accepted_text_prints_canonically(s in "(sip:)?[a-z0-9:.\\[\\]]{0,20}(;transport=[a-z]{3})?") {
            if let Ok(server) = s.parse::<SipServer>() {
                prop_assert_eq!(server.to_string().parse::<SipServer>(), Ok(server));
            }
        }
    }
}
