//! The stores' modes over time, replayed from the scripts' events.

use super::{Ev, Segment, StoreTrack};
use std::collections::BTreeMap;

/// A store change read from a script's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StoreChange {
    /// `pac init`: every store gone.
    Reset,
    /// Stores now in a mode (`None`: detached).
    Set(Vec<(String, Option<String>)>),
}

/// Parses the store changes the scripts write (`src/psor/scripts/`); rollout events
/// (which carry a rollout id) are not store changes.
pub(super) fn store_change(e: &Ev) -> Option<StoreChange> {
    if !e.rollout.is_empty() {
        return None;
    }
    let list = |s: &str| -> Vec<String> {
        s.split(", ")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
            .collect()
    };
    let d = e.detail.as_str();
    let set = |vs: Vec<String>, m: Option<&str>| {
        StoreChange::Set(vs.into_iter().map(|v| (v, m.map(String::from))).collect())
    };
    match e.action.as_str() {
        "init" => Some(StoreChange::Reset),
        "store_created" => {
            let (v, m) = d.strip_prefix("store ")?.split_once(" created in mode ")?;
            Some(set(vec![v.to_string()], Some(m)))
        }
        "set_mode_running" | "set_mode_quiesce" => {
            let (vs, m) = d.strip_prefix("stores ")?.rsplit_once(" now ")?;
            Some(set(list(vs), Some(m)))
        }
        "remove_old" => Some(set(list(d.strip_prefix("detached stores ")?), None)),
        "rollback" => {
            if let Some(v) = d.strip_prefix("detached store ") {
                Some(set(vec![v.to_string()], None))
            } else {
                let v = d.strip_prefix("store ")?.strip_suffix(" running again")?;
                Some(set(vec![v.to_string()], Some("running")))
            }
        }
        _ => None,
    }
}

/// The stores' modes in `[t0, t1]`, replaying every store change up to `t1`; the
/// rollout's old store counts as running from `t0` when no change says otherwise
/// (the stream may have been trimmed past its creation).
pub(super) fn store_tracks(events: &[Ev], from: &str, t0: u64, t1: u64) -> Vec<StoreTrack> {
    let mut tracks: Vec<StoreTrack> = Vec::new();
    let mut open: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let close = |tracks: &mut Vec<StoreTrack>, v: &str, (mode, since): (String, u64), at: u64| {
        if at <= t0 {
            return;
        }
        let seg = Segment {
            start_ms: since.max(t0),
            end_ms: at.min(t1),
            mode,
        };
        match tracks.iter_mut().find(|t| t.version == v) {
            Some(t) => t.segments.push(seg),
            None => tracks.push(StoreTrack {
                version: v.to_string(),
                segments: vec![seg],
            }),
        }
    };
    let mut seeded = false;
    for e in events.iter().filter(|e| e.ts_ms <= t1) {
        if !seeded && e.ts_ms >= t0 {
            seeded = true;
            if !from.is_empty() && !open.contains_key(from) {
                open.insert(from.to_string(), ("running".into(), t0));
            }
        }
        match store_change(e) {
            Some(StoreChange::Reset) => {
                for (v, s) in std::mem::take(&mut open) {
                    close(&mut tracks, &v, s, e.ts_ms);
                }
            }
            Some(StoreChange::Set(changes)) => {
                for (v, mode) in changes {
                    if let Some(s) = open.remove(&v) {
                        if mode.as_deref() == Some(s.0.as_str()) {
                            open.insert(v, s);
                            continue;
                        }
                        close(&mut tracks, &v, s, e.ts_ms);
                    }
                    if let Some(m) = mode {
                        open.insert(v, (m, e.ts_ms));
                    }
                }
            }
            None => {}
        }
    }
    if !seeded && !from.is_empty() && !open.contains_key(from) {
        open.insert(from.to_string(), ("running".into(), t0));
    }
    // Stores still in a mode at the end, in the order they got it.
    let mut rest: Vec<(String, (String, u64))> = open.into_iter().collect();
    rest.sort_by_key(|(_, (_, since))| *since);
    for (v, s) in rest {
        close(&mut tracks, &v, s, t1);
    }
    // Oldest first: in the order the stores were first seen in a mode.
    tracks.sort_by_key(|t| t.segments.first().map(|s| s.start_ms));
    tracks
}
