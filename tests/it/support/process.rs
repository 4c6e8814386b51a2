//! A supervised server child process (`redis-server`, `redis-sentinel`).
//!
//! The one job of this type is that no test ever leaks a server: the child is SIGKILLed and
//! reaped on drop, and if the test is panicking its log files are printed to stderr first, so a
//! failed assertion comes with the server's side of the story.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::read_lossy;

pub(crate) struct Proc {
    /// Human name used in messages, e.g. `redis-server :40123`.
    name: String,
    /// `None` once the child has been reaped. The pid is only signalled while we still own an
    /// un-reaped child, so it can never hit a recycled pid.
    child: Option<Child>,
    /// Exit status if the child has been reaped.
    status: Option<ExitStatus>,
    /// Files shown on failure: the server's own log plus its captured stdout/stderr (which
    /// holds errors printed before the logfile is opened, e.g. config parse errors).
    log_files: Vec<PathBuf>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout+stderr appended to `stdio_log`.
    pub(crate) fn spawn(name: String, mut cmd: Command, stdio_log: &Path, logfile: &Path) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(stdio_log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", stdio_log.display()));
        let err = out.try_clone().expect("dup stdio log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot spawn {name} ({cmd:?}): {e} — is it installed and on PATH?")
        });
        Proc {
            name,
            child: Some(child),
            status: None,
            log_files: vec![logfile.to_path_buf(), stdio_log.to_path_buf()],
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The pid while the child is running (or at least not yet reaped).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the child has exited (reaping it), `None` while it runs.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    self.status = Some(status);
                }
                Ok(None) => return None,
                Err(e) => panic!("waiting for {}: {e}", self.name),
            }
        }
        self.status
    }

    /// SIGKILL and reap. Idempotent.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.status = child.wait().ok();
        }
    }

    /// Graceful stop: SIGTERM, then wait up to `grace` for the child to exit; SIGKILL after that
    /// so the call stays bounded even if the server hangs (or is SIGSTOPped).
    pub(crate) fn terminate(&mut self, grace: Duration) {
        if self.child.is_none() {
            return;
        }
        self.signal("TERM");
        // A stopped process cannot act on SIGTERM; wake it so "stop" means the same thing
        // after `pause()`.
        self.signal("CONT");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.try_exit().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, …) through the `kill` command, because the
    /// crate has no libc dependency. No-op if the child has been reaped.
    pub(crate) fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("running `kill -{sig} {pid}`: {e}"));
            // Cannot fail for an un-reaped child (even a zombie accepts signals), so a failure
            // is worth a note but not a panic inside what may already be a failure path.
            if !status.success() {
                eprintln!("warning: `kill -{sig} {pid}` for {} failed", self.name);
            }
        }
    }

    /// All log files, labelled, for failure messages.
    pub(crate) fn diagnostics(&self) -> String {
        let mut out = String::new();
        for f in self.log_files.iter().filter(|f| f.exists()) {
            let text = read_lossy(f);
            if text.trim().is_empty() {
                continue;
            }
            out.push_str(&format!(
                "----- {} {} -----\n{}\n",
                self.name,
                f.display(),
                text.trim_end()
            ));
        }
        if out.is_empty() {
            out = format!("----- {}: no log output -----\n", self.name);
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}
