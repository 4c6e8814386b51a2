//! The report's inline SVG charts. All share one horizontal scale, so a moment lines up
//! across the timeline, the stores' modes and the per-second charts.

use super::{colour, esc, human_ms, BarStatus, Report};
use crate::psor::series::SeriesPoint;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Width of every chart.
pub const WIDTH: u32 = 1200;
/// Left margin (lane labels, y axis).
const LEFT: f64 = 200.0;
/// Right margin.
const RIGHT: f64 = 24.0;
/// Height of a timeline or store lane.
const LANE_H: f64 = 28.0;
/// Height of the time axis above the lanes.
const AXIS_H: f64 = 22.0;
/// Red of failures (bars' outline, the failed-requests series).
pub const FAILED: &str = "#c1121f";
/// Colours of the stores' modes.
pub const MODES: &[(&str, &str)] = &[
    ("upgrade", "#1d5fa8"),
    ("running", "#2e9e44"),
    ("quiesce", "#c9a227"),
];
/// Colours of the stores in the jobs chart, in store order.
const PALETTE: &[&str] = &["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2"];
/// Colour of answered client requests.
pub const OK: &str = "#8fbf9a";

/// Milliseconds -> x.
struct Scale {
    t0: u64,
    t1: u64,
}

impl Scale {
    fn of(r: &Report) -> Scale {
        Scale {
            t0: r.t0,
            t1: r.t1.max(r.t0 + 1),
        }
    }
    fn plot() -> f64 {
        f64::from(WIDTH) - LEFT - RIGHT
    }
    fn x(&self, ms: u64) -> f64 {
        let ms = ms.clamp(self.t0, self.t1);
        LEFT + (ms - self.t0) as f64 * Self::plot() / (self.t1 - self.t0) as f64
    }
}

/// A tick step giving at most ten ticks over `span` ms.
fn tick_step(span: u64) -> u64 {
    const STEPS: &[u64] = &[
        1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
        1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 10)
        .unwrap_or_else(|| span.div_ceil(10).max(1))
}

/// `+m:ss` or `+h:mm:ss` since the rollout's start.
fn rel(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "+" };
    let s = ms.unsigned_abs() / 1000;
    if s >= 3600 {
        format!("{sign}{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    } else {
        format!("{sign}{}:{:02}", s / 60, s % 60)
    }
}

/// Vertical grid lines with relative-time labels at `label_y`, from `top` to `bottom`.
fn grid(out: &mut String, r: &Report, sc: &Scale, top: f64, bottom: f64, label_y: f64) {
    let step = tick_step(sc.t1 - sc.t0);
    let first = r.origin_ms as i64 - ((r.origin_ms - sc.t0) / step * step) as i64;
    let mut t = first;
    while t <= sc.t1 as i64 {
        if t >= sc.t0 as i64 {
            let x = sc.x(t as u64);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#e2e2e6"/><text class="tick" x="{x:.1}" y="{label_y:.1}" text-anchor="middle">{}</text>"##,
                rel(t - r.origin_ms as i64)
            );
        }
        t += step as i64;
    }
}

/// Hatched bands where the rollout stood paused.
fn paused(out: &mut String, r: &Report, sc: &Scale, top: f64, bottom: f64, id: &str) {
    for (a, b) in &r.paused {
        let (x0, x1) = (sc.x(*a), sc.x(*b));
        let _ = write!(
            out,
            r##"<rect class="paused" x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="url(#hatch-{id})"><title>paused for {}</title></rect>"##,
            (x1 - x0).max(1.0),
            bottom - top,
            human_ms(b - a)
        );
    }
}

/// Opens a chart; `id` names its hatch pattern (ids are unique in the page).
fn open_svg(out: &mut String, height: f64, label: &str, id: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" role="img" aria-label="{}"><defs><pattern id="hatch-{id}" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4f4f6"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c8c8d0" stroke-width="2"/></pattern></defs>"##,
        esc(label)
    );
}

/// The timeline: one lane per region (and the PAC's own), a bar per step.
pub fn timeline(r: &Report) -> String {
    let sc = Scale::of(r);
    let h = AXIS_H + LANE_H * r.lanes.len() as f64 + 8.0;
    let mut out = String::new();
    open_svg(
        &mut out,
        h,
        "timeline of the rollout's steps per region",
        "t",
    );
    for (i, l) in r.lanes.iter().enumerate() {
        let y = AXIS_H + LANE_H * i as f64;
        if i % 2 == 0 {
            let _ = write!(
                out,
                r##"<rect x="0" y="{y:.1}" width="{WIDTH}" height="{LANE_H}" fill="#f7f7f9"/>"##
            );
        }
        let host = l
            .host
            .as_deref()
            .map(|h| format!(r#"<tspan class="host"> on {}</tspan>"#, esc(h)))
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<text class="lane" x="{:.1}" y="{:.1}" text-anchor="end">{}{host}</text>"#,
            LEFT - 10.0,
            y + LANE_H / 2.0 + 4.0,
            esc(&l.name)
        );
    }
    grid(&mut out, r, &sc, AXIS_H - 4.0, h - 8.0, AXIS_H - 8.0);
    paused(&mut out, r, &sc, AXIS_H, h - 8.0, "t");
    for b in &r.bars {
        let lane = &r.lanes[b.lane];
        let y = AXIS_H + LANE_H * b.lane as f64 + 6.0;
        let x0 = sc.x(b.start_ms);
        let w = (sc.x(b.end_ms) - x0).max(2.0);
        let style = match b.status {
            BarStatus::Skipped => r##" fill-opacity="0.35""##.to_string(),
            BarStatus::Failed => format!(r##" stroke="{FAILED}" stroke-width="2.5""##),
            BarStatus::Running | BarStatus::Interrupted => {
                r##" fill-opacity="0.6" stroke="#333" stroke-dasharray="3 2""##.to_string()
            }
            BarStatus::Done => String::new(),
        };
        let detail = if b.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", b.detail)
        };
        let _ = write!(
            out,
            r#"<rect class="bar" data-kind="{kind}" data-lane="{lane}" data-status="{st}" x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="16" rx="2" fill="{fill}"{style}><title>step {n} {kind} {target} {st} after {took}{detail}</title></rect>"#,
            kind = esc(&b.action),
            lane = esc(&lane.name),
            st = b.status.word(),
            fill = colour(&b.action),
            n = b.step,
            target = esc(&b.target),
            took = human_ms(b.end_ms - b.start_ms),
            detail = esc(&detail),
        );
        if b.status == BarStatus::Failed {
            let _ = write!(
                out,
                r#"<text class="fail" x="{:.1}" y="{:.1}" text-anchor="middle" fill="{FAILED}">✕<title>step {} {} failed: {}</title></text>"#,
                x0 + w / 2.0,
                y + 13.0,
                b.step,
                esc(&b.action),
                esc(&b.detail)
            );
        }
    }
    for m in &r.marks {
        let x = sc.x(m.ts_ms);
        let c = if m.status == "failed" {
            FAILED
        } else {
            colour(&m.action)
        };
        let y = AXIS_H + LANE_H / 2.0;
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{c}" stroke-dasharray="2 3"/><path class="mark" data-kind="{kind}" d="M{x:.1} {:.1} l6 6 l-6 6 l-6 -6 z" fill="{c}"><title>{kind} {}: {}</title></path>"#,
            AXIS_H,
            h - 8.0,
            y - 6.0,
            esc(&m.status),
            esc(&m.detail),
            kind = esc(&m.action),
        );
    }
    out.push_str("</svg>");
    out
}

/// The stores' modes over time, a lane per store.
pub fn stores(r: &Report) -> String {
    let sc = Scale::of(r);
    let n = r.stores.len().max(1);
    let h = AXIS_H + LANE_H * n as f64 + 8.0;
    let mut out = String::new();
    open_svg(&mut out, h, "the stores' modes over time", "s");
    grid(&mut out, r, &sc, AXIS_H - 4.0, h - 8.0, AXIS_H - 8.0);
    paused(&mut out, r, &sc, AXIS_H, h - 8.0, "s");
    if r.stores.is_empty() {
        let _ = write!(
            out,
            r#"<text class="empty" x="{:.1}" y="{:.1}">No store is recorded for this rollout's time.</text>"#,
            LEFT,
            AXIS_H + 18.0
        );
    }
    for (i, t) in r.stores.iter().enumerate() {
        let y = AXIS_H + LANE_H * i as f64;
        let _ = write!(
            out,
            r#"<text class="lane" x="{:.1}" y="{:.1}" text-anchor="end">store {}</text>"#,
            LEFT - 10.0,
            y + LANE_H / 2.0 + 4.0,
            esc(&t.version)
        );
        for s in &t.segments {
            let x0 = sc.x(s.start_ms);
            let w = (sc.x(s.end_ms) - x0).max(2.0);
            let fill = MODES
                .iter()
                .find(|m| m.0 == s.mode)
                .map(|m| m.1)
                .unwrap_or("#999999");
            let _ = write!(
                out,
                r#"<rect class="mode" data-store="{v}" data-mode="{m}" x="{x0:.1}" y="{:.1}" width="{w:.1}" height="18" rx="2" fill="{fill}"><title>store {v} {m} for {}</title></rect>"#,
                y + 5.0,
                human_ms(s.end_ms - s.start_ms),
                v = esc(&t.version),
                m = esc(&s.mode),
            );
            if w > 60.0 {
                let _ = write!(
                    out,
                    r#"<text class="inbar" x="{:.1}" y="{:.1}">{}</text>"#,
                    x0 + 5.0,
                    y + 18.0,
                    esc(&s.mode)
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// A per-second chart of `series`, stacked in `labels` order (label, colour, caption).
pub fn per_second(
    id: &str,
    r: &Report,
    series: &[SeriesPoint],
    labels: &[(String, String, String)],
    unit: &str,
    empty: &str,
) -> String {
    const H: f64 = 160.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 136.0;
    let sc = Scale::of(r);
    let mut out = String::new();
    open_svg(&mut out, H, unit, id);
    // Several seconds per bar once seconds are narrower than a pixel; a bar then shows
    // the average per second.
    let span_s = (sc.t1 - sc.t0).div_ceil(1000).max(1);
    let bin = span_s.div_ceil(Scale::plot() as u64).max(1);
    let mut bins: BTreeMap<u64, BTreeMap<&str, u64>> = BTreeMap::new();
    for (sec, label, n) in series {
        *bins
            .entry(sec / bin * bin)
            .or_default()
            .entry(label.as_str())
            .or_default() += n;
    }
    let per_s = |n: u64| n as f64 / bin as f64;
    let max = bins
        .values()
        .map(|m| per_s(m.values().sum()))
        .fold(0.0, f64::max);
    let top = nice(max);
    let y = |v: f64| BOTTOM - (BOTTOM - TOP) * v / top;
    for v in [0.0, top / 2.0, top] {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e2e2e6"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            f64::from(WIDTH) - RIGHT,
            LEFT - 8.0,
            y(v) + 4.0,
            fmt_num(v),
            yy = y(v),
        );
    }
    grid(&mut out, r, &sc, TOP, BOTTOM, H - 8.0);
    paused(&mut out, r, &sc, TOP, BOTTOM, id);
    let _ = write!(
        out,
        r#"<text class="unit" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        LEFT - 44.0,
        (TOP + BOTTOM) / 2.0 + 4.0,
        esc(unit)
    );
    if bins.is_empty() {
        let _ = write!(
            out,
            r#"<text class="empty" x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 10.0,
            TOP + 40.0,
            esc(empty)
        );
    }
    for (start, counts) in &bins {
        let x0 = sc.x(start * 1000);
        let x1 = sc.x((start + bin) * 1000);
        let w = if x1 - x0 > 3.0 {
            x1 - x0 - 1.0
        } else {
            (x1 - x0).max(1.0)
        };
        let mut base = 0.0;
        for (label, fill, caption) in labels {
            let Some(&n) = counts.get(label.as_str()) else {
                continue;
            };
            let v = per_s(n);
            // A single failure in a wide bin must still be visible.
            let hgt = (y(0.0) - y(v)).max(2.0);
            let yy = y(base) - hgt;
            let when = crate::psor::rfc3339(start * 1000);
            let _ = write!(
                out,
                r#"<rect class="sec" data-label="{}" x="{x0:.1}" y="{yy:.1}" width="{w:.1}" height="{hgt:.1}" fill="{fill}"><title>{} {}: {} {}</title></rect>"#,
                esc(label),
                esc(&when),
                esc(caption),
                fmt_num(v),
                esc(unit)
            );
            base += v;
        }
    }
    out.push_str("</svg>");
    out
}

/// Assigns every label of `series` a colour from the palette, known stores first.
pub fn store_labels(r: &Report) -> Vec<(String, String, String)> {
    let mut order: Vec<String> = r.stores.iter().map(|t| t.version.clone()).collect();
    for (_, label, _) in &r.jobs {
        if !order.contains(label) {
            order.push(label.clone());
        }
    }
    order
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let c = PALETTE[i % PALETTE.len()].to_string();
            let caption = format!("store {v}");
            (v, c, caption)
        })
        .collect()
}

/// A round axis maximum at or above `v` (1, 2, 5 times a power of ten).
fn nice(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_scales() {
        assert_eq!(tick_step(9_000), 1_000);
        assert_eq!(tick_step(60_000), 10_000);
        assert_eq!(tick_step(3_600_000), 600_000);
        assert_eq!(rel(65_000), "+1:05");
        assert_eq!(rel(3_725_000), "+1:02:05");
        assert_eq!(rel(-2_000), "-0:02");
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(7.0), 10.0);
        assert_eq!(nice(31.0), 50.0);
        assert_eq!(nice(2.0), 2.0);
        let sc = Scale { t0: 1000, t1: 2000 };
        assert_eq!(sc.x(1000), LEFT);
        assert_eq!(sc.x(5000), LEFT + Scale::plot());
    }
}
