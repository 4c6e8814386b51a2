//! The Lua scripts that change a PAC's state, each with its typed call and reply.
//!
//! Each script runs atomically in Redis, so concurrent regions, agents and operators can
//! never observe or produce half a change. A script gets every key from Rust: `KEYS[1]`
//! is the PAC's prefix and the prelude ([`super::keys::lua_prelude`]) turns it into the
//! layout's key families (`K.store_meta(v)`, ...); keys a caller found (a batch of a
//! store's keys to delete) come as further `KEYS`. Every key carries the PAC's hash tag,
//! so the scripts also work on Redis Cluster.
//!
//! A call is a value of a type implementing [`Call`]: it knows its script, its keys and
//! arguments, and decodes the reply (always a table `{CODE, field...}`) into its own
//! enum, once, in [`Call::decode`]. [`super::Pac::eval`] is the one path that runs them;
//! pipelines use `Pac::pipe_call`.
//!
//! Writes that a coordinator makes pass its fencing epoch (`fence`); when it is not the
//! PAC's current epoch the script answers `FENCED` and writes nothing. An empty fence
//! means an operator's direct action.
//!
//! `pacup rollout report` reconstructs the stores' modes over time from the details of
//! the `store_created`, `set_mode_*`, `remove_old` and `rollback` events written here
//! (`src/report/stores.rs` parses them, with a test per wording): change them together.

mod coord;
mod region;
mod rollback;
mod store;
mod work;

pub use coord::*;
pub use region::*;
pub use rollback::*;
pub use store::*;
pub use work::*;

use super::keys::{self, Keys};
use redis::Script;
use std::sync::OnceLock;

/// Helpers every script may use (after the key prelude).
const HELPERS: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local function fenced(fence)
  if fence == nil or fence == '' then return false end
  local cur = redis.call('HGET', K.meta(), 'epoch') or '0'
  if cur ~= fence then return cur end
  return false
end
local function event(action, detail, actor, region)
  redis.call('XADD', K.events(), 'MAXLEN', '~', EVENTS_MAXLEN, '*',
    'ts_ms', now_ms(), 'action', action, 'status', 'done', 'detail', detail,
    'by', actor or '', 'region', region or '')
end
local function alive(r)
  return redis.call('EXISTS', K.region_alive(r)) == 1
end
local function alive_other(except)
  for _, r in ipairs(redis.call('SMEMBERS', K.regions())) do
    if r ~= except and alive(r) then return r end
  end
  return false
end
local function store_mode(v)
  return redis.call('HGET', K.store_meta(v), 'mode')
end
local function bump()
  return redis.call('HINCRBY', K.meta(), 'gen', 1)
end
local function notify(what)
  redis.call(PUBLISH_CMD, K.notify_channel(), what)
end
-- The rollout series (counted only while a rollout runs, so a series is bounded by its
-- rollout's running time; its TTL is renewed on each write).
local function series_add(name, field, n)
  local ro = redis.call('HMGET', K.rollout_current(), 'id', 'state')
  if not ro[1] or (ro[2] ~= 'running' and ro[2] ~= 'rolling_back') then return 0 end
  local k = K.series(name, ro[1])
  redis.call('HINCRBY', k, field, n)
  redis.call('EXPIRE', k, SERIES_TTL_SECS)
  return 1
end
"#;

/// One Lua script: its name, the codes it answers and its body.
pub struct Lua {
    /// Name in messages and tests (`RESET`, `JOIN`, ...).
    pub name: &'static str,
    /// Every code its reply can start with.
    pub codes: &'static [&'static str],
    /// The script's own text (it follows the prelude and the helpers).
    pub body: &'static str,
    /// Whether losing its write in a failover would corrupt the outcome (journal, lease,
    /// jobs, transactions, stores and modes): [`super::Pac::eval`] then makes it durable
    /// before returning (`--durability`).
    pub critical: bool,
    /// The Redis it runs in: the PSOR, or the coordinator's state (its keys must all be
    /// of that home, see [`keys::Home`]).
    pub home: keys::Home,
    compiled: OnceLock<Script>,
    compiled_cluster: OnceLock<Script>,
}

impl Lua {
    const fn new(name: &'static str, codes: &'static [&'static str], body: &'static str) -> Lua {
        Lua::of(name, codes, body, false, keys::Home::Psor)
    }

    /// A script whose write must survive a failover once acknowledged.
    const fn critical(
        name: &'static str,
        codes: &'static [&'static str],
        body: &'static str,
    ) -> Lua {
        Lua::of(name, codes, body, true, keys::Home::Psor)
    }

    /// A critical script of the coordinator's state Redis.
    const fn critical_state(
        name: &'static str,
        codes: &'static [&'static str],
        body: &'static str,
    ) -> Lua {
        Lua::of(name, codes, body, true, keys::Home::State)
    }

    const fn of(
        name: &'static str,
        codes: &'static [&'static str],
        body: &'static str,
        critical: bool,
        home: keys::Home,
    ) -> Lua {
        Lua {
            name,
            codes,
            body,
            critical,
            home,
            compiled: OnceLock::new(),
            compiled_cluster: OnceLock::new(),
        }
    }

    /// The whole script as one Redis server runs it.
    pub fn source(&self) -> String {
        self.source_for(false)
    }

    /// The whole script for one server or for a cluster. They differ only in how they
    /// notify: on a cluster with sharded pub/sub (`SPUBLISH`), which stays on the PAC's
    /// slot, instead of `PUBLISH`, which every node would broadcast to every other.
    pub fn source_for(&self, cluster: bool) -> String {
        let publish = if cluster { "SPUBLISH" } else { "PUBLISH" };
        format!(
            "local PUBLISH_CMD = '{publish}'\n{}{HELPERS}\n{}",
            keys::lua_prelude(),
            self.body
        )
    }

    /// The compiled script for one server (its SHA is what EVALSHA sends).
    pub fn script(&self) -> &Script {
        self.script_for(false)
    }

    /// The compiled script for one server or for a cluster.
    pub fn script_for(&self, cluster: bool) -> &Script {
        let cell = if cluster {
            &self.compiled_cluster
        } else {
            &self.compiled
        };
        cell.get_or_init(|| Script::new(&self.source_for(cluster)))
    }
}

/// Every script, for the tests that check them all.
pub fn all() -> [&'static Lua; 24] {
    [
        &RESET,
        &SET_MODE,
        &DETACH_OLD,
        &UNLINK_BATCH,
        &FINISH_REMOVAL,
        &UNQUIESCE,
        &DETACH_STORE,
        &SET_RUNNING_VERSION,
        &JOIN,
        &HEARTBEAT,
        &LEAVE,
        &REGION_FIELDS,
        &CLEAN_REGION,
        &SUBMIT,
        &CLAIM,
        &COMPLETE,
        &RECORD_TX,
        &RECORD_CLIENTS,
        &LEASE_ACQUIRE,
        &LEASE_RENEW,
        &LEASE_RELEASE,
        &ROLLOUT_WRITE,
        &SEND_CONTROL,
        &TAKE_CONTROL,
    ]
}

/// A script's reply as it comes back: its code and the fields after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    /// The first element (`OK`, `FENCED`, ...).
    pub code: String,
    /// The rest.
    pub fields: Vec<String>,
}

impl Raw {
    /// Field `i` (empty when absent).
    pub fn text(&self, i: usize) -> String {
        self.fields.get(i).cloned().unwrap_or_default()
    }

    /// Field `i` as a number (0 when absent or not one).
    pub fn num(&self, i: usize) -> u64 {
        self.fields.get(i).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    pub(crate) fn from_values(v: Vec<String>) -> Raw {
        let mut it = v.into_iter();
        Raw {
            code: it.next().unwrap_or_default(),
            fields: it.collect(),
        }
    }
}

/// One call of one script.
pub trait Call {
    /// What the reply decodes to.
    type Reply;
    /// The script.
    fn lua() -> &'static Lua;
    /// `ARGV`.
    fn args(&self) -> Vec<String>;
    /// `KEYS` after the PAC's prefix (most scripts need none: the prelude names them).
    fn keys(&self, _keys: &Keys) -> Vec<String> {
        Vec::new()
    }
    /// The typed reply; `None` for a code the script does not answer.
    fn decode(raw: Raw) -> Option<Self::Reply>;
}

/// `fence` as a script argument: empty for an operator's direct action.
fn fence_arg(f: Option<u64>) -> String {
    f.map(|f| f.to_string()).unwrap_or_default()
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes a body can answer: every `return {'CODE'` in it.
    fn returned_codes(body: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = body;
        while let Some(i) = rest.find("return {'") {
            rest = &rest[i + 9..];
            let end = rest.find('\'').unwrap();
            out.push(rest[..end].to_string());
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn no_script_spells_a_key_or_the_consumer_group() {
        for lua in all() {
            for needle in [
                "P ..",
                "pac:",
                "'ds:",
                "'store:",
                "'region:",
                "'host:",
                "'regions'",
            ] {
                assert!(!lua.body.contains(needle), "{} spells {needle:?}", lua.name);
            }
        }
        assert!(!HELPERS.contains("P .."));
    }

    #[test]
    fn every_script_answers_exactly_the_codes_it_declares() {
        for lua in all() {
            let mut declared: Vec<String> = lua.codes.iter().map(|c| c.to_string()).collect();
            declared.sort();
            assert_eq!(returned_codes(lua.body), declared, "{}", lua.name);
        }
    }

    /// A script of the state Redis touches only the families that live there, and the
    /// PAC record for the epoch (which that Redis's record holds alone).
    #[test]
    fn state_scripts_touch_only_the_state_families() {
        let state: Vec<&str> = keys::SHAPES
            .iter()
            .filter(|s| s.home == keys::Home::State)
            .map(|s| s.name)
            .chain(["meta"])
            .collect();
        let psor_helpers = [
            "event(",
            "alive(",
            "alive_other(",
            "store_mode(",
            "bump(",
            "notify(",
            "series_add(",
        ];
        let mut seen = 0;
        for lua in all().into_iter().filter(|l| l.home == keys::Home::State) {
            seen += 1;
            for part in lua.body.split("K.").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    state.contains(&name.as_str()),
                    "{} touches {name}",
                    lua.name
                );
            }
            for h in psor_helpers {
                let called = lua
                    .body
                    .match_indices(h)
                    .any(|(i, _)| !lua.body[..i].ends_with(|c: char| c.is_alphanumeric()));
                assert!(!called, "{} calls {h}", lua.name);
            }
        }
        assert_eq!(
            seen, 4,
            "lease acquire, renew, release and the journal write"
        );
    }

    #[test]
    fn scripts_have_distinct_names_and_sources() {
        let mut names: Vec<&str> = all().iter().map(|l| l.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all().len());
        let mut shas: Vec<String> = all()
            .iter()
            .map(|l| l.script().get_hash().to_string())
            .collect();
        shas.sort();
        shas.dedup();
        assert_eq!(shas.len(), all().len());
    }
}
