//! Key names of the PSOR layout (docs/PSOR.md section 2): the one vocabulary of the crate.
//!
//! Every key family is one [`Shape`] in [`SHAPES`]. The Rust side renders keys from them
//! ([`Keys`]), and the Lua scripts get the same families as functions of a prelude
//! generated from the same table ([`lua_prelude`]: `K.store_meta(v)` in Lua is
//! [`Keys::store_meta`] in Rust), so no script spells a key. Every key of PAC `P` carries
//! the hash tag `{P}`, so one Lua script or MULTI can touch all of them, also on Redis
//! Cluster; the scripts receive [`Keys::prefix`] as `KEYS[1]`.

use crate::names::PacName;

/// One piece of a key name after the PAC's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    /// Spelled as is.
    Lit(&'static str),
    /// A name given by the caller (a store version, a region, ...); never contains `:`.
    Var(&'static str),
    /// Anything (a family of keys: every key of a store, of the datastore).
    Rest,
}

use Seg::{Lit, Rest, Var};

/// Which Redis holds a key family: the one place that decides which connection reads
/// and writes it ([`crate::psor::Pac::on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// The PSOR: the PAC itself (stores, regions, hosts, the datastore).
    Psor,
    /// The coordinator's own state (`--state`, by default the PSOR): its lease, the
    /// rollout journal, the history and the rollout events. A site keeps these out of
    /// the vendor's PSOR by naming another Redis.
    State,
}

/// A family of keys (or the PAC's notification channel) of the layout.
#[derive(Debug)]
pub struct Shape {
    /// The name of the Rust method and of the Lua function (`K.<name>`; `K.<name>_prefix`
    /// for a family ending in [`Seg::Rest`]).
    pub name: &'static str,
    /// The pieces after `pac:{P}:`.
    pub segs: &'static [Seg],
    /// A pub/sub channel rather than a key.
    pub channel: bool,
    /// Which Redis holds it.
    pub home: Home,
}

const fn key(name: &'static str, segs: &'static [Seg]) -> Shape {
    Shape {
        name,
        segs,
        channel: false,
        home: Home::Psor,
    }
}

/// A family of the coordinator's own state ([`Home::State`]).
const fn state_key(name: &'static str, segs: &'static [Seg]) -> Shape {
    Shape {
        home: Home::State,
        ..key(name, segs)
    }
}

/// The PAC record (hash): created_at, gen, epoch, store_seq. The fencing `epoch` is
/// kept beside the lease: with a separate state Redis, that Redis's record of the PAC
/// holds the epoch and nothing else.
pub const META: Shape = key("meta", &[Lit("meta")]);
/// Store versions (sorted set) scored by creation order.
pub const STORES: Shape = key("stores", &[Lit("stores")]);
/// Versions of stores detached from the PAC whose keys are still being deleted.
pub const REMOVING: Shape = key("removing", &[Lit("removing")]);
/// Store record (hash).
pub const STORE_META: Shape = key("store_meta", &[Lit("store:"), Var("v"), Lit(":meta")]);
/// Store members (set of region names).
pub const STORE_MEMBERS: Shape = key("store_members", &[Lit("store:"), Var("v"), Lit(":members")]);
/// Resource definitions of one type in a store (hash name -> JSON attributes).
pub const STORE_RESOURCES: Shape = key(
    "store_resources",
    &[Lit("store:"), Var("v"), Lit(":res:"), Var("kind")],
);
/// The store's key index: names of the store's keys other than its record and the index
/// (list, in the order they were created), appended to by every script that creates a
/// store key, so a removal walks the store's own keys rather than the whole keyspace, in
/// disjoint ranges at once. A store whose record lacks `key_index` (written by an older
/// pacup) has none and is removed by SCAN.
pub const STORE_INDEX: Shape = key("store_index", &[Lit("store:"), Var("v"), Lit(":index")]);
/// Every key of a store (a removal deletes exactly these).
pub const STORE_KEY: Shape = key("store_key", &[Lit("store:"), Var("v"), Lit(":"), Rest]);
/// Names of regions ever started in the PAC (set).
pub const REGIONS: Shape = key("regions", &[Lit("regions")]);
/// Region record (hash).
pub const REGION: Shape = key("region", &[Lit("region:"), Var("r")]);
/// Region heartbeat (string with TTL, value = the running instance's token).
pub const REGION_ALIVE: Shape = key("region_alive", &[Lit("region:"), Var("r"), Lit(":alive")]);
/// Names of host agents ever seen (set).
pub const HOSTS: Shape = key("hosts", &[Lit("hosts")]);
/// Host agent record (hash).
pub const HOST: Shape = key("host", &[Lit("host:"), Var("h")]);
/// Host agent heartbeat (string with TTL).
pub const HOST_ALIVE: Shape = key("host_alive", &[Lit("host:"), Var("h"), Lit(":alive")]);
/// Control commands for a host agent (stream).
pub const HOST_CONTROL: Shape = key("host_control", &[Lit("host:"), Var("h"), Lit(":ctl")]);
/// Control command ids a host agent has taken (hash id -> when): at most once.
pub const HOST_DONE: Shape = key("host_done", &[Lit("host:"), Var("h"), Lit(":done")]);
/// The reply to one control command (list, one element, expires).
pub const CONTROL_REPLY: Shape = key("control_reply", &[Lit("reply:"), Var("id")]);
/// The batch job queue (stream, consumer group [`JOB_GROUP`]).
pub const JOBS: Shape = key("jobs", &[Lit("ds:jobs")]);
/// Workload counters (hash): job_seq, submitted, completed, duplicates, waiting_since,
/// last_completion, max_gap_ms, tx_ok, tx_duplicates.
pub const WORK_STATS: Shape = key("work_stats", &[Lit("ds:stats")]);
/// Job results (hash job id -> `<region> <store> <ts_ms> <stream id>`); written once per job.
pub const JOB_RESULTS: Shape = key("job_results", &[Lit("ds:results")]);
/// Jobs completed per region (hash).
pub const JOBS_BY_REGION: Shape = key("jobs_by_region", &[Lit("ds:by_region")]);
/// Client transactions (hash tx id -> region that served it first).
pub const TRANSACTIONS: Shape = key("transactions", &[Lit("ds:tx")]);
/// One job submission (string `<first> <last>`, expires a day after it): a submission
/// repeated after its reply was lost answers the same ids instead of submitting again.
pub const SUBMISSION: Shape = key("submission", &[Lit("ds:submission:"), Var("id")]);
/// Every key of the shared datastore (kept by init and by every store change).
pub const DS_KEY: Shape = key("ds_key", &[Lit("ds:"), Rest]);
/// A per-second series recorded while a rollout runs (hash, expires [`SERIES_TTL_SECS`]
/// after its last write). `name` is `jobs` (fields `<unix second>:<store>` -> jobs
/// completed, by `COMPLETE`) or `clients` (fields `<unix second>:ok` and
/// `<unix second>:failed` -> client requests that ended, by `RECORD_CLIENTS`).
pub const SERIES: Shape = key(
    "series",
    &[Lit("series:"), Var("name"), Lit(":"), Var("rollout")],
);
/// The coordinator lease.
pub const LOCK: Shape = state_key("lock", &[Lit("lock")]);
/// The current (or last) rollout's journal (hash).
pub const ROLLOUT_CURRENT: Shape = state_key("rollout_current", &[Lit("rollout:current")]);
/// Summaries of finished rollouts, newest first (list, capped at [`HISTORY_LEN`]).
pub const ROLLOUT_HISTORY: Shape = state_key("rollout_history", &[Lit("rollout:history")]);
/// The capped audit event stream. The rollout's events go to the state Redis; the
/// store and region changes the PSOR's own scripts make (an operator's or a template's
/// `caspac`) are recorded in the PSOR's stream of the same name, so with a separate
/// state Redis there are two: `pacup events` reads the state's.
pub const EVENTS: Shape = state_key("events", &[Lit("events")]);
/// Pub/sub channel on which mode and control changes are announced. Channels are not
/// keys, but carry the same hash tag so sharded pub/sub would keep them together.
pub const NOTIFY: Shape = Shape {
    name: "notify_channel",
    segs: &[Lit("notify")],
    channel: true,
    home: Home::Psor,
};

/// Every family of the layout, most specific first.
pub const SHAPES: &[&Shape] = &[
    &META,
    &STORES,
    &REMOVING,
    &STORE_META,
    &STORE_MEMBERS,
    &STORE_RESOURCES,
    &STORE_INDEX,
    &STORE_KEY,
    &REGIONS,
    &REGION_ALIVE,
    &REGION,
    &HOSTS,
    &HOST_ALIVE,
    &HOST_CONTROL,
    &HOST_DONE,
    &HOST,
    &CONTROL_REPLY,
    &JOBS,
    &WORK_STATS,
    &JOB_RESULTS,
    &JOBS_BY_REGION,
    &TRANSACTIONS,
    &SUBMISSION,
    &DS_KEY,
    &SERIES,
    &LOCK,
    &ROLLOUT_CURRENT,
    &ROLLOUT_HISTORY,
    &EVENTS,
    &NOTIFY,
];

/// Consumer group of the job stream: every region reads as its own consumer.
pub const JOB_GROUP: &str = "regions";

/// How long a rollout's per-second series ([`SERIES`]) outlive their last write: long
/// enough to write a report for any recent rollout, short enough that the series never
/// pile up (they are telemetry, not state: backups leave them out).
pub const SERIES_TTL_SECS: u64 = 30 * 24 * 3600;

/// How long a [`SUBMISSION`] record lives: far longer than any retry of the submission.
pub const SUBMISSION_TTL_SECS: u64 = 24 * 3600;

/// Approximate cap of the event stream (`XADD MAXLEN ~`).
pub const EVENTS_MAXLEN: u64 = 10_000;

/// Approximate cap of a host agent's control stream.
pub const CONTROL_MAXLEN: u64 = 1_000;

/// How many finished rollouts the history keeps.
pub const HISTORY_LEN: u64 = 100;

const PAC_OPEN: &str = "pac:{";
const PAC_CLOSE: &str = "}:";

/// Whether `s` is a key of some PAC (or a PAC's prefix), so its hash tag names the PAC's
/// slot on a cluster.
pub fn is_pac_key(s: &str) -> bool {
    s.strip_prefix(PAC_OPEN)
        .is_some_and(|rest| rest.contains(PAC_CLOSE))
}

/// SCAN pattern that finds every PAC's record (`pac list`).
pub fn all_pac_meta_pattern() -> String {
    format!("{PAC_OPEN}*{PAC_CLOSE}{}", META.pattern_tail())
}

/// Extracts the PAC name from a key matched by [`all_pac_meta_pattern`].
pub fn pac_of_meta_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PAC_OPEN)?;
    let (pac, tail) = rest.split_once(PAC_CLOSE)?;
    (tail == META.pattern_tail()).then_some(pac)
}

impl Shape {
    /// The key after the PAC's prefix with `vals` in place of the variables, in order
    /// (a trailing [`Seg::Rest`] renders as nothing: the family's prefix).
    fn tail(&self, vals: &[&str]) -> String {
        let mut vals = vals.iter();
        let mut s = String::new();
        for seg in self.segs {
            match seg {
                Lit(l) => s.push_str(l),
                Var(name) => {
                    let v = vals
                        .next()
                        .unwrap_or_else(|| panic!("{}: no {name}", self.name));
                    debug_assert!(!v.contains(':'), "{}: {name} {v:?} contains ':'", self.name);
                    s.push_str(v);
                }
                Rest => {}
            }
        }
        s
    }

    /// The SCAN pattern tail: every variable and the rest as `*`.
    fn pattern_tail(&self) -> String {
        self.segs
            .iter()
            .map(|seg| match seg {
                Lit(l) => *l,
                Var(_) | Rest => "*",
            })
            .collect()
    }

    /// Whether `tail` (a key without the PAC's prefix) belongs to this family.
    pub fn matches(&self, tail: &str) -> bool {
        fn go(segs: &[Seg], s: &str) -> bool {
            match segs.split_first() {
                None => s.is_empty(),
                Some((Lit(l), rest)) => s.strip_prefix(l).is_some_and(|s| go(rest, s)),
                Some((Rest, _)) => !s.is_empty(),
                Some((Var(_), rest)) => {
                    let end = s.find(':').unwrap_or(s.len());
                    (1..=end).any(|i| go(rest, &s[i..]))
                }
            }
        }
        go(self.segs, tail)
    }

    /// The Lua function of the prelude: `K.store_meta = function(v) return P .. 'store:' .. v .. ':meta' end`.
    fn lua(&self) -> String {
        let params: Vec<&str> = self
            .segs
            .iter()
            .filter_map(|s| match s {
                Var(v) => Some(*v),
                _ => None,
            })
            .collect();
        let suffix = if self.segs.contains(&Rest) {
            "_prefix"
        } else {
            ""
        };
        let mut body = String::from("P");
        for seg in self.segs {
            match seg {
                Lit(l) => body.push_str(&format!(" .. '{l}'")),
                Var(v) => body.push_str(&format!(" .. {v}")),
                Rest => {}
            }
        }
        format!(
            "K.{}{suffix} = function({}) return {body} end\n",
            self.name,
            params.join(", ")
        )
    }
}

/// The family a full key (or channel) of any PAC belongs to, if it is one of the layout.
pub fn shape_of(key: &str) -> Option<&'static Shape> {
    let rest = key.strip_prefix(PAC_OPEN)?;
    let (pac, tail) = rest.split_once(PAC_CLOSE)?;
    if PacName::new(pac).is_err() {
        return None;
    }
    SHAPES.iter().copied().find(|s| s.matches(tail))
}

/// The Lua prelude every script starts with: `P` (the PAC's prefix, `KEYS[1]`), one
/// function per key family in table `K`, and the layout's constants.
pub fn lua_prelude() -> String {
    let mut s = String::from("local P = KEYS[1]\nlocal K = {}\n");
    for shape in SHAPES {
        s.push_str(&shape.lua());
    }
    s.push_str(&format!(
        "local JOB_GROUP = '{JOB_GROUP}'\nlocal SERIES_TTL_SECS = {SERIES_TTL_SECS}\n\
         local EVENTS_MAXLEN = '{EVENTS_MAXLEN}'\nlocal CONTROL_MAXLEN = '{CONTROL_MAXLEN}'\n\
         local HISTORY_LEN = {HISTORY_LEN}\nlocal SUBMISSION_TTL_SECS = {SUBMISSION_TTL_SECS}\n"
    ));
    s
}

/// Key names for one PAC.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

macro_rules! keys {
    ($($(#[$doc:meta])* $name:ident => $shape:ident ($($arg:ident),*);)*) => {
        impl Keys {
            $(
                $(#[$doc])*
                pub fn $name(&self, $($arg: &str),*) -> String {
                    self.render(&$shape, &[$($arg),*])
                }
            )*
        }
    };
}

keys! {
    /// [`META`].
    meta => META();
    /// [`STORES`].
    stores => STORES();
    /// [`REMOVING`].
    removing => REMOVING();
    /// [`STORE_META`].
    store_meta => STORE_META(v);
    /// [`STORE_MEMBERS`].
    store_members => STORE_MEMBERS(v);
    /// [`STORE_RESOURCES`].
    store_resources => STORE_RESOURCES(v, kind);
    /// [`STORE_INDEX`].
    store_index => STORE_INDEX(v);
    /// Prefix of every key of store `v` ([`STORE_KEY`]).
    store_prefix => STORE_KEY(v);
    /// [`REGIONS`].
    regions => REGIONS();
    /// [`REGION`].
    region => REGION(r);
    /// [`REGION_ALIVE`].
    region_alive => REGION_ALIVE(r);
    /// [`HOSTS`].
    hosts => HOSTS();
    /// [`HOST`].
    host => HOST(h);
    /// [`HOST_ALIVE`].
    host_alive => HOST_ALIVE(h);
    /// [`HOST_CONTROL`].
    host_control => HOST_CONTROL(h);
    /// [`HOST_DONE`].
    host_done => HOST_DONE(h);
    /// [`CONTROL_REPLY`].
    control_reply => CONTROL_REPLY(id);
    /// [`JOBS`].
    jobs => JOBS();
    /// [`WORK_STATS`].
    work_stats => WORK_STATS();
    /// [`JOB_RESULTS`].
    job_results => JOB_RESULTS();
    /// [`JOBS_BY_REGION`].
    jobs_by_region => JOBS_BY_REGION();
    /// [`TRANSACTIONS`].
    transactions => TRANSACTIONS();
    /// [`SUBMISSION`].
    submission => SUBMISSION(id);
    /// [`SERIES`] `name` of rollout `rollout`.
    series => SERIES(name, rollout);
    /// [`LOCK`].
    lock => LOCK();
    /// [`ROLLOUT_CURRENT`].
    rollout_current => ROLLOUT_CURRENT();
    /// [`ROLLOUT_HISTORY`].
    rollout_history => ROLLOUT_HISTORY();
    /// [`EVENTS`].
    events => EVENTS();
    /// [`NOTIFY`].
    notify_channel => NOTIFY();
}

impl Keys {
    /// Keys of PAC `pac`.
    pub fn new(pac: &PacName) -> Self {
        Keys {
            prefix: format!("{PAC_OPEN}{pac}{PAC_CLOSE}"),
        }
    }

    fn render(&self, shape: &Shape, vals: &[&str]) -> String {
        format!("{}{}", self.prefix, shape.tail(vals))
    }

    fn pattern(&self, shape: &Shape) -> String {
        format!("{}{}", self.prefix, shape.pattern_tail())
    }

    /// `pac:{P}:`, the prefix of every key of the PAC (passed to scripts as `KEYS[1]`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// SCAN pattern matching every key of the PAC.
    pub fn all_pattern(&self) -> String {
        format!("{}*", self.prefix)
    }

    /// SCAN pattern matching every key of store `v`.
    pub fn store_pattern(&self, v: &str) -> String {
        format!("{}*", self.store_prefix(v))
    }

    /// SCAN patterns of every host agent's control stream and taken-command hash.
    pub fn host_control_patterns(&self) -> [String; 2] {
        [self.pattern(&HOST_CONTROL), self.pattern(&HOST_DONE)]
    }

    /// SCAN pattern of every control reply key.
    pub fn replies_pattern(&self) -> String {
        self.pattern(&CONTROL_REPLY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> Keys {
        Keys::new(&PacName::new("MyPAC").unwrap())
    }

    #[test]
    fn every_key_carries_the_hash_tag_and_belongs_to_its_family() {
        let k = k();
        let cases = [
            (k.meta(), "meta"),
            (k.stores(), "stores"),
            (k.store_meta("2.0.0"), "store_meta"),
            (k.store_members("2.0.0"), "store_members"),
            (k.store_resources("2.0.0", "PCT"), "store_resources"),
            (k.store_index("2.0.0"), "store_index"),
            (format!("{}junk", k.store_prefix("2.0.0")), "store_key"),
            (k.region("R1"), "region"),
            (k.region_alive("R1"), "region_alive"),
            (k.host("h1"), "host"),
            (k.host_alive("h1"), "host_alive"),
            (k.host_control("h1"), "host_control"),
            (k.control_reply("18c-ab"), "control_reply"),
            (k.jobs(), "jobs"),
            (format!("{}ds:other", k.prefix()), "ds_key"),
            (k.lock(), "lock"),
            (k.rollout_current(), "rollout_current"),
            (k.events(), "events"),
            (k.series("jobs", "MyPAC-1a2b"), "series"),
            (k.notify_channel(), "notify_channel"),
        ];
        for (key, family) in cases {
            assert!(key.starts_with("pac:{MyPAC}:"), "{key}");
            assert_eq!(shape_of(&key).map(|s| s.name), Some(family), "{key}");
        }
        assert!(k.store_meta("2.0.0").starts_with(&k.store_prefix("2.0.0")));
        assert_eq!(pac_of_meta_key(&k.meta()), Some("MyPAC"));
        assert_eq!(all_pac_meta_pattern(), "pac:{*}:meta");
        assert!(is_pac_key(&k.meta()) && is_pac_key(k.prefix()));
        assert!(!is_pac_key("other:{MyPAC}:meta") && !is_pac_key("pac:MyPAC"));
        assert_eq!(
            k.host_control_patterns(),
            ["pac:{MyPAC}:host:*:ctl", "pac:{MyPAC}:host:*:done"]
        );
    }

    #[test]
    fn the_coordinator_keeps_its_lease_journal_history_and_events_in_its_state() {
        let state: Vec<&str> = SHAPES
            .iter()
            .filter(|s| s.home == Home::State)
            .map(|s| s.name)
            .collect();
        assert_eq!(
            state,
            ["lock", "rollout_current", "rollout_history", "events"]
        );
    }

    #[test]
    fn keys_outside_the_layout_belong_to_no_family() {
        for key in [
            "pac:{MyPAC}:store:2.0.0",
            "pac:{MyPAC}:region:",
            "pac:{MyPAC}:region:R1:other",
            "pac:{MyPAC}:rollout:other",
            "pac:{MyPAC}:nothing",
            "pac:{TOOLONGNAME}:meta",
            "other:{MyPAC}:meta",
        ] {
            assert!(shape_of(key).is_none(), "{key}");
        }
    }

    #[test]
    fn the_prelude_spells_each_family_once() {
        let p = lua_prelude();
        assert!(p.contains("K.store_meta = function(v) return P .. 'store:' .. v .. ':meta' end"));
        assert!(p.contains("K.store_key_prefix = function(v) return P .. 'store:' .. v .. ':' end"));
        assert!(p.contains(&format!("local JOB_GROUP = '{JOB_GROUP}'")));
        for s in SHAPES {
            assert_eq!(
                p.matches(&format!("K.{} ", s.name)).count()
                    + p.matches(&format!("K.{}_prefix ", s.name)).count(),
                1,
                "{}",
                s.name
            );
        }
    }
}
