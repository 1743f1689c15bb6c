//! Wiring: open the store, settle secrets, load vendors and templates, start the background
//! writers and the listeners. `start` is what `sipdm serve` and the tests call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::domain::ProfileKind;
use crate::provisioning::render::Renderer;
use crate::provisioning::vendor::VendorTable;
use crate::service::Dm;
use crate::sipside::assignment::{IvrAssigner, ThenCheckSync};
use crate::sipside::checksync::handover::Cluster;
use crate::sipside::checksync::CheckSync;
use crate::store::model::{Profile, Sighting, Site, Switch};
use crate::store::{Source, Store};

/// A started server.
pub struct Running {
    pub http_addr: SocketAddr,
    pub admin_token: Arc<str>,
    pub dm: Arc<Dm>,
    /// The SIP endpoint (UDP and TCP share each address).
    sip: sip::Endpoint,
    check_sync: Arc<CheckSync>,
    /// Trunk states (in service, last probe) for the admin API and tests.
    pub trunks: Arc<crate::sipside::trunks::TrunkTable>,
    /// Check-sync campaigns.
    pub campaigns: Arc<crate::fleet::Campaigns>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Trunk OPTIONS probes: aborted at stop rather than awaited (a probe of a silent trunk
    /// waits out its transaction, up to 64·T1, which held every stop for seconds).
    probes: Vec<JoinHandle<()>>,
}

impl Running {
    /// The SIP endpoint (UDP and TCP share each address).
    pub fn sip(&self) -> &sip::Endpoint {
        &self.sip
    }

    /// This instance's id among those sharing the database (the hand-over of check-sync).
    pub fn instance_id(&self) -> &str {
        self.check_sync.instance_id()
    }

    /// Stops accepting, lets in-flight requests finish and flushes the write-behind queues
    /// (bindings included).
    pub async fn stop(self) {
        self.sip.shutdown().await;
        let _ = self.shutdown.send(true);
        for p in &self.probes {
            p.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.dm.store.close().await;
    }
}

/// How often another writer's changes to a SQLite file (the CLI) are read from the outbox. On
/// PostgreSQL other writers' change events arrive by LISTEN instead.
const OUTBOX_POLL: Duration = Duration::from_millis(250);
/// Sightings are written at most this late.
const SIGHTING_FLUSH: Duration = Duration::from_secs(1);

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.store.url, config.store.max_connections)
        .await
        .with_context(|| format!("opening the store at {}", redact(&config.store.url)))
}

/// Builds the service over an opened store: secrets settled, topology synced, default
/// profiles present.
pub async fn build_service(
    config: Arc<Config>,
    store: Store,
    sightings: Option<mpsc::Sender<Sighting>>,
) -> anyhow::Result<(Arc<Dm>, Arc<str>)> {
    // Before anything is written: a bad operator vendor file stops the start here.
    let vendors = vendor_table(&config)?;
    // A node that starts while only a standby answers (its primary's site lost, no failover
    // yet) starts degraded: it reads what earlier starts wrote and writes nothing.
    let writable = store.access() == crate::store::Access::Writable;
    let secret = match &config.server.secret {
        Some(s) => s.clone(),
        None if writable => store.meta_get_or_insert("secret", &random_token()).await?,
        None => stored(&store, "secret").await?,
    };
    let token: Arc<str> = match &config.server.admin_token {
        Some(t) => t.as_str().into(),
        None if writable => store
            .meta_get_or_insert("admin_token", &random_token())
            .await?
            .into(),
        None => stored(&store, "admin_token").await?.into(),
    };
    if writable {
        write_topology(&config, &store, &secret).await?;
    } else {
        tracing::warn!("starting degraded (no writable database): the configuration's sites, switches and profiles are not written; a start with a writable database writes them");
    }
    let renderer = Renderer::new(config.server.template_dir.as_deref(), &vendors)
        .context("loading templates")?;
    let dm = Dm::new(
        store,
        config,
        vendors,
        renderer,
        secret.as_bytes(),
        sightings,
    );
    Ok((Arc::new(dm), token))
}

/// A secret an earlier start generated and stored (read from a standby).
async fn stored(store: &Store, key: &str) -> anyhow::Result<String> {
    store.meta_get(key).await?.with_context(|| {
        format!("no writable database, and no {key} stored by an earlier start to read")
    })
}

/// The configuration is the source of truth for topology, switch credentials and the built-in
/// profiles: written at each start.
async fn write_topology(config: &Config, store: &Store, secret: &str) -> anyhow::Result<()> {
    // The configuration is the source of truth for topology; what it changes is told to the
    // instances already running (their files name these servers and URLs) by the writes'
    // change events.
    let (sites_before, switches_before) = (store.sites().await?, store.switches().await?);
    for s in &config.sites {
        let site = Site {
            name: s.name.clone(),
            fs_url: s.fs_url.clone(),
            sip_servers: comma_list(&s.sip_servers),
        };
        if !sites_before.contains(&site) {
            store.upsert_site(&site).await?;
        }
    }
    for sw in &config.switches {
        let switch = Switch {
            name: sw.name.clone(),
            site: sw.site.clone(),
            address: sw.address.to_string(),
            dn_ranges: comma_list(&sw.dn_ranges),
            peer: sw.peer.clone(),
        };
        if !switches_before.contains(&switch) {
            store.upsert_switch(&switch).await?;
        }
    }
    // What the switches authenticate phones with (`switch_subscriber`), for every realm.
    store
        .sync_switch_credentials(
            &config
                .switches
                .iter()
                .map(|s| (s.name.clone(), s.realm()))
                .collect::<Vec<_>>(),
            &crate::credentials::DeviceCredentials::new(secret.as_bytes()),
        )
        .await?;
    for (name, kind) in [
        ("default", ProfileKind::Default),
        ("device-management", ProfileKind::DeviceManagement),
    ] {
        store
            .ensure_profile(&Profile {
                name: name.into(),
                kind: kind.to_string(),
                template: None,
                preferred_server: None,
                peer_server: None,
                params: "{}".into(),
                allow_reassign: 0,
                check_sync_event: None,
            })
            .await?;
    }
    Ok(())
}

/// The shipped vendor table with `[server] vendor-file` merged over it (replace by name, add the
/// rest); a default vendor that is in neither is refused here too, not at the first bare
/// `MAC.cfg`.
fn vendor_table(config: &Config) -> anyhow::Result<VendorTable> {
    let file = config.server.vendor_file.as_deref();
    let vendors = VendorTable::load(file).with_context(|| match file {
        Some(f) => format!("loading the vendor file {}", f.display()),
        None => "loading the vendor table".to_owned(),
    })?;
    let default = &config.server.default_vendor;
    if vendors.get(default).is_none() {
        anyhow::bail!("[server] default-vendor `{default}` is not in the vendor table");
    }
    Ok(vendors)
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    crate::http::prometheus(); // install the recorder before anything counts
    let store = open_store(&config).await?;
    let (sight_tx, sight_rx) = mpsc::channel(65_536);
    let (dm, admin_token) = build_service(config.clone(), store, Some(sight_tx)).await?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    // Before anything is served (and cached): other instances' change events.
    let changes = match dm
        .store
        .change_feed()
        .await
        .context("listening for other instances' changes")?
    {
        Some(feed) => tokio::spawn(follow_changes(dm.clone(), feed, shutdown_rx.clone())),
        None => {
            let from = dm
                .store
                .outbox_position()
                .await
                .context("reading the change outbox")?;
            tokio::spawn(follow_outbox(dm.clone(), from, shutdown_rx.clone()))
        }
    };
    // Bottom-up: the services over the store, then SIP (whose handlers are handed the
    // endpoint on every request), then HTTP, whose routes use both.
    // Before SIP starts: every binding written names this instance.
    let ivr = config.ivr.settings().context("loading [ivr] prompts-dir")?;
    let check_sync = CheckSync::new(dm.clone(), Cluster::new(dm.store.clone()));
    let router = crate::sipside::calls::CallRouter::new(
        dm.clone(),
        // The built-in IVR notifies when its call has ended, not after a delay.
        Arc::new(IvrAssigner::new(dm.clone())),
        check_sync.clone(),
        ivr.clone(),
    )
    .context("trunks")?;
    let endpoint = crate::sipside::start(
        &config,
        dm.clone(),
        check_sync.instance_id(),
        vec![Arc::new(crate::sipside::calls::CallHandler(router.clone()))],
    )
    .await
    .with_context(|| match config.sip.tls_listen.as_slice() {
        [] => format!("starting SIP on {:?}", config.server.sip),
        tls => format!("starting SIP on {:?} (TLS on {tls:?})", config.server.sip),
    })?;
    let trunks = router.trunks().clone();
    let probes = trunks.spawn_health_checks(
        endpoint.clone(),
        Duration::from_millis(config.sip.trunk_options_interval_ms),
        shutdown_rx.clone(),
    );
    let listener = check_sync
        .listen(endpoint.clone(), shutdown_rx.clone())
        .await
        .context("listening for check-sync hand-overs")?;

    let campaigns = crate::fleet::Campaigns::new(
        dm.clone(),
        check_sync.clone(),
        endpoint.clone(),
        (&config.campaigns).into(),
    );
    let follow_up = campaigns.follow_changes(shutdown_rx.clone());
    let vxml_assigner = Arc::new(IvrAssigner::with_check_sync(
        dm.clone(),
        ThenCheckSync {
            check_sync: check_sync.clone(),
            ep: endpoint.clone(),
            delay: Duration::from_secs(config.ivr.vxml_check_sync_delay),
        },
    ));
    let app = crate::http::router(crate::http::Edge {
        dm: dm.clone(),
        admin: crate::admin::AdminState {
            dm: dm.clone(),
            token: admin_token.clone(),
            sip: endpoint.clone(),
            check_sync: check_sync.clone(),
            trunks: trunks.clone(),
            campaigns: campaigns.clone(),
        },
        vxml_assigner,
        ivr,
    });
    let workers = match config.server.http_workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => {
            Some(crate::http::tls::acceptor(cert, key).context("loading the HTTPS certificate")?)
        }
        _ => None,
    };
    let (http_addr, http_threads) =
        crate::http::listen::serve(config.server.http, workers, app, tls, shutdown_rx.clone())
            .with_context(|| format!("binding HTTP on {}", config.server.http))?;
    let http = tokio::task::spawn_blocking(move || {
        for t in http_threads {
            let _ = t.join();
        }
    });
    let hangups = tokio::spawn(reload_on_hangup(dm.clone(), shutdown_rx.clone()));
    let writer = tokio::spawn(write_sightings(dm.clone(), sight_rx, shutdown_rx));
    let mut tasks = vec![http, writer, changes, hangups];
    tasks.extend(listener);
    tasks.extend(follow_up);
    Ok(Running {
        http_addr,
        admin_token,
        dm,
        sip: endpoint,
        check_sync,
        trunks,
        campaigns,
        shutdown,
        tasks,
        probes,
    })
}

/// `SIGHUP` re-reads the templates, as daemons do for their configuration files.
async fn reload_on_hangup(dm: Arc<Dm>, mut stop: watch::Receiver<bool>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            return tracing::warn!(error = %e, "SIGHUP not handled; reload templates through the API")
        }
    };
    loop {
        tokio::select! {
            got = hangup.recv() => {
                if got.is_none() {
                    return;
                }
                if let Err(e) = dm.reload_templates().await {
                    tracing::error!(error = %e, "SIGHUP: templates not reloaded; serving the previous set");
                }
            }
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Write-behind of last-seen data: batched, de-duplicated per MAC, flushed on shutdown.
async fn write_sightings(
    dm: Arc<Dm>,
    mut rx: mpsc::Receiver<Sighting>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = SightingBatch::new();
    let mut tick = tokio::time::interval(SIGHTING_FLUSH);
    loop {
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) => { batch.insert(sighting_key(&s), s); }
                None => break,
            },
            _ = tick.tick() => flush_sightings(&dm, &mut batch).await,
            _ = stopped(&mut stop) => break,
        }
    }
    while let Ok(s) = rx.try_recv() {
        batch.insert(sighting_key(&s), s);
    }
    flush_sightings(&dm, &mut batch).await;
}

/// The newest sighting per device and file it downloaded.
type SightingBatch = std::collections::HashMap<(String, Option<String>), Sighting>;

fn sighting_key(s: &Sighting) -> (String, Option<String>) {
    (s.mac.clone(), s.receipt.as_ref().map(|r| r.file.clone()))
}

async fn flush_sightings(dm: &Dm, batch: &mut SightingBatch) {
    if batch.is_empty() {
        return;
    }
    let items: Vec<Sighting> = batch.drain().map(|(_, s)| s).collect();
    let receipts: Vec<crate::store::Receipt> =
        items.iter().filter_map(|s| s.receipt.clone()).collect();
    let written = match dm.store.touch_devices(&items).await {
        Ok(()) => dm.store.put_receipts(&receipts).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::warn!(error = %e, count = items.len(), "could not record last-seen data and receipts; will retry");
        for s in items {
            batch.entry(sighting_key(&s)).or_insert(s);
        }
    }
}

/// Hands other instances' change events (PostgreSQL LISTEN, see `crate::store::events`) to
/// the render cache.
async fn follow_changes(
    dm: Arc<Dm>,
    mut feed: crate::store::ChangeFeed,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changes = feed.recv() => dm.store.changes().deliver(&changes, Source::Peer),
            _ = stopped(&mut stop) => break,
        }
    }
    feed.close().await;
}

/// SQLite only: the changes another process (the CLI) made to the same file, read from the
/// outbox every `OUTBOX_POLL` (one indexed read of a local file) and handed to the change
/// bus; this process's own rows are skipped, so its own writes cost nothing here.
async fn follow_outbox(dm: Arc<Dm>, mut after: i64, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(OUTBOX_POLL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        match dm.store.outbox_after(after).await {
            Ok((changes, next)) => {
                after = next;
                dm.store.changes().deliver(&changes, Source::Cli);
            }
            Err(e) => tracing::debug!(error = %e, "change outbox poll failed"),
        }
    }
}

/// Resolves once shutdown is requested (the guard `wait_for` returns is not `Send`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// A store URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The store's comma-separated column for a configured list (`[[sites]] sip-servers`,
/// `[[switches]] dn-ranges`), each value in its canonical text.
fn comma_list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}
