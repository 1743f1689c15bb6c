//! `dns-zone`: serves one DNS zone from a master file, authoritatively, over UDP and TCP on
//! one port, until it is killed (see `testbed::dns_zone` for what it answers).
//!
//! ```text
//! dns-zone [--listen ADDR:PORT] [--origin NAME] [--negative-ttl SECONDS] ZONEFILE
//!
//!   --listen        where to serve (default 127.0.0.1:5353; port 0 picks a free one)
//!   --origin        origin for relative names until the file's own $ORIGIN, and the zone
//!                   served (default: the file's SOA owner, else the root: every name in
//!                   the file)
//!   --negative-ttl  TTL of NXDOMAIN/NODATA answers when the file has no SOA (default 5)
//!   ZONEFILE        RFC 1035 master file: $ORIGIN, $TTL, `name [ttl] [IN] type rdata` with
//!                   A, AAAA, SRV, NAPTR, CNAME, TXT, SOA, … records
//! ```
//!
//! Once listening it prints one line to standard output, which scripts can wait for:
//! `dns-zone listening on 127.0.0.1:5353 (udp+tcp), zone <origin>, <n> records`.
//! Records of one name and type are answered in file order, so a zone such as
//!
//! ```text
//! $ORIGIN .
//! $TTL 60
//! fs1  A 127.0.0.11        ; fs1: every node
//! fs1  A 127.0.0.12
//! fs1  A 127.0.0.21
//! fs1  A 127.0.0.22
//! fs2  A 127.0.0.11        ; fs2: site 1's nodes
//! fs2  A 127.0.0.12
//! fs3  A 127.0.0.22        ; fs3: site 2's nodes, in this order
//! fs3  A 127.0.0.21
//! ```
//!
//! gives the deployments their `fs1`/`fs2`/`fs3` names in the order written;
//! `testbed/dns/example.zone` has those plus an IVR media server behind NAPTR and SRV.
//! sipdm is pointed at the server with `[sip] dns-servers = ["127.0.0.1:5353"]`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use testbed::dns_zone::{Zone, ZoneServer, DEFAULT_NEGATIVE_TTL};

#[derive(Parser)]
#[command(about = "Serve one DNS zone from a master file over UDP and TCP")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:5353")]
    listen: SocketAddr,
    #[arg(long)]
    origin: Option<String>,
    #[arg(long, default_value_t = DEFAULT_NEGATIVE_TTL)]
    negative_ttl: u32,
    zone_file: PathBuf,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let zone = match Zone::load(&args.zone_file, args.origin.as_deref()) {
        Ok(z) => z.negative_ttl(args.negative_ttl),
        Err(e) => {
            eprintln!("dns-zone: {e}");
            std::process::exit(2);
        }
    };
    let (origin, count) = (zone.origin().to_string(), zone.records().len());
    let server = match ZoneServer::start(zone, args.listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dns-zone: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "dns-zone listening on {} (udp+tcp), zone {origin}, {count} records",
        server.addr()
    );
    let _ = std::io::stdout().flush();
    tokio::select! {
        r = server.run() => {
            if let Err(e) = r {
                eprintln!("dns-zone: {e}");
                std::process::exit(1);
            }
        }
        _ = tokio::signal::ctrl_c() => {}
    }
}
