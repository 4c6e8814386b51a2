//! Unit tests of the report's pure parts: id form, store-change parsing, the model and the page.

use super::stores::{store_change, store_tracks, StoreChange};
use super::*;
use crate::coordinator::steps::{self, Process};
use crate::error::ExitCode;

const T: u64 = 1_700_000_000_000;

fn plan() -> Plan {
    Plan::parse(
        r#"{"pac": "MyPAC", "target": {"version": "2.0.0"},
            "hosts": [{"name": "host1", "regions": ["REGION1", "REGION1B"]},
                      {"name": "host2", "regions": ["REGION2"]}],
            "strategy": "incompatible", "waves": [["host1"], ["host2"]],
            "health": {"min_healthy": "1s", "deadline": "30s"}}"#,
    )
    .unwrap()
}

/// A rollout event `ms` after T.
fn ev(ms: u64, step: usize, action: &str, status: &str, host: &str, region: &str) -> Ev {
    Ev {
        ts_ms: T + ms,
        rollout: "MyPAC-1a".into(),
        step,
        action: action.into(),
        host: host.into(),
        region: region.into(),
        status: status.into(),
        detail: format!("{action} {status}"),
        elapsed_ms: 0,
    }
}

/// A script's store event `ms` after T.
fn store_ev(ms: u64, action: &str, detail: &str) -> Ev {
    Ev {
        ts_ms: T + ms,
        action: action.into(),
        status: "done".into(),
        detail: detail.into(),
        ..Default::default()
    }
}

fn inputs(events: Vec<Ev>, result: &str) -> Inputs {
    let p = plan();
    Inputs {
        meta: Meta {
            pac: "MyPAC".into(),
            id: "MyPAC-1a".into(),
            from_version: "1.0.0".into(),
            target: "2.0.0".into(),
            process: "incompatible".into(),
            result: result.into(),
            by: "alice@ops1".into(),
            reason: "quarterly <patch>".into(),
            started_ms: Some(T),
            ..Default::default()
        },
        steps: steps::steps(&p, Process::Incompatible),
        plan: Some(p),
        events,
        jobs: vec![
            (T / 1000 + 1, "1.0.0".into(), 30),
            (T / 1000 + 2, "2.0.0".into(), 12),
            (T / 1000 + 99_999, "2.0.0".into(), 5),
        ],
        clients: vec![
            (T / 1000 + 1, "ok".into(), 20),
            (T / 1000 + 2, "failed".into(), 1),
        ],
        now_ms: T + 60_000,
    }
}

fn sample() -> Vec<Ev> {
    let done = |ms, step, action: &str, host: &str, region: &str, took| {
        let mut e = ev(ms, step, action, "done", host, region);
        e.elapsed_ms = took;
        e
    };
    vec![
        done(100, 0, "preflight", "", "", 100),
        ev(200, 1, "listener_off", "started", "host1", "REGION1"),
        done(300, 1, "listener_off", "host1", "REGION1", 100),
        ev(400, 7, "apply_update", "started", "host1", ""),
        done(900, 7, "apply_update", "host1", "", 500),
        store_ev(1000, "store_created", "store 2.0.0 created in mode upgrade"),
        ev(1100, 11, "health_gate", "started", "", ""),
        done(2100, 11, "health_gate", "", "", 1000),
        store_ev(2200, "set_mode_running", "stores 2.0.0 now running"),
        store_ev(2300, "set_mode_quiesce", "stores 1.0.0 now quiesce"),
        ev(3000, 16, "stop", "started", "host2", "REGION2"),
        {
            let mut e = ev(4000, 16, "stop", "failed", "host2", "REGION2");
            e.detail = "agent <host2> gone".into();
            e
        },
        ev(4000, 25, "rollback", "started", "", ""),
        {
            let mut e = ev(4500, 26, "set_mode_running", "done", "", "");
            e.elapsed_ms = 10;
            e
        },
        store_ev(4500, "rollback", "store 1.0.0 running again"),
        store_ev(5000, "rollback", "detached store 2.0.0"),
        ev(5200, 27, "listener_on", "started", "host2", "REGION2"),
        ev(5300, 28, "rollback", "done", "", ""),
    ]
}

#[test]
fn rollout_ids_are_checked_for_their_form() {
    let pac = PacName::new("MyPAC").unwrap();
    for ok in ["MyPAC-1a2b3c", "MyPAC-18F2C3A4B5D"] {
        check_id(&pac, ok).unwrap();
    }
    for bad in [
        "1a2b",
        "MyPAC",
        "MyPAC-",
        "MyPAC-xyz",
        "OTHER-1a2b",
        "mypac-1a",
        "MyPAC-1a 2",
    ] {
        let e = check_id(&pac, bad).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::InvalidInput, "{bad}");
        assert!(e.to_string().contains("MyPAC-<hex digits>"), "{e}");
    }
}

#[test]
fn store_changes_follow_the_scripts_wording() {
    let set = |v: &[(&str, Option<&str>)]| {
        Some(StoreChange::Set(
            v.iter()
                .map(|(a, b)| (a.to_string(), b.map(String::from)))
                .collect(),
        ))
    };
    let cases = [
        (
            "store_created",
            "store 2.0.0 created in mode upgrade",
            set(&[("2.0.0", Some("upgrade"))]),
        ),
        (
            "set_mode_running",
            "stores 2.0.0 now running",
            set(&[("2.0.0", Some("running"))]),
        ),
        (
            "set_mode_quiesce",
            "stores 1.0.0, 1.5.0 now quiesce",
            set(&[("1.0.0", Some("quiesce")), ("1.5.0", Some("quiesce"))]),
        ),
        (
            "remove_old",
            "detached stores 1.0.0, 1.5.0",
            set(&[("1.0.0", None), ("1.5.0", None)]),
        ),
        (
            "rollback",
            "store 1.0.0 running again",
            set(&[("1.0.0", Some("running"))]),
        ),
        ("rollback", "detached store 2.0.0", set(&[("2.0.0", None)])),
        ("init", "pac init", Some(StoreChange::Reset)),
        ("region_started", "R1 (warm) joined store 1.0.0", None),
    ];
    for (action, detail, want) in cases {
        assert_eq!(
            store_change(&store_ev(0, action, detail)),
            want,
            "{action}: {detail}"
        );
    }
    // A rollout's own set_mode_running event is a step, not a store change.
    assert_eq!(
        store_change(&ev(0, 9, "set_mode_running", "done", "", "")),
        None
    );
}

#[test]
fn store_tracks_start_from_the_old_store_and_follow_changes() {
    let t = store_tracks(&sample(), "1.0.0", T, T + 6000);
    let modes = |v: &str| -> Vec<(u64, u64, String)> {
        t.iter()
            .find(|s| s.version == v)
            .unwrap_or_else(|| panic!("no track {v}: {t:?}"))
            .segments
            .iter()
            .map(|s| (s.start_ms - T, s.end_ms - T, s.mode.clone()))
            .collect()
    };
    assert_eq!(
        modes("1.0.0"),
        vec![
            (0, 2300, "running".into()),
            (2300, 4500, "quiesce".into()),
            (4500, 6000, "running".into())
        ]
    );
    assert_eq!(
        modes("2.0.0"),
        vec![
            (1000, 2200, "upgrade".into()),
            (2200, 5000, "running".into())
        ]
    );
}

#[test]
fn steps_land_on_their_regions_lanes() {
    let r = build(&inputs(sample(), "rolled_back"));
    let names: Vec<&str> = r.lanes.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["PAC MyPAC", "REGION1", "REGION1B", "REGION2"]);
    let on = |action: &str| -> Vec<&str> {
        r.bars
            .iter()
            .filter(|b| b.action == action)
            .map(|b| r.lanes[b.lane].name.as_str())
            .collect()
    };
    assert_eq!(on("listener_off"), ["REGION1"]);
    // A host's update is drawn on each of its regions, wave 1's gate on wave 1's regions.
    assert_eq!(on("apply_update"), ["REGION1", "REGION1B"]);
    assert_eq!(on("health_gate"), ["REGION1", "REGION1B"]);
    assert_eq!(on("preflight"), ["PAC MyPAC"]);
    let upd = r.bars.iter().find(|b| b.action == "apply_update").unwrap();
    assert_eq!((upd.start_ms - T, upd.end_ms - T), (400, 900));
    // The rollback's events have no `started`: the bar spans the elapsed time.
    let flip = r.bars.iter().find(|b| b.step == 26).unwrap();
    assert_eq!((flip.start_ms - T, flip.end_ms - T), (4490, 4500));
    let stop = r.bars.iter().find(|b| b.action == "stop").unwrap();
    assert_eq!(stop.status, BarStatus::Failed);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].target, "REGION2 on host2");
    // Started and never ended in a rollout that is over: interrupted.
    let lon = r.bars.iter().find(|b| b.action == "listener_on").unwrap();
    assert_eq!(lon.status, BarStatus::Interrupted);
    assert_eq!(
        r.counts,
        Counts {
            done: 5,
            skipped: 0,
            failed: 1,
            unfinished: 1
        }
    );
    let marks: Vec<&str> = r.marks.iter().map(|m| m.action.as_str()).collect();
    assert_eq!(marks, ["rollback", "rollback"]);
    // Series outside the rollout's window are left out.
    assert_eq!(Report::total(&r.jobs, None), 42);
    assert_eq!(Report::total(&r.clients, Some("failed")), 1);
    assert!(r.t0 <= T + 100 - 100 && r.t1 >= T + 5300);
}

#[test]
fn a_running_rollout_reaches_now_and_a_pause_is_a_band() {
    let mut evs = sample()[..4].to_vec();
    let mut p = ev(1000, 7, "pause", "done", "", "");
    p.detail = "paused by an operator before step 7".into();
    evs.push(p);
    evs.push(ev(3000, 7, "apply_update", "started", "host1", ""));
    let r = build(&inputs(evs, "running"));
    assert_eq!(r.paused.len(), 1);
    assert_eq!((r.paused[0].0 - T, r.paused[0].1 - T), (1000, 3000));
    assert!(r.t1 >= T + 60_000, "a running rollout's window reaches now");
    let upd: Vec<&Bar> = r
        .bars
        .iter()
        .filter(|b| b.action == "apply_update")
        .collect();
    // The first attempt was interrupted by the pause's re-run; the second still runs.
    assert!(upd.iter().any(|b| b.status == BarStatus::Interrupted));
    assert!(upd
        .iter()
        .any(|b| b.status == BarStatus::Running && b.end_ms >= T + 60_000));
}

#[test]
fn the_page_is_self_contained_and_names_regions_and_kinds() {
    let html = render(&build(&inputs(sample(), "rolled_back")));
    assert!(html.starts_with("<!DOCTYPE html>"));
    for r in ["REGION1", "REGION1B", "REGION2", "host1", "host2"] {
        assert!(
            html.contains(&format!(">{r}<")) || html.contains(&format!(" on {r}<")),
            "{r}"
        );
    }
    for k in [
        "listener_off",
        "apply_update",
        "health_gate",
        "stop",
        "preflight",
    ] {
        assert!(html.contains(&format!(r#"data-kind="{k}""#)), "{k}");
    }
    assert!(html.contains(r#"data-kind="stop" data-lane="REGION2" data-status="failed""#));
    assert!(html.contains("✕"));
    assert!(html.contains(r#"data-store="2.0.0" data-mode="upgrade""#));
    assert!(html.contains(r#"data-label="failed""#));
    // Text from the PSOR is escaped; nothing is loaded from elsewhere; no script.
    assert!(html.contains("agent &lt;host2&gt; gone"));
    assert!(html.contains("quarterly &lt;patch&gt;"));
    assert!(!html.contains("<host2>"));
    let lower = html.to_lowercase();
    for banned in ["<script", "src=", "href=", "@import", "url(http"] {
        assert!(!lower.contains(banned), "{banned}");
    }
    assert!(html.contains("alice@ops1") && html.contains("1.0.0 → 2.0.0"));
    // Pure: the same report renders to the same bytes.
    assert_eq!(html, render(&build(&inputs(sample(), "rolled_back"))));
}

#[test]
fn empty_series_and_a_rollout_without_events_still_render() {
    let mut i = inputs(Vec::new(), "done");
    i.jobs.clear();
    i.clients.clear();
    let r = build(&i);
    assert_eq!(r.bars.len(), 0);
    let html = render(&r);
    assert!(html.contains("No job completion was recorded"));
    assert!(html.contains("No client request was recorded"));
}

#[test]
fn long_rollouts_bin_seconds_into_pixels() {
    let mut i = inputs(
        vec![
            ev(0, 0, "preflight", "done", "", ""),
            ev(86_400_000, 1, "verify", "done", "", ""),
        ],
        "done",
    );
    i.jobs = (0..86_400)
        .map(|s| (T / 1000 + s, "1.0.0".to_string(), 2))
        .collect();
    let html = render(&build(&i));
    let bars = html.matches(r#"class="sec""#).count();
    assert!(bars > 100 && bars <= 1200, "{bars} bars for a day");
    assert!(
        html.contains(">2 jobs/s<") || html.contains(": 2 jobs/s"),
        "averaged per second"
    );
}
