//! A three-node Garage cluster on loopback (replication factor 3), its own per test: a remote that
//! is a distributed object store, so a test can stop one node and see what a client of the
//! others gets. Each node has its own configuration, directories, RPC and S3 ports and the same
//! RPC secret; node 0 connects the other two, one layout puts the three in three zones, and a key
//! allowed to create buckets is imported. Garage's default `consistency_mode = "consistent"` with
//! three replicas needs two of three nodes for a write or a read (its documented quorums), which is
//! what lets one node be down.
//!
//! The nodes die with the test process (PR_SET_PDEATHSIG) and, earlier, when the cluster is dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::s3::S3Server;
use super::{find_binary, free_port, root_dir, spawn_tied, start_on_free_port, wait_port, Tied};

pub struct GarageNode {
    pub server: Tied,
    pub conf: PathBuf,
    pub data_dir: PathBuf,
    pub s3_port: u16,
}

pub struct GarageCluster {
    pub nodes: Vec<GarageNode>,
    /// Clients address node 0.
    pub s3: S3Server,
    bin: PathBuf,
}

impl GarageCluster {
    pub fn start() -> GarageCluster {
        let bin = find_binary("garage");
        let root = root_dir("garage3");
        let secret = "3c".repeat(32);
        let mut nodes = Vec::new();
        for i in 0..3 {
            let dir = root.join(format!("node{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = dir.join("garage.toml");
            let data_dir = dir.join("data");
            let (s3_port, server) = start_on_free_port(&format!("garage node {i}"), |s3| {
                let rpc = free_port();
                // Blocks stored uncompressed: the size of a node's data directory then tells how
                // far an upload has got (the test stops a node by it).
                std::fs::write(
                    &conf,
                    format!(
                        "metadata_dir = \"{d}/meta\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                         replication_factor = 3\ncompression_level = \"none\"\n\
                         rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                         rpc_secret = \"{secret}\"\n\n[s3_api]\ns3_region = \"garage\"\n\
                         api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n",
                        d = dir.display(),
                        data = data_dir.display(),
                    ),
                )
                .unwrap();
                let mut cmd = Command::new(&bin);
                cmd.arg("-c")
                    .arg(&conf)
                    .arg("server")
                    .env("RUST_LOG", "warn");
                let server = spawn_tied(cmd, &dir.join("garage.log"), libc::SIGKILL);
                wait_port(s3, &server, &format!("garage node {i}"))?;
                Ok((s3, server))
            });
            nodes.push(GarageNode {
                server,
                conf,
                data_dir,
                s3_port,
            });
        }
        let mut cluster = GarageCluster {
            nodes,
            s3: S3Server {
                name: "garage-cluster",
                endpoint: String::new(),
                region: "garage",
                access_key: format!("GK{}", "3b".repeat(12)),
                secret_key: "9d".repeat(32),
                root,
                ca: None,
            },
            bin,
        };
        cluster.s3.endpoint = format!("http://127.0.0.1:{}", cluster.nodes[0].s3_port);
        // `node id` answers `<id>@<rpc address>`: exactly what `node connect` takes.
        let ids: Vec<String> = (0..3)
            .map(|i| cluster.cli(i, &["node", "id", "-q"]))
            .collect();
        for id in &ids[1..] {
            cluster.cli(0, &["node", "connect", id]);
        }
        for (i, id) in ids.iter().enumerate() {
            let node = id.split('@').next().unwrap();
            cluster.cli(
                0,
                &[
                    "layout",
                    "assign",
                    "-z",
                    &format!("dc{i}"),
                    "-c",
                    "1G",
                    node,
                ],
            );
        }
        cluster.cli(0, &["layout", "apply", "--version", "1"]);
        let key = cluster.s3.access_key.clone();
        let secret = cluster.s3.secret_key.clone();
        // Retried by `cli` until the layout has reached enough nodes for a quorum write.
        cluster.cli(0, &["key", "import", "--yes", "-n", "test", &key, &secret]);
        cluster.cli(0, &["key", "allow", "--create-bucket", &key]);
        cluster.wait_healthy();
        cluster
    }

    /// `garage -c <node i's config> ARGS`, retried for 30 s (a node answers before the cluster
    /// has converged); the last failure fails the test.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.nodes[i].conf)
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            if Instant::now() > deadline {
                panic!(
                    "garage (node {i}) {args:?} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until node 0 lists the three nodes as healthy with their own status known (a node
    /// not heard from yet shows `?` for its host name and free space), so a test starts from a
    /// whole cluster.
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.cli(0, &["status"]);
            let known = stats
                .lines()
                .filter(|l| l.contains("127.0.0.1:") && !l.contains(" ? "))
                .count();
            let healthy = known == 3 && !stats.contains("FAILED NODES");
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the three Garage nodes did not come up together: {stats}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Bytes under node `i`'s data directory (its block files).
    pub fn data_bytes(&self, i: usize) -> u64 {
        fn walk(p: &std::path::Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.nodes[i].data_dir)
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped (SIGSTOP) node.
        for n in &self.nodes {
            n.server.signal(libc::SIGKILL);
        }
    }
}
