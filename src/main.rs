//! `sipdm`: a thin CLI over the service layer. See `sipdm --help`.

use std::path::PathBuf;
use std::process::ExitCode;

mod remote;

/// mimalloc: under REGISTER load glibc malloc took over half the CPU (see sip/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sipdm::app;
use sipdm::config::Config;
use sipdm::service::Dm;
use sipdm::store::model::{Dn, NewDevice};

#[derive(Parser)]
#[command(
    name = "sipdm",
    version,
    about = "SIP-native provisioning and registrar companion for IP-phone fleets"
)]
struct Cli {
    /// Configuration file (TOML). Without one, sipdm serves on ./sipdm.db with defaults.
    #[arg(long, short, global = true, env = "SIPDM_CONFIG")]
    config: Option<PathBuf>,
    /// The running server, for the commands that talk to it (check-sync, campaign, fleet):
    /// `http://host:port`. Default: `[server] http` of the configuration (https when it has
    /// tls-cert and tls-key).
    #[arg(long, global = true, env = "SIPDM_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Its admin token. Default: `[server] admin-token`, else the one the server keeps in the
    /// store of the configuration.
    #[arg(long, global = true, env = "SIPDM_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM CA certificate (bundle) to trust for an HTTPS server, besides the system's.
    #[arg(long, global = true, env = "SIPDM_CACERT", value_name = "FILE")]
    cacert: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve provisioning, the admin API and SIP (the default command).
    Serve,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCmd,
    },
    /// Devices.
    Device {
        #[command(subcommand)]
        what: DeviceCmd,
    },
    /// Extensions (DNs).
    Dn {
        #[command(subcommand)]
        what: DnCmd,
    },
    /// Import devices from a CSV of `mac,model,profile,dn`, all or nothing.
    Import { file: PathBuf },
    /// Check-sync campaigns of the running server.
    Campaign {
        #[command(subcommand)]
        what: CampaignCmd,
    },
    /// Devices out of date (their file changed since they fetched it), from the running
    /// server: in all and per site, profile and model.
    Fleet,
}

#[derive(Subcommand)]
enum CampaignCmd {
    /// Start one over the devices of a selection (every device without a filter), only those
    /// out of date unless --all.
    Start {
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// The firmware its User-Agent last reported.
        #[arg(long)]
        firmware: Option<String>,
        /// These devices only (repeat it).
        #[arg(long = "mac", value_name = "MAC")]
        macs: Vec<String>,
        /// Every selected device, also those up to date (a resync).
        #[arg(long)]
        all: bool,
        /// Follow its progress until it ends (exit code 5 when it halted, 6 when stopped).
        #[arg(long)]
        wait: bool,
    },
    /// Campaigns of the running server, newest first.
    List,
    /// One campaign: progress, waves, failures and why it halted.
    Show { id: u64 },
    /// Stop a running campaign after the check-syncs in flight.
    Stop { id: u64 },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file and say what it describes.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum DeviceCmd {
    Add {
        mac: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        vendor: Option<String>,
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        dn: Option<String>,
    },
    List {
        #[arg(long)]
        search: Option<String>,
    },
    Assign {
        mac: String,
        dn: String,
    },
    Unassign {
        mac: String,
    },
    /// Send the phone NOTIFY check-sync now, through the running server (exit code 3 when it
    /// is not registered, 4 when it refused or did not answer).
    CheckSync {
        mac: String,
    },
}

#[derive(Subcommand)]
enum DnCmd {
    Add {
        number: String,
        #[arg(long, env = "SIPDM_DN_PASSWORD")]
        password: String,
        #[arg(long)]
        switch: Option<String>,
        /// `register,invite`, `register`, `invite` or empty; default: `[auth]
        /// authenticate-requests` of the configuration.
        #[arg(long)]
        authenticate_requests: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Import DNs from a CSV of `number,password[,switch[,authenticate-requests]]`, all or
    /// nothing (write `register;invite` inside the CSV field).
    Import { file: PathBuf },
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    // Secrets may come from the environment (or a file they name) rather than the config.
    if let Some(s) = secret_from_env("SIPDM_SECRET")? {
        config.server.secret = Some(s);
    }
    if let Some(t) = secret_from_env("SIPDM_ADMIN_TOKEN")? {
        config.server.admin_token = Some(t);
    }
    if let Ok(url) = std::env::var("SIPDM_STORE_URL") {
        config.store.url = url;
    }
    Ok(config)
}

/// `NAME` itself, or the contents of the file `NAME_FILE` names.
fn secret_from_env(name: &str) -> anyhow::Result<Option<String>> {
    if let Ok(v) = std::env::var(name) {
        return Ok(Some(v));
    }
    if let Ok(path) = std::env::var(format!("{name}_FILE")) {
        let v = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {name}_FILE {path}"))?;
        return Ok(Some(v.trim().to_owned()));
    }
    Ok(None)
}

async fn service(config: Config) -> anyhow::Result<Arc<Dm>> {
    let store = app::open_store(&config).await?;
    Ok(app::build_service(Arc::new(config), store, None).await?.0)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,tower_http=warn,sqlx=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<remote::Failed>() {
            Some(f) => {
                eprintln!("sipdm: {f}");
                ExitCode::from(f.code)
            }
            None => {
                eprintln!("Error: {e:?}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The API of the running server, for the commands that need it.
async fn api(cli: &Cli) -> anyhow::Result<remote::Api> {
    let config = load_config(cli.config.as_ref())?;
    remote::Api::connect(
        &config,
        cli.server.as_deref(),
        cli.token.as_deref(),
        cli.cacert.as_deref(),
    )
    .await
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    match cli.command.take().unwrap_or(Command::Serve) {
        Command::Serve => serve(load_config(cli.config.as_ref())?).await,
        Command::Config {
            what: ConfigCmd::Check { file },
        } => {
            let c = Config::load(&file)?;
            println!(
                "{}: ok — {} site(s), {} switch(es), {} trunk(s), store {}",
                file.display(),
                c.sites.len(),
                c.switches.len(),
                c.trunks.len(),
                app::redact(&c.store.url)
            );
            Ok(())
        }
        Command::Device {
            what: DeviceCmd::CheckSync { mac },
        } => remote::check_sync(&api(&cli).await?, &mac).await,
        Command::Fleet => remote::fleet(&api(&cli).await?).await,
        Command::Campaign { what } => {
            let api = api(&cli).await?;
            match what {
                CampaignCmd::Start {
                    site,
                    profile,
                    model,
                    firmware,
                    macs,
                    all,
                    wait,
                } => {
                    remote::campaign_start(
                        &api,
                        remote::Start {
                            site,
                            profile,
                            model,
                            firmware,
                            macs,
                            all,
                            wait,
                        },
                    )
                    .await
                }
                CampaignCmd::List => remote::campaign_list(&api).await,
                CampaignCmd::Show { id } => remote::campaign_show(&api, id).await,
                CampaignCmd::Stop { id } => remote::campaign_stop(&api, id).await,
            }
        }
        Command::Device { what } => {
            let dm = service(load_config(cli.config.as_ref())?).await?;
            match what {
                DeviceCmd::Add {
                    mac,
                    model,
                    vendor,
                    profile,
                    dn,
                } => {
                    let d = dm
                        .add_device(
                            NewDevice {
                                mac,
                                vendor,
                                model,
                                profile,
                                dn,
                            },
                            "cli",
                        )
                        .await?;
                    println!("added {} ({})", d.mac, d.state);
                }
                DeviceCmd::List { search } => {
                    println!(
                        "{:<14} {:<12} {:<14} {:<20} {:<8} {:<11} {}",
                        "MAC", "VENDOR", "MODEL", "PROFILE", "DN", "STATE", "LAST SEEN IP"
                    );
                    for d in dm.store.devices(search.as_deref(), 100_000, 0).await? {
                        println!(
                            "{:<14} {:<12} {:<14} {:<20} {:<8} {:<11} {}",
                            d.mac,
                            d.vendor.unwrap_or_default(),
                            d.model.unwrap_or_default(),
                            d.profile.unwrap_or_default(),
                            d.dn.unwrap_or_default(),
                            d.state,
                            d.last_seen_ip.unwrap_or_default()
                        );
                    }
                }
                DeviceCmd::Assign { mac, dn } => {
                    let out = dm.assign(&mac, &dn, "cli").await?;
                    println!("assigned {} to {}", out.dn, out.mac);
                }
                DeviceCmd::Unassign { mac } => match dm.unassign(&mac, "cli").await? {
                    Some(freed) => println!("unassigned {} from {}", freed.dn, freed.mac()),
                    None => println!("{} had no DN", Dm::parse_mac(&mac)?),
                },
                DeviceCmd::CheckSync { .. } => unreachable!("taken above"),
            }
            Ok(())
        }
        Command::Dn {
            what:
                DnCmd::Add {
                    number,
                    password,
                    switch,
                    authenticate_requests,
                    display_name,
                },
        } => {
            let config = load_config(cli.config.as_ref())?;
            let authenticate_requests = config
                .auth
                .for_new_dn(authenticate_requests.as_deref())
                .map_err(|e| anyhow::anyhow!("--{e}"))?;
            let dm = service(config).await?;
            let dn = dm
                .add_dn(Dn {
                    number,
                    password,
                    switch,
                    authenticate_requests: authenticate_requests.to_string(),
                    display_name,
                })
                .await?;
            println!(
                "added DN {} on switch {}",
                dn.number,
                dn.switch.as_deref().unwrap_or("(none)")
            );
            Ok(())
        }
        Command::Dn {
            what: DnCmd::Import { file },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let dm = service(load_config(cli.config.as_ref())?).await?;
            report_import(&file, dm.import_dns_csv(&text).await?, "DN(s)")
        }
        Command::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let dm = service(load_config(cli.config.as_ref())?).await?;
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!("importing {}", file.display()));
            bar.enable_steady_tick(std::time::Duration::from_millis(100));
            let total = text.lines().count() as u64;
            bar.set_length(total);
            let report = dm.import_csv(&text, "cli").await?;
            bar.finish_and_clear();
            report_import(&file, report, "device(s)")
        }
    }
}

fn report_import(
    file: &std::path::Path,
    report: sipdm::store::ImportReport,
    what: &str,
) -> anyhow::Result<()> {
    if report.errors.is_empty() {
        println!(
            "imported {} {what} from {}",
            report.imported,
            file.display()
        );
        return Ok(());
    }
    for (line, err) in &report.errors {
        eprintln!("{}:{line}: {err}", file.display());
    }
    bail!("nothing imported: {} line(s) refused", report.errors.len())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = app::start(config).await?;
    let a = running.http_addr;
    println!("sipdm serving");
    println!("  provisioning  http://{a}/fs/dm/prov/");
    println!(
        "  admin API     http://{a}/fs/dm/api/v1/  (token: {})",
        running.admin_token
    );
    println!("  health        http://{a}/healthz");
    println!("  metrics       http://{a}/metrics");
    for s in running.sip().local_addrs() {
        println!("  SIP           udp+tcp {s}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
