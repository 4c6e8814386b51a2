use super::*;

const BASE: &str = r#"{"pac": "MyPAC", "target": {"version": "2.0.0"},
    "hosts": [{"name": "host1", "regions": ["REGION1", "REGION1B"]},
              {"name": "host2", "regions": ["REGION2"]}]"#;

fn with(extra: &str) -> String {
    format!("{BASE}{extra}}}")
}

#[test]
fn defaults() {
    let p = Plan::parse(&with("")).unwrap();
    assert_eq!(p.waves.len(), 2);
    assert_eq!(p.strategy, Strategy::Auto);
    assert_eq!(p.mode_flip, ModeFlip::AfterFirstWave);
    assert_eq!(p.on_failure, OnFailure::Pause);
    assert_eq!(p.drain_timeout, Duration::from_secs(30));
    assert_eq!(p.driver, DriverSpec::Agent);
    assert_eq!(
        p.wave_regions(0),
        vec![
            ("host1".into(), "REGION1".into()),
            ("host1".into(), "REGION1B".into())
        ]
    );
}

#[test]
fn the_shipped_fixtures_parse() {
    for f in [
        "two-host-incompatible.json",
        "compatible-patch.json",
        "enterprise-server.json",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/plans")
            .join(f);
        Plan::load(&path).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

fn hosts(n: usize, per: usize) -> String {
    let hs: Vec<String> = (0..n)
        .map(|h| {
            let rs: Vec<String> = (0..per).map(|r| format!("\"R{h}x{r}\"")).collect();
            format!(r#"{{"name": "h{h}", "regions": [{}]}}"#, rs.join(", "))
        })
        .collect();
    format!(
        r#"{{"pac": "MyPAC", "target": {{"version": "2.0.0"}}, "hosts": [{}]"#,
        hs.join(", ")
    )
}

fn wave_sizes(p: &Plan) -> Vec<usize> {
    p.waves.iter().map(Vec::len).collect()
}

#[test]
fn waves_derive_from_max_unavailable_and_canary() {
    // 50 hosts x 20 regions, 10% of 1000 = 100 regions = 5 hosts per wave.
    let p = Plan::parse(&format!(r#"{}, "max_unavailable": "10%"}}"#, hosts(50, 20))).unwrap();
    assert_eq!(wave_sizes(&p), vec![5; 10]);
    assert!(p.waves_derived);
    assert_eq!(p.waves[1][0].as_str(), "h5");
    // A count, and a canary host first.
    let p = Plan::parse(&format!(
        r#"{}, "max_unavailable": 40, "canary": 1}}"#,
        hosts(7, 20)
    ))
    .unwrap();
    assert_eq!(wave_sizes(&p), vec![1, 2, 2, 2]);
    // A canary alone: one host per wave after it.
    let p = Plan::parse(&format!(r#"{}, "canary": 2}}"#, hosts(4, 1))).unwrap();
    assert_eq!(wave_sizes(&p), vec![2, 1, 1]);
    // A percentage is of the PAC: against 40 regions, 10% is 4 (two hosts of 2).
    let mut p = Plan::parse(&format!(r#"{}, "max_unavailable": "10%"}}"#, hosts(4, 2))).unwrap();
    assert_eq!(wave_sizes(&p), vec![1, 1, 1, 1]);
    p.derive_waves(40);
    assert_eq!(wave_sizes(&p), vec![2, 2]);
    assert!(p.oversized_waves(40).is_empty());
    // A host larger than the bound keeps a wave of its own, which preflight reports.
    let p = Plan::parse(&format!(r#"{}, "max_unavailable": 5}}"#, hosts(3, 10))).unwrap();
    assert_eq!(wave_sizes(&p), vec![1, 1, 1]);
    assert_eq!(
        p.oversized_waves(30),
        vec![(0, 10, 5), (1, 10, 5), (2, 10, 5)]
    );
    // Journaled with explicit waves, the flag is not part of the file.
    let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert!(!back.waves_derived && back.waves == p.waves);
}

#[test]
fn max_parallel_bounds_a_group() {
    let p = Plan::parse(&with(r#", "max_parallel": 2"#)).unwrap();
    assert_eq!(p.parallel_bound(), 2);
    assert_eq!(Plan::parse(&with("")).unwrap().parallel_bound(), usize::MAX);
}

#[test]
fn refusals_are_exit_2_and_name_the_field() {
    let cases = [
        (with(r#", "colour": "blue""#), "unknown field"),
        (with(r#", "waves": [["host1"], ["host3"]]"#), "waves[1]"),
        (with(r#", "waves": [["host1"], []]"#), "waves[1]"),
        (with(r#", "waves": [["host1"]]"#), "every host"),
        (with(r#", "waves": [["host1", "host2"], ["host2"]]"#), "exactly one wave"),
        (with(r#", "drain_timeout": "soon""#), "duration"),
        (with(r#", "drain_timeout": "0s""#), "greater than zero"),
        (with(r#", "strategy": "yolo""#), "unknown variant"),
        (with(r#", "health": {"min_healthy": "5m", "deadline": "1m"}"#), "health.min_healthy"),
        (with(r#", "max_parallel": 0"#), "max_parallel"),
        (with(r#", "canary": 2"#), "canary"),
        (with(r#", "canary": 0"#), "canary"),
        (with(r#", "max_unavailable": 0"#), "max_unavailable"),
        (with(r#", "max_unavailable": "0%""#), "max_unavailable"),
        (with(r#", "max_unavailable": "150%""#), "max_unavailable"),
        (with(r#", "max_unavailable": "ten""#), "max_unavailable"),
        (with(r#", "waves": [["host1"], ["host2"]], "canary": 1"#), "not both"),
        (
            r#"{"pac": "MyPAC", "target": {"version": "2.0.0"}, "hosts": [{"name": "h", "regions": ["R", "R"]}]}"#.to_string(),
            "each region once",
        ),
        (r#"{"pac": "TOOLONGPAC", "target": {"version": "2.0.0"}, "hosts": []}"#.to_string(), "PAC name"),
        (r#"{"pac": "P", "target": {"version": "2.0"}, "hosts": []}"#.to_string(), "version"),
        (r#"{"pac": "P", "target": {"version": "2.0.0"}, "hosts": []}"#.to_string(), "hosts"),
    ];
    for (text, needle) in cases {
        let e = Plan::parse(&text).unwrap_err();
        assert_eq!(e.exit_code().code(), 2, "{text}");
        assert!(e.to_string().contains(needle), "{needle} not in: {e}");
    }
}

#[test]
fn backup_needs_an_absolute_dir_and_the_agent_driver() {
    let base = r#""pac": "MyPAC", "target": {"version": "2.0.0"},
        "hosts": [{"name": "host1", "regions": ["R1"]}]"#;
    let ok = Plan::parse(&format!(
        r#"{{{base}, "backup": {{"dir": "/var/backups"}}}}"#
    ))
    .unwrap();
    assert_eq!(ok.backup.as_ref().map(|b| b.keep), Some(5));
    assert!(ok.backs_up());
    let e = Plan::parse(&format!(r#"{{{base}, "backup": {{"dir": "backups"}}}}"#)).unwrap_err();
    assert!(e.to_string().contains("backup.dir"), "{e}");
    assert_eq!(e.exit_code().code(), 2);
    let e = Plan::parse(&format!(
        r#"{{{base}, "backup": {{"dir": "/b", "keep": 0}}}}"#
    ))
    .unwrap_err();
    assert!(e.to_string().contains("backup.keep"), "{e}");
    let cmd = r#""driver": {"kind": "command", "templates": {"listener_off": "a", "listener_on": "b",
        "stop": "c", "apply_update": "d", "start": "e", "region_state": "f"}}"#;
    let e = Plan::parse(&format!(r#"{{{base}, {cmd}, "backup": {{"dir": "/b"}}}}"#)).unwrap_err();
    assert!(e.to_string().contains("its backup template"), "{e}");
    assert!(!Plan::parse(&format!(r#"{{{base}, {cmd}}}"#))
        .unwrap()
        .backs_up());
}

#[test]
fn host_checks_need_absolute_paths_and_a_template_with_the_command_driver() {
    let base = r#""pac": "MyPAC", "target": {"version": "2.0.0"},
        "hosts": [{"name": "host1", "regions": ["R1"]}, {"name": "host2", "regions": ["R2"]}]"#;
    let ok = Plan::parse(&format!(
        r#"{{{base}, "host_checks": {{"paths": ["/var/mf"], "min_free": "2GiB"}}}}"#
    ))
    .unwrap();
    assert_eq!(ok.host_checks.as_ref().unwrap().min_free, 2 << 30);
    assert!(ok.checks_hosts());
    let e = Plan::parse(&format!(
        r#"{{{base}, "host_checks": {{"paths": ["/ok", "tmp"], "min_free": 1}}}}"#
    ))
    .unwrap_err();
    assert!(
        e.to_string().contains("host_checks.paths[1] \"tmp\""),
        "{e}"
    );
    assert_eq!(e.exit_code().code(), 2);
    let e = Plan::parse(&format!(
        r#"{{{base}, "host_checks": {{"min_free": "lots"}}}}"#
    ))
    .unwrap_err();
    assert!(e.to_string().contains("invalid size \"lots\""), "{e}");
    let cmd = r#""driver": {"kind": "command", "templates": {"listener_off": "a", "listener_on": "b",
        "stop": "c", "apply_update": "d", "start": "e", "region_state": "f"}}"#;
    let e = Plan::parse(&format!(
        r#"{{{base}, {cmd}, "host_checks": {{"paths": ["/v"], "min_free": 1}}}}"#
    ))
    .unwrap_err();
    assert!(e.to_string().contains("host_check template"), "{e}");
    // With the steps: a host_check before the second wave, none before the first.
    let s = crate::coordinator::steps::steps(&ok, crate::coordinator::steps::Process::Incompatible);
    let checks: Vec<_> = s
        .iter()
        .filter(|x| x.action().name() == "host_check")
        .collect();
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].wave(), Some(1));
}
