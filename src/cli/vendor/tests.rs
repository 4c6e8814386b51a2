use super::probe::{probe, resolve_region, State};
use super::*;
use crate::cli::{Cli, Command, RegionCommand};
use crate::psor::{HostInfo, RegionInfo, Snapshot};
use clap::Parser;

fn no_env(_: &str) -> Option<String> {
    None
}

fn p(tool: Tool, args: &[&str]) -> Result<Request, String> {
    parse(tool, args, &no_env)
}

fn start(args: &[&str]) -> (String, StartType, Duration) {
    let r = p(Tool::Casstart, args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    match r.action {
        Action::Start { start_type, wait } => (r.region.to_string(), start_type, wait),
        other => panic!("{other:?}"),
    }
}

#[test]
fn casstart_spellings() {
    let cases: &[(&[&str], StartType, u64)] = &[
        (&["/rREGION1", "/s:c"], StartType::Cold, 60),
        (&["/rREGION1", "/s:w"], StartType::Warm, 60),
        (&["/rREGION1", "/s:u", "/w120"], StartType::Upgrade, 120),
        (&["-rREGION1", "-s:U"], StartType::Upgrade, 60),
        (&["/RREGION1", "/S:W", "/W5"], StartType::Warm, 5),
        (
            &["/r", "REGION1", "/s", "w", "/w", "30"],
            StartType::Warm,
            30,
        ),
        (&["/r:REGION1", "/s", ":c"], StartType::Cold, 60),
        (&["/sw", "/rREGION1"], StartType::Warm, 60),
        (&["/rREGION1", "/s:Warm"], StartType::Warm, 60),
    ];
    for (args, st, secs) in cases {
        let (r, t, w) = start(args);
        assert_eq!(r, "REGION1", "{args:?}");
        assert_eq!(t, *st, "{args:?}");
        assert_eq!(w, Duration::from_secs(*secs), "{args:?}");
    }
}

#[test]
fn casstop_and_casstate_spellings() {
    let r = p(Tool::Casstop, &["-rREGION1"]).unwrap();
    assert_eq!(r.action, Action::Stop { force: false });
    for args in [&["/rREGION1", "/f"][..], &["/F", "-r", "REGION1"]] {
        let r = p(Tool::Casstop, args).unwrap();
        assert_eq!(r.action, Action::Stop { force: true }, "{args:?}");
    }
    assert_eq!(
        p(Tool::Casstate, &["/rREGION1"]).unwrap().action,
        Action::State { json: false }
    );
    for args in [
        &["/rREGION1", "/j"][..],
        &["--json", "-rREGION1"],
        &["/J", "/rR"],
    ] {
        assert_eq!(
            p(Tool::Casstate, args).unwrap().action,
            Action::State { json: true },
            "{args:?}"
        );
    }
}

#[test]
fn es_pac_names_the_pac() {
    let env = |k: &str| (k == "ES_PAC").then(|| "MyPAC".to_string());
    let r = parse(Tool::Casstop, &["/rR1"], &env).unwrap();
    assert_eq!(r.pac.as_ref().map(|p| p.as_str()), Some("MyPAC"));
    assert_eq!(p(Tool::Casstop, &["/rR1"]).unwrap().pac, None);
    let empty = |_: &str| Some(String::new());
    assert_eq!(parse(Tool::Casstop, &["/rR1"], &empty).unwrap().pac, None);
    let bad = |k: &str| (k == "ES_PAC").then(|| "NINECHARS".to_string());
    let e = parse(Tool::Casstate, &["/rR1"], &bad).unwrap_err();
    assert!(e.contains("ES_PAC=NINECHARS"), "{e}");
}

#[test]
fn refusals() {
    let cases: &[(Tool, &[&str], &str)] = &[
        (Tool::Casstart, &[], "no region"),
        (Tool::Casstart, &["/rR1"], "no start type"),
        (Tool::Casstart, &["/s:w"], "no region"),
        (Tool::Casstart, &["/rR1", "/s:x"], "unknown start type /s:x"),
        (Tool::Casstart, &["/rR1", "/s:w", "/w0"], "invalid wait"),
        (Tool::Casstart, &["/rR1", "/s:w", "/w+5"], "invalid wait"),
        (Tool::Casstart, &["/rR1", "/s:w", "/w1m"], "invalid wait"),
        (Tool::Casstart, &["/rR1", "/s:w", "/w86401"], "invalid wait"),
        (Tool::Casstart, &["/rR1", "/s:w", "/f"], "unknown option"),
        (Tool::Casstart, &["/rR1", "/rR2", "/s:w"], "given twice"),
        (Tool::Casstart, &["/r", "/s:w"], "/r needs a value"),
        (Tool::Casstart, &["/rR1", "/s"], "/s needs a value"),
        (Tool::Casstart, &["/rR1", "/s:"], "/s needs a value"),
        (Tool::Casstart, &["REGION1"], "unexpected argument"),
        (Tool::Casstart, &["/rR1", "/s:w", ""], "unexpected argument"),
        (
            Tool::Casstart,
            &["/rR1", "/s:w", "-"],
            "unexpected argument",
        ),
        (
            Tool::Casstart,
            &["/rR1", "/s:w", "--json"],
            "unknown option",
        ),
        (Tool::Casstart, &["/rBAD/NAME", "/s:w"], "/rBAD/NAME"),
        (Tool::Casstop, &["/rR1", "/fx"], "takes no value"),
        (Tool::Casstop, &["/rR1", "/f", "/f"], "given twice"),
        (Tool::Casstop, &["/rR1", "/s:w"], "unknown option"),
        (Tool::Casstop, &["/rR1", "/j"], "unknown option"),
        (Tool::Casstate, &["/rR1", "/j", "--json"], "given twice"),
        (Tool::Casstate, &["/rR1", "--frob"], "unknown option"),
        (Tool::Casstate, &["/r", "-x"], "/r needs a value"),
    ];
    for (tool, args, needle) in cases {
        let e = p(*tool, args).unwrap_err();
        assert!(e.contains(needle), "{tool} {args:?}: {e}");
    }
}

#[test]
fn translates_into_pacup_region_commands() {
    let r = p(Tool::Casstart, &["/rREGION1", "/s:u", "/w90"]).unwrap();
    let argv = r.pacup_argv("MyPAC", "REGION1").unwrap();
    let cli = Cli::try_parse_from(&argv).unwrap();
    match cli.command {
        Command::Region(RegionCommand::Start {
            region,
            pac,
            start_type,
            wait,
        }) => {
            assert_eq!(region.as_str(), "REGION1");
            assert_eq!(pac.unwrap().as_str(), "MyPAC");
            assert_eq!(StartType::from(start_type), StartType::Upgrade);
            assert_eq!(wait, Duration::from_secs(90));
        }
        other => panic!("{other:?}"),
    }
    for (args, want_force) in [(&["/rR1"][..], false), (&["/rR1", "/f"], true)] {
        let argv = p(Tool::Casstop, args)
            .unwrap()
            .pacup_argv("P", "R1")
            .unwrap();
        match Cli::try_parse_from(&argv).unwrap().command {
            Command::Region(RegionCommand::Stop { force, region, .. }) => {
                assert_eq!(force, want_force);
                assert_eq!(region.as_str(), "R1");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(p(Tool::Casstate, &["/rR1"])
        .unwrap()
        .pacup_argv("P", "R1")
        .is_none());
    // A region whose name looks like an option stays the region (found by the property
    // test below: `/r-A` once became `pacup region stop -A`).
    for tool in [Tool::Casstart, Tool::Casstop] {
        let args: &[&str] = match tool {
            Tool::Casstart => &["/r-A", "/s:w"],
            _ => &["/r-A"],
        };
        if let Ok(r) = p(tool, args) {
            let argv = r.pacup_argv("P", r.region.as_str()).unwrap();
            match Cli::try_parse_from(&argv).unwrap().command {
                Command::Region(RegionCommand::Start { region, .. })
                | Command::Region(RegionCommand::Stop { region, .. }) => {
                    assert_eq!(region.as_str(), "-A")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

fn region(name: &str, host: &str, state: &str, alive: bool) -> RegionInfo {
    RegionInfo {
        name: name.into(),
        host: host.into(),
        product_version: "1.0.0".into(),
        os: "linux-6".into(),
        bitness: 64,
        store: if state == "stopped" { "" } else { "1.0.0" }.into(),
        state: state.into(),
        start_type: "warm".into(),
        listener: if state == "active" { "on" } else { "off" }.into(),
        endpoint: String::new(),
        clients: 3,
        jobs_done: 0,
        alive,
        heartbeat_age_ms: Some(4200),
        liveness: Default::default(),
    }
}

fn host(name: &str, regions: &[&str], alive: bool) -> HostInfo {
    HostInfo {
        name: name.into(),
        product_version: "1.0.0".into(),
        os: "linux-6".into(),
        bitness: 64,
        regions: regions.iter().map(|r| r.to_string()).collect(),
        alive,
        checks: None,
    }
}

fn snap(regions: Vec<RegionInfo>, hosts: Vec<HostInfo>) -> Snapshot {
    Snapshot {
        pac: "MyPAC".into(),
        exists: true,
        gen: 1,
        epoch: 0,
        created_at_ms: 0,
        resetting_since_ms: None,
        stores: Vec::new(),
        regions,
        hosts,
        removing: Vec::new(),
    }
}

#[test]
fn state_mapping() {
    let s = snap(
        vec![
            region("RUN", "h1", "active", true),
            region("STOPPING", "h1", "stopping", true),
            region("STOPPED", "h1", "stopped", false),
            region("CRASHED", "h1", "active", false),
            region("CUTOFF", "h2", "active", false),
            region("ODD", "h1", "resetting", true),
        ],
        vec![
            host(
                "h1",
                &["RUN", "STOPPING", "STOPPED", "CRASHED", "ODD", "NEW"],
                true,
            ),
            host("h2", &["CUTOFF", "GONE"], false),
        ],
    );
    let cases = [
        ("RUN", State::Running, 3, true, Some("active")),
        ("STOPPING", State::Stopping, 3, false, Some("stopping")),
        ("STOPPED", State::Stopped, 0, false, Some("stopped")),
        ("CRASHED", State::Stopped, 0, false, Some("dead")),
        ("CUTOFF", State::Unknown, 0, false, Some("dead")),
        ("ODD", State::Unknown, 3, false, Some("resetting")),
        ("NEW", State::Stopped, 0, false, None),
        ("GONE", State::Unknown, 0, false, None),
    ];
    for (name, state, clients, listener, record) in cases {
        let pr = probe(&s, name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(pr.state, state, "{name}: {pr:?}");
        assert_eq!(pr.clients, clients, "{name}: {pr:?}");
        assert_eq!(pr.listener_on, listener, "{name}: {pr:?}");
        assert_eq!(pr.record.as_deref(), record, "{name}: {pr:?}");
        assert!(pr.line().starts_with(&format!("{} (", state.as_str())));
        let j: serde_json::Value = serde_json::from_str(&pr.json()).unwrap();
        assert!(pr.json().starts_with("{\"state\":"), "{}", pr.json());
        assert_eq!(j["state"], state.as_str());
        assert_eq!(j["clients"], clients);
        assert_eq!(j["listener"], if listener { "on" } else { "off" });
    }
    assert!(probe(&s, "NOSUCH").is_none());
    assert!(probe(&s, "CRASHED").unwrap().detail.contains("dead on h1"));
}

#[test]
fn region_names_match_ignoring_case_when_unambiguous() {
    let s = snap(
        vec![region("REGION1", "h1", "active", true)],
        vec![host("h1", &["REGION1", "Twin", "TWIN"], true)],
    );
    assert_eq!(
        resolve_region(&s, "REGION1").unwrap().as_deref(),
        Some("REGION1")
    );
    assert_eq!(
        resolve_region(&s, "region1").unwrap().as_deref(),
        Some("REGION1")
    );
    assert_eq!(resolve_region(&s, "Twin").unwrap().as_deref(), Some("Twin"));
    let e = resolve_region(&s, "twin").unwrap_err();
    assert!(e.contains("Twin, TWIN") || e.contains("TWIN, Twin"), "{e}");
    assert_eq!(resolve_region(&s, "OTHER").unwrap(), None);
}

proptest::proptest! {
    #[test]
    fn never_panics(args in proptest::collection::vec(".{0,16}", 0..6), which in 0usize..3) {
        let tool = [Tool::Casstart, Tool::Casstop, Tool::Casstate][which];
        let _ = parse(tool, &args, &no_env);
    }

    #[test]
    fn option_shaped_noise_translates_or_is_refused(
        args in proptest::collection::vec("[-/][rRsSwWfFjJx]?:?[a-zA-Z0-9_:-]{0,8}", 0..5),
        which in 0usize..3,
    ) {
        let tool = [Tool::Casstart, Tool::Casstop, Tool::Casstate][which];
        if let Ok(r) = parse(tool, &args, &no_env) {
            if let Some(argv) = r.pacup_argv("P", r.region.as_str()) {
                // Whatever parses is a valid pacup command line.
                proptest::prop_assert!(Cli::try_parse_from(&argv).is_ok(), "{argv:?}");
            }
        }
    }
}
