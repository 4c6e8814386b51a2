//! The one writer of the rollout journal: journal fields and events of concurrent steps
//! are queued and written together in one fenced round trip (group commit), numbered in
//! the order they are written.

use super::steps::{self, Action};
use super::{journal, Coordinator, Event};
use crate::error::{Error, Result};
use crate::psor::now_ms;
use journal::Write;

/// The error of a failed batch, for each of its writers (the PSOR errors that fail a
/// whole pipeline keep their kind, and so their exit code).
fn same_error(e: &Error) -> Error {
    match e {
        Error::Unreachable { target, reason } => Error::Unreachable {
            target: target.clone(),
            reason: reason.clone(),
        },
        Error::NotRedis { target } => Error::NotRedis {
            target: target.clone(),
        },
        Error::AuthFailed { target, reason } => Error::AuthFailed {
            target: target.clone(),
            reason: reason.clone(),
        },
        Error::Redis(r) => Error::Redis(r.clone()),
        Error::NotDurable {
            target,
            durability,
            acked,
            wanted,
        } => Error::NotDurable {
            target: target.clone(),
            durability,
            acked: *acked,
            wanted: *wanted,
        },
        Error::Fenced { ours, current } => Error::Fenced {
            ours: *ours,
            current: *current,
        },
        other => Error::refused(other.to_string()),
    }
}

/// An event before it is numbered.
pub(super) struct Draft {
    step: usize,
    action: Action,
    host: Option<String>,
    region: Option<String>,
    status: String,
    detail: String,
    elapsed_ms: u64,
}

/// A journal write waiting for the writer.
pub(super) struct Queued {
    fields: Vec<(String, String)>,
    event: Option<Draft>,
    history: Option<String>,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// The head of an event: which step (or marker) it is about.
pub(super) struct Head<'a> {
    n: usize,
    action: Action,
    host: Option<&'a str>,
    region: Option<&'a str>,
}

impl<'a> Head<'a> {
    pub(super) fn marker(n: usize, action: Action) -> Head<'a> {
        Head {
            n,
            action,
            host: None,
            region: None,
        }
    }

    pub(super) fn step(s: &'a steps::Step) -> Head<'a> {
        Head {
            n: s.n,
            action: s.action(),
            host: s.host(),
            region: s.region(),
        }
    }
}

impl Coordinator {
    /// Journals fields and emits an event, atomically and fenced. Writes that arrive
    /// while another is in flight (the steps of a parallel group) are sent together in
    /// one pipeline, in order: events are numbered, journaled and emitted in that order.
    pub(super) async fn journal(
        &self,
        w: Write,
        ev: Option<(Head<'_>, &str, &str, u64)>,
        history: Option<&str>,
    ) -> Result<()> {
        let draft = ev.map(|(head, status, detail, elapsed)| Draft {
            step: head.n,
            action: head.action,
            host: head.host.map(String::from),
            region: head.region.map(String::from),
            status: status.into(),
            detail: detail.into(),
            elapsed_ms: elapsed,
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queued().push(Queued {
            fields: w.0,
            event: draft,
            history: history.map(String::from),
            done: tx,
        });
        {
            // Whoever holds the numbering writes everything queued so far.
            let mut seq = self.seq.lock().await;
            let batch = std::mem::take(&mut *self.queued());
            if !batch.is_empty() {
                self.write_batch(&mut seq, batch).await;
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::refused("the journal write was lost")))
    }

    fn queued(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `batch` (one round trip), numbering its events after `seq`.
    async fn write_batch(&self, seq: &mut u64, batch: Vec<Queued>) {
        let now = now_ms();
        let mut n = *seq;
        let mut events: Vec<Option<Event>> = Vec::with_capacity(batch.len());
        let mut writes = Vec::with_capacity(batch.len());
        for q in &batch {
            let mut fields: Vec<(&str, String)> = q
                .fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            fields.push(("updated_at_ms", now.to_string()));
            let mut event_fields = Vec::new();
            let event = q.event.as_ref().map(|d| {
                n += 1;
                Event {
                    ts: crate::psor::rfc3339(now_ms()),
                    rollout: self.id.clone(),
                    seq: n,
                    step: d.step,
                    action: d.action.name().into(),
                    host: d.host.clone(),
                    region: d.region.clone(),
                    status: d.status.clone(),
                    detail: d.detail.clone(),
                    elapsed_ms: d.elapsed_ms,
                }
            });
            if let Some(e) = &event {
                fields.push((journal::field::SEQ, e.seq.to_string()));
                event_fields = vec![
                    ("rollout", e.rollout.clone()),
                    ("seq", e.seq.to_string()),
                    ("step", e.step.to_string()),
                    ("action", e.action.clone()),
                    ("host", e.host.clone().unwrap_or_default()),
                    ("region", e.region.clone().unwrap_or_default()),
                    ("status", e.status.clone()),
                    ("detail", e.detail.clone()),
                    ("elapsed_ms", e.elapsed_ms.to_string()),
                    ("by", self.opts.by.clone()),
                ];
            }
            events.push(event);
            writes.push((fields, event_fields, q.history.clone()));
        }
        // A PSOR outage is waited out with the whole batch in hand, its events numbered
        // and ordered as they were: repeated, the writes that were applied before are
        // recognised by their event numbers and not applied again.
        let batch_write = || async {
            let r = self
                .pac
                .rollout_write_batch(self.lease.epoch, &writes)
                .await?;
            match r
                .iter()
                .find_map(|w| w.as_ref().err().filter(|e| e.is_outage()))
            {
                Some(e) => Err(same_error(e)),
                None => Ok(r),
            }
        };
        let results = match self.ride_out("a journal write", batch_write).await {
            Ok(r) => r,
            Err(e) => batch.iter().map(|_| Err(same_error(&e))).collect(),
        };
        for ((event, (fields, _, _)), r) in events.iter().zip(&writes).zip(&results) {
            if r.is_ok() {
                if let Some(e) = event {
                    *seq = e.seq;
                }
                self.opts.metrics.rollout_journaled(fields, event.as_ref());
                if let Some(e) = event {
                    (self.opts.emit)(e);
                }
            }
        }
        drop(writes);
        for (q, r) in batch.into_iter().zip(results) {
            let _ = q.done.send(r);
        }
    }
}
