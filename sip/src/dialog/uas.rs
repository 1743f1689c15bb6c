//! The UAS side of a dialog (RFC 3261 §12.1.1): made from a received INVITE and the 1xx/2xx
//! we answer it with.

use rsip::{Header, Request, Response, StatusCode};

use super::{Dialog, DialogError, Role, RouteSet};
use crate::handler::IncomingRequest;
use crate::headers::{MessageExt, NameAddr};
use crate::transport::Flow;

/// A response to a dialog-creating request (§12.1.1): the transaction's response (Via, From,
/// To with our tag, Call-ID, CSeq) with every Record-Route header of the request copied in
/// order. Add the Contact (the remote target the peer will use) and the body.
pub fn dialog_response(req: &IncomingRequest, status: StatusCode) -> Response {
    let mut resp = req.response(status);
    copy_record_route(&req.request, &mut resp);
    resp
}

/// Copies every Record-Route header of `req` into `resp`, in order (§12.1.1: "the UAS MUST
/// copy all Record-Route header field values from the request into the response (including
/// the URIs, URI parameters, and any Record-Route header field parameters, whether they are
/// known or unknown to the UAS) and MUST maintain the order of those values").
pub fn copy_record_route(req: &Request, resp: &mut Response) {
    for h in req.headers.iter() {
        if let Header::RecordRoute(_) = h {
            resp.headers.push(h.clone());
        } else if let Header::Other(name, _) = h {
            if name.eq_ignore_ascii_case("Record-Route") {
                resp.headers.push(h.clone());
            }
        }
    }
}

impl Dialog {
    /// The dialog we hold as UAS after answering `invite` with `response` (a 1xx with a To
    /// tag or a 2xx, as built by [`dialog_response`]), `flow` being the one it came in on.
    /// Route set: the INVITE's Record-Route values in order; remote target: its Contact URI;
    /// remote CSeq: its CSeq; local CSeq: none yet (0, so the first request we send is 1).
    pub fn uas(invite: &Request, response: &Response, flow: Flow) -> Result<Dialog, DialogError> {
        let call_id = invite.call_id().ok_or(DialogError::Header("Call-ID"))?;
        let remote = invite
            .header_value("From")
            .and_then(|f| NameAddr::parse(f).ok())
            .ok_or(DialogError::Header("From"))?;
        let local = response
            .header_value("To")
            .and_then(|t| NameAddr::parse(t).ok())
            .ok_or(DialogError::Header("To"))?;
        if local.tag().is_none() {
            return Err(DialogError::NoLocalTag);
        }
        let remote_target = invite
            .header_value("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|c| c.uri)
            .ok_or(DialogError::Header("Contact"))?;
        let local_contact = response
            .header_value("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|c| c.uri);
        Ok(Dialog {
            role: Role::Uas,
            call_id: call_id.to_owned(),
            local,
            remote,
            remote_target,
            route_set: RouteSet::from_request(invite),
            local_contact,
            local_cseq: 0,
            remote_cseq: invite.cseq().map(|c| c.0),
            flow: Some(flow),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::headers::MessageExt;
    use rsip::headers::UntypedHeader;

    pub(crate) fn invite() -> Request {
        Request::try_from(
            "INVITE sip:8800@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKp\r\n\
             Via: SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK1\r\n\
             Record-Route: <sip:10.0.0.3;lr;ftag=x>;foo=bar\r\nRecord-Route: <sip:10.0.0.4:5080;lr>\r\n\
             From: \"Phone\" <sip:gcti_provisioning@x>;tag=ph1\r\nTo: <sip:8800@x>\r\nCall-ID: call-1\r\n\
             CSeq: 2 INVITE\r\nContact: <sip:gcti_provisioning@10.0.0.2:5062>\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
    }

    fn flow() -> Flow {
        Flow::udp(
            "10.0.0.1:5060".parse().unwrap(),
            "10.0.0.3:5060".parse().unwrap(),
        )
    }

    pub(crate) fn ok_for(req: &Request) -> Response {
        let mut r = Response::try_from(
            "SIP/2.0 200 OK\r\nFrom: <sip:gcti_provisioning@x>;tag=ph1\r\nTo: <sip:8800@x>;tag=ours\r\n\
             Call-ID: call-1\r\nCSeq: 2 INVITE\r\nContact: <sip:ivr@10.0.0.1:5060>\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        copy_record_route(req, &mut r);
        r
    }

    #[test]
    fn record_route_copied_into_the_2xx_in_order_with_params() {
        let req = invite();
        let r = ok_for(&req);
        let rr: Vec<_> = r.header_values("Record-Route").collect();
        assert_eq!(
            rr,
            ["<sip:10.0.0.3;lr;ftag=x>;foo=bar", "<sip:10.0.0.4:5080;lr>"]
        );
    }

    #[test]
    fn uas_dialog_from_invite_and_2xx() {
        let req = invite();
        let d = Dialog::uas(&req, &ok_for(&req), flow()).unwrap();
        assert_eq!(d.call_id, "call-1");
        assert_eq!(d.local_tag(), Some("ours"));
        assert_eq!(d.remote_tag(), Some("ph1"));
        assert_eq!(d.remote_target, "sip:gcti_provisioning@10.0.0.2:5062");
        assert_eq!(d.remote_cseq, Some(2));
        assert_eq!(d.local_cseq, 0);
        assert_eq!(d.local_contact.as_deref(), Some("sip:ivr@10.0.0.1:5060"));
        let uris: Vec<_> = d.route_set.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(uris, ["sip:10.0.0.3;lr;ftag=x", "sip:10.0.0.4:5080;lr"]);
        // Requests go to the first route: here the flow the INVITE came by.
        assert!(matches!(d.target(), Some(crate::Target::Flow(_))));
    }

    #[test]
    fn uas_dialog_needs_our_tag_and_a_contact() {
        let req = invite();
        let mut r = ok_for(&req);
        r.headers.retain(|h| !matches!(h, Header::To(_)));
        r.headers.push(Header::To(rsip::headers::To::new(
            "<sip:8800@x>".to_string(),
        )));
        assert_eq!(
            Dialog::uas(&req, &r, flow()).unwrap_err(),
            DialogError::NoLocalTag
        );
        let mut no_contact = req.clone();
        no_contact
            .headers
            .retain(|h| !matches!(h, Header::Contact(_)));
        assert_eq!(
            Dialog::uas(&no_contact, &ok_for(&req), flow()).unwrap_err(),
            DialogError::Header("Contact")
        );
    }
}
