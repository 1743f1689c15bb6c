//! sipdm's SIP stack. It knows nothing of HTTP, SQL or devices: storage and credentials sit
//! behind traits that the server crate implements.
//!
//! Layers, lowest first (a module only uses those above it in this list):
//!
//! * [`text`] — numbers and addresses as text for the hot paths;
//! * [`wire`] — framing, normalisation of awkward forms, parsing into rsip types;
//! * [`headers`] — typed reads of Via, From/To/Contact and parameters;
//! * [`stats`] — counters exported by the server crate;
//! * [`overload`] — when a new request is answered 503 + Retry-After instead of taken on;
//! * [`transport`] — UDP + TCP on one port, flows, events upward on a channel;
//! * [`transaction`] — RFC 3261 §17 client and server transactions, timers T1/T2/T4, A–K;
//! * [`handler`] — [`IncomingRequest`] and the [`RequestHandler`] chain;
//! * [`auth`] — digest challenge and verification, stateless nonces, throttling;
//! * [`registrar`] — RFC 3261 §10 bindings, expiry, events, the [`registrar::BindingStore`] trait;
//! * [`endpoint`] — transport → transactions → handlers, and the public start/stop API;
//! * [`dialog`] — dialogs (§12): route sets, in-dialog requests, the UAS 2xx that copies
//!   Record-Route, and out-of-dialog request building;
//! * [`uac`] — client transactions a caller drives: provisionals, one authenticated retry,
//!   CANCEL, the ACK of a 2xx.

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod fastmap;
pub mod handler;
pub mod headers;
pub mod overload;
pub mod registrar;
pub mod stats;
pub mod text;
pub mod transaction;
pub mod transport;
pub mod uac;
pub mod wire;

pub use endpoint::{Endpoint, EndpointConfig, StartError, Target};
pub use handler::{IncomingRequest, RequestHandler};
pub use rsip;

/// A boxed, sendable future: how the async traits here stay object-safe without extra crates.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
