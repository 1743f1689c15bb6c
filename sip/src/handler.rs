//! The TU side of a server transaction: [`IncomingRequest`] and the [`RequestHandler`] chain.
//! Each handler (registrar here; router, notifier and IVR in the server crate) takes a request
//! or passes it on; the endpoint's fallback answers what nobody took.

use rsip::{Request, Response, StatusCode};

use crate::transaction::Responder;
use crate::transport::Flow;
use crate::BoxFuture;

/// A request handed to the TU: the message, the flow it arrived on, and (except for ACK) the
/// responder of its server transaction.
pub struct IncomingRequest {
    pub request: Request,
    /// The flow the request arrived on (what a binding records).
    pub flow: Flow,
    responder: Option<Responder>,
}

impl IncomingRequest {
    pub fn new(request: Request, flow: Flow, responder: Option<Responder>) -> Self {
        IncomingRequest {
            request,
            flow,
            responder,
        }
    }

    /// A response with Via/From/To(+tag)/Call-ID/CSeq copied. For ACK (no transaction) the
    /// response is built but can never be sent.
    pub fn response(&self, status: StatusCode) -> Response {
        match &self.responder {
            Some(r) => r.response(status),
            None => Response {
                status_code: status,
                version: rsip::Version::V2,
                headers: Default::default(),
                body: Vec::new(),
            },
        }
    }

    /// Sends the final response (no-op for ACK).
    pub fn respond(self, resp: Response) {
        if let Some(r) = self.responder {
            r.respond(resp);
        }
    }

    /// Sends a final response without keeping the transaction (see
    /// [`Responder::respond_stateless`]): for digest challenges.
    pub fn respond_stateless(self, resp: Response) {
        if let Some(r) = self.responder {
            r.respond_stateless(resp);
        }
    }

    /// Sends a provisional response.
    pub fn provisional(&self, resp: &Response) {
        if let Some(r) = &self.responder {
            r.provisional(resp);
        }
    }

    /// Answers with just a status.
    pub fn reply(self, status: StatusCode) {
        let r = self.response(status);
        self.respond(r);
    }

    pub fn responder(&self) -> Option<&Responder> {
        self.responder.as_ref()
    }

    /// Splits off the responder, for TUs that keep the transaction open (INVITE handling).
    pub fn into_parts(self) -> (Request, Flow, Option<Responder>) {
        (self.request, self.flow, self.responder)
    }
}

/// A request handler: returns `None` when it took the request (and answered or will answer
/// it), or gives it back to be offered to the next handler.
///
/// The endpoint is handed to every call (as ezk hands its layers `&Endpoint`), so a handler
/// that sends requests of its own (a BYE, a NOTIFY, a bridged leg) needs no reference to the
/// endpoint that owns it: no late wiring, and no reference cycle.
pub trait RequestHandler: Send + Sync + 'static {
    fn handle<'a>(
        &'a self,
        ep: &'a crate::Endpoint,
        req: IncomingRequest,
    ) -> BoxFuture<'a, Option<IncomingRequest>>;
}
