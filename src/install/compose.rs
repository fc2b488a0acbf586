//! `install compose`: the backup service fitted to a stack's own docker-compose.yml.
//!
//! The stack's compose file is read (YAML, anchors and merge keys included) to find its
//! PostgreSQL and MinIO services (by image, else by name), the network they share and MinIO's
//! data volume. The override is deploy/docker-compose.backup.yml with those names put in; what
//! the stack's `.env` lacks for it (the network, a stable instance name, the MinIO endpoint) is
//! added at its end, after a comment, never changing a line that is there.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The override shipped with stackback, fitted by [`fit`].
const TEMPLATE: &str = include_str!("../../deploy/docker-compose.backup.yml");

/// What the stack's compose file tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// The project name: the stack directory's name, as compose takes it.
    pub project: String,
    pub postgres: String,
    pub minio: Option<String>,
    /// The network PostgreSQL (and MinIO) are on, when the stack names one.
    pub network: Option<String>,
    /// The top-level volume MinIO keeps its data in (for volume mode).
    pub minio_volume: Option<String>,
}

/// The compose file of a stack directory.
pub fn compose_file(dir: &Path) -> Option<PathBuf> {
    [
        "compose.yaml",
        "compose.yml",
        "docker-compose.yml",
        "docker-compose.yaml",
    ]
    .iter()
    .map(|n| dir.join(n))
    .find(|p| p.is_file())
}

/// Reads the stack in `dir`.
///
/// # Errors
/// No compose file, YAML that does not parse, or no PostgreSQL service.
pub fn read_stack(dir: &Path) -> Result<Stack, String> {
    let file = compose_file(dir)
        .ok_or_else(|| format!("no docker-compose.yml or compose.yaml in {}", dir.display()))?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let doc: Value =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: not YAML: {e}", file.display()))?;
    let services = doc["services"]
        .as_object()
        .ok_or_else(|| format!("{} has no services", file.display()))?;
    let find = |image_words: &[&str], names: &[&str]| -> Option<String> {
        let by_image = services.iter().find(|(_, s)| {
            let image = s["image"].as_str().unwrap_or_default().to_ascii_lowercase();
            let repo = image.rsplit('/').next().unwrap_or_default();
            image_words.iter().any(|w| repo.starts_with(w))
        });
        by_image
            .or_else(|| services.iter().find(|(n, _)| names.contains(&n.as_str())))
            .map(|(n, _)| n.clone())
    };
    let postgres =
        find(&["postgres", "postgis"], &["postgres", "db", "database"]).ok_or_else(|| {
            format!(
                "{} has no PostgreSQL service (by image or name)",
                file.display()
            )
        })?;
    let minio = find(&["minio"], &["minio", "s3"]);
    let networks = |svc: &str| -> Vec<String> {
        match &services[svc]["networks"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect(),
            Value::Object(m) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    };
    let pg_nets = networks(&postgres);
    let network = match &minio {
        Some(m) => {
            let m_nets = networks(m);
            pg_nets
                .iter()
                .find(|n| m_nets.contains(n))
                .or(pg_nets.first())
                .cloned()
        }
        None => pg_nets.first().cloned(),
    };
    let minio_volume = minio
        .as_ref()
        .and_then(|m| data_volume(&services[m.as_str()]));
    let project = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "stack".into());
    Ok(Stack {
        project,
        postgres,
        minio,
        network,
        minio_volume,
    })
}

/// The named volume a MinIO service keeps its data in: the one mounted at its data path.
fn data_volume(svc: &Value) -> Option<String> {
    let mounts = svc["volumes"].as_array()?;
    mounts.iter().find_map(|v| {
        let (source, _target) = match v {
            Value::String(s) => {
                let mut parts = s.split(':');
                (parts.next()?.to_string(), parts.next()?.to_string())
            }
            Value::Object(o) => (
                o.get("source")?.as_str()?.to_string(),
                o.get("target")?.as_str()?.to_string(),
            ),
            _ => return None,
        };
        // A bind mount (a path) is not a volume the override could name.
        (!source.starts_with(['.', '/', '~', '$'])).then_some(source)
    })
}

/// The override for `stack`: the shipped one with the stack's names.
pub fn fit(stack: &Stack) -> String {
    let mut out = TEMPLATE.replace(
        "container_name: schedgen-backup",
        &format!("container_name: {}-backup", stack.project),
    );
    out = out.replace(
        "hostname: ${BACKUP_INSTANCE:-schedgen-backup}",
        &format!("hostname: ${{BACKUP_INSTANCE:-{}-backup}}", stack.project),
    );
    out = out.replace(
        "POSTGRES_HOST: ${POSTGRES_HOST:-postgres}",
        &format!("POSTGRES_HOST: ${{POSTGRES_HOST:-{}}}", stack.postgres),
    );
    let depends = match &stack.minio {
        Some(m) => format!("    depends_on:\n      - {}\n      - {m}\n", stack.postgres),
        None => format!("    depends_on:\n      - {}\n", stack.postgres),
    };
    if let Some(i) = out.find("    depends_on:\n") {
        out.truncate(i);
        out.push_str(&depends);
    }
    if let Some(v) = &stack.minio_volume {
        out = out.replace(
            "# - minio_data:/minio-data:ro",
            &format!("# - {v}:/minio-data:ro"),
        );
    }
    format!(
        "# Fitted to this stack by `stackback install compose` (PostgreSQL: {}, MinIO: {}).\n{out}",
        stack.postgres,
        stack.minio.as_deref().unwrap_or("none")
    )
}

/// The lines to add to the stack's `.env` (`existing`): only keys it does not set.
pub fn env_additions(stack: &Stack, existing: &str) -> Vec<String> {
    let has = |key: &str| {
        existing.lines().any(|l| {
            let l = l.trim_start().trim_start_matches("export ").trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
    };
    let mut add = Vec::new();
    if let Some(n) = &stack.network {
        if !has("STACKBACK_NETWORK") {
            add.push(format!("STACKBACK_NETWORK={n}"));
        }
    }
    if !has("BACKUP_INSTANCE") {
        add.push(format!("BACKUP_INSTANCE={}-backup", stack.project));
    }
    if let Some(m) = &stack.minio {
        if !has("MINIO_ENDPOINT") {
            add.push(format!("MINIO_ENDPOINT={m}:9000"));
        }
    }
    add
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack_in(compose: &str) -> (tempfile::TempDir, Stack) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("shop");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("docker-compose.yml"), compose).unwrap();
        let s = read_stack(&root).unwrap();
        (dir, s)
    }

    #[test]
    fn services_are_found_by_image_and_the_shared_network_by_name() {
        let (_d, s) = stack_in(
            "x-net: &net\n  networks: [back]\nservices:\n  db:\n    image: docker.io/library/postgres:17\n    <<: *net\n  blobs:\n    image: quay.io/minio/minio\n    networks: {back: {}, front: {}}\n    volumes:\n      - type: volume\n        source: blobdata\n        target: /data\nvolumes: {blobdata: {}}\n",
        );
        assert_eq!(s.postgres, "db");
        assert_eq!(s.minio.as_deref(), Some("blobs"));
        assert_eq!(s.network.as_deref(), Some("back"));
        assert_eq!(s.minio_volume.as_deref(), Some("blobdata"));
        assert_eq!(s.project, "shop");
        let o = fit(&s);
        assert!(o.contains("POSTGRES_HOST: ${POSTGRES_HOST:-db}"), "{o}");
        assert!(o.contains("      - db\n      - blobs\n"), "{o}");
        assert!(o.contains("# - blobdata:/minio-data:ro"), "{o}");
        assert!(o.contains("container_name: shop-backup"), "{o}");
        let add = env_additions(
            &s,
            "MINIO_ENDPOINT=blobs:9000\nexport BACKUP_INSTANCE = x\n",
        );
        assert_eq!(add, ["STACKBACK_NETWORK=back"]);
    }

    #[test]
    fn the_template_holds_what_fit_replaces() {
        for marker in [
            "container_name: schedgen-backup",
            "hostname: ${BACKUP_INSTANCE:-schedgen-backup}",
            "POSTGRES_HOST: ${POSTGRES_HOST:-postgres}",
            "    depends_on:\n",
            "# - minio_data:/minio-data:ro",
        ] {
            assert!(TEMPLATE.contains(marker), "{marker}");
        }
        assert!(TEMPLATE.trim_end().ends_with("- minio"));
    }

    #[test]
    fn a_stack_without_postgres_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  web:\n    image: nginx\n",
        )
        .unwrap();
        assert!(read_stack(dir.path())
            .unwrap_err()
            .contains("no PostgreSQL service"));
    }
}

/// What `install compose` wrote (or would write).
#[derive(Debug, Clone)]
pub struct ComposeInstall {
    pub stack: Stack,
    pub override_file: PathBuf,
    pub override_content: String,
    pub env_file: PathBuf,
    /// Lines appended to the stack's `.env`.
    pub env_added: Vec<String>,
}

/// Fits the override to the stack in `dir` and writes it (`docker-compose.backup.yml`, refused
/// when one is there unless `force`) and the `.env` additions; nothing with `dry_run`.
pub fn install(dir: &Path, dry_run: bool, force: bool) -> crate::error::Result<ComposeInstall> {
    use crate::error::Error;
    let stack = read_stack(dir).map_err(Error::Usage)?;
    let override_file = dir.join("docker-compose.backup.yml");
    let env_file = dir.join(".env");
    let existing = match std::fs::read_to_string(&env_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("cannot read", &env_file, e)),
    };
    let report = ComposeInstall {
        override_content: fit(&stack),
        env_added: env_additions(&stack, &existing),
        stack,
        override_file,
        env_file,
    };
    if dry_run {
        return Ok(report);
    }
    if report.override_file.exists() && !force {
        return Err(Error::Usage(format!(
            "{} exists: add --force to replace it",
            report.override_file.display()
        )));
    }
    write_keeping_mode(&report.override_file, &report.override_content, 0o644)?;
    if !report.env_added.is_empty() {
        let mut text = existing;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("# Added by `stackback install compose`.\n");
        for l in &report.env_added {
            text.push_str(l);
            text.push('\n');
        }
        // The stack's .env holds its secrets: it keeps whatever mode it had (0600 when new).
        write_keeping_mode(&report.env_file, &text, 0o600)?;
    }
    Ok(report)
}

/// Replaces `path` atomically, with the mode it had (`new_mode` for a new file).
fn write_keeping_mode(path: &Path, content: &str, new_mode: u32) -> crate::error::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(new_mode);
    let file = super::FileOut {
        path: path.to_path_buf(),
        content: content.to_string(),
        mode,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    super::replace_file(dir, &file)
}
