//! The device-management service: what the admin API, the CLI, the provisioning routes and
//! (later) the IVR share. It validates input, talks to the store, and renders files.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::credentials::{DeviceCredentials, PROVISIONING_USER};
use crate::domain::SipServer;
use crate::domain::{AuthPolicy, ProfileKind};
use crate::fault::{Fault, HasFault};
use crate::provisioning::filename::{parse_file_name, FileNameError, FileRequest};
use crate::provisioning::mac::Mac;
use crate::provisioning::render::{
    DeviceCtx, IvrCtx, LineCtx, RenderContext, RenderError, Renderer, SipServerCtx,
};
use crate::provisioning::vendor::{UaMatch, VendorTable};
pub use crate::render_cache::Served;
use crate::render_cache::{CachedFile, FileKey, RenderCache};
use crate::store::model::{Device, DevicePatch, Dn, NewDevice, Profile, Sighting, Site};
use crate::store::{
    self, AssignOutcome, Change, FreedDn, ImportLine, ImportReport, Receipt, Store, StoreError,
};

/// Why a service call failed; its [`Fault`] decides what each edge answers.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("`{0}` is not a MAC address")]
    BadMac(String),
    #[error("path traversal refused")]
    Traversal,
    #[error("no such file")]
    UnknownFile,
    #[error("rendering {vendor}/{kind}: {source}")]
    Render {
        vendor: String,
        kind: String,
        source: RenderError,
    },
    #[error("{0}")]
    Invalid(String),
    /// A stored row the code cannot read (written around sipdm): a fault, not the caller's.
    #[error("stored data: {0}")]
    Stored(String),
}

impl HasFault for DmError {
    fn fault(&self) -> Fault {
        match self {
            DmError::Store(e) => e.fault(),
            DmError::BadMac(_) | DmError::Invalid(_) => Fault::Invalid,
            DmError::Traversal => Fault::Malformed,
            DmError::UnknownFile => Fault::NotFound,
            DmError::Render { .. } | DmError::Stored(_) => Fault::Internal,
        }
    }
}

pub type Result<T, E = DmError> = std::result::Result<T, E>;

/// A short hash of the configuration sections that shape a rendered file.
fn renderer_tag(config: &Config) -> String {
    let shape = serde_json::json!({
        "dm": &config.dm,
        "sites": &config.sites,
        "switches": &config.switches,
        "ivr": &config.ivr,
    });
    let digest = Sha256::digest(shape.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// The operator's templates as loaded: the directory they come from and the renderer built
/// from it, replaced whole only when every template of a new load compiles.
struct Templates {
    dir: Option<std::path::PathBuf>,
    vendors: VendorTable,
    current: parking_lot::RwLock<Arc<Renderer>>,
}

impl Templates {
    fn load(&self) -> Result<()> {
        let fresh = Renderer::new(self.dir.as_deref(), &self.vendors)
            .map_err(|e| DmError::Invalid(format!("templates not reloaded: {e}")))?;
        *self.current.write() = Arc::new(fresh);
        Ok(())
    }
}

/// Who is asking for a file: what the HTTP edge saw.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub ip: String,
    pub user_agent: Option<String>,
    /// Host the phone used to reach us (without port), the registrar of last resort.
    pub host: Option<String>,
    /// `scheme://host[:port]` as the phone used it: where its file sends it back when no
    /// `fs_url` is configured.
    pub base_url: Option<String>,
    /// Our SIP port as bound (the configuration may say 0), where a file names no server.
    pub sip_port: Option<u16>,
}

/// Sightings of one file closer together than this are recorded once.
const SIGHTING_DEBOUNCE_MS: i64 = 1000;
/// Distinct User-Agents remembered before the memo is simply cleared.
const UA_CACHE_LIMIT: usize = 4096;

pub struct Dm {
    pub store: Store,
    pub config: Arc<Config>,
    pub vendors: VendorTable,
    /// The templates in service, swapped whole on a reload (`reload_templates`).
    templates: Arc<Templates>,
    pub credentials: DeviceCredentials,
    /// Rendered per-phone files; every committed change drops what it alters (subscribed to
    /// the store's change bus in `new`).
    cache: Arc<RenderCache>,
    /// User-Agent → what the vendor table makes of it. A fleet sends a handful of distinct
    /// User-Agents, and matching runs regexes: remember the answers.
    ua_cache: RwLock<HashMap<String, Option<Arc<UaMatch>>>>,
    sightings: Option<mpsc::Sender<Sighting>>,
    /// What in this instance's configuration shapes a rendered file (see `renderer_tag`).
    renderer_tag: String,
}

impl Dm {
    /// The service over `store`. Its render cache hears every committed change through the
    /// store's change bus (this process's writes as they return, other writers' as they
    /// arrive), and a change of templates elsewhere reloads this instance's own.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        vendors: VendorTable,
        renderer: Renderer,
        secret: &[u8],
        sightings: Option<mpsc::Sender<Sighting>>,
    ) -> Dm {
        let templates = Arc::new(Templates {
            dir: config.server.template_dir.clone(),
            vendors: vendors.clone(),
            current: parking_lot::RwLock::new(Arc::new(renderer)),
        });
        let cache = Arc::new(RenderCache::default());
        let renderer_tag = renderer_tag(&config);
        {
            let (templates, cache) = (templates.clone(), cache.clone());
            store.changes().subscribe(Arc::new(move |changes: &[Change], _| {
                if changes.contains(&Change::Template) {
                    // One template directory per deployment, copied to every node.
                    if let Err(e) = templates.load() {
                        tracing::warn!(error = %e, "templates changed but not reloaded here; serving the previous set");
                    }
                }
                cache.apply(changes);
            }));
        }
        Dm {
            store,
            config,
            vendors,
            templates,
            credentials: DeviceCredentials::new(secret),
            cache,
            renderer_tag,
            ua_cache: RwLock::new(HashMap::new()),
            sightings,
        }
    }

    /// Names the configuration this instance renders files with (the `[dm]`, `[[sites]]`,
    /// `[[switches]]` and `[ivr]` sections): instances of one site share it, another site's
    /// differ. Fleet operations judge only the receipts of files rendered the same way.
    pub fn renderer_tag(&self) -> &str {
        &self.renderer_tag
    }

    /// The current generation of served data; moves on every change.
    pub fn epoch(&self) -> u64 {
        self.cache.generation()
    }

    /// Re-reads `[server] template-dir` (an operator edited a template; `SIGHUP` or the admin
    /// API). The new set replaces the old only when every template compiles, so a typo never
    /// takes provisioning down; then every rendered file is dropped, here and on the other
    /// instances (which re-read their own directory when they hear of it).
    pub async fn reload_templates(&self) -> Result<()> {
        self.templates.load()?;
        self.store.announce(&[Change::Template]).await?;
        tracing::info!("templates reloaded");
        Ok(())
    }

    /// Renders this instance made since it started (cache misses, common files, previews).
    pub fn renders(&self) -> u64 {
        self.cache.renders()
    }

    // ---- provisioning -------------------------------------------------------------------

    /// Serves `file` (already percent-decoded) to a phone, and records the download (the
    /// device's sighting and its receipt for this file).
    pub async fn provision(&self, file: &str, who: &Requester) -> Result<Served> {
        self.serve(file, who, true).await
    }

    /// The file a phone asking for `file` as `who` would be served now: what fleet operations
    /// compare with its receipt. Records nothing, and an unknown device is `NotFound`.
    pub async fn current_file(&self, file: &str, who: &Requester) -> Result<Served> {
        self.serve(file, who, false).await
    }

    async fn serve(&self, file: &str, who: &Requester, record: bool) -> Result<Served> {
        let request = parse_file_name(file, &self.vendors).map_err(|e| match e {
            FileNameError::Traversal => DmError::Traversal,
            FileNameError::Unknown => DmError::UnknownFile,
        })?;
        let ua = who
            .user_agent
            .as_deref()
            .and_then(|ua| self.match_user_agent(ua));
        match request {
            FileRequest::Common {
                vendor,
                kind,
                hw_code,
                model,
            } => {
                // Served to anyone: no device, so `device.mac` stays empty (the templates that
                // share a file with a per-phone kind tell the two apart by it).
                let mut ctx = self.base_context(who)?;
                ctx.device.vendor = vendor.clone();
                ctx.device.model = model;
                ctx.params
                    .insert("hw_code".into(), hw_code.unwrap_or_default());
                self.render(&vendor, &kind, &ctx)
            }
            FileRequest::PerPhone {
                mac,
                kind,
                vendor_hint,
                candidates,
                model,
            } => {
                let generation = self.cache.generation();
                let key = FileKey {
                    kind: kind.clone(),
                    ua_vendor: ua.as_ref().map(|u| u.vendor.clone()),
                    host: who.host.clone(),
                    base_url: who.base_url.clone(),
                };
                let now = store::now_ms();
                let sighting = || Sighting {
                    mac: mac.to_string(),
                    ip: who.ip.clone(),
                    at: now,
                    user_agent: who.user_agent.clone(),
                    vendor: None,
                    model: ua.as_ref().and_then(|u| u.model.clone()).or(model.clone()),
                    firmware: ua.as_ref().and_then(|u| u.firmware.clone()),
                    receipt: None,
                };
                let receipt = |served: &Served| Receipt {
                    mac: mac.to_string(),
                    file: file.to_owned(),
                    etag: served.etag.clone(),
                    fetched_at: now,
                    ip: who.ip.clone(),
                    host: who.host.clone(),
                    base_url: who.base_url.clone(),
                    user_agent: who.user_agent.clone(),
                    firmware: ua.as_ref().and_then(|u| u.firmware.clone()),
                    renderer: self.renderer_tag.clone(),
                };
                // Hot path: a fresh render of this exact request; only the sighting is written,
                // behind the response, and at most once a second.
                if let Some((hit, note)) = self.cache.with(&mac, &key, |f| {
                    let last = f.last_noted.load(Ordering::Relaxed);
                    // Only a phone's own download counts: a look by fleet operations must
                    // not hold back the receipt of the next real one.
                    let note = record
                        && now - last >= SIGHTING_DEBOUNCE_MS
                        && f.last_noted
                            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok();
                    (f.served.clone(), note)
                }) {
                    if note {
                        self.note_sighting(Sighting {
                            receipt: Some(receipt(&hit)),
                            ..sighting()
                        });
                    }
                    return Ok(hit);
                }
                let mut sighting = sighting();
                let known = self.store.find_device(&mac.to_string()).await?;
                // Vendor: the phone's own word first, then the file name, then what we know.
                let vendor = ua
                    .as_ref()
                    .map(|u| u.vendor.clone())
                    .filter(|v| {
                        candidates.is_empty()
                            || candidates.contains(v)
                            || vendor_hint.as_ref() == Some(v)
                    })
                    .or(vendor_hint)
                    .or_else(|| known.as_ref().and_then(|d| d.vendor.clone()))
                    .or_else(|| {
                        let m = model
                            .clone()
                            .or_else(|| known.as_ref().and_then(|d| d.model.clone()))?;
                        self.vendors.vendor_for_model(&m).map(|v| v.name.clone())
                    })
                    .or_else(|| (candidates.len() == 1).then(|| candidates[0].clone()))
                    .unwrap_or_else(|| self.config.server.default_vendor.clone());
                sighting.vendor = Some(vendor.clone());
                let device = match known {
                    Some(d) => d,
                    None if !record => {
                        return Err(StoreError::NotFound {
                            what: "device",
                            key: mac.to_string(),
                        }
                        .into())
                    }
                    None => {
                        if self.store.record_sighting(&sighting).await? {
                            tracing::info!(mac = %mac, ip = %who.ip, vendor = %vendor, "first sight of an unknown phone: default profile");
                        }
                        // The switch must accept its `dm-<mac>` before the file naming it is out.
                        self.store
                            .put_device_switch_credentials(&[mac.to_string()], &self.credentials)
                            .await?;
                        self.store.device(&mac.to_string()).await?
                    }
                };
                let ctx = self.device_context(&device, &vendor, who).await?;
                let profile_template = self.profile_of(&device).await?.and_then(|p| p.template);
                let kind = profile_template.filter(|_| kind == "phone").unwrap_or(kind);
                let served = self.render(&vendor, &kind, &ctx)?;
                if record {
                    self.note_sighting(Sighting {
                        receipt: Some(receipt(&served)),
                        ..sighting
                    });
                }
                self.cache.insert(
                    generation,
                    mac,
                    device.dn.clone(),
                    Self::profile_name(&device).to_owned(),
                    key,
                    CachedFile {
                        served: served.clone(),
                        // A render nobody downloaded (fleet operations comparing receipts)
                        // must not hold back the receipt of the phone's own fetch.
                        last_noted: AtomicI64::new(if record { now } else { 0 }),
                    },
                );
                Ok(served)
            }
        }
    }

    fn match_user_agent(&self, ua: &str) -> Option<Arc<UaMatch>> {
        if let Some(m) = self.ua_cache.read().ok().and_then(|c| c.get(ua).cloned()) {
            return m;
        }
        let m = self.vendors.match_user_agent(ua).map(Arc::new);
        if let Ok(mut c) = self.ua_cache.write() {
            if c.len() >= UA_CACHE_LIMIT {
                c.clear();
            }
            c.insert(ua.to_owned(), m.clone());
        }
        m
    }

    fn note_sighting(&self, s: Sighting) {
        if let Some(tx) = &self.sightings {
            if tx.try_send(s).is_err() {
                metrics::counter!("sipdm_sightings_dropped_total").increment(1);
            }
        }
    }

    /// The phone file of a device as it would be served, for the console: nothing is recorded
    /// (no sighting, no first-seen device). `vendor` overrides the device's own (a template
    /// preview for another model family).
    /// The file `mac` would be served, as an operator previews it (`who`: no phone, only our
    /// SIP port).
    pub async fn preview(
        &self,
        mac: &str,
        vendor: Option<&str>,
        who: &Requester,
    ) -> Result<Served> {
        let mac = Self::parse_mac(mac)?;
        let device = self.store.device(&mac).await?;
        let vendor = vendor
            .map(str::to_owned)
            .or_else(|| device.vendor.clone())
            .unwrap_or_else(|| self.config.server.default_vendor.clone());
        if self.vendors.get(&vendor).is_none() {
            return Err(DmError::Invalid(format!("unknown vendor `{vendor}`")));
        }
        let ctx = self.device_context(&device, &vendor, who).await?;
        // A profile's own template replaces kind "phone"; without one the operator sees the
        // file that carries the line's settings (Polycom's master only names it).
        let kind = match self.profile_of(&device).await?.and_then(|p| p.template) {
            Some(template) => template,
            None => self
                .vendors
                .get(&vendor)
                .map(|v| v.settings_kind.clone())
                .unwrap_or_else(|| "phone".into()),
        };
        self.render(&vendor, &kind, &ctx)
    }

    fn render(&self, vendor: &str, kind: &str, ctx: &RenderContext) -> Result<Served> {
        self.cache.note_render();
        let body = self
            .templates
            .current
            .read()
            .render(vendor, kind, ctx)
            .map_err(|source| DmError::Render {
                vendor: vendor.to_owned(),
                kind: kind.to_owned(),
                source,
            })?;
        let content_type = self
            .vendors
            .get(vendor)
            .map(|v| v.content_type.clone())
            .unwrap_or_else(|| "text/plain".into());
        let etag = format!(
            "\"{}\"",
            &hex::encode(Sha256::digest(body.as_bytes()))[..32]
        );
        Ok(Served {
            body: bytes::Bytes::from(body),
            content_type,
            etag,
        })
    }

    /// The profile a device's files are rendered with: its own, else the one its state implies.
    fn profile_name(device: &Device) -> &str {
        match (&device.profile, &device.dn) {
            (Some(p), _) => p,
            (None, Some(_)) => "device-management",
            (None, None) => "default",
        }
    }

    async fn profile_of(&self, device: &Device) -> Result<Option<Profile>> {
        match self.store.profile(Self::profile_name(device)).await {
            Ok(p) => Ok(Some(p)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What every file shares: the IVR, the provisioning URL, the registrar of last resort.
    fn base_context(&self, who: &Requester) -> Result<RenderContext> {
        let fs_url = match (&self.config.dm.fs_url, &who.base_url) {
            (Some(configured), _) => configured.trim_end_matches('/').to_owned(),
            (None, Some(base)) => format!("{}/fs", base.trim_end_matches('/')),
            (None, None) => format!("{}/fs", self.own_base_url()),
        };
        Ok(RenderContext {
            device: DeviceCtx {
                mac: String::new(),
                mac_colon: String::new(),
                vendor: String::new(),
                model: None,
            },
            line: LineCtx {
                user: PROVISIONING_USER.into(),
                display_name: "Provisioning".into(),
                auth_user: String::new(),
                password: String::new(),
                assigned: false,
            },
            sip_servers: self.servers(&self.config.dm.sip_servers, who),
            prov_url: self.prov_url(&fs_url),
            fs_url,
            ivr: IvrCtx {
                number: self.config.ivr.number.clone(),
                hotline: true,
            },
            params: BTreeMap::new(),
        })
    }

    /// The directory phones fetch from under `fs_url`, with the URL key when one is set (a
    /// phone that re-fetches without it would get 404).
    fn prov_url(&self, fs_url: &str) -> String {
        match self.config.prov_security.url_key.as_deref() {
            Some(key) if !key.is_empty() => format!("{fs_url}/dm/prov/{key}"),
            _ => format!("{fs_url}/dm/prov"),
        }
    }

    /// Our own HTTP address, for files rendered without a request to follow (the console's
    /// preview): the configured listen address, loopback for a wildcard.
    fn own_base_url(&self) -> String {
        let scheme = self.config.server.http_scheme();
        let addr = self.config.server.http;
        let host = match addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        format!("{scheme}://{host}:{}", addr.port())
    }

    /// The servers a template names; with none, phones register to the host they fetched
    /// their file from, on our first SIP port.
    fn servers(&self, list: &[SipServer], who: &Requester) -> Vec<SipServerCtx> {
        let mut out: Vec<SipServerCtx> = list.iter().map(SipServerCtx::from).collect();
        if out.is_empty() {
            // The port actually bound (the configuration may say 0).
            let port = who
                .sip_port
                .or_else(|| self.config.server.sip.first().map(|a| a.port()))
                .unwrap_or(5060);
            let host = who.host.clone().unwrap_or_else(|| "127.0.0.1".into());
            out.push(SipServerCtx {
                host,
                port,
                transport: "udp".into(),
            });
        }
        out
    }

    async fn device_context(
        &self,
        d: &Device,
        vendor: &str,
        who: &Requester,
    ) -> Result<RenderContext> {
        let mut ctx = self.base_context(who)?;
        let mac = Mac::parse(&d.mac).map_err(|_| DmError::BadMac(d.mac.clone()))?;
        ctx.device = DeviceCtx {
            mac: mac.to_string(),
            mac_colon: mac.colon(),
            vendor: vendor.to_owned(),
            model: d.model.clone(),
        };
        let profile = self.profile_of(d).await?;
        // A disaster-recovery profile's preferred and peer servers replace the line's own.
        let disaster_recovery = match &profile {
            Some(p) => match p.kind() {
                Ok(ProfileKind::DisasterRecovery) => Some(p),
                Ok(ProfileKind::Default | ProfileKind::DeviceManagement) => None,
                Err(e) => return Err(DmError::Stored(format!("profile `{}`: {e}", p.name))),
            },
            None => None,
        };
        if let Some(p) = &profile {
            if let Ok(map) =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&p.params)
            {
                for (k, v) in map {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    ctx.params.insert(k, v);
                }
            }
        }
        let Some(dn_number) = &d.dn else {
            // Unassigned: the default profile, with this device's own credentials.
            ctx.line.auth_user = self.credentials.auth_user(&d.mac);
            ctx.line.password = self.credentials.password(&d.mac);
            if let Some(p) = disaster_recovery {
                ctx.sip_servers = self.servers(&disaster_recovery_servers(p), who);
            }
            return Ok(ctx);
        };
        let dn: Dn = self.store.dn(dn_number).await?;
        ctx.line = LineCtx {
            user: dn.number.clone(),
            display_name: dn.display_name.clone().unwrap_or_else(|| dn.number.clone()),
            auth_user: dn.number.clone(),
            password: dn.password.clone(),
            assigned: true,
        };
        ctx.ivr.hotline = false;
        // Where the DN lives decides the SIP server and the site's fs_url.
        let switch_name = dn.switch.clone().or_else(|| {
            self.config
                .switch_for_dn(&dn.number)
                .map(|s| s.name.clone())
        });
        let switch = match switch_name {
            Some(n) => match self.store.switch(&n).await {
                Ok(s) => Some(s),
                Err(StoreError::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let sites = self.store.sites().await?;
        let site = match &switch {
            Some(s) => sites.iter().find(|x| x.name == s.site).cloned(),
            None if sites.len() == 1 => sites.first().cloned(),
            None => None,
        };
        let mut servers: Vec<SipServer> = Vec::new();
        if let Some(s) = &switch {
            servers.extend(stored_servers([s.address.as_str()]));
            // A business-continuity pair: the DN exists on both switches, so the line
            // registers to its own switch and to the peer.
            if let Some(peer) = &s.peer {
                match self.store.switch(peer).await {
                    Ok(p) => servers.extend(stored_servers([p.address.as_str()])),
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        } else if let Some(site) = &site {
            servers.extend(stored_servers(site.sip_servers.split(',')));
        }
        if let Some(p) = disaster_recovery {
            servers = disaster_recovery_servers(p);
        }
        if servers.is_empty() {
            servers = self.config.dm.sip_servers.clone();
        }
        ctx.sip_servers = self.servers(&servers, who);
        if let Some(url) = site.and_then(|s| s.fs_url) {
            let url = url.trim_end_matches('/').to_owned();
            ctx.prov_url = self.prov_url(&url);
            ctx.fs_url = url;
        }
        Ok(ctx)
    }

    // ---- administration -------------------------------------------------------------------

    pub fn parse_mac(raw: &str) -> Result<String> {
        Mac::parse(raw)
            .map(|m| m.to_string())
            .map_err(|_| DmError::BadMac(raw.to_owned()))
    }

    pub async fn add_device(&self, mut d: NewDevice, actor: &str) -> Result<Device> {
        d.mac = Self::parse_mac(&d.mac)?;
        if let Some(v) = &d.vendor {
            if self.vendors.get(v).is_none() {
                return Err(DmError::Invalid(format!("unknown vendor `{v}`")));
            }
        }
        if d.vendor.is_none() {
            d.vendor = d
                .model
                .as_deref()
                .and_then(|m| self.vendors.vendor_for_model(m))
                .map(|v| v.name.clone());
        }
        if let Some(dn) = &d.dn {
            self.store.dn(dn).await?;
            if let Some(holder) = self.store.device_by_dn(dn).await? {
                return Err(StoreError::Conflict {
                    what: "DN assigned to device",
                    key: format!("{dn} ({})", holder.mac),
                }
                .into());
            }
        }
        if let Some(p) = &d.profile {
            self.store.profile(p).await?;
        }
        let out = self.store.create_device(&d, actor).await?;
        self.store
            .put_device_switch_credentials(std::slice::from_ref(&out.mac), &self.credentials)
            .await?;
        Ok(out)
    }

    pub async fn update_device(&self, mac: &str, p: &DevicePatch) -> Result<Device> {
        let mac = Self::parse_mac(mac)?;
        if let Some(v) = &p.vendor {
            if self.vendors.get(v).is_none() {
                return Err(DmError::Invalid(format!("unknown vendor `{v}`")));
            }
        }
        if let Some(name) = &p.profile {
            self.store.profile(name).await?;
        }
        let out = self.store.update_device(&mac, p).await?;
        Ok(out)
    }

    /// Deletes a device. The DN it held, if any, is freed with it (and its password rotated
    /// with `[dm] rotate-password-on-reassign`): the caller hands it to the SIP side
    /// (`crate::sipside::deprovision`). The phone, when it fetches again, is an unknown one
    /// and gets the default file.
    pub async fn delete_device(&self, mac: &str, actor: &str) -> Result<Option<FreedDn>> {
        let mac = Self::parse_mac(mac)?;
        let freed = self
            .store
            .delete_device_freeing(&mac, actor, self.rotate_on_reassign())
            .await?;
        self.after_freeing(freed.iter()).await?;
        tracing::info!(mac = %mac, actor, freed = ?freed.as_ref().map(|f| &f.dn), "device deleted");
        Ok(freed)
    }

    pub async fn device(&self, mac: &str) -> Result<Device> {
        Ok(self.store.device(&Self::parse_mac(mac)?).await?)
    }

    /// Assigns `dn` to the device. [`AssignOutcome::freed`] names what other devices (a
    /// take-over) or this one (its previous DN) lost, for the SIP side to clear.
    pub async fn assign(&self, mac: &str, dn: &str, actor: &str) -> Result<AssignOutcome> {
        let mac = Self::parse_mac(mac)?;
        let out = self
            .store
            .assign_rotating(&mac, dn, actor, self.rotate_on_reassign())
            .await?;
        self.after_freeing(out.freed.iter()).await?;
        tracing::info!(mac = %mac, dn = %dn, actor, taken_from = ?out.taken_from, previous_dn = ?out.previous_dn, "assigned");
        Ok(out)
    }

    /// Unassigns the device; the DN it freed, if any, for the SIP side to clear.
    pub async fn unassign(&self, mac: &str, actor: &str) -> Result<Option<FreedDn>> {
        let mac = Self::parse_mac(mac)?;
        let freed = self
            .store
            .unassign_freeing(&mac, actor, self.rotate_on_reassign())
            .await?;
        tracing::info!(mac = %mac, actor, freed = ?freed.as_ref().map(|f| &f.dn), "unassigned");
        self.after_freeing(freed.iter()).await?;
        Ok(freed)
    }

    /// `[dm] rotate-password-on-reassign`.
    fn rotate_on_reassign(&self) -> bool {
        self.config.dm.rotate_password_on_reassign
    }

    /// A rotated DN password reaches the switch credentials too (on SQLite they are written
    /// here; PostgreSQL's view follows the `dns` row by itself).
    async fn after_freeing(&self, freed: impl Iterator<Item = &FreedDn>) -> Result<()> {
        let mut rotated = Vec::new();
        for f in freed.filter(|f| f.rotated_from.is_some()) {
            rotated.push((f.dn.clone(), self.store.dn(&f.dn).await?.password));
        }
        self.store.put_dn_switch_credentials(&rotated).await?;
        Ok(())
    }

    /// Creates a DN, taking its switch from the configured ranges when not given.
    pub async fn add_dn(&self, mut dn: Dn) -> Result<Dn> {
        if dn.switch.is_none() {
            dn.switch = self
                .config
                .switch_for_dn(&dn.number)
                .map(|s| s.name.clone());
        }
        self.store.create_dn(&dn).await?;
        self.store
            .put_dn_switch_credentials(&[(dn.number.clone(), dn.password.clone())])
            .await?;
        Ok(dn)
    }

    /// Parses a `mac,model,profile,dn` CSV (a header line is allowed) and imports it all or
    /// nothing. Parse errors are reported per line like store errors, and nothing is written.
    pub async fn import_csv(&self, text: &str, actor: &str) -> Result<ImportReport> {
        let (lines, mut errors) = parse_import(text, &self.vendors);
        if !errors.is_empty() {
            errors.sort();
            return Ok(ImportReport {
                imported: 0,
                errors,
            });
        }
        let report = self.store.import_devices(&lines, actor).await?;
        if report.imported > 0 {
            let macs: Vec<String> = lines.iter().map(|l| l.device.mac.clone()).collect();
            self.store
                .put_device_switch_credentials(&macs, &self.credentials)
                .await?;
        }
        Ok(report)
    }
}

impl Dm {
    /// Imports `number,password[,switch[,authenticate-requests]]` lines, all or nothing.
    pub async fn import_dns_csv(&self, text: &str) -> Result<ImportReport> {
        let mut lines = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let raw = raw.trim();
            if raw.is_empty()
                || raw.starts_with('#')
                || (line == 1 && raw.to_ascii_lowercase().starts_with("number"))
            {
                continue;
            }
            let f: Vec<&str> = raw.split(',').map(str::trim).collect();
            if f.len() < 2 || f.len() > 4 || f[1].is_empty() {
                errors.push((
                    line,
                    "want number,password[,switch[,authenticate-requests]]".to_owned(),
                ));
                continue;
            }
            let switch = f.get(2).filter(|s| !s.is_empty()).map(|s| s.to_string());
            // `;` separates the methods inside a CSV field.
            let policy = match f.get(3) {
                Some(given) => match given.replace(';', ",").parse::<AuthPolicy>() {
                    Ok(p) => p,
                    Err(e) => {
                        errors.push((line, e.to_string()));
                        continue;
                    }
                },
                None => self.config.auth.authenticate_requests,
            };
            lines.push((
                line,
                Dn {
                    number: f[0].to_owned(),
                    password: f[1].to_owned(),
                    switch: switch
                        .or_else(|| self.config.switch_for_dn(f[0]).map(|s| s.name.clone())),
                    authenticate_requests: policy.to_string(),
                    display_name: None,
                },
            ));
        }
        if !errors.is_empty() {
            return Ok(ImportReport {
                imported: 0,
                errors,
            });
        }
        let report = self.store.import_dns(&lines).await?;
        if report.imported > 0 {
            let dns: Vec<(String, String)> = lines
                .iter()
                .map(|(_, d)| (d.number.clone(), d.password.clone()))
                .collect();
            self.store.put_dn_switch_credentials(&dns).await?;
        }
        Ok(report)
    }

    // ---- catalog writes: DNs, profiles, sites ------------------------------------------------

    /// Replaces a DN's password, switch, policy or display name.
    pub async fn update_dn(&self, dn: &Dn) -> Result<()> {
        self.store.update_dn(dn).await?;
        Ok(())
    }

    pub async fn delete_dn(&self, number: &str) -> Result<()> {
        self.store.delete_dn(number).await?;
        Ok(())
    }

    pub async fn add_profile(&self, p: &Profile) -> Result<()> {
        self.store.create_profile(p).await?;
        Ok(())
    }

    pub async fn update_profile(&self, p: &Profile) -> Result<()> {
        self.store.update_profile(p).await?;
        Ok(())
    }

    pub async fn delete_profile(&self, name: &str) -> Result<()> {
        self.store.delete_profile(name).await?;
        Ok(())
    }

    pub async fn add_site(&self, s: &Site) -> Result<()> {
        self.store.create_site(s).await?;
        Ok(())
    }

    pub async fn update_site(&self, s: &Site) -> Result<()> {
        self.store.update_site(s).await?;
        Ok(())
    }

    pub async fn delete_site(&self, name: &str) -> Result<()> {
        self.store.delete_site(name).await?;
        Ok(())
    }
}

/// Servers kept as text in the store (a switch's address, a site's comma-separated list, a
/// profile's disaster-recovery pair): the empty ones skipped, as is one that does not parse
/// (it was written through the API, which does not check it yet).
fn stored_servers<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<SipServer> {
    texts
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .filter_map(|t| match t.parse() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("stored {e}; left out of the file");
                None
            }
        })
        .collect()
}

/// A disaster-recovery profile's preferred and peer servers, those that are set.
fn disaster_recovery_servers(p: &Profile) -> Vec<SipServer> {
    stored_servers(
        [&p.preferred_server, &p.peer_server]
            .into_iter()
            .flatten()
            .map(String::as_str),
    )
}

/// Parses the import CSV into store lines and per-line errors (1-based line numbers).
pub fn parse_import(text: &str, vendors: &VendorTable) -> (Vec<ImportLine>, Vec<(usize, String)>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    for (i, rec) in reader.records().enumerate() {
        let line = rec
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map(|p| p.line() as usize)
            .unwrap_or(i + 1);
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push((line, format!("unreadable CSV: {e}")));
                continue;
            }
        };
        let field = |n: usize| {
            rec.get(n)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        if lines.is_empty()
            && errors.is_empty()
            && field(0).is_some_and(|f| f.eq_ignore_ascii_case("mac"))
        {
            continue; // header
        }
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if rec.len() > 4 {
            errors.push((
                line,
                format!("{} fields; want mac,model,profile,dn", rec.len()),
            ));
            continue;
        }
        let Some(raw_mac) = field(0) else {
            errors.push((line, "missing MAC".into()));
            continue;
        };
        let mac = match Mac::parse(&raw_mac) {
            Ok(m) => m.to_string(),
            Err(_) => {
                errors.push((line, format!("`{raw_mac}` is not a MAC address")));
                continue;
            }
        };
        let model = field(1);
        let dn = field(3);
        if let Some(dn) = &dn {
            if !dn.bytes().all(|b| b.is_ascii_digit()) {
                errors.push((line, format!("DN `{dn}` is not digits")));
                continue;
            }
        }
        let vendor = model
            .as_deref()
            .and_then(|m| vendors.vendor_for_model(m))
            .map(|v| v.name.clone());
        lines.push(ImportLine {
            line,
            device: NewDevice {
                mac,
                vendor,
                model,
                profile: field(2),
                dn,
            },
        });
    }
    (lines, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_parse_reports_lines() {
        let t = VendorTable::builtin();
        let (ok, errs) = parse_import(
            "mac,model,profile,dn\n0004f2000001,VVX 450,,1000\nzz,VVX,,1001\n",
            &t,
        );
        assert_eq!(ok.len(), 1);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, 3);
    }
}
