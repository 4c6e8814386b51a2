//! The library's one error type.
//!
//! Every failure a caller can act on has its own variant, and each variant knows which
//! exit code it maps to and whether retrying could help, so binaries classify errors
//! in one place (`Error::exit_code`) instead of matching strings.

use crate::psor::rollout::LeaseHolder;
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
    /// The PAC does not exist in the PSOR. (No advice on creating it: the name is more
    /// often a typo than a PAC to create; the CLI lists close names.)
    #[error("PAC {0} does not exist in the PSOR")]
    NoSuchPac(String),
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
            Error::InvalidInput { .. } | Error::BadFile { .. } => ExitCode::InvalidInput,
            // Like an unreadable file given by the user: fix the argument and run again.
            Error::CannotListen { .. } => ExitCode::InvalidInput,
            Error::Unreachable { .. } | Error::AuthFailed { .. } | Error::NotRedis { .. } => {
                ExitCode::Unreachable
            }
            Error::LeaseHeld { .. } | Error::Fenced { .. } => ExitCode::LeaseHeld,
            Error::Redis(e) if is_unreachable(e) => ExitCode::Unreachable,
            Error::Refused(_)
            | Error::NoSuchPac(_)
            | Error::Conflict
            | Error::Redis(_)
            | Error::Io { .. } => ExitCode::Refused,
        }
    }

    /// Whether repeating the same action later could succeed without anyone changing
    /// the input: lost connections and optimistic-concurrency conflicts are retryable,
    /// refusals and bad input are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict | Error::Unreachable { .. } => true,
            Error::Redis(e) => is_unreachable(e) || e.is_timeout(),
            _ => false,
        }
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
