//! The host's record: what a (re)starting host agent takes from the PSOR before it
//! serves (the product installed on its host, and whether a rollout is acting on the
//! host right now), and the record's publication with the host's liveness.
//!
//! The host's record (`pac:{P}:host:H`) outlives the agent (a crash, a graceful stop):
//! it keeps the installed `product_version` and `started_with`, the `--product-version`
//! of the agent that wrote it. An agent restarted with that same command line after an
//! `apply_update` (a supervisor restarting it as it was first started) would otherwise
//! believe the old version is installed and start regions at it; it takes the recorded
//! version instead. A different `--product-version` is a new installation and wins.

use super::Agent;
use crate::coordinator::journal::Journal;
use crate::error::Result;
use crate::names::{HostName, Product};
use crate::psor::Pac;
use crate::region::StartType;
use std::sync::Arc;
use tokio::sync::watch;

impl Agent {
    /// The product version installed on the host, as this agent runs it (the host
    /// record's over a stale `--product-version`).
    pub fn product_version(&self) -> String {
        self.lock().product.version.to_string()
    }

    /// Publishes the host record (installed product, regions) and the host's liveness.
    pub(super) async fn publish(&self) -> Result<()> {
        let product = self.lock().product.clone();
        let checks = crate::hostcheck::measure(&self.cfg.check_paths);
        self.pac
            .host_heartbeat(
                self.cfg.host.as_str(),
                &product,
                &self.started_with,
                &self.region_names(),
                &checks,
                self.cfg.host_ttl,
            )
            .await
    }

    /// Publishes the record every third of the host TTL until told to stop.
    pub(super) async fn host_beats(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.host_ttl / 3);
        loop {
            tokio::select! {
                _ = crate::until_true(&mut stop) => return,
                _ = tick.tick() => {
                    if let Err(e) = self.publish().await {
                        tracing::warn!("host heartbeat failed: {e}");
                    }
                }
            }
        }
    }
}

/// The product to run with: the recorded one when `flag` (the agent's
/// `--product-version`) is what the record's writer was started with but the record
/// shows another version (an update the flag cannot know of); `flag` otherwise.
pub(super) async fn installed(pac: &Pac, host: &str, flag: &Product) -> Result<Product> {
    let Some((recorded, started_with)) = pac.host_installed(host).await? else {
        return Ok(flag.clone());
    };
    let flagged = flag.version.to_string();
    if recorded == flagged || started_with != flagged {
        return Ok(flag.clone());
    }
    let Ok(version) = crate::names::parse_version("product_version", &recorded) else {
        return Ok(flag.clone());
    };
    tracing::warn!(
        "host {host}: --product-version {flagged} is stale: the host's record shows {recorded} \
         installed (by an update since this command line was first used); running {recorded}"
    );
    Ok(Product {
        version,
        ..flag.clone()
    })
}

/// How the agent autostarts its regions (`flag`: its `--autostart`), or not at all.
/// Not while a rollout is acting on its host (see [`Journal::owns_host`]), whose
/// coordinator starts them at the version it wants, in the store it wants. While a
/// rollout is active elsewhere (before or after this host's part) a cold start becomes
/// warm: a cold start with no region alive at that instant (the other hosts' regions
/// may all be stopping) would wipe the PAC, the rollout's journal and its new store.
pub(super) async fn autostart(
    pac: &Pac,
    host: &HostName,
    regions: &[String],
    flag: StartType,
) -> Result<Option<StartType>> {
    let j = Journal::decode(&pac.rollout_current().await?)?;
    if j.owns_host(host.as_str()) {
        tracing::warn!(
            "not autostarting {}: rollout {} is acting on host {host}; its coordinator starts them",
            regions.join(", "),
            j.id
        );
        return Ok(None);
    }
    let active = j.state.is_some_and(|s| s.is_active());
    if active && flag == StartType::Cold {
        tracing::warn!(
            "autostarting {} warm, not cold: rollout {} is active, and a cold start could \
             wipe the PAC it is upgrading",
            regions.join(", "),
            j.id
        );
        return Ok(Some(StartType::Warm));
    }
    Ok(Some(flag))
}
