//! A bare registrar on the sip crate, for trying it with sipp or a phone:
//! `cargo run --release -p sip --example registrar -- 127.0.0.1:5060 [auth]`.
//! With `auth`, every digest user `NAME` has password `NAME` and may register any AOR, so
//! sipp can register unique AORs with one `-au bench -ap bench` credential.

use std::sync::Arc;

/// The allocator matters at these rates: glibc malloc spent over half the CPU time in a
/// REGISTER load test (many small short-lived allocations); the server binary should do the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use sip::auth::{AuthError, Authenticator, Credential};
use sip::registrar::MemoryStore;
use sip::{BoxFuture, Endpoint, EndpointConfig};

/// Password = user name, for load tests with many distinct users.
struct UserIsPassword(bool);

impl Authenticator for UserIsPassword {
    fn must_authenticate<'a>(
        &'a self,
        _: &'a str,
        m: &'a sip::rsip::Method,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(std::future::ready(Ok(
            self.0 && *m == sip::rsip::Method::Register
        )))
    }
    fn credential<'a>(
        &'a self,
        _: &'a str,
        username: &'a str,
        _aor: &'a str,
    ) -> BoxFuture<'a, Result<Option<Credential>, AuthError>> {
        Box::pin(std::future::ready(Ok(Some(Credential::Password(
            username.to_string(),
        )))))
    }
}

/// Persists nothing: isolates the SIP path from store costs in measurements.
struct NullStore;

impl sip::registrar::BindingStore for NullStore {
    fn load_all(
        &self,
    ) -> BoxFuture<'_, Result<Vec<sip::registrar::Binding>, sip::registrar::StoreError>> {
        Box::pin(std::future::ready(Ok(vec![])))
    }
    fn apply(
        &self,
        _: Vec<sip::registrar::BindingChange>,
    ) -> BoxFuture<'_, Result<(), sip::registrar::StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:5060".into());
    let auth = args.next().as_deref() == Some("auth");
    let mut cfg = EndpointConfig::default();
    cfg.transport.listen = vec![addr.parse().expect("listen address")];
    if let Some(t1) = std::env::var("SIP_T1_MS").ok().and_then(|v| v.parse().ok()) {
        cfg.timers.t1 = std::time::Duration::from_millis(t1);
    }
    // SIP_NULL_STORE=1 measures the SIP path alone.
    let store: Arc<dyn sip::registrar::BindingStore> =
        if std::env::var_os("SIP_NULL_STORE").is_some() {
            Arc::new(NullStore)
        } else {
            Arc::new(MemoryStore::default())
        };
    let ep = Endpoint::start(cfg, store, Arc::new(UserIsPassword(auth)), vec![])
        .await
        .expect("start");
    eprintln!("listening on {:?} (auth: {auth})", ep.local_addrs());
    let _ = tokio::signal::ctrl_c().await;
    let s = ep.stats().snapshot();
    ep.shutdown().await;
    eprintln!("{s:?} bindings={}", ep.registrar().all_bindings().len());
}
