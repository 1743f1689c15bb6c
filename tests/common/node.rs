//! sipdm as a separate process (the `sipdm` binary of this build), for what an in-process
//! server cannot show: a node killed with SIGKILL, whose sockets and database sessions the
//! kernel closes with nothing run on the way out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One `sipdm serve` child process. Dropping it kills it.
pub struct Node {
    pub name: String,
    pub http: SocketAddr,
    pub sip: SocketAddr,
    pub token: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Writes `config` (TOML) to a file of its own and starts `sipdm --config FILE serve`;
    /// returns once its health check answers (bounded). `http` and `sip` are the addresses the
    /// configuration binds, for the test to reach it.
    pub async fn start(name: &str, config: &str, http: SocketAddr, sip: SocketAddr) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, config).expect("write config");
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sipdm"))
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("sipdm starts");
        let mut node = Node {
            name: name.to_owned(),
            http,
            sip,
            token: "test-token".into(),
            child: Some(child),
            log,
            _dir: dir,
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("http://{http}/healthz")).send().await {
                if r.status().is_success() {
                    return node;
                }
            }
            if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
                panic!("{name} exited ({status}):\n{}", node.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{name} did not answer its health check:\n{}",
            node.log_text()
        );
    }

    pub fn prov_url(&self) -> String {
        format!("http://{}/fs/dm/prov", self.http)
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://{}/fs/dm/api/v1{path}", self.http)
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(self.api(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    /// SIGKILL (std's `Child::kill` on Unix), then reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `SIG{name}` (STOP, CONT, …) to the process.
    pub fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(c.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{name} {}", self.name);
        }
    }

    /// Whether the process has exited (reaped here, so a zombie does not count as running).
    pub fn exited(&mut self) -> bool {
        matches!(
            self.child.as_mut().map(|c| c.try_wait()),
            Some(Ok(Some(_))) | None
        )
    }

    /// SIGTERM: a clean stop.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, for a failure message.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The sum of a metric's samples (all label sets) on its /metrics.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = match reqwest::get(format!("http://{}/metrics", self.http)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        text.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    }

    /// Its health check's status and body (status 0: no answer).
    pub async fn health(&self) -> (u16, String) {
        match reqwest::get(format!("http://{}/healthz", self.http)).await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
