//! The rollout plan file (docs/plan.md), parsed strictly: unknown fields, unknown or
//! duplicate hosts and regions, empty waves and bad durations are refused (exit 2)
//! before anything is written.

use crate::error::{Error, Result};
use crate::names::{HostName, PacName, RegionName};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

mod safety;
pub use safety::{BackupSpec, HostChecks, Monitor};

/// Durations in plan files are written `500ms`, `5s`, `2m`.
mod dur {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::names::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        crate::names::parse_duration("duration", &s).map_err(serde::de::Error::custom)
    }
}

fn d(secs: u64) -> Duration {
    Duration::from_secs(secs)
}
fn d30s() -> Duration {
    d(30)
}
fn d60s() -> Duration {
    d(60)
}
fn d3s() -> Duration {
    d(3)
}
fn d2m() -> Duration {
    d(120)
}
fn d10m() -> Duration {
    d(600)
}

/// The version to upgrade to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Product version (semver).
    pub version: semver::Version,
}

/// A host and the regions it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPlan {
    /// Host name (as its agent knows it).
    pub name: HostName,
    /// Regions on the host, in start order.
    pub regions: Vec<RegionName>,
}

/// Which upgrade process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Decided by CheckCompat of the target against the running store.
    #[default]
    Auto,
    /// Rolling restart into the same store.
    Compatible,
    /// New store beside the old one (the documented 14 steps).
    Incompatible,
}

/// When the new store starts taking batch work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeFlip {
    /// As soon as the first wave is healthy.
    #[default]
    AfterFirstWave,
    /// After every wave (the documented order).
    AfterAllWaves,
}

/// What a failed step or gate leads to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop and wait for `rollout resume` (exit 6).
    #[default]
    Pause,
    /// Roll back to the old version (exit 7).
    Rollback,
    /// Stop where it is (exit 1).
    Abort,
}

/// Health gate bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// How long every started region must stay live and active.
    #[serde(with = "dur", default = "d3s")]
    pub min_healthy: Duration,
    /// Bound on reaching that.
    #[serde(with = "dur", default = "d2m")]
    pub deadline: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            min_healthy: d3s(),
            deadline: d2m(),
        }
    }
}

/// How regions are driven.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DriverSpec {
    /// pacup host agents, through the PSOR.
    #[default]
    Agent,
    /// Shell command templates for real regions.
    Command {
        /// Template per action (see docs/runbook.md).
        templates: BTreeMap<String, String>,
        /// Bound on one command.
        #[serde(with = "dur", default = "d60s")]
        timeout: Duration,
    },
}

/// How many regions may be down at once when `waves` are derived: a count, or a
/// percentage of the PAC's regions (written `"10%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// At most this many regions.
    Count(usize),
    /// At most this share of the PAC's regions (1 to 100), rounded down, at least one.
    Percent(u8),
}

impl MaxUnavailable {
    /// The bound for a PAC of `total` regions.
    pub fn limit(self, total: usize) -> usize {
        match self {
            MaxUnavailable::Count(n) => n,
            MaxUnavailable::Percent(p) => (total * usize::from(p) / 100).max(1),
        }
    }
}

impl std::fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxUnavailable::Count(n) => write!(f, "{n}"),
            MaxUnavailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for MaxUnavailable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            MaxUnavailable::Count(n) => s.serialize_u64(*n as u64),
            MaxUnavailable::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for MaxUnavailable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        let bad = || {
            serde::de::Error::custom(
                "invalid max_unavailable: a number of regions (at least 1) or a percentage \
                 such as \"10%\" (1% to 100%)",
            )
        };
        match Raw::deserialize(d).map_err(|_| bad())? {
            Raw::Count(n) if n >= 1 => Ok(MaxUnavailable::Count(n as usize)),
            Raw::Text(t) => match t.trim().strip_suffix('%').map(|n| n.trim().parse::<u8>()) {
                Some(Ok(p)) if (1..=100).contains(&p) => Ok(MaxUnavailable::Percent(p)),
                _ => Err(bad()),
            },
            Raw::Count(_) => Err(bad()),
        }
    }
}

/// Every field a plan file may hold, nested ones as dotted paths (`hosts[]` is an element
/// of `hosts`). Anything else is refused by `deny_unknown_fields`; the test module keeps
/// this list equal to what serde accepts, and docs/plan.md documents exactly these.
pub const FIELDS: [&str; 34] = [
    "pac",
    "target",
    "target.version",
    "hosts",
    "hosts[].name",
    "hosts[].regions",
    "strategy",
    "waves",
    "max_unavailable",
    "canary",
    "max_parallel",
    "mode_flip",
    "drain_timeout",
    "stop_timeout",
    "health",
    "health.min_healthy",
    "health.deadline",
    "progress_deadline",
    "on_failure",
    "hold_finalization",
    "driver",
    "driver.kind",
    "driver.templates",
    "driver.timeout",
    "monitor",
    "monitor.suspend",
    "monitor.resume",
    "monitor.keep_suspended_on_pause",
    "backup",
    "backup.dir",
    "backup.keep",
    "host_checks",
    "host_checks.paths",
    "host_checks.min_free",
];

/// A rollout plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The PAC.
    pub pac: PacName,
    /// Target product.
    pub target: Target,
    /// Hosts and their regions.
    pub hosts: Vec<HostPlan>,
    /// Upgrade process.
    #[serde(default)]
    pub strategy: Strategy,
    /// Hosts per wave (default: derived from `max_unavailable` and `canary`, else one
    /// host per wave, in plan order).
    #[serde(default)]
    pub waves: Vec<Vec<HostName>>,
    /// With `waves` left out: how many regions may be down at once; hosts are packed into
    /// waves in plan order up to this bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<MaxUnavailable>,
    /// With `waves` left out: the first wave is this many hosts (a canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<usize>,
    /// How many steps of a parallel group act at once (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// When the new store takes batch work.
    #[serde(default)]
    pub mode_flip: ModeFlip,
    /// How long clients may take to leave a region.
    #[serde(with = "dur", default = "d30s")]
    pub drain_timeout: Duration,
    /// Past this a region stop is forced.
    #[serde(with = "dur", default = "d60s")]
    pub stop_timeout: Duration,
    /// Health gate.
    #[serde(default)]
    pub health: Health,
    /// Bound on the time without a step completing.
    #[serde(with = "dur", default = "d10m")]
    pub progress_deadline: Duration,
    /// Failure policy.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Stop before quiescing/removing the old store until `rollout resume`.
    #[serde(default)]
    pub hold_finalization: bool,
    /// How regions are driven.
    #[serde(default)]
    pub driver: DriverSpec,
    /// The monitoring hold.
    #[serde(default, skip_serializing_if = "Monitor::is_unset")]
    pub monitor: Monitor,
    /// Agent driver: `backup` steps save the PAC here (the command driver's come from
    /// its `backup` template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Host checks at preflight and before each later wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_checks: Option<HostChecks>,
    /// The waves were derived from `max_unavailable`/`canary` by the parser; preflight
    /// derives them again against the PAC's region count (a percentage is of the PAC).
    /// Not part of the file: a journaled plan carries its waves.
    #[serde(skip)]
    pub waves_derived: bool,
}

impl Plan {
    /// Whether the coordinator reads the PAC's stores through a `store_state` template
    /// (a command plan that has one) rather than pacup's records in the PSOR.
    pub fn reads_stores_by_template(&self) -> bool {
        matches!(&self.driver, DriverSpec::Command { templates, .. }
            if templates.contains_key("store_state"))
    }

    /// Reads and validates a plan file.
    pub fn load(path: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::BadFile {
            what: "plan".into(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            Error::BadFile { reason, .. } => Error::BadFile {
                what: "plan".into(),
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parses and validates plan JSON; fills the default waves.
    pub fn parse(text: &str) -> Result<Plan> {
        let mut plan: Plan = serde_json::from_str(text).map_err(|e| Error::BadFile {
            what: "plan".into(),
            path: "<plan>".into(),
            reason: e.to_string(),
        })?;
        plan.validate()?;
        Ok(plan)
    }

    fn validate(&mut self) -> Result<()> {
        let bad = |field: &str, value: &str, expected: &str| {
            Error::invalid(format!("plan field {field}"), value, expected)
        };
        if self.hosts.is_empty() {
            return Err(bad("hosts", "[]", "at least one host"));
        }
        let mut hosts = HashSet::new();
        let mut regions = HashSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            if !hosts.insert(h.name.clone()) {
                return Err(bad(
                    &format!("hosts[{i}].name"),
                    h.name.as_str(),
                    "each host once",
                ));
            }
            if h.regions.is_empty() {
                return Err(bad(
                    &format!("hosts[{i}].regions"),
                    "[]",
                    "at least one region",
                ));
            }
            for r in &h.regions {
                if !regions.insert(r.clone()) {
                    return Err(bad(
                        &format!("hosts[{i}].regions"),
                        r.as_str(),
                        "each region once in the whole plan",
                    ));
                }
            }
        }
        let derive = self.max_unavailable.is_some() || self.canary.is_some();
        if derive && !self.waves.is_empty() {
            return Err(bad(
                "waves",
                "(given with max_unavailable or canary)",
                "either waves, or max_unavailable and canary to derive them, not both",
            ));
        }
        if let Some(c) = self.canary {
            if c == 0 || c >= self.hosts.len() {
                return Err(bad(
                    "canary",
                    &c.to_string(),
                    &format!(
                        "a number of hosts from 1 to {} (fewer than the plan's hosts)",
                        self.hosts.len().saturating_sub(1)
                    ),
                ));
            }
        }
        if self.max_parallel == Some(0) {
            return Err(bad("max_parallel", "0", "at least 1"));
        }
        if derive {
            self.derive_waves(regions.len());
        } else if self.waves.is_empty() {
            self.waves = self.hosts.iter().map(|h| vec![h.name.clone()]).collect();
        }
        let mut seen = HashSet::new();
        for (i, w) in self.waves.iter().enumerate() {
            if w.is_empty() {
                return Err(bad(
                    &format!("waves[{i}]"),
                    "[]",
                    "at least one host per wave",
                ));
            }
            for h in w {
                if !hosts.contains(h) {
                    return Err(bad(
                        &format!("waves[{i}]"),
                        h.as_str(),
                        "a host listed in hosts",
                    ));
                }
                if !seen.insert(h.clone()) {
                    return Err(bad(
                        &format!("waves[{i}]"),
                        h.as_str(),
                        "each host in exactly one wave",
                    ));
                }
            }
        }
        if let Some(h) = self.hosts.iter().find(|h| !seen.contains(&h.name)) {
            return Err(bad("waves", h.name.as_str(), "every host in some wave"));
        }
        if self.health.min_healthy >= self.health.deadline {
            return Err(bad(
                "health.min_healthy",
                &crate::names::format_duration(self.health.min_healthy),
                "shorter than health.deadline",
            ));
        }
        if let DriverSpec::Command { templates, .. } = &self.driver {
            super::driver::validate_templates(templates)?;
        }
        if let Some(c) = &self.host_checks {
            if let DriverSpec::Command { templates, .. } = &self.driver {
                if !templates.contains_key("host_check") {
                    return Err(bad(
                        "host_checks",
                        "(no host_check template)",
                        "with the command driver, a host_check template to run them (it gets {paths} and {min_free})",
                    ));
                }
            }
            for (i, p) in c.paths.iter().enumerate() {
                if !p.is_absolute() {
                    return Err(bad(
                        &format!("host_checks.paths[{i}]"),
                        &p.display().to_string(),
                        "an absolute path",
                    ));
                }
            }
        }
        if let Some(b) = &self.backup {
            if matches!(self.driver, DriverSpec::Command { .. }) {
                return Err(bad(
                    "backup",
                    &b.dir.display().to_string(),
                    "no backup object with the command driver: its backup template saves the PAC",
                ));
            }
            if !b.dir.is_absolute() {
                return Err(bad(
                    "backup.dir",
                    &b.dir.display().to_string(),
                    "an absolute directory",
                ));
            }
            if b.keep == 0 {
                return Err(bad("backup.keep", "0", "at least 1"));
            }
        }
        for (field, cmd) in [
            ("monitor.suspend", &self.monitor.suspend),
            ("monitor.resume", &self.monitor.resume),
        ] {
            if let Some(c) = cmd {
                super::templates::validate_one(
                    &format!("plan field {field}"),
                    field,
                    c,
                    &["version"],
                )?;
            }
        }
        Ok(())
    }

    /// Derives `waves` from `canary` and `max_unavailable` for a PAC of `total` regions:
    /// the canary hosts first, then hosts in plan order, each wave as many hosts as fit
    /// under the bound (a host larger than the bound gets a wave of its own; preflight
    /// reports it).
    pub fn derive_waves(&mut self, total: usize) {
        let limit = self.max_unavailable.map(|m| m.limit(total)).unwrap_or(1);
        let mut hosts = self.hosts.iter();
        let mut waves: Vec<Vec<HostName>> = Vec::new();
        if let Some(c) = self.canary {
            waves.push(hosts.by_ref().take(c).map(|h| h.name.clone()).collect());
        }
        let mut cur: Vec<HostName> = Vec::new();
        let mut n = 0;
        for h in hosts {
            let k = h.regions.len();
            if !cur.is_empty() && (self.max_unavailable.is_none() || n + k > limit) {
                waves.push(std::mem::take(&mut cur));
                n = 0;
            }
            cur.push(h.name.clone());
            n += k;
        }
        if !cur.is_empty() {
            waves.push(cur);
        }
        self.waves = waves;
        self.waves_derived = true;
    }

    /// Waves holding more regions than `max_unavailable` allows for a PAC of `total`
    /// regions: (wave index, its region count, the bound).
    pub fn oversized_waves(&self, total: usize) -> Vec<(usize, usize, usize)> {
        let Some(m) = self.max_unavailable else {
            return Vec::new();
        };
        let limit = m.limit(total);
        let first = usize::from(self.canary.is_some());
        (first..self.waves.len())
            .map(|w| (w, self.wave_regions(w).len()))
            .filter(|(_, n)| *n > limit)
            .map(|(w, n)| (w, n, limit))
            .collect()
    }

    /// Whether the rollout takes `backup` steps (agent driver: `backup`; command driver:
    /// a `backup` template).
    pub fn backs_up(&self) -> bool {
        match &self.driver {
            DriverSpec::Agent => self.backup.is_some(),
            DriverSpec::Command { templates, .. } => templates.contains_key("backup"),
        }
    }

    /// Whether hosts are checked before each later wave (`host_checks`, or a command
    /// driver's `host_check` template).
    pub fn checks_hosts(&self) -> bool {
        self.host_checks.is_some()
            || matches!(&self.driver, DriverSpec::Command { templates, .. } if templates.contains_key("host_check"))
    }

    /// How many steps of one parallel group act at once.
    pub fn parallel_bound(&self) -> usize {
        self.max_parallel.unwrap_or(usize::MAX)
    }

    /// The host plan of `name`.
    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|h| h.name.as_str() == name)
    }

    /// (host, region) pairs of wave `i`, in order.
    pub fn wave_regions(&self, i: usize) -> Vec<(String, String)> {
        self.waves[i]
            .iter()
            .flat_map(|h| {
                self.host(h.as_str())
                    .map(|hp| {
                        hp.regions
                            .iter()
                            .map(|r| (h.to_string(), r.to_string()))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Every (host, region) pair of the plan.
    pub fn all_regions(&self) -> Vec<(String, String)> {
        (0..self.waves.len())
            .flat_map(|i| self.wave_regions(i))
            .collect()
    }
}

#[cfg(test)]
mod doc_tests;

#[cfg(test)]
mod tests;
