//! What the command driver's read-only templates print, parsed into types
//! (docs/plan.md#what-region_state-and-store_state-print):
//!
//! - `region_state`: a first word among `running`, `stopped`, `starting`, `stopping`,
//!   `unknown` (any case; the rest of the line is for people), or one JSON object
//!   `{"state": ..., "clients": N, "listener": "on"|"off"}` whose `clients` and
//!   `listener` may be left out (other fields are ignored);
//! - `store_state`: the PAC's stores, one line each `<version> <mode>` (mode `running`,
//!   `quiesce` or `upgrade`), or a JSON object with `stores: [{"version", "mode"}]` (what
//!   `pacup --json pac status P` prints).

use serde::Deserialize;
use std::fmt;

/// A region's state as its `region_state` template reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionState {
    /// Serving (its listener may be off).
    Running,
    /// Not running.
    Stopped,
    /// Being started.
    Starting,
    /// Being stopped.
    Stopping,
    /// The probe cannot tell (host cut off, region in an odd state).
    Unknown,
}

impl RegionState {
    /// The contract's word.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionState::Running => "running",
            RegionState::Stopped => "stopped",
            RegionState::Starting => "starting",
            RegionState::Stopping => "stopping",
            RegionState::Unknown => "unknown",
        }
    }

    fn from_word(w: &str) -> Option<RegionState> {
        Some(match w.to_ascii_lowercase().as_str() {
            "running" => RegionState::Running,
            "stopped" => RegionState::Stopped,
            "starting" => RegionState::Starting,
            "stopping" => RegionState::Stopping,
            "unknown" => RegionState::Unknown,
            _ => return None,
        })
    }
}

impl fmt::Display for RegionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a region's listener accepts clients, when the probe says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    /// Accepting clients.
    On,
    /// Not accepting clients.
    Off,
}

/// One `region_state` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The state.
    pub state: RegionState,
    /// Open client connections, when the probe gives them.
    pub clients: Option<u64>,
    /// The listener, when the probe gives it.
    pub listener: Option<Listener>,
}

#[derive(Deserialize)]
struct ObservedJson {
    state: RegionState,
    #[serde(default)]
    clients: Option<u64>,
    #[serde(default)]
    listener: Option<Listener>,
}

const EXPECTED: &str = "a first word among running, stopped, starting, stopping, unknown, or \
                        a JSON object {\"state\": ..., \"clients\": N, \"listener\": \"on|off\"}";

/// Parses what a `region_state` template printed; `Err` says what was wrong.
pub fn parse_region_state(stdout: &str) -> Result<Observed, String> {
    let text = stdout.trim();
    if text.starts_with('{') {
        let j: ObservedJson = serde_json::from_str(text)
            .map_err(|e| format!("region_state printed {text:?}: {e}; expected {EXPECTED}"))?;
        return Ok(Observed {
            state: j.state,
            clients: j.clients,
            listener: j.listener,
        });
    }
    let word = text.split_whitespace().next().unwrap_or("");
    RegionState::from_word(word)
        .map(|state| Observed {
            state,
            clients: None,
            listener: None,
        })
        .ok_or_else(|| format!("region_state printed {text:?}; expected {EXPECTED}"))
}

/// A store's mode as `store_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// Takes batch work.
    Running,
    /// Takes no new batch work.
    Quiesce,
    /// Created by an upgrade start, not yet running.
    Upgrade,
}

/// One store of a `store_state` answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoreSeen {
    /// Its version.
    pub version: String,
    /// Its mode.
    pub mode: StoreMode,
}

#[derive(Deserialize)]
struct StoresJson {
    stores: Vec<StoreSeen>,
}

/// Parses what a `store_state` template printed.
pub fn parse_store_state(stdout: &str) -> Result<Vec<StoreSeen>, String> {
    let text = stdout.trim();
    let expected = "one line `<version> <mode>` per store (mode running, quiesce or upgrade), \
                    or a JSON object {\"stores\": [{\"version\": ..., \"mode\": ...}]}";
    if text.starts_with('{') {
        return serde_json::from_str::<StoresJson>(text)
            .map(|j| j.stores)
            .map_err(|e| format!("store_state printed {text:?}: {e}; expected {expected}"));
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            let (Some(v), Some(m)) = (w.next(), w.next()) else {
                return Err(format!("store_state line {l:?}; expected {expected}"));
            };
            let mode = serde_json::from_value(serde_json::Value::String(m.to_ascii_lowercase()))
                .map_err(|_| format!("store_state line {l:?}; expected {expected}"))?;
            Ok(StoreSeen {
                version: v.to_string(),
                mode,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_state_words_and_json() {
        let o = parse_region_state("running (REGION1: running on host1 ...)\n").unwrap();
        assert_eq!(
            o,
            Observed {
                state: RegionState::Running,
                clients: None,
                listener: None
            }
        );
        assert_eq!(
            parse_region_state("STOPPED").unwrap().state,
            RegionState::Stopped
        );
        let o = parse_region_state(
            r#"{"state":"stopping","clients":3,"listener":"off","pac":"MyPAC","host":null}"#,
        )
        .unwrap();
        assert_eq!(o.state, RegionState::Stopping);
        assert_eq!((o.clients, o.listener), (Some(3), Some(Listener::Off)));
        let o = parse_region_state(r#"{"state":"starting"}"#).unwrap();
        assert_eq!((o.state, o.clients), (RegionState::Starting, None));
        for bad in ["", "up", "{\"state\":\"up\"}", "{\"clients\":1}", "{"] {
            let e = parse_region_state(bad).unwrap_err();
            assert!(e.contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn store_state_lines_and_json() {
        let s = parse_store_state("1.0.0 quiesce\n2.0.0 running\n").unwrap();
        assert_eq!(s[1].version, "2.0.0");
        assert_eq!(
            (s[0].mode, s[1].mode),
            (StoreMode::Quiesce, StoreMode::Running)
        );
        let s = parse_store_state(
            r#"{"pac":"MyPAC","stores":[{"version":"2.0.0","mode":"upgrade","members":[]}]}"#,
        )
        .unwrap();
        assert_eq!(s[0].mode, StoreMode::Upgrade);
        assert!(parse_store_state("2.0.0").is_err());
        assert!(parse_store_state("2.0.0 sleeping").is_err());
    }
}
