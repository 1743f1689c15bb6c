//! The UAC side of a dialog (RFC 3261 §12.1.2): made from our INVITE and the 2xx (or 1xx
//! with a To tag) answering it.

use rsip::{Request, Response};

use super::{Dialog, DialogError, Role, RouteSet};
use crate::headers::{MessageExt, NameAddr};
use crate::transport::Flow;

impl Dialog {
    /// The dialog we hold as UAC after `response` to our `invite`. Route set: the response's
    /// Record-Route values in reverse order; remote target: its Contact URI (the INVITE's
    /// Request-URI when it has none); local CSeq: the INVITE's, so that
    /// [`Dialog::request`]`(ACK)` carries it (§13.2.2.4) and the next request gets one more.
    /// `flow`: the connection to keep using when no route set or Contact names an address.
    pub fn uac(
        invite: &Request,
        response: &Response,
        flow: Option<Flow>,
    ) -> Result<Dialog, DialogError> {
        let call_id = invite.call_id().ok_or(DialogError::Header("Call-ID"))?;
        let local = invite
            .header_value("From")
            .and_then(|f| NameAddr::parse(f).ok())
            .ok_or(DialogError::Header("From"))?;
        let remote = response
            .header_value("To")
            .and_then(|t| NameAddr::parse(t).ok())
            .ok_or(DialogError::Header("To"))?;
        if remote.tag().is_none() {
            return Err(DialogError::NoRemoteTag);
        }
        let remote_target = response
            .header_value("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|c| c.uri)
            .unwrap_or_else(|| invite.uri.to_string());
        let local_contact = invite
            .header_value("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|c| c.uri);
        Ok(Dialog {
            role: Role::Uac,
            call_id: call_id.to_owned(),
            local,
            remote,
            remote_target,
            route_set: RouteSet::from_response(response),
            local_contact,
            local_cseq: invite
                .cseq()
                .map(|c| c.0)
                .ok_or(DialogError::Header("CSeq"))?,
            remote_cseq: None,
            flow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::headers::UntypedHeader;

    #[test]
    fn uac_dialog_from_invite_and_2xx() {
        let invite = Request::try_from(
            "INVITE sip:8800@10.0.0.9 SIP/2.0\r\nFrom: <sip:1000@x>;tag=me\r\nTo: <sip:8800@10.0.0.9>\r\n\
             Call-ID: b-1\r\nCSeq: 4 INVITE\r\nContact: <sip:b2bua@10.0.0.1>\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let ok = Response::try_from(
            "SIP/2.0 200 OK\r\nRecord-Route: <sip:10.0.0.5;lr>, <sip:10.0.0.6;lr>\r\n\
             From: <sip:1000@x>;tag=me\r\nTo: <sip:8800@10.0.0.9>;tag=them\r\nCall-ID: b-1\r\nCSeq: 4 INVITE\r\n\
             Contact: <sip:ms@10.0.0.9:5070>\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let d = Dialog::uac(&invite, &ok, None).unwrap();
        assert_eq!(d.local_tag(), Some("me"));
        assert_eq!(d.remote_tag(), Some("them"));
        assert_eq!(d.remote_target, "sip:ms@10.0.0.9:5070");
        assert_eq!(d.local_cseq, 4);
        let uris: Vec<_> = d.route_set.iter().map(|r| r.uri.as_str()).collect();
        assert_eq!(uris, ["sip:10.0.0.6;lr", "sip:10.0.0.5;lr"]);
        match d.target() {
            Some(crate::Target::Address(_, a)) => assert_eq!(a.to_string(), "10.0.0.6:5060"),
            other => panic!("{other:?}"),
        }
        let mut untagged = ok.clone();
        untagged
            .headers
            .retain(|h| !matches!(h, rsip::Header::To(_)));
        untagged
            .headers
            .push(rsip::Header::To(rsip::headers::To::new(
                "<sip:8800@10.0.0.9>".to_string(),
            )));
        assert_eq!(
            Dialog::uac(&invite, &untagged, None).unwrap_err(),
            DialogError::NoRemoteTag
        );
    }
}
