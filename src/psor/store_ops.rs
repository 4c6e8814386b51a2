//! InitPac and the store modes: the operator's and the coordinator's changes of a PAC's
//! stores that delete nothing (see `removal` for those that do).

use super::model::Mode;
use super::scripts::{
    Reset, ResetReply, SetMode, SetModeReply, SetRunningVersion, StoreReply, Unquiesce,
};
use super::Pac;
use crate::error::{Advice, Error, Result};
use crate::psor::StartType;

impl Pac {
    /// InitPac: wipes the PAC (all but `ds:*`) and recreates its record. Refused while
    /// any region is alive unless `force` ([`Error::RegionAlive`]). Returns the number of
    /// store keys deleted.
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
        let call = Reset {
            fence,
            force,
            actor,
            why,
            cold_start,
        };
        match self.eval(&call).await? {
            ResetReply::Ok { gen } => Ok(gen),
            ResetReply::Alive { region } => Err(Error::RegionAlive {
                pac: self.name.to_string(),
                region,
            }),
            ResetReply::Fenced { epoch } => Err(self.fenced(fence, epoch)),
        }
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
        let pac = &self.name;
        match self.eval(&SetMode { fence, mode, actor }).await? {
            SetModeReply::Ok { changed } => Ok(changed),
            SetModeReply::NoPac => Err(Error::NoSuchPac(pac.to_string())),
            SetModeReply::NoStore => Err(Error::refused(format!(
                "PAC {pac} has no store; cold start a region first"
            ))),
            SetModeReply::Nothing if mode == Mode::Running => Err(Error::refused_with(
                format!("no store of PAC {pac} is in upgrade mode; nothing to set running"),
                Advice::StartType {
                    start_type: StartType::Upgrade,
                },
            )),
            SetModeReply::Nothing => Err(Error::refused(format!(
                "no running store of PAC {pac} is older than the newest store; nothing to quiesce"
            ))),
            SetModeReply::NoRunning { newest, mode } => Err(Error::refused(format!(
                "quiescing would leave PAC {pac} with no running store: the newest store \
                 {newest} is in mode {mode}; set it running first"
            ))),
            SetModeReply::Fenced { epoch } => Err(self.fenced(fence, epoch)),
        }
    }

    /// Rollback: a quiesced store becomes running again.
    pub async fn unquiesce(&self, version: &str, actor: &str, fence: u64) -> Result<()> {
        let call = Unquiesce {
            fence,
            version,
            actor,
        };
        self.store_change(self.eval(&call).await?, version, fence)
    }

    /// Records that every member of `store` now runs `version`.
    pub async fn set_running_version(&self, store: &str, version: &str, fence: u64) -> Result<()> {
        let call = SetRunningVersion {
            fence,
            store,
            version,
        };
        self.store_change(self.eval(&call).await?, store, fence)
    }

    fn store_change(&self, r: StoreReply, store: &str, fence: u64) -> Result<()> {
        match r {
            StoreReply::Ok => Ok(()),
            StoreReply::Fenced { epoch } => Err(self.fenced(Some(fence), epoch)),
            StoreReply::NoStore => Err(Error::refused(format!(
                "store {store} of PAC {} does not exist",
                self.name
            ))),
        }
    }
}
