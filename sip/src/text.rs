//! Numbers and addresses as text, written by hand for the paths every request takes (the
//! `received`/`rport` stamp, the flow token stored with a binding): through `format!` they
//! were a visible share of a registration's CPU.

use std::net::{IpAddr, SocketAddr};

/// Appends `n` in decimal.
pub fn push_u16(out: &mut String, n: u16) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// Appends an address: IPv4 by hand, IPv6 by the standard library (which also picks the
/// compressed form).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u16(out, o as u16);
            }
        }
        IpAddr::V6(v6) => out.push_str(&v6.to_string()),
    }
}

/// An address as text.
pub fn ip_text(ip: IpAddr) -> String {
    let mut out = String::with_capacity(15);
    push_ip(&mut out, ip);
    out
}

/// Appends `ip:port`, `[ip6]:port` for IPv6 (as `SocketAddr`'s `Display` without scope ids).
pub fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => push_ip(out, IpAddr::V4(*a.ip())),
        SocketAddr::V6(a) if a.scope_id() == 0 && a.flowinfo() == 0 => {
            out.push('[');
            push_ip(out, IpAddr::V6(*a.ip()));
            out.push(']');
        }
        // Rare: let the standard library print scope and flow information.
        SocketAddr::V6(_) => return out.push_str(&addr.to_string()),
    }
    out.push(':');
    push_u16(out, addr.port());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_text_matches_the_standard_formatter() {
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "192.168.100.9",
            "2001:db8::1",
            "::",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for port in [0u16, 7, 10, 99, 100, 5060, 65535] {
            let mut s = String::new();
            push_u16(&mut s, port);
            assert_eq!(s, port.to_string());
        }
        for a in [
            "1.2.3.4:5060",
            "[2001:db8::1]:0",
            "[::1]:65535",
            "[fe80::1%2]:5060",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            push_socket_addr(&mut s, a);
            assert_eq!(s, a.to_string());
        }
    }
}
