//! Walks over a PAC's keys with SCAN in bounded batches, so Redis keeps answering other
//! clients however many keys there are.

use super::Pac;
use crate::conn::Psor;
use crate::error::Result;
use redis::AsyncCommands;

/// How many keys one SCAN step asks for and one UNLINK batch deletes.
pub(super) const BATCH: usize = 500;

/// One SCAN step: (next cursor, keys) of the keys matching `pattern`.
pub(super) async fn scan_page(
    c: &mut redis::aio::ConnectionManager,
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

impl Pac {
    /// Whether any key of the PAC exists (SCAN until the first hit).
    pub(super) async fn any_key(&self) -> Result<bool> {
        let mut c = self.conn();
        if c.exists(self.keys.meta())
            .await
            .map_err(|e| self.psor.err(e))?
        {
            return Ok(true);
        }
        let mut cursor = 0u64;
        loop {
            let (nc, batch) =
                scan_page(&mut c, &self.psor, cursor, &self.keys.all_pattern()).await?;
            if !batch.is_empty() {
                return Ok(true);
            }
            cursor = nc;
            if cursor == 0 {
                return Ok(false);
            }
        }
    }

    /// Deletes the PAC's keys matching `pattern` with SCAN + UNLINK in batches.
    pub(super) async fn delete_pattern(&self, pattern: &str) -> Result<u64> {
        let mut c = self.conn();
        let mut cursor = 0u64;
        let mut n = 0;
        loop {
            let (nc, batch) = scan_page(&mut c, &self.psor, cursor, pattern).await?;
            if !batch.is_empty() {
                let d: u64 = redis::cmd("UNLINK")
                    .arg(&batch)
                    .query_async(&mut c)
                    .await
                    .map_err(|e| self.psor.err(e))?;
                n += d;
            }
            cursor = nc;
            if cursor == 0 {
                return Ok(n);
            }
        }
    }
}
