//! Fetching the configuration file the way a phone does: the provisioning URL from DHCP option
//! 66/160, the vendor's file name appended, the firmware's User-Agent, and a conditional GET
//! (If-None-Match) on re-fetches so that an unchanged file costs the server nothing.
//!
//! Host names in those URLs (`http://fs2:8080/fs/dm/prov`, as a file's provisioning URL says)
//! are resolved the way the phone was told to: by the DNS server DHCP gave it (option 6,
//! [`ZoneResolver`]) when it has one, else by the system's resolver.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::client::{Client, ClientHandle};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::proto::rr::{DNSClass, Name, RData, RecordType};
use reqwest::dns::{Addrs, Resolve, Resolving};
use reqwest::header::{ETAG, IF_NONE_MATCH, USER_AGENT};
use reqwest::StatusCode;

/// A failed fetch.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP {status}")]
    Status {
        url: String,
        status: u16,
        /// The response's Retry-After in seconds (RFC 9110 §10.2.3), when it had one.
        retry_after: Option<Duration>,
    },
    #[error("GET {url}: body is not UTF-8")]
    NotText { url: String },
}

impl HttpError {
    /// A 503 with Retry-After: the server asks to be asked again after that long.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::Status {
                status: 503,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        }
    }
}

/// Outcome of a (possibly conditional) GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 200: the file and its ETag, if the server sent one.
    File { body: String, etag: Option<String> },
    /// 304: the copy the phone has is current.
    NotModified,
}

/// `base` (as option 66 gives it, with or without a trailing `/`) joined with `file`.
pub fn file_url(base: &str, file: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), file)
}

/// A client that opens a fresh connection per fetch, as phones do, and gives up after
/// `timeout` in total. With `dns` (the server DHCP option 6 names, `ip:port`), host names are
/// asked of that server only ([`ZoneResolver`]); without it, of the system's resolver.
/// `local`: the phone's own address, which its fetches come from (the server sees each phone,
/// not one address for a whole simulated fleet).
pub fn client(
    timeout: Duration,
    dns: Option<SocketAddr>,
    local: Option<std::net::IpAddr>,
) -> Result<reqwest::Client, reqwest::Error> {
    // No TLS roots and no proxy look-up: a phone fetches its files over plain HTTP, straight
    // from the server its DHCP lease names; loading the system's root certificates for every
    // simulated phone made a fleet of thousands take minutes to power on.
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .local_address(local)
        .pool_max_idle_per_host(0)
        .tls_built_in_root_certs(false)
        .no_proxy();
    if let Some(server) = dns {
        builder = builder.dns_resolver(Arc::new(ZoneResolver::new(server)));
    }
    builder.build()
}

/// How long one DNS question waits for its answer, and how many times it is asked.
const DNS_TIMEOUT: Duration = Duration::from_secs(1);
const DNS_TRIES: u32 = 3;

/// Resolves host names by asking one DNS server over UDP (A, then AAAA when there is no A),
/// as a phone asks the server its DHCP lease names. Names are taken as absolute (`fs1` is
/// `fs1.`): a phone's lease gives no search domain here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneResolver {
    server: SocketAddr,
}

/// A name the DNS server did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("DNS {server}: {name}: {why}")]
pub struct DnsError {
    pub server: SocketAddr,
    pub name: String,
    pub why: String,
}

impl ZoneResolver {
    pub fn new(server: SocketAddr) -> ZoneResolver {
        ZoneResolver { server }
    }

    /// The addresses `host` has (a literal address is its own answer), in the server's order.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let fail = |why: String| DnsError {
            server: self.server,
            name: host.to_string(),
            why,
        };
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() {
            return Ok(vec![ip]);
        }
        let mut name = Name::from_str(host).map_err(|e| fail(format!("bad name: {e}")))?;
        name.set_fqdn(true);
        let mut last = String::from("no answer");
        for _ in 0..DNS_TRIES {
            let stream = UdpClientStream::builder(self.server, TokioRuntimeProvider::default())
                .with_timeout(Some(DNS_TIMEOUT))
                .build();
            let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
            let bg = tokio::spawn(bg);
            let mut found = Vec::new();
            let mut answered = false;
            for rtype in [RecordType::A, RecordType::AAAA] {
                match client.query(name.clone(), DNSClass::IN, rtype).await {
                    Ok(resp) => {
                        answered = true;
                        found.extend(resp.answers.iter().filter_map(|r| match &r.data {
                            RData::A(a) => Some(IpAddr::V4(a.0)),
                            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                            _ => None,
                        }));
                        if !found.is_empty() {
                            break;
                        }
                        last = format!("no address ({})", resp.metadata.response_code);
                    }
                    Err(e) => {
                        last = e.to_string();
                        break;
                    }
                }
            }
            bg.abort();
            if !found.is_empty() {
                return Ok(found);
            }
            if answered {
                break;
            }
        }
        Err(fail(last))
    }
}

impl Resolve for ZoneResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> Resolving {
        let resolver = *self;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = resolver.lookup(&host).await?;
            // reqwest puts the URL's port in.
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// GETs `url` with `user_agent`; `etag` from the previous fetch makes it conditional.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    user_agent: &str,
    etag: Option<&str>,
) -> Result<Fetched, HttpError> {
    let mut req = client.get(url).header(USER_AGENT, user_agent);
    if let Some(tag) = etag {
        req = req.header(IF_NONE_MATCH, tag);
    }
    let transport = |source| HttpError::Transport {
        url: url.to_string(),
        source,
    };
    let resp = req.send().await.map_err(transport)?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !status.is_success() {
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .map(Duration::from_secs);
        return Err(HttpError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            retry_after,
        });
    }
    let etag = resp
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.map_err(transport)?;
    let body = String::from_utf8(bytes.to_vec()).map_err(|_| HttpError::NotText {
        url: url.to_string(),
    })?;
    Ok(Fetched::File { body, etag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns_zone::{Zone, ZoneServer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A name only the phone's DNS server knows (`fs2`, as a file's provisioning URL writes
    /// it) is fetched from the address that server gives; without the server it is not.
    #[tokio::test]
    async fn names_in_urls_resolve_at_the_phones_dns_server() {
        let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = web.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = web.accept().await {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        let zone = Zone::new(".")
            .unwrap()
            .a("fs2-phone-test", 60, [127, 0, 0, 1].into());
        let dns = ZoneServer::start(zone, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = format!("http://fs2-phone-test:{port}/fs/dm/prov/x.cfg");
        let c = client(Duration::from_secs(5), Some(dns.addr()), None).unwrap();
        let got = fetch(&c, &url, "test", None).await.unwrap();
        assert_eq!(
            got,
            Fetched::File {
                body: "ok".into(),
                etag: None
            }
        );
        // An unknown name is an error naming the server and the name.
        let err = ZoneResolver::new(dns.addr())
            .lookup("nowhere-phone-test")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nowhere-phone-test"), "{err}");
        let system = client(Duration::from_secs(5), None, None).unwrap();
        assert!(fetch(&system, &url, "test", None).await.is_err());
        dns.stop().await;
    }
}
