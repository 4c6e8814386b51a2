//! Reads of a whole PAC (two pipelined round trips, never one command per key) and of
//! the PACs in a PSOR.

use super::keys;
use super::model::{HostInfo, Mode, PacSummary, Snapshot, StoreInfo, StoreSummary};
use super::scan::scan_page;
use super::Pac;
use crate::conn::Psor;
use crate::error::{Error, Result};
use crate::names::PacName;
use redis::AsyncCommands;
use std::collections::HashMap;

fn num<T: std::str::FromStr + Default>(h: &HashMap<String, String>, k: &str) -> T {
    h.get(k).and_then(|v| v.parse().ok()).unwrap_or_default()
}

fn text(h: &HashMap<String, String>, k: &str) -> String {
    h.get(k).cloned().unwrap_or_default()
}

impl Pac {
    /// Reads the whole PAC in two pipelined round trips.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let k = &self.keys;
        let mut c = self.conn();
        #[allow(clippy::type_complexity)]
        let (meta, stores, regions, hosts, removing): (
            HashMap<String, String>,
            Vec<String>,
            Vec<String>,
            Vec<String>,
            Vec<String>,
        ) = redis::pipe()
            .hgetall(k.meta())
            .zrange(k.stores(), 0, -1)
            .smembers(k.regions())
            .smembers(k.hosts())
            .smembers(k.removing())
            .query_async(&mut c)
            .await
            .map_err(|e| self.psor.err(e))?;
        let mut regions = regions;
        regions.sort();
        let mut hosts = hosts;
        hosts.sort();
        let mut p = redis::pipe();
        // Heartbeat ages on the PSOR's clock, the one the heartbeats were stamped with.
        p.cmd("TIME");
        for v in &stores {
            p.hgetall(k.store_meta(v)).smembers(k.store_members(v));
        }
        for r in &regions {
            p.hgetall(k.region(r)).pttl(k.region_alive(r));
        }
        for h in &hosts {
            p.hgetall(k.host(h)).exists(k.host_alive(h));
        }
        let values: Vec<redis::Value> =
            if stores.is_empty() && regions.is_empty() && hosts.is_empty() {
                Vec::new()
            } else {
                p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?
            };
        let mut it = values.into_iter();
        let now = super::views::redis_now(it.next());
        let mut next = || it.next().unwrap_or(redis::Value::Nil);
        let mut region_infos = Vec::new();
        let mut store_infos = Vec::new();
        let mut store_raw = Vec::new();
        for v in &stores {
            let m: HashMap<String, String> = redis::from_redis_value(next()).unwrap_or_default();
            let mut members: Vec<String> = redis::from_redis_value(next()).unwrap_or_default();
            members.sort();
            store_raw.push((v.clone(), m, members));
        }
        for r in &regions {
            let h: HashMap<String, String> = redis::from_redis_value(next()).unwrap_or_default();
            let pttl: i64 = redis::from_redis_value(next()).unwrap_or(-2);
            region_infos.push(super::views::region_info(r, &h, pttl, now));
        }
        for (v, m, members) in store_raw {
            let live_members = members
                .iter()
                .filter(|r| region_infos.iter().any(|ri| &ri.name == *r && ri.alive))
                .cloned()
                .collect();
            store_infos.push(StoreInfo {
                running_version: text(&m, "running_version"),
                version: v,
                os: text(&m, "os"),
                bitness: num(&m, "bitness"),
                mode: Mode::parse(&text(&m, "mode")).unwrap_or(Mode::Upgrade),
                created_at_ms: num(&m, "created_at"),
                created_by: text(&m, "created_by"),
                members,
                live_members,
            });
        }
        let mut host_infos = Vec::new();
        for hname in &hosts {
            let h: HashMap<String, String> = redis::from_redis_value(next()).unwrap_or_default();
            let alive: bool = redis::from_redis_value(next()).unwrap_or(false);
            host_infos.push(HostInfo {
                name: hname.clone(),
                product_version: text(&h, "product_version"),
                os: text(&h, "os"),
                bitness: num(&h, "bitness"),
                regions: text(&h, "regions")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                alive,
                checks: h.get("checks").and_then(|c| serde_json::from_str(c).ok()),
            });
        }
        let mut removing = removing;
        removing.sort();
        Ok(Snapshot {
            pac: self.name.to_string(),
            exists: !meta.is_empty(),
            gen: num(&meta, "gen"),
            epoch: num(&meta, "epoch"),
            created_at_ms: num(&meta, "created_at"),
            resetting_since_ms: meta.get("resetting").and_then(|v| v.parse().ok()),
            stores: store_infos,
            regions: region_infos,
            hosts: host_infos,
            removing,
        })
    }

    /// Whether the PAC exists (its PAC record does).
    pub async fn exists(&self) -> Result<bool> {
        self.conn()
            .exists(self.keys.meta())
            .await
            .map_err(|e| self.psor.err(e))
    }

    /// [`Error::NoSuchPac`] unless the PAC exists: for commands that only read, so that
    /// a mistyped name is not answered with an empty result. With the coordinator's state
    /// apart (`--state`) the PAC is known by its rollout state there (a vendor's PSOR
    /// holds no pacup record of it): its journal, history or fencing record.
    pub async fn require(&self) -> Result<()> {
        let known = if self.state_apart() {
            let st = self.on(super::keys::Home::State);
            let n: u64 = redis::cmd("EXISTS")
                .arg(self.keys.rollout_current())
                .arg(self.keys.rollout_history())
                .arg(self.keys.meta())
                .query_async(&mut st.conn())
                .await
                .map_err(|e| st.err(e))?;
            n > 0
        } else {
            self.exists().await?
        };
        if known {
            Ok(())
        } else {
            Err(Error::NoSuchPac(self.name.to_string()))
        }
    }

    /// The live host agent that hosts `region` (see [`Snapshot::agent_of`]).
    pub async fn agent_of(&self, region: &str) -> Result<String> {
        self.snapshot().await?.agent_of(region)
    }
}

impl Snapshot {
    /// The live host agent that hosts `region`: a live agent listing it (the one its
    /// record names first), else the host its record names. Agents publish their host
    /// records before any region initialises the PAC (a cold start through an agent
    /// creates it), so the PAC record need not exist yet.
    pub fn agent_of(&self, region: &str) -> Result<String> {
        let listed: Vec<&HostInfo> = self
            .hosts
            .iter()
            .filter(|h| h.regions.iter().any(|r| r == region))
            .collect();
        let recorded = self
            .region(region)
            .map(|r| r.host.clone())
            .filter(|h| !h.is_empty());
        // A live agent that lists the region wins over a recorded host whose agent is gone.
        let host = listed
            .iter()
            .find(|h| h.alive && recorded.as_deref().is_none_or(|r| r == h.name))
            .or_else(|| listed.iter().find(|h| h.alive))
            .map(|h| h.name.clone())
            .or(recorded)
            .or_else(|| listed.first().map(|h| h.name.clone()));
        let Some(host) = host else {
            if !self.exists {
                return Err(Error::NoSuchPac(self.pac.clone()));
            }
            return Err(Error::NoSuchRegion {
                pac: self.pac.clone(),
                region: region.to_string(),
            });
        };
        match self.hosts.iter().find(|h| h.name == host) {
            Some(h) if h.alive => Ok(host),
            _ => Err(Error::AgentDown {
                host,
                region: Some(region.to_string()),
            }),
        }
    }

    /// The live host agent `host` itself.
    pub fn live_agent(&self, host: &str) -> Result<&HostInfo> {
        match self.hosts.iter().find(|h| h.name == host) {
            Some(h) if h.alive => Ok(h),
            Some(_) => Err(Error::AgentDown {
                host: host.to_string(),
                region: None,
            }),
            None if !self.exists => Err(Error::NoSuchPac(self.pac.clone())),
            None => Err(Error::NoSuchHost {
                pac: self.pac.clone(),
                host: host.to_string(),
            }),
        }
    }
}

/// Every PAC in the PSOR, by name.
pub async fn list_pacs(psor: &Psor) -> Result<Vec<PacSummary>> {
    let mut out = Vec::new();
    for n in pac_names(psor).await? {
        let snap = Pac::new(psor.clone(), n.clone()).snapshot().await?;
        out.push(PacSummary {
            pac: n.to_string(),
            stores: snap
                .stores
                .iter()
                .map(|s| StoreSummary {
                    version: s.version.clone(),
                    mode: s.mode,
                })
                .collect(),
            live_regions: snap.regions.iter().filter(|r| r.alive).count(),
        });
    }
    Ok(out)
}

/// The names of the PACs in the PSOR (those with a PAC record), sorted.
pub async fn pac_names(psor: &Psor) -> Result<Vec<PacName>> {
    let mut names = Vec::new();
    if psor.is_cluster() {
        // PACs live in different slots, so on different masters: each one is scanned.
        names.extend(
            psor.scan_masters(&keys::all_pac_meta_pattern())
                .await?
                .iter()
                .filter_map(|k| keys::pac_of_meta_key(k))
                .filter_map(|n| PacName::new(n).ok()),
        );
        names.sort();
        names.dedup();
        return Ok(names);
    }
    let mut c = psor.conn();
    let mut cursor = 0u64;
    loop {
        let (nc, batch): (u64, Vec<String>) =
            scan_page(&mut c, psor, cursor, &keys::all_pac_meta_pattern()).await?;
        names.extend(
            batch
                .iter()
                .filter_map(|k| keys::pac_of_meta_key(k))
                .filter_map(|n| PacName::new(n).ok()),
        );
        cursor = nc;
        if cursor == 0 {
            break;
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}
