//! The region runtime: how a region starts, stays alive and stops.
//!
//! - `decide`: the start-type rules applied to a [`Snapshot`](crate::psor::Snapshot)
//!   ([`decide_start`], pure, table-tested);
//! - `start`: [`Region::start`] commits a decision atomically with [`Pac::join`](crate::psor::Pac::join) only if
//!   the PAC is unchanged since the snapshot, and decides again on a conflict;
//! - `config`: what a region is started with ([`RegionConfig`]);
//! - `runtime`: a started region at work (client listener, batch worker) and its stops;
//! - `heartbeat`: liveness, and the mode notifications that reach it at once.
//!
//! On shutdown a region leaves its store and marks itself stopped.

mod config;
mod decide;
mod heartbeat;
mod listener;
mod runtime;
mod start;
mod worker;

/// The start type is a protocol value (it lives in [`crate::psor`]); re-exported here,
/// where starts are decided.
pub use crate::psor::StartType;
pub use config::{ListenerStart, RegionConfig};
pub use decide::{decide_start, StartDecision};
pub use runtime::{Region, RegionHandle};

use crate::error::Result;
use crate::psor::Mode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Something a running region reports (printed by `region run`, logged by agents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionEvent {
    /// The region joined a store.
    Started {
        /// Effective start type.
        start_type: StartType,
        /// Store joined.
        store: String,
        /// Its mode.
        mode: Mode,
        /// Cold-to-warm warning, if any.
        warning: Option<String>,
    },
    /// Its store's mode changed.
    ModeChanged {
        /// Previous mode.
        from: Mode,
        /// New mode.
        to: Mode,
    },
    /// The client listener changed.
    Listener {
        /// On or off.
        on: bool,
        /// Endpoint.
        endpoint: String,
    },
    /// The region lost ownership (PAC reset, another instance) or its store is gone.
    Lost(String),
    /// The region left its store.
    Stopped {
        /// Whether the stop had to be forced.
        forced: bool,
    },
}

/// Observer of region events.
pub type Observer = Arc<dyn Fn(&str, &RegionEvent) + Send + Sync>;

/// Requests to a running region (from its host agent or its signal handler).
#[derive(Debug)]
pub enum RegionControl {
    /// Turn the client listener on or off.
    Listener {
        /// On or off.
        on: bool,
        /// Outcome.
        reply: oneshot::Sender<Result<String>>,
    },
    /// Stop: listener off, wait up to `drain` for clients to leave, finish the job in
    /// hand, leave the store. Past `timeout` (or at once with `force`) the stop is forced:
    /// clients are cut and the job in hand is abandoned, to be reclaimed by another region.
    Stop {
        /// Client drain bound.
        drain: Duration,
        /// Whole-stop bound.
        timeout: Duration,
        /// Force at once.
        force: bool,
        /// Outcome.
        reply: oneshot::Sender<Result<String>>,
    },
    /// Die abruptly (no leave, no listener shutdown courtesy): a crash, for fault tests.
    Crash,
}
