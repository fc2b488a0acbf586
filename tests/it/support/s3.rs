//! Real S3-compatible servers: Garage (the reference, a production store) and moto (a second,
//! independent implementation), each started once on first use, dying with the test process, and
//! checked with an independent client (boto3, tests/it/support/s3tool.py).
//!
//! A bucket test is written once as `fn name(s3: &S3Server)` and instantiated for both servers by
//! [`s3_tests!`] (restic's backend test-suite idea): `buckets::garage::name` and
//! `buckets::moto::name`. Tests about one server's quirk call [`garage()`] or [`moto()`] directly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{
    find_binary, python3, root_dir, spawn_tied, start_on_free_port, support_file, wait_port,
};

pub struct S3Server {
    pub name: &'static str,
    pub endpoint: String,
    pub region: &'static str,
    pub access_key: String,
    pub secret_key: String,
    pub root: PathBuf,
    /// A CA file for an https endpoint (boto3 must trust it too).
    pub ca: Option<PathBuf>,
}

static GARAGE: OnceLock<S3Server> = OnceLock::new();
static MOTO: OnceLock<S3Server> = OnceLock::new();

/// Runs each named `fn(&S3Server)` of the calling module against Garage and against moto.
macro_rules! s3_tests {
    ($($name:ident),+ $(,)?) => {
        mod garage {
            $( #[test] fn $name() { super::$name($crate::support::s3::garage()); } )+
        }
        mod moto {
            $( #[test] fn $name() { super::$name($crate::support::s3::moto()); } )+
        }
    };
}
pub(crate) use s3_tests;

pub fn garage() -> &'static S3Server {
    GARAGE.get_or_init(start_garage)
}

pub fn moto() -> &'static S3Server {
    MOTO.get_or_init(|| start_moto(None))
}

/// The server that is not `s3`, for restores across implementations.
pub fn other(s3: &S3Server) -> &'static S3Server {
    if s3.name == "garage" {
        moto()
    } else {
        garage()
    }
}

/// A moto serving https with `cert`/`key` signed by `ca` (a server of its own, not shared).
pub fn moto_tls(cert: &Path, key: &Path, ca: &Path) -> S3Server {
    let mut s = start_moto(Some((cert, key)));
    s.ca = Some(ca.to_path_buf());
    s
}

fn start_garage() -> S3Server {
    let bin = find_binary("garage");
    let root = root_dir("garage");
    let conf = root.join("garage.toml");
    let s3 = start_on_free_port("garage", |s3| {
        let rpc = super::free_port();
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = \"{r}/meta\"\ndata_dir = \"{r}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                r = root.display(),
                secret = "5c".repeat(32),
            ),
        )
        .unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&conf)
            .arg("server")
            .env("RUST_LOG", "warn");
        let server = spawn_tied(cmd, &root.join("garage.log"), libc::SIGKILL);
        wait_port(s3, &server, "garage")?;
        Ok(s3)
    });
    let cli = |args: &[&str]| -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            if Instant::now() > deadline {
                panic!(
                    "garage {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let node = cli(&["node", "id", "-q"]);
    let node = node.split('@').next().unwrap().to_string();
    cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
    cli(&["layout", "apply", "--version", "1"]);
    let access_key = format!("GK{}", "1a".repeat(12));
    let secret_key = "7e".repeat(32);
    cli(&[
        "key",
        "import",
        "--yes",
        "-n",
        "test",
        &access_key,
        &secret_key,
    ]);
    cli(&["key", "allow", "--create-bucket", &access_key]);
    S3Server {
        name: "garage",
        endpoint: format!("http://127.0.0.1:{s3}"),
        region: "garage",
        access_key,
        secret_key,
        root,
        ca: None,
    }
}

fn start_moto(tls: Option<(&Path, &Path)>) -> S3Server {
    let bin = find_binary("moto_server");
    let root = root_dir("moto");
    let port = start_on_free_port("moto_server", |port| {
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if let Some((cert, key)) = tls {
            cmd.arg("-s").arg("-c").arg(cert).arg("-k").arg(key);
        }
        let server = spawn_tied(cmd, &root.join("moto.log"), libc::SIGKILL);
        wait_port(port, &server, "moto_server")?;
        Ok(port)
    });
    S3Server {
        name: "moto",
        endpoint: format!(
            "{}://127.0.0.1:{port}",
            if tls.is_some() { "https" } else { "http" }
        ),
        region: "us-east-1",
        access_key: "testing-access".into(),
        secret_key: "testing-secret-key".into(),
        root,
        ca: None,
    }
}

impl S3Server {
    /// The MINIO_* variables stackback reads, for `bucket`.
    pub fn env(&self, bucket: &str) -> Vec<(String, String)> {
        vec![
            ("MINIO_ENDPOINT".into(), self.endpoint.clone()),
            ("MINIO_ACCESS_KEY".into(), self.access_key.clone()),
            ("MINIO_SECRET_KEY".into(), self.secret_key.clone()),
            ("MINIO_REGION".into(), self.region.into()),
            ("MINIO_BUCKET".into(), bucket.into()),
        ]
    }

    /// Runs the independent client (boto3).
    pub fn tool(&self, args: &[&str]) -> String {
        self.tool_via(&self.endpoint, args)
    }

    /// [`S3Server::tool`] addressing the server as `endpoint` (a proxy in front of it).
    pub fn tool_via(&self, endpoint: &str, args: &[&str]) -> String {
        let mut cmd = python3();
        cmd.arg(support_file("s3tool.py"))
            .args(args)
            .env("S3_ENDPOINT", endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_DEFAULT_REGION", self.region);
        if let Some(ca) = &self.ca {
            cmd.env("AWS_CA_BUNDLE", ca);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "s3tool {args:?} against {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every object (key, size, sha256, content type, metadata, headers), sorted, as JSON lines.
    pub fn dump(&self, bucket: &str) -> Vec<String> {
        self.tool(&["dump", bucket])
            .lines()
            .map(String::from)
            .collect()
    }

    /// [`S3Server::dump`] parsed, sorted by key. Garage, like MinIO, drops a leading `/` from
    /// keys it stores: `strip` models that for comparisons with such a target.
    pub fn objects(&self, bucket: &str, strip: &str) -> Vec<serde_json::Value> {
        parse_dump(&self.dump(bucket), strip)
    }
}

pub fn parse_dump(lines: &[String], strip: &str) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            let mut o: serde_json::Value = serde_json::from_str(l).unwrap();
            let k = o["key"].as_str().unwrap().to_string();
            o["key"] = serde_json::Value::String(k.strip_prefix(strip).unwrap_or(&k).to_string());
            o
        })
        .collect();
    v.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    v
}

/// A bucket name unique to this test process (S3 names: lowercase, digits, dashes).
pub fn bucket_name(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// Text that does not compress away (so archives pass the size threshold).
pub fn noise(seed: u64, len: usize) -> String {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            char::from(b'a' + ((x >> 33) % 26) as u8)
        })
        .collect()
}

/// A new bucket with five incompressible 2 kB objects under `docs/`.
pub fn small_bucket(s3: &S3Server) -> String {
    let b = bucket_name("small");
    s3.tool(&["mkbucket", &b]);
    for i in 0..5 {
        s3.tool(&["put", &b, &format!("docs/{i}.txt"), &noise(i, 2000)]);
    }
    b
}
