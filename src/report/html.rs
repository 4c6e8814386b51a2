//! The report page: summary, failures, legends and the SVG charts, with inline CSS.

use super::svg::{self, FAILED, MODES, OK};
use super::{esc, human_ms, Report, KINDS};
use crate::psor::rfc3339;
use std::fmt::Write as _;

const CSS: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1240px; margin: 0 auto; padding: 20px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 26px 0 6px; border-bottom: 1px solid #e2e2e6; padding-bottom: 3px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; }
.result { display: inline-block; padding: 2px 10px; border-radius: 10px; color: #fff; font-weight: 600; }
.r-done { background: #2e9e44; } .r-rolled_back { background: #d63384; }
.r-aborted, .r-failed { background: #c1121f; } .r-paused, .r-held { background: #c9a227; }
.r-running, .r-rolling_back { background: #1d5fa8; } .r-other { background: #6c757d; }
table.summary { border-collapse: collapse; margin-top: 10px; }
table.summary th { text-align: left; font-weight: 600; padding: 3px 18px 3px 0; vertical-align: top; color: #57606a; }
table.summary td { padding: 3px 0; }
ul.failures li { color: #c1121f; margin-bottom: 4px; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 16px; margin: 6px 0 8px; }
.legend span { display: inline-flex; align-items: center; gap: 5px; }
.sw { display: inline-block; width: 14px; height: 12px; border-radius: 2px; }
.sw.failed { background: #fff; border: 2.5px solid #c1121f; width: 10px; height: 8px; }
.sw.skipped { opacity: .35; background: #555; }
.sw.paused { background: repeating-linear-gradient(45deg, #f4f4f6 0 3px, #c8c8d0 3px 5px); }
svg { display: block; margin: 4px 0; max-width: 100%; height: auto; }
svg text { font: 12px system-ui, sans-serif; fill: #1f2328; }
svg text.tick, svg text.unit, svg .host { fill: #6e7781; font-size: 11px; }
svg text.inbar { fill: #fff; font-size: 11px; font-weight: 600; }
svg text.fail { font-size: 14px; font-weight: 700; fill: #c1121f; }
svg text.empty { fill: #6e7781; font-style: italic; }
p.note { color: #57606a; margin: 2px 0; }
footer { margin-top: 30px; color: #6e7781; font-size: 12px; }
"#;

fn result_class(r: &str) -> &'static str {
    match r {
        "done" => "r-done",
        "rolled_back" => "r-rolled_back",
        "aborted" => "r-aborted",
        "failed" => "r-failed",
        "paused" => "r-paused",
        "held" => "r-held",
        "running" => "r-running",
        "rolling_back" => "r-rolling_back",
        _ => "r-other",
    }
}

fn row(out: &mut String, k: &str, v: &str) {
    let _ = write!(out, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "—".into()
    } else {
        esc(s)
    }
}

fn summary(out: &mut String, r: &Report) {
    let m = &r.meta;
    out.push_str(r#"<table class="summary">"#);
    row(out, "PAC", &esc(&m.pac));
    row(out, "Rollout", &format!("<code>{}</code>", esc(&m.id)));
    let process = if m.process.is_empty() {
        String::new()
    } else {
        format!(" ({} process)", esc(&m.process))
    };
    row(
        out,
        "Versions",
        &format!(
            "{} → {}{process}",
            or_dash(&m.from_version),
            or_dash(&m.target)
        ),
    );
    let start = m.started_ms.unwrap_or(r.origin_ms);
    row(out, "Started", &esc(&rfc3339(start)));
    let duration = match m.finished_ms {
        Some(end) => human_ms(end.saturating_sub(start)),
        None if matches!(m.result.as_str(), "running" | "rolling_back") => {
            format!("{} so far", human_ms(r.generated_ms.saturating_sub(start)))
        }
        None => {
            let last = r.t1.min(r.generated_ms).max(r.origin_ms);
            format!("{} (to its last event)", human_ms(last - r.origin_ms))
        }
    };
    row(out, "Duration", &esc(&duration));
    let detail = if m.detail.is_empty() {
        String::new()
    } else {
        format!(" {}", esc(&m.detail))
    };
    row(
        out,
        "Result",
        &format!(
            r#"<span class="result {}">{}</span>{detail}"#,
            result_class(&m.result),
            or_dash(&m.result)
        ),
    );
    row(out, "Who", &or_dash(&m.by));
    row(out, "Why", &or_dash(&m.reason));
    let c = r.counts;
    let mut steps = format!(
        "{} done, {} skipped (already done), {} failed",
        c.done, c.skipped, c.failed
    );
    if c.unfinished > 0 {
        let _ = write!(steps, ", {} started and never ended", c.unfinished);
    }
    let _ = write!(steps, " ({} events)", r.events);
    row(out, "Steps", &esc(&steps));
    let regions: Vec<String> = r
        .lanes
        .iter()
        .skip(1)
        .map(|l| match &l.host {
            Some(h) => format!("{} on {h}", l.name),
            None => l.name.clone(),
        })
        .collect();
    row(
        out,
        "Regions",
        &esc(&format!("{}: {}", regions.len(), regions.join(", "))),
    );
    row(
        out,
        "Batch jobs completed",
        &esc(&format!(
            "{} while the rollout ran",
            Report::total(&r.jobs, None)
        )),
    );
    let (ok, failed) = (
        Report::total(&r.clients, Some("ok")),
        Report::total(&r.clients, Some("failed")),
    );
    row(
        out,
        "Client requests",
        &format!(
            "{ok} answered, <span style=\"color:{}\">{failed} failed</span> while the rollout ran",
            if failed > 0 { FAILED } else { "inherit" }
        ),
    );
    out.push_str("</table>");
}

fn failures(out: &mut String, r: &Report) {
    if r.failures.is_empty() {
        return;
    }
    out.push_str(r#"<h2>Failures</h2><ul class="failures">"#);
    for f in &r.failures {
        let target = if f.target.is_empty() {
            String::new()
        } else {
            format!(" {}", f.target)
        };
        let _ = write!(
            out,
            "<li>{} step {} <code>{}</code>{} failed: {}</li>",
            esc(&rfc3339(f.ts_ms)),
            f.step,
            esc(&f.action),
            esc(&target),
            esc(&f.detail)
        );
    }
    out.push_str("</ul>");
}

fn legend_kinds(out: &mut String, r: &Report) {
    out.push_str(r#"<div class="legend">"#);
    for (action, label, colour) in KINDS {
        let used = r.bars.iter().any(|b| b.action == *action)
            || r.marks.iter().any(|m| m.action == *action);
        if used {
            let _ = write!(
                out,
                r#"<span><i class="sw" style="background:{colour}"></i>{} <code>{}</code></span>"#,
                esc(label),
                esc(action)
            );
        }
    }
    out.push_str(
        r#"<span><i class="sw failed"></i>failed ✕</span><span><i class="sw skipped"></i>skipped (already done)</span><span><i class="sw paused"></i>paused</span></div>"#,
    );
}

/// The whole page (pure: the same report gives the same bytes).
pub fn render(r: &Report) -> String {
    let m = &r.meta;
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Rollout {id} of PAC {pac}: {res}</title><style>{CSS}</style></head><body><main><h1>Rollout <code>{id}</code> of PAC {pac}</h1>"#,
        id = esc(&m.id),
        pac = esc(&m.pac),
        res = esc(&m.result),
    );
    summary(&mut out, r);
    failures(&mut out, r);
    out.push_str("<h2>Timeline</h2>");
    let _ = write!(
        out,
        r#"<p class="note">One lane per region (a host's update on each of its regions, a wave's health gate on the wave's regions); the PAC's own steps on the first lane. Times relative to the start, {}.</p>"#,
        esc(&rfc3339(r.origin_ms))
    );
    legend_kinds(&mut out, r);
    out.push_str(&svg::timeline(r));

    out.push_str("<h2>Stores' modes</h2><div class=\"legend\">");
    for (mode, colour) in MODES {
        let _ = write!(
            out,
            r#"<span><i class="sw" style="background:{colour}"></i>{mode}</span>"#
        );
    }
    out.push_str("</div>");
    out.push_str(&svg::stores(r));

    out.push_str("<h2>Batch jobs completed per second</h2>");
    let labels = svg::store_labels(r);
    out.push_str(r#"<div class="legend">"#);
    for (_, colour, caption) in &labels {
        let _ = write!(
            out,
            r#"<span><i class="sw" style="background:{colour}"></i>{}</span>"#,
            esc(caption)
        );
    }
    out.push_str("</div>");
    out.push_str(&svg::per_second(
        "j",
        r,
        &r.jobs,
        &labels,
        "jobs/s",
        "No job completion was recorded while this rollout ran.",
    ));

    out.push_str("<h2>Client requests per second</h2>");
    let _ = write!(
        out,
        r#"<div class="legend"><span><i class="sw" style="background:{OK}"></i>answered</span><span><i class="sw" style="background:{FAILED}"></i>failed (no region answered in time)</span></div>"#
    );
    let clients = [
        ("ok".to_string(), OK.to_string(), "answered".to_string()),
        (
            "failed".to_string(),
            FAILED.to_string(),
            "failed".to_string(),
        ),
    ];
    out.push_str(&svg::per_second(
        "c",
        r,
        &r.clients,
        &clients,
        "requests/s",
        "No client request was recorded while this rollout ran (`pacup clients run` records them).",
    ));
    let _ = writeln!(
        out,
        "<footer>Written by pacup {} at {} from the PSOR: the rollout's journal or history, the PAC's event stream and the rollout's per-second series. Times are the PSOR's clock, UTC. Hover a bar for its step's detail.</footer></main></body></html>",
        env!("CARGO_PKG_VERSION"),
        esc(&rfc3339(r.generated_ms))
    );
    out
}
