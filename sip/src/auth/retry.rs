//! The client side of digest (RFC 3261 §22.2, §22.3): the retry of a request that was
//! challenged 401/407, carrying Authorization / Proxy-Authorization, with the next CSeq and
//! the same Call-ID and tags (§8.1.3.5).

use rsip::headers::UntypedHeader;
use rsip::{Header, Request, Response};

use super::{Algorithm, DigestChallenge};
use crate::headers::{new_tag, MessageExt};

/// The request to send again after `challenge` (a 401 or 407 to `req`), answering the first
/// challenge whose algorithm is known. `req` is the request as the caller built it (without
/// the transaction's Via). `None` when `challenge` is no challenge or none can be answered.
pub fn authorized_retry(
    req: &Request,
    challenge: &Response,
    username: &str,
    password: &str,
) -> Option<Request> {
    let code = challenge.status_code.code();
    let (challenge_name, proxy) = match code {
        401 => ("WWW-Authenticate", false),
        407 => ("Proxy-Authenticate", true),
        _ => return None,
    };
    let chosen = challenge
        .header_values(challenge_name)
        .filter_map(|v| DigestChallenge::parse(v).ok())
        .find(|c| {
            c.algorithm
                .as_deref()
                .is_none_or(|a| Algorithm::parse(a).is_some())
        })?;
    let answer = chosen
        .answer(
            &req.method.to_string(),
            &req.uri.to_string(),
            username,
            password,
            1,
            &new_tag(),
        )
        .ok()?;
    let mut headers: Vec<Header> = Vec::with_capacity(req.headers.iter().count() + 1);
    for h in req.headers.iter() {
        match h {
            // The transaction layer adds a Via with a new branch.
            Header::Via(_) => {}
            // An earlier answer of the same kind is replaced.
            Header::Authorization(_) if !proxy => {}
            Header::ProxyAuthorization(_) if proxy => {}
            Header::CSeq(c) => {
                let mut parts = c.value().split_whitespace();
                let n: u32 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
                let m = parts.next().unwrap_or("");
                headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
                    "{} {m}",
                    n.wrapping_add(1)
                ))));
            }
            other => headers.push(other.clone()),
        }
    }
    headers.push(if proxy {
        Header::ProxyAuthorization(rsip::headers::ProxyAuthorization::new(answer))
    } else {
        Header::Authorization(rsip::headers::Authorization::new(answer))
    });
    let mut retry = req.clone();
    retry.headers = headers.into();
    Some(retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::DigestResponse;

    fn notify() -> Request {
        Request::try_from(
            "NOTIFY sip:p@10.0.0.9:5062 SIP/2.0\r\nFrom: <sip:sipdm@h>;tag=a\r\nTo: <sip:p@10.0.0.9:5062>\r\n\
             Call-ID: c1\r\nCSeq: 7 NOTIFY\r\nEvent: check-sync\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
    }

    fn challenge(code: u16, header: &str) -> Response {
        let mut r = Response {
            status_code: code.into(),
            version: rsip::Version::V2,
            headers: Default::default(),
            body: Vec::new(),
        };
        r.headers.push(Header::Other(
            header.into(),
            r#"Digest realm="phone", nonce="abc", qop="auth", algorithm=MD5"#.into(),
        ));
        r
    }

    #[test]
    fn retry_answers_401_with_next_cseq_and_same_dialog_ids() {
        let req = notify();
        let retry = authorized_retry(&req, &challenge(401, "WWW-Authenticate"), "u", "pw").unwrap();
        assert_eq!(retry.cseq(), Some((8, "NOTIFY")));
        assert_eq!(retry.call_id(), Some("c1"));
        assert_eq!(retry.header_value("From"), req.header_value("From"));
        assert_eq!(retry.header_value("To"), req.header_value("To"));
        let auth = retry.header_value("Authorization").unwrap();
        let d = DigestResponse::parse(auth).unwrap();
        assert_eq!(d.uri, "sip:p@10.0.0.9:5062");
        let ha1 = Algorithm::Md5.hash(&["u", "phone", "pw"]);
        assert_eq!(d.expected("NOTIFY", &ha1).unwrap(), d.response);
        assert!(retry.header_value("Proxy-Authorization").is_none());
    }

    #[test]
    fn retry_answers_407_with_proxy_authorization() {
        let retry =
            authorized_retry(&notify(), &challenge(407, "Proxy-Authenticate"), "u", "pw").unwrap();
        assert!(retry.header_value("Proxy-Authorization").is_some());
        assert!(retry.header_value("Authorization").is_none());
    }

    #[test]
    fn no_retry_without_a_usable_challenge() {
        assert!(
            authorized_retry(&notify(), &challenge(403, "WWW-Authenticate"), "u", "p").is_none()
        );
        assert!(authorized_retry(&notify(), &challenge(401, "X-Other"), "u", "p").is_none());
    }
}
