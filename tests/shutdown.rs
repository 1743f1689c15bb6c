//! Stopping a server does not wait on the network: `sipdm serve` given SIGTERM while a trunk's
//! OPTIONS probe is in flight to a silent address (a probe waits up to its interval, 60 s
//! here) exits at once instead of waiting the probe out.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::free_port;
use common::node::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_probe_of_a_silent_trunk() {
    let dir = tempfile::tempdir().unwrap();
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sip = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        r#"
[server]
http = "{http}"
sip = ["{sip}"]
admin-token = "test-token"
secret = "test-secret"

[store]
url = "sqlite://{db}"

[sip]
t1-ms = 30000
trunk-options-interval-ms = 60000

[[trunks]]
name = "sbc"
prefix = "9"
contact = "sip:127.0.0.41:{silent}"
oos-options-max-forwards = 1
"#,
        db = dir.path().join("sipdm.db").display(),
        silent = free_port(),
    );
    let mut node = Node::start("sipdm", &config, http, sip).await;
    // Its first probe is out (and would wait up to 60 s for an answer).
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.signal("TERM");
    // Bounded: well below the 60 s the probe would hold it, far above a stop's milliseconds.
    let mut exited = false;
    for _ in 0..100 {
        if node.exited() {
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exited, "sipdm waited on the probe:\n{}", node.log_tail(10));
}
