//! A region's life in the PSOR: joining a store, heartbeats, its record, leaving, and a
//! restarted agent's clean-up.

use super::model::{Mode, StartType};
use super::scripts::{
    Beat, CleanRegion, CleanReply, Heartbeat, Join, JoinReply, Leave, Owned, RegionFields,
};
use super::Pac;
use crate::error::{Advice, Error, Result};
use crate::names::Product;

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
    /// Heartbeat interval.
    pub interval_ms: u64,
    /// Effective start type.
    pub start_type: StartType,
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

impl Pac {
    /// Commits a region start decided from a snapshot.
    pub async fn join(&self, req: &JoinRequest, actor: &str) -> Result<JoinOutcome> {
        match self.eval(&Join { req, actor }).await? {
            JoinReply::Ok { store, mode } => Ok(JoinOutcome::Joined {
                store,
                mode: mode.unwrap_or(Mode::Upgrade),
            }),
            JoinReply::Conflict => Ok(JoinOutcome::Conflict),
            JoinReply::Alive { region } => Ok(JoinOutcome::OtherAlive(region)),
            JoinReply::NoPac => Err(Error::NoSuchPac(self.name.to_string())),
            JoinReply::Running { host } => Err(Error::refused(format!(
                "region {} is already running (on host {host})",
                req.region
            ))),
            JoinReply::Removing { version } => Err(Error::refused_with(
                format!(
                    "store {version} of PAC {} is still being deleted",
                    self.name
                ),
                Advice::FinishRemoval {
                    pac: self.name.to_string(),
                },
            )),
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
        self.eval(&Beat {
            region,
            token,
            ttl_ms,
            clients,
        })
        .await
    }

    /// Leaves the region's store and records `state` (`stopped`). Returns false when the
    /// region is no longer ours (nothing written).
    pub async fn leave(&self, region: &str, token: &str, state: &str, actor: &str) -> Result<bool> {
        let call = Leave {
            region,
            token,
            state,
            actor,
        };
        Ok(self.eval(&call).await? == Owned::Ok)
    }

    /// Writes fields of a region's record (listener, endpoint, ...) if this instance still
    /// owns it. Returns false when it does not (nothing written).
    pub async fn set_region_fields(
        &self,
        region: &str,
        token: &str,
        fields: &[(&str, String)],
    ) -> Result<bool> {
        let call = RegionFields {
            region,
            token,
            fields,
        };
        Ok(self.eval(&call).await? == Owned::Ok)
    }

    /// Cleans a region recorded on `host` after that host's agent restarted. Returns
    /// whether anything was cleaned; refused when the region is alive on another host.
    pub async fn clean_region(&self, region: &str, host: &str, actor: &str) -> Result<bool> {
        match self
            .eval(&CleanRegion {
                region,
                host,
                actor,
            })
            .await?
        {
            CleanReply::Cleaned => Ok(true),
            CleanReply::Clean => Ok(false),
            CleanReply::Other { host } => Err(Error::refused(format!(
                "region {region} is alive on host {host}; a region can run on one host only"
            ))),
        }
    }
}
