//! Real S3-compatible servers for the tests: Garage (the reference, a production store) and moto
//! (a second, independent implementation). Each is started once per test binary on free
//! 127.0.0.1 ports, dies with the test process (PR_SET_PDEATHSIG), and is checked with an
//! independent client (boto3, tests/support/s3tool.py). A server that cannot start fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, spawn_tied as spawn_tied_with};

/// Spawns a test server that is killed when the test process ends.
pub fn spawn_tied(cmd: Command, log: &Path) {
    spawn_tied_with(cmd, log, libc::SIGKILL);
}

pub struct S3Server {
    pub name: &'static str,
    pub endpoint: String,
    pub region: &'static str,
    pub access_key: String,
    pub secret_key: String,
    pub root: PathBuf,
}

static GARAGE: OnceLock<S3Server> = OnceLock::new();
static MOTO: OnceLock<S3Server> = OnceLock::new();

pub fn wait_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            panic!(
                "{what} did not listen on {port} within 60 s; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn root_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let root = std::env::temp_dir().join(format!(
        "stackback-test-{}-{name}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn find_binary(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var("PATH") {
        for d in std::env::split_paths(&p) {
            if d.join(name).is_file() {
                return d.join(name);
            }
        }
    }
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let cargo = home.join(".cargo/bin").join(name);
    if cargo.is_file() {
        return cargo;
    }
    panic!("{name} is not installed: scripts/test.sh installs it (see scripts/lib.sh)");
}

pub fn garage() -> &'static S3Server {
    GARAGE.get_or_init(start_garage)
}

pub fn moto() -> &'static S3Server {
    MOTO.get_or_init(|| start_moto(None))
}

/// A moto serving https with `cert`/`key` (a server of its own, not shared).
pub fn moto_tls(cert: &Path, key: &Path) -> S3Server {
    start_moto(Some((cert, key)))
}

fn start_garage() -> S3Server {
    let bin = find_binary("garage");
    let root = root_dir("garage");
    let (s3, rpc) = (free_port(), free_port());
    let conf = root.join("garage.toml");
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
    let log = root.join("garage.log");
    let mut cmd = Command::new(&bin);
    cmd.arg("-c")
        .arg(&conf)
        .arg("server")
        .env("RUST_LOG", "warn");
    spawn_tied(cmd, &log);
    wait_port(s3, "garage", &log);
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
    }
}

fn start_moto(tls: Option<(&Path, &Path)>) -> S3Server {
    let bin = find_binary("moto_server");
    let root = root_dir("moto");
    let port = free_port();
    let log = root.join("moto.log");
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((cert, key)) = tls {
        cmd.arg("-s").arg("-c").arg(cert).arg("-k").arg(key);
    }
    spawn_tied(cmd, &log);
    wait_port(port, "moto_server", &log);
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
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/s3tool.py");
        let out = Command::new("python3")
            .arg(script)
            .args(args)
            .env("S3_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_DEFAULT_REGION", self.region)
            .output()
            .unwrap();
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
}

/// A bucket name unique to this test process.
pub fn bucket_name(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}
