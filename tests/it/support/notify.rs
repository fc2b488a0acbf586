//! Real alert and metrics receivers: an SMTP server (aiosmtpd writing a Maildir, smtpd.py), an HTTP receiver
//! logging every request (receiver.py), and a Prometheus Pushgateway. Each is started per call on
//! its own 127.0.0.1 port and dies with the test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::tls::TestCa;
use super::{
    python3, root_dir, spawn_tied, start_on_free_port, support_file, wait_port, wait_until, Tied,
};

pub struct Smtp {
    pub port: u16,
    pub maildir: PathBuf,
    /// One JSON line per SMTP command, authentication and error (smtpd.py).
    pub events: PathBuf,
}

/// How the SMTP server is set up: STARTTLS offered, implicit TLS, AUTH required.
#[derive(Default)]
pub struct SmtpSetup<'a> {
    pub starttls: Option<&'a TestCa>,
    pub implicit_tls: Option<&'a TestCa>,
    pub auth: Option<(&'a str, &'a str)>,
}

impl Smtp {
    /// A plain local relay: no TLS, no authentication.
    pub fn start() -> Smtp {
        Smtp::start_with(&SmtpSetup::default())
    }

    pub fn start_with(setup: &SmtpSetup) -> Smtp {
        let root = root_dir("smtp");
        let maildir = root.join("mail");
        let events = root.join("events.jsonl");
        let mut args: Vec<PathBuf> = vec![maildir.clone(), events.clone()];
        if let Some(ca) = setup.starttls {
            args.extend(["--starttls".into(), ca.cert.clone(), ca.key.clone()]);
        }
        if let Some(ca) = setup.implicit_tls {
            args.extend(["--smtps".into(), ca.cert.clone(), ca.key.clone()]);
        }
        if let Some((u, p)) = setup.auth {
            args.extend(["--auth".into(), format!("{u}:{p}").into()]);
        }
        let args: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
        let (port, _) = spawn_reporting_port("smtpd", &root, "smtpd.py", &args);
        Smtp {
            port,
            maildir,
            events,
        }
    }

    /// What the server saw, in order (`{"event": "command", "command": "STARTTLS"}`...).
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The SMTP commands the client sent, in order.
    pub fn commands(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "command")
            .map(|e| e["command"].as_str().unwrap().to_string())
            .collect()
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
        let mut got = Vec::new();
        wait_until(Duration::from_secs(30), "emails", || {
            got = self.messages();
            got.len() >= n
        });
        got
    }
}

/// Starts `python3 SCRIPT PORTFILE ARGS...`, a server of ours that binds a port the kernel picks
/// and writes it to PORTFILE (so no other process can take it in between).
pub fn spawn_reporting_port(what: &str, root: &Path, script: &str, args: &[&Path]) -> (u16, Tied) {
    let portfile = root.join("port");
    let mut cmd = python3();
    cmd.arg(support_file(script)).arg(&portfile).args(args);
    let server = spawn_tied(cmd, &root.join(format!("{what}.log")), libc::SIGKILL);
    let mut port = 0;
    wait_until(Duration::from_secs(30), what, || {
        assert!(server.alive(), "{what} exited: {}", server.log_text());
        port = std::fs::read_to_string(&portfile)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        port != 0
    });
    (port, server)
}

pub struct Receiver {
    pub port: u16,
    pub log: PathBuf,
}

impl Receiver {
    pub fn start() -> Receiver {
        let root = root_dir("http");
        let log = root.join("requests.jsonl");
        let (port, _) = spawn_reporting_port("receiver", &root, "receiver.py", &[&log]);
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
        let mut got = Vec::new();
        wait_until(Duration::from_secs(30), "HTTP requests", || {
            got = self.requests();
            got.len() >= n
        });
        got
    }
}

pub struct Pushgateway {
    pub port: u16,
}

impl Pushgateway {
    pub fn start() -> Pushgateway {
        let root = root_dir("pushgateway");
        let bin = [
            "/usr/bin/prometheus-pushgateway",
            "/usr/local/bin/pushgateway",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("prometheus-pushgateway is not installed: scripts/test.sh installs it");
        let port = start_on_free_port("pushgateway", |port| {
            let mut cmd = Command::new(bin);
            cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"));
            // In memory only: Debian's default persistence file is one for every instance, so
            // each gateway would start with what earlier ones held (another test's typed
            // `backup_success` makes a later untyped push of the same name fail with 400).
            cmd.arg("--persistence.file=");
            let server = spawn_tied(cmd, &root.join("pushgateway.log"), libc::SIGKILL);
            wait_port(port, &server, "pushgateway")?;
            Ok(port)
        });
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
                    && l.contains("job=\"backup\"")
                    && l.contains(label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .next()
    }
}
