//! Scripts of the coordinator and the control protocol: the lease with its fencing
//! epoch, the rollout journal, and commands to host agents.

use super::{fence_arg, flag, Call, Lua, Raw};

/// ARGV: holder, ttl ms, whether the PAC's record must be here ('1': the state is kept
/// in the PSOR; '0': in a state Redis of its own, whose PAC record holds only the
/// epoch, the PAC having been found in the PSOR). Takes the coordinator lease if free
/// and bumps the fencing epoch. Returns `{OK, epoch}`, `{HELD, lock value, rollout id,
/// rollout state}` or `{NOPAC}`.
pub static LEASE_ACQUIRE: Lua = Lua::critical_state(
    "LEASE_ACQUIRE",
    &["OK", "HELD", "NOPAC"],
    r#"
if ARGV[3] == '1' and redis.call('EXISTS', K.meta()) == 0 then return {'NOPAC'} end
local cur = redis.call('GET', K.lock())
if cur then
  local r = redis.call('HMGET', K.rollout_current(), 'id', 'state')
  return {'HELD', cur, r[1] or '', r[2] or ''}
end
local epoch = redis.call('HINCRBY', K.meta(), 'epoch', 1)
redis.call('SET', K.lock(), ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
return {'OK', tostring(epoch)}
"#,
);

/// Taking the coordinator lease.
#[derive(Debug, Clone)]
pub struct AcquireLease<'a> {
    /// The holder text (see `LeaseHolder::encode`).
    pub holder: &'a str,
    /// Lease TTL.
    pub ttl_ms: u64,
    /// Whether the PAC's record must exist where the lease is (the state is the PSOR).
    pub pac_here: bool,
}

/// What [`AcquireLease`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireReply {
    /// Taken, with this fencing epoch.
    Ok {
        /// The new epoch.
        epoch: u64,
    },
    /// Held by another.
    Held {
        /// The lock's value (`<holder> <epoch>`).
        lock: String,
        /// The current rollout's id ("" when none).
        rollout: String,
        /// Its state ("" when none).
        state: String,
    },
    /// The PAC does not exist.
    NoPac,
}

impl Call for AcquireLease<'_> {
    type Reply = AcquireReply;
    fn lua() -> &'static Lua {
        &LEASE_ACQUIRE
    }
    fn args(&self) -> Vec<String> {
        vec![
            self.holder.into(),
            self.ttl_ms.to_string(),
            flag(self.pac_here),
        ]
    }
    fn decode(r: Raw) -> Option<AcquireReply> {
        Some(match r.code.as_str() {
            "OK" => AcquireReply::Ok { epoch: r.num(0) },
            "HELD" => AcquireReply::Held {
                lock: r.text(0),
                rollout: r.text(1),
                state: r.text(2),
            },
            "NOPAC" => AcquireReply::NoPac,
            _ => return None,
        })
    }
}

/// ARGV: lease value, ttl ms. Extends the lease only for its holder. Returns `{OK}` or
/// `{LOST}`.
pub static LEASE_RENEW: Lua = Lua::critical_state(
    "LEASE_RENEW",
    &["OK", "LOST"],
    r#"
local cur = redis.call('GET', K.lock())
if cur == ARGV[1] then
  redis.call('PEXPIRE', K.lock(), ARGV[2])
  return {'OK'}
end
-- Lapsed while the PSOR was unreachable (or restarted): taking the lease bumps the
-- epoch, so an unchanged epoch proves nobody took it meanwhile, and it is ours again.
local ep = string.match(ARGV[1], '(%d+)$')
if not cur and ep and (redis.call('HGET', K.meta(), 'epoch') or '0') == ep then
  redis.call('SET', K.lock(), ARGV[1], 'PX', ARGV[2])
  return {'OK'}
end
return {'LOST'}
"#,
);

/// Extending a held lease.
#[derive(Debug, Clone)]
pub struct RenewLease<'a> {
    /// The lock's value as taken.
    pub value: &'a str,
    /// New TTL.
    pub ttl_ms: u64,
}

fn held(r: Raw) -> Option<bool> {
    match r.code.as_str() {
        "OK" => Some(true),
        "LOST" => Some(false),
        _ => None,
    }
}

impl Call for RenewLease<'_> {
    /// Whether the lease was still ours.
    type Reply = bool;
    fn lua() -> &'static Lua {
        &LEASE_RENEW
    }
    fn args(&self) -> Vec<String> {
        vec![self.value.into(), self.ttl_ms.to_string()]
    }
    fn decode(r: Raw) -> Option<bool> {
        held(r)
    }
}

/// ARGV: lease value. Releases the lease only for its holder. Returns `{OK}` or `{LOST}`.
pub static LEASE_RELEASE: Lua = Lua::critical_state(
    "LEASE_RELEASE",
    &["OK", "LOST"],
    r#"
if redis.call('GET', K.lock()) ~= ARGV[1] then return {'LOST'} end
redis.call('DEL', K.lock())
return {'OK'}
"#,
);

/// Giving a held lease up.
#[derive(Debug, Clone)]
pub struct ReleaseLease<'a> {
    /// The lock's value as taken.
    pub value: &'a str,
}

impl Call for ReleaseLease<'_> {
    /// Whether the lease was still ours.
    type Reply = bool;
    fn lua() -> &'static Lua {
        &LEASE_RELEASE
    }
    fn args(&self) -> Vec<String> {
        vec![self.value.into()]
    }
    fn decode(r: Raw) -> Option<bool> {
        held(r)
    }
}

/// ARGV: fence, history entry ('' for none), n (number of state field pairs), state
/// pairs..., event pairs... Writes the rollout journal and its event in one atomic,
/// fenced step; a finished rollout's summary goes to the history list. Returns
/// `{OK, event id}` or `{FENCED, epoch}`.
pub static ROLLOUT_WRITE: Lua = Lua::critical_state(
    "ROLLOUT_WRITE",
    &["OK", "FENCED"],
    r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
local n = tonumber(ARGV[3])
local i = 4
-- A write repeated after its confirmation was lost (an outage, a write not confirmed
-- durable) must not apply twice: one whose event number the journal of the same
-- rollout already reached was applied (with its fields, in this same step), and later
-- writes may have changed those fields since. It writes the journal's own `seq` back
-- (no change), so the repeat's durability wait also covers the first write.
local ev_rollout, ev_seq = nil, nil
for j = i + 2 * n, #ARGV - 1, 2 do
  if ARGV[j] == 'rollout' then ev_rollout = ARGV[j + 1] end
  if ARGV[j] == 'seq' then ev_seq = tonumber(ARGV[j + 1]) end
end
if ev_rollout and ev_seq then
  local cur = redis.call('HMGET', K.rollout_current(), 'id', 'seq')
  if cur[1] == ev_rollout and tonumber(cur[2] or '0') >= ev_seq then
    redis.call('HSET', K.rollout_current(), 'seq', cur[2])
    return {'OK', ''}
  end
end
if n > 0 then
  local st = {}
  for j = 0, n - 1 do
    table.insert(st, ARGV[i + 2 * j]); table.insert(st, ARGV[i + 2 * j + 1])
  end
  redis.call('HSET', K.rollout_current(), unpack(st))
end
i = i + 2 * n
local id = ''
if i <= #ARGV then
  local ev = {}
  for j = i, #ARGV do table.insert(ev, ARGV[j]) end
  id = redis.call('XADD', K.events(), 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'ts_ms', now_ms(), unpack(ev))
end
if ARGV[2] ~= '' then
  redis.call('LPUSH', K.rollout_history(), ARGV[2])
  redis.call('LTRIM', K.rollout_history(), 0, HISTORY_LEN - 1)
end
return {'OK', id}
"#,
);

/// One fenced write of the rollout journal.
#[derive(Debug, Clone)]
pub struct RolloutWrite<'a> {
    /// The coordinator's epoch.
    pub fence: u64,
    /// Journal fields.
    pub state: &'a [(&'a str, String)],
    /// Event fields (none: no event).
    pub event: &'a [(&'a str, String)],
    /// A finished rollout's summary for the history.
    pub history: Option<&'a str>,
}

/// The reply of the scripts that only write under a fence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fenced<T> {
    /// Written.
    Ok(T),
    /// The fence is stale; nothing written.
    Stale {
        /// The PAC's current epoch.
        epoch: u64,
    },
}

impl Call for RolloutWrite<'_> {
    /// The event's stream id ("" without an event).
    type Reply = Fenced<String>;
    fn lua() -> &'static Lua {
        &ROLLOUT_WRITE
    }
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            self.fence.to_string(),
            self.history.unwrap_or("").to_string(),
            self.state.len().to_string(),
        ];
        for (k, v) in self.state.iter().chain(self.event) {
            args.extend([k.to_string(), v.clone()]);
        }
        args
    }
    fn decode(r: Raw) -> Option<Fenced<String>> {
        Some(match r.code.as_str() {
            "OK" => Fenced::Ok(r.text(0)),
            "FENCED" => Fenced::Stale { epoch: r.num(0) },
            _ => return None,
        })
    }
}

/// ARGV: fence, host, command JSON. Queues a control command for a host agent, only for
/// the current epoch (a fenced coordinator cannot drive agents). Returns `{OK}` or
/// `{FENCED, epoch}`.
pub static SEND_CONTROL: Lua = Lua::critical(
    "SEND_CONTROL",
    &["OK", "FENCED"],
    r#"
local f = fenced(ARGV[1]); if f then return {'FENCED', f} end
redis.call('XADD', K.host_control(ARGV[2]), 'MAXLEN', '~', CONTROL_MAXLEN, '*', 'cmd', ARGV[3])
return {'OK'}
"#,
);

/// A control command for a host agent.
#[derive(Debug, Clone)]
pub struct SendControl<'a> {
    /// The sender's epoch, if a coordinator sends it.
    pub fence: Option<u64>,
    /// The agent's host.
    pub host: &'a str,
    /// The command (JSON).
    pub body: &'a str,
}

impl Call for SendControl<'_> {
    type Reply = Fenced<()>;
    fn lua() -> &'static Lua {
        &SEND_CONTROL
    }
    fn args(&self) -> Vec<String> {
        vec![fence_arg(self.fence), self.host.into(), self.body.into()]
    }
    fn decode(r: Raw) -> Option<Fenced<()>> {
        Some(match r.code.as_str() {
            "OK" => Fenced::Ok(()),
            "FENCED" => Fenced::Stale { epoch: r.num(0) },
            _ => return None,
        })
    }
}

/// ARGV: host, command id, fence. Takes a command at most once; a command sent under an
/// epoch that is no longer current is refused. Returns `{OK}`, `{TAKEN}` or
/// `{FENCED, epoch}`.
pub static TAKE_CONTROL: Lua = Lua::critical(
    "TAKE_CONTROL",
    &["OK", "TAKEN", "FENCED"],
    r#"
if redis.call('HSETNX', K.host_done(ARGV[1]), ARGV[2], now_ms()) == 0 then
  return {'TAKEN'}
end
local f = fenced(ARGV[3]); if f then return {'FENCED', f} end
return {'OK'}
"#,
);

/// An agent taking a command.
#[derive(Debug, Clone)]
pub struct TakeControl<'a> {
    /// The agent's host.
    pub host: &'a str,
    /// The command's id.
    pub id: &'a str,
    /// The epoch it was sent under.
    pub fence: Option<u64>,
}

/// What [`TakeControl`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeReply {
    /// Taken now: run it.
    Ok,
    /// Taken before (a duplicate delivery): do not run it.
    Taken,
    /// Sent under an epoch no longer current.
    Fenced {
        /// The PAC's current epoch.
        epoch: u64,
    },
}

impl Call for TakeControl<'_> {
    type Reply = TakeReply;
    fn lua() -> &'static Lua {
        &TAKE_CONTROL
    }
    fn args(&self) -> Vec<String> {
        vec![self.host.into(), self.id.into(), fence_arg(self.fence)]
    }
    fn decode(r: Raw) -> Option<TakeReply> {
        Some(match r.code.as_str() {
            "OK" => TakeReply::Ok,
            "TAKEN" => TakeReply::Taken,
            "FENCED" => TakeReply::Fenced { epoch: r.num(0) },
            _ => return None,
        })
    }
}
