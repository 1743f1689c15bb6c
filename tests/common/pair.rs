//! The active-active pair as the process tests run it: two `sipdm` nodes on one store, each
//! with its own HTTP and SIP address, the built-in IVR behind trunk prefix 88.

use std::net::SocketAddr;

use testbed::phone::{Mac, PhoneSpec, Vendor};

use super::node::Node;

/// A loopback address.
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One node's configuration. Each node lists itself first among the SIP servers of the files
/// it renders: a phone registers to both and dials the IVR through the node that gave it its
/// file, through the other when that one does not answer. Its `fs_url` is its own address: a
/// phone re-fetches from the node that gave it its file, and from the other of its DHCP URLs
/// when that one does not answer (the other address of the pair's provisioning name).
pub fn config(store: &str, http: SocketAddr, me: SocketAddr, other: SocketAddr) -> String {
    format!(
        r#"
[server]
http = "{http}"
sip = ["{me}"]
admin-token = "test-token"
secret = "test-secret"

[store]
url = "{store}"
max-connections = 8

[dm]
fs_url = "http://{http}/fs"
sip-servers = ["{me}", "{other}"]

[ivr]
number = "8800"

[[trunks]]
name = "ivr"
prefix = "88"
contact = "builtin:ivr"
group = "gcti_provisioning"

# Every phone of these tests is new and fetches from 127.0.0.1: a roll-out of more new phones
# than the scan lockout allows one source, behind one NAT.
[prov-security]
trusted-networks = ["127.0.0.0/8"]
"#
    )
}

/// Phone `i` of a fleet spread over the pair: vendors in turn, even phones starting on `a`,
/// odd ones on `b`, each with the other node as its second provisioning URL.
pub fn phone_spec(i: u32, a: &Node, b: &Node) -> PhoneSpec {
    let vendor = Vendor::ALL[i as usize % Vendor::ALL.len()];
    let (first, second) = if i % 2 == 0 { (a, b) } else { (b, a) };
    PhoneSpec {
        mac: Mac::generated(vendor, i + 1),
        vendor,
        prov_url: first.prov_url(),
        fallback_prov_urls: vec![second.prov_url()],
        local_ip: [127, 0, 0, 1].into(),
    }
}
