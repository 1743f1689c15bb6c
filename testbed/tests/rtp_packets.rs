//! RTP packets and RFC 4733 telephone-events as the phone sends them, and the media session
//! over real loopback sockets.

use std::time::Duration;

use testbed::phone::rtp::{
    build_packet, dtmf_event_code, event_packets, event_payload, parse_event_payload, parse_packet,
    DtmfShape, MediaParams, MediaSession, RtpHeader,
};
use tokio::net::UdpSocket;

#[test]
fn header_round_trip() {
    let h = RtpHeader {
        marker: true,
        payload_type: 101,
        sequence: 65535,
        timestamp: 0xdead_beef,
        ssrc: 0x0102_0304,
    };
    let p = build_packet(&h, &[1, 2, 3, 4]);
    assert_eq!(&p[..2], &[0x80, 0x80 | 101]);
    assert_eq!(p.len(), 16);
    let (back, payload) = parse_packet(&p).unwrap();
    assert_eq!(back, h);
    assert_eq!(payload, &[1, 2, 3, 4]);
}

#[test]
fn parser_skips_csrc_extension_and_padding() {
    // V=2, P=1, X=1, CC=1; one CSRC; extension of one word; 2 bytes payload; 2 bytes padding.
    let mut p = vec![0xb1, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
    p.extend_from_slice(&[9, 9, 9, 9]); // CSRC
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, 7, 7, 7, 7]); // extension
    p.extend_from_slice(&[0xaa, 0xbb, 0, 2]); // payload + padding
    let (_, payload) = parse_packet(&p).unwrap();
    assert_eq!(payload, &[0xaa, 0xbb]);
    assert!(parse_packet(&[0x80; 5]).is_err());
    assert!(parse_packet(&[0x40; 12]).is_err(), "version 1");
    assert!(
        parse_packet(&[0x9f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(),
        "CSRCs beyond the end"
    );
}

#[test]
fn event_codes() {
    let keys: Vec<u8> = "0123456789*#ABCD"
        .chars()
        .map(|c| dtmf_event_code(c).unwrap())
        .collect();
    assert_eq!(keys, (0..16).collect::<Vec<u8>>());
    assert_eq!(dtmf_event_code('x'), None);
}

#[test]
fn one_key_press_rfc4733_shape() {
    let packets = event_packets(
        11,
        DtmfShape {
            tone_packets: 5,
            end_packets: 3,
            gap_packets: 0,
        },
    );
    assert_eq!(packets.len(), 8);
    assert!(packets[0].0, "the first packet carries the marker");
    assert!(packets[1..].iter().all(|(m, _)| !m));
    let parsed: Vec<(u8, bool, u16)> = packets
        .iter()
        .map(|(_, p)| parse_event_payload(p).unwrap())
        .collect();
    assert_eq!(
        parsed,
        vec![
            (11, false, 160),
            (11, false, 320),
            (11, false, 480),
            (11, false, 640),
            (11, false, 800),
            (11, true, 800),
            (11, true, 800),
            (11, true, 800),
        ]
    );
    assert_eq!(event_payload(5, true, 10, 800), [5, 0x8a, 0x03, 0x20]);
}

/// The phone's stream as a receiver sees it: audio and events share SSRC and sequence space,
/// all packets of one event carry one timestamp, keys arrive in order, 20 ms apart.
#[tokio::test]
async fn media_session_streams_silence_and_keys() {
    let ivr = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let phone_addr = phone.local_addr().unwrap();
    let params = MediaParams {
        remote: ivr.local_addr().unwrap(),
        audio_pt: 0,
        event_pt: Some(101),
    };
    let mut session = MediaSession::start(phone, params);

    // The IVR plays a prompt; the phone counts it.
    let prompt = build_packet(
        &RtpHeader {
            marker: true,
            payload_type: 0,
            sequence: 1,
            timestamp: 0,
            ssrc: 7,
        },
        &[0xff; 160],
    );
    for _ in 0..3 {
        ivr.send_to(&prompt, phone_addr).await.unwrap();
    }
    assert!(session.wait_received(3, Duration::from_secs(2)).await);

    let start = std::time::Instant::now();
    session
        .send_keys("12#", DtmfShape::default())
        .await
        .unwrap();
    let took = start.elapsed();
    // 3 keys × (5 tone + 3 end + 3 gap) packets at 20 ms, minus the trailing gap.
    assert!(
        took >= Duration::from_millis(20 * 28),
        "paced at 20 ms: {took:?}"
    );

    let mut buf = [0u8; 2048];
    let mut events: Vec<(u16, u32, u8, bool, bool)> = Vec::new();
    let mut ssrc = None;
    let mut last_seq: Option<u16> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, ivr.recv_from(&mut buf)).await {
        let (h, payload) = parse_packet(&buf[..n]).unwrap();
        assert_eq!(*ssrc.get_or_insert(h.ssrc), h.ssrc);
        if let Some(s) = last_seq {
            assert_eq!(h.sequence, s.wrapping_add(1), "no gap in sequence numbers");
        }
        last_seq = Some(h.sequence);
        if h.payload_type == 101 {
            let (ev, end, _) = parse_event_payload(payload).unwrap();
            events.push((h.sequence, h.timestamp, ev, end, h.marker));
        } else {
            assert_eq!(h.payload_type, 0);
            assert_eq!(payload.len(), 160);
        }
        if events.iter().filter(|e| e.2 == 11 && e.3).count() == 3 {
            break;
        }
    }
    let keys: Vec<u8> = events.iter().filter(|e| e.4).map(|e| e.2).collect();
    assert_eq!(keys, vec![1, 2, 11], "one marker per key, in order");
    for key in [1u8, 2, 11] {
        let of_key: Vec<_> = events.iter().filter(|e| e.2 == key).collect();
        assert_eq!(of_key.len(), 8);
        assert!(
            of_key.iter().all(|e| e.1 == of_key[0].1),
            "one timestamp per event"
        );
        assert_eq!(
            of_key.iter().filter(|e| e.3).count(),
            3,
            "three end packets"
        );
    }
    let stats = session.stop().await;
    assert_eq!(stats.events_sent, 3);
    assert!(stats.received >= 3);
}

#[tokio::test]
async fn keys_without_negotiated_events_fail() {
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let params = MediaParams {
        remote: "127.0.0.1:9".parse().unwrap(),
        audio_pt: 8,
        event_pt: None,
    };
    let session = MediaSession::start(phone, params);
    assert!(session.send_keys("1", DtmfShape::default()).await.is_err());
    session.stop().await;
}
