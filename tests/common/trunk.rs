//! Trunk stand-ins and callers for the routing tests (tests/trunk_routing.rs, tests/dns_srv.rs):
//! sipp as the media server or SBC behind a trunk, sipp as the phone calling through it, and
//! a bare INVITE for the answers that need no dialog.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sipdm::sipside::trunks::TrunkState;

use super::TestServer;

/// The MAC of the unassigned phone whose default-file credentials the calls use.
pub const MAC: &str = "0004f2000abc";

fn sipp_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testbed/sipp")
}

/// sipp as a trunk (UAS) on 127.0.0.1:`port`, logging every message it sends and receives.
/// It answers OPTIONS probes as calls of their own, so it never ends by itself: it is killed
/// when dropped (or stopped).
pub struct SippUas {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SippUas {
    /// The answering trunk (`trunk_uas.xml`: 200 with SDP, then BYE handling).
    pub fn start(port: u16) -> SippUas {
        Self::start_scenario(port, "trunk_uas.xml")
    }

    pub fn start_scenario(port: u16, scenario: &str) -> SippUas {
        Self::start_with_args(port, scenario, &[])
    }

    /// [`SippUas::start_scenario`] with further sipp options (`-nr`: no retransmission
    /// handling, so that a repeated request — a re-sent ACK — reaches the scenario instead of
    /// making sipp repeat its last message).
    pub fn start_with_args(port: u16, scenario: &str, args: &[&str]) -> SippUas {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("uas_messages.log");
        let media = super::free_port().to_string();
        let child = Command::new("sipp")
            .args([
                "-sf",
                sipp_dir().join(scenario).to_str().expect("utf-8 path"),
            ])
            .args(["-p", &port.to_string(), "-i", "127.0.0.1", "-mp", &media])
            .args(["-nostdin", "-trace_msg"])
            .args(args)
            .args(["-message_file", log.to_str().expect("utf-8 path")])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("sipp is required (Debian package sip-tester; run testbed/test.sh): {e}")
            });
        SippUas {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn messages(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The messages this sipp received, split at sipp's log separators.
    pub fn received(&self) -> Vec<String> {
        self.messages()
            .split("----------------------------------------------- ")
            .filter(|m| m.contains("message received"))
            .map(str::to_owned)
            .collect()
    }

    /// Whether the IVR call (INVITE to 8800) reached this trunk.
    pub fn saw_invite(&self) -> bool {
        self.received()
            .iter()
            .any(|m| m.contains("INVITE sip:8800@"))
    }

    /// Kills it now (the trunk stops answering).
    pub fn stop(self) {}
}

impl Drop for SippUas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The device credentials the unassigned phone [`MAC`] finds in its default file.
pub async fn device_credentials(ts: &TestServer) -> (String, String) {
    let file = ts
        .fetch(
            // Polycom's settings ({MAC}.cfg is the master that names this file)
            &format!("{MAC}-phone.cfg"),
            Some("PolycomVVX-VVX_450-UA/6.3.0.14929"),
        )
        .await
        .text()
        .await
        .unwrap();
    let attr = |name: &str| {
        let at = file
            .find(&format!("{name}=\""))
            .unwrap_or_else(|| panic!("{name} in\n{file}"));
        let rest = &file[at + name.len() + 2..];
        rest[..rest.find('"').unwrap()].to_owned()
    };
    (attr("reg.1.auth.userId"), attr("reg.1.auth.password"))
}

/// sipp as the phone: INVITE 8800 with digest, 200 with the trunk's SDP, ACK, BYE.
pub async fn call_through(ts: &TestServer) -> (bool, String) {
    call_with(ts, "trunk_uac.xml").await
}

/// sipp as the phone, calling 8800 with the device's credentials through `scenario`.
pub async fn call_with(ts: &TestServer, scenario: &'static str) -> (bool, String) {
    let (user, password) = device_credentials(ts).await;
    let target = ts.sip_addr();
    let media = super::free_port().to_string();
    tokio::task::spawn_blocking(move || {
        super::sipp(
            target,
            scenario,
            "u1",
            &["-s", "8800", "-au", &user, "-ap", &password, "-mp", &media],
        )
    })
    .await
    .unwrap()
}

/// Waits (bounded, 10 s) until `check` holds for the named trunk's state.
pub async fn wait_for_trunk(ts: &TestServer, name: &str, check: impl Fn(&TrunkState) -> bool) {
    let trunks = ts.running.as_ref().unwrap().trunks.clone();
    for _ in 0..200 {
        if trunks.states().iter().any(|s| s.name == name && check(s)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "trunk {name} never reached the expected state: {:#?}",
        trunks.states()
    );
}

/// Sends one INVITE without credentials and returns the final status (waiting up to 10 s
/// between messages, so that a Timer B failover fits).
pub async fn raw_invite(ts: &TestServer, from_user: &str, to_user: &str) -> String {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:{to_user}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{id}\r\nMax-Forwards: 70\r\nFrom: <sip:{from_user}@{sip}>;tag=a\r\n\
         To: <sip:{to_user}@{sip}>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{from_user}@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: 0\r\n\r\n",
        sip = ts.sip_addr(),
        id = super::hex_id(),
    );
    sock.send_to(invite.as_bytes(), ts.sip_addr())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf)).await
    {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text.split_whitespace().nth(1).unwrap_or("").to_owned();
        }
    }
    "no final response".into()
}
