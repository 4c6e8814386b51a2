//! The PAC's notification channel ([`super::keys::NOTIFY`]): what its messages say and one
//! subscription that hands them to any number of regions in the same process.
//!
//! A mode change carries its outcome (`mode <mode> <store>...`), so a region of one of
//! those stores takes its new mode from the message alone: a mode change reaching 1000
//! regions costs no PSOR read per region. Every other message (`store`, `reset`, or a
//! text this version does not know, from a newer writer) only says "something changed":
//! the region re-reads its state with a heartbeat. A (re)subscription may have missed
//! messages, so it is announced as such a change too.

use super::{Mode, Pac};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// One message of the channel, as a region acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// These stores are now in this mode.
    Mode {
        /// The new mode.
        mode: Mode,
        /// The stores that changed.
        stores: Vec<String>,
    },
    /// Something else changed, or messages may have been missed: re-read.
    Changed,
}

impl Notice {
    /// Reads a message; anything but a well-formed mode change is [`Notice::Changed`].
    pub fn parse(payload: &str) -> Notice {
        let mut words = payload.split_whitespace();
        if words.next() != Some("mode") {
            return Notice::Changed;
        }
        let Some(mode) = words.next().and_then(Mode::parse) else {
            return Notice::Changed;
        };
        let stores: Vec<String> = words.map(String::from).collect();
        if stores.is_empty() {
            return Notice::Changed;
        }
        Notice::Mode { mode, stores }
    }
}

/// The sending side of a process's notifications: regions subscribe to it, one
/// [`listen`] task feeds it.
#[derive(Debug, Clone)]
pub struct Notices(broadcast::Sender<Notice>);

/// How many messages a region may fall behind before it is told to re-read instead.
const BACKLOG: usize = 64;

impl Default for Notices {
    fn default() -> Self {
        Notices(broadcast::channel(BACKLOG).0)
    }
}

impl Notices {
    /// A receiver of every message sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.0.subscribe()
    }
}

/// Subscribes to `pac`'s channel once and forwards every message to `out` until
/// `shutdown`; reconnects with a bounded backoff after losing Redis, announcing each
/// (re)subscription as [`Notice::Changed`]. Heartbeats cover any gap.
pub async fn listen(pac: Pac, out: Notices, mut shutdown: watch::Receiver<bool>) {
    let channel = pac.keys().notify_channel();
    let mut backoff = Duration::from_millis(100);
    // The subscription moves with the master: one on the old master hears nothing.
    let mut moved = pac.psor().moved();
    loop {
        moved.borrow_and_update();
        let sub = pac.psor().notifications(&channel);
        let ps = tokio::select! {
            _ = crate::until_true(&mut shutdown) => return,
            r = sub => r,
        };
        match ps {
            Ok(mut ps) => {
                backoff = Duration::from_millis(100);
                let _ = out.0.send(Notice::Changed);
                loop {
                    tokio::select! {
                        _ = crate::until_true(&mut shutdown) => return,
                        _ = moved.changed() => break,
                        m = ps.next() => match m {
                            Some(payload) => {
                                let n = payload.map_or(Notice::Changed, |p| Notice::parse(&p));
                                let _ = out.0.send(n);
                            }
                            None => break,
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("notification subscription failed: {e}"),
        }
        tokio::select! {
            _ = crate::until_true(&mut shutdown) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_changes_carry_their_outcome_and_anything_else_means_reread() {
        assert_eq!(
            Notice::parse("mode quiesce 1.0.0 1.1.0"),
            Notice::Mode {
                mode: Mode::Quiesce,
                stores: vec!["1.0.0".into(), "1.1.0".into()]
            }
        );
        assert_eq!(
            Notice::parse("mode running 2.0.0"),
            Notice::Mode {
                mode: Mode::Running,
                stores: vec!["2.0.0".into()]
            }
        );
        for other in [
            "mode",
            "mode running",
            "mode sideways 1.0.0",
            "store",
            "reset",
            "",
        ] {
            assert_eq!(Notice::parse(other), Notice::Changed, "{other:?}");
        }
    }
}
