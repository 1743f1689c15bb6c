//! Phone simulator and fleet load generator used by sipdm's end-to-end tests and benchmarks.
//!
//! * [`phone`]: one simulated desk phone (HTTP provisioning, the six vendors' file formats, a
//!   SIP user agent over UDP with digest authentication, RTP with RFC 4733 DTMF), and the
//!   zero-touch and IVR provisioning flows built from them.
//! * [`fleet`]: many phones at once, with time-to-provisioned percentiles and failures by step.
//! * [`dns_zone`]: a small authoritative DNS server (one in-memory zone over UDP and TCP) for
//!   RFC 3263 tests and the deployments' `fs1`/`fs2`/`fs3` names; `dns-zone` serves a file.
//!
//! The simulator does not use sipdm's own `sip` crate: it is an independent implementation, so
//! a passing end-to-end test is a check of the server against something it did not write.

pub mod dns_zone;
pub mod fleet;
pub mod phone;
