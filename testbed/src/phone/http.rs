//! Fetching the configuration file the way a phone does: the provisioning URL from DHCP option
//! 66/160, the vendor's file name appended, the firmware's User-Agent, and a conditional GET
//! (If-None-Match) on re-fetches so that an unchanged file costs the server nothing.

use std::time::Duration;

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
    Status { url: String, status: u16 },
    #[error("GET {url}: body is not UTF-8")]
    NotText { url: String },
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
/// `timeout` in total.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
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
        return Err(HttpError::Status {
            url: url.to_string(),
            status: status.as_u16(),
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
