//! The CLI's commands that need the running server (SIP and the campaigns live there): a
//! client of its admin API, with the admin token.
//!
//! Where the server is: `--server URL`, else `[server] http` of the configuration (a wildcard
//! address is asked on loopback; `https` when the configuration has `tls-cert` and `tls-key`).
//! The token: `--token` / `SIPDM_ADMIN_TOKEN`, else `[server] admin-token`, else the one the
//! server generated and keeps in the store (`meta.admin_token`), which the CLI reads since it
//! opens the same store.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use sipdm::config::Config;
use sipdm::fleet::Selection;

/// Exit codes beyond 0 (success), 1 (any other error) and 2 (usage).
pub const EXIT_NOT_REGISTERED: u8 = 3;
pub const EXIT_PHONE_FAILED: u8 = 4;
pub const EXIT_HALTED: u8 = 5;
pub const EXIT_STOPPED: u8 = 6;
/// `--wait` interrupted (Ctrl-C): the campaign goes on.
pub const EXIT_INTERRUPTED: u8 = 130;

/// An error that ends the CLI with its own exit code and just its message.
#[derive(Debug)]
pub struct Failed {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}

fn failed(code: u8, message: impl Into<String>) -> anyhow::Error {
    Failed {
        code,
        message: message.into(),
    }
    .into()
}

/// How often `campaign start --wait` asks for the campaign's progress.
const POLL: Duration = Duration::from_millis(500);
/// A check-sync waits for the phone's answer (SIP's Timer F: 32 s) before it reports.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin API of one server.
pub struct Api {
    http: reqwest::Client,
    /// The server as the user knows it (`http://127.0.0.1:8080`).
    server: String,
    /// Its admin API (`…/fs/dm/api/v1`).
    base: String,
    token: String,
    /// Where the token came from, for a refusal's message.
    token_from: String,
}

/// What the API answered other than success.
struct Refusal {
    status: StatusCode,
    /// The API's `error` message (or the body as it came).
    error: String,
}

impl Api {
    pub async fn connect(
        config: &Config,
        server: Option<&str>,
        token: Option<&str>,
        cacert: Option<&Path>,
    ) -> anyhow::Result<Api> {
        let scheme = config.server.http_scheme();
        let server = match server {
            Some(s) => {
                let s = s.trim().trim_end_matches('/');
                if s.contains("://") {
                    s.to_owned()
                } else {
                    format!("{scheme}://{s}")
                }
            }
            None => {
                let mut addr = config.server.http;
                match addr.ip() {
                    IpAddr::V4(ip) if ip.is_unspecified() => {
                        addr.set_ip(Ipv4Addr::LOCALHOST.into())
                    }
                    IpAddr::V6(ip) if ip.is_unspecified() => {
                        addr.set_ip(Ipv6Addr::LOCALHOST.into())
                    }
                    _ => {}
                }
                format!("{scheme}://{addr}")
            }
        };
        let (server, base) = match server.strip_suffix(sipdm::admin::BASE) {
            Some(s) => (s.to_owned(), server.clone()),
            None => (server.clone(), format!("{server}{}", sipdm::admin::BASE)),
        };
        let (token, token_from) = match (token, &config.server.admin_token) {
            (Some(t), _) => (t.to_owned(), "--token / SIPDM_ADMIN_TOKEN".to_owned()),
            (None, Some(t)) => (t.clone(), "[server] admin-token".to_owned()),
            (None, None) => stored_token(config).await?,
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("sipdm-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = cacert {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not a PEM certificate", path.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Api {
            http: http.build().context("HTTP client")?,
            server,
            base,
            token,
            token_from,
        })
    }

    /// One request; `Err(Refusal)` for an answer other than success. A server that cannot
    /// be reached, or refuses the token, is an error of its own.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Result<String, Refusal>> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(self.unreachable(&e)),
        };
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return Err(self.unreachable(&e)),
        };
        if status.is_success() {
            return Ok(Ok(text));
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(failed(
                1,
                format!(
                    "the server at {} refused the admin token (from {}); pass the one it \
                     printed at start with --token or SIPDM_ADMIN_TOKEN",
                    self.server, self.token_from
                ),
            ));
        }
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| {
                let t = text.trim();
                if t.is_empty() {
                    status.to_string()
                } else {
                    t.to_owned()
                }
            });
        Ok(Err(Refusal { status, error }))
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        let mut cause = String::new();
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        if cause.is_empty() {
            cause = e.to_string();
        }
        let what = if e.is_timeout() {
            format!("the sipdm server at {} did not answer in time", self.server)
        } else {
            format!("cannot reach the sipdm server at {}", self.server)
        };
        failed(
            1,
            format!(
                "{what}: {cause}; is `sipdm serve` running there? (--server URL names another \
                 server; the default is [server] http of the configuration)"
            ),
        )
    }

    fn parse<T: DeserializeOwned>(&self, path: &str, text: &str) -> anyhow::Result<T> {
        serde_json::from_str(text).with_context(|| {
            format!(
                "unexpected answer from {}{path} (is it a sipdm server of this version?)",
                self.base
            )
        })
    }

    /// A request whose refusals are all plain errors, prefixed with `what`.
    async fn expect<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> anyhow::Result<T> {
        match self.call(method, path, body).await? {
            Ok(text) => self.parse(path, &text),
            Err(r) => Err(failed(1, format!("{what}: {} ({})", r.error, r.status))),
        }
    }
}

async fn stored_token(config: &Config) -> anyhow::Result<(String, String)> {
    let url = &config.store.url;
    let shown = sipdm::app::redact(url);
    let none = || {
        failed(
            1,
            format!(
                "no admin token: pass --token (or SIPDM_ADMIN_TOKEN), set [server] admin-token, \
                 or point --config at the server's configuration so that its store ({shown}) \
                 is read"
            ),
        )
    };
    // Opening a SQLite file that is not there would create an empty store.
    if let Some(file) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let file = file.split('?').next().unwrap_or(file);
        if !file.contains(":memory:") && !Path::new(file).exists() {
            return Err(none());
        }
    }
    let store = sipdm::app::open_store(config).await?;
    let token = store
        .meta_get("admin_token")
        .await
        .with_context(|| format!("reading the admin token from the store {shown}"))?;
    let token = token.ok_or_else(none)?;
    Ok((token, format!("the store {shown}")))
}

fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

// ---------------------------------------------------------------- check-sync

#[derive(Deserialize)]
struct CheckSyncReport {
    mac: String,
    event: String,
    contact: String,
    status: u16,
    route: String,
    via: String,
}

pub async fn check_sync(api: &Api, mac: &str) -> anyhow::Result<()> {
    let path = format!("/devices/{}/check-sync", segment(mac));
    match api.call(Method::POST, &path, None).await? {
        Ok(text) => {
            let r: CheckSyncReport = api.parse(&path, &text)?;
            println!(
                "check-sync sent to {} ({}): the phone answered {}",
                r.mac, r.event, r.status
            );
            println!("  contact  {}", r.contact);
            println!("  route    {} (instance {})", r.route, r.via);
            Ok(())
        }
        Err(r) => Err(match r.status {
            StatusCode::CONFLICT => failed(
                EXIT_NOT_REGISTERED,
                format!("check-sync not sent: {mac} is not registered ({})", r.error),
            ),
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => failed(
                EXIT_PHONE_FAILED,
                format!("check-sync not delivered to {mac}: {}", r.error),
            ),
            s => failed(1, format!("check-sync not sent: {} ({s})", r.error)),
        }),
    }
}

// ---------------------------------------------------------------- fleet

#[derive(Deserialize)]
struct FleetState {
    devices: usize,
    with_receipts: usize,
    out_of_date: usize,
    #[serde(default)]
    by_site: BTreeMap<String, usize>,
    #[serde(default)]
    by_profile: BTreeMap<String, usize>,
    #[serde(default)]
    by_model: BTreeMap<String, usize>,
    #[serde(default)]
    macs: Vec<String>,
}

pub async fn fleet(api: &Api) -> anyhow::Result<()> {
    let f: FleetState = api
        .expect(Method::GET, "/fleet", None, "fleet state")
        .await?;
    println!(
        "{} device(s), {} fetched a file, {} out of date",
        f.devices, f.with_receipts, f.out_of_date
    );
    for (title, counts) in [
        ("site", &f.by_site),
        ("profile", &f.by_profile),
        ("model", &f.by_model),
    ] {
        if counts.is_empty() {
            continue;
        }
        println!("out of date by {title}:");
        for (name, n) in counts {
            println!("  {name:<24} {n}");
        }
    }
    if !f.macs.is_empty() {
        let more = f.out_of_date.saturating_sub(f.macs.len());
        println!(
            "out of date: {}{}",
            f.macs.join(" "),
            if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- campaigns

#[derive(Deserialize)]
struct Wave {
    number: usize,
    size: usize,
    updated: usize,
    failed: usize,
    started_at: i64,
    ended_at: Option<i64>,
}

#[derive(Deserialize)]
struct Failure {
    mac: String,
    reason: String,
}

#[derive(Deserialize)]
struct Campaign {
    id: u64,
    origin: String,
    selection: Selection,
    state: String,
    devices: usize,
    sent: usize,
    updated: usize,
    failed: usize,
    pending: usize,
    #[serde(default)]
    waves: Vec<Wave>,
    reason: Option<String>,
    #[serde(default)]
    failures: Vec<Failure>,
    started_at: i64,
    ended_at: Option<i64>,
    #[serde(default)]
    site_rate: f64,
    #[serde(default)]
    source_rate: f64,
    #[serde(default)]
    peak_site_per_second: usize,
    #[serde(default)]
    peak_source_per_second: usize,
}

/// `site=S profile=P …`, or `every device`.
fn describe(s: &Selection) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("site", &s.site),
        ("profile", &s.profile),
        ("model", &s.model),
        ("firmware", &s.firmware),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    if !s.macs.is_empty() {
        parts.push(format!("mac={}", s.macs.join(",")));
    }
    if parts.is_empty() {
        "every device".to_owned()
    } else {
        parts.join(" ")
    }
}

/// `2025-01-31 12:00:00 UTC` of milliseconds since the epoch.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to the civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn took(from: i64, to: i64) -> String {
    format!("{:.1} s", (to - from).max(0) as f64 / 1000.0)
}

fn summary_line(c: &Campaign) -> String {
    format!(
        "{} device(s): {} updated, {} failed, {} not reached yet ({} check-sync(s) sent)",
        c.devices, c.updated, c.failed, c.pending, c.sent
    )
}

fn print_campaign(c: &Campaign) {
    println!("campaign {} ({}): {}", c.id, c.origin, c.state);
    println!("  selection  {}", describe(&c.selection));
    println!("  devices    {}", summary_line(c));
    match c.ended_at {
        Some(end) => println!(
            "  ran        {} to {} ({})",
            utc(c.started_at),
            utc(end),
            took(c.started_at, end)
        ),
        None => println!("  started    {}", utc(c.started_at)),
    }
    println!(
        "  rates      {}/s per site (peak {}), {}/s per source address (peak {})",
        c.site_rate, c.peak_site_per_second, c.source_rate, c.peak_source_per_second
    );
    if let Some(reason) = &c.reason {
        println!("  reason     {reason}");
    }
    if !c.waves.is_empty() {
        println!("  waves");
        println!(
            "    {:>4} {:>6} {:>8} {:>7}  {:<23}  TOOK",
            "#", "SIZE", "UPDATED", "FAILED", "STARTED"
        );
        for w in &c.waves {
            println!(
                "    {:>4} {:>6} {:>8} {:>7}  {:<23}  {}",
                w.number,
                w.size,
                w.updated,
                w.failed,
                utc(w.started_at),
                w.ended_at
                    .map(|e| took(w.started_at, e))
                    .unwrap_or_else(|| "running".into())
            );
        }
    }
    if !c.failures.is_empty() {
        println!("  failures ({})", c.failures.len());
        for f in &c.failures {
            println!("    {:<14} {}", f.mac, f.reason);
        }
    }
}

/// What `campaign start` asks for.
pub struct Start {
    pub site: Option<String>,
    pub profile: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub macs: Vec<String>,
    pub all: bool,
    pub wait: bool,
}

pub async fn campaign_start(api: &Api, s: Start) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    for (k, v) in [
        ("site", &s.site),
        ("profile", &s.profile),
        ("model", &s.model),
        ("firmware", &s.firmware),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    }
    if !s.macs.is_empty() {
        body.insert("macs".into(), json!(s.macs));
    }
    body.insert("all".into(), json!(s.all));
    let c: Campaign = match api
        .call(Method::POST, "/campaigns", Some(Value::Object(body)))
        .await?
    {
        Ok(text) => api.parse("/campaigns", &text)?,
        Err(r) => {
            return Err(failed(
                1,
                format!("campaign not started: {} ({})", r.error, r.status),
            ))
        }
    };
    println!(
        "campaign {} started: {} device(s) of {}{}",
        c.id,
        c.devices,
        describe(&c.selection),
        if s.all {
            " (all of them, a resync)"
        } else {
            " (those out of date)"
        }
    );
    if !s.wait {
        println!(
            "follow it with `sipdm campaign show {}`; stop it with `sipdm campaign stop {}`",
            c.id, c.id
        );
        return Ok(());
    }
    wait(api, c).await
}

/// Follows a campaign until it ends; its final state, and an exit code that says how it
/// ended.
async fn wait(api: &Api, mut c: Campaign) -> anyhow::Result<()> {
    let id = c.id;
    let path = format!("/campaigns/{id}");
    let bar = indicatif::ProgressBar::new(c.devices as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} campaign {prefix} [{bar:30}] {pos}/{len} done  {msg} ({elapsed})",
        )
        .expect("progress template")
        .progress_chars("=> "),
    );
    bar.set_prefix(id.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut waves_told = 0;
    loop {
        bar.set_position((c.updated + c.failed) as u64);
        bar.set_message(format!(
            "sent {}/{}, failed {}, wave {}",
            c.sent,
            c.devices,
            c.failed,
            c.waves.last().map(|w| w.number).unwrap_or(0)
        ));
        for w in c
            .waves
            .iter()
            .filter(|w| w.ended_at.is_some())
            .skip(waves_told)
        {
            bar.println(format!(
                "wave {}: {} phone(s), {} updated, {} failed",
                w.number, w.size, w.updated, w.failed
            ));
            waves_told += 1;
        }
        if c.state != "running" {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut interrupted => {
                bar.abandon();
                return Err(failed(
                    EXIT_INTERRUPTED,
                    format!("no longer following campaign {id}, which goes on; `sipdm campaign stop {id}` stops it"),
                ));
            }
        }
        c = match api.call(Method::GET, &path, None).await {
            Ok(Ok(text)) => api.parse(&path, &text)?,
            Ok(Err(r)) if r.status == StatusCode::NOT_FOUND => {
                bar.abandon();
                return Err(failed(
                    1,
                    format!("campaign {id} is gone from the server (was it restarted?)"),
                ));
            }
            Ok(Err(r)) => {
                bar.abandon();
                return Err(failed(
                    1,
                    format!("campaign {id}: {} ({})", r.error, r.status),
                ));
            }
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
    }
    bar.finish_and_clear();
    print_campaign(&c);
    end_code(&c)
}

fn end_code(c: &Campaign) -> anyhow::Result<()> {
    let reason = c.reason.as_deref().unwrap_or("no reason given");
    match c.state.as_str() {
        "halted" => Err(failed(
            EXIT_HALTED,
            format!("campaign {} halted: {reason}", c.id),
        )),
        "stopped" => Err(failed(
            EXIT_STOPPED,
            format!("campaign {} was stopped: {reason}", c.id),
        )),
        _ => Ok(()),
    }
}

pub async fn campaign_list(api: &Api) -> anyhow::Result<()> {
    let list: Vec<Campaign> = api
        .expect(Method::GET, "/campaigns", None, "campaigns")
        .await?;
    if list.is_empty() {
        println!("no campaigns (since the server at {} started)", api.server);
        return Ok(());
    }
    println!(
        "{:>5} {:<8} {:<7} {:>7} {:>7} {:>6} {:>7}  {:<23}  SELECTION",
        "ID", "STATE", "ORIGIN", "DEVICES", "UPDATED", "FAILED", "PENDING", "STARTED"
    );
    for c in &list {
        println!(
            "{:>5} {:<8} {:<7} {:>7} {:>7} {:>6} {:>7}  {:<23}  {}",
            c.id,
            c.state,
            c.origin,
            c.devices,
            c.updated,
            c.failed,
            c.pending,
            utc(c.started_at),
            describe(&c.selection)
        );
    }
    Ok(())
}

pub async fn campaign_show(api: &Api, id: u64) -> anyhow::Result<()> {
    let c: Campaign = api
        .expect(
            Method::GET,
            &format!("/campaigns/{id}"),
            None,
            &format!("campaign {id}"),
        )
        .await?;
    print_campaign(&c);
    Ok(())
}

pub async fn campaign_stop(api: &Api, id: u64) -> anyhow::Result<()> {
    let c: Campaign = api
        .expect(
            Method::POST,
            &format!("/campaigns/{id}/stop"),
            None,
            &format!("campaign {id} not stopped"),
        )
        .await?;
    if c.state == "running" {
        println!(
            "campaign {id} stops after the check-syncs in flight ({})",
            summary_line(&c)
        );
    } else {
        println!("campaign {id} had ended already: {}", c.state);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_735_689_599_000), "2024-12-31 23:59:59 UTC");
    }
}
