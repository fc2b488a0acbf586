//! Bar charts as inline SVG, drawn on the server: no script, no library, nothing fetched. One
//! bar (`rect.mark`) per run, oldest on the left, coloured by the run's state, with a `<title>`
//! that a pointer or a screen reader reads.

use std::fmt::Write as _;

use super::html::Esc;
use crate::catalog::RunState;

/// What the values are, which decides the axis unit.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Bytes,
    Seconds,
}

/// One run's bar.
pub struct Bar {
    pub run_id: String,
    pub state: RunState,
    /// None when the run has no such value (it never finished).
    pub value: Option<f64>,
    /// Under the axis, for some bars: when the run started.
    pub label: String,
}

pub struct Chart<'a> {
    /// Prefix of the element ids (unique on the page).
    pub id: &'a str,
    pub title: &'a str,
    pub unit: Unit,
    /// Fill of ok runs (each chart its own, so the two read apart).
    pub ok_fill: &'a str,
    pub bars: &'a [Bar],
}

const W: f64 = 560.0;
const H: f64 = 210.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 40.0;

/// An axis: where its ticks go and how they are labelled.
struct Scale {
    top: f64,
    step: f64,
    /// Size of one axis unit in the values' unit (1024 for KiB...).
    factor: f64,
    suffix: &'static str,
    decimals: usize,
}

impl Scale {
    fn new(max: f64, unit: Unit) -> Scale {
        let (factor, suffix) = match unit {
            Unit::Bytes => {
                let units = [(1.0, "B"), (1024.0, "KiB"), (1048576.0, "MiB")];
                let big = [(1073741824.0, "GiB"), (1099511627776.0, "TiB")];
                units
                    .into_iter()
                    .chain(big)
                    .take_while(|(f, _)| *f == 1.0 || max >= *f)
                    .last()
                    .unwrap_or((1.0, "B"))
            }
            Unit::Seconds if max >= 7200.0 => (3600.0, "h"),
            Unit::Seconds if max >= 120.0 => (60.0, "min"),
            Unit::Seconds => (1.0, "s"),
        };
        let scaled = max / factor;
        // Four intervals of 1, 2 or 5 times a power of ten cover the largest value.
        let raw = if scaled > 0.0 { scaled / 4.0 } else { 0.25 };
        let pow = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * pow)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * pow);
        let decimals = if step >= 1.0 {
            0
        } else {
            (-step.log10().floor()) as usize
        };
        Scale {
            top: (scaled / step).ceil().max(1.0) * step,
            step,
            factor,
            suffix,
            decimals,
        }
    }

    fn label(&self, scaled: f64) -> String {
        if scaled == 0.0 {
            return format!("0 {}", self.suffix);
        }
        format!("{scaled:.*} {}", self.decimals, self.suffix)
    }

    fn y(&self, value: f64) -> f64 {
        let plot = H - TOP - BOTTOM;
        H - BOTTOM - (value / self.factor / self.top).min(1.0) * plot
    }
}

fn fill(state: RunState, ok_fill: &str) -> &str {
    match state {
        RunState::Ok => ok_fill,
        RunState::Partial => "#bf8700",
        RunState::Failed | RunState::Unreadable => "#cf222e",
        RunState::Running | RunState::Incomplete => "#8c959f",
    }
}

/// Value as the bar's tooltip reads it.
fn value_text(v: Option<f64>, unit: Unit) -> String {
    match (v, unit) {
        (None, _) => "no value".into(),
        (Some(b), Unit::Bytes) => crate::units::human_bytes(b as u64),
        (Some(s), Unit::Seconds) => super::html::duration(s),
    }
}

/// The chart as an `<svg>` element.
pub fn render(c: &Chart) -> String {
    let max = c.bars.iter().filter_map(|b| b.value).fold(0.0, f64::max);
    let scale = Scale::new(max, c.unit);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="{id}-t {id}-d"><title id="{id}-t">{t}</title><desc id="{id}-d">{n} runs, oldest on the left; the largest is {m}.</desc>"#,
        id = Esc(c.id),
        t = Esc(c.title),
        n = c.bars.len(),
        m = value_text(Some(max), c.unit),
    );
    axes(&mut s, &scale);
    marks(&mut s, c, &scale);
    s.push_str("</svg>");
    s
}

/// Grid lines with their labels on the left, the baseline, and the x axis's title.
fn axes(s: &mut String, scale: &Scale) {
    // Counted, not summed: adding 0.1 five times does not make 0.5.
    let ticks = (scale.top / scale.step).round() as usize;
    for k in 0..=ticks {
        let v = scale.step * k as f64;
        let y = scale.y(v * scale.factor);
        let class = if k == 0 { "axis" } else { "grid" };
        let _ = write!(
            s,
            r#"<line class="{class}" x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}"/><text x="{lx}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x2 = W - RIGHT,
            lx = LEFT - 6.0,
            ty = y + 4.0,
            label = scale.label(v),
        );
    }
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{b}"/><text x="{x:.1}" y="{y}" text-anchor="middle">run start (oldest → newest)</text>"#,
        b = H - BOTTOM,
        x = LEFT + (W - LEFT - RIGHT) / 2.0,
        y = H - 4.0,
    );
}

/// One bar per run; runs without a value (or a zero one) get a thin mark on the baseline, so
/// every run stays visible and countable.
fn marks(s: &mut String, c: &Chart, scale: &Scale) {
    let n = c.bars.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / n;
    let width = (slot * 0.7).clamp(1.0, 40.0);
    // About six labels whatever the number of runs; always the newest.
    let every = c.bars.len().div_ceil(6).max(1);
    let base = H - BOTTOM;
    for (i, b) in c.bars.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
        let top = b.value.map_or(base, |v| scale.y(v)).min(base - 2.0);
        let _ = write!(
            s,
            r#"<rect class="mark" data-run="{id}" data-value="{dv}" x="{x:.1}" y="{top:.1}" width="{width:.1}" height="{h:.1}" fill="{f}"><title>{id} · {st} · {v}</title></rect>"#,
            id = Esc(&b.run_id),
            dv = b.value.map_or(String::new(), |v| v.to_string()),
            h = base - top,
            f = fill(b.state, c.ok_fill),
            st = b.state.as_str(),
            v = value_text(b.value, c.unit),
        );
        // Counted from the newest, so the newest is always labelled.
        if (c.bars.len() - 1 - i).is_multiple_of(every) {
            let _ = write!(
                s,
                r#"<text x="{cx:.1}" y="{ly:.1}" text-anchor="middle">{l}</text>"#,
                cx = x + width / 2.0,
                ly = base + 15.0,
                l = Esc(&b.label),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(id: &str, state: RunState, value: Option<f64>) -> Bar {
        Bar {
            run_id: id.into(),
            state,
            value,
            label: "11-26".into(),
        }
    }

    #[test]
    fn one_mark_per_run_with_titles_and_escaped_ids() {
        let bars = vec![
            bar("20261126_020000", RunState::Ok, Some(1_830_997.0)),
            bar("<b>evil</b>", RunState::Failed, None),
            bar("20261128_020000", RunState::Ok, Some(0.0)),
        ];
        let svg = render(&Chart {
            id: "size",
            title: "Size",
            unit: Unit::Bytes,
            ok_fill: "#4a72b8",
            bars: &bars,
        });
        assert_eq!(svg.matches(r#"<rect class="mark""#).count(), 3);
        assert_eq!(
            svg.matches("<title").count(),
            4,
            "the chart's and each bar's"
        );
        assert!(svg.contains("&lt;b&gt;evil&lt;/b&gt;"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("1.7 MiB"), "{svg}");
    }

    #[test]
    fn scales_pick_a_readable_unit_and_round_steps() {
        let s = Scale::new(1_830_997.0, Unit::Bytes);
        assert_eq!((s.suffix, s.step, s.top), ("MiB", 0.5, 2.0));
        let s = Scale::new(41.68, Unit::Seconds);
        assert_eq!((s.suffix, s.step, s.top), ("s", 20.0, 60.0));
        let s = Scale::new(0.0, Unit::Seconds);
        assert!(s.top > 0.0);
        assert_eq!(Scale::new(900.0, Unit::Seconds).suffix, "min");
    }
}
