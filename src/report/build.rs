//! From the inputs to the picture's model: lanes, bars, marks, pauses, windowed series.

use super::stores::store_tracks;
use super::{is_mark, Bar, BarStatus, Ev, Failure, Inputs, Lane, Mark, Report};
use crate::psor::series::SeriesPoint;
use std::collections::HashMap;

/// `REGION on host`, `host`, or "".
fn target_of(e: &Ev) -> String {
    match (e.region.is_empty(), e.host.is_empty()) {
        (false, false) => format!("{} on {}", e.region, e.host),
        (false, true) => e.region.clone(),
        (true, false) => e.host.clone(),
        (true, true) => String::new(),
    }
}

/// Builds the picture's model (pure).
pub fn build(inp: &Inputs) -> Report {
    let meta = inp.meta.clone();
    let mine: Vec<&Ev> = inp.events.iter().filter(|e| e.rollout == meta.id).collect();
    let active = matches!(meta.result.as_str(), "running" | "rolling_back");
    let mut t0 = mine
        .iter()
        .map(|e| {
            if e.status == "started" || is_mark(&e.action) {
                e.ts_ms
            } else {
                e.ts_ms.saturating_sub(e.elapsed_ms)
            }
        })
        .min()
        .or(meta.started_ms)
        .unwrap_or(inp.now_ms);
    let mut t1 = mine.iter().map(|e| e.ts_ms).max().unwrap_or(t0);
    if active {
        t1 = t1.max(inp.now_ms);
    }
    if t1 <= t0 {
        t1 = t0 + 1000;
    }
    let origin_ms = t0;
    // A little room on both sides so the first and last bars are not on the frame.
    let pad = (t1 - t0) / 50;
    t0 = t0.saturating_sub(pad);
    t1 += pad;

    let mut lanes = vec![Lane {
        name: format!("PAC {}", meta.pac),
        host: None,
    }];
    if let Some(p) = &inp.plan {
        for (h, r) in p.all_regions() {
            lanes.push(Lane {
                name: r,
                host: Some(h),
            });
        }
    }
    let mut report = Report {
        meta,
        origin_ms,
        t0,
        t1,
        events: mine.len(),
        generated_ms: inp.now_ms,
        ..Default::default()
    };
    let mut open: HashMap<(usize, String), &Ev> = HashMap::new();
    let mut bars: Vec<(Vec<usize>, Bar)> = Vec::new();
    for (i, e) in mine.iter().enumerate() {
        if is_mark(&e.action) {
            report.marks.push(Mark {
                ts_ms: e.ts_ms,
                action: e.action.clone(),
                status: e.status.clone(),
                detail: e.detail.clone(),
            });
            if e.action == "pause" {
                let until = mine.get(i + 1).map(|n| n.ts_ms).unwrap_or(t1);
                report.paused.push((e.ts_ms, until.max(e.ts_ms)));
            }
            if e.status == "failed" {
                report.counts.failed += 1;
            }
            continue;
        }
        let lanes_of = lanes_for(e, inp, &mut lanes);
        let key = (e.step, e.action.clone());
        let bar = |start: u64, end: u64, status: BarStatus| Bar {
            lane: 0,
            action: e.action.clone(),
            step: e.step,
            start_ms: start,
            end_ms: end.max(start),
            status,
            target: target_of(e),
            detail: e.detail.clone(),
        };
        if e.status == "started" {
            if let Some(prev) = open.insert(key, e) {
                report.counts.unfinished += 1;
                let mut b = bar(prev.ts_ms, e.ts_ms, BarStatus::Interrupted);
                b.detail = "its coordinator stopped before the step ended".into();
                bars.push((lanes_of.clone(), b));
            }
            continue;
        }
        let start = open
            .remove(&key)
            .map(|s| s.ts_ms)
            .unwrap_or_else(|| e.ts_ms.saturating_sub(e.elapsed_ms));
        let status = match e.status.as_str() {
            "failed" => BarStatus::Failed,
            "skipped" => BarStatus::Skipped,
            _ => BarStatus::Done,
        };
        match status {
            BarStatus::Failed => {
                report.counts.failed += 1;
                report.failures.push(Failure {
                    ts_ms: e.ts_ms,
                    step: e.step,
                    action: e.action.clone(),
                    target: target_of(e),
                    detail: e.detail.clone(),
                });
            }
            BarStatus::Skipped => report.counts.skipped += 1,
            _ => report.counts.done += 1,
        }
        bars.push((lanes_of, bar(start, e.ts_ms, status)));
    }
    let mut left: Vec<&Ev> = open.into_values().collect();
    left.sort_by_key(|e| e.ts_ms);
    for e in left {
        report.counts.unfinished += 1;
        let status = if active {
            BarStatus::Running
        } else {
            BarStatus::Interrupted
        };
        let lanes_of = lanes_for(e, inp, &mut lanes);
        bars.push((
            lanes_of,
            Bar {
                lane: 0,
                action: e.action.clone(),
                step: e.step,
                start_ms: e.ts_ms,
                end_ms: t1.max(e.ts_ms),
                status,
                target: target_of(e),
                detail: e.detail.clone(),
            },
        ));
    }
    for (ls, b) in bars {
        for l in ls {
            report.bars.push(Bar {
                lane: l,
                ..b.clone()
            });
        }
    }
    report.lanes = lanes;
    report.stores = store_tracks(&inp.events, &report.meta.from_version, t0, t1);
    let (s0, s1) = (t0 / 1000, t1.div_ceil(1000));
    let within = |s: &[SeriesPoint]| -> Vec<SeriesPoint> {
        s.iter()
            .filter(|p| p.0 >= s0 && p.0 <= s1)
            .cloned()
            .collect()
    };
    report.jobs = within(&inp.jobs);
    report.clients = within(&inp.clients);
    report
}

/// The lanes an event is drawn on: its region's; else every region of its host; else
/// (a health gate) its wave's regions; else the PAC's own lane.
fn lanes_for(e: &Ev, inp: &Inputs, lanes: &mut Vec<Lane>) -> Vec<usize> {
    let find = |region: &str, host: &str, lanes: &mut Vec<Lane>| -> usize {
        if let Some(i) = lanes.iter().skip(1).position(|l| l.name == region) {
            return i + 1;
        }
        lanes.push(Lane {
            name: region.to_string(),
            host: (!host.is_empty()).then(|| host.to_string()),
        });
        lanes.len() - 1
    };
    if !e.region.is_empty() {
        return vec![find(&e.region, &e.host, lanes)];
    }
    if !e.host.is_empty() {
        let on_host: Vec<usize> = (1..lanes.len())
            .filter(|&i| lanes[i].host.as_deref() == Some(e.host.as_str()))
            .collect();
        return if on_host.is_empty() { vec![0] } else { on_host };
    }
    let wave = inp
        .steps
        .get(e.step)
        .filter(|s| s.n == e.step && s.action().name() == e.action)
        .and_then(|s| s.wave());
    if let (Some(w), Some(plan)) = (wave, &inp.plan) {
        let regions = plan.wave_regions(w);
        if !regions.is_empty() {
            return regions.iter().map(|(h, r)| find(r, h, lanes)).collect();
        }
    }
    vec![0]
}
