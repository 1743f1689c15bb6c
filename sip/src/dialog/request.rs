//! Requests within a dialog (RFC 3261 §12.2.1.1) and the ACK of a 2xx (§13.2.2.4).

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request};

use super::builder::{request_uri, BuildError};
use super::Dialog;

impl Dialog {
    /// A request of this dialog with the current local CSeq number (the INVITE's for a UAC
    /// dialog just made: what its ACK carries). Max-Forwards 70, From = local (our tag), To =
    /// remote (their tag), Call-ID, CSeq, Route, and our Contact on target-refresh requests.
    ///
    /// Routing (§12.2.1.1): with no route set, or a first route with `;lr` (loose router), the
    /// Request-URI is the remote target and the Route headers are the route set; otherwise
    /// (strict router) the Request-URI is the first route's URI and the Route headers are the
    /// rest of the set followed by the remote target. Send it to [`Dialog::target`].
    pub fn request(&self, method: Method) -> Result<Request, BuildError> {
        self.request_with_cseq(method, self.local_cseq)
    }

    /// [`Dialog::request`] with the next local CSeq number (§12.2.1.1: one more than the
    /// last), which this dialog then remembers. ACK and CANCEL are not new requests of the
    /// dialog: use [`Dialog::request`] for an ACK.
    pub fn next_request(&mut self, method: Method) -> Result<Request, BuildError> {
        let n = self.local_cseq.wrapping_add(1);
        let req = self.request_with_cseq(method, n)?;
        self.local_cseq = n;
        Ok(req)
    }

    fn request_with_cseq(&self, method: Method, cseq: u32) -> Result<Request, BuildError> {
        let mut headers: Vec<Header> = Vec::with_capacity(8 + self.route_set.len());
        let uri = if self.route_set.is_loose() {
            headers.extend(self.route_set.headers());
            request_uri(&self.remote_target)?
        } else {
            let mut routes = self.route_set.iter();
            let first = routes.next().expect("a strict route set is not empty");
            for r in routes {
                headers.push(Header::Route(rsip::headers::Route::new(r.to_string())));
            }
            headers.push(Header::Route(rsip::headers::Route::new(format!(
                "<{}>",
                self.remote_target
            ))));
            request_uri(&first.uri)?
        };
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        headers.push(Header::From(rsip::headers::From::new(
            self.local.to_string(),
        )));
        headers.push(Header::To(rsip::headers::To::new(self.remote.to_string())));
        headers.push(Header::CallId(rsip::headers::CallId::new(
            self.call_id.clone(),
        )));
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{cseq} {method}"
        ))));
        let target_refresh = matches!(
            method,
            Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
        );
        if let (true, Some(c)) = (target_refresh, &self.local_contact) {
            headers.push(Header::Contact(rsip::headers::Contact::new(format!(
                "<{c}>"
            ))));
        }
        Ok(Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::uas::tests::{invite, ok_for};
    use crate::dialog::{Role, RouteSet};
    use crate::headers::{MessageExt, NameAddr};
    use crate::transport::Flow;
    use proptest::prelude::*;

    fn flow() -> Flow {
        Flow::udp(
            "10.0.0.1:5060".parse().unwrap(),
            "10.0.0.3:5060".parse().unwrap(),
        )
    }

    fn dialog() -> Dialog {
        let req = invite();
        Dialog::uas(&req, &ok_for(&req), flow()).unwrap()
    }

    #[test]
    fn loose_routing_keeps_the_remote_target_as_request_uri() {
        let mut d = dialog();
        let bye = d.next_request(Method::Bye).unwrap();
        assert_eq!(bye.uri.to_string(), "sip:gcti_provisioning@10.0.0.2:5062");
        let routes: Vec<_> = bye.header_values("Route").collect();
        assert_eq!(
            routes,
            ["<sip:10.0.0.3;lr;ftag=x>;foo=bar", "<sip:10.0.0.4:5080;lr>"]
        );
        assert_eq!(bye.header_value("From"), Some("<sip:8800@x>;tag=ours"));
        assert_eq!(
            bye.header_value("To"),
            Some("\"Phone\" <sip:gcti_provisioning@x>;tag=ph1")
        );
        assert_eq!(bye.call_id(), Some("call-1"));
        assert_eq!(bye.cseq(), Some((1, "BYE")));
        assert_eq!(bye.header_value("Max-Forwards"), Some("70"));
        assert!(bye.header_value("Contact").is_none());
    }

    #[test]
    fn strict_routing_puts_the_first_route_in_the_request_uri() {
        let mut d = dialog();
        d.route_set = RouteSet::new(vec![
            NameAddr::parse("<sip:10.0.0.7:5090;transport=udp>").unwrap(),
            NameAddr::parse("<sip:10.0.0.8;lr>").unwrap(),
        ]);
        let bye = d.next_request(Method::Bye).unwrap();
        // rsip prints the transport parameter upper-case (parameters compare case-insensitively).
        assert!(bye
            .uri
            .to_string()
            .eq_ignore_ascii_case("sip:10.0.0.7:5090;transport=udp"));
        let routes: Vec<_> = bye.header_values("Route").collect();
        assert_eq!(
            routes,
            ["<sip:10.0.0.8;lr>", "<sip:gcti_provisioning@10.0.0.2:5062>"]
        );
        match d.target() {
            Some(crate::Target::Address(_, a)) => assert_eq!(a.to_string(), "10.0.0.7:5090"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_route_set_no_route_headers() {
        let mut d = dialog();
        d.route_set = RouteSet::default();
        let info = d.next_request(Method::Info).unwrap();
        assert!(info.header_value("Route").is_none());
        assert_eq!(info.uri.to_string(), "sip:gcti_provisioning@10.0.0.2:5062");
        assert!(matches!(d.target(), Some(crate::Target::Flow(_))));
    }

    #[test]
    fn cseq_increments_and_ack_reuses_the_invite_number() {
        let mut d = dialog();
        assert_eq!(
            d.next_request(Method::Info).unwrap().cseq(),
            Some((1, "INFO"))
        );
        assert_eq!(
            d.next_request(Method::Bye).unwrap().cseq(),
            Some((2, "BYE"))
        );
        assert_eq!(d.local_cseq, 2);
        // A UAC dialog's ACK carries the INVITE's number without advancing it.
        d.role = Role::Uac;
        d.local_cseq = 9;
        assert_eq!(d.request(Method::Ack).unwrap().cseq(), Some((9, "ACK")));
        assert_eq!(d.local_cseq, 9);
        assert_eq!(
            d.next_request(Method::Bye).unwrap().cseq(),
            Some((10, "BYE"))
        );
    }

    #[test]
    fn target_refresh_carries_our_contact() {
        let mut d = dialog();
        let n = d.next_request(Method::Notify).unwrap();
        assert_eq!(n.header_value("Contact"), Some("<sip:ivr@10.0.0.1:5060>"));
    }

    proptest! {
        /// Whatever the route set, the routes of a loose-routed request are the set in order,
        /// and each next request's CSeq is one more.
        #[test]
        fn loose_routes_in_order(hosts in proptest::collection::vec((1u8..=254, 1024u16..65000), 0..6), start in 0u32..1_000_000) {
            let mut d = dialog();
            d.local_cseq = start;
            d.route_set = RouteSet::new(hosts.iter().map(|(h, p)| NameAddr::parse(&format!("<sip:10.1.0.{h}:{p};lr>")).unwrap()).collect());
            let r = d.next_request(Method::Bye).unwrap();
            let routes: Vec<String> = r.header_values("Route").map(str::to_owned).collect();
            let want: Vec<String> = hosts.iter().map(|(h, p)| format!("<sip:10.1.0.{h}:{p};lr>")).collect();
            prop_assert_eq!(routes, want);
            prop_assert_eq!(r.cseq().map(|c| c.0), Some(start + 1));
            prop_assert_eq!(r.uri.to_string(), "sip:gcti_provisioning@10.0.0.2:5062");
        }

        /// A strict first hop: the Request-URI is that hop and the remote target is the last
        /// Route; nothing is lost or reordered.
        #[test]
        fn strict_routes_rotate(hosts in proptest::collection::vec(1u8..=254, 1..6)) {
            let mut d = dialog();
            d.route_set = RouteSet::new(hosts.iter().enumerate().map(|(i, h)| {
                let lr = if i == 0 { "" } else { ";lr" };
                NameAddr::parse(&format!("<sip:10.2.0.{h}{lr}>")).unwrap()
            }).collect());
            let r = d.next_request(Method::Bye).unwrap();
            prop_assert_eq!(r.uri.to_string(), format!("sip:10.2.0.{}", hosts[0]));
            let routes: Vec<String> = r.header_values("Route").map(str::to_owned).collect();
            prop_assert_eq!(routes.len(), hosts.len());
            prop_assert_eq!(routes.last().unwrap().as_str(), "<sip:gcti_provisioning@10.0.0.2:5062>");
        }
    }
}
