//! The route set of a dialog (RFC 3261 §12.1.1, §12.1.2) and where its requests go first.

use rsip::headers::UntypedHeader;
use rsip::{Header, Request, Response};

use crate::endpoint::contact_address;
use crate::headers::params::split_top_level;
use crate::headers::{MessageExt, NameAddr};
use crate::transport::Flow;
use crate::Target;

/// The Record-Route values a dialog's requests are routed through, in the order they are
/// visited (the first is the next hop).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSet(Vec<NameAddr>);

impl RouteSet {
    pub fn new(routes: Vec<NameAddr>) -> RouteSet {
        RouteSet(routes)
    }

    /// The UAS side (§12.1.1): the request's Record-Route values, in order, with all their
    /// URI parameters. Values that do not parse are skipped.
    pub fn from_request(req: &Request) -> RouteSet {
        RouteSet(record_routes(req.header_values("Record-Route")))
    }

    /// The UAC side (§12.1.2): the 2xx's Record-Route values in reverse order.
    pub fn from_response(resp: &Response) -> RouteSet {
        let mut v = record_routes(resp.header_values("Record-Route"));
        v.reverse();
        RouteSet(v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &NameAddr> {
        self.0.iter()
    }

    pub fn first(&self) -> Option<&NameAddr> {
        self.0.first()
    }

    /// Whether the next hop is a loose router (§12.2.1.1: its URI has the `lr` parameter).
    /// An empty set is "loose": the Request-URI is the remote target.
    pub fn is_loose(&self) -> bool {
        self.0.first().is_none_or(|r| uri_has_param(&r.uri, "lr"))
    }

    /// Route headers for these values, in order.
    pub fn headers(&self) -> impl Iterator<Item = Header> + '_ {
        self.0
            .iter()
            .map(|r| Header::Route(rsip::headers::Route::new(r.to_string())))
    }

    /// Where a request of the dialog goes first: the first route's address (its host, port
    /// and transport), else the remote target's, preferring `flow` when it leads to that
    /// very address (a connection the peer opened, a NAT binding). When no address can be
    /// read without DNS, `flow`.
    pub fn next_hop(&self, remote_target: &str, flow: Option<Flow>) -> Option<Target> {
        let hop = match self.0.first() {
            Some(r) => contact_address(&r.uri),
            // No route set: the peer that sent the dialog-creating message is the one to
            // reach, through the flow it used (RFC 5626 spirit; a phone behind NAT), else at
            // its Contact.
            None => match flow {
                Some(f) => return Some(Target::Flow(f)),
                None => contact_address(remote_target),
            },
        };
        match (hop, flow) {
            (Some((p, a)), Some(f)) if f.protocol == p && f.remote == a => Some(Target::Flow(f)),
            (Some((p, a)), _) => Some(Target::Address(p, a)),
            (None, Some(f)) => Some(Target::Flow(f)),
            (None, None) => None,
        }
    }
}

/// Every value of the given header lines, comma-separated lists split, in order.
fn record_routes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<NameAddr> {
    values
        .flat_map(|v| split_top_level(v, b','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .filter_map(|v| NameAddr::parse(v).ok())
        .collect()
}

/// Whether a URI (`sip:h:5060;lr;transport=udp`) has the parameter `name`.
pub(crate) fn uri_has_param(uri: &str, name: &str) -> bool {
    let uri = uri.split('?').next().unwrap_or(uri);
    uri.split(';').skip(1).any(|p| {
        p.split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Protocol;

    fn request(rr: &[&str]) -> Request {
        let mut t = String::from(
            "INVITE sip:8800@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\n",
        );
        for r in rr {
            t.push_str(&format!("Record-Route: {r}\r\n"));
        }
        t.push_str("From: <sip:a@x>;tag=1\r\nTo: <sip:8800@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
        Request::try_from(t.as_str()).unwrap()
    }

    #[test]
    fn uas_route_set_keeps_record_route_order_across_lines_and_lists() {
        let req = request(&[
            "<sip:p1.example;lr>",
            "<sip:10.0.0.3:5070;lr;transport=tcp>, <sip:p3.example;lr>",
        ]);
        let rs = RouteSet::from_request(&req);
        let uris: Vec<_> = rs.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(
            uris,
            [
                "sip:p1.example;lr",
                "sip:10.0.0.3:5070;lr;transport=tcp",
                "sip:p3.example;lr"
            ]
        );
        assert!(rs.is_loose());
    }

    #[test]
    fn uac_route_set_is_reversed() {
        let resp = Response::try_from(
            "SIP/2.0 200 OK\r\nRecord-Route: <sip:near;lr>\r\nRecord-Route: <sip:far;lr>\r\n\
             From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let rs = RouteSet::from_response(&resp);
        let uris: Vec<_> = rs.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(uris, ["sip:far;lr", "sip:near;lr"]);
    }

    #[test]
    fn strict_router_detected() {
        let rs = RouteSet::from_request(&request(&["<sip:10.0.0.3>"]));
        assert!(!rs.is_loose());
        assert!(uri_has_param("sip:h;transport=udp;LR", "lr"));
        assert!(!uri_has_param("sip:lr@h", "lr"));
    }

    #[test]
    fn next_hop_is_first_route_then_flow() {
        let flow = Flow::udp(
            "127.0.0.1:5060".parse().unwrap(),
            "10.0.0.2:5062".parse().unwrap(),
        );
        let rs = RouteSet::from_request(&request(&["<sip:10.0.0.3:5070;lr;transport=tcp>"]));
        match rs.next_hop("sip:a@10.0.0.2:5062", Some(flow)) {
            Some(Target::Address(Protocol::Tcp, a)) => assert_eq!(a.to_string(), "10.0.0.3:5070"),
            other => panic!("{other:?}"),
        }
        let none = RouteSet::default();
        assert!(matches!(
            none.next_hop("sip:a@10.0.0.2:5062", Some(flow)),
            Some(Target::Flow(_))
        ));
        match none.next_hop("sip:a@10.0.0.9:5099", None) {
            Some(Target::Address(Protocol::Udp, a)) => assert_eq!(a.to_string(), "10.0.0.9:5099"),
            other => panic!("{other:?}"),
        }
        // A route that names the flow's own peer reuses the flow.
        let same = RouteSet::from_request(&request(&["<sip:10.0.0.2:5062;lr>"]));
        assert!(matches!(
            same.next_hop("sip:x@y", Some(flow)),
            Some(Target::Flow(_))
        ));
        // A name (no DNS here) falls back to the flow.
        let named = RouteSet::from_request(&request(&["<sip:proxy.example;lr>"]));
        assert!(matches!(
            named.next_hop("sip:x@y", Some(flow)),
            Some(Target::Flow(_))
        ));
    }
}
