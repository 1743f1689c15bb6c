//! `phone-sim`: one simulated phone, or a fleet of them, against a running sipdm.
//!
//! ```text
//! phone-sim --prov-url http://127.0.0.1:8080/fs/dm/prov --mac 0004f2000001 --vendor polycom --dial-dn 1001
//! phone-sim fleet --count 2000 --prov-url http://127.0.0.1:8080/fs/dm/prov --dn-start 1000 --concurrency 200
//! phone-sim fleet --count 200 --prov-url http://127.0.0.11:8080/fs/dm/prov \
//!     --prov-url http://127.0.0.12:8080/fs/dm/prov --spread --attempts 3
//! ```
//!
//! `--prov-url` may be given several times (the nodes of a pair): a phone moves to the next
//! when the one it uses does not answer. `--dns 127.0.0.2:5353` is the DNS server of the
//! phones' DHCP lease (option 6): names in the provisioning URLs their files give (`fs2`,
//! `fs3`) are resolved there instead of by the system's resolver.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use testbed::fleet::{run_fleet, FleetMode, FleetSpec, VendorChoice};
use testbed::phone::{DtmfMode, Mac, Phone, PhoneOptions, PhoneSpec, Vendor};

#[derive(Parser)]
#[command(
    name = "phone-sim",
    about = "Simulated IP phones for sipdm: provisioning, REGISTER, IVR call with DTMF, check-sync"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    one: OnePhone,
}

#[derive(Subcommand)]
enum Command {
    /// Run N phones concurrently and print time-to-provisioned percentiles.
    Fleet(FleetArgs),
    /// Print the MACs a fleet with these arguments uses (`mac,vendor` per line), e.g. to
    /// import them assigned before a zero-touch run.
    Macs(MacsArgs),
}

#[derive(Args)]
struct MacsArgs {
    #[arg(long)]
    count: u32,
    #[arg(long, default_value = "mix")]
    vendor: String,
    #[arg(long, default_value_t = 1)]
    mac_offset: u32,
}

fn macs(args: MacsArgs) -> Result<(), String> {
    let vendor: VendorChoice = args.vendor.parse().map_err(|e| format!("{e}"))?;
    for i in 0..args.count {
        let v = vendor.for_index(i);
        println!(
            "{},{v}",
            Mac::generated(v, args.mac_offset.wrapping_add(i)).plain()
        );
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum Dtmf {
    /// RFC 4733 telephone-events in RTP.
    Rfc4733,
    /// SIP INFO application/dtmf-relay.
    Info,
}

#[derive(Args)]
struct Common {
    /// Provisioning URL as DHCP option 66 gives it; repeat for the other nodes of a pair,
    /// tried in order when one does not answer.
    #[arg(long)]
    prov_url: Vec<String>,
    /// Address the phones' sockets bind.
    #[arg(long, default_value = "127.0.0.1")]
    local_ip: IpAddr,
    /// DNS server (`ip:port`) of the phones' DHCP lease (option 6): host names in
    /// provisioning URLs are resolved there; without it, by the system's resolver.
    #[arg(long)]
    dns: Option<SocketAddr>,
    /// How keys reach the IVR.
    #[arg(long, value_enum, default_value = "rfc4733")]
    dtmf: Dtmf,
    /// Bound of one phone's whole flow, seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Attempts per phone: the IVR flow starts over after a failed step (e.g. a node that
    /// died); in zero touch, the boot fetch and the REGISTER are each tried this many times.
    #[arg(long, default_value_t = 1)]
    attempts: u32,
    /// Wait before the next attempt, milliseconds (jittered ±50 %); real phones wait about
    /// 30 000 after a failed registration.
    #[arg(long, default_value_t = 200)]
    retry_interval_ms: u64,
    /// Longest Retry-After of a 503 (REGISTER, file fetch) waited out before asking again,
    /// seconds.
    #[arg(long, default_value_t = 120)]
    max_retry_after: u64,
    /// Expires asked for in REGISTER, seconds (refreshed at 70–90 % of what is granted).
    #[arg(long, default_value_t = 3600)]
    register_expires: u32,
    /// SIP T1 in milliseconds (transaction timeouts are 64·T1).
    #[arg(long, default_value_t = 500)]
    t1_ms: u64,
    /// Seconds to wait for the check-sync NOTIFY after the IVR call.
    #[arg(long, default_value_t = 20)]
    notify_timeout: u64,
}

#[derive(Args)]
struct OnePhone {
    #[command(flatten)]
    common: Common,
    /// MAC of the phone (any separators).
    #[arg(long)]
    mac: Option<String>,
    /// polycom, yealink, cisco, grandstream, snom, audiocodes.
    #[arg(long, default_value = "polycom")]
    vendor: String,
    /// Lift the handset and key this DN to the IVR; without it, zero-touch (fetch + register).
    #[arg(long)]
    dial_dn: Option<String>,
}

#[derive(Args)]
struct FleetArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    count: u32,
    /// DN keyed by the first phone; the others follow.
    #[arg(long, default_value_t = 1000)]
    dn_start: u32,
    /// Phones in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// A vendor, or `mix` for round-robin over the six.
    #[arg(long, default_value = "mix")]
    vendor: String,
    /// Phones are already assigned: fetch and register only.
    #[arg(long)]
    zero_touch: bool,
    /// Offset of the generated MACs (vendor OUI + offset + index).
    #[arg(long, default_value_t = 1)]
    mac_offset: u32,
    /// Bound of the whole run, seconds.
    #[arg(long, default_value_t = 600)]
    fleet_timeout: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Spread the phones over the --prov-url list (phone i starts at URL i mod n).
    #[arg(long)]
    spread: bool,
    /// After booting, follow check-syncs (re-fetch, register again) and refresh the
    /// registration when due until the run is this many seconds old.
    #[arg(long)]
    follow_seconds: Option<u64>,
    /// Phone i binds 127.1.(i/250).(i%250+1), i counted from --mac-offset - 1: one source
    /// address per phone.
    #[arg(long)]
    spread_ips: bool,
}

fn options(c: &Common) -> PhoneOptions {
    PhoneOptions {
        dtmf: match c.dtmf {
            Dtmf::Rfc4733 => DtmfMode::Rfc4733,
            Dtmf::Info => DtmfMode::SipInfo,
        },
        overall_timeout: Duration::from_secs(c.timeout),
        flow_attempts: c.attempts,
        retry_interval: Duration::from_millis(c.retry_interval_ms),
        max_retry_after: Duration::from_secs(c.max_retry_after),
        register_expires: c.register_expires,
        dns: c.dns,
        notify_timeout: Duration::from_secs(c.notify_timeout),
        timers: testbed::phone::SipTimers {
            t1: Duration::from_millis(c.t1_ms),
            ..testbed::phone::SipTimers::default()
        },
        ..PhoneOptions::default()
    }
}

async fn one(args: OnePhone) -> Result<(), String> {
    let mut urls = args.common.prov_url.clone();
    if urls.is_empty() {
        return Err("--prov-url is required".into());
    }
    let prov_url = urls.remove(0);
    let vendor: Vendor = args.vendor.parse().map_err(|e| format!("{e}"))?;
    let mac: Mac = args
        .mac
        .as_deref()
        .ok_or("--mac is required")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let spec = PhoneSpec {
        mac,
        vendor,
        prov_url,
        fallback_prov_urls: urls,
        local_ip: args.common.local_ip,
    };
    let mut phone = Phone::with_options(spec, options(&args.common))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{vendor} {mac}: SIP at {}, file {}",
        phone.sip_addr(),
        phone.file_url()
    );
    let result = match &args.dial_dn {
        Some(dn) => phone.run_ivr_provisioning(dn).await,
        None => phone.run_zero_touch().await,
    };
    match result {
        Ok(p) => {
            for t in &p.timings {
                println!(
                    "  {:<10} {:>8.1} ms",
                    t.step.name(),
                    t.elapsed.as_secs_f64() * 1000.0
                );
            }
            let regs: Vec<String> = p
                .registered
                .iter()
                .map(|r| format!("{} (expires {})", r.registrar, r.expires))
                .collect();
            println!("registered as {} at {}", p.config.user, regs.join(", "));
            if let Some(c) = &p.call {
                println!(
                    "call: provisional {:?}, RTP in {} out {}, keys {}, {} hung up",
                    c.provisional,
                    c.media.received,
                    c.media.sent,
                    c.media.events_sent,
                    if c.ivr_hung_up { "IVR" } else { "phone" }
                );
            }
            println!("NOTIFYs: {:?}", p.notifies);
            println!(
                "time-to-provisioned: {:.1} ms",
                p.total.as_secs_f64() * 1000.0
            );
            Ok(())
        }
        Err(e) => {
            for t in &e.timings {
                println!(
                    "  {:<10} {:>8.1} ms",
                    t.step.name(),
                    t.elapsed.as_secs_f64() * 1000.0
                );
            }
            Err(format!(
                "failed at {}: {} (after {:.1} s)",
                e.step,
                e.error,
                e.elapsed.as_secs_f64()
            ))
        }
    }
}

async fn fleet(args: FleetArgs) -> Result<(), String> {
    let mut urls = args.common.prov_url.clone();
    if urls.is_empty() {
        return Err("--prov-url is required".into());
    }
    let prov_url = urls.remove(0);
    let vendor: VendorChoice = args.vendor.parse().map_err(|e| format!("{e}"))?;
    let spec = FleetSpec {
        count: args.count,
        prov_url,
        fallback_prov_urls: urls,
        spread: args.spread,
        local_ip: args.common.local_ip,
        dns: args.common.dns,
        dn_start: args.dn_start,
        concurrency: args.concurrency,
        vendor,
        mode: if args.zero_touch {
            FleetMode::ZeroTouch
        } else {
            FleetMode::Ivr
        },
        mac_offset: args.mac_offset,
        options: options(&args.common),
        overall_timeout: Duration::from_secs(args.fleet_timeout),
        progress: !args.quiet,
        follow: args.follow_seconds.map(Duration::from_secs),
        spread_ips: args.spread_ips,
    };
    let report = run_fleet(spec).await;
    print!("{}", report.summary());
    if report.succeeded() == report.outcomes.len() && report.unfinished == 0 {
        Ok(())
    } else {
        Err("some phones were not provisioned".into())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phone-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Fleet(f)) => fleet(f).await,
            Some(Command::Macs(m)) => macs(m),
            None => one(cli.one).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phone-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
