//! The rollout plan file (docs/plan.md), parsed strictly: unknown fields, unknown or
//! duplicate hosts and regions, empty waves and bad durations are refused (exit 2)
//! before anything is written.

use crate::error::{Error, Result};
use crate::names::{HostName, PacName, RegionName};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

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

/// Every field a plan file may hold, nested ones as dotted paths (`hosts[]` is an element
/// of `hosts`). Anything else is refused by `deny_unknown_fields`; the test module keeps
/// this list equal to what serde accepts, and docs/plan.md documents exactly these.
pub const FIELDS: [&str; 21] = [
    "pac",
    "target",
    "target.version",
    "hosts",
    "hosts[].name",
    "hosts[].regions",
    "strategy",
    "waves",
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
    /// Hosts per wave (default: one host per wave, in plan order).
    #[serde(default)]
    pub waves: Vec<Vec<HostName>>,
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
}

impl Plan {
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
        if self.waves.is_empty() {
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
        Ok(())
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
mod tests {
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
}
