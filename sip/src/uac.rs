//! Client transactions a caller drives (the UAC core of RFC 3261 §8.1, §13.2): the request
//! goes out through [`Endpoint::start_request`]; the caller sees provisional responses, gets
//! the final one (`#[must_use]`), may CANCEL a pending INVITE (§9.1), and ACKs a 2xx itself
//! (§13.2.2.4), re-ACKing its retransmissions. A 401/407 is answered once with the given
//! credentials ([`crate::auth::authorized_retry`]: next CSeq, same Call-ID and tags).

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response};
use tokio::sync::mpsc;

use crate::dialog::{Dialog, DialogError};
use crate::endpoint::SendError;
use crate::headers::MessageExt;
use crate::transaction::client::StartedClient;
use crate::{Endpoint, Target};

/// A digest user and password to answer one challenge with.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ..)", self.username)
    }
}

/// What a client transaction reports next.
#[derive(Debug)]
pub enum Progress {
    /// A 1xx (the transaction goes on).
    Provisional(Response),
    /// The final response, or the error that stands for one (§8.1.3.1: a timeout is 408, a
    /// transport error 503; see [`SendError::status`]).
    Final(Result<Response, SendError>),
}

/// Why the ACK of a 2xx could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error(transparent)]
    Dialog(#[from] DialogError),
    #[error(transparent)]
    Build(#[from] crate::dialog::BuildError),
    #[error("the dialog names no address to send to")]
    NoTarget,
    #[error(transparent)]
    Send(#[from] SendError),
}

/// One request and its (at most one) authenticated retry, as a client transaction the
/// caller drives.
#[must_use = "a client transaction's final response should be awaited"]
pub struct ClientTsx {
    ep: Endpoint,
    target: Target,
    /// The current attempt's request as the caller built it (no Via): a retry is made from it.
    request: Request,
    current: StartedClient,
    events: mpsc::UnboundedReceiver<Response>,
    events_tx: mpsc::UnboundedSender<Response>,
    credentials: Option<Credentials>,
    retried: bool,
    saw_provisional: bool,
    finished: bool,
}

impl ClientTsx {
    /// Sends `req` (built with [`crate::dialog::RequestBuilder`] or [`Dialog::next_request`])
    /// to `target`; the top Via is added by the transaction layer.
    pub fn send(ep: &Endpoint, req: Request, target: Target) -> Result<ClientTsx, SendError> {
        Self::start(ep, req, target, None)
    }

    /// [`ClientTsx::send`], answering one 401/407 with `credentials`.
    pub fn send_authenticated(
        ep: &Endpoint,
        req: Request,
        target: Target,
        credentials: Credentials,
    ) -> Result<ClientTsx, SendError> {
        Self::start(ep, req, target, Some(credentials))
    }

    fn start(
        ep: &Endpoint,
        req: Request,
        target: Target,
        credentials: Option<Credentials>,
    ) -> Result<ClientTsx, SendError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let current =
            ep.start_request(req.clone(), target.clone(), None, Some(events_tx.clone()))?;
        Ok(ClientTsx {
            ep: ep.clone(),
            target,
            request: req,
            current,
            events,
            events_tx,
            credentials,
            retried: false,
            saw_provisional: false,
            finished: false,
        })
    }

    /// The current attempt as sent, with its top Via (the retry once there is one).
    pub fn sent(&self) -> &Request {
        &self.current.request
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The next provisional response, or the final one. After the final, further calls
    /// return `Final(Err(..))`.
    pub async fn next(&mut self) -> Progress {
        loop {
            if self.finished {
                return Progress::Final(Err(SendError::Transaction(
                    crate::transaction::TsxError::Stopped,
                )));
            }
            tokio::select! {
                // Provisionals queued before the final are reported first.
                biased;
                Some(r) = self.events.recv() => {
                    if r.status_code.code() < 200 {
                        self.saw_provisional = true;
                        return Progress::Provisional(r);
                    }
                    // A 2xx retransmission can only follow the final: not reported here.
                }
                f = self.current.wait_final() => {
                    let resp = match f {
                        Ok(r) => r,
                        Err(e) => {
                            self.finished = true;
                            return Progress::Final(Err(e.into()));
                        }
                    };
                    if let Some(retry) = self.retry_for(&resp) {
                        match self.ep.start_request(
                            retry.clone(),
                            self.target.clone(),
                            None,
                            Some(self.events_tx.clone()),
                        ) {
                            Ok(next) => {
                                self.request = retry;
                                self.current = next;
                                self.saw_provisional = false;
                                continue;
                            }
                            Err(e) => {
                                self.finished = true;
                                return Progress::Final(Err(e));
                            }
                        }
                    }
                    self.finished = true;
                    return Progress::Final(Ok(resp));
                }
            }
        }
    }

    /// The retry answering `resp`, once, when it is a challenge and we have credentials.
    fn retry_for(&mut self, resp: &Response) -> Option<Request> {
        let code = resp.status_code.code();
        if self.retried || (code != 401 && code != 407) {
            return None;
        }
        let c = self.credentials.as_ref()?;
        let retry = crate::auth::authorized_retry(&self.request, resp, &c.username, &c.password)?;
        self.retried = true;
        Some(retry)
    }

    /// The final response, skipping provisionals.
    #[must_use = "the final response says whether the request succeeded"]
    pub async fn final_response(mut self) -> Result<Response, SendError> {
        self.final_response_mut().await
    }

    async fn final_response_mut(&mut self) -> Result<Response, SendError> {
        loop {
            if let Progress::Final(r) = self.next().await {
                return r;
            }
        }
    }

    /// The CANCEL of the current attempt (§9.1): its Request-URI, Call-ID, From, To, Route
    /// headers and CSeq number with method CANCEL. The top Via (same branch) is added when it
    /// is sent by [`ClientTsx::cancel`].
    pub fn cancel_request(&self) -> Request {
        let sent = &self.current.request;
        let mut headers: Vec<Header> = Vec::with_capacity(8);
        for h in sent.headers.iter() {
            match h {
                Header::Route(_) | Header::From(_) | Header::To(_) | Header::CallId(_) => {
                    headers.push(h.clone())
                }
                _ => {}
            }
        }
        let n = sent.cseq().map(|c| c.0).unwrap_or(1);
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{n} CANCEL"
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        Request {
            method: Method::Cancel,
            uri: sent.uri.clone(),
            version: rsip::Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        }
    }

    /// Cancels a pending INVITE (§9.1) and returns its final response: 487 normally, a 2xx
    /// when the callee answered first (the caller then ACKs and sends BYE, §15). The CANCEL is
    /// sent only once a provisional has arrived (§9.1: "the client MUST wait for the arrival
    /// of a provisional response"), with the INVITE's branch, to the same target.
    pub async fn cancel(&mut self) -> Result<Response, SendError> {
        if !self.saw_provisional {
            if let Progress::Final(r) = self.next().await {
                return r;
            }
        }
        let cancel = self.cancel_request();
        let started = self.ep.start_request(
            cancel,
            self.target.clone(),
            Some(self.current.branch.clone()),
            None,
        );
        match started {
            Ok(c) => {
                let call_id = self.request.call_id().unwrap_or_default().to_owned();
                tokio::spawn(async move {
                    if let Err(e) = c.final_response().await {
                        tracing::debug!(call_id, error = %e, "CANCEL got no answer");
                    }
                });
            }
            Err(e) => tracing::debug!(error = %e, "CANCEL not sent"),
        }
        self.final_response_mut().await
    }

    /// The UAC dialog a 2xx (or tagged 1xx) to this INVITE makes (§12.1.2).
    pub fn dialog(&self, resp: &Response) -> Result<Dialog, DialogError> {
        let flow = match &self.target {
            Target::Flow(f) => Some(*f),
            _ => None,
        };
        Dialog::uac(&self.request, resp, flow)
    }

    /// ACKs a 2xx of this INVITE within `dialog` (§13.2.2.4: the dialog's request with the
    /// INVITE's CSeq number, sent to the dialog's next hop outside any transaction), and
    /// ACKs again every retransmission of that 2xx until Timer M ends (RFC 6026).
    pub async fn ack(self, dialog: &Dialog) -> Result<(), AckError> {
        let mut ack = dialog.request(Method::Ack)?;
        // Credentials sent with the INVITE go with its ACK too (§22.1 allows it; proxies
        // that challenged the INVITE expect them).
        for h in self.request.headers.iter() {
            if matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_)) {
                ack.headers.push(h.clone());
            }
        }
        let target = dialog.target().ok_or(AckError::NoTarget)?;
        let sent = self.ep.send_stateless(ack, target.clone()).await?;
        let ClientTsx {
            ep,
            mut events,
            events_tx,
            ..
        } = self;
        drop(events_tx);
        let remote_tag = dialog.remote_tag().map(str::to_owned);
        tokio::spawn(async move {
            while let Some(again) = events.recv().await {
                let same_dialog = again
                    .header_value("To")
                    .and_then(|t| crate::headers::NameAddr::parse(t).ok())
                    .is_some_and(|t| t.tag().map(str::to_owned) == remote_tag);
                if again.status_code.code() / 100 == 2 && same_dialog {
                    let _ = ep.resend_stateless(&sent, &target).await;
                }
            }
        });
        Ok(())
    }
}

/// One request, its final response, one authenticated retry when `credentials` are given:
/// what an out-of-dialog NOTIFY or OPTIONS needs.
pub async fn request(
    ep: &Endpoint,
    req: Request,
    target: Target,
    credentials: Option<Credentials>,
) -> Result<Response, SendError> {
    ClientTsx::start(ep, req, target, credentials)?
        .final_response()
        .await
}

#[cfg(test)]
mod tests;
