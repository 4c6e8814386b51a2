//! The PSOR model: typed reads and atomic writes of a PAC's state in Redis.
//!
//! [`keys`] spells every key name, [`scripts`] holds every Lua script that changes state;
//! this module turns their replies into types and errors. Reads that need many keys are
//! done in two pipelined round trips ([`Pac::snapshot`]), never one command per key.

pub mod control;
pub mod keys;
pub mod rollout;
pub mod scripts;
pub mod series;
pub mod views;
pub mod work;

use crate::conn::Psor;
use crate::error::{Error, Result};
use crate::names::{PacName, Product};
use base64::Engine as _;
use keys::Keys;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// How many keys one SCAN step asks for and one UNLINK batch deletes.
const BATCH: usize = 500;

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
}

impl RegionInfo {
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

fn num<T: std::str::FromStr + Default>(h: &HashMap<String, String>, k: &str) -> T {
    h.get(k).and_then(|v| v.parse().ok()).unwrap_or_default()
}

fn text(h: &HashMap<String, String>, k: &str) -> String {
    h.get(k).cloned().unwrap_or_default()
}

/// What a region asks the PSOR to do when it starts (decided by `region::decide_start`).
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// `gen` of the snapshot the decision was taken from.
    pub gen: u64,
    /// Create the store (with `mode`) or join an existing one.
    pub create: bool,
    /// Store version.
    pub store: String,
    /// Mode for a created store.
    pub mode: Mode,
    /// The region.
    pub region: String,
    /// Its host.
    pub host: String,
    /// Its product.
    pub product: Product,
    /// Unique token of this running instance.
    pub token: String,
    /// Heartbeat TTL.
    pub ttl_ms: u64,
    /// Effective start type (`cold`, `warm`, `upgrade`).
    pub start_type: String,
    /// Refuse if any other region is alive (cold starts).
    pub require_no_other_alive: bool,
    /// Resource definitions to load into a created store: (kind, name, JSON).
    pub resources: Vec<(String, String, String)>,
}

/// Outcome of a [`Pac::join`] that did not fail outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// Joined `store`, currently in `mode`.
    Joined {
        /// Store version.
        store: String,
        /// Its mode.
        mode: Mode,
    },
    /// The PAC changed since the snapshot: decide again.
    Conflict,
    /// Another region is alive (cold start must become warm).
    OtherAlive(String),
}

/// Outcome of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heartbeat {
    /// Still owned; the store and its mode (`None` when the store is gone).
    Ok {
        /// Store version ("" when not a member).
        store: String,
        /// Its mode, if the store still exists.
        mode: Option<Mode>,
    },
    /// Another instance owns the region, or the PAC was reset.
    Lost,
}

/// What `remove-old` did.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveReport {
    /// Stores detached now or by an earlier interrupted run, now fully deleted.
    pub stores_removed: Vec<String>,
    /// Keys deleted.
    pub keys_removed: u64,
}

/// A backup file (`pac backup`): every persistent key of the PAC, as DUMP payloads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Backup {
    /// Format marker, for refusing foreign files.
    pub format: String,
    /// The PAC backed up.
    pub pac: String,
    /// When, ms since the epoch.
    pub created_at_ms: u64,
    /// The keys.
    pub keys: Vec<BackupKey>,
}

/// One key of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackupKey {
    /// Full key name.
    pub key: String,
    /// DUMP payload, base64.
    pub dump: String,
}

const BACKUP_FORMAT: &str = "pacup-backup-1";

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

/// One PAC in a PSOR: the typed face of the scripts in [`scripts`].
#[derive(Debug, Clone)]
pub struct Pac {
    psor: Psor,
    name: PacName,
    keys: Keys,
}

fn reply_code(v: &[String]) -> &str {
    v.first().map(String::as_str).unwrap_or("")
}

impl Pac {
    /// A handle on PAC `name` (nothing is read or written).
    pub fn new(psor: Psor, name: PacName) -> Self {
        let keys = Keys::new(&name);
        Pac { psor, name, keys }
    }

    /// PAC name.
    pub fn name(&self) -> &PacName {
        &self.name
    }

    /// Key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The connection.
    pub fn psor(&self) -> &Psor {
        &self.psor
    }

    pub(crate) fn conn(&self) -> redis::aio::ConnectionManager {
        self.psor.conn()
    }

    pub(crate) async fn run(&self, s: &redis::Script, args: &[String]) -> Result<Vec<String>> {
        let mut inv = s.key(self.keys.prefix());
        for a in args {
            inv.arg(a);
        }
        inv.invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))
    }

    /// The error for a script's `{FENCED, current epoch}` reply.
    pub(crate) fn fenced(&self, v: &[String], ours: Option<u64>) -> Error {
        Error::Fenced {
            ours: ours.unwrap_or(0),
            current: v.get(1).and_then(|s| s.parse().ok()).unwrap_or(0),
        }
    }

    /// Reads the whole PAC in two pipelined round trips.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let k = &self.keys;
        let mut c = self.conn();
        #[allow(clippy::type_complexity)]
        let (meta, stores, regions, hosts, removing): (
            HashMap<String, String>,
            Vec<String>,
            Vec<String>,
            Vec<String>,
            Vec<String>,
        ) = redis::pipe()
            .hgetall(k.meta())
            .zrange(k.stores(), 0, -1)
            .smembers(k.regions())
            .smembers(k.hosts())
            .smembers(k.removing())
            .query_async(&mut c)
            .await
            .map_err(|e| self.psor.err(e))?;
        let mut regions = regions;
        regions.sort();
        let mut hosts = hosts;
        hosts.sort();
        let mut p = redis::pipe();
        for v in &stores {
            p.hgetall(k.store_meta(v)).smembers(k.store_members(v));
        }
        for r in &regions {
            p.hgetall(k.region(r)).pttl(k.region_alive(r));
        }
        for h in &hosts {
            p.hgetall(k.host(h)).exists(k.host_alive(h));
        }
        let values: Vec<redis::Value> =
            if stores.is_empty() && regions.is_empty() && hosts.is_empty() {
                Vec::new()
            } else {
                p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?
            };
        let mut it = values.into_iter();
        let mut next = || it.next().unwrap_or(redis::Value::Nil);
        let now = now_ms();
        let mut region_infos = Vec::new();
        let mut store_infos = Vec::new();
        let mut store_raw = Vec::new();
        for v in &stores {
            let m: HashMap<String, String> = redis::from_redis_value(next()).unwrap_or_default();
            let mut members: Vec<String> = redis::from_redis_value(next()).unwrap_or_default();
            members.sort();
            store_raw.push((v.clone(), m, members));
        }
        for r in &regions {
            let h: HashMap<String, String> = redis::from_redis_value(next()).unwrap_or_default();
            let pttl: i64 = redis::from_redis_value(next()).unwrap_or(-2);
            let hb: u64 = num(&h, "heartbeat_at");
            region_infos.push(RegionInfo {
                name: r.clone(),
                host: text(&h, "host"),
                product_version: text(&h, "product_version"),
                os: text(&h, "os"),
                bitness: num(&h, "bitness"),
                store: text(&h, "store"),
                state: text(&h, "state"),
                start_type: text(&h, "start_type"),
                listener: text(&h, "listener"),
                endpoint: text(&h, "endpoint"),
                clients: num(&h, "clients"),
                jobs_done: num(&h, "jobs_done"),
                alive: pttl > 0 || pttl == -1,
                heartbeat_age_ms: (hb > 0).then(|| now.saturating_sub(hb)),
            });
        }
        for (v, m, members) in store_raw {
            let live_members = members
                .iter()
                .filter(|r| region_infos.iter().any(|ri| &ri.name == *r && ri.alive))
                .cloned()
                .collect();
            store_infos.push(StoreInfo {
                running_version: text(&m, "running_version"),
                version: v,
                os: text(&m, "os"),
                bitness: num(&m, "bitness"),
                mode: Mode::parse(&text(&m, "mode")).unwrap_or(Mode::Upgrade),
                created_at_ms: num(&m, "created_at"),
                created_by: text(&m, "created_by"),
                members,
                live_members,
            });
        }
        let mut host_infos = Vec::new();
        for hname in &hosts {
            let h: HashMap<String, String> = redis::from_redis_value(next()).unwrap_or_default();
            let alive: bool = redis::from_redis_value(next()).unwrap_or(false);
            host_infos.push(HostInfo {
                name: hname.clone(),
                product_version: text(&h, "product_version"),
                os: text(&h, "os"),
                bitness: num(&h, "bitness"),
                regions: text(&h, "regions")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                alive,
            });
        }
        let mut removing = removing;
        removing.sort();
        Ok(Snapshot {
            pac: self.name.to_string(),
            exists: !meta.is_empty(),
            gen: num(&meta, "gen"),
            epoch: num(&meta, "epoch"),
            created_at_ms: num(&meta, "created_at"),
            resetting_since_ms: meta.get("resetting").and_then(|v| v.parse().ok()),
            stores: store_infos,
            regions: region_infos,
            hosts: host_infos,
            removing,
        })
    }

    /// InitPac: wipes the PAC (all but `ds:*`) and recreates its record. Refused while
    /// any region is alive unless `force`. Returns the number of store keys deleted.
    pub async fn init(&self, force: bool, actor: &str, fence: Option<u64>) -> Result<u64> {
        self.reset(force, actor, "init", false, fence).await?;
        let mut n = self.gc_removing().await?;
        // Keys whose names the script cannot list: replies, and control streams of hosts
        // that never registered (or whose records are already gone).
        n += self.delete_pattern(&self.keys.replies_pattern()).await?;
        for p in self.keys.host_control_patterns() {
            n += self.delete_pattern(&p).await?;
        }
        Ok(n)
    }

    /// The atomic half of InitPac; returns the new `gen`.
    pub(crate) async fn reset(
        &self,
        force: bool,
        actor: &str,
        why: &str,
        cold_start: bool,
        fence: Option<u64>,
    ) -> Result<u64> {
        let v = self
            .run(
                &scripts::RESET,
                &[
                    fence.map(|f| f.to_string()).unwrap_or_default(),
                    if force { "1" } else { "0" }.into(),
                    actor.into(),
                    why.into(),
                    if cold_start { "1" } else { "0" }.into(),
                ],
            )
            .await?;
        match reply_code(&v) {
            "OK" => Ok(v.get(1).and_then(|g| g.parse().ok()).unwrap_or(0)),
            "ALIVE" => Err(Error::refused(format!(
                "PAC {} has a live region ({}); stop every region first or use --force",
                self.name,
                v.get(1).map(String::as_str).unwrap_or("?")
            ))),
            "FENCED" => Err(self.fenced(&v, fence)),
            other => Err(Error::refused(format!(
                "unexpected reply {other} from reset"
            ))),
        }
    }

    /// Commits a region start decided from a snapshot.
    pub async fn join(&self, req: &JoinRequest, actor: &str) -> Result<JoinOutcome> {
        let mut args = vec![
            req.gen.to_string(),
            if req.create { "create" } else { "join" }.to_string(),
            req.store.clone(),
            req.mode.as_str().to_string(),
            req.product.os.clone(),
            req.product.bitness.to_string(),
            req.region.clone(),
            req.host.clone(),
            req.token.clone(),
            req.ttl_ms.to_string(),
            req.start_type.clone(),
            actor.to_string(),
            req.product.version.to_string(),
            if req.require_no_other_alive { "1" } else { "0" }.to_string(),
        ];
        for (kind, name, json) in &req.resources {
            args.extend([kind.clone(), name.clone(), json.clone()]);
        }
        let v = self.run(&scripts::JOIN, &args).await?;
        match reply_code(&v) {
            "OK" => Ok(JoinOutcome::Joined {
                store: v.get(1).cloned().unwrap_or_default(),
                mode: v.get(2).and_then(|m| Mode::parse(m)).unwrap_or(Mode::Upgrade),
            }),
            "CONFLICT" => Ok(JoinOutcome::Conflict),
            "ALIVE" => Ok(JoinOutcome::OtherAlive(v.get(1).cloned().unwrap_or_default())),
            "NOPAC" => Err(Error::NoSuchPac(self.name.to_string())),
            "RUNNING" => Err(Error::refused(format!(
                "region {} is already running (on host {})",
                req.region,
                v.get(1).map(String::as_str).unwrap_or("?")
            ))),
            "REMOVING" => Err(Error::refused(format!(
                "store {} of PAC {} is still being deleted; run `pacup pac remove-old {}` to finish it",
                req.store, self.name, self.name
            ))),
            other => Err(Error::refused(format!("unexpected reply {other} from join"))),
        }
    }

    /// Extends a region's liveness; answers its store's current mode.
    pub async fn heartbeat(
        &self,
        region: &str,
        token: &str,
        ttl_ms: u64,
        clients: Option<u64>,
    ) -> Result<Heartbeat> {
        let v = self
            .run(
                &scripts::HEARTBEAT,
                &[
                    region.into(),
                    token.into(),
                    ttl_ms.to_string(),
                    clients.map(|c| c.to_string()).unwrap_or_default(),
                ],
            )
            .await?;
        Ok(match reply_code(&v) {
            "OK" => Heartbeat::Ok {
                store: v.get(1).cloned().unwrap_or_default(),
                mode: v.get(2).and_then(|m| Mode::parse(m)),
            },
            _ => Heartbeat::Lost,
        })
    }

    /// Leaves the region's store and records `state` (`stopped`). Returns false when the
    /// region is no longer ours (nothing written).
    pub async fn leave(&self, region: &str, token: &str, state: &str, actor: &str) -> Result<bool> {
        let v = self
            .run(
                &scripts::LEAVE,
                &[region.into(), token.into(), state.into(), actor.into()],
            )
            .await?;
        Ok(reply_code(&v) == "OK")
    }

    /// Writes fields of a region's record (listener, endpoint, ...) if this instance still
    /// owns it. Returns false when it does not (nothing written).
    pub async fn set_region_fields(
        &self,
        region: &str,
        token: &str,
        fields: &[(&str, String)],
    ) -> Result<bool> {
        let mut args = vec![region.to_string(), token.to_string()];
        for (k, v) in fields {
            args.extend([k.to_string(), v.clone()]);
        }
        let mut inv = scripts::REGION_FIELDS.key(self.keys.prefix());
        for a in &args {
            inv.arg(a);
        }
        let n: i64 = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(n == 1)
    }

    /// SetMode: `running` flips the upgrade-mode store; `quiesce` quiesces every running
    /// store older than the newest. Returns the versions changed.
    pub async fn set_mode(
        &self,
        mode: Mode,
        actor: &str,
        fence: Option<u64>,
    ) -> Result<Vec<String>> {
        if mode == Mode::Upgrade {
            return Err(Error::invalid("mode", "upgrade", "running or quiesce"));
        }
        let v = self
            .run(
                &scripts::SET_MODE,
                &[
                    fence.map(|f| f.to_string()).unwrap_or_default(),
                    mode.as_str().into(),
                    actor.into(),
                ],
            )
            .await?;
        let pac = &self.name;
        match reply_code(&v) {
            "OK" => Ok(v[1..].to_vec()),
            "NOPAC" => Err(Error::NoSuchPac(pac.to_string())),
            "NOSTORE" => Err(Error::refused(format!(
                "PAC {pac} has no store; cold start a region first"
            ))),
            "NOTHING" if mode == Mode::Running => Err(Error::refused(format!(
                "no store of PAC {pac} is in upgrade mode; nothing to set running \
                 (start a region with --start-type upgrade first)"
            ))),
            "NOTHING" => Err(Error::refused(format!(
                "no running store of PAC {pac} is older than the newest store; nothing to quiesce"
            ))),
            "NORUNNING" => Err(Error::refused(format!(
                "quiescing would leave PAC {pac} with no running store: the newest store {} is in \
                 mode {}; set it running first",
                v.get(1).map(String::as_str).unwrap_or("?"),
                v.get(2).map(String::as_str).unwrap_or("?")
            ))),
            "FENCED" => Err(self.fenced(&v, fence)),
            other => Err(Error::refused(format!(
                "unexpected reply {other} from set-mode"
            ))),
        }
    }

    /// RemOldPAC: detaches every store older than the newest (refused while a live region
    /// is a member of one), then deletes their keys incrementally. Re-running finishes an
    /// interrupted deletion; with nothing old it does nothing.
    pub async fn remove_old(
        &self,
        force: bool,
        actor: &str,
        fence: Option<u64>,
    ) -> Result<RemoveReport> {
        let v = self
            .run(
                &scripts::DETACH_OLD,
                &[
                    fence.map(|f| f.to_string()).unwrap_or_default(),
                    actor.into(),
                    if force { "1" } else { "0" }.into(),
                ],
            )
            .await?;
        let pac = &self.name;
        match reply_code(&v) {
            "OK" | "NONE" => {}
            "NOPAC" => return Err(Error::NoSuchPac(pac.to_string())),
            "LIVE" => {
                return Err(Error::refused(format!(
                    "old stores of PAC {pac} still have live members: {}; stop them first",
                    v[1..]
                        .iter()
                        .map(|m| m.replacen('@', " in store ", 1))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            "NORUNNING" => {
                return Err(Error::refused(format!(
                    "removing the old stores would leave PAC {pac} with no running store: the \
                     newest store {} is in mode {}",
                    v.get(1).map(String::as_str).unwrap_or("?"),
                    v.get(2).map(String::as_str).unwrap_or("?")
                )))
            }
            "FENCED" => return Err(self.fenced(&v, fence)),
            other => {
                return Err(Error::refused(format!(
                    "unexpected reply {other} from remove-old"
                )))
            }
        }
        let mut c = self.conn();
        let mut stores_removed: Vec<String> = c
            .smembers(self.keys.removing())
            .await
            .map_err(|e| self.psor.err(e))?;
        stores_removed.sort();
        let keys_removed = self.gc_removing().await?;
        Ok(RemoveReport {
            stores_removed,
            keys_removed,
        })
    }

    /// Deletes the keys of every detached store: SCAN + UNLINK in batches, each batch one
    /// pipelined round trip (the next SCAN travels with the previous batch's UNLINK), so
    /// Redis keeps answering other clients however large the store.
    pub async fn gc_removing(&self) -> Result<u64> {
        let mut c = self.conn();
        let versions: Vec<String> = c
            .smembers(self.keys.removing())
            .await
            .map_err(|e| self.psor.err(e))?;
        let mut total = 0u64;
        for v in versions {
            let pattern = self.keys.store_pattern(&v);
            // Called once with no keys: loads the script (the pipeline below uses EVALSHA,
            // which cannot fall back to EVAL) and checks the version is still detached.
            let guard: i64 = scripts::UNLINK_BATCH
                .key(self.keys.prefix())
                .arg(&v)
                .invoke_async(&mut c)
                .await
                .map_err(|e| self.psor.err(e))?;
            if guard < 0 {
                continue;
            }
            let (mut cursor, mut batch): (u64, Vec<String>) =
                scan_page(&mut c, &self.psor, 0, &pattern).await?;
            loop {
                let mut p = redis::pipe();
                if !batch.is_empty() {
                    p.add_command(unlink_cmd(&self.keys, &v, &batch));
                }
                if cursor != 0 {
                    p.cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(BATCH);
                }
                if batch.is_empty() && cursor == 0 {
                    break;
                }
                let vals: Vec<redis::Value> =
                    p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?;
                let mut vals = vals.into_iter();
                if !batch.is_empty() {
                    let n: i64 = redis::from_redis_value(vals.next().unwrap_or(redis::Value::Nil))
                        .map_err(|e| self.psor.err(e.into()))?;
                    if n < 0 {
                        return Err(Error::refused(format!(
                            "store {v} of PAC {} is live again; its deletion was stopped",
                            self.name
                        )));
                    }
                    total += n as u64;
                }
                if cursor == 0 {
                    break;
                }
                let (nc, nb): (u64, Vec<String>) =
                    redis::from_redis_value(vals.next().unwrap_or(redis::Value::Nil))
                        .map_err(|e| self.psor.err(e.into()))?;
                cursor = nc;
                batch = nb;
            }
            let _: i64 = scripts::FINISH_REMOVAL
                .key(self.keys.prefix())
                .arg(&v)
                .invoke_async(&mut c)
                .await
                .map_err(|e| self.psor.err(e))?;
        }
        Ok(total)
    }

    /// Every persistent key of the PAC (heartbeats, which carry a TTL, are left out: a
    /// restored PAC must not show regions alive that are not).
    pub async fn backup(&self) -> Result<Backup> {
        let mut c = self.conn();
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (nc, batch): (u64, Vec<String>) =
                scan_page(&mut c, &self.psor, cursor, &self.keys.all_pattern()).await?;
            if !batch.is_empty() {
                let mut p = redis::pipe();
                for k in &batch {
                    p.cmd("PTTL").arg(k).cmd("DUMP").arg(k);
                }
                let vals: Vec<redis::Value> =
                    p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?;
                for (k, pair) in batch.iter().zip(vals.chunks(2)) {
                    let ttl: i64 = redis::from_redis_value(pair[0].clone()).unwrap_or(-2);
                    if ttl != -1 {
                        continue;
                    }
                    if let redis::Value::BulkString(bytes) = &pair[1] {
                        keys.push(BackupKey {
                            key: k.clone(),
                            dump: base64::engine::general_purpose::STANDARD.encode(bytes),
                        });
                    }
                }
            }
            cursor = nc;
            if cursor == 0 {
                break;
            }
        }
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Backup {
            format: BACKUP_FORMAT.into(),
            pac: self.name.to_string(),
            created_at_ms: now_ms(),
            keys,
        })
    }

    /// Restores a backup into this PAC (keys renamed if the backup is of another PAC), in
    /// one MULTI so a reader never sees half of it. Refused when the PAC has any key unless
    /// `force`, which first deletes the PAC's keys incrementally.
    pub async fn restore(&self, backup: &Backup, force: bool) -> Result<usize> {
        if backup.format != BACKUP_FORMAT {
            return Err(Error::invalid(
                "backup format",
                &backup.format,
                BACKUP_FORMAT,
            ));
        }
        let from = Keys::new(&PacName::new(&backup.pac)?);
        let mut payloads = Vec::with_capacity(backup.keys.len());
        for k in &backup.keys {
            let Some(rest) = k.key.strip_prefix(from.prefix()) else {
                return Err(Error::invalid(
                    "backup key",
                    &k.key,
                    format!("a key starting with {}", from.prefix()),
                ));
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&k.dump)
                .map_err(|e| Error::invalid("backup payload", &k.key, format!("base64 ({e})")))?;
            payloads.push((format!("{}{rest}", self.keys.prefix()), bytes));
        }
        let mut c = self.conn();
        let has_data = self.any_key().await?;
        if let Some(r) = self.snapshot().await?.regions.iter().find(|r| r.alive) {
            return Err(Error::refused(format!(
                "PAC {} has a live region ({}); stop every region before a restore",
                self.name, r.name
            )));
        }
        if has_data && !force {
            return Err(Error::refused(format!(
                "PAC {} already has data in the PSOR; restore over it with --force",
                self.name
            )));
        }
        if has_data {
            self.delete_all_keys().await?;
        }
        let mut p = redis::pipe();
        p.atomic();
        for (k, bytes) in &payloads {
            p.cmd("RESTORE")
                .arg(k)
                .arg(0)
                .arg(bytes.as_slice())
                .arg("REPLACE")
                .ignore();
        }
        let _: () = p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?;
        Ok(payloads.len())
    }

    /// Whether the PAC exists (its PAC record does).
    pub async fn exists(&self) -> Result<bool> {
        self.conn()
            .exists(self.keys.meta())
            .await
            .map_err(|e| self.psor.err(e))
    }

    /// [`Error::NoSuchPac`] unless the PAC exists: for commands that only read, so that
    /// a mistyped name is not answered with an empty result.
    pub async fn require(&self) -> Result<()> {
        if self.exists().await? {
            Ok(())
        } else {
            Err(Error::NoSuchPac(self.name.to_string()))
        }
    }

    /// Whether any key of the PAC exists (SCAN until the first hit).
    async fn any_key(&self) -> Result<bool> {
        let mut c = self.conn();
        if c.exists(self.keys.meta())
            .await
            .map_err(|e| self.psor.err(e))?
        {
            return Ok(true);
        }
        let mut cursor = 0u64;
        loop {
            let (nc, batch): (u64, Vec<String>) =
                scan_page(&mut c, &self.psor, cursor, &self.keys.all_pattern()).await?;
            if !batch.is_empty() {
                return Ok(true);
            }
            cursor = nc;
            if cursor == 0 {
                return Ok(false);
            }
        }
    }

    /// Deletes every key of the PAC incrementally (restore --force).
    async fn delete_all_keys(&self) -> Result<u64> {
        self.delete_pattern(&self.keys.all_pattern()).await
    }

    /// Deletes the PAC's keys matching `pattern` with SCAN + UNLINK in batches.
    async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        let mut c = self.conn();
        let mut cursor = 0u64;
        let mut n = 0;
        loop {
            let (nc, batch): (u64, Vec<String>) =
                scan_page(&mut c, &self.psor, cursor, pattern).await?;
            if !batch.is_empty() {
                let d: u64 = redis::cmd("UNLINK")
                    .arg(&batch)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| self.psor.err(e))?;
                n += d;
            }
            cursor = nc;
            if cursor == 0 {
                return Ok(n);
            }
        }
    }
}

/// One SCAN step: (next cursor, keys) of the keys matching `pattern`.
async fn scan_page(
    c: &mut redis::aio::ConnectionManager,
    psor: &Psor,
    cursor: u64,
    pattern: &str,
) -> Result<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(BATCH)
        .query_async(c)
        .await
        .map_err(|e| psor.err(e))
}

fn unlink_cmd(keys: &Keys, version: &str, batch: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(scripts::UNLINK_BATCH.get_hash())
        .arg(1)
        .arg(keys.prefix())
        .arg(version);
    for k in batch {
        cmd.arg(k);
    }
    cmd
}

/// Every PAC in the PSOR, by name.
pub async fn list_pacs(psor: &Psor) -> Result<Vec<PacSummary>> {
    let mut out = Vec::new();
    for n in pac_names(psor).await? {
        let snap = Pac::new(psor.clone(), n.clone()).snapshot().await?;
        out.push(PacSummary {
            pac: n.to_string(),
            stores: snap
                .stores
                .iter()
                .map(|s| StoreSummary {
                    version: s.version.clone(),
                    mode: s.mode,
                })
                .collect(),
            live_regions: snap.regions.iter().filter(|r| r.alive).count(),
        });
    }
    Ok(out)
}

/// The names of the PACs in the PSOR (those with a PAC record), sorted.
pub async fn pac_names(psor: &Psor) -> Result<Vec<PacName>> {
    let mut c = psor.conn();
    let mut names = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (nc, batch): (u64, Vec<String>) =
            scan_page(&mut c, psor, cursor, keys::ALL_PAC_META_PATTERN).await?;
        names.extend(
            batch
                .iter()
                .filter_map(|k| keys::pac_of_meta_key(k))
                .filter_map(|n| PacName::new(n).ok()),
        );
        cursor = nc;
        if cursor == 0 {
            break;
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}
