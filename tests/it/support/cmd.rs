//! Runs the crate's binaries (`pacup`, `caspac`) as real processes.
//!
//! ```ignore
//! let out = pacup().args(["status", "--json"]).env("PACUP_PSOR", server.url()).run();
//! out.success();
//! let mut daemon = pacup().args(["agent", "run"]).spawn();
//! daemon.wait_for_stdout_line(|l| l.contains("ready"), Duration::from_secs(10));
//! daemon.signal(SIGTERM);
//! daemon.wait_with_timeout(Duration::from_secs(10)).code(0);
//! ```
//!
//! The developer's environment must never leak into a test: every `PACUP_*` variable, the
//! legacy `ES_PAC` and `RUST_LOG` are removed unless the test sets them explicitly. Stdin is
//! `/dev/null` unless given, so a binary that unexpectedly reads stdin sees EOF instead of
//! hanging the test. Every wait is bounded; on any failed expectation the panic message shows
//! the full command line, exit code, stdout and stderr.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Signal numbers for [`Running::signal`] (Linux values).
pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;
pub const SIGCONT: i32 = 18;
pub const SIGSTOP: i32 = 19;

/// Variables removed from every child's environment (plus any other `PACUP_*`).
const SCRUBBED_ENV: &[&str] = &[
    "PACUP_PSOR",
    "PACUP_PSOR_PASSWORD",
    "ES_PAC",
    "PACUP_PRODUCT_VERSION",
    "PACUP_OS",
    "PACUP_BITNESS",
    "RUST_LOG",
];

/// Default bound for [`Cmd::run`]: a CLI invocation in these tests should take well under a
/// second; a minute means it hangs.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to wait for stdout/stderr to reach EOF after the process exited. Only exceeded if
/// the binary left a grandchild holding the pipes; we then report what we have.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The `pacup` binary built by cargo for this test run.
pub fn pacup() -> Cmd {
    Cmd::new(env!("CARGO_BIN_EXE_pacup"))
}

/// The `caspac` (legacy-compatible) binary built by cargo for this test run.
pub fn caspac() -> Cmd {
    Cmd::new(env!("CARGO_BIN_EXE_caspac"))
}

/// A command to run; a builder around `std::process::Command` that can be run repeatedly.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    /// Applied in order after scrubbing; `None` removes the variable.
    envs: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
    current_dir: Option<PathBuf>,
    timeout: Duration,
}

impl Cmd {
    pub fn new(program: impl AsRef<Path>) -> Cmd {
        Cmd {
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            envs: Vec::new(),
            stdin: None,
            current_dir: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((
            key.as_ref().to_os_string(),
            Some(value.as_ref().to_os_string()),
        ));
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_os_string(), None));
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.current_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Bytes fed to the child's stdin (which is then closed). Without it stdin is `/dev/null`.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Bound for [`Self::run`] (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs to completion (bounded by the timeout; a hang panics with the output so far).
    /// Never panics on a non-zero exit: check with [`Output::success`] / [`Output::code`].
    pub fn run(&self) -> Output {
        self.spawn().wait_with_timeout(self.timeout)
    }

    /// Starts the process in the background; it is killed when the handle is dropped.
    pub fn spawn(&self) -> Running {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PACUP_") {
                cmd.env_remove(&key);
            }
        }
        for key in SCRUBBED_ENV {
            cmd.env_remove(key);
        }
        for (key, value) in &self.envs {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

        let command = self.to_string();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{command}`: {e}"));

        // Feed stdin from a thread: a child that writes a lot before reading would otherwise
        // deadlock against us.
        if let (Some(input), Some(mut pipe)) = (self.stdin.clone(), child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let stdout = Stream::capture(child.stdout.take().expect("piped stdout"));
        let stderr = Stream::capture(child.stderr.take().expect("piped stderr"));
        Running {
            child: Some(child),
            command,
            stdout,
            stderr,
        }
    }
}

/// The command line as a shell would show it, env overrides first, for failure messages.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.envs {
            if let Some(v) = value {
                write!(f, "{}={} ", shell_word(key), shell_word(v))?;
            }
        }
        let name = self.program.file_name().unwrap_or(self.program.as_os_str());
        write!(f, "{}", shell_word(name))?;
        for a in &self.args {
            write!(f, " {}", shell_word(a))?;
        }
        if self.stdin.is_some() {
            write!(f, " <stdin>")?;
        }
        Ok(())
    }
}

fn shell_word(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The result of a finished process.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; for a process killed by a signal, `128 + signal` (the shell convention).
    pub code: i32,
    /// The terminating signal, if it was killed by one.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    fn new(command: String, status: ExitStatus, stdout: String, stderr: String) -> Output {
        use std::os::unix::process::ExitStatusExt;
        let signal = status.signal();
        let code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
        Output {
            command,
            code,
            signal,
            stdout,
            stderr,
        }
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn success(&self) -> &Self {
        self.code(0)
    }

    /// Asserts a non-zero exit.
    #[track_caller]
    pub fn failure(&self) -> &Self {
        if self.code == 0 {
            self.fail("expected a non-zero exit code");
        }
        self
    }

    /// Asserts exit code `code`.
    #[track_caller]
    pub fn code(&self, code: i32) -> &Self {
        if self.code != code {
            self.fail(&format!("expected exit code {code}"));
        }
        self
    }

    #[track_caller]
    pub fn stdout_contains(&self, needle: &str) -> &Self {
        if !self.stdout.contains(needle) {
            self.fail(&format!("expected stdout to contain {needle:?}"));
        }
        self
    }

    #[track_caller]
    pub fn stderr_contains(&self, needle: &str) -> &Self {
        if !self.stderr.contains(needle) {
            self.fail(&format!("expected stderr to contain {needle:?}"));
        }
        self
    }

    /// Stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| self.fail(&format!("stdout is not valid JSON: {e}")))
    }

    /// Panics with `what` and everything known about the run.
    #[track_caller]
    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{self}")
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let signal = self
            .signal
            .map(|s| format!(" (killed by signal {s})"))
            .unwrap_or_default();
        write!(
            f,
            "command: {}\nexit code: {}{signal}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.command,
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// One captured output stream: a reader thread appends to `buf` (everything, for `Output`)
/// and sends each line on `lines` (for the `wait_for_*_line` helpers).
struct Stream {
    buf: Arc<Mutex<Vec<u8>>>,
    lines: Receiver<String>,
    /// Signals EOF (the sender is dropped when the reader thread ends).
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Stream {
    fn capture(pipe: impl Read + Send + 'static) -> Stream {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, lines) = mpsc::channel();
        let (done_tx, done) = mpsc::channel::<()>();
        let sink = Arc::clone(&buf);
        let thread = std::thread::spawn(move || {
            let _done = done_tx; // dropped at EOF: tells `drain` we have everything
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).extend(&line);
                        let text = String::from_utf8_lossy(&line);
                        let _ = line_tx.send(text.trim_end_matches(['\n', '\r']).to_string());
                    }
                }
            }
        });
        Stream {
            buf,
            lines,
            done,
            thread: Some(thread),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits (bounded) for EOF so the captured text is complete.
    fn drain(&mut self, timeout: Duration) {
        if let Err(RecvTimeoutError::Disconnected) = self.done.recv_timeout(timeout) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A background process started with [`Cmd::spawn`]; SIGKILLed and reaped on drop.
pub struct Running {
    child: Option<Child>,
    command: String,
    stdout: Stream,
    stderr: Stream,
}

impl Running {
    /// The process id (`None` after `kill()`/`wait_with_timeout`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stdout captured so far (including lines already consumed by `wait_for_stdout_line`).
    pub fn stdout_so_far(&self) -> String {
        self.stdout.text()
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr.text()
    }

    /// Waits (bounded) for a stdout line matching `pred` and returns it. Lines are consumed:
    /// the next call continues after the matched line. Panics with all output on timeout or
    /// if stdout closes first.
    #[track_caller]
    pub fn wait_for_stdout_line(
        &mut self,
        pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let found = wait_line(&self.stdout.lines, pred, timeout);
        found.unwrap_or_else(|why| self.fail(&format!("no matching stdout line: {why}")))
    }

    /// Like [`Self::wait_for_stdout_line`], for stderr (where the logs go).
    #[track_caller]
    pub fn wait_for_stderr_line(
        &mut self,
        pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> String {
        let found = wait_line(&self.stderr.lines, pred, timeout);
        found.unwrap_or_else(|why| self.fail(&format!("no matching stderr line: {why}")))
    }

    /// Sends signal `sig` (e.g. [`SIGTERM`]) via the `kill` command. Panics if the process has
    /// already exited: signalling a reaped pid could hit an unrelated process.
    #[track_caller]
    pub fn signal(&mut self, sig: i32) {
        if !self.is_running() {
            self.fail(&format!(
                "cannot send signal {sig}: the process already exited"
            ));
        }
        let pid = self.pid().expect("running");
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("running `kill -{sig} {pid}`: {e}"));
        assert!(status.success(), "`kill -{sig} {pid}` failed: {status}");
    }

    /// Whether the process is still running. Once it has exited, the pid is never signalled
    /// again (the exit status stays available to `wait_with_timeout`).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the process to exit, bounded by `timeout`; on timeout it is killed and the
    /// test panics with the output so far. Never panics on a non-zero exit.
    #[track_caller]
    pub fn wait_with_timeout(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(2);
        let status = loop {
            let child = self.child.as_mut().expect("not yet reaped");
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => panic!("waiting for `{}`: {e}", self.command),
            }
            let now = Instant::now();
            if now >= deadline {
                self.kill();
                self.fail(&format!("did not exit within {timeout:?} (killed)"));
            }
            std::thread::sleep(interval.min(deadline - now));
            interval = (interval * 2).min(Duration::from_millis(50));
        };
        self.child = None;
        self.stdout.drain(DRAIN_TIMEOUT);
        self.stderr.drain(DRAIN_TIMEOUT);
        Output::new(
            self.command.clone(),
            status,
            self.stdout.text(),
            self.stderr.text(),
        )
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    #[track_caller]
    fn fail(&mut self, what: &str) -> ! {
        // Give the readers a moment so the message shows the latest output.
        if self.child.is_none() {
            self.stdout.drain(Duration::from_millis(500));
            self.stderr.drain(Duration::from_millis(500));
        }
        panic!(
            "{what}\ncommand: {}\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}\n--------------",
            self.command,
            self.stdout.text().trim_end(),
            self.stderr.text().trim_end()
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Receives lines until one matches, the deadline passes, or the stream ends.
fn wait_line(
    lines: &Receiver<String>,
    mut pred: impl FnMut(&str) -> bool,
    timeout: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if pred(&line) => return Ok(line),
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) => return Err(format!("timed out after {timeout:?}")),
            Err(RecvTimeoutError::Disconnected) => return Err("stream closed".into()),
        }
    }
}
