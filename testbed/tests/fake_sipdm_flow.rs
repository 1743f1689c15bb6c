//! The whole IVR provisioning flow of the simulated phone against a miniature stand-in for
//! sipdm written here (HTTP file server, digest-challenging registrar, IVR that plays RTP,
//! decodes RFC 4733 events, hangs up and sends check-sync), for every vendor and as a small
//! fleet. The real end-to-end test against sipdm lives in the server's tests/.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testbed::fleet::{run_fleet, FleetSpec, VendorChoice};
use testbed::phone::digest::{auth_params, Algorithm};
use testbed::phone::rtp::{build_packet, parse_event_payload, parse_packet, RtpHeader};
use testbed::phone::sip_msg::{response_to, uri_of, Outgoing, SipMsg, StartLine};
use testbed::phone::{
    CheckSyncAction, DtmfMode, Mac, Phone, PhoneOptions, PhoneSpec, Step, Vendor,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const IVR: &str = "8800";

#[derive(Default)]
struct State {
    /// mac → assigned DN.
    assigned: HashMap<String, String>,
    /// auth user → contact address of its latest binding.
    bindings: HashMap<String, SocketAddr>,
    /// Users with a live binding (AOR user part).
    registered: HashSet<String>,
    notifies_sent: usize,
    /// Every file name asked for over HTTP, in order.
    requests: Vec<String>,
    /// The provisioning URL the files give (default: this server's own).
    prov_url: Option<String>,
    /// Call-ID → the IVR call's channel for digits that arrive as SIP INFO.
    info: HashMap<String, tokio::sync::mpsc::UnboundedSender<char>>,
    /// The next this many file requests are answered 503 with `Retry-After: 1`.
    busy_http: usize,
    /// The next this many REGISTERs are answered 503 with `Retry-After: 1`.
    busy_sip: usize,
    /// When each file request and each REGISTER arrived, with the status it got.
    arrivals: Vec<(&'static str, u16, std::time::Instant)>,
}

type Shared = Arc<Mutex<State>>;

fn password_of(auth_user: &str) -> String {
    format!("pw-{auth_user}")
}

/// The vendor's file for `mac`: unassigned (gcti_provisioning, hotline) or assigned to `dn`;
/// `prov` is the provisioning URL (directory) it gives the phone.
fn render(vendor: Vendor, mac: &str, dn: Option<&str>, sip: SocketAddr, prov: &str) -> String {
    let (user, auth, hot) = match dn {
        Some(dn) => (dn.to_string(), dn.to_string(), ""),
        None => ("gcti_provisioning".to_string(), format!("prov-{mac}"), IVR),
    };
    let pw = password_of(&auth);
    let (h, p) = (sip.ip(), sip.port());
    match vendor {
        Vendor::Polycom => format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<polycomConfig device.set="1" device.prov.serverName.set="1" device.prov.serverName="{prov}" reg.1.address="{user}" reg.1.displayName="{user}" reg.1.auth.userId="{auth}" reg.1.auth.password="{pw}"
  reg.1.server.1.address="{h}" reg.1.server.1.port="{p}" reg.1.server.1.transport="UDPOnly" reg.1.server.1.register="1"
  reg.1.server.2.address="" reg.1.server.2.register="0"
  call.autoOffHook.1.enabled="{e}" call.autoOffHook.1.contact="{hot}"/>"#,
            e = if hot.is_empty() { 0 } else { 1 }
        ),
        Vendor::Yealink => format!(
            "#!version:1.0.0.1\naccount.1.enable = 1\naccount.1.user_name = {user}\naccount.1.auth_name = {auth}\naccount.1.password = {pw}\naccount.1.sip_server.1.address = {h}\naccount.1.sip_server.1.port = {p}\naccount.1.sip_server.1.transport_type = 0\naccount.1.sip_server.2.address = \nfeatures.hotline_number = {hot}\nstatic.auto_provision.server.url = {prov}\nsip.notify_reboot_enable = 0\n"
        ),
        Vendor::Cisco => format!(
            "<flat-profile><Provision_Enable>Yes</Provision_Enable><Profile_Rule>{prov}/spa$MA.xml</Profile_Rule><Line_Enable_1_ ua=\"na\">Yes</Line_Enable_1_><Proxy_1_ ua=\"na\">{h}:{p}</Proxy_1_><Register_1_>Yes</Register_1_><User_ID_1_>{user}</User_ID_1_><Use_Auth_ID_1_>Yes</Use_Auth_ID_1_><Auth_ID_1_>{auth}</Auth_ID_1_><Password_1_>{pw}</Password_1_><Dual_Registration_1_>No</Dual_Registration_1_><Dial_Plan_1_>{plan}</Dial_Plan_1_></flat-profile>",
            plan = if hot.is_empty() { "(*xx|xx.)".to_string() } else { format!("( S0 &lt;:{hot}&gt; )") }
        ),
        Vendor::Grandstream => format!(
            "<gs_provision version=\"1\"><mac>{mac}</mac><config version=\"1\"><P271>1</P271><P47>{h}:{p}</P47><P130>0</P130><P35>{user}</P35><P36>{auth}</P36><P34>{pw}</P34><P2312></P2312><P71>{hot}</P71><P212>1</P212><P237>{gs}</P237></config></gs_provision>",
            gs = prov.trim_start_matches("http://")
        ),
        Vendor::Snom => format!(
            "<settings><phone-settings><setting_server>{prov}/{mac}.xml</setting_server><user_active idx=\"1\">on</user_active><user_name idx=\"1\">{user}</user_name><user_pname idx=\"1\">{auth}</user_pname><user_pass idx=\"1\">{pw}</user_pass><user_host idx=\"1\">{h}:{p}</user_host><user_outbound idx=\"1\">{h}:{p};transport=udp</user_outbound><user_failover_identity idx=\"1\">none</user_failover_identity><auto_dial>{ad}</auto_dial><auto_dial_target>{hot}</auto_dial_target></phone-settings></settings>",
            ad = if hot.is_empty() { "off" } else { "1" }
        ),
        Vendor::AudioCodes => format!(
            "voip/line/0/enabled=1\nvoip/line/0/id={user}\nvoip/line/0/auth_name={auth}\nvoip/line/0/auth_password={pw}\nvoip/signalling/sip/sip_registrar/enabled=1\nvoip/signalling/sip/sip_registrar/addr={h}\nvoip/signalling/sip/sip_registrar/port={p}\nvoip/signalling/sip/transport_protocol=UDP\nvoip/line/0/auto_dial/enabled={e}\nvoip/line/0/auto_dial/dest={hot}\nprovisioning/configuration/url={prov}/\n",
            e = if hot.is_empty() { 0 } else { 1 }
        ),
    }
}

/// Vendor and MAC from a requested file name (of the last file of a chain).
fn file_owner(file: &str) -> Option<(Vendor, String)> {
    let (stem, ext) = file.rsplit_once('.')?;
    if let Some(m) = stem.strip_suffix("-phone") {
        return Some((Vendor::Polycom, m.to_string()));
    }
    let (vendor, mac) = if let Some(m) = stem.strip_prefix("spa") {
        (Vendor::Cisco, m)
    } else if let Some(m) = stem.strip_prefix("cfg") {
        (Vendor::Grandstream, m)
    } else if ext == "xml" {
        (Vendor::Snom, stem)
    } else {
        // .cfg: the OUI tells Polycom, Yealink and AudioCodes apart.
        let v = Vendor::ALL
            .into_iter()
            .find(|v| stem.starts_with(&hex::encode(v.oui())))?;
        (v, stem)
    };
    Some((vendor, mac.to_string()))
}

/// The files before a phone's own: Polycom's per-MAC master, Cisco's factory profile.
/// Yealink's common file is not served (404: the phone carries on with its own).
fn chain_file(file: &str, prov: &str) -> Option<String> {
    if file == "spa504G.cfg" {
        return Some(format!(
            "<flat-profile><Provision_Enable>Yes</Provision_Enable><Resync_From_SIP>Yes</Resync_From_SIP><Profile_Rule>{prov}/spa$MA.xml</Profile_Rule></flat-profile>"
        ));
    }
    let stem = file.strip_suffix(".cfg")?;
    let polycom = hex::encode(Vendor::Polycom.oui());
    (stem.len() == 12 && stem.starts_with(&polycom)).then(|| {
        format!(r#"<APPLICATION APP_FILE_PATH="sip.ld" CONFIG_FILES="{stem}-phone.cfg"/>"#)
    })
}

async fn http_server(listener: TcpListener, state: Shared, sip: SocketAddr) {
    let own = format!("http://{}/fs/dm/prov", listener.local_addr().unwrap());
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let state = Arc::clone(&state);
        let own = own.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            let inm = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("if-none-match: ")
                        .or_else(|| l.strip_prefix("If-None-Match: "))
                })
                .map(str::to_string);
            let ua_ok = head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("user-agent: "));
            let file = path.rsplit('/').next().unwrap_or_default();
            let (prov, busy) = {
                let mut s = state.lock().unwrap();
                s.requests.push(file.to_string());
                let busy = s.busy_http > 0;
                s.busy_http = s.busy_http.saturating_sub(1);
                let code = if busy { 503 } else { 200 };
                s.arrivals.push(("GET", code, std::time::Instant::now()));
                (s.prov_url.clone().unwrap_or_else(|| own.clone()), busy)
            };
            if busy {
                let _ = conn
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
            let resp = match (ua_ok, chain_file(file, &prov), file_owner(file)) {
                (true, Some(body), _) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
                (true, None, Some((vendor, mac))) => {
                    let dn = state.lock().unwrap().assigned.get(&mac).cloned();
                    let etag = format!("\"{}\"", dn.as_deref().unwrap_or("default"));
                    if inm.as_deref() == Some(etag.as_str()) {
                        "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_string()
                    } else {
                        let body = render(vendor, &mac, dn.as_deref(), sip, &prov);
                        format!("HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    }
                }
                _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string(),
            };
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

/// Verifies an Authorization / Proxy-Authorization value (MD5, qop=auth) for `method`.
fn digest_ok(value: Option<&str>, method: &str) -> Option<String> {
    let params = auth_params(value?.strip_prefix("Digest ")?);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let user = get("username");
    let a = Algorithm::Md5;
    let ha1 = a.hash_hex(&format!("{user}:fake:{}", password_of(&user)));
    let ha2 = a.hash_hex(&format!("{method}:{}", get("uri")));
    let want = a.hash_hex(&format!(
        "{ha1}:{}:{}:{}:auth:{ha2}",
        get("nonce"),
        get("nc"),
        get("cnonce")
    ));
    (get("response") == want).then_some(user)
}

fn challenge(req: &SipMsg, code: u16) -> Vec<u8> {
    let name = if code == 401 {
        "WWW-Authenticate"
    } else {
        "Proxy-Authenticate"
    };
    let mut out = Outgoing::new();
    for (n, v) in &req.headers {
        if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|h| n.eq_ignore_ascii_case(h))
        {
            out = out.header(n, v.as_str());
        }
    }
    out.header(
        "To",
        format!("{};tag=fk", req.header("To").unwrap_or_default()),
    )
    .header(
        name,
        r#"Digest realm="fake", nonce="abc", algorithm=MD5, qop="auth""#,
    )
    .response(code)
}

async fn sip_server(sock: Arc<UdpSocket>, state: Shared) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let Ok(msg) = SipMsg::parse(&buf[..n]) else {
            continue;
        };
        let StartLine::Request { method, .. } = &msg.start else {
            continue;
        };
        match method.as_str() {
            "REGISTER" => {
                let busy = {
                    let mut s = state.lock().unwrap();
                    let busy = s.busy_sip > 0;
                    s.busy_sip = s.busy_sip.saturating_sub(1);
                    let code = if busy { 503 } else { 0 };
                    s.arrivals
                        .push(("REGISTER", code, std::time::Instant::now()));
                    busy
                };
                if busy {
                    let mut out = Outgoing::new();
                    for (n, v) in &msg.headers {
                        if ["Via", "From", "To", "Call-ID", "CSeq"]
                            .iter()
                            .any(|h| n.eq_ignore_ascii_case(h))
                        {
                            out = out.header(n, v.as_str());
                        }
                    }
                    let _ = sock
                        .send_to(&out.header("Retry-After", "1").response(503), from)
                        .await;
                    continue;
                }
                let Some(auth_user) = digest_ok(msg.header("Authorization"), "REGISTER") else {
                    let _ = sock.send_to(&challenge(&msg, 401), from).await;
                    continue;
                };
                let contact = msg.header("Contact").unwrap_or_default().to_string();
                let aor_user = uri_of(msg.header("To").unwrap_or_default())
                    .trim_start_matches("sip:")
                    .split('@')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                {
                    let mut s = state.lock().unwrap();
                    if msg.header("Expires") == Some("0") {
                        s.registered.remove(&format!("{auth_user}/{aor_user}"));
                    } else {
                        s.registered.insert(format!("{auth_user}/{aor_user}"));
                        s.bindings.insert(auth_user, from);
                    }
                }
                let ok = Outgoing::new()
                    .header("Via", msg.header("Via").unwrap_or_default())
                    .header("From", msg.header("From").unwrap_or_default())
                    .header(
                        "To",
                        format!("{};tag=fk", msg.header("To").unwrap_or_default()),
                    )
                    .header("Call-ID", msg.call_id().unwrap_or_default())
                    .header("CSeq", msg.header("CSeq").unwrap_or_default())
                    .header("Contact", format!("{contact};expires=300"))
                    .response(200);
                let _ = sock.send_to(&ok, from).await;
            }
            "INVITE" => {
                let Some(auth_user) = digest_ok(msg.header("Proxy-Authorization"), "INVITE") else {
                    let _ = sock.send_to(&challenge(&msg, 407), from).await;
                    continue;
                };
                let _ = sock.send_to(&response_to(&msg, 100, "ivr"), from).await;
                tokio::spawn(ivr_call(
                    Arc::clone(&sock),
                    Arc::clone(&state),
                    msg,
                    from,
                    auth_user,
                ));
            }
            "ACK" => {}
            "INFO" => {
                let body = String::from_utf8_lossy(&msg.body).into_owned();
                let key = body
                    .lines()
                    .find_map(|l| l.strip_prefix("Signal="))
                    .and_then(|k| k.trim().chars().next());
                let tx = state
                    .lock()
                    .unwrap()
                    .info
                    .get(msg.call_id().unwrap_or_default())
                    .cloned();
                if let (Some(k), Some(tx)) = (key, tx) {
                    let _ = tx.send(k);
                }
                assert_eq!(msg.header("Content-Type"), Some("application/dtmf-relay"));
                let _ = sock.send_to(&response_to(&msg, 200, "fk"), from).await;
            }
            _ => {
                let _ = sock.send_to(&response_to(&msg, 200, "fk"), from).await;
            }
        }
    }
}

/// Answers the call, plays a "prompt", collects digits until `#`, assigns, hangs up, NOTIFYs.
async fn ivr_call(
    sock: Arc<UdpSocket>,
    state: Shared,
    invite: SipMsg,
    from: SocketAddr,
    auth_user: String,
) {
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sdp = String::from_utf8_lossy(&invite.body).into_owned();
    let phone_rtp: SocketAddr = {
        let port = sdp
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next())
            .unwrap();
        format!("127.0.0.1:{port}").parse().unwrap()
    };
    let answer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        rtp.local_addr().unwrap().port()
    );
    let sip_addr = sock.local_addr().unwrap();
    let to = format!("{};tag=ivr", invite.header("To").unwrap_or_default());
    let ok = Outgoing::new()
        .header("Via", invite.header("Via").unwrap_or_default())
        .header("From", invite.header("From").unwrap_or_default())
        .header("To", to.as_str())
        .header("Call-ID", invite.call_id().unwrap_or_default())
        .header("CSeq", invite.header("CSeq").unwrap_or_default())
        .header("Contact", format!("<sip:{IVR}@{sip_addr}>"))
        .body("application/sdp", answer.into_bytes())
        .response(200);
    let _ = sock.send_to(&ok, from).await;

    let (info_tx, mut info_rx) = tokio::sync::mpsc::unbounded_channel();
    state
        .lock()
        .unwrap()
        .info
        .insert(invite.call_id().unwrap_or_default().to_string(), info_tx);
    let mut digits = String::new();
    let mut seen_ts = HashSet::new();
    let mut seq = 0u16;
    let mut buf = [0u8; 2048];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !digits.ends_with('#') && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = tick.tick() => {
                seq = seq.wrapping_add(1);
                let p = build_packet(&RtpHeader { marker: seq == 1, payload_type: 0, sequence: seq, timestamp: u32::from(seq) * 160, ssrc: 42 }, &[0xff; 160]);
                let _ = rtp.send_to(&p, phone_rtp).await;
            }
            Some(k) = info_rx.recv() => digits.push(k),
            r = rtp.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                let Ok((h, payload)) = parse_packet(&buf[..n]) else { continue };
                if h.payload_type != 101 { continue }
                if let Some((ev, true, _)) = parse_event_payload(payload) {
                    if seen_ts.insert(h.timestamp) {
                        digits.push(match ev { 0..=9 => char::from(b'0' + ev), 10 => '*', 11 => '#', _ => '?' });
                    }
                }
            }
        }
    }
    let dn = digits.trim_end_matches('#').to_string();
    let mac = auth_user.trim_start_matches("prov-").to_string();
    state.lock().unwrap().assigned.insert(mac, dn);

    // BYE (From/To swapped), then the check-sync to the binding's contact.
    let bye = Outgoing::new()
        .header(
            "Via",
            format!(
                "SIP/2.0/UDP {sip_addr};branch=z9hG4bKbye{}",
                testbed::phone::sip_msg::token()
            ),
        )
        .header("From", to.as_str())
        .header("To", invite.header("From").unwrap_or_default())
        .header("Call-ID", invite.call_id().unwrap_or_default())
        .header("CSeq", "1 BYE")
        .request("BYE", &format!("sip:x@{from}"))
        .unwrap();
    let _ = sock.send_to(&bye, from).await;
    let contact = state
        .lock()
        .unwrap()
        .bindings
        .get(&auth_user)
        .copied()
        .unwrap_or(from);
    let notify = Outgoing::new()
        .header(
            "Via",
            format!(
                "SIP/2.0/UDP {sip_addr};branch=z9hG4bKn{}",
                testbed::phone::sip_msg::token()
            ),
        )
        .header("From", format!("<sip:dm@{sip_addr}>;tag=dm"))
        .header("To", format!("<sip:gcti_provisioning@{contact}>"))
        .header("Call-ID", testbed::phone::sip_msg::token())
        .header("CSeq", "1 NOTIFY")
        .header("Event", "check-sync")
        .header("Subscription-State", "terminated")
        .request("NOTIFY", &format!("sip:gcti_provisioning@{contact}"))
        .unwrap();
    let _ = sock.send_to(&notify, contact).await;
    state.lock().unwrap().notifies_sent += 1;
}

async fn start_fake() -> (String, Shared) {
    let state: Shared = Arc::default();
    let sip = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sip_addr = sip.local_addr().unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/fs/dm/prov", http.local_addr().unwrap());
    tokio::spawn(sip_server(sip, Arc::clone(&state)));
    tokio::spawn(http_server(http, Arc::clone(&state), sip_addr));
    (url, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vendor_is_ivr_provisioned() {
    let (url, state) = start_fake().await;
    for (i, vendor) in Vendor::ALL.into_iter().enumerate() {
        let mac = Mac::generated(vendor, 100 + i as u32);
        let dn = format!("{}", 2000 + i);
        let spec = PhoneSpec {
            mac,
            vendor,
            prov_url: url.clone(),
            fallback_prov_urls: Vec::new(),
            local_ip: "127.0.0.1".parse().unwrap(),
        };
        let options = PhoneOptions {
            dtmf: if vendor == Vendor::Cisco {
                DtmfMode::SipInfo
            } else {
                DtmfMode::Rfc4733
            },
            overall_timeout: Duration::from_secs(30),
            ..PhoneOptions::default()
        };
        let mut phone = Phone::with_options(spec, options).await.unwrap();
        let p = phone
            .run_ivr_provisioning(&dn)
            .await
            .unwrap_or_else(|e| panic!("{vendor}: {e}"));
        assert_eq!(p.config.user, dn, "{vendor}");
        assert_eq!(p.config.auth_user, dn, "{vendor}");
        let steps: Vec<Step> = p.timings.iter().map(|t| t.step).collect();
        assert_eq!(steps, Step::ALL.to_vec(), "{vendor}: every step timed");
        let call = p.call.as_ref().unwrap();
        assert!(call.ivr_hung_up, "{vendor}");
        let expected_events = if vendor == Vendor::Cisco {
            0
        } else {
            dn.len() as u64 + 1
        };
        assert_eq!(
            call.media.events_sent, expected_events,
            "{vendor}: DN digits and # (Cisco keys by INFO)"
        );
        assert!(call.media.received >= 5, "{vendor}: heard the prompt");
        assert!(call.provisional.contains(&100));
        assert_eq!(phone.check_sync_count(), 1, "{vendor}");
        assert_eq!(p.notifies, vec!["check-sync".to_string()]);
        // What the file says a check-sync does: Polycom (alwaysReboot unset = 0) and AudioCodes
        // reboot because the file changed; the others re-fetch.
        let action = match vendor {
            Vendor::Polycom | Vendor::AudioCodes => CheckSyncAction::Reboot,
            _ => CheckSyncAction::Refetch,
        };
        assert_eq!(
            p.check_sync_actions,
            vec![("check-sync".to_string(), action)],
            "{vendor}"
        );
        let s = state.lock().unwrap();
        assert_eq!(s.assigned.get(&mac.plain()), Some(&dn), "{vendor}");
        assert!(
            s.registered.contains(&format!("{dn}/{dn}")),
            "{vendor}: new DN registered"
        );
        assert!(
            !s.registered
                .contains(&format!("prov-{}/gcti_provisioning", mac.plain())),
            "{vendor}: provisioning identity unregistered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_touch_after_assignment_and_conditional_refetch() {
    let (url, state) = start_fake().await;
    let mac = Mac::generated(Vendor::Yealink, 7);
    state
        .lock()
        .unwrap()
        .assigned
        .insert(mac.plain(), "1000".into());
    let spec = PhoneSpec {
        mac,
        vendor: Vendor::Yealink,
        prov_url: url,
        fallback_prov_urls: Vec::new(),
        local_ip: "127.0.0.1".parse().unwrap(),
    };
    let mut phone = Phone::new(spec).await.unwrap();
    let p = phone.run_zero_touch().await.unwrap();
    assert_eq!(p.config.user, "1000");
    assert!(p.registered[0].challenged);
    assert_eq!(p.registered[0].expires, 300);
    // Unchanged file: the conditional GET gets a 304.
    assert_eq!(phone.fetch_config().await.unwrap(), None);
    // The chain: Yealink's common file (404 here), then its own.
    let asked = state.lock().unwrap().requests.clone();
    let own = format!("{}.cfg", mac.plain());
    assert_eq!(
        asked,
        [
            "y000000000066.cfg",
            own.as_str(),
            "y000000000066.cfg",
            own.as_str()
        ]
    );
}

/// A file fetch and a REGISTER answered 503 with Retry-After are each waited out and asked
/// again, as phones do (never sooner than the server asked); the registration is then due for
/// refresh at a random point between 70 and 90 % of the 300 s granted, and a refresh
/// registers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_waited_out_and_refreshes_are_jittered() {
    let (url, state) = start_fake().await;
    let mac = Mac::generated(Vendor::Yealink, 9);
    {
        let mut s = state.lock().unwrap();
        s.assigned.insert(mac.plain(), "1001".into());
        s.busy_http = 1;
        s.busy_sip = 1;
    }
    let spec = PhoneSpec {
        mac,
        vendor: Vendor::Yealink,
        prov_url: url,
        fallback_prov_urls: Vec::new(),
        local_ip: "127.0.0.1".parse().unwrap(),
    };
    let mut phone = Phone::new(spec).await.unwrap();
    let started = std::time::Instant::now();
    let p = phone.run_zero_touch().await.unwrap();
    let registered = std::time::Instant::now();
    assert_eq!(p.config.user, "1001");
    assert_eq!(
        phone.retry_after_waits(),
        2,
        "one 503 of each kind waited out"
    );
    let arrivals = state.lock().unwrap().arrivals.clone();
    for kind in ["GET", "REGISTER"] {
        let of_kind: Vec<_> = arrivals.iter().filter(|a| a.0 == kind).collect();
        assert_eq!(of_kind[0].1, 503, "{kind}: {arrivals:?}");
        let gap = of_kind[1].2 - of_kind[0].2;
        assert!(
            gap >= Duration::from_millis(990),
            "{kind} asked again {gap:?} after a 503 with Retry-After: 1"
        );
    }
    let due = phone
        .refresh_due()
        .expect("a refresh is due once registered");
    assert!(
        due >= started + Duration::from_secs(210) && due <= registered + Duration::from_secs(270),
        "refresh at 70-90 % of 300 s: due in {:?}",
        due - registered
    );
    // Ten phones registered together are not all due at once.
    let mut dues = Vec::new();
    for i in 0..10 {
        let mac = Mac::generated(Vendor::Yealink, 20 + i);
        state
            .lock()
            .unwrap()
            .assigned
            .insert(mac.plain(), format!("{}", 1100 + i));
        let mut p = Phone::new(PhoneSpec {
            mac,
            vendor: Vendor::Yealink,
            prov_url: phone.spec().prov_url.clone(),
            fallback_prov_urls: Vec::new(),
            local_ip: "127.0.0.1".parse().unwrap(),
        })
        .await
        .unwrap();
        p.run_zero_touch().await.unwrap();
        dues.push(p.refresh_due().unwrap());
    }
    let spread = *dues.iter().max().unwrap() - *dues.iter().min().unwrap();
    assert!(
        spread > Duration::from_secs(5),
        "refreshes spread: {spread:?}"
    );
    // The refresh itself: registered again, next one later.
    let before = state
        .lock()
        .unwrap()
        .arrivals
        .iter()
        .filter(|a| a.0 == "REGISTER")
        .count();
    phone.refresh().await.unwrap();
    let after = state
        .lock()
        .unwrap()
        .arrivals
        .iter()
        .filter(|a| a.0 == "REGISTER")
        .count();
    assert_eq!(after - before, 2, "challenged, then registered");
    assert!(phone.refresh_due().unwrap() > due - Duration::from_secs(60));
}

/// After the first walk (from DHCP), every fetch goes where the files said, for every vendor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refetch_goes_where_the_file_says_not_to_dhcp() {
    let (dhcp, first) = start_fake().await;
    let (elsewhere, second) = start_fake().await;
    first.lock().unwrap().prov_url = Some(elsewhere.clone());
    for (i, vendor) in Vendor::ALL.into_iter().enumerate() {
        let mac = Mac::generated(vendor, 200 + i as u32);
        let spec = PhoneSpec {
            mac,
            vendor,
            prov_url: dhcp.clone(),
            fallback_prov_urls: Vec::new(),
            local_ip: "127.0.0.1".parse().unwrap(),
        };
        let mut phone = Phone::new(spec).await.unwrap();
        first.lock().unwrap().requests.clear();
        second.lock().unwrap().requests.clear();
        let cfg = phone.fetch_config().await.unwrap().unwrap();
        assert_eq!(cfg.user, "gcti_provisioning", "{vendor}");
        assert!(
            cfg.prov_url.starts_with(&elsewhere),
            "{vendor}: {}",
            cfg.prov_url
        );
        assert!(phone.file_url().starts_with(&elsewhere), "{vendor}");
        let booted = first.lock().unwrap().requests.clone();
        assert!(!booted.is_empty(), "{vendor}: booted from DHCP");
        // The second server serves the same phone (its files name their own URL). Cisco's
        // factory profile already sent it there in the first walk: a 304 this time.
        second.lock().unwrap().requests.clear();
        let again = phone.fetch_config().await.unwrap();
        assert_eq!(again.is_none(), vendor == Vendor::Cisco, "{vendor}");
        assert_eq!(
            first.lock().unwrap().requests,
            booted,
            "{vendor}: not back to DHCP"
        );
        let refetched = second.lock().unwrap().requests.clone();
        assert!(
            !refetched.is_empty(),
            "{vendor}: re-fetched from the file's URL"
        );
        let own = vendor.file_name(&mac).replace("spa", "");
        assert!(
            refetched
                .iter()
                .any(|f| f.ends_with(&own) || f.contains(&mac.plain())),
            "{vendor}: {refetched:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_mixed_fleet() {
    let (url, state) = start_fake().await;
    let mut spec = FleetSpec::new(12, url);
    spec.concurrency = 6;
    spec.vendor = VendorChoice::Mix;
    spec.dn_start = 3000;
    spec.overall_timeout = Duration::from_secs(60);
    let report = run_fleet(spec).await;
    assert_eq!(report.succeeded(), 12, "{}", report.summary());
    assert_eq!(report.notify_anomalies(), 0);
    assert!(report.failures_by_step().values().all(|n| *n == 0));
    let s = state.lock().unwrap();
    assert_eq!(s.assigned.len(), 12);
    assert_eq!(s.notifies_sent, 12);
    let dns: HashSet<&String> = s.assigned.values().collect();
    assert_eq!(dns.len(), 12);
    let summary = report.summary();
    assert!(summary.contains("provisioned: 12"), "{summary}");
    assert!(summary.contains("p95"), "{summary}");
}
