//! The UDP receiver threads through the transport's public interface, with a handler of the
//! test's own on 127.0.0.1 port 0.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use sip::stats::Stats;
use sip::transport::{DatagramHandler, EventSenders, Flow, Transport, TransportConfig};

/// Records what it is given; panics on a datagram that says so.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl DatagramHandler for Recorder {
    fn on_datagram(&self, data: Bytes, _flow: Flow, _queued: Duration) {
        let text = String::from_utf8_lossy(&data).into_owned();
        if text == "panic" {
            panic!("the test's handler panics on purpose");
        }
        self.0.lock().push(text);
    }

    fn alive(&self) -> bool {
        true
    }
}

async fn transport(threads: usize) -> (Arc<Transport>, Arc<Recorder>, Arc<Stats>) {
    let cfg = TransportConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        udp_threads: threads,
        ..TransportConfig::default()
    };
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let stats = Arc::new(Stats::default());
    let t = Transport::bind(cfg, EventSenders::new(vec![tx]), stats.clone())
        .await
        .expect("binds");
    let rec = Arc::new(Recorder::default());
    t.start_udp(rec.clone()).expect("receivers start");
    (t, rec, stats)
}

async fn wait_for(rec: &Recorder, n: usize) {
    for _ in 0..200 {
        if rec.0.lock().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler that panics on one datagram costs that datagram only: the thread that read it
/// goes on reading, and the loss is counted.
#[tokio::test]
async fn a_panicking_datagram_does_not_silence_the_socket() {
    let (t, rec, stats) = transport(1).await;
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = t.local_addrs()[0];
    peer.send_to(b"first", to).unwrap();
    peer.send_to(b"panic", to).unwrap();
    peer.send_to(b"after", to).unwrap();
    wait_for(&rec, 2).await;
    assert_eq!(*rec.0.lock(), ["first", "after"]);
    assert_eq!(stats.snapshot().malformed_dropped, 1);
    t.shutdown();
    t.join_receivers().await;
}

/// Keep-alives (CRLF) reach no handler; with several threads on one socket, every datagram
/// is handled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_threads_share_one_socket() {
    let (t, rec, stats) = transport(3).await;
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = t.local_addrs()[0];
    peer.send_to(b"\r\n\r\n", to).unwrap();
    for i in 0..300 {
        peer.send_to(format!("m{i}").as_bytes(), to).unwrap();
    }
    wait_for(&rec, 300).await;
    let mut texts = rec.0.lock().clone();
    texts.sort();
    let mut want: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(texts, want);
    assert_eq!(stats.snapshot().received, 300);
    t.shutdown();
    t.join_receivers().await;
}
