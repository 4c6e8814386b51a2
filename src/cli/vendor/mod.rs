//! The vendor's region commands on top of pacup: `casstart`, `casstop` and the
//! `casstate` probe (docs/vendor-tools.md).
//!
//! `casstart /r<region> /s:c|w|u [/w<secs>]`, `casstop /r<region> [/f]`,
//! `casstate /r<region> [/j|--json]`. `-` may replace `/`; option letters and values are
//! case-insensitive; a value may be attached (`/rREGION1`, `/s:w`) or follow as the next
//! argument (`/r REGION1`, `/s w`). The PSOR comes from env `PACUP_PSOR` (with
//! `PACUP_PSOR_PASSWORD` and the `PACUP_TLS_*` files, as for `caspac`), the PAC from env
//! `ES_PAC`, else the only PAC in the PSOR: real regions read both from their own
//! configuration, which pacup's stand-in regions do not have.
//!
//! Parsing is pure: [`parse`] turns argv and an environment lookup into a [`Request`],
//! and [`Request::pacup_argv`] gives the `pacup region start|stop` command line that
//! carries it out, so casstart and casstop act exactly as those commands do (same host
//! agent protocol, same exit codes). The state mapping of `casstate` is in [`probe`].

pub mod probe;
mod run;

pub use run::main;

use crate::names::{PacName, RegionName};
use crate::region::StartType;
use std::time::Duration;

/// How long casstart waits for the outcome without `/w`.
pub const DEFAULT_START_WAIT: Duration = Duration::from_secs(60);
/// The longest `/w` accepted (a day): a longer wait is a typing error.
const MAX_WAIT_SECS: u64 = 86_400;

/// One of the vendor-syntax binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `casstart`
    Casstart,
    /// `casstop`
    Casstop,
    /// `casstate`
    Casstate,
}

const ENV_USAGE: &str = concat!(
    "  env: PACUP_PSOR (the PSOR URL, default redis://127.0.0.1:6379), ES_PAC (else the only PAC in the PSOR),\n",
    "       PACUP_PSOR_PASSWORD, PACUP_TLS_CA, PACUP_TLS_CERT, PACUP_TLS_KEY\n",
    "  '-' may replace '/'; letters and values are case-insensitive; a value may follow as the next argument"
);

impl Tool {
    /// The program name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Casstart => "casstart",
            Tool::Casstop => "casstop",
            Tool::Casstate => "casstate",
        }
    }

    /// Usage text, shown with every refusal and for `-h`/`--help`/`/?`.
    pub fn usage(self) -> String {
        let head = match self {
            Tool::Casstart => concat!(
                "usage: casstart /r<region> /s:<c|w|u> [/w<secs>]\n",
                "  starts a region through its host agent and waits for the outcome\n",
                "  /s:c cold (initialise the PAC), /s:w warm (join it), /s:u upgrade (a new store for an incompatible version)\n",
                "  /w<secs> bounds the wait (default 60)"
            ),
            Tool::Casstop => concat!(
                "usage: casstop /r<region> [/f]\n",
                "  stops a region through its host agent: listener off, clients drain (up to 30s),\n",
                "  the job in hand finishes, the region leaves its store; forced past 60s\n",
                "  /f forces at once (clients cut, the job in hand is reclaimed by another region)"
            ),
            Tool::Casstate => concat!(
                "usage: casstate /r<region> [/j | --json]\n",
                "  prints the region's state: running, stopped, starting, stopping or unknown, then details\n",
                "  /j, --json: {\"state\":..,\"clients\":N,\"listener\":\"on|off\",...}\n",
                "  exit 0 when the PSOR answered, 1 for a region or PAC it does not know, 2 bad arguments, 5 PSOR unreachable"
            ),
        };
        format!("{head}\n{ENV_USAGE}")
    }
}

impl std::fmt::Display for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `casstart`
    Start {
        /// `/s`
        start_type: StartType,
        /// `/w`, else [`DEFAULT_START_WAIT`].
        wait: Duration,
    },
    /// `casstop`
    Stop {
        /// `/f`
        force: bool,
    },
    /// `casstate`
    State {
        /// `/j` or `--json`
        json: bool,
    },
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `/r`, as typed (matched against the PAC's regions case-insensitively later).
    pub region: RegionName,
    /// `ES_PAC`, if set.
    pub pac: Option<PacName>,
    /// What to do.
    pub action: Action,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Value,
    Flag,
}

fn options_of(tool: Tool) -> &'static [(char, Kind)] {
    match tool {
        Tool::Casstart => &[('r', Kind::Value), ('s', Kind::Value), ('w', Kind::Value)],
        Tool::Casstop => &[('r', Kind::Value), ('f', Kind::Flag)],
        Tool::Casstate => &[('r', Kind::Value), ('j', Kind::Flag)],
    }
}

fn accepted(tool: Tool) -> String {
    let mut v: Vec<String> = options_of(tool)
        .iter()
        .map(|(c, _)| format!("/{c}"))
        .collect();
    if tool == Tool::Casstate {
        v.push("--json".into());
    }
    v.join(", ")
}

/// Whether an argument is an option (`/x...` or `-x...`), not a value.
fn looks_like_option(a: &str) -> bool {
    let mut c = a.chars();
    matches!(c.next(), Some('/' | '-')) && c.next().is_some_and(|l| l.is_ascii_alphabetic())
}

/// Reads argv into (letter, value) pairs, each letter at most once.
fn scan<S: AsRef<str>>(tool: Tool, args: &[S]) -> Result<Vec<(char, Option<String>)>, String> {
    let spec = options_of(tool);
    let mut out: Vec<(char, Option<String>)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_ref();
        i += 1;
        if a.starts_with("--") {
            if tool == Tool::Casstate && a.eq_ignore_ascii_case("--json") {
                if out.iter().any(|(c, _)| *c == 'j') {
                    return Err("option /j (--json) given twice".into());
                }
                out.push(('j', None));
                continue;
            }
            return Err(format!(
                "unknown option {a:?}; accepted: {}",
                accepted(tool)
            ));
        }
        if !looks_like_option(a) {
            return Err(format!(
                "unexpected argument {a:?}; options start with / or -, e.g. /rREGION1"
            ));
        }
        let mut chars = a.chars();
        chars.next();
        let letter = chars.next().map(|c| c.to_ascii_lowercase()).unwrap_or(' ');
        let rest: String = chars.collect();
        let Some((_, kind)) = spec.iter().find(|(c, _)| *c == letter) else {
            return Err(format!(
                "unknown option {a:?}; accepted: {}",
                accepted(tool)
            ));
        };
        if out.iter().any(|(c, _)| *c == letter) {
            return Err(format!("option /{letter} given twice"));
        }
        let value = match kind {
            Kind::Flag if !rest.is_empty() => {
                return Err(format!("option /{letter} takes no value (got {a:?})"))
            }
            Kind::Flag => None,
            Kind::Value => {
                // `/s:w` as the vendor writes it; the colon is optional (`/sw`).
                let attached = rest.strip_prefix(':').unwrap_or(&rest);
                let v = if !attached.is_empty() {
                    attached.to_string()
                } else {
                    match args.get(i).map(AsRef::as_ref) {
                        Some(next) if !looks_like_option(next) => {
                            i += 1;
                            next.strip_prefix(':').unwrap_or(next).to_string()
                        }
                        _ => return Err(format!("option /{letter} needs a value")),
                    }
                };
                Some(v)
            }
        };
        out.push((letter, value));
    }
    Ok(out)
}

fn start_type(v: &str) -> Result<StartType, String> {
    match v.to_ascii_lowercase().as_str() {
        "c" | "cold" => Ok(StartType::Cold),
        "w" | "warm" => Ok(StartType::Warm),
        "u" | "upgrade" => Ok(StartType::Upgrade),
        _ => Err(format!(
            "unknown start type /s:{v}; accepted: /s:c (cold), /s:w (warm), /s:u (upgrade)"
        )),
    }
}

fn wait_secs(v: &str) -> Result<Duration, String> {
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_WAIT_SECS).contains(&n) && v.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Duration::from_secs(n))
        }
        _ => Err(format!(
            "invalid wait /w{v}: whole seconds from 1 to {MAX_WAIT_SECS}, e.g. /w120"
        )),
    }
}

/// Parses argv (without the program name) of `tool`; `env` looks up environment
/// variables. Every refusal is a message for exit code 2.
pub fn parse<S: AsRef<str>>(
    tool: Tool,
    args: &[S],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Request, String> {
    let opts = scan(tool, args)?;
    let get = |c: char| {
        opts.iter()
            .find(|(l, _)| *l == c)
            .map(|(_, v)| v.as_deref())
    };
    let region = match get('r') {
        Some(Some(r)) => RegionName::new(r).map_err(|e| format!("/r{r}: {e}"))?,
        _ => return Err("no region: give /r<region>, e.g. /rREGION1".into()),
    };
    let action = match tool {
        Tool::Casstart => {
            let st = match get('s') {
                Some(Some(s)) => start_type(s)?,
                // No default: a cold start by mistake would re-initialise the PAC.
                _ => {
                    return Err(
                        "no start type: give /s:c (cold), /s:w (warm) or /s:u (upgrade)".into(),
                    )
                }
            };
            let wait = match get('w') {
                Some(Some(w)) => wait_secs(w)?,
                _ => DEFAULT_START_WAIT,
            };
            Action::Start {
                start_type: st,
                wait,
            }
        }
        Tool::Casstop => Action::Stop {
            force: get('f').is_some(),
        },
        Tool::Casstate => Action::State {
            json: get('j').is_some(),
        },
    };
    let pac = match env("ES_PAC").filter(|p| !p.is_empty()) {
        Some(p) => Some(PacName::new(&p).map_err(|e| format!("env ES_PAC={p}: {e}"))?),
        None => None,
    };
    Ok(Request {
        region,
        pac,
        action,
    })
}

impl Request {
    /// The `pacup` command line (program name first) that carries out a start or stop of
    /// `region` in `pac` (both resolved against the PSOR); `None` for the state probe,
    /// which has no pacup equivalent.
    pub fn pacup_argv(&self, pac: &str, region: &str) -> Option<Vec<String>> {
        let mut v: Vec<String> = ["pacup", "region"].map(String::from).to_vec();
        match &self.action {
            // The region goes last, after `--`: a name such as `-A` is a region, never
            // an option of pacup's.
            Action::Start { start_type, wait } => v.extend([
                "start".into(),
                "--pac".into(),
                pac.into(),
                "--start-type".into(),
                start_type.as_str().into(),
                "--wait".into(),
                format!("{}s", wait.as_secs()),
                "--".into(),
                region.into(),
            ]),
            Action::Stop { force } => {
                v.extend(["stop".into(), "--pac".into(), pac.into()]);
                if *force {
                    v.push("--force".into());
                }
                v.extend(["--".into(), region.into()]);
            }
            Action::State { .. } => return None,
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests;
