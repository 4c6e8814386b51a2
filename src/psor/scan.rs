//! Walks over a PAC's keys in bounded batches, so Redis keeps answering other clients
//! however many keys there are: SCAN on one server, the PAC's slot on a cluster.

use super::Pac;
use crate::conn::{Psor, PsorConn};
use crate::error::Result;
use redis::AsyncCommands;

/// How many keys one SCAN step asks for and one UNLINK batch deletes.
pub(super) const BATCH: usize = 500;

/// One SCAN step: (next cursor, keys) of the keys matching `pattern`.
pub(super) async fn scan_page(
    c: &mut crate::conn::PsorConn,
    psor: &Psor,
    cursor: u64,
    pattern: &str,
) -> Result<(u64, Vec<String>)> {
    scan_cmd(cursor, pattern)
        .query_async(c)
        .await
        .map_err(|e| psor.err(e))
}

/// The SCAN command of one step (for pipelines).
pub(super) fn scan_cmd(cursor: u64, pattern: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(BATCH);
    cmd
}

/// A walk over the PAC's keys matching a pattern, page by page: SCAN steps on one server;
/// on a cluster the PAC's slot listed once on its master (every key of the PAC is in that
/// slot), handed out in pages of [`BATCH`].
pub(super) struct KeyWalk {
    pattern: String,
    state: Walk,
}

enum Walk {
    Scan(u64),
    Listed(Vec<String>),
    Done,
}

impl Pac {
    /// A walk over the PAC's keys matching `pattern`.
    pub(super) fn walk(&self, pattern: &str) -> KeyWalk {
        KeyWalk {
            pattern: pattern.to_string(),
            state: Walk::Scan(0),
        }
    }

    /// The next page of `w` (possibly empty), or `None` when the walk is over.
    pub(super) async fn next_page(
        &self,
        c: &mut PsorConn,
        w: &mut KeyWalk,
    ) -> Result<Option<Vec<String>>> {
        match &mut w.state {
            Walk::Done => Ok(None),
            Walk::Scan(cursor) if self.psor.is_cluster() && *cursor == 0 => {
                let mut keys = self.psor.slot_keys(self.keys.prefix(), &w.pattern).await?;
                keys.reverse();
                w.state = Walk::Listed(keys);
                Box::pin(self.next_page(c, w)).await
            }
            Walk::Scan(cursor) => {
                let (nc, batch) = scan_page(c, &self.psor, *cursor, &w.pattern).await?;
                w.state = if nc == 0 { Walk::Done } else { Walk::Scan(nc) };
                Ok(Some(batch))
            }
            Walk::Listed(rest) => {
                if rest.is_empty() {
                    w.state = Walk::Done;
                    return Ok(None);
                }
                let page = rest.split_off(rest.len().saturating_sub(BATCH));
                Ok(Some(page.into_iter().rev().collect()))
            }
        }
    }

    /// Whether any key of the PAC exists (until the first hit).
    pub(super) async fn any_key(&self) -> Result<bool> {
        let mut c = self.conn();
        if c.exists(self.keys.meta())
            .await
            .map_err(|e| self.psor.err(e))?
        {
            return Ok(true);
        }
        let mut w = self.walk(&self.keys.all_pattern());
        while let Some(batch) = self.next_page(&mut c, &mut w).await? {
            if !batch.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes the PAC's keys matching `pattern` with UNLINK in batches.
    pub(super) async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        let mut c = self.conn();
        let mut w = self.walk(pattern);
        let mut n = 0;
        while let Some(batch) = self.next_page(&mut c, &mut w).await? {
            if !batch.is_empty() {
                let d: u64 = redis::cmd("UNLINK")
                    .arg(&batch)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| self.psor.err(e))?;
                n += d;
            }
        }
        Ok(n)
    }
}
