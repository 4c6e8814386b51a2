//! `pac backup` and `pac restore`: every persistent key of a PAC as DUMP payloads.

use super::keys::Keys;
use super::model::now_ms;
use super::Pac;
use crate::error::{Advice, Error, Result};
use crate::names::PacName;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A backup file (`pac backup`): every persistent key of the PAC, as DUMP payloads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Backup {
    /// Format marker, for refusing foreign files.
    pub format: String,
    /// The PAC backed up.
    pub pac: String,
    /// When, ms since the epoch.
    pub created_at_ms: u64,
    /// The keys.
    pub keys: Vec<BackupKey>,
}

/// One key of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct BackupKey {
    /// Full key name.
    pub key: String,
    /// DUMP payload, base64.
    pub dump: String,
}

const BACKUP_FORMAT: &str = "pacup-backup-1";

impl Pac {
    /// Every persistent key of the PAC (heartbeats, which carry a TTL, are left out: a
    /// restored PAC must not show regions alive that are not).
    pub async fn backup(&self) -> Result<Backup> {
        let mut c = self.conn();
        let mut keys = Vec::new();
        let mut w = self.walk(&self.keys.all_pattern());
        while let Some(batch) = self.next_page(&mut c, &mut w).await? {
            if !batch.is_empty() {
                let mut p = redis::pipe();
                for k in &batch {
                    p.cmd("PTTL").arg(k).cmd("DUMP").arg(k);
                }
                let vals: Vec<redis::Value> =
                    p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?;
                for (k, pair) in batch.iter().zip(vals.chunks(2)) {
                    let ttl: i64 = redis::from_redis_value(pair[0].clone()).unwrap_or(-2);
                    if ttl != -1 {
                        continue;
                    }
                    if let redis::Value::BulkString(bytes) = &pair[1] {
                        keys.push(BackupKey {
                            key: k.clone(),
                            dump: base64::engine::general_purpose::STANDARD.encode(bytes),
                        });
                    }
                }
            }
        }
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Backup {
            format: BACKUP_FORMAT.into(),
            pac: self.name.to_string(),
            created_at_ms: now_ms(),
            keys,
        })
    }

    /// Restores a backup into this PAC (keys renamed if the backup is of another PAC), in
    /// one MULTI so a reader never sees half of it. Refused when the PAC has any key unless
    /// `force`, which first deletes the PAC's keys incrementally.
    pub async fn restore(&self, backup: &Backup, force: bool) -> Result<usize> {
        if backup.format != BACKUP_FORMAT {
            return Err(Error::invalid(
                "backup format",
                &backup.format,
                BACKUP_FORMAT,
            ));
        }
        let from = Keys::new(&PacName::new(&backup.pac)?);
        let mut payloads = Vec::with_capacity(backup.keys.len());
        for k in &backup.keys {
            let Some(rest) = k.key.strip_prefix(from.prefix()) else {
                return Err(Error::invalid(
                    "backup key",
                    &k.key,
                    format!("a key starting with {}", from.prefix()),
                ));
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&k.dump)
                .map_err(|e| Error::invalid("backup payload", &k.key, format!("base64 ({e})")))?;
            payloads.push((format!("{}{rest}", self.keys.prefix()), bytes));
        }
        let mut c = self.conn();
        let has_data = self.any_key().await?;
        if let Some(r) = self.snapshot().await?.regions.iter().find(|r| r.alive) {
            return Err(Error::refused(format!(
                "PAC {} has a live region ({}); stop every region before a restore",
                self.name, r.name
            )));
        }
        if has_data && !force {
            return Err(Error::refused_with(
                format!("PAC {} already has data in the PSOR", self.name),
                Advice::Force {
                    to: "restore over it".into(),
                },
            ));
        }
        if has_data {
            self.delete_pattern(&self.keys.all_pattern()).await?;
        }
        let mut p = redis::pipe();
        p.atomic();
        for (k, bytes) in &payloads {
            p.cmd("RESTORE")
                .arg(k)
                .arg(0)
                .arg(bytes.as_slice())
                .arg("REPLACE")
                .ignore();
        }
        let _: () = p.query_async(&mut c).await.map_err(|e| self.psor.err(e))?;
        Ok(payloads.len())
    }
}
