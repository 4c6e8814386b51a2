//! The library's one error type.
//!
//! Every failure a caller can act on has its own variant, and each variant knows which
//! exit code it maps to and whether retrying could help, so binaries classify errors
//! in one place (`Error::exit_code`) instead of matching strings.

use crate::psor::rollout::LeaseHolder;
use crate::psor::StartType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Exit codes shared by both binaries (docs/reference.md#exit-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// Success; for check-compat: compatible.
    Ok = 0,
    /// Refused or failed because of the PAC's state, or the rollout failed.
    Refused = 1,
    /// Invalid input (arguments, names, versions, plan file).
    InvalidInput = 2,
    /// check-compat: incompatible.
    Incompatible = 3,
    /// Another coordinator holds the PAC's lease.
    LeaseHeld = 4,
    /// The PSOR cannot be reached or authenticated.
    Unreachable = 5,
    /// Rollout paused, waiting for an operator.
    Paused = 6,
    /// Rollout failed and was rolled back by its failure policy.
    RolledBack = 7,
    /// Rollout held before finalisation, as its plan asked (not a failure).
    Held = 8,
    /// `rollout status --watch` timed out before the rollout reached the state it waited for.
    WatchTimeout = 9,
}

impl ExitCode {
    /// Every code, in order: the documented tables are tested against this list.
    pub const ALL: [ExitCode; 10] = [
        ExitCode::Ok,
        ExitCode::Refused,
        ExitCode::InvalidInput,
        ExitCode::Incompatible,
        ExitCode::LeaseHeld,
        ExitCode::Unreachable,
        ExitCode::Paused,
        ExitCode::RolledBack,
        ExitCode::Held,
        ExitCode::WatchTimeout,
    ];

    /// The process exit status.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The exit code with this status, if it is one of ours.
    pub fn from_code(code: i32) -> Option<ExitCode> {
        ExitCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// One line saying what the code means (the `--help` and docs tables).
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Ok => "success (check-compat: compatible; rollout: done)",
            ExitCode::Refused => {
                "refused or failed because of the PAC's state; rollout failed or aborted"
            }
            ExitCode::InvalidInput => "invalid input (arguments, names, versions, plan file)",
            ExitCode::Incompatible => "check-compat: incompatible",
            ExitCode::LeaseHeld => "another coordinator holds the PAC's lease",
            ExitCode::Unreachable => "the PSOR cannot be reached or authenticated",
            ExitCode::Paused => "rollout paused, waiting for an operator (rollout resume)",
            ExitCode::RolledBack => "rollout failed and was rolled back by its failure policy",
            ExitCode::Held => "rollout held before finalisation, as its plan asked (not a failure)",
            ExitCode::WatchTimeout => {
                "rollout status --watch timed out before the rollout reached the awaited state"
            }
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(c: ExitCode) -> Self {
        // Every code is in 0..=9, so the narrowing is exact.
        std::process::ExitCode::from(c.code() as u8)
    }
}

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A user-supplied value does not have the accepted form. Nothing was written.
    #[error("invalid {field} {value:?}: {expected}")]
    InvalidInput {
        /// Which input (e.g. "PAC name", "--product-version").
        field: String,
        /// What was given (never a secret).
        value: String,
        /// The accepted form.
        expected: String,
    },
    /// A file given by the user could not be read or parsed. Nothing was written.
    #[error("cannot use {what} {path}: {reason}")]
    BadFile {
        /// What the file is for ("compatibility matrix", "resource definitions").
        what: String,
        /// The path as given.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The PSOR could not be reached (connection refused, timeout, DNS, TLS handshake).
    #[error("cannot reach the PSOR at {target}: {reason}")]
    Unreachable {
        /// The PSOR address with any password removed.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// A critical write was applied by the PSOR's master, but fewer replicas (or AOF
    /// fsyncs) than `--durability` asks confirmed it within the bound, even when asked
    /// again: a failover now could discard it, so it is not reported done. Every
    /// critical write is idempotent; repeating it (on the new master, after a failover)
    /// is safe.
    #[error("the PSOR at {target} did not confirm a write as durable ({durability}): {acked} of {wanted} confirmations")]
    NotDurable {
        /// The PSOR address with any password removed.
        target: String,
        /// The `--durability` in force (`replica`, `aof`).
        durability: &'static str,
        /// Confirmations received.
        acked: u64,
        /// Confirmations asked for.
        wanted: u64,
    },
    /// Something answers at the PSOR's address, but not in the Redis protocol (an HTTP
    /// server, a TLS port spoken to in plain text, ...).
    #[error("the server at {target} does not speak the Redis protocol; is this the PSOR's address and port (rediss:// for TLS)?")]
    NotRedis {
        /// The PSOR address with any password removed.
        target: String,
    },
    /// The PSOR refused our credentials.
    #[error("the PSOR at {target} refused authentication: {reason}")]
    AuthFailed {
        /// The PSOR address with any password removed.
        target: String,
        /// The server's answer.
        reason: String,
    },
    /// The action is refused because of the PAC's current state. Nothing was written.
    #[error("{0}")]
    Refused(String),
    /// Refused because of the PAC's state, with a known next step that the command line
    /// phrases in its own syntax (a flag of `pacup`, nothing for `caspac`). Nothing was
    /// written.
    #[error("{message}")]
    RefusedWith {
        /// What is in the way.
        message: String,
        /// What would work.
        advice: Advice,
    },
    /// The PAC does not exist in the PSOR. (No advice on creating it: the name is more
    /// often a typo than a PAC to create; the CLI lists close names.)
    #[error("PAC {0} does not exist in the PSOR")]
    NoSuchPac(String),
    /// No host agent of the PAC lists the region, and no record of it names a host.
    #[error("region {region} is not known in PAC {pac}: no host agent lists it")]
    NoSuchRegion {
        /// The PAC.
        pac: String,
        /// The region asked for.
        region: String,
    },
    /// The PAC has no host agent of that name.
    #[error("host {host} is not known in PAC {pac}")]
    NoSuchHost {
        /// The PAC.
        pac: String,
        /// The host asked for.
        host: String,
    },
    /// The host agent that would carry out a command is not alive.
    #[error("the host agent of {host}{} is not alive", hosts_part(.region))]
    AgentDown {
        /// Its host.
        host: String,
        /// The region the command was for, if any.
        region: Option<String>,
    },
    /// A region of the PAC is alive, and the reset asked for (InitPac, the reset that
    /// opens a cold start) needs every region stopped. Nothing was written; a cold start
    /// decides again (it becomes warm).
    #[error("PAC {pac} has a live region ({region}); stop every region first")]
    RegionAlive {
        /// The PAC.
        pac: String,
        /// A live region.
        region: String,
    },
    /// The command line does not have the accepted form (the legacy `caspac` syntax).
    /// Nothing was written.
    #[error("{0}")]
    Usage(String),
    /// A PSOR script answered something it is not written to answer (a PSOR changed by
    /// another program, or a version mismatch).
    #[error("unexpected reply {reply:?} from PSOR script {script}")]
    UnexpectedReply {
        /// The script.
        script: &'static str,
        /// What it answered.
        reply: String,
    },
    /// Another writer changed the PAC while we decided; the caller may re-read and retry.
    #[error("the PAC changed while this action was being decided; retry")]
    Conflict,
    /// A write was refused because our fencing epoch is stale: a newer coordinator owns the PAC.
    #[error("fenced: this coordinator's epoch {ours} is older than the PAC's epoch {current}")]
    Fenced {
        /// The epoch this writer holds.
        ours: u64,
        /// The epoch recorded in the PAC.
        current: u64,
    },
    /// A coordinator that keeps its state apart from the PSOR (`--state`) was about to
    /// change the PSOR itself through a script (a store change the plan has no template
    /// for, the rollback's direct store steps). It writes nothing to the PSOR: the
    /// epoch that fences it lives in the state Redis, so the PSOR's scripts could not
    /// fence it. Nothing was written.
    #[error(
        "PAC {pac}: this would change the PSOR directly (script {script}), which a \
         coordinator keeping its state apart (--state) never does; nothing was written. \
         The rollout's store changes need their templates in the plan; a rollback's own \
         store steps (a quiesced store running again, the new store deleted) have none: \
         make the change with the vendor's tools, then resume (the step finds it done)"
    )]
    StateApart {
        /// The PAC.
        pac: String,
        /// The PSOR script that was refused.
        script: &'static str,
    },
    /// Another coordinator holds the PAC's lease.
    #[error("another coordinator holds the lease of PAC {pac}{}: {holder}", rollout_part(.rollout))]
    LeaseHeld {
        /// The PAC.
        pac: String,
        /// The active rollout it drives (id and state), if any.
        rollout: Option<(String, String)>,
        /// Who holds it, since when.
        holder: LeaseHolder,
    },
    /// A Redis command failed for a reason other than reachability.
    #[error("PSOR command failed: {0}")]
    Redis(#[source] redis::RedisError),
    /// A local address given by the user cannot be listened on (in use, not an address of
    /// this machine, not permitted). Nothing was started or written.
    #[error("cannot serve {what} on {addr}: {reason}")]
    CannotListen {
        /// What would have been served there ("metrics").
        what: String,
        /// The address as given.
        addr: String,
        /// The operating system's reason.
        reason: String,
    },
    /// Local I/O failed (files, sockets we serve).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Library result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for an invalid-input error.
    pub fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Error::InvalidInput {
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// Shorthand for a state refusal.
    pub fn refused(msg: impl Into<String>) -> Self {
        Error::Refused(msg.into())
    }

    /// The exit code this error maps to.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::InvalidInput { .. } | Error::BadFile { .. } | Error::Usage(_) => {
                ExitCode::InvalidInput
            }
            // Like an unreadable file given by the user: fix the argument and run again.
            Error::CannotListen { .. } => ExitCode::InvalidInput,
            Error::Unreachable { .. }
            | Error::AuthFailed { .. }
            | Error::NotRedis { .. }
            | Error::NotDurable { .. } => ExitCode::Unreachable,
            Error::LeaseHeld { .. } | Error::Fenced { .. } => ExitCode::LeaseHeld,
            Error::Redis(e) if is_unreachable(e) => ExitCode::Unreachable,
            Error::Refused(_)
            | Error::StateApart { .. }
            | Error::RefusedWith { .. }
            | Error::NoSuchPac(_)
            | Error::NoSuchRegion { .. }
            | Error::NoSuchHost { .. }
            | Error::AgentDown { .. }
            | Error::RegionAlive { .. }
            | Error::UnexpectedReply { .. }
            | Error::Conflict
            | Error::Redis(_)
            | Error::Io { .. } => ExitCode::Refused,
        }
    }

    /// A refusal with a next step.
    pub fn refused_with(msg: impl Into<String>, advice: Advice) -> Self {
        Error::RefusedWith {
            message: msg.into(),
            advice,
        }
    }

    /// The next step a refusal suggests, if it knows one.
    pub fn advice(&self) -> Option<&Advice> {
        match self {
            Error::RefusedWith { advice, .. } => Some(advice),
            _ => None,
        }
    }

    /// Whether this is the PSOR being out of reach (down, cut off, restarting, or not
    /// confirming writes durable) rather than a refusal: what long-running processes ride
    /// out with backoff instead of giving up.
    pub fn is_outage(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::NotDurable { .. } => true,
            Error::Redis(e) => {
                is_unreachable(e)
                    || matches!(
                        e.code(),
                        Some("LOADING" | "READONLY" | "MASTERDOWN" | "TRYAGAIN")
                    )
            }
            _ => false,
        }
    }

    /// Whether repeating the same action later could succeed without anyone changing
    /// the input: lost connections and optimistic-concurrency conflicts are retryable,
    /// refusals and bad input are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict | Error::Unreachable { .. } | Error::NotDurable { .. } => true,
            Error::Redis(e) => is_unreachable(e) || e.is_timeout(),
            _ => false,
        }
    }
}

/// What would get a refused action through, independent of any command line's syntax:
/// `pacup` turns it into a hint naming its flags; it travels in agents' replies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "advice", rename_all = "snake_case")]
pub enum Advice {
    /// Start the region with this start type instead.
    StartType {
        /// The start type that applies.
        start_type: StartType,
    },
    /// Repeat the action forced; `to` says what forcing does ("restore over it").
    Force {
        /// What the forced action does, as the start of a sentence.
        to: String,
    },
    /// Finish the deletion of the PAC's detached stores first (RemOldPAC).
    FinishRemoval {
        /// The PAC.
        pac: String,
    },
    /// Going back is a rollback, not an upgrade start.
    Rollback {
        /// The PAC.
        pac: String,
    },
}

fn hosts_part(r: &Option<String>) -> String {
    match r {
        Some(r) => format!(" (which hosts region {r})"),
        None => String::new(),
    }
}

fn rollout_part(r: &Option<(String, String)>) -> String {
    match r {
        Some((id, state)) => format!(" and drives its rollout {id} ({state})"),
        None => String::new(),
    }
}

/// Whether a Redis error means the server is gone (as opposed to a command error).
pub(crate) fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() || e.is_timeout()
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || e.code() == Some("WRONGPASS")
            || e.code() == Some("NOAUTH")
        {
            return Error::AuthFailed {
                target: "PSOR".into(),
                reason: e.to_string(),
            };
        }
        Error::Redis(e)
    }
}
