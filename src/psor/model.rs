//! The PSOR's data model: stores, regions, hosts and a snapshot of a PAC, as read from
//! Redis, plus the protocol values written into it (modes, start types).

use crate::names::Product;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A store's mode (docs/PSOR.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Regions are up but take no batch work.
    Upgrade,
    /// Regions take batch work.
    Running,
    /// Regions finish the job in hand and take no new one.
    Quiesce,
}

impl Mode {
    /// The name stored in Redis and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Upgrade => "upgrade",
            Mode::Running => "running",
            Mode::Quiesce => "quiesce",
        }
    }

    /// Parses a stored mode; unknown text is `None`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "upgrade" => Some(Mode::Upgrade),
            "running" => Some(Mode::Running),
            "quiesce" => Some(Mode::Quiesce),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One store of a PAC.
#[derive(Debug, Clone, Serialize)]
pub struct StoreInfo {
    /// Product version of the store (also its key component).
    pub version: String,
    /// Version every member runs after a compatible upgrade ("" until one finished).
    pub running_version: String,
    /// OS of the product that created it.
    pub os: String,
    /// Bitness of the product that created it.
    pub bitness: u8,
    /// Current mode.
    pub mode: Mode,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
    /// The region that created it.
    pub created_by: String,
    /// Regions recorded as members (live or not).
    pub members: Vec<String>,
    /// Members whose heartbeat is current.
    pub live_members: Vec<String>,
}

impl StoreInfo {
    /// The store's product, for compatibility checks.
    pub fn product(&self) -> Option<Product> {
        let v = if self.running_version.is_empty() {
            &self.version
        } else {
            &self.running_version
        };
        Some(Product {
            version: semver::Version::parse(v).ok()?,
            os: self.os.clone(),
            bitness: self.bitness,
        })
    }
}

/// One region record.
#[derive(Debug, Clone, Serialize)]
pub struct RegionInfo {
    /// Region name.
    pub name: String,
    /// Host it runs (or last ran) on.
    pub host: String,
    /// Product version it runs.
    pub product_version: String,
    /// Its OS.
    pub os: String,
    /// Its bitness.
    pub bitness: u8,
    /// Store it is a member of (empty once stopped).
    pub store: String,
    /// Recorded state (`active`, `stopping`, `stopped`, ...); see `alive` for liveness.
    pub state: String,
    /// Effective start type of its last start.
    pub start_type: String,
    /// Client listener `on`/`off`.
    pub listener: String,
    /// Client endpoint (`host:port`) when it has one.
    pub endpoint: String,
    /// Open client connections.
    pub clients: u64,
    /// Batch jobs completed.
    pub jobs_done: u64,
    /// Whether its heartbeat key exists.
    pub alive: bool,
    /// Milliseconds since its last heartbeat, when known.
    pub heartbeat_age_ms: Option<u64>,
    /// How it heartbeats (not part of any JSON document).
    #[serde(skip)]
    pub liveness: Liveness,
}

/// How a region heartbeats, as its record says: what tells a region that heartbeats now
/// from one whose liveness key merely has not expired yet (it died less than a TTL ago).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Heartbeats so far (a counter each heartbeat increments: seeing it advance needs no
    /// clock).
    pub beats: u64,
    /// Its heartbeat interval in ms (0: recorded by an earlier version).
    pub interval_ms: u64,
    /// Its liveness TTL in ms (0: recorded by an earlier version).
    pub ttl_ms: u64,
}

/// Scheduling slack on top of two heartbeat intervals before a heartbeat counts as late.
pub const FRESH_SLACK_MS: u64 = 250;

impl RegionInfo {
    /// Heartbeating now, not merely inside its TTL: alive, and its last heartbeat (aged on
    /// the PSOR's clock, so no two hosts' clocks are compared) younger than about two
    /// heartbeat intervals. A record of an earlier version (no interval) falls back to
    /// the TTL.
    pub fn fresh(&self) -> bool {
        match (self.liveness.interval_ms, self.heartbeat_age_ms) {
            _ if !self.alive => false,
            (0, _) | (_, None) => true,
            (i, Some(age)) => age <= 2 * i + FRESH_SLACK_MS,
        }
    }

    /// The state to show: a region recorded active whose heartbeat expired is `dead`.
    pub fn effective_state(&self) -> &str {
        if !self.alive && self.state != "stopped" {
            "dead"
        } else {
            &self.state
        }
    }
}

/// One host agent record.
#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    /// Host name.
    pub name: String,
    /// Installed product version.
    pub product_version: String,
    /// OS.
    pub os: String,
    /// Bitness.
    pub bitness: u8,
    /// Regions it hosts.
    pub regions: Vec<String>,
    /// Whether its liveness key exists.
    pub alive: bool,
    /// Its host checks as it last measured them (agents of earlier versions: none).
    pub checks: Option<crate::hostcheck::Measured>,
}

/// A consistent-enough picture of a PAC (two pipelined round trips).
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// PAC name.
    pub pac: String,
    /// Whether the PAC record exists.
    pub exists: bool,
    /// Structural generation (bumped by every store or mode change); decisions taken
    /// from this snapshot commit only if it is unchanged.
    pub gen: u64,
    /// Fencing epoch of the coordinator lease.
    pub epoch: u64,
    /// When the PAC was (re)initialised, ms since the epoch.
    pub created_at_ms: u64,
    /// Set (ms since the epoch) between a cold start's reset and its store's creation.
    pub resetting_since_ms: Option<u64>,
    /// Stores, oldest first.
    pub stores: Vec<StoreInfo>,
    /// Region records, by name.
    pub regions: Vec<RegionInfo>,
    /// Host agent records, by name.
    pub hosts: Vec<HostInfo>,
    /// Detached stores whose keys are still being deleted.
    pub removing: Vec<String>,
}

impl Snapshot {
    /// The newest store.
    pub fn newest(&self) -> Option<&StoreInfo> {
        self.stores.last()
    }

    /// The newest store in mode `running`.
    pub fn newest_running(&self) -> Option<&StoreInfo> {
        self.stores.iter().rev().find(|s| s.mode == Mode::Running)
    }

    /// The store in mode `upgrade`, if any (there is at most one).
    pub fn upgrade_store(&self) -> Option<&StoreInfo> {
        self.stores.iter().rev().find(|s| s.mode == Mode::Upgrade)
    }

    /// A store by version.
    pub fn store(&self, v: &str) -> Option<&StoreInfo> {
        self.stores.iter().find(|s| s.version == v)
    }

    /// Live regions other than `except`.
    pub fn live_regions_except<'a>(
        &'a self,
        except: &'a str,
    ) -> impl Iterator<Item = &'a RegionInfo> {
        self.regions
            .iter()
            .filter(move |r| r.alive && r.name != except)
    }

    /// A region by name.
    pub fn region(&self, name: &str) -> Option<&RegionInfo> {
        self.regions.iter().find(|r| r.name == name)
    }
}

/// Milliseconds since the Unix epoch (local clock; used only for display and ages).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Formats ms-since-epoch as RFC 3339 (UTC).
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How a region asks to start (`casstart /s:c|w|u`): written into region records and
/// control commands, so it is a value of the protocol, not of the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartType {
    /// Wipe and initialise the PAC (becomes warm if another region is alive).
    Cold,
    /// Join the running PAC.
    Warm,
    /// Start a new store for an incompatible product version beside the old one.
    Upgrade,
}

impl StartType {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StartType::Cold => "cold",
            StartType::Warm => "warm",
            StartType::Upgrade => "upgrade",
        }
    }

    /// The vendor's one-letter form (`casstart /s:u`).
    pub fn letter(self) -> char {
        match self {
            StartType::Cold => 'c',
            StartType::Warm => 'w',
            StartType::Upgrade => 'u',
        }
    }
}

impl fmt::Display for StartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store's version and mode, for `pac list`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreSummary {
    /// Store version.
    pub version: String,
    /// Its mode.
    pub mode: Mode,
}

/// Summary of one PAC for `pac list`.
#[derive(Debug, Clone, Serialize)]
pub struct PacSummary {
    /// PAC name.
    pub pac: String,
    /// Stores with their modes, oldest first.
    pub stores: Vec<StoreSummary>,
    /// Live regions.
    pub live_regions: usize,
}

/// What `remove-old` did.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveReport {
    /// Stores detached now or by an earlier interrupted run, now fully deleted.
    pub stores_removed: Vec<String>,
    /// Keys deleted.
    pub keys_removed: u64,
}
