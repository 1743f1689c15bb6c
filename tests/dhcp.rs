//! The DHCP recipes of `config/dhcp/`, run for real. Two network namespaces made for the test
//! and joined by a veth pair (198.18.66.0/24, the benchmarking range, inside the namespaces
//! only): in the first, sipdm on 198.18.66.1 and the DHCP server — dnsmasq, then Kea — with the
//! shipped recipe, changed only in its interface, addresses and URL (which names that sipdm),
//! and Kea's lease file; in the second, ISC dhclient as a Polycom phone, a Yealink phone and a
//! phone of no known vendor class. Each gets option 66, the two vendors option 160 too; then
//! the phone simulator, bound to the leased address, fetches its file from the URL it was given
//! and registers, and sipdm has seen it at that address.
//!
//! Needs root (namespaces) and the Debian packages iproute2, dnsmasq-base, kea-dhcp4-server and
//! isc-dhcp-client (testbed/test.sh installs them). The namespaces and every process are
//! removed and killed by PID when the test ends, passes or not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The URL both recipes hand out, as the deployment guide writes it.
const RECIPE_URL: &str = "http://fs1:8080/fs/dm/prov";
/// ns A's address on the veth pair; sipdm and the DHCP server listen there.
const SERVER_IP: &str = "198.18.66.1";
/// The URL the adapted recipes hand out instead: the sipdm this test starts.
const TEST_URL: &str = "http://198.18.66.1:8080/fs/dm/prov";
/// The veth ends, named inside their namespaces (so no name is taken on the host).
const SERVER_IF: &str = "prov0";
const PHONE_IF: &str = "phone0";

/// A tool the test drives, or a failure naming the package that brings it.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is required: install the Debian package {package} (testbed/test.sh does)"
            )
        })
}

struct Tools {
    ip: PathBuf,
    dnsmasq: PathBuf,
    kea: PathBuf,
    dhclient: PathBuf,
    sipdm: PathBuf,
    phone_sim: PathBuf,
}

impl Tools {
    fn find() -> Tools {
        Tools {
            ip: tool("ip", "iproute2"),
            dnsmasq: tool("dnsmasq", "dnsmasq-base"),
            kea: tool("kea-dhcp4", "kea-dhcp4-server"),
            dhclient: tool("dhclient", "isc-dhcp-client"),
            sipdm: PathBuf::from(env!("CARGO_BIN_EXE_sipdm")),
            phone_sim: phone_sim(),
        }
    }
}

/// The phone simulator (the testbed package's binary: built here, a no-op when the
/// workspace's tests already built it).
fn phone_sim() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "testbed", "--bin", "phone-sim"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building phone-sim");
    Path::new(env!("CARGO_BIN_EXE_sipdm")).with_file_name("phone-sim")
}

/// The two namespaces and every process started in them; dropping it kills each process by
/// its PID and deletes the namespaces.
struct Lab {
    ip: PathBuf,
    ns_server: String,
    ns_phone: String,
    made: Vec<String>,
    procs: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(ip: &Path) -> Lab {
        let id = format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let mut lab = Lab {
            ip: ip.to_owned(),
            ns_server: format!("sipdm-dhcp-{id}-srv"),
            ns_phone: format!("sipdm-dhcp-{id}-phone"),
            made: Vec::new(),
            procs: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        // 0755: dnsmasq and Kea may drop privileges and still write their files here.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
        for ns in [lab.ns_server.clone(), lab.ns_phone.clone()] {
            lab.ip(&["netns", "add", &ns]);
            lab.made.push(ns.clone());
            lab.ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        let (a, b) = (lab.ns_server.clone(), lab.ns_phone.clone());
        lab.ip(&[
            "-n", &a, "link", "add", SERVER_IF, "type", "veth", "peer", "name", PHONE_IF, "netns",
            &b,
        ]);
        lab.ip(&[
            "-n",
            &a,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            SERVER_IF,
        ]);
        lab.ip(&["-n", &a, "link", "set", SERVER_IF, "up"]);
        lab.ip(&["-n", &b, "link", "set", PHONE_IF, "up"]);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `ip args` (bounded; it returns at once) and fails the test with its error.
    fn ip(&self, args: &[&str]) {
        let (ok, out) = run(Command::new(&self.ip).args(args), Duration::from_secs(10));
        assert!(
            ok,
            "ip {}: {out}\n(this test needs root to make network namespaces)",
            args.join(" ")
        );
    }

    /// Starts `program args` in namespace `ns`, its output to `<name>.log`.
    fn spawn(
        &mut self,
        name: &str,
        ns: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &Path)],
    ) {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).expect("log file");
        let mut cmd = Command::new(&self.ip);
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // `ip netns exec` execs the program: the child's PID is the program's.
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.procs.push((name.to_owned(), child));
    }

    /// Kills the process started as `name` (by its PID) and reaps it.
    fn stop(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.procs.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process started as `name` has exited, and how.
    fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let (_, child) = self.procs.iter_mut().find(|(n, _)| n == name)?;
        child.try_wait().ok().flatten()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits up to `limit` for `ready` to find something in `name`'s log; fails with the log.
    fn wait_log(&mut self, name: &str, limit: Duration, ready: &str) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.log(name).contains(ready) {
                return;
            }
            if let Some(s) = self.exited(name) {
                panic!("{name} exited ({s}) before `{ready}`:\n{}", self.log(name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{name}: no `{ready}` within {limit:?}:\n{}", self.log(name));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.made.drain(..).rev() {
            let _ = run(
                Command::new(&self.ip).args(["netns", "del", &ns]),
                Duration::from_secs(10),
            );
        }
    }
}

/// Runs a command to its end, bounded by `limit` (killed by PID past it); (success, output).
fn run(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let out_file = tempfile::NamedTempFile::new().expect("temp file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out_file.reopen().expect("output"))
        .stderr(out_file.reopen().expect("output"))
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = std::fs::read_to_string(out_file.path()).unwrap_or_default();
    if status.is_none() {
        out.push_str(&format!("\n(killed after {limit:?})"));
    }
    (status.is_some_and(|s| s.success()), out)
}

/// `recipe` with each `(from, to)` replaced, failing when `from` is not in it: the test's
/// changes to a shipped recipe are named here, and a recipe that drifted from them fails.
fn adapt(recipe: &str, changes: &[(&str, &str)]) -> String {
    let mut s = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(recipe))
        .unwrap_or_else(|e| panic!("{recipe}: {e}"));
    for (from, to) in changes {
        assert!(s.contains(from), "{recipe} no longer contains `{from}`");
        s = s.replace(from, to);
    }
    s
}

/// A phone as the DHCP server sees it: its MAC and what it sends in option 60.
struct Client {
    name: &'static str,
    mac: &'static str,
    vendor_class: Option<&'static str>,
    /// phone-sim's vendor, model and DN for the phones that then fetch their files.
    phone: Option<(&'static str, &'static str, &'static str)>,
}

const CLIENTS: [Client; 3] = [
    Client {
        name: "polycom",
        mac: "00:04:f2:d4:c0:01",
        vendor_class: Some("Polycom-VVX450"),
        phone: Some(("polycom", "VVX 450", "1000")),
    },
    Client {
        name: "yealink",
        mac: "80:5e:c0:d4:c0:02",
        vendor_class: Some("yealink"),
        phone: Some(("yealink", "T46S", "1001")),
    },
    Client {
        name: "other",
        mac: "02:00:5e:d4:c0:03",
        vendor_class: None,
        phone: None,
    },
];

/// The lease `client` got from the DHCP server running in the lab: dhclient's variables
/// (`new_ip_address`, `new_tftp_server_name`, `new_provisioning_url`, …). The client script
/// records them and puts the address on the interface, as a phone would.
fn lease(lab: &mut Lab, tools: &Tools, server: &str, client: &Client) -> BTreeMap<String, String> {
    let ns = lab.ns_phone.clone();
    let tag = format!("{server}-{}", client.name);
    // A phone of its own: its MAC on the interface, no address yet.
    lab.ip(&["-n", &ns, "link", "set", PHONE_IF, "down"]);
    lab.ip(&["-n", &ns, "link", "set", PHONE_IF, "address", client.mac]);
    lab.ip(&["-n", &ns, "addr", "flush", "dev", PHONE_IF]);
    lab.ip(&["-n", &ns, "link", "set", PHONE_IF, "up"]);

    let conf = lab.path(&format!("dhclient-{tag}.conf"));
    let vendor = client
        .vendor_class
        .map(|v| format!("send vendor-class-identifier \"{v}\";\n"))
        .unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "option provisioning-url code 160 = string;\n{vendor}\
             request subnet-mask, broadcast-address, routers, tftp-server-name, provisioning-url;\n\
             timeout 20;\nretry 1;\n"
        ),
    )
    .expect("dhclient.conf");
    let record = lab.path(&format!("lease-{tag}.env"));
    let script = lab.path(&format!("dhclient-{tag}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             case \"$reason\" in\n\
             BOUND|REBOOT)\n\
             \x20 {ip} addr add \"$new_ip_address/$new_subnet_mask\" dev \"$interface\"\n\
             \x20 env | grep -E '^(reason|interface|new_)' > {rec}.tmp && mv {rec}.tmp {rec} ;;\n\
             esac\n",
            ip = tools.ip.display(),
            rec = record.display()
        ),
    )
    .expect("dhclient script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let name = format!("dhclient-{tag}");
    let (cf, lf, pf, sf) = (
        conf.display().to_string(),
        lab.path(&format!("dhclient-{tag}.leases"))
            .display()
            .to_string(),
        lab.path(&format!("dhclient-{tag}.pid"))
            .display()
            .to_string(),
        script.display().to_string(),
    );
    lab.spawn(
        &name,
        &ns,
        &tools.dhclient.clone(),
        &[
            "-d", "-1", "-v", "-cf", &cf, "-lf", &lf, "-pf", &pf, "-sf", &sf, PHONE_IF,
        ],
        &[],
    );
    let start = Instant::now();
    while !record.exists() {
        if start.elapsed() > Duration::from_secs(30) {
            panic!(
                "{tag}: no lease within 30 s\ndhclient:\n{}\n{server}:\n{}",
                lab.log(&name),
                lab.log(server)
            );
        }
        if let Some(s) = lab.exited(&name) {
            panic!(
                "{tag}: dhclient exited ({s}) without a lease:\n{}\n{server}:\n{}",
                lab.log(&name),
                lab.log(server)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The phone keeps its address; its client is not needed any more.
    lab.stop(&name);
    std::fs::read_to_string(&record)
        .expect("lease record")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// sipdm's own view of the device: its line in `sipdm device list`.
fn device_line(tools: &Tools, config: &Path, mac: &str) -> String {
    let plain: String = mac.chars().filter(|c| *c != ':').collect();
    let (ok, out) = run(
        Command::new(&tools.sipdm)
            .arg("--config")
            .arg(config)
            .args(["device", "list", "--search", &plain]),
        Duration::from_secs(30),
    );
    assert!(ok, "sipdm device list: {out}");
    out.lines()
        .find(|l| l.starts_with(&plain))
        .unwrap_or_else(|| panic!("sipdm has no device {plain}:\n{out}"))
        .to_owned()
}

/// Each client asks the server now running as `server`; checks what it got and has each phone
/// fetch its file from the URL it was given.
fn clients_of(lab: &mut Lab, tools: &Tools, config: &Path, server: &str) {
    for client in &CLIENTS {
        let lease = lease(lab, tools, server, client);
        let got = |k: &str| lease.get(k).cloned();
        let ip = got("new_ip_address").expect("leased address");
        assert!(
            ip.starts_with("198.18.66."),
            "{server}/{}: address {ip}",
            client.name
        );
        assert_eq!(
            got("new_tftp_server_name").as_deref(),
            Some(TEST_URL),
            "{server}/{}: option 66 in {lease:?}",
            client.name
        );
        let option_160 = got("new_provisioning_url");
        match client.vendor_class {
            Some(_) => assert_eq!(
                option_160.as_deref(),
                Some(TEST_URL),
                "{server}/{}: option 160 for its vendor class in {lease:?}",
                client.name
            ),
            None => assert_eq!(
                option_160, None,
                "{server}/{}: no option 160 without a vendor class",
                client.name
            ),
        }
        println!(
            "{server}: {} ({}) got {ip}, option 66 {:?}, option 160 {:?}",
            client.name,
            client.vendor_class.unwrap_or("no vendor class"),
            got("new_tftp_server_name").unwrap_or_default(),
            option_160.clone().unwrap_or_default()
        );

        let Some((vendor, _, dn)) = client.phone else {
            continue;
        };
        // The phone follows the URL its vendor reads first (160), from its leased address.
        let url = option_160.expect("option 160");
        let ns = lab.ns_phone.clone();
        let (ok, out) = run(
            Command::new(&tools.ip)
                .args(["netns", "exec", &ns])
                .arg(&tools.phone_sim)
                .args(["--prov-url", &url, "--mac", client.mac, "--vendor", vendor])
                .args(["--local-ip", &ip, "--timeout", "30"]),
            Duration::from_secs(45),
        );
        assert!(
            ok,
            "{server}/{}: phone-sim with {url} from {ip}:\n{out}\nsipdm:\n{}",
            client.name,
            lab.log("sipdm")
        );
        assert!(
            out.contains(&format!("registered as {dn} at")),
            "{server}/{}: phone-sim:\n{out}",
            client.name
        );
        // sipdm writes last-seen data behind the response, once a second: wait for it.
        let seen = |line: &str| line.contains(dn) && line.trim_end().ends_with(ip.as_str());
        let start = Instant::now();
        let mut line = device_line(tools, config, client.mac);
        while !seen(&line) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(200));
            line = device_line(tools, config, client.mac);
        }
        assert!(
            seen(&line),
            "{server}/{}: sipdm saw the phone at {ip} with DN {dn}: {line}",
            client.name
        );
        let registered = out.lines().find(|l| l.starts_with("registered as"));
        println!(
            "{server}: {} phone-sim {}; sipdm: {}",
            client.name,
            registered.unwrap_or_default(),
            line.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
}

#[test]
fn dnsmasq_and_kea_recipes_provision_phones() {
    let started = Instant::now();
    let tools = Tools::find();
    let mut lab = Lab::new(&tools.ip);
    let ns_server = lab.ns_server.clone();

    // sipdm in the server's namespace, on its veth address; a store of its own in the lab.
    let config = lab.path("sipdm.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nhttp = \"{SERVER_IP}:8080\"\nsip = [\"{SERVER_IP}:5060\"]\n\
             admin-token = \"test-token\"\nsecret = \"test-secret\"\n\n\
             [store]\nurl = \"sqlite://{}\"\n",
            lab.path("sipdm.db").display()
        ),
    )
    .expect("sipdm.toml");
    let cli = |args: &[&str]| {
        let (ok, out) = run(
            Command::new(&tools.sipdm)
                .arg("--config")
                .arg(&config)
                .args(args),
            Duration::from_secs(30),
        );
        assert!(ok, "sipdm {}: {out}", args.join(" "));
    };
    for c in &CLIENTS {
        if let Some((_, model, dn)) = c.phone {
            cli(&["dn", "add", dn, "--password", &format!("pw{dn}")]);
            cli(&["device", "add", c.mac, "--model", model, "--dn", dn]);
        }
    }
    let sipdm = tools.sipdm.clone();
    let config_arg = config.display().to_string();
    lab.spawn(
        "sipdm",
        &ns_server,
        &sipdm,
        &["--config", &config_arg, "serve"],
        &[],
    );
    lab.wait_log("sipdm", Duration::from_secs(30), "sipdm serving");

    // dnsmasq with the shipped recipe: DHCP only (port=0), bound to the lab's interface, its
    // lease and PID files in the lab, reading no other configuration file.
    let recipe = adapt(
        "config/dhcp/dnsmasq.conf",
        &[
            ("interface=eth1", &format!("interface={SERVER_IF}")),
            (
                "dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,12h",
                "dhcp-range=198.18.66.100,198.18.66.199,255.255.255.0,10m",
            ),
            (RECIPE_URL, TEST_URL),
        ],
    );
    for line in ["port=0", "bind-interfaces"] {
        assert!(recipe.lines().any(|l| l == line), "dnsmasq.conf: `{line}`");
    }
    let conf = lab.path("dnsmasq.conf");
    std::fs::write(&conf, recipe).expect("dnsmasq.conf");
    let args = [
        format!("--conf-file={}", conf.display()),
        "--keep-in-foreground".into(),
        format!("--pid-file={}", lab.path("dnsmasq.pid").display()),
        format!("--dhcp-leasefile={}", lab.path("dnsmasq.leases").display()),
        "--log-facility=-".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let dnsmasq = tools.dnsmasq.clone();
    lab.spawn("dnsmasq", &ns_server, &dnsmasq, &args, &[]);
    lab.wait_log(
        "dnsmasq",
        Duration::from_secs(10),
        "DHCP, IP range 198.18.66.100",
    );
    clients_of(&mut lab, &tools, &config, "dnsmasq");
    lab.stop("dnsmasq");

    // Kea with the shipped recipe: its lease file, PID and lock files in the lab.
    let recipe = adapt(
        "config/dhcp/kea-dhcp4.conf",
        &[
            (
                "\"interfaces\": [ \"eth1\" ]",
                &format!("\"interfaces\": [ \"{SERVER_IF}\" ]"),
            ),
            (
                "/var/lib/kea/kea-leases4.csv",
                &lab.path("kea-leases4.csv").display().to_string(),
            ),
            (
                "\"subnet\": \"192.0.2.0/24\"",
                "\"subnet\": \"198.18.66.0/24\"",
            ),
            ("192.0.2.100 - 192.0.2.199", "198.18.66.100 - 198.18.66.199"),
            (RECIPE_URL, TEST_URL),
        ],
    );
    let conf = lab.path("kea-dhcp4.conf");
    std::fs::write(&conf, recipe).expect("kea-dhcp4.conf");
    let conf_arg = conf.display().to_string();
    let kea = tools.kea.clone();
    let lab_dir = lab.dir.path().to_owned();
    lab.spawn(
        "kea",
        &ns_server,
        &kea,
        &["-c", &conf_arg],
        &[
            ("KEA_PIDFILE_DIR", &lab_dir),
            ("KEA_LOCKFILE_DIR", &lab_dir),
        ],
    );
    lab.wait_log("kea", Duration::from_secs(10), "DHCP4_STARTED");
    clients_of(&mut lab, &tools, &config, "kea");
    lab.stop("kea");

    println!("done in {:.1} s", started.elapsed().as_secs_f64());
}
