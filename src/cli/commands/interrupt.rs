//! Ctrl-C on a running coordinator: a journaled pause, not a dead process.

use crate::coordinator::Interrupt;
use crate::error::ExitCode;
use crate::names::PacName;
use std::time::Duration;

/// Ctrl-C (or SIGTERM) on a coordinator: the first asks it to pause after the step in
/// hand, the second to give the step up now. Both end in a journaled pause and exit 6,
/// with the command that continues. The handlers are installed only once the lease is
/// held ([`Interrupts::listen`]): before that a signal ends the process as usual, which
/// is safe because nothing has been written. The task ends when the guard is dropped.
pub(crate) struct Interrupts {
    pub interrupt: Interrupt,
    tx: Option<tokio::sync::watch::Sender<u32>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Interrupts {
    pub fn new() -> Interrupts {
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        Interrupts {
            interrupt: Interrupt::new(rx),
            tx: Some(tx),
            task: None,
        }
    }

    /// Installs the handlers.
    pub fn listen(&mut self, pac: &PacName) -> anyhow::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let pac = pac.to_string();
        self.task = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tx.send_modify(|c| *c += 1);
                if *tx.borrow() == 1 {
                    eprintln!(
                        "pacup: stopping: the rollout pauses once the step in hand is done \
                         (press Ctrl-C again to stop now)"
                    );
                } else {
                    eprintln!("pacup: stopping now");
                    // If even the pause cannot be journaled promptly (the PSOR is gone),
                    // do not hang: the journal still says where to continue.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    eprintln!(
                        "Rollout of PAC {pac} interrupted; `pacup rollout resume {pac}` continues"
                    );
                    std::process::exit(ExitCode::Paused.code());
                }
            }
        }));
        Ok(())
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}
