//! The action names of steps and events, and the phases of `backup` steps.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Action names, as events carry them (docs/reference.md#events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Checks before anything changes.
    Preflight,
    /// Stop new client connections to a region.
    ListenerOff,
    /// Wait for a region's clients to leave.
    Drain,
    /// Stop a region gracefully.
    Stop,
    /// Install a version on a host.
    ApplyUpdate,
    /// Confirm the target's compatibility verdict against the PSOR.
    CheckCompat,
    /// Start the first upgraded region in upgrade mode (creates the new store).
    StartUpgrade,
    /// Warm start a region.
    StartWarm,
    /// Wait until every region of a wave is live and active long enough.
    HealthGate,
    /// A store takes batch work.
    SetModeRunning,
    /// Let clients back in to a region.
    ListenerOn,
    /// Older running stores stop taking batch work.
    SetModeQuiesce,
    /// Check the end state.
    Verify,
    /// Delete the old store (in a rollback: the new one).
    RemoveOld,
    /// Rolling back (events only).
    Rollback,
    /// Paused (events only).
    Pause,
    /// Finished (events only).
    Done,
    /// Health monitoring suspended (events only).
    MonitorSuspend,
    /// Health monitoring resumed (events only).
    MonitorResume,
    /// The plan was amended by `rollout resume --plan` (events only).
    Amend,
    /// Save the PAC before a store is created or deleted.
    Backup,
    /// Check a wave's hosts (disk space, temp directory) before it starts.
    HostCheck,
}

impl Action {
    /// The name in events and step lists.
    pub fn name(self) -> &'static str {
        match self {
            Action::Preflight => "preflight",
            Action::ListenerOff => "listener_off",
            Action::Drain => "drain",
            Action::Stop => "stop",
            Action::ApplyUpdate => "apply_update",
            Action::CheckCompat => "check_compat",
            Action::StartUpgrade => "start_upgrade",
            Action::StartWarm => "start_warm",
            Action::HealthGate => "health_gate",
            Action::SetModeRunning => "set_mode_running",
            Action::ListenerOn => "listener_on",
            Action::SetModeQuiesce => "set_mode_quiesce",
            Action::Verify => "verify",
            Action::RemoveOld => "remove_old",
            Action::Rollback => "rollback",
            Action::Pause => "pause",
            Action::Done => "done",
            Action::MonitorSuspend => "monitor_suspend",
            Action::MonitorResume => "monitor_resume",
            Action::Amend => "amend",
            Action::Backup => "backup",
            Action::HostCheck => "host_check",
        }
    }

    /// Steps of this action that follow each other run as one parallel group.
    pub fn parallel(self) -> bool {
        matches!(
            self,
            Action::ListenerOff
                | Action::Drain
                | Action::Stop
                | Action::ApplyUpdate
                | Action::StartWarm
                | Action::ListenerOn
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which store change a `backup` step precedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupPhase {
    /// Before `start_upgrade` creates the new store.
    BeforeUpgrade,
    /// Before `remove_old` deletes the old store.
    BeforeRemoveOld,
    /// Before a rollback deletes the new store.
    BeforeRemoveNew,
}

impl BackupPhase {
    /// Its name in step lists, events and backup file names.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupPhase::BeforeUpgrade => "before_upgrade",
            BackupPhase::BeforeRemoveOld => "before_remove_old",
            BackupPhase::BeforeRemoveNew => "before_remove_new",
        }
    }
}
