//! baresip, a real softphone (Debian `baresip-core`, installed by testbed/test.sh), run with a
//! config directory of its own for the registrar tests over UDP and over TLS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sip::registrar::Binding;

use super::TestServer;

pub struct Baresip {
    child: tokio::process::Child,
}

impl Baresip {
    /// Starts baresip from `dir` with one account line (`<sip:1000@host:port;…>;auth_pass=…`)
    /// and `extra_config` lines (e.g. `sip_cafile …`), listening on 127.0.0.1:`port`.
    pub fn start(dir: &Path, account: &str, port: u16, extra_config: &str) -> Baresip {
        std::fs::write(dir.join("accounts"), format!("{account}\n")).expect("write accounts");
        let modules = [
            "/usr/lib/baresip/modules",
            "/usr/lib/x86_64-linux-gnu/baresip/modules",
        ]
        .into_iter()
        .find(|p| Path::new(p).join("account.so").exists())
        .expect("baresip modules (Debian package baresip-core; run testbed/test.sh)");
        std::fs::write(
            dir.join("config"),
            format!(
                "module_path {modules}\nsip_listen 127.0.0.1:{port}\n{extra_config}\
                 audio_player none\naudio_source none\nmodule_app account.so\nmodule_tmp uuid.so\n"
            ),
        )
        .expect("write config");
        let child = tokio::process::Command::new("baresip")
            .arg("-f")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("baresip is required (Debian package baresip-core; run testbed/test.sh)");
        Baresip { child }
    }

    /// The bindings of `aor` once there are any (bounded: 10 s), or none.
    pub async fn wait_bound(&self, ts: &TestServer, aor: &str) -> Vec<Arc<Binding>> {
        for _ in 0..100 {
            let bound = ts.sip().registrar().bindings(aor);
            if !bound.is_empty() {
                return bound;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Vec::new()
    }

    /// Stops it and returns what it printed, for failure messages.
    pub async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let out = self.child.wait_with_output().await.expect("baresip output");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}
