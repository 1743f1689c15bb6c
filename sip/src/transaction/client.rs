//! Client transactions (RFC 3261 §17.1): INVITE (Figure 5) and non-INVITE (Figure 6).
//!
//! Each runs as a small task fed by the responses that match its [`ClientKey`]; the caller
//! awaits the final response. For a non-2xx final to an INVITE the transaction sends the ACK
//! itself and lingers for Timer D to re-ACK retransmitted finals.

use std::sync::Arc;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::key::ClientKey;
use super::TransactionLayer;
use crate::headers::{new_branch, MessageExt, Via};
use crate::stats::Stats;
use crate::transport::{Flow, TransportError};
use crate::wire::encode_request;

#[derive(Debug, thiserror::Error)]
pub enum TsxError {
    /// Timer B or F fired: treat as 408 (§8.1.3.1).
    #[error("transaction timed out")]
    Timeout,
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("request has no CSeq")]
    BadRequest,
    #[error("transaction layer stopped")]
    Stopped,
}

impl TsxError {
    pub fn status(&self) -> u16 {
        match self {
            TsxError::Timeout => 408,
            TsxError::Transport(_) | TsxError::Stopped => 503,
            TsxError::BadRequest => 400,
        }
    }
}

/// A client transaction under way, as [`TransactionLayer::start_request`] left it: the
/// request as sent (with our top Via, which a CANCEL must repeat, §9.1) and its final
/// response to come.
#[must_use = "a client transaction's final response should be awaited"]
pub struct StartedClient {
    /// The request with the top Via this transaction added.
    pub request: Request,
    /// The branch of that Via.
    pub branch: String,
    done: oneshot::Receiver<Result<Response, TsxError>>,
}

impl StartedClient {
    /// The final response (or the timeout / transport error that stands for one).
    pub async fn final_response(mut self) -> Result<Response, TsxError> {
        self.wait_final().await
    }

    /// [`StartedClient::final_response`] without giving the handle up (for `select!`); once
    /// it has returned, a further call returns [`TsxError::Stopped`].
    pub async fn wait_final(&mut self) -> Result<Response, TsxError> {
        (&mut self.done).await.unwrap_or(Err(TsxError::Stopped))
    }
}

impl TransactionLayer {
    /// Sends `req` down `flow` as a new client transaction and returns the final response.
    /// A top Via `SIP/2.0/<transport> <sent_by>;branch=…;rport` is added here.
    pub async fn send_request(
        self: &Arc<Self>,
        req: Request,
        flow: Flow,
        sent_by: &str,
    ) -> Result<Response, TsxError> {
        self.start_request(req, flow, sent_by, None, None)?
            .final_response()
            .await
    }

    /// Starts a client transaction without waiting for its answer. `branch`: the Via branch
    /// to use (a CANCEL repeats its INVITE's, §9.1); new when `None`. `observer` receives the
    /// provisional responses and, for an INVITE answered 2xx, the further 2xx responses that
    /// arrive for 64·T1 (RFC 6026 §8.4, Timer M: retransmissions the UAC core must re-ACK, and
    /// 2xx from other forks).
    pub fn start_request(
        self: &Arc<Self>,
        mut req: Request,
        flow: Flow,
        sent_by: &str,
        branch: Option<String>,
        observer: Option<mpsc::UnboundedSender<Response>>,
    ) -> Result<StartedClient, TsxError> {
        let branch = branch.unwrap_or_else(new_branch);
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            flow.protocol.as_str(),
            sent_by,
            branch
        );
        let mut headers: Vec<Header> = Vec::with_capacity(req.headers.iter().count() + 1);
        headers.push(Header::Via(rsip::headers::Via::new(via)));
        headers.extend(req.headers.iter().cloned());
        req.headers = headers.into();
        if req.cseq().is_none() {
            return Err(TsxError::BadRequest);
        }
        let key = ClientKey::new(&branch, req.method);
        let (tx, rx) = mpsc::unbounded_channel();
        self.clients.lock().insert(key.clone(), tx);
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(run_client(
            self.clone(),
            key,
            req.clone(),
            flow,
            rx,
            done_tx,
            observer,
        ));
        Ok(StartedClient {
            request: req,
            branch,
            done: done_rx,
        })
    }

    /// Delivers a response to its client transaction; false if none matched (stray).
    pub fn on_response(&self, resp: Response) -> bool {
        let Some(key) = ClientKey::of_response(&resp) else {
            Stats::inc(&self.stats.stray_responses);
            return false;
        };
        let tx = self.clients.lock().get(&key).cloned();
        match tx {
            Some(tx) => tx.send(resp).is_ok(),
            None => {
                Stats::inc(&self.stats.stray_responses);
                false
            }
        }
    }
}

async fn run_client(
    layer: Arc<TransactionLayer>,
    key: ClientKey,
    req: Request,
    mut flow: Flow,
    mut rx: mpsc::UnboundedReceiver<Response>,
    done: oneshot::Sender<Result<Response, TsxError>>,
    observer: Option<mpsc::UnboundedSender<Response>>,
) {
    let t = layer.timers;
    let invite = req.method == Method::Invite;
    let data = encode_request(&req);
    match layer.transmit.transmit(flow, data.clone()).await {
        Ok(used) => flow = used,
        Err(e) => {
            layer.clients.lock().remove(&key);
            let _ = done.send(Err(e.into()));
            return;
        }
    }
    let reliable = flow.protocol.is_reliable();
    // Timer B (INVITE) or F (non-INVITE).
    let deadline = Instant::now() + if invite { t.b() } else { t.f() };
    // Timer A or E.
    let mut interval = if invite { t.a() } else { t.e() };
    let mut next_retransmit = (!reliable).then(|| Instant::now() + interval);
    let mut done = Some(done);
    let final_resp = loop {
        let retransmit_at = next_retransmit.unwrap_or(deadline);
        tokio::select! {
            r = rx.recv() => {
                let Some(resp) = r else { break None };
                let code = resp.status_code.code();
                if code < 200 {
                    if let Some(o) = &observer {
                        let _ = o.send(resp);
                    }
                    if invite {
                        next_retransmit = None; // Proceeding: no more INVITE retransmits
                    } else if next_retransmit.is_some() {
                        interval = t.t2_capped();
                        next_retransmit = Some(Instant::now() + interval);
                    }
                    continue;
                }
                break Some(resp);
            }
            _ = tokio::time::sleep_until(retransmit_at.min(deadline)) => {
                if Instant::now() >= deadline {
                    if let Some(d) = done.take() { let _ = d.send(Err(TsxError::Timeout)); }
                    break None;
                }
                let _ = layer.transmit.transmit(flow, data.clone()).await;
                interval = if invite { interval * 2 } else { (interval * 2).min(t.t2_capped()) };
                next_retransmit = Some(Instant::now() + interval);
            }
        }
    };
    if let Some(resp) = final_resp {
        let code = resp.status_code.code();
        let ack = (invite && code >= 300).then(|| encode_request(&ack_for(&req, &resp)));
        if let Some(ack) = &ack {
            let _ = layer.transmit.transmit(flow, ack.clone()).await;
        }
        if let Some(d) = done.take() {
            let _ = d.send(Ok(resp));
        }
        // Completed: absorb retransmitted finals for Timer D (INVITE) or K (non-INVITE).
        let linger = if invite {
            if code >= 300 {
                t.d(flow.protocol)
            } else if observer.is_some() {
                t.m()
            } else {
                std::time::Duration::ZERO
            }
        } else {
            t.k(flow.protocol)
        };
        let until = Instant::now() + linger;
        while let Ok(Some(again)) = tokio::time::timeout_at(until, rx.recv()).await {
            if let Some(ack) = &ack {
                let _ = layer.transmit.transmit(flow, ack.clone()).await;
            } else if let (true, Some(o)) =
                (invite && again.status_code.code() / 100 == 2, &observer)
            {
                let _ = o.send(again);
            }
        }
    }
    layer.clients.lock().remove(&key);
}

/// ACK for a non-2xx final (§17.1.1.3): same Request-URI, Call-ID, From, top Via and Route;
/// To from the response (with its tag); CSeq number with method ACK.
pub fn ack_for(req: &Request, resp: &Response) -> Request {
    let mut headers: Vec<Header> = Vec::with_capacity(8);
    if let Some(v) = req.header_value("Via") {
        let top = crate::headers::params::split_top_level(v, b',')
            .next()
            .unwrap_or(v);
        let top = Via::parse(top)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| top.to_string());
        headers.push(Header::Via(rsip::headers::Via::new(top)));
    }
    for h in req.headers.iter() {
        match h {
            Header::From(_) | Header::CallId(_) | Header::Route(_) => headers.push(h.clone()),
            _ => {}
        }
    }
    if let Some(to) = resp.header_value("To") {
        headers.push(Header::To(rsip::headers::To::new(to)));
    }
    let n = req.cseq().map(|c| c.0).unwrap_or(1);
    headers.push(Header::CSeq(rsip::headers::CSeq::new(format!("{n} ACK"))));
    headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
    Request {
        method: Method::Ack,
        uri: req.uri.clone(),
        version: rsip::Version::V2,
        headers: headers.into(),
        body: Vec::new(),
    }
}
