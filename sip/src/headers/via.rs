//! The Via header (RFC 3261 §20.42) and the RFC 3581 `rport`/`received` rewrite.

use std::net::{IpAddr, SocketAddr};

use super::params::Params;
use crate::text::{ip_text, push_u16};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, … (upper case).
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Via: {0}")]
pub struct ViaError(&'static str);

impl Via {
    pub fn parse(s: &str) -> Result<Via, ViaError> {
        let s = s.trim();
        // sent-protocol: SIP / 2.0 / transport (LWS allowed around the slashes)
        let mut rest = s;
        let mut proto = Vec::with_capacity(3);
        for i in 0..3 {
            rest = rest.trim_start();
            let end = if i < 2 {
                rest.find('/').ok_or(ViaError("sent-protocol"))?
            } else {
                rest.find(|c: char| c.is_ascii_whitespace())
                    .ok_or(ViaError("sent-by"))?
            };
            proto.push(rest[..end].trim());
            rest = if i < 2 {
                &rest[end + 1..]
            } else {
                &rest[end..]
            };
        }
        if !proto[0].eq_ignore_ascii_case("SIP") || proto[1] != "2.0" || proto[2].is_empty() {
            return Err(ViaError("sent-protocol"));
        }
        let rest = rest.trim_start();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), Params::parse(&rest[i..])),
            None => (rest.trim(), Params::default()),
        };
        let (host, port) = split_host_port(sent_by).ok_or(ViaError("sent-by"))?;
        Ok(Via {
            transport: proto[2].to_ascii_uppercase(),
            host: host.to_string(),
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// `host[:port]` as the client wrote it — part of the server transaction key.
    pub fn sent_by(&self) -> String {
        let mut out = String::with_capacity(self.host.len() + 6);
        out.push_str(&self.host);
        if let Some(p) = self.port {
            out.push(':');
            push_u16(&mut out, p);
        }
        out
    }

    /// RFC 3261 §18.2.1 + RFC 3581 §4: record where the request really came from.
    pub fn stamp_received(&mut self, source: SocketAddr) {
        let ip = source.ip();
        let host_is_source = self.host.trim_matches(['[', ']']).parse::<IpAddr>().ok() == Some(ip);
        if !host_is_source || self.params.contains("rport") {
            self.params.set("received", Some(ip_text(ip)));
        }
        if self.params.contains("rport") {
            let mut port = String::with_capacity(5);
            push_u16(&mut port, source.port());
            self.params.set("rport", Some(port));
        }
    }

    /// Where responses go (RFC 3261 §18.2.2, RFC 3581 §4) when not down the same connection.
    pub fn response_target(&self, default_port: u16) -> Option<SocketAddr> {
        let host = self.params.value("received").unwrap_or(&self.host);
        let ip: IpAddr = host.trim_matches(['[', ']']).parse().ok()?;
        let port = self
            .params
            .value("rport")
            .and_then(|p| p.parse().ok())
            .or(self.port)
            .unwrap_or(default_port);
        Some(SocketAddr::new(ip, port))
    }
}

impl Via {
    /// The header value as it goes on the wire (see [`Params::write_into`] for why not `write!`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(
            16 + self.host.len()
                + self
                    .params
                    .0
                    .iter()
                    .map(|(n, v)| n.len() + v.as_ref().map_or(0, |v| v.len() + 3) + 1)
                    .sum::<usize>(),
        );
        out.push_str("SIP/2.0/");
        out.push_str(&self.transport);
        out.push(' ');
        out.push_str(&self.host);
        if let Some(p) = self.port {
            out.push(':');
            push_u16(&mut out, p);
        }
        self.params.write_into(&mut out);
        out
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// Splits `host[:port]`, IPv6 references in brackets.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if s.is_empty() {
        return None;
    }
    if s.starts_with('[') {
        let close = s.find(']')?;
        let host = &s[..=close];
        let rest = &s[close + 1..];
        return match rest.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rfind(':') {
        Some(i) => Some((&s[..i], Some(s[i + 1..].parse().ok()?))),
        None => Some((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let v = Via::parse("SIP / 2.0 / udp 10.0.0.1:5062 ;branch=z9hG4bKabc;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.port, Some(5062));
        assert_eq!(v.branch(), Some("z9hG4bKabc"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport"
        );
    }

    #[test]
    fn rport_and_received() {
        let mut v = Via::parse("SIP/2.0/UDP 192.168.1.2:5060;branch=z9hG4bK1;rport").unwrap();
        v.stamp_received("203.0.113.9:40000".parse().unwrap());
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 192.168.1.2:5060;branch=z9hG4bK1;rport=40000;received=203.0.113.9"
        );
        assert_eq!(
            v.response_target(5060),
            Some("203.0.113.9:40000".parse().unwrap())
        );
        let mut v = Via::parse("SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK1").unwrap();
        v.stamp_received("203.0.113.9:5060".parse().unwrap());
        assert!(!v.params.contains("received"));
    }

    #[test]
    fn quoted_parameters_print_escaped() {
        let v = Via::parse(r#"SIP/2.0/TLS h;branch=z9hG4bK1;x="a \"b\"";y"#).unwrap();
        assert_eq!(
            v.to_string(),
            r#"SIP/2.0/TLS h;branch=z9hG4bK1;x="a \"b\"";y"#
        );
    }

    #[test]
    fn ipv6_and_garbage() {
        let v = Via::parse("SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK1").unwrap();
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(
            v.response_target(5060),
            Some("[2001:db8::1]:5060".parse().unwrap())
        );
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("HTTP/1.1/TCP x").is_err());
        assert!(Via::parse("SIP/2.0/UDP h:99999").is_err());
        assert!(Via::parse("").is_err());
    }
}
