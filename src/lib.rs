//! pacup: a rolling-upgrade coordinator for PAC regions whose shared state lives in a
//! Redis PSOR. Commands and outputs are in `docs/reference.md`; the layout and rules as
//! implemented are in `docs/PSOR.md`.
//!
//! Modules, and what each owns:
//! - [`error`]: the typed [`Error`] enum; each variant knows its exit code and
//!   whether a retry could help.
//! - [`names`]: validated inputs (PAC, region and host names, versions, OS, bitness,
//!   durations). Nothing invalid gets past the edge.
//! - [`conn`]: reaching the PSOR (URLs, credentials, TLS, Sentinel, timeouts).
//! - [`psor`]: the PSOR layout. `psor::keys` is the only place that spells key names (the
//!   Lua scripts get them from a prelude generated there) and `psor::scripts` holds every
//!   Lua script that changes a PAC's state, each with its typed reply.
//! - [`compat`]: the compatibility rules (default rule and matrix files).
//! - [`resources`]: region resource definitions loaded into new stores.
//! - [`region`]: the region runtime (start-type rules, the start's commit and retries,
//!   heartbeat, mode notifications, graceful stop).
//! - [`agent`]: the host agent (several regions in one process, one slot each, obeying
//!   control commands sent through the PSOR).
//! - [`hostcheck`]: free disk space and a writable temp directory, measured by the host
//!   agent and judged by the coordinator against the plan's `host_checks`.
//! - [`coordinator`]: the rollout coordinator (plan file, a step enum dispatching to one
//!   small type per step, journal, lease and fencing, failure policy, rollback).
//! - [`load`]: workload drivers (client load balancer, job submitter).
//! - [`metrics`]: the Prometheus metrics of `--metrics-addr` (every metric name) and
//!   their HTTP server.
//! - [`report`]: `rollout report`, a rollout as one self-contained HTML page (reading the
//!   PSOR, then pure model building and rendering).
//! - [`cli`]: the command line: clap structs for `pacup`, the legacy `caspac` translator
//!   into the same structs, and the command implementations with their output.

pub mod agent;
pub mod cli;
pub mod compat;
pub mod conn;
pub mod coordinator;
pub mod error;
pub mod hostcheck;
pub mod load;
pub mod metrics;
pub mod names;
pub mod psor;
pub mod region;
pub mod report;
pub mod resources;

pub use error::{Error, ExitCode, Result};

/// Resolves once a shutdown flag turns true (or its sender is gone). Returns `()` so no
/// watch guard is held across the `select!` branch that follows.
pub(crate) async fn until_true(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
