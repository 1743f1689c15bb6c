//! The built-in IVR over real UDP/RTP on 127.0.0.1, with a test socket playing the phone, and
//! the VoiceXML pages through the axum router.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sipdm::ivr::dtmf::key_press_packets;
use sipdm::ivr::prompts::{Prompt, PromptLibrary};
use sipdm::ivr::rtp::{RtpPacket, RtpStream};
use sipdm::ivr::sdp::{self, SdpError};
use sipdm::ivr::{
    AssignRefusal, Assigner, CallOutcome, CallerIdentity, IvrCall, IvrCallHandle, IvrError,
    IvrSettings,
};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Records every call; DNs in `free` are assigned, others refused as unknown.
#[derive(Default)]
struct FakeAssigner {
    free: Vec<&'static str>,
    delay: Duration,
    calls: Mutex<Vec<(Option<String>, String)>>,
}

impl FakeAssigner {
    fn new(free: &[&'static str]) -> Arc<Self> {
        Arc::new(FakeAssigner {
            free: free.to_vec(),
            ..Default::default()
        })
    }
    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, dn)| dn.clone())
            .collect()
    }
}

impl Assigner for FakeAssigner {
    async fn assign(&self, caller: &CallerIdentity, dn: &str) -> Result<String, AssignRefusal> {
        self.calls
            .lock()
            .unwrap()
            .push((caller.device.map(|m| m.to_string()), dn.to_string()));
        tokio::time::sleep(self.delay).await;
        if self.free.contains(&dn) {
            Ok(dn.to_string())
        } else {
            Err(AssignRefusal::UnknownDn)
        }
    }
}

fn caller() -> CallerIdentity {
    CallerIdentity {
        device: Some("0004f2abcdef".parse().unwrap()),
        remote_uri: "sip:gcti_provisioning@127.0.0.1".into(),
    }
}

fn config(clip_samples: usize) -> IvrSettings {
    IvrSettings {
        first_digit_timeout: Duration::from_millis(300),
        inter_digit_timeout: Duration::from_millis(300),
        max_digits: 8,
        max_attempts: 3,
        start_delay: Duration::ZERO,
        prompts: PromptLibrary::uniform(clip_samples),
    }
}

/// The test's phone: an RTP socket, its own outgoing stream, and where the IVR listens.
struct Phone {
    sock: UdpSocket,
    stream: RtpStream,
    ivr: SocketAddr,
    te_pt: u8,
}

/// A received packet, owned.
#[derive(Debug, Clone)]
struct Rx {
    at: Instant,
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

impl Rx {
    /// Which uniform clip starts in this packet (the library marks a clip's first sample).
    fn clip_start(&self) -> Option<Prompt> {
        let first = *self.payload.first()?;
        let p = Prompt::ALL.get(usize::from(first)).copied();
        if first == 0xFF || first == 0xD5 {
            None
        } else {
            p
        }
    }
}

impl Phone {
    async fn call(
        offer: impl FnOnce(u16) -> String,
        assigner: Arc<FakeAssigner>,
        cfg: IvrSettings,
    ) -> Result<(Phone, String, IvrCallHandle), IvrError> {
        let sock = UdpSocket::bind((LO, 0)).await.unwrap();
        let port = sock.local_addr().unwrap().port();
        let (answer, handle) = IvrCall::start(&offer(port), LO, caller(), assigner, cfg).await?;
        let neg = sdp::negotiate(&sdp::parse(&answer).unwrap()).unwrap();
        assert_eq!(neg.remote, handle.local_rtp_addr());
        let phone = Phone {
            sock,
            stream: RtpStream::new(),
            ivr: neg.remote,
            te_pt: neg.telephone_event_pt.unwrap_or(101),
        };
        Ok((phone, answer, handle))
    }

    async fn default_call(
        assigner: Arc<FakeAssigner>,
        cfg: IvrSettings,
    ) -> (Phone, String, IvrCallHandle) {
        Phone::call(|port| sdp::build_offer(LO, port, 1), assigner, cfg)
            .await
            .unwrap()
    }

    async fn recv(&self, wait: Duration) -> Option<Rx> {
        let mut buf = [0u8; 2048];
        let (n, _) = timeout(wait, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let p = RtpPacket::parse(&buf[..n]).expect("the IVR sends valid RTP");
        Some(Rx {
            at: Instant::now(),
            marker: p.marker,
            pt: p.payload_type,
            seq: p.sequence,
            ts: p.timestamp,
            ssrc: p.ssrc,
            payload: p.payload.to_vec(),
        })
    }

    /// Receives until `n` packets arrived.
    async fn recv_n(&self, n: usize) -> Vec<Rx> {
        let mut v = vec![];
        while v.len() < n {
            v.push(
                self.recv(Duration::from_secs(2))
                    .await
                    .expect("RTP from the IVR"),
            );
        }
        v
    }

    /// Receives until a packet starting `clip` arrived; returns everything received.
    async fn recv_until_clip(&self, clip: Prompt) -> Vec<Rx> {
        let mut v = vec![];
        loop {
            let p = self
                .recv(Duration::from_secs(3))
                .await
                .expect("RTP from the IVR");
            let hit = p.clip_start() == Some(clip);
            v.push(p);
            if hit {
                return v;
            }
        }
    }

    /// Keys as RFC 4733 events: start, updates every 20 ms of media time, three end packets.
    async fn keys(&mut self, keys: &str) {
        for k in keys.chars() {
            for pkt in key_press_packets(&mut self.stream, self.te_pt, k, 800, 160) {
                self.sock.send_to(&pkt, self.ivr).await.unwrap();
            }
            self.stream.silence(400);
        }
    }

    /// Drains RTP until the IVR stops sending for `quiet`.
    async fn drain(&self, quiet: Duration) -> Vec<Rx> {
        let mut v = vec![];
        while let Some(p) = self.recv(quiet).await {
            v.push(p);
        }
        v
    }
}

fn clips(packets: &[Rx]) -> Vec<Prompt> {
    packets.iter().filter_map(Rx::clip_start).collect()
}

fn d(n: u8) -> Prompt {
    Prompt::ALL[2 + usize::from(n)]
}

#[tokio::test]
async fn keyed_dn_is_assigned_once_over_rtp() {
    let assigner = FakeAssigner::new(&["1001"]);
    // 10 packets per clip.
    let (mut phone, answer, handle) = Phone::default_call(assigner.clone(), config(1600)).await;
    assert!(answer.contains("m=audio "), "{answer}");
    assert!(answer.contains(" RTP/AVP 0 8 101\r\n"), "{answer}");
    assert!(
        answer.contains("a=rtpmap:101 telephone-event/8000\r\n"),
        "{answer}"
    );
    assert!(answer.contains("c=IN IP4 127.0.0.1\r\n"), "{answer}");
    assert!(answer.contains("a=ptime:20\r\n"));
    assert_eq!(
        handle.local_rtp_addr().port() % 2,
        0,
        "RTP on an even port when possible"
    );

    let first = phone.recv_n(10).await;
    assert_eq!(clips(&first), vec![Prompt::EnterExtension]);
    assert!(
        first[0].marker,
        "first packet of a talkspurt has the marker"
    );
    assert!(first[1..].iter().all(|p| !p.marker));
    for w in first.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
        assert_eq!(w[1].ssrc, w[0].ssrc);
        assert_eq!(w[1].pt, 0);
        assert_eq!(w[1].payload.len(), 160);
    }
    // 9 intervals of 20 ms (bounds loose enough for a loaded CI machine).
    let span = first[9].at - first[0].at;
    assert!(
        span >= Duration::from_millis(100) && span <= Duration::from_millis(600),
        "10 packets took {span:?}"
    );

    phone.keys("1001#").await;
    let ended = timeout(Duration::from_secs(5), handle.ended())
        .await
        .expect("call ends");
    assert_eq!(ended.outcome, CallOutcome::Assigned("1001".into()));
    assert!(ended.send_bye, "the IVR hangs up: the SIP layer sends BYE");
    assert_eq!(assigner.calls(), vec!["1001"]);
    assert_eq!(
        assigner.calls.lock().unwrap()[0].0.as_deref(),
        Some("0004f2abcdef"),
        "the caller identity reaches the assigner"
    );

    let rest = phone.drain(Duration::from_millis(200)).await;
    assert_eq!(
        clips(&rest),
        vec![
            Prompt::Extension,
            d(1),
            d(0),
            d(0),
            d(1),
            Prompt::Assigned,
            Prompt::Goodbye
        ]
    );
    // The stream stays one stream: same SSRC, consecutive sequence numbers.
    let mut all = first.clone();
    all.extend(rest);
    for w in all.windows(2) {
        assert_eq!(w[1].ssrc, w[0].ssrc);
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
    }
}

#[tokio::test]
async fn refusal_then_retry() {
    let assigner = FakeAssigner::new(&["1001"]);
    let (mut phone, _, handle) = Phone::default_call(assigner.clone(), config(320)).await;
    phone.recv_n(1).await;
    phone.keys("9999#").await;
    let heard = phone.recv_until_clip(Prompt::NotAvailable).await;
    assert!(!clips(&heard).contains(&Prompt::Assigned));
    phone.keys("1001#").await;
    let ended = timeout(Duration::from_secs(5), handle.ended())
        .await
        .unwrap();
    assert_eq!(ended.outcome, CallOutcome::Assigned("1001".into()));
    assert_eq!(assigner.calls(), vec!["9999", "1001"]);
}

#[tokio::test]
async fn silence_exhausts_attempts() {
    let assigner = FakeAssigner::new(&["1001"]);
    let (phone, _, handle) = Phone::default_call(assigner.clone(), config(160)).await;
    let ended = timeout(Duration::from_secs(5), handle.ended())
        .await
        .unwrap();
    assert_eq!(ended.outcome, CallOutcome::GaveUp);
    assert!(ended.send_bye);
    assert!(assigner.calls().is_empty());
    let heard = clips(&phone.drain(Duration::from_millis(100)).await);
    assert_eq!(
        heard,
        vec![
            Prompt::EnterExtension,
            Prompt::TryAgain,
            Prompt::EnterExtension,
            Prompt::TryAgain,
            Prompt::EnterExtension,
            Prompt::Goodbye
        ]
    );
}

#[tokio::test]
async fn hang_up_mid_prompt_assigns_nothing_and_stops_media() {
    let assigner = FakeAssigner::new(&["1001"]);
    // A one-second prompt.
    let (mut phone, _, handle) = Phone::default_call(assigner.clone(), config(8000)).await;
    phone.recv_n(3).await;
    phone.keys("1001").await;
    let control = handle.control();
    control.hang_up();
    let ended = timeout(Duration::from_secs(2), handle.ended())
        .await
        .unwrap();
    assert_eq!(ended.outcome, CallOutcome::HungUp);
    assert!(!ended.send_bye, "the phone hung up: no BYE from us");
    // Keys after the hang-up go nowhere.
    phone.keys("#").await;
    assert!(matches!(
        control.info("application/dtmf-relay", "Signal=#"),
        Err(IvrError::Ended)
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(assigner.calls().is_empty());
    // Media stopped (allow packets already in flight).
    let late = phone.drain(Duration::from_millis(150)).await;
    assert!(late.len() <= 2, "{} packets after hang-up", late.len());
}

#[tokio::test]
async fn hang_up_while_assigning_reports_the_committed_assignment() {
    let assigner = Arc::new(FakeAssigner {
        free: vec!["1001"],
        delay: Duration::from_millis(300),
        calls: Mutex::default(),
    });
    let (mut phone, _, handle) = Phone::default_call(assigner.clone(), config(160)).await;
    phone.keys("1001#").await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while assigner.calls().is_empty() {
        assert!(Instant::now() < deadline, "the assigner was never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.control().hang_up();
    let ended = timeout(Duration::from_secs(2), handle.ended())
        .await
        .unwrap();
    assert_eq!(ended.outcome, CallOutcome::Assigned("1001".into()));
    assert!(!ended.send_bye);
    assert_eq!(assigner.calls(), vec!["1001"]);
}

#[tokio::test]
async fn sip_info_digits() {
    let assigner = FakeAssigner::new(&["1001"]);
    let (_phone, _, handle) = Phone::default_call(assigner.clone(), config(160)).await;
    let c = handle.control();
    assert!(matches!(c.info("text/plain", "1"), Err(IvrError::Dtmf(_))));
    assert!(matches!(
        c.info("application/dtmf-relay", "Signal=x"),
        Err(IvrError::Dtmf(_))
    ));
    for k in ["1", "0", "0", "1"] {
        c.info(
            "application/dtmf-relay",
            &format!("Signal={k}\r\nDuration=160\r\n"),
        )
        .unwrap();
    }
    c.info("application/dtmf", "#").unwrap();
    let ended = timeout(Duration::from_secs(3), handle.ended())
        .await
        .unwrap();
    assert_eq!(ended.outcome, CallOutcome::Assigned("1001".into()));
    assert_eq!(assigner.calls(), vec!["1001"]);
}

#[tokio::test]
async fn pcma_only_phone_gets_alaw() {
    let assigner = FakeAssigner::new(&["1001"]);
    let offer = |port: u16| {
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 8 96\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\n"
        )
    };
    let (mut phone, answer, handle) = Phone::call(offer, assigner.clone(), config(320))
        .await
        .unwrap();
    assert!(answer.contains(" RTP/AVP 8 96\r\n"), "{answer}");
    assert_eq!(phone.te_pt, 96);
    let p = phone.recv_n(2).await;
    assert!(p.iter().all(|p| p.pt == 8));
    assert_eq!(
        p[0].payload[1], 0xD5,
        "mu-law silence converted to A-law silence"
    );
    phone.keys("1001#").await;
    let ended = timeout(Duration::from_secs(3), handle.ended())
        .await
        .unwrap();
    assert_eq!(ended.outcome, CallOutcome::Assigned("1001".into()));
}

#[tokio::test]
async fn unusable_offer_is_refused_before_any_media() {
    let assigner = FakeAssigner::new(&[]);
    let g729 = |port: u16| {
        format!(
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio {port} RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
        )
    };
    let r = Phone::call(g729, assigner, config(160)).await;
    assert!(matches!(r, Err(IvrError::Sdp(SdpError::NoCommonCodec))));
}

#[tokio::test]
async fn builtin_prompt_plays_at_real_time() {
    // The committed clip, paced: "Please enter the extension, then press pound." is ~3 s;
    // 25 packets must take ~480 ms.
    let assigner = FakeAssigner::new(&[]);
    let cfg = IvrSettings {
        prompts: PromptLibrary::builtin(),
        ..config(0)
    };
    let (phone, _, handle) = Phone::default_call(assigner, cfg).await;
    let p = phone.recv_n(25).await;
    let span = p[24].at - p[0].at;
    assert!(
        span >= Duration::from_millis(300) && span <= Duration::from_millis(1200),
        "{span:?}"
    );
    assert!(
        p.iter().any(|p| p.payload.iter().any(|&b| b != 0xFF)),
        "not all silence"
    );
    handle.control().hang_up();
    let _ = handle.ended().await;
}

// ---- VoiceXML: the test plays the media server ----

mod vxml_flow {
    use super::*;
    use quick_xml::events::Event as XmlEvent;
    use quick_xml::Reader;
    use sipdm::ivr::vxml;

    fn well_formed(doc: &str) {
        let mut r = Reader::from_str(doc);
        loop {
            match r.read_event() {
                Ok(XmlEvent::Eof) => return,
                Ok(_) => {}
                Err(e) => panic!("not well-formed: {e}\n{doc}"),
            }
        }
    }

    /// The `next` of the document's `<goto>`, unescaped.
    fn goto_next(doc: &str) -> Option<String> {
        let start = doc.find("<goto next=\"")? + "<goto next=\"".len();
        let end = start + doc[start..].find('"')?;
        Some(doc[start..end].replace("&amp;", "&"))
    }

    async fn serve(assigner: Arc<FakeAssigner>) -> String {
        let listener = tokio::net::TcpListener::bind((LO, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, vxml::routes(assigner)).await;
        });
        format!("http://{addr}")
    }

    async fn post(base: &str, form: &[(&str, &str)]) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(format!("{base}/fs/dm/ivr/assign"))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let ct = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(ct, vxml::CONTENT_TYPE);
        let body = r.text().await.unwrap();
        well_formed(&body);
        (status, body)
    }

    #[tokio::test]
    async fn media_server_flow_refusal_then_assignment() {
        let assigner = FakeAssigner::new(&["1001"]);
        let base = serve(assigner.clone()).await;
        let client = reqwest::Client::new();

        // The initial page, as a media server with initial-page-url fetches it.
        let r = client
            .get(format!("{base}/fs/dm/ivr?device=00-04-F2-AB-CD-EF"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let page = r.text().await.unwrap();
        well_formed(&page);
        assert!(page.contains(r#"namelist="dn caller device attempt""#));
        assert!(page.contains(r#"<var name="device" expr="'0004f2abcdef'"/>"#));

        // The audio the page refers to is served.
        let wav = client
            .get(format!("{base}/fs/dm/ivr/prompts/enter_extension.wav"))
            .send()
            .await
            .unwrap();
        assert_eq!(wav.status(), 200);
        assert_eq!(&wav.bytes().await.unwrap()[..4], b"RIFF");
        let missing = client
            .get(format!("{base}/fs/dm/ivr/prompts/..%2F..%2Fetc%2Fpasswd"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);

        // The caller keys an unknown DN: "not available" and back to the page, attempt 2.
        let caller = "sip:gcti_provisioning@10.0.0.5";
        let (status, doc) = post(
            &base,
            &[
                ("dn", "9999"),
                ("caller", caller),
                ("device", "0004f2abcdef"),
                ("attempt", "1"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        assert!(doc.contains("not_available.wav"));
        let next = goto_next(&doc).expect("goto back to the page");
        assert_eq!(next, "/fs/dm/ivr?attempt=2&device=0004f2abcdef");
        let page2 = client
            .get(format!("{base}{next}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        well_formed(&page2);
        assert!(page2.contains(r#"<var name="attempt" expr="2"/>"#));

        // Then a free one.
        let (_, doc) = post(
            &base,
            &[
                ("dn", "1001"),
                ("caller", caller),
                ("device", "0004f2abcdef"),
                ("attempt", "2"),
            ],
        )
        .await;
        assert!(
            doc.contains("assigned.wav") && doc.contains("<disconnect/>"),
            "{doc}"
        );
        assert_eq!(doc.matches("digit_0.wav").count(), 2);
        assert_eq!(assigner.calls(), vec!["9999", "1001"]);
        let calls = assigner.calls.lock().unwrap().clone();
        assert_eq!(calls[1].0.as_deref(), Some("0004f2abcdef"));
    }

    #[tokio::test]
    async fn bad_input_never_reaches_the_assigner() {
        let assigner = FakeAssigner::new(&["1001"]);
        let base = serve(assigner.clone()).await;
        for dn in ["", "10a1", "1001#", "12345678901234567", "-1", "１００１"] {
            let (status, doc) = post(
                &base,
                &[("dn", dn), ("caller", "<x>&\"'"), ("attempt", "1")],
            )
            .await;
            assert_eq!(status, 200);
            assert!(doc.contains("try_again.wav"), "{dn}: {doc}");
            assert_eq!(goto_next(&doc).as_deref(), Some("/fs/dm/ivr?attempt=2"));
        }
        // Out of attempts: goodbye.
        let (_, doc) = post(&base, &[("dn", "9999"), ("attempt", "3")]).await;
        assert!(doc.contains("goodbye.wav") && goto_next(&doc).is_none());
        // Garbage attempt numbers and devices are tolerated.
        let (_, doc) = post(
            &base,
            &[("dn", "1001"), ("attempt", "NaN"), ("device", "zz")],
        )
        .await;
        assert!(doc.contains("assigned.wav"));
        assert_eq!(assigner.calls.lock().unwrap().last().unwrap().0, None);
        // A body that is not a form.
        let r = reqwest::Client::new()
            .post(format!("{base}/fs/dm/ivr/assign"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        well_formed(&r.text().await.unwrap());
        assert_eq!(assigner.calls(), vec!["9999", "1001"]);
        // A page request with a hostile query still yields a clean page.
        let page = reqwest::Client::new()
            .get(format!(
                "{base}/fs/dm/ivr?attempt=%3Cx%3E&device=%27%3B%20alert(1)%3B%27"
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        well_formed(&page);
        assert!(page.contains(r#"<var name="device" expr="''"/>"#));
    }
}
