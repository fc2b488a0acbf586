//! Real alert and metrics receivers for the tests: an SMTP server (aiosmtpd writing a Maildir),
//! an HTTP receiver logging every request (tests/support/receiver.py), and a Prometheus
//! Pushgateway. Each is started per call on a free 127.0.0.1 port and dies with the test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::free_port;
use super::s3::{root_dir, spawn_tied, wait_port};

pub struct Smtp {
    pub port: u16,
    pub maildir: PathBuf,
}

impl Smtp {
    pub fn start() -> Smtp {
        let root = root_dir("smtp");
        let port = free_port();
        let maildir = root.join("mail");
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(&maildir);
        spawn_tied(cmd, &root.join("smtp.log"));
        wait_port(port, "aiosmtpd", &root.join("smtp.log"));
        Smtp { port, maildir }
    }

    /// Raw messages received so far.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    pub fn wait_for(&self, n: usize) -> Vec<String> {
        wait(
            || {
                let m = self.messages();
                (m.len() >= n).then_some(m)
            },
            "emails",
        )
    }
}

pub struct Receiver {
    pub port: u16,
    pub log: PathBuf,
}

impl Receiver {
    pub fn start() -> Receiver {
        let root = root_dir("http");
        let port = free_port();
        let log = root.join("requests.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/receiver.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(port.to_string()).arg(&log);
        spawn_tied(cmd, &root.join("receiver.log"));
        wait_port(port, "receiver", &root.join("receiver.log"));
        Receiver { port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        wait(
            || {
                let r = self.requests();
                (r.len() >= n).then_some(r)
            },
            "HTTP requests",
        )
    }
}

pub struct Pushgateway {
    pub port: u16,
}

impl Pushgateway {
    pub fn start() -> Pushgateway {
        let root = root_dir("pushgateway");
        let port = free_port();
        let bin = [
            "/usr/bin/prometheus-pushgateway",
            "/usr/local/bin/pushgateway",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("prometheus-pushgateway is not installed: scripts/test.sh installs it");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"));
        spawn_tied(cmd, &root.join("pushgateway.log"));
        wait_port(port, "pushgateway", &root.join("pushgateway.log"));
        Pushgateway { port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The value of the sample `name{labels}` pushed by job stackback, if present.
    pub fn value(&self, name: &str, label: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/metrics", self.url())])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains("job=\"stackback\"")
                    && l.contains(label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .next()
    }
}

fn wait<T>(mut f: impl FnMut() -> Option<T>, what: &str) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
