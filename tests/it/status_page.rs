//! The daemon's status page as a person sees it: real runs in the directory (one failed, its error
//! forged into hostile markup), the daemon serving them, headless Chromium (Debian's `chromium`)
//! loading `/` for a screenshot and its DOM. The numbers on the page must be `list --json`'s, the
//! chart must hold one bar per run, nothing may load from anywhere, and the hostile text must
//! stay text.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stackback::units::human_bytes;

use crate::support::*;

/// An error text a run record could hold after someone wrote to the backup directory.
const HOSTILE: &str = r#"<script>document.title='pwned'</script><img src=x onerror="alert(1)"> & "quoted" <style>body{display:none}</style>"#;

/// The daemon, with its log in a file (so the test can wait for its setup check).
struct Daemon {
    server: Tied,
    port: u16,
}

impl Daemon {
    fn start(env: &[(String, String)], log: &Path) -> Daemon {
        start_on_free_port("the daemon", |port| {
            let env = with(
                env.to_vec(),
                &[
                    ("BACKUP_HTTP_ADDR", &format!("127.0.0.1:{port}")),
                    ("BACKUP_STARTUP_GRACE", "1s"),
                    // No run while the test reads the page.
                    ("BACKUP_SCHEDULE", "0 2 * * *"),
                ],
            );
            let server = spawn_tied(stackback_cmd(&["daemon"], &env), log, libc::SIGTERM);
            wait_port(port, &server, "the daemon")?;
            Ok(Daemon { server, port })
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.server.stop(libc::SIGTERM, Duration::from_secs(30));
    }
}

/// Runs Debian's Chromium headless on `url` with a profile of its own; its stdout. A Chromium
/// that is missing or fails makes the test fail.
fn chromium(args: &[&str], url: &str) -> String {
    let bin = find_binary("chromium");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args(["-k", "5", "120"])
        .arg(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "chromium {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where the test leaves its screenshot: `target/status-page/`.
fn screenshot_path() -> PathBuf {
    let target = Path::new(env!("CARGO_BIN_EXE_stackback"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf();
    let dir = target.join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("status-page.png")
}

/// Three good runs with the database growing between them, a failed one whose record then gets
/// a hostile error and bucket name, and a last good one.
fn make_runs(c: &pg::Cluster, db: &str, env: &[(String, String)], dir: &Path) {
    c.psql(db, "CREATE TABLE page_growth (n int, pad text)")
        .unwrap();
    for i in 1..=3 {
        c.psql(
            db,
            &format!(
                "INSERT INTO page_growth SELECT g, md5(g::text) FROM generate_series(1, {}) g",
                20_000 * i
            ),
        )
        .unwrap();
        let r = stackback(&["run"], env);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let r = stackback(
        &["run"],
        &with(env.to_vec(), &[("POSTGRES_PASSWORD", "wrong")]),
    );
    assert_eq!(r.code, 1, "{}", r.all());
    let failed = records(dir)
        .into_iter()
        .find(|r| r["status"] == "failed")
        .expect("a failed run record");
    let file = dir.join(format!("run_{}.json", failed["run_id"].as_str().unwrap()));
    forge_record(
        &file,
        &[
            ("error", serde_json::Value::from(HOSTILE)),
            ("failed_step", "objects:<b>bucket</b>".into()),
        ],
    );
    let r = stackback(&["run"], env);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn the_status_page_in_chromium_shows_what_list_json_says() {
    let c = cluster();
    let db = c.seeded_db("page");
    let tmp = tempfile::tempdir().unwrap();
    let env = c.env(&db, tmp.path());
    make_runs(c, &db, &env, tmp.path());
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("daemon.log");
    let d = Daemon::start(&env, &log);
    // The setup check writes a probe file: the page is read once it is gone.
    wait_until(Duration::from_secs(30), "the daemon's setup check", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("setup checked")
    });
    let list = list_json(&env);
    assert_eq!(list["runs"].as_array().unwrap().len(), 5);

    check_headers(&d);
    check_api_runs(&d, &list);
    let dom = chromium(&["--dump-dom"], &d.url("/"));
    check_numbers(&dom, &list);
    check_chart(&dom, &list);
    check_nothing_external(&dom);
    check_hostile_text_is_inert(&dom, &sh(&format!("curl -sf {}", d.url("/"))));

    let png = screenshot_path();
    let _ = std::fs::remove_file(&png);
    chromium(
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1600",
        ],
        &d.url("/"),
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", png.display());
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(width, 1280, "{}", png.display());
    assert!(
        bytes.len() > 20_000,
        "a page, not a blank: {} bytes",
        bytes.len()
    );
}

/// A CSP that allows no origin, whose one style hash is the page's stylesheet; nosniff.
fn check_headers(d: &Daemon) {
    let head = sh(&format!("curl -sI {}", d.url("/"))).to_lowercase();
    let csp = head
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .unwrap_or_else(|| panic!("no Content-Security-Policy: {head}"))
        .trim()
        .to_string();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(
        !csp.contains("http") && !csp.contains('*') && !csp.contains("'self'"),
        "{csp}"
    );
    assert!(!csp.contains("script-src"), "{csp}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    // The stylesheet the page serves is the one the policy names (else the browser drops it).
    let body = sh(&format!("curl -sf {}", d.url("/")));
    let style = between(&body, "<style>", "</style>");
    let style_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(style_file.path(), style).unwrap();
    let hash = sh(&format!(
        "openssl dgst -sha256 -binary {} | base64",
        shell_quote(style_file.path())
    ));
    assert!(
        csp.contains(&format!("'sha256-{}'", hash.trim().to_lowercase())),
        "{csp} does not allow the stylesheet (sha256-{})",
        hash.trim()
    );
}

/// `/api/runs` is `list --json` (free space aside, which moves under other tests).
fn check_api_runs(d: &Daemon, list: &serde_json::Value) {
    let api: serde_json::Value =
        serde_json::from_str(&sh(&format!("curl -sf {}", d.url("/api/runs")))).unwrap();
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        let t = v["totals"].as_object_mut().unwrap();
        t.remove("free_bytes");
        t.remove("total_bytes");
        v
    };
    assert_eq!(strip(&api), strip(list));
    let head = sh(&format!("curl -sI {}", d.url("/api/runs"))).to_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
}

/// The text between the first `start` after nothing and the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in the page"))
        + start.len();
    let len = text[from..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end} after {start}"));
    &text[from..from + len]
}

/// Text of an element's content, tags removed.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in html.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// The content of the cell `data-field="field"` inside `row`.
fn cell(row: &str, field: &str) -> String {
    let open = format!(r#"data-field="{field}""#);
    let rest = &row[row
        .find(&open)
        .unwrap_or_else(|| panic!("no {field} cell: {row}"))..];
    let body = &rest[rest.find('>').unwrap() + 1..];
    text_of(&body[..body.find("</td>").unwrap()])
}

/// Every run's id, status, size and files, and every total, as `list --json` has them.
fn check_numbers(dom: &str, list: &serde_json::Value) {
    for r in list["runs"].as_array().unwrap() {
        let id = r["run_id"].as_str().unwrap();
        let open = format!(r#"<tr data-run="{id}""#);
        let row = between(dom, &open, "</tr>");
        let status = r["status"].as_str().unwrap();
        let bytes = r["bytes"].as_u64().unwrap();
        assert!(
            row.contains(&format!(r#"data-status="{status}""#)),
            "{id}: {row}"
        );
        assert!(
            row.contains(&format!(r#"data-bytes="{bytes}""#)),
            "{id}: {row}"
        );
        assert!(row.contains(&format!(">{id}<")), "the id is shown: {row}");
        assert_eq!(cell(row, "status"), status, "{id}");
        assert_eq!(cell(row, "size"), human_bytes(bytes), "{id}");
        let verify = cell(row, "verification");
        for a in r["artifacts"].as_array().unwrap() {
            assert!(row.contains(a["file"].as_str().unwrap()), "{id}: {a}");
            assert!(
                a["verified"].as_bool().unwrap() && verify.starts_with("verified"),
                "{id}: {verify}"
            );
        }
        let duration = cell(row, "duration");
        assert!(duration.ends_with(" s"), "{id}: {duration}");
    }
    let totals = between(dom, r#"id="totals""#, "</td>");
    for key in [
        "runs",
        "ok",
        "partial",
        "failed",
        "incomplete",
        "database_backups",
        "bucket_backups",
    ] {
        let shown = text_of(between(
            totals,
            &format!(r#"data-total="{key}">"#),
            "</strong>",
        ));
        assert_eq!(
            shown,
            list["totals"][key].to_string(),
            "total {key}: {totals}"
        );
    }
    let on_disk = list["totals"]["bytes_on_disk"].as_u64().unwrap();
    let shown = between(totals, r#"data-total="bytes_on_disk""#, "</strong>");
    assert!(
        shown.contains(&format!(r#"data-bytes="{on_disk}""#)),
        "{shown}"
    );
    assert!(
        shown.ends_with(&format!(">{}", human_bytes(on_disk))),
        "{shown}"
    );
}

/// Two inline SVG charts, each with one bar per run (up to 30), each bar titled.
fn check_chart(dom: &str, list: &serde_json::Value) {
    let runs = list["runs"].as_array().unwrap();
    for id in ["chart-size", "chart-duration"] {
        let svg = between(dom, &format!(r#"<svg id="{id}""#), "</svg>");
        assert!(
            svg.contains(r#"role="img""#) && svg.contains("<title"),
            "{id}"
        );
        assert_eq!(
            svg.matches(r#"<rect class="mark""#).count(),
            runs.len().min(30),
            "{id}"
        );
        for r in runs.iter().take(30) {
            let mark = format!(r#"data-run="{}""#, r["run_id"].as_str().unwrap());
            assert!(svg.contains(&mark), "{id} lacks {mark}");
        }
        // The value axis is labelled, in a unit, from zero.
        assert!(svg.contains(r#"text-anchor="end">0 "#), "{id}: {svg}");
    }
}

/// Nothing on the page points at another origin, and nothing could run.
fn check_nothing_external(dom: &str) {
    let lower = dom.to_lowercase();
    for bad in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "url(",
        "@import",
        "<script",
        "<link",
        "<iframe",
        "<img",
        "<object",
        "<embed",
    ] {
        assert!(!lower.contains(bad), "the page contains {bad}");
    }
}

/// The forged error and bucket name are shown as text, escaped, in the served HTML and the DOM.
fn check_hostile_text_is_inert(dom: &str, served: &str) {
    let in_dom = "&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x onerror=\"alert(1)\"&gt; &amp; \"quoted\" &lt;style&gt;body{display:none}&lt;/style&gt;";
    assert!(
        dom.contains(in_dom),
        "the error is not shown as text:\n{dom}"
    );
    assert!(dom.contains("objects:&lt;b&gt;bucket&lt;/b&gt;: "), "{dom}");
    assert!(
        !dom.contains("<b>") && !dom.contains("pwned</title>"),
        "{dom}"
    );
    assert_eq!(
        dom.matches("<style").count(),
        1,
        "only the page's stylesheet"
    );
    assert!(served.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"));
    assert_eq!(served.to_lowercase().matches("<script").count(), 0);
}
