use super::*;
use crate::psor::RegionInfo;

fn plan(extra: &str) -> Plan {
    Plan::parse(&format!(
        r#"{{"pac": "MyPAC", "target": {{"version": "2.0.0"}},
           "hosts": [{{"name": "host1", "regions": ["REGION1", "REGION1B"]}},
                     {{"name": "host2", "regions": ["REGION2"]}}]{extra}}}"#
    ))
    .unwrap()
}

fn names(s: &[Step]) -> Vec<String> {
    s.iter()
        .map(|s| {
            format!(
                "{}{}",
                s.action(),
                s.region().map(|r| format!(":{r}")).unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn incompatible_after_first_wave_follows_the_documented_process_with_an_early_flip() {
    let s = steps(&plan(""), Process::Incompatible);
    assert_eq!(
        names(&s),
        [
            "preflight",
            "listener_off:REGION1",
            "listener_off:REGION1B",
            "drain:REGION1",
            "drain:REGION1B",
            "stop:REGION1",
            "stop:REGION1B",
            "apply_update",
            "check_compat",
            "start_upgrade:REGION1",
            "start_warm:REGION1B",
            "health_gate",
            "set_mode_running",
            "listener_on:REGION1",
            "listener_on:REGION1B",
            "set_mode_quiesce",
            "listener_off:REGION2",
            "drain:REGION2",
            "stop:REGION2",
            "apply_update",
            "start_warm:REGION2",
            "health_gate",
            "listener_on:REGION2",
            "verify",
            "remove_old",
        ]
    );
    assert!(s.iter().enumerate().all(|(i, st)| st.n == i));
}

#[test]
fn after_all_waves_flips_at_the_end() {
    let s = names(&steps(
        &plan(r#", "mode_flip": "after_all_waves""#),
        Process::Incompatible,
    ));
    let flip = s.iter().position(|a| a == "set_mode_running").unwrap();
    let last_start = s.iter().rposition(|a| a.starts_with("start_warm")).unwrap();
    assert!(flip > last_start);
    assert_eq!(s.iter().filter(|a| a.starts_with("listener_on")).count(), 3);
}

#[test]
fn compatible_is_a_rolling_restart() {
    let s = names(&steps(&plan(""), Process::Compatible));
    assert!(!s
        .iter()
        .any(|a| a.starts_with("start_upgrade") || a == "remove_old" || a.starts_with("set_mode")));
    assert_eq!(s.last().unwrap(), "verify");
    assert_eq!(s.iter().filter(|a| *a == "health_gate").count(), 2);
}

#[test]
fn consecutive_steps_of_one_parallel_action_form_a_group() {
    let s = steps(&plan(""), Process::Incompatible);
    let g: Vec<(usize, usize)> = groups(&s).iter().map(|r| (r.start, r.end)).collect();
    // listener_off x2, drain x2, stop x2 together; the upgrade start alone, then the
    // warm start; gates and store changes alone.
    assert_eq!(&g[..6], &[(0, 1), (1, 3), (3, 5), (5, 7), (7, 8), (8, 9)]);
    assert_eq!(&g[6..9], &[(9, 10), (10, 11), (11, 12)]);
    assert!(
        g.contains(&(13, 15)),
        "listener_on of wave 1 together: {g:?}"
    );
    let covered: usize = g.iter().map(|(a, b)| b - a).sum();
    assert_eq!(covered, s.len());
}

#[test]
fn steps_keep_the_journal_record_shape_and_read_back() {
    let s = steps(&plan(""), Process::Incompatible);
    let text = serde_json::to_string(&s).unwrap();
    // The shape journals of earlier versions have: exactly these keys.
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = v[1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["action", "host", "n", "region", "wave"]);
    assert_eq!(v[11]["wave"], 0);
    let back: Vec<Step> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
    // A record missing what its action needs is refused, naming it.
    let e = serde_json::from_str::<Step>(
        r#"{"n": 7, "action": "apply_update", "host": null, "region": null, "wave": null}"#,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("step 7 (apply_update) has no host"),
        "{e}"
    );
}

fn region(name: &str, host: &str, version: &str, alive: bool) -> RegionInfo {
    RegionInfo {
        name: name.into(),
        host: host.into(),
        product_version: version.into(),
        os: "linux-6".into(),
        bitness: 64,
        store: version.into(),
        state: if alive { "active" } else { "stopped" }.into(),
        start_type: "warm".into(),
        listener: "on".into(),
        endpoint: String::new(),
        clients: 0,
        jobs_done: 0,
        alive,
        heartbeat_age_ms: None,
        liveness: Default::default(),
    }
}

fn rollback(regions: &[RegionInfo], hosts: &[(&str, &str)], fast: bool) -> Vec<String> {
    let p = plan("");
    let hv: BTreeMap<String, String> = [("host1", "1.0.0"), ("host2", "1.0.0")]
        .iter()
        .map(|(h, v)| (h.to_string(), v.to_string()))
        .collect();
    let hosts: BTreeMap<String, String> = hosts
        .iter()
        .map(|(h, v)| (h.to_string(), v.to_string()))
        .collect();
    let s = rollback_steps(&RollbackInput {
        plan: &p,
        process: Process::Incompatible,
        from: "1.0.0",
        target: "2.0.0",
        host_versions: &hv,
        regions,
        hosts: &hosts,
        fast,
        touched: None,
        first: 26,
    });
    assert!(s.iter().enumerate().all(|(i, st)| st.n == 26 + i));
    s.iter()
        .map(|s| {
            format!(
                "{}{}{}",
                s.action(),
                s.region()
                    .or(s.host())
                    .map(|r| format!(":{r}"))
                    .unwrap_or_default(),
                s.store().map(|v| format!("@{v}")).unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn a_rollback_undoes_only_what_was_done_last_wave_first() {
    // Wave 1 upgraded, wave 2 untouched.
    let regions = [
        region("REGION1", "host1", "2.0.0", true),
        region("REGION1B", "host1", "2.0.0", true),
        region("REGION2", "host2", "1.0.0", true),
    ];
    let s = rollback(&regions, &[("host1", "2.0.0"), ("host2", "1.0.0")], false);
    assert_eq!(
        s,
        [
            "set_mode_running@1.0.0",
            "listener_off:REGION1",
            "listener_off:REGION1B",
            "drain:REGION1",
            "drain:REGION1B",
            "stop:REGION1",
            "stop:REGION1B",
            "apply_update:host1",
            "start_warm:REGION1",
            "start_warm:REGION1B",
            "health_gate",
            "listener_on:REGION1",
            "listener_on:REGION1B",
            "remove_old@2.0.0",
        ]
    );
    // REGION2 crashed in its gate on host2 (already at 2.0.0): wave 2 first, no stop.
    let regions = [
        region("REGION1", "host1", "2.0.0", true),
        region("REGION1B", "host1", "2.0.0", true),
        region("REGION2", "host2", "2.0.0", false),
    ];
    let s = rollback(&regions, &[("host1", "2.0.0"), ("host2", "2.0.0")], false);
    assert_eq!(
        &s[1..4],
        ["apply_update:host2", "start_warm:REGION2", "health_gate"]
    );
}

#[test]
fn a_fast_rollback_moves_every_host_at_once_with_one_gate() {
    let regions = [
        region("REGION1", "host1", "2.0.0", true),
        region("REGION1B", "host1", "2.0.0", true),
        region("REGION2", "host2", "2.0.0", true),
    ];
    let s = rollback(&regions, &[("host1", "2.0.0"), ("host2", "2.0.0")], true);
    assert_eq!(s.iter().filter(|a| *a == "health_gate").count(), 1);
    let stops: Vec<usize> = (0..s.len()).filter(|&i| s[i].starts_with("stop")).collect();
    assert_eq!(stops.len(), 3);
    assert!(stops.windows(2).all(|w| w[1] == w[0] + 1), "{s:?}");
    let p = plan("");
    let steps: Vec<Step> = serde_json::from_str(
        &serde_json::to_string(&rollback_steps(&RollbackInput {
            plan: &p,
            process: Process::Compatible,
            from: "1.0.0",
            target: "1.0.1",
            host_versions: &BTreeMap::new(),
            regions: &regions,
            hosts: &BTreeMap::new(),
            fast: true,
            touched: None,
            first: 1,
        }))
        .unwrap(),
    )
    .unwrap();
    let gate = steps
        .iter()
        .find(|s| s.action() == Action::HealthGate)
        .unwrap();
    assert_eq!(gate.kind, StepKind::HealthGate(GateScope::All));
}

#[test]
fn backups_precede_the_upgrade_start_and_remove_old_and_round_trip_through_the_journal() {
    let plain = steps(&plan(""), Process::Incompatible);
    let s = steps(
        &plan(r#", "backup": {"dir": "/var/backups/pacup"}"#),
        Process::Incompatible,
    );
    assert_eq!(s.len(), plain.len() + 2);
    let n = names(&s);
    let up = n.iter().position(|x| x == "start_upgrade:REGION1").unwrap();
    assert_eq!(n[up - 1], "backup");
    assert_eq!(s[up - 1].phase(), Some(BackupPhase::BeforeUpgrade));
    assert_eq!(&n[n.len() - 3..], ["verify", "backup", "remove_old"]);
    assert!(s[n.len() - 2].finalizing());
    let text = serde_json::to_string(&s).unwrap();
    assert!(text.contains(r#""phase":"before_remove_old""#), "{text}");
    let back: Vec<Step> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        s[up - 1].to_string(),
        format!("{:>3}. backup (before_upgrade)", up - 1)
    );
    // The compatible process changes no store: no backup.
    let c = steps(
        &plan(r#", "backup": {"dir": "/var/backups/pacup"}"#),
        Process::Compatible,
    );
    assert!(!names(&c).contains(&"backup".to_string()));
}
