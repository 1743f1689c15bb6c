//! A SIP server as the configuration and the catalog name it: `host`, `host:port`,
//! `[v6]:port`, optionally `sip:` before and `;transport=tcp|tls` after. Parsed into the shape
//! templates render ([`SipServerCtx`]); check-sync through a switch reads a switch's address
//! with it too. Pure, no I/O.

use super::render::SipServerCtx;

/// `host`, `host:port`, `[v6]:port`, optionally `;transport=tcp`.
pub fn parse_server(s: &str) -> Option<SipServerCtx> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let s = s.strip_prefix("sip:").unwrap_or(s);
    let (addr, params) = s.split_once(';').unwrap_or((s, ""));
    let transport = params
        .split(';')
        .find_map(|p| p.strip_prefix("transport="))
        .map(|t| t.to_ascii_lowercase())
        .unwrap_or_else(|| "udp".into());
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (
            h.to_owned(),
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        )
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p.parse().ok()?)),
            None => (addr.to_owned(), None),
        }
    };
    let default_port = if transport == "tls" { 5061 } else { 5060 };
    Some(SipServerCtx {
        host,
        port: port.unwrap_or(default_port),
        transport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        let s = parse_server("sips1.example.com").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.transport.as_str()),
            ("sips1.example.com", 5060, "udp")
        );
        let s = parse_server("10.0.0.1:5070;transport=tcp").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.transport.as_str()),
            ("10.0.0.1", 5070, "tcp")
        );
        let s = parse_server("[::1]:5080").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 5080));
        assert!(parse_server("").is_none());
        assert!(parse_server("host:notaport").is_none());
    }
}
