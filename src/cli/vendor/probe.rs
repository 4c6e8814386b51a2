//! `casstate`: a region's state in the vendor's words, from pacup's records.
//!
//! | pacup's records | state | listener, clients |
//! |---|---|---|
//! | record `active`, heartbeat live | `running` | from the record |
//! | record `stopping`, heartbeat live | `stopping` | from the record |
//! | record `stopped` | `stopped` | off, 0 |
//! | no record, listed by a live host agent (never started) | `stopped` | off, 0 |
//! | heartbeat expired (pacup's `dead`), its host agent live | `stopped` | off, 0 |
//! | heartbeat expired, its host agent silent too | `unknown` | off, 0 |
//! | no record, its host agent silent | `unknown` | off, 0 |
//! | any other recorded state with a live heartbeat | `unknown` | from the record |
//!
//! A dead region whose agent still heartbeats has crashed or given up its store: nothing
//! runs it. When the agent is silent as well the host is down or cut off from the PSOR,
//! and the region may still run on the far side, so the answer is `unknown`. pacup's
//! stand-ins never report `starting`: a start is one atomic join, from stopped to
//! running.

use crate::psor::{RegionInfo, Snapshot};
use serde::Serialize;

/// A state word of the `region_state` contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serving (its listener may be off).
    Running,
    /// Stopped, or not running at all.
    Stopped,
    /// Being started (never reported for pacup's regions; see the module docs).
    Starting,
    /// Being stopped: listener off, clients draining, the job in hand finishing.
    Stopping,
    /// The records do not tell.
    Unknown,
}

impl State {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Stopping => "stopping",
            State::Unknown => "unknown",
        }
    }
}

/// What `casstate` reports about one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// PAC.
    pub pac: String,
    /// Region (as named in the PAC).
    pub region: String,
    /// The state word.
    pub state: State,
    /// Open client connections (0 unless running or stopping).
    pub clients: u64,
    /// Whether the listener accepts clients (only while running or stopping).
    pub listener_on: bool,
    /// Its host, when known.
    pub host: Option<String>,
    /// pacup's own view (`active`, `stopping`, `stopped`, `dead`), when it has a record.
    pub record: Option<String>,
    /// One line for a person: why this state.
    pub detail: String,
}

/// The names a PAC knows as regions: records and host agents' lists, sorted, once each.
pub fn known_regions(snap: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = snap
        .regions
        .iter()
        .map(|r| r.name.clone())
        .chain(snap.hosts.iter().flat_map(|h| h.regions.iter().cloned()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The PAC's region that `typed` names: itself when the PAC knows it, else the one
/// region that matches it ignoring case (the vendor's names are case-insensitive).
/// `Ok(None)` when nothing matches; an error naming the candidates when several do.
pub fn resolve_region(snap: &Snapshot, typed: &str) -> Result<Option<String>, String> {
    let known = known_regions(snap);
    if known.iter().any(|k| k == typed) {
        return Ok(Some(typed.to_string()));
    }
    let close: Vec<&String> = known
        .iter()
        .filter(|k| k.eq_ignore_ascii_case(typed))
        .collect();
    match close.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        many => Err(format!(
            "region {typed} matches several regions of PAC {} that differ only in case ({}); \
             give the exact name",
            snap.pac,
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn host_alive(snap: &Snapshot, host: &str) -> bool {
    snap.hosts.iter().any(|h| h.name == host && h.alive)
}

fn age(ms: Option<u64>) -> String {
    match ms {
        Some(m) => format!(" {}s ago", m / 1000),
        None => String::new(),
    }
}

fn from_record(snap: &Snapshot, r: &RegionInfo) -> (State, String) {
    let host = if r.host.is_empty() { "?" } else { &r.host };
    let served = |what: &str| {
        format!(
            "{what} on {host} in store {}, product {}, listener {}, {} client(s)",
            r.store,
            r.product_version,
            if r.listener == "on" { "on" } else { "off" },
            r.clients
        )
    };
    if r.state == "stopped" {
        return (State::Stopped, format!("stopped, last on {host}"));
    }
    if !r.alive {
        let why = format!(
            "recorded {} but its heartbeat expired{}",
            r.state,
            age(r.heartbeat_age_ms)
        );
        return if host_alive(snap, host) {
            (
                State::Stopped,
                format!("dead on {host}: {why}; its host agent runs, the region does not"),
            )
        } else {
            (
                State::Unknown,
                format!("dead on {host}: {why}, and the host agent of {host} is silent too (down or cut off from the PSOR)"),
            )
        };
    }
    match r.state.as_str() {
        "active" => (State::Running, served("running")),
        "stopping" => (State::Stopping, served("stopping")),
        other => (
            State::Unknown,
            format!("alive on {host} with recorded state {other:?}"),
        ),
    }
}

/// The state of `region` (as resolved by [`resolve_region`]); `None` when the PAC knows
/// no such region (no record, no host agent lists it).
pub fn probe(snap: &Snapshot, region: &str) -> Option<Probe> {
    let record = snap.region(region);
    let lister = snap
        .hosts
        .iter()
        .filter(|h| h.regions.iter().any(|r| r == region))
        .max_by_key(|h| h.alive);
    let (state, detail, host) = match (record, lister) {
        (Some(r), _) => {
            let (s, d) = from_record(snap, r);
            (s, d, Some(r.host.clone()).filter(|h| !h.is_empty()))
        }
        (None, Some(h)) if h.alive => (
            State::Stopped,
            format!("never started; host agent {} hosts it", h.name),
            Some(h.name.clone()),
        ),
        (None, Some(h)) => (
            State::Unknown,
            format!("no record; its host agent {} is silent", h.name),
            Some(h.name.clone()),
        ),
        (None, None) => return None,
    };
    let live = matches!(state, State::Running | State::Stopping | State::Unknown)
        && record.is_some_and(|r| r.alive);
    Some(Probe {
        pac: snap.pac.clone(),
        region: region.to_string(),
        state,
        clients: record.filter(|_| live).map_or(0, |r| r.clients),
        listener_on: live && record.is_some_and(|r| r.listener == "on"),
        host,
        record: record.map(|r| r.effective_state().to_string()),
        detail,
    })
}

impl Probe {
    /// The human line: the state word first.
    pub fn line(&self) -> String {
        format!("{} ({}: {})", self.state.as_str(), self.region, self.detail)
    }

    /// The `--json` object, the contract's fields first.
    pub fn json(&self) -> String {
        let j = ProbeJson {
            state: self.state.as_str(),
            clients: self.clients,
            listener: if self.listener_on { "on" } else { "off" },
            pac: &self.pac,
            region: &self.region,
            host: self.host.as_deref(),
            record: self.record.as_deref(),
            detail: &self.detail,
        };
        serde_json::to_string(&j).expect("serialisable")
    }
}

/// `casstate --json`, in this field order (a struct keeps it; a map would sort it).
#[derive(Serialize)]
struct ProbeJson<'a> {
    state: &'static str,
    clients: u64,
    listener: &'static str,
    pac: &'a str,
    region: &'a str,
    host: Option<&'a str>,
    record: Option<&'a str>,
    detail: &'a str,
}
