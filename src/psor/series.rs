//! Per-second series recorded during a rollout (jobs completed, client requests ended),
//! and the reads `pacup rollout report` needs.
//!
//! Jobs are counted inside `COMPLETE` (the job's first completion, per store); client
//! requests by `clients run`, which adds one second's outcomes with one script call per
//! second. Both only count while a rollout runs, into a hash of that rollout that
//! expires ([`super::keys::SERIES_TTL_SECS`]); see [`super::keys::SERIES`].

use super::rollout::EventFields;
use super::scripts::RecordClients;
use super::Pac;
use crate::error::Result;
use redis::AsyncCommands;

/// One count of a series: the PSOR's unix second, the label (a store version for `jobs`,
/// `ok` or `failed` for `clients`) and the count.
pub type SeriesPoint = (u64, String, u64);

/// How many fields one HSCAN step asks for and one event page holds.
const PAGE: usize = 1000;

impl Pac {
    /// Adds client requests that ended (`ok` answered, `failed` given up) to the running
    /// rollout's `clients` series. Returns whether a rollout was running to count them.
    pub async fn record_clients(&self, ok: u64, failed: u64) -> Result<bool> {
        self.eval(&RecordClients { ok, failed }).await
    }

    /// Series `name` of rollout `rollout`, sorted by second then label (empty when none
    /// was recorded or it expired). Read with HSCAN so a long rollout's series does not
    /// block the PSOR.
    pub async fn series(&self, name: &str, rollout: &str) -> Result<Vec<SeriesPoint>> {
        let key = self.keys.series(name, rollout);
        let mut c = self.conn();
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(cursor)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut c)
                .await
                .map_err(|e| self.psor.err(e))?;
            for pair in flat.chunks(2) {
                let [field, count] = pair else { continue };
                let Some((sec, label)) = field.split_once(':') else {
                    continue;
                };
                if let (Ok(sec), Ok(n)) = (sec.parse(), count.parse()) {
                    out.push((sec, label.to_string(), n));
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every event of the PAC's stream, oldest first (the stream is capped, so this is
    /// bounded), read in pages.
    pub async fn all_events(&self) -> Result<Vec<(String, EventFields)>> {
        let mut conn = self.holding(&super::keys::EVENTS).dedicated().await?;
        let mut after = "0".to_string();
        let mut out = Vec::new();
        loop {
            let page = self.read_events(&mut conn, &after, PAGE, None).await?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            out.extend(page);
        }
        Ok(out)
    }

    /// The PSOR's clock, ms: the clock of every event and series point (a report on a
    /// running rollout draws up to this instant).
    pub async fn server_time_ms(&self) -> Result<u64> {
        let t: Vec<u64> = redis::cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.psor.err(e))?;
        Ok(t.first().copied().unwrap_or(0) * 1000 + t.get(1).copied().unwrap_or(0) / 1000)
    }

    /// Whether the PAC's record exists (it does from `pac init` or a cold start on).
    pub async fn has_record(&self) -> Result<bool> {
        self.conn()
            .exists(self.keys.meta())
            .await
            .map_err(|e| self.psor.err(e))
    }
}
