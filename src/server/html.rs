//! Small HTML pieces for the status page: escaping, the stylesheet and its CSP hash, and how
//! times, ages, durations and states read.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sha2::{Digest as _, Sha256};

/// Text escaped for HTML element content and quoted attribute values alike. Every string the
/// page prints that did not come from a literal in this module goes through it: run ids, errors,
/// file and bucket names come from disk, and a record can be edited by anyone who can write there.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// The page's only stylesheet, inline: no request leaves the page. System fonts only.
pub const STYLE: &str = r#"
:root{color-scheme:light}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2328;background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:18px 24px 28px}
header{display:flex;align-items:baseline;justify-content:space-between;gap:16px;flex-wrap:wrap;margin-bottom:12px}
h1{font-size:20px;margin:0}
h2{font-size:15px;margin:0 0 10px}
.muted{color:#59636e}
.small{font-size:12px}
.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
.banner{border:1px solid;border-radius:6px;padding:10px 14px;margin-bottom:14px}
.banner strong{font-size:15px}
.banner.good{background:#dafbe1;border-color:#aceebb;color:#116329}
.banner.bad{background:#ffebe9;border-color:#ffcecb;color:#82071e}
.banner ul{margin:6px 0 0;padding-left:20px}
.cards{display:grid;grid-template-columns:repeat(3,1fr);gap:12px;margin-bottom:14px}
.card,.panel{background:#fff;border:1px solid #d1d9e0;border-radius:6px;padding:12px 14px}
.card h2{font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.04em;color:#59636e;margin:0 0 6px}
.card .big{font-size:16px;font-weight:600;margin-bottom:2px}
.card p{margin:2px 0}
.panel{margin-bottom:14px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:20px}
.charts h3{font-size:13px;margin:0 0 4px;font-weight:600}
svg{width:100%;height:auto;display:block}
svg text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#59636e}
svg .grid{stroke:#e6eaef;stroke-width:1}
svg .axis{stroke:#8c959f;stroke-width:1}
rect.mark:hover{opacity:.7}
.legend{margin:8px 0 0;font-size:12px;color:#59636e}
.key{margin-right:16px;white-space:nowrap}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
.swatch.ok{background:#4a72b8}.swatch.ok2{background:#2f8f83}.swatch.partial{background:#bf8700}.swatch.failed{background:#cf222e}.swatch.other{background:#8c959f}
table{width:100%;border-collapse:collapse;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e6eaef;vertical-align:top}
th{font-weight:600;color:#59636e;background:#f6f8fa;white-space:nowrap}
tfoot td{border-bottom:0;color:#59636e;padding-top:10px}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.nowrap{white-space:nowrap}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;line-height:19px;border:1px solid;white-space:nowrap}
.s-ok{color:#116329;background:#dafbe1;border-color:#aceebb}
.s-partial,.s-pending,.s-anomaly{color:#7d4e00;background:#fff8c5;border-color:#f0d770}
.s-failed,.s-unreadable{color:#82071e;background:#ffebe9;border-color:#ffcecb}
.s-running{color:#0a3069;background:#ddf4ff;border-color:#b6e3ff}
.s-incomplete,.s-none{color:#59636e;background:#f6f8fa;border-color:#d1d9e0}
.err{color:#82071e;white-space:pre-wrap;overflow-wrap:anywhere;margin:2px 0 0}
.anomaly{color:#7d4e00;overflow-wrap:anywhere;margin:2px 0 0}
.files{margin:0;padding:0;list-style:none}
.files li{overflow-wrap:anywhere}
footer{color:#59636e;font-size:12px}
a{color:#0969da}
"#;

/// `sha256-…` of [`STYLE`], for the Content-Security-Policy: the one stylesheet it allows.
pub fn style_hash() -> String {
    format!("sha256-{}", base64(&Sha256::digest(STYLE.as_bytes())))
}

/// Standard base64 with padding (RFC 4648): what CSP hash sources are written in.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ABC[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `2026-11-26 02:00:41 CET`: in the schedule's zone, as operators read the schedule.
pub fn time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// `2026-11-26 02:00 CET`: the same, to the minute, where space is short.
pub fn minute(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

/// `3h ago`, or `in 5h` for an instant after `now`.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    if s >= 0 {
        format!("{} ago", crate::units::human_age_seconds(s))
    } else {
        format!("in {}", crate::units::human_age_seconds(-s))
    }
}

/// `0.4 s`, `41.7 s`, `3m 12s`, `1h 05m`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 100.0 {
        return format!("{s:.1} s");
    }
    let whole = s.round() as u64;
    if whole < 3600 {
        format!("{}m {:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h {:02}m", whole / 3600, (whole % 3600) / 60)
    }
}

/// A state word in its colour: `<span class="badge s-ok">ok</span>`. `state` is one of the
/// page's own words (it names a class), never text from disk.
pub fn badge(state: &str) -> String {
    pill(state, state)
}

/// `text` in the colour of `state`.
pub fn pill(state: &str, text: &str) -> String {
    format!(
        r#"<span class="badge s-{0}" data-state="{0}">{1}</span>"#,
        Esc(state),
        Esc(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        let hostile = r#"<script>alert("x")</script> & 'y' <img src=x onerror=alert(1)>"#;
        let out = Esc(hostile).to_string();
        assert_eq!(
            out,
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39; \
             &lt;img src=x onerror=alert(1)&gt;"
        );
        assert_eq!(Esc("plain ünïcode").to_string(), "plain ünïcode");
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn durations_read_at_every_scale() {
        assert_eq!(duration(0.42), "0.4 s");
        assert_eq!(duration(192.0), "3m 12s");
        assert_eq!(duration(3900.0), "1h 05m");
    }
}
