//! Reads of the few keys one action needs, each in one pipelined round trip whose size
//! does not grow with the PAC (unlike [`Pac::snapshot`], which reads every region): the
//! coordinator's steps, its health gates (a wave's regions at once) and a region's start
//! decision use these, so the cost of a step stays the same at 10 or 1000 regions.

use super::{now_ms, HostInfo, Mode, Pac, RegionInfo, Snapshot, StoreInfo};
use crate::error::Result;
use std::collections::HashMap;

fn num<T: std::str::FromStr + Default>(h: &HashMap<String, String>, k: &str) -> T {
    h.get(k).and_then(|v| v.parse().ok()).unwrap_or_default()
}

fn text(h: &HashMap<String, String>, k: &str) -> String {
    h.get(k).cloned().unwrap_or_default()
}

/// The PSOR's clock (`TIME`) in ms, from a pipeline's reply; the local clock when absent.
pub(super) fn redis_now(v: Option<redis::Value>) -> u64 {
    let t: Option<(u64, u64)> = v.and_then(|v| redis::from_redis_value(v).ok());
    t.map_or_else(now_ms, |(s, us)| s * 1000 + us / 1000)
}

pub(super) fn region_info(
    name: &str,
    h: &HashMap<String, String>,
    pttl: i64,
    now: u64,
) -> RegionInfo {
    let hb: u64 = num(h, "heartbeat_at");
    RegionInfo {
        name: name.to_string(),
        host: text(h, "host"),
        product_version: text(h, "product_version"),
        os: text(h, "os"),
        bitness: num(h, "bitness"),
        store: text(h, "store"),
        state: text(h, "state"),
        start_type: text(h, "start_type"),
        listener: text(h, "listener"),
        endpoint: text(h, "endpoint"),
        clients: num(h, "clients"),
        jobs_done: num(h, "jobs_done"),
        alive: pttl > 0 || pttl == -1,
        heartbeat_age_ms: (hb > 0).then(|| now.saturating_sub(hb)),
        liveness: super::Liveness {
            beats: num(h, "beats"),
            interval_ms: num(h, "heartbeat_interval_ms"),
            ttl_ms: num(h, "heartbeat_ttl_ms"),
        },
    }
}

fn store_info(version: &str, m: &HashMap<String, String>) -> StoreInfo {
    StoreInfo {
        running_version: text(m, "running_version"),
        version: version.to_string(),
        os: text(m, "os"),
        bitness: num(m, "bitness"),
        mode: Mode::parse(&text(m, "mode")).unwrap_or(Mode::Upgrade),
        created_at_ms: num(m, "created_at"),
        created_by: text(m, "created_by"),
        members: Vec::new(),
        live_members: Vec::new(),
    }
}

/// The PAC's stores (without their members) and the stores still being deleted.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    /// Whether the PAC record exists.
    pub exists: bool,
    /// Structural generation of the PAC record.
    pub gen: u64,
    /// Stores, oldest first (`members` and `live_members` left empty).
    pub stores: Vec<StoreInfo>,
    /// Detached stores whose keys are still being deleted.
    pub removing: Vec<String>,
}

impl Stores {
    /// A PAC known to exist whose stores are not known (none listed).
    pub fn default_present() -> Stores {
        Stores {
            exists: true,
            gen: 0,
            stores: Vec::new(),
            removing: Vec::new(),
        }
    }

    /// The newest store.
    pub fn newest(&self) -> Option<&StoreInfo> {
        self.stores.last()
    }

    /// The newest store in mode `running`.
    pub fn newest_running(&self) -> Option<&StoreInfo> {
        self.stores.iter().rev().find(|s| s.mode == Mode::Running)
    }

    /// A store by version.
    pub fn store(&self, v: &str) -> Option<&StoreInfo> {
        self.stores.iter().find(|s| s.version == v)
    }
}

impl Pac {
    /// Regions by name, in the order asked (a region without a record reads as not alive
    /// with empty fields), in one pipeline.
    pub async fn regions(&self, names: &[&str]) -> Result<Vec<RegionInfo>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let mut p = redis::pipe();
        // Heartbeat ages on the PSOR's clock, the one the heartbeats were stamped with.
        p.cmd("TIME");
        for r in names {
            p.hgetall(k.region(r)).pttl(k.region_alive(r));
        }
        let values: Vec<redis::Value> = p
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor().err(e))?;
        let mut it = values.into_iter();
        let now = redis_now(it.next());
        let mut out = Vec::with_capacity(names.len());
        for r in names {
            let h: HashMap<String, String> =
                redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil)).unwrap_or_default();
            let pttl: i64 =
                redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil)).unwrap_or(-2);
            out.push(region_info(r, &h, pttl, now));
        }
        Ok(out)
    }

    /// One region.
    pub async fn region(&self, name: &str) -> Result<RegionInfo> {
        Ok(self.regions(&[name]).await?.remove(0))
    }

    /// Host agent records by name, in the order asked, in one pipeline.
    pub async fn hosts(&self, names: &[&str]) -> Result<Vec<HostInfo>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let mut p = redis::pipe();
        for h in names {
            p.hgetall(k.host(h)).exists(k.host_alive(h));
        }
        let values: Vec<redis::Value> = p
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor().err(e))?;
        let mut it = values.into_iter();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let h: HashMap<String, String> =
                redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil)).unwrap_or_default();
            let alive: bool =
                redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil)).unwrap_or(false);
            out.push(HostInfo {
                name: name.to_string(),
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
        Ok(out)
    }

    /// The stores and their modes: two round trips, sized by the number of stores.
    pub async fn stores(&self) -> Result<Stores> {
        let k = self.keys();
        let mut c = self.conn();
        let (meta, versions, removing): (HashMap<String, String>, Vec<String>, Vec<String>) =
            redis::pipe()
                .hgetall(k.meta())
                .zrange(k.stores(), 0, -1)
                .smembers(k.removing())
                .query_async(&mut c)
                .await
                .map_err(|e| self.psor().err(e))?;
        let mut stores = Vec::with_capacity(versions.len());
        if !versions.is_empty() {
            let mut p = redis::pipe();
            for v in &versions {
                p.hgetall(k.store_meta(v));
            }
            let metas: Vec<HashMap<String, String>> = p
                .query_async(&mut c)
                .await
                .map_err(|e| self.psor().err(e))?;
            for (v, m) in versions.iter().zip(&metas) {
                stores.push(store_info(v, m));
            }
        }
        let mut removing = removing;
        removing.sort();
        Ok(Stores {
            exists: !meta.is_empty(),
            gen: num(&meta, "gen"),
            stores,
            removing,
        })
    }

    /// Whether host `host`'s agent is heartbeating: a region that stopped heartbeating on
    /// a live host died; on a silent host it may still run, cut off.
    pub async fn host_is_alive(&self, host: &str) -> Result<bool> {
        redis::cmd("EXISTS")
            .arg(self.keys().host_alive(host))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor().err(e))
    }

    /// Regions of a health gate and the versions of the existing stores, in one pipeline
    /// (a gate polls this).
    pub async fn gate_view(&self, names: &[&str]) -> Result<(Vec<RegionInfo>, Vec<String>)> {
        let k = self.keys();
        let mut p = redis::pipe();
        p.cmd("TIME");
        p.zrange(k.stores(), 0, -1);
        for r in names {
            p.hgetall(k.region(r)).pttl(k.region_alive(r));
        }
        let values: Vec<redis::Value> = p
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor().err(e))?;
        let mut it = values.into_iter();
        let now = redis_now(it.next());
        let stores: Vec<String> =
            redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil)).unwrap_or_default();
        let mut out = Vec::with_capacity(names.len());
        for r in names {
            let h: HashMap<String, String> =
                redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil)).unwrap_or_default();
            let pttl: i64 =
                redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil)).unwrap_or(-2);
            out.push(region_info(r, &h, pttl, now));
        }
        Ok((out, stores))
    }

    /// What a start decision of `region` needs: the PAC record, the stores with their
    /// modes and the region's own record (no other region is read: only a cold start
    /// asks whether another one is alive, and it takes a full [`Pac::snapshot`]).
    pub async fn start_view(&self, region: &str) -> Result<Snapshot> {
        let k = self.keys();
        let mut c = self.conn();
        #[allow(clippy::type_complexity)]
        let (meta, versions, removing, own, pttl): (
            HashMap<String, String>,
            Vec<String>,
            Vec<String>,
            HashMap<String, String>,
            i64,
        ) = redis::pipe()
            .hgetall(k.meta())
            .zrange(k.stores(), 0, -1)
            .smembers(k.removing())
            .hgetall(k.region(region))
            .pttl(k.region_alive(region))
            .query_async(&mut c)
            .await
            .map_err(|e| self.psor().err(e))?;
        let mut stores = Vec::with_capacity(versions.len());
        if !versions.is_empty() {
            let mut p = redis::pipe();
            for v in &versions {
                p.hgetall(k.store_meta(v));
            }
            let metas: Vec<HashMap<String, String>> = p
                .query_async(&mut c)
                .await
                .map_err(|e| self.psor().err(e))?;
            for (v, m) in versions.iter().zip(&metas) {
                stores.push(store_info(v, m));
            }
        }
        let mut removing = removing;
        removing.sort();
        Ok(Snapshot {
            pac: self.name().to_string(),
            exists: !meta.is_empty(),
            gen: num(&meta, "gen"),
            epoch: num(&meta, "epoch"),
            created_at_ms: num(&meta, "created_at"),
            resetting_since_ms: meta.get("resetting").and_then(|v| v.parse().ok()),
            stores,
            regions: if own.is_empty() {
                Vec::new()
            } else {
                vec![region_info(region, &own, pttl, now_ms())]
            },
            hosts: Vec::new(),
            removing,
        })
    }

    /// Fields of the rollout journal, in the order asked (`None` when absent): the
    /// coordinator reads its operators' requests with this between steps, not the whole
    /// journal (which holds the plan and every step).
    pub async fn rollout_fields(&self, names: &[&str]) -> Result<Vec<Option<String>>> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys().rollout_current());
        for n in names {
            cmd.arg(*n);
        }
        let st = self.holding(&super::keys::ROLLOUT_CURRENT);
        cmd.query_async(&mut st.conn()).await.map_err(|e| st.err(e))
    }
}
