use super::*;
use std::collections::BTreeSet;

const DOC: &str = include_str!("../../docs/rollout.md");

/// The transition table of docs/rollout.md: every `| from | trigger | to | ... |` row
/// under the "Transitions" heading, with a `from` cell of one or more backticked states
/// (or `(none)`).
fn documented() -> BTreeSet<(Option<RolloutState>, Trigger, RolloutState)> {
    let section = DOC
        .split("\n### Transitions\n")
        .nth(1)
        .expect("docs/rollout.md has a Transitions section");
    let section = section.split("\n## ").next().unwrap();
    let triggers = [
        Trigger::Run,
        Trigger::Finish,
        Trigger::Pause,
        Trigger::Hold,
        Trigger::Resume,
        Trigger::Abort,
        Trigger::Rollback,
        Trigger::Fail,
    ];
    let state = |s: &str| {
        RolloutState::parse(s.trim().trim_matches('`'))
            .unwrap_or_else(|| panic!("unknown state {s:?} in the transition table"))
    };
    let mut out = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 || cells[0] == "from" || cells[0].starts_with("---") {
            continue;
        }
        let t = cells[1].trim_matches('`');
        let trigger = *triggers
            .iter()
            .find(|x| x.name() == t)
            .unwrap_or_else(|| panic!("unknown trigger {t:?} in the transition table"));
        let to = state(cells[2]);
        for from in cells[0].split(',') {
            let from = match from.trim() {
                "(none)" => None,
                s => Some(state(s)),
            };
            assert!(out.insert((from, trigger, to)), "row listed twice: {line}");
        }
    }
    out
}

#[test]
fn the_transition_table_is_the_documented_one() {
    let encoded: BTreeSet<_> = TRANSITIONS.iter().copied().collect();
    assert_eq!(
        encoded.len(),
        TRANSITIONS.len(),
        "a transition is encoded twice"
    );
    let doc = documented();
    let missing: Vec<_> = encoded.difference(&doc).collect();
    let extra: Vec<_> = doc.difference(&encoded).collect();
    assert!(
        missing.is_empty(),
        "docs/rollout.md lacks transitions {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "docs/rollout.md has transitions the code refuses {extra:?}"
    );
}

#[test]
fn walking_the_table_reaches_every_state_and_only_legal_moves_happen() {
    // From no rollout, every state is reachable by the table's triggers.
    let mut seen: BTreeSet<Option<RolloutState>> = [None].into();
    let mut frontier = vec![None];
    while let Some(s) = frontier.pop() {
        for (from, t, to) in TRANSITIONS {
            if *from == s {
                assert_eq!(RolloutState::next(s, *t), Some(*to));
                if seen.insert(Some(*to)) {
                    frontier.push(Some(*to));
                }
            }
        }
    }
    for s in RolloutState::ALL {
        assert!(seen.contains(&Some(s)), "{s} is unreachable");
    }
    // What the commands rely on.
    use RolloutState::*;
    assert_eq!(RolloutState::next(Some(Done), Trigger::Resume), None);
    assert_eq!(
        RolloutState::next(Some(RolledBack), Trigger::Rollback),
        None
    );
    assert_eq!(RolloutState::next(Some(Done), Trigger::Rollback), None);
    assert_eq!(RolloutState::next(Some(Paused), Trigger::Run), None);
    assert_eq!(
        RolloutState::next(Some(Held), Trigger::Resume),
        Some(Running)
    );
    assert_eq!(
        RolloutState::next(Some(RollingBack), Trigger::Resume),
        Some(RollingBack)
    );
    assert_eq!(
        RolloutState::next(Some(Aborted), Trigger::Rollback),
        Some(RollingBack)
    );
    assert_eq!(
        RolloutState::next(Some(RollingBack), Trigger::Finish),
        Some(RolledBack)
    );
    for s in RolloutState::ALL {
        assert_eq!(
            s.is_active(),
            matches!(s, Running | Paused | Held | RollingBack)
        );
    }
}

fn hash(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_journal_of_the_previous_version_reads_back() {
    // Fields as the previous version wrote them (string map, no per-step entries).
    let plan = r#"{"pac":"MyPAC","target":{"version":"2.0.0"},"hosts":[{"name":"host1","regions":["REGION1"]},{"name":"host2","regions":["REGION2"]}],"strategy":"auto","waves":[["host1"],["host2"]],"mode_flip":"after_first_wave","drain_timeout":"30s","stop_timeout":"1m","health":{"min_healthy":"3s","deadline":"2m"},"progress_deadline":"10m","on_failure":"pause","hold_finalization":false,"driver":{"kind":"agent"}}"#;
    let steps = r#"[{"n":0,"action":"preflight","host":null,"region":null,"wave":null},{"n":1,"action":"listener_off","host":"host1","region":"REGION1","wave":null},{"n":2,"action":"health_gate","host":null,"region":null,"wave":0}]"#;
    let h = hash(&[
        ("id", "MyPAC-1a2b"),
        ("pac", "MyPAC"),
        ("plan", plan),
        ("process", "incompatible"),
        ("steps", steps),
        ("from_version", "1.0.0"),
        ("host_versions", r#"{"host1":"1.0.0","host2":"1.0.0"}"#),
        ("target", "2.0.0"),
        ("state", "paused"),
        ("next_step", "2"),
        ("failed_step", "2"),
        ("error", "step 2 (health_gate) failed"),
        ("seq", "9"),
        ("pause_requested", ""),
        ("released", ""),
        ("rollback_requested", ""),
        (
            "current",
            r#"{"n":2,"action":"health_gate","host":null,"region":null,"started_ms":1,"bound_ms":600000,"rollback":false}"#,
        ),
    ]);
    let j = Journal::decode(&h).unwrap();
    assert_eq!(j.state, Some(RolloutState::Paused));
    assert_eq!((j.next_step, j.failed_step, j.seq), (2, Some(2), 9));
    assert_eq!(j.steps.len(), 3);
    assert_eq!(j.step(2).unwrap().wave(), Some(0));
    assert!(j.rollback_steps.is_empty() && j.ended.is_empty());
    assert!(!j.pause_requested && !j.fast);
    assert_eq!(j.current.unwrap().last, None);
    assert_eq!(j.plan.unwrap().waves.len(), 2);
}

#[test]
fn what_cannot_be_understood_is_refused_naming_the_field() {
    let e = Journal::decode(&hash(&[("state", "failed")])).unwrap_err();
    assert!(e.to_string().contains("field state"), "{e}");
    assert!(e.to_string().contains("\"failed\""), "{e}");
    let e = Journal::decode(&hash(&[("steps", "[{\"n\": 1}]")])).unwrap_err();
    assert!(e.to_string().contains("field steps"), "{e}");
    assert_eq!(Journal::decode(&HashMap::new()).unwrap().state, None);
}

#[test]
fn per_step_entries_count_for_their_rollout_only() {
    let w = Write::new()
        .ended("MyPAC-2", 5, Ended::Done)
        .ended("MyPAC-2", 6, Ended::Skipped);
    let mut h: HashMap<String, String> = w.0.into_iter().collect();
    h.insert("ended:7".into(), "MyPAC-1 done".into());
    h.insert("id".into(), "MyPAC-2".into());
    let j = Journal::decode(&h).unwrap();
    assert_eq!(
        j.ended.into_iter().collect::<Vec<_>>(),
        [(5, Ended::Done), (6, Ended::Skipped)]
    );
}
