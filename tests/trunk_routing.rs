//! Calls to external trunks through sipdm's B2BUA, over real UDP on loopback: sipp plays the
//! trunk (a media server: testbed/sipp/trunk_uas.xml) and the calling phone
//! (testbed/sipp/trunk_uac.xml); OPTIONS health checks decide which trunk of a prefix is used.

mod common;

use std::time::Duration;

use common::trunk::{call_through, call_with, raw_invite, wait_for_trunk, SippUas, MAC};
use common::{Db, TestServer};
use serde_json::json;

fn config(trunks: &[(&str, String)]) -> String {
    let mut c = String::from(
        r#"
[server]
http = "127.0.0.1:0"
sip = ["127.0.0.1:0"]
admin-token = "test-token"
secret = "test-secret"

[sip]
trunk-options-interval-ms = 200

[ivr]
number = "8800"
"#,
    );
    for (name, contact) in trunks {
        c.push_str(&format!(
            "\n[[trunks]]\nname = \"{name}\"\nprefix = \"88\"\ncontact = \"{contact}\"\noos-options-max-forwards = 1\ngroup = \"gcti_provisioning\"\n"
        ));
    }
    c
}

/// (a) The call goes to the external trunk as a new INVITE naming the device; the caller gets
/// the trunk's answer; the caller's BYE reaches the trunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_is_bridged_to_the_external_trunk() {
    let port = common::free_port();
    let uas = SippUas::start(port);
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config(&[("ms", format!("sip:127.0.0.1:{port}"))]),
    )
    .await;
    wait_for_trunk(&ts, "ms", |s| {
        s.in_service && s.last_probe.as_deref() == Some("200")
    })
    .await;

    let (ok, out) = call_through(&ts).await;
    assert!(ok, "sipp phone:\n{out}\ntrunk saw:\n{}", uas.messages());
    // The trunk's BYE 200 may trail the caller's by a few milliseconds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = uas.received();
    let invite = received
        .iter()
        .find(|m| m.contains("INVITE sip:8800@127.0.0.1"))
        .unwrap_or_else(|| panic!("no INVITE:\n{}", uas.messages()));
    assert!(
        invite.contains(&format!("X-Sipdm-Device: {MAC}")),
        "{invite}"
    );
    assert!(invite.contains("From: <sip:gcti_provisioning@"), "{invite}");
    assert!(invite.contains("Max-Forwards: 69"), "{invite}");
    assert!(invite.contains("m=audio"), "the caller's SDP: {invite}");
    assert!(
        received.iter().any(|m| m.contains("ACK sip:ms@127.0.0.1")),
        "no ACK:\n{}",
        uas.messages()
    );
    assert!(
        received.iter().any(|m| m.contains("BYE sip:ms@127.0.0.1")),
        "no BYE:\n{}",
        uas.messages()
    );
    let probe = received
        .iter()
        .find(|m| m.contains("OPTIONS sip:127.0.0.1"))
        .expect("an OPTIONS probe");
    assert!(
        probe.contains("Max-Forwards: 1"),
        "oos-options-max-forwards: {probe}"
    );
    ts.stop().await;
}

/// The media server hangs up: its BYE reaches the caller through the B2BUA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunk_hang_up_reaches_the_caller() {
    let port = common::free_port();
    let uas = SippUas::start_scenario(port, "trunk_uas_hangup.xml");
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config(&[("ms", format!("sip:127.0.0.1:{port}"))]),
    )
    .await;
    wait_for_trunk(&ts, "ms", |s| s.last_probe.as_deref() == Some("200")).await;
    let (ok, out) = call_with(&ts, "trunk_uac_hungup.xml").await;
    assert!(ok, "sipp phone:\n{out}\ntrunk saw:\n{}", uas.messages());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        uas.received()
            .iter()
            .any(|m| m.starts_with("SIP/2.0 200") || m.contains("\nSIP/2.0 200")),
        "BYE answered:\n{}",
        uas.messages()
    );
    ts.stop().await;
}

/// (b) Two trunks with the same prefix, the preferred one dead: the probes put it out of
/// service, the call goes to the peer; once the preferred trunk answers probes again it is
/// back in service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_goes_to_the_peer_when_the_preferred_trunk_is_out_of_service() {
    let dead = common::free_port();
    let port = common::free_port();
    let uas = SippUas::start(port);
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config(&[
            ("preferred", format!("sip:127.0.0.1:{dead}")),
            ("peer", format!("sip:127.0.0.1:{port}")),
        ]),
    )
    .await;
    wait_for_trunk(&ts, "preferred", |s| {
        !s.in_service && s.last_probe.as_deref() == Some("timeout")
    })
    .await;
    wait_for_trunk(&ts, "peer", |s| s.in_service).await;

    let (ok, out) = call_through(&ts).await;
    assert!(ok, "sipp phone:\n{out}\npeer saw:\n{}", uas.messages());
    assert!(
        uas.received()
            .iter()
            .any(|m| m.contains("INVITE sip:8800@127.0.0.1")),
        "peer saw:\n{}",
        uas.messages()
    );

    let revived = SippUas::start(dead);
    wait_for_trunk(&ts, "preferred", |s| s.in_service).await;
    drop(revived);
    ts.stop().await;
}

/// The preferred trunk is in service but answers the INVITE 503: the call goes to the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_goes_to_the_peer_when_the_preferred_trunk_answers_503() {
    let busy_port = common::free_port();
    let busy = SippUas::start_scenario(busy_port, "trunk_uas_503.xml");
    let port = common::free_port();
    let uas = SippUas::start(port);
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config(&[
            ("preferred", format!("sip:127.0.0.1:{busy_port}")),
            ("peer", format!("sip:127.0.0.1:{port}")),
        ]),
    )
    .await;
    wait_for_trunk(&ts, "preferred", |s| s.last_probe.as_deref() == Some("200")).await;

    let (ok, out) = call_through(&ts).await;
    assert!(
        ok,
        "sipp phone:\n{out}\npreferred saw:\n{}\npeer saw:\n{}",
        busy.messages(),
        uas.messages()
    );
    assert!(busy.saw_invite(), "preferred saw:\n{}", busy.messages());
    assert!(uas.saw_invite(), "peer saw:\n{}", uas.messages());
    ts.stop().await;
}

/// The only trunk is alive to OPTIONS but never answers the INVITE: after Timer B the caller
/// gets 503, not the 408 of the B leg's own timeout, so that a phone with a peer server
/// retries there at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_trunk_is_503_to_the_caller() {
    let port = common::free_port();
    let silent = SippUas::start_scenario(port, "trunk_uas_silent.xml");
    // T1 = 50 ms: Timer B (64·T1) fires after 3.2 s.
    let cfg = config(&[("only", format!("sip:127.0.0.1:{port}"))])
        .replace("[sip]\n", "[sip]\nt1-ms = 50\n");
    let ts = TestServer::start_with(Db::Sqlite, &cfg).await;
    wait_for_trunk(&ts, "only", |s| s.last_probe.as_deref() == Some("200")).await;
    let (ok, out) = call_with(&ts, "trunk_uac_503.xml").await;
    assert!(ok, "sipp phone:\n{out}\ntrunk saw:\n{}", silent.messages());
    assert!(silent.saw_invite(), "the trunk saw:\n{}", silent.messages());
    ts.stop().await;
}

/// (c) A number no trunk's prefix matches: 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_trunk_is_404() {
    let ts = TestServer::start_with(Db::Sqlite, &config(&[("ms", "sip:127.0.0.1:9".into())])).await;
    assert_eq!(raw_invite(&ts, "gcti_provisioning", "7000").await, "404");
    ts.stop().await;
}

/// (d) A DN whose authenticate-requests include invite, calling without credentials: 401, and
/// nothing reaches the trunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_without_credentials_is_challenged() {
    let port = common::free_port();
    let uas = SippUas::start(port);
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config(&[("ms", format!("sip:127.0.0.1:{port}"))]),
    )
    .await;
    let r = ts
        .post(
            "/dns",
            json!({"number": "1000", "password": "pw", "authenticate_requests": "register,invite"}),
        )
        .await;
    assert!(r.status().is_success(), "{:?}", r.text().await);
    assert_eq!(raw_invite(&ts, "1000", "8800").await, "401");
    assert!(
        !uas.received().iter().any(|m| m.contains("INVITE ")),
        "trunk saw:\n{}",
        uas.messages()
    );
    ts.stop().await;
}

/// Starts sipdm with one trunk played by sipp running `scenario`, in service.
async fn one_trunk(scenario: &str, sipp_args: &[&str]) -> (SippUas, TestServer) {
    let port = common::free_port();
    let uas = SippUas::start_with_args(port, scenario, sipp_args);
    let ts = TestServer::start_with(
        Db::Sqlite,
        &config(&[("ms", format!("sip:127.0.0.1:{port}"))]),
    )
    .await;
    wait_for_trunk(&ts, "ms", |s| s.last_probe.as_deref() == Some("200")).await;
    (uas, ts)
}

/// The trunk's messages of one kind (`"ACK sip:"`, `"CANCEL sip:"`) it received.
fn received_count(uas: &SippUas, start: &str) -> usize {
    uas.received().iter().filter(|m| m.contains(start)).count()
}

/// The trunk rings (180), then sends early media (183 with SDP), then answers: the caller
/// sees the 180 and the 183 with the trunk's SDP before the 200 (trunk_uac_early.xml requires
/// them in that order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ringing_and_early_media_reach_the_caller() {
    let (uas, ts) = one_trunk("trunk_uas_early.xml", &[]).await;
    let (ok, out) = call_with(&ts, "trunk_uac_early.xml").await;
    assert!(ok, "sipp phone:\n{out}\ntrunk saw:\n{}", uas.messages());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received_count(&uas, "BYE sip:ms@"), 1, "{}", uas.messages());
    ts.stop().await;
}

/// The caller gives up while the trunk rings: the trunk gets a CANCEL of its INVITE (and
/// sipdm ACKs its 487), the caller gets 487.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_cancel_cancels_the_trunk_leg() {
    let (uas, ts) = one_trunk("trunk_uas_cancel.xml", &[]).await;
    let (ok, out) = call_with(&ts, "trunk_uac_cancel.xml").await;
    assert!(ok, "sipp phone:\n{out}\ntrunk saw:\n{}", uas.messages());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = uas.received();
    let invite = received
        .iter()
        .find(|m| m.contains("INVITE sip:8800@"))
        .unwrap_or_else(|| panic!("no INVITE:\n{}", uas.messages()));
    let cancel = received
        .iter()
        .find(|m| m.contains("CANCEL sip:8800@"))
        .unwrap_or_else(|| panic!("no CANCEL:\n{}", uas.messages()));
    // §9.1: the CANCEL repeats the INVITE's branch.
    let branch = |m: &str| {
        let at = m.find("branch=").expect("a branch");
        m[at..]
            .split(|c: char| c == ';' || c.is_whitespace())
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(branch(invite), branch(cancel), "{}", uas.messages());
    assert_eq!(
        received_count(&uas, "ACK sip:8800@"),
        1,
        "the 487 ACKed:\n{}",
        uas.messages()
    );
    ts.stop().await;
}

/// The trunk challenges the call: the caller gets the 407 with the trunk's
/// Proxy-Authenticate, not a 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_challenge_reaches_the_caller() {
    let (uas, ts) = one_trunk("trunk_uas_407.xml", &[]).await;
    let (ok, out) = call_with(&ts, "trunk_uac_407.xml").await;
    assert!(ok, "sipp phone:\n{out}\ntrunk saw:\n{}", uas.messages());
    assert!(uas.saw_invite(), "trunk saw:\n{}", uas.messages());
    ts.stop().await;
}

/// The trunk's copy of our ACK is lost, so it sends its 200 again: sipdm ACKs it again
/// (the trunk scenario requires the second ACK before the BYE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_200_is_acked_again() {
    let (uas, ts) = one_trunk("trunk_uas_reack.xml", &["-nr"]).await;
    let (ok, out) = call_with(&ts, "trunk_uac.xml").await;
    assert!(ok, "sipp phone:\n{out}\ntrunk saw:\n{}", uas.messages());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received_count(&uas, "ACK sip:ms@"),
        2,
        "trunk saw:\n{}",
        uas.messages()
    );
    assert_eq!(received_count(&uas, "BYE sip:ms@"), 1, "{}", uas.messages());
    ts.stop().await;
}

/// With `[ivr] initial-page-url`, a call to the IVR number bridged to a media server names the
/// device-management VoiceXML application and the calling device in its Request-URI
/// (RFC 5552), so the media server needs no configuration of its own to run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_server_is_told_the_voicexml_application() {
    let port = common::free_port();
    let uas = SippUas::start(port);
    let toml = config(&[("ms", format!("sip:127.0.0.1:{port}"))]).replace(
        "[ivr]\nnumber = \"8800\"\n",
        "[ivr]\nnumber = \"8800\"\ninitial-page-url = \"http://fs-dm.example.test:8080/fs/dm/ivr\"\n",
    );
    let ts = TestServer::start_with(Db::Sqlite, &toml).await;
    wait_for_trunk(&ts, "ms", |s| s.in_service).await;
    let (ok, out) = call_through(&ts).await;
    assert!(ok, "sipp phone:\n{out}\ntrunk saw:\n{}", uas.messages());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = uas.received();
    let request_line = received
        .iter()
        .flat_map(|m| m.lines())
        .find(|l| l.starts_with("INVITE sip:"))
        .unwrap_or_else(|| panic!("no INVITE:\n{}", uas.messages()));
    assert!(
        request_line.contains(";voicexml=http%3A%2F%2Ffs-dm.example.test%3A8080%2Ffs%2Fdm%2Fivr")
            && request_line.contains(MAC),
        "the Request-URI does not name the application and the device: {request_line}"
    );
    ts.stop().await;
}
