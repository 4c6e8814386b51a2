//! Key names of the PSOR layout (docs/PSOR.md section 2).
//!
//! This is the only place in the crate that spells a key name. Every key of PAC `P`
//! carries the hash tag `{P}`, so one Lua script or MULTI can touch all of them, also on
//! Redis Cluster. The Lua scripts receive [`Keys::prefix`] as `KEYS[1]` and append the
//! same suffixes this file documents.

use crate::names::PacName;

/// Key names for one PAC.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// SCAN pattern that finds every PAC's record (`pac list`).
pub const ALL_PAC_META_PATTERN: &str = "pac:{*}:meta";

/// Consumer group of the job stream: every region reads as its own consumer.
pub const JOB_GROUP: &str = "regions";

/// How long a rollout's per-second series ([`Keys::series`]) outlive their last write:
/// long enough to write a report for any recent rollout, short enough that the series
/// never pile up (they are telemetry, not state: backups leave them out).
pub const SERIES_TTL_SECS: u64 = 30 * 24 * 3600;

/// Extracts the PAC name from a key matched by [`ALL_PAC_META_PATTERN`].
pub fn pac_of_meta_key(key: &str) -> Option<&str> {
    key.strip_prefix("pac:{")?.strip_suffix("}:meta")
}

impl Keys {
    /// Keys of PAC `pac`.
    pub fn new(pac: &PacName) -> Self {
        Keys {
            prefix: format!("pac:{{{pac}}}:"),
        }
    }

    /// `pac:{P}:`, the prefix of every key of the PAC (passed to scripts as KEYS[1]).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// SCAN pattern matching every key of the PAC.
    pub fn all_pattern(&self) -> String {
        format!("{}*", self.prefix)
    }

    /// The PAC record (hash): created_at, gen, epoch, store_seq.
    pub fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }

    /// Store versions (sorted set) scored by creation order.
    pub fn stores(&self) -> String {
        format!("{}stores", self.prefix)
    }

    /// Versions of stores detached from the PAC whose keys are still being deleted.
    pub fn removing(&self) -> String {
        format!("{}removing", self.prefix)
    }

    /// Prefix of every key of store `v`.
    pub fn store_prefix(&self, v: &str) -> String {
        format!("{}store:{v}:", self.prefix)
    }

    /// SCAN pattern matching every key of store `v`.
    pub fn store_pattern(&self, v: &str) -> String {
        format!("{}store:{v}:*", self.prefix)
    }

    /// Store record (hash).
    pub fn store_meta(&self, v: &str) -> String {
        format!("{}store:{v}:meta", self.prefix)
    }

    /// Store members (set of region names).
    pub fn store_members(&self, v: &str) -> String {
        format!("{}store:{v}:members", self.prefix)
    }

    /// Resource definitions of one type in store `v` (hash name -> JSON attributes).
    pub fn store_resources(&self, v: &str, kind: &str) -> String {
        format!("{}store:{v}:res:{kind}", self.prefix)
    }

    /// Names of regions ever started in the PAC (set).
    pub fn regions(&self) -> String {
        format!("{}regions", self.prefix)
    }

    /// Region record (hash).
    pub fn region(&self, r: &str) -> String {
        format!("{}region:{r}", self.prefix)
    }

    /// Region heartbeat (string with TTL, value = the running instance's token).
    pub fn region_alive(&self, r: &str) -> String {
        format!("{}region:{r}:alive", self.prefix)
    }

    /// Names of host agents ever seen (set).
    pub fn hosts(&self) -> String {
        format!("{}hosts", self.prefix)
    }

    /// Host agent record (hash).
    pub fn host(&self, h: &str) -> String {
        format!("{}host:{h}", self.prefix)
    }

    /// Host agent heartbeat (string with TTL).
    pub fn host_alive(&self, h: &str) -> String {
        format!("{}host:{h}:alive", self.prefix)
    }

    /// A key of the shared datastore (kept by init and by every store change).
    pub fn ds(&self, suffix: &str) -> String {
        format!("{}ds:{suffix}", self.prefix)
    }

    /// The batch job queue (stream, consumer group [`JOB_GROUP`]).
    pub fn jobs(&self) -> String {
        self.ds("jobs")
    }

    /// Workload counters (hash): job_seq, submitted, completed, duplicates,
    /// waiting_since, last_completion, max_gap_ms, tx_ok, tx_duplicates.
    pub fn work_stats(&self) -> String {
        self.ds("stats")
    }

    /// Job results (hash job id -> `<region> <store> <ts_ms> <stream id>`); written once per job.
    pub fn job_results(&self) -> String {
        self.ds("results")
    }

    /// Jobs completed per region (hash).
    pub fn jobs_by_region(&self) -> String {
        self.ds("by_region")
    }

    /// Client transactions (hash tx id -> region that served it first).
    pub fn transactions(&self) -> String {
        self.ds("tx")
    }

    /// A per-second series recorded while rollout `rollout` runs (hash, expires
    /// [`SERIES_TTL_SECS`] after its last write). `name` is `jobs` (fields
    /// `<unix second>:<store>` -> jobs completed, by `COMPLETE`) or `clients` (fields
    /// `<unix second>:ok` and `<unix second>:failed` -> client requests that ended, by
    /// `RECORD_CLIENTS`). Read by `pacup rollout report`.
    pub fn series(&self, name: &str, rollout: &str) -> String {
        format!("{}series:{name}:{rollout}", self.prefix)
    }

    /// Control commands for host agent `h` (stream).
    pub fn host_control(&self, h: &str) -> String {
        format!("{}host:{h}:ctl", self.prefix)
    }

    /// Control command ids host agent `h` has taken (hash id -> status): at most once.
    pub fn host_done(&self, h: &str) -> String {
        format!("{}host:{h}:done", self.prefix)
    }

    /// The reply to control command `id` (list, one element, expires).
    pub fn control_reply(&self, id: &str) -> String {
        format!("{}reply:{id}", self.prefix)
    }

    /// SCAN patterns of every host agent's control stream and taken-command hash.
    pub fn host_control_patterns(&self) -> [String; 2] {
        [
            format!("{}host:*:ctl", self.prefix),
            format!("{}host:*:done", self.prefix),
        ]
    }

    /// SCAN pattern of every control reply key.
    pub fn replies_pattern(&self) -> String {
        format!("{}reply:*", self.prefix)
    }

    /// The coordinator lease.
    pub fn lock(&self) -> String {
        format!("{}lock", self.prefix)
    }

    /// A key of the rollout journal.
    pub fn rollout(&self, suffix: &str) -> String {
        format!("{}rollout:{suffix}", self.prefix)
    }

    /// The capped audit event stream.
    pub fn events(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// Pub/sub channel on which mode and control changes are announced. Channels are not
    /// keys, but carry the same hash tag so sharded pub/sub would keep them together.
    pub fn notify_channel(&self) -> String {
        format!("{}notify", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_hash_tag() {
        let k = Keys::new(&PacName::new("MyPAC").unwrap());
        for key in [
            k.meta(),
            k.stores(),
            k.store_meta("2.0.0"),
            k.store_members("2.0.0"),
            k.store_resources("2.0.0", "PCT"),
            k.region("R1"),
            k.region_alive("R1"),
            k.host("h1"),
            k.host_alive("h1"),
            k.ds("jobs"),
            k.lock(),
            k.rollout("current"),
            k.events(),
            k.series("jobs", "MyPAC-1a2b"),
        ] {
            assert!(key.starts_with("pac:{MyPAC}:"), "{key}");
        }
        assert!(k.store_meta("2.0.0").starts_with(&k.store_prefix("2.0.0")));
        assert_eq!(pac_of_meta_key(&k.meta()), Some("MyPAC"));
    }
}
