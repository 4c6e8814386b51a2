//! The vendor's `caspac` syntax, translated into `pacup`'s own argument structs.
//!
//! `caspac -a<Action>[=<arg>] -s<type>,<host>:<port>[,<host>:<port>...] [-n<sorName>]`
//! (docs/reference.md#caspac). Option letters and action names are case-insensitive; an option's
//! value may be attached (`-aInitPac=MyPAC`) or follow as the next argument
//! (`-a InitPac=MyPAC`). `-s` types: `redis` and `redis_TLS`; several hosts mean Redis
//! Sentinel with master `<sorName>`. Environment: `ES_PAC` names the PAC for `SetMode`
//! (else the only PAC in the PSOR), `PACUP_PRODUCT_VERSION`, `PACUP_OS` and
//! `PACUP_BITNESS` describe the product for `CheckCompat`; without them, `PACUP_HOST`
//! names the host whose installed product is checked (the real caspac checks the
//! product it belongs to, so on a host it is that host's product).
//!
//! Translation is pure: [`parse`] reads argv and an environment lookup into a
//! [`Legacy`] request, and [`Legacy::into_cli`] builds the `pacup` [`Cli`] for it, so
//! every rule below is table-tested without a PSOR.

use super::Cli;
use crate::error::Error;
use clap::Parser;

/// Usage text shown with every refusal.
pub const USAGE: &str = concat!(
    "usage: caspac -a<Action>[=<arg>] -s<redis|redis_TLS>,<host>:<port>[,<host>:<port>...] [-n<sorName>]\n",
    "  actions: InitPac=<PAC>  CheckCompat=<PAC>  SetMode=Running|Quiesce  RemOldPAC=<PAC>\n",
    "  env: ES_PAC (PAC for SetMode), PACUP_PRODUCT_VERSION, PACUP_OS, PACUP_BITNESS (product for CheckCompat),\n",
    "       PACUP_HOST (CheckCompat without PACUP_PRODUCT_VERSION: the product installed on that host),\n",
    "       PACUP_PSOR_PASSWORD, PACUP_TLS_CA, PACUP_TLS_CERT, PACUP_TLS_KEY"
);

/// A caspac action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `-aInitPac=<P>`
    InitPac(String),
    /// `-aCheckCompat=<P>`, with the product from the environment.
    CheckCompat {
        /// PAC.
        pac: String,
        /// `PACUP_PRODUCT_VERSION`.
        version: String,
        /// `PACUP_OS`.
        os: Option<String>,
        /// `PACUP_BITNESS`.
        bitness: Option<String>,
    },
    /// `-aCheckCompat=<P>` without `PACUP_PRODUCT_VERSION`: the product installed on the
    /// host `PACUP_HOST` names.
    CheckCompatOnHost {
        /// PAC.
        pac: String,
        /// `PACUP_HOST`.
        host: String,
    },
    /// `-aSetMode=Running|Quiesce`; `pac` from `ES_PAC`, else resolved from the PSOR.
    SetMode {
        /// `running` or `quiesce`.
        mode: &'static str,
        /// `ES_PAC`, if set.
        pac: Option<String>,
    },
    /// `-aRemOldPAC=<P>`
    RemOldPac(String),
}

/// A parsed caspac request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Legacy {
    /// The PSOR URL built from `-s` (and `-n`).
    pub psor: String,
    /// The action.
    pub action: Action,
}

fn need_arg(action: &str, arg: Option<&str>, what: &str) -> Result<String, String> {
    match arg {
        Some(a) if !a.is_empty() => Ok(a.to_string()),
        _ => Err(format!("action {action} needs {what}: -a{action}=<{what}>")),
    }
}

/// Validates a PAC name here, so a refusal speaks caspac's terms rather than pacup's.
fn pac_arg(action: &str, arg: Option<&str>) -> Result<String, String> {
    let p = need_arg(action, arg, "PAC")?;
    crate::names::PacName::new(&p).map_err(|e| format!("-a{action}={p}: {e}"))?;
    Ok(p)
}

/// Parses caspac argv (without the program name). `env` looks up environment variables.
/// Every refusal is an [`Error::Usage`] (exit code 2).
pub fn parse<S: AsRef<str>>(
    args: &[S],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Legacy, Error> {
    parse_text(args, env).map_err(Error::Usage)
}

fn parse_text<S: AsRef<str>>(
    args: &[S],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Legacy, String> {
    let mut action: Option<String> = None;
    let mut sor: Option<String> = None;
    let mut name: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_ref();
        if a.starts_with("--") {
            return Err(format!("unknown option {a:?}; accepted: -a, -s, -n"));
        }
        let mut chars = a.chars();
        let (Some(dash), Some(letter)) = (chars.next(), chars.next()) else {
            return Err(format!("unexpected argument {a:?}"));
        };
        if dash != '-' && dash != '/' {
            return Err(format!("unexpected argument {a:?}"));
        }
        let attached: String = chars.collect();
        let value = if attached.is_empty() {
            i += 1;
            match args.get(i) {
                Some(v) => v.as_ref().to_string(),
                None => return Err(format!("option -{letter} needs a value")),
            }
        } else {
            attached
        };
        let slot = match letter.to_ascii_lowercase() {
            'a' => &mut action,
            's' => &mut sor,
            'n' => &mut name,
            _ => return Err(format!("unknown option -{letter}; accepted: -a, -s, -n")),
        };
        if slot.is_some() {
            return Err(format!(
                "option -{} given twice",
                letter.to_ascii_lowercase()
            ));
        }
        *slot = Some(value);
        i += 1;
    }
    let action = action.ok_or("no action: give -a<Action>")?;
    let sor = sor.ok_or("no PSOR: give -sredis,<host>:<port>")?;
    let psor = psor_url(&sor, name.as_deref())?;
    let (verb, arg) = match action.split_once('=') {
        Some((v, a)) => (v, Some(a)),
        None => (action.as_str(), None),
    };
    let action = match verb.to_ascii_lowercase().as_str() {
        "initpac" => Action::InitPac(pac_arg("InitPac", arg)?),
        "checkcompat" => {
            let pac = pac_arg("CheckCompat", arg)?;
            let version = env("PACUP_PRODUCT_VERSION").filter(|v| !v.is_empty());
            let host = env("PACUP_HOST").filter(|v| !v.is_empty());
            let version = match (version, host) {
                    (Some(v), _) => v,
                    (None, Some(host)) => {
                        crate::names::HostName::new(&host)
                            .map_err(|e| format!("env PACUP_HOST={host}: {e}"))?;
                        return Ok(Legacy {
                            psor,
                            action: Action::CheckCompatOnHost { pac, host },
                        });
                    }
                    (None, None) => return Err(
                        "CheckCompat needs the product version in env PACUP_PRODUCT_VERSION (e.g. 2.0.0), \
                         or the host whose installed product to check in env PACUP_HOST"
                            .into(),
                    ),
                };
            let os = env("PACUP_OS").filter(|v| !v.is_empty());
            let bitness = env("PACUP_BITNESS").filter(|v| !v.is_empty());
            crate::names::Product::parse(&version, os.as_deref(), bitness.as_deref()).map_err(
                |e| format!("{e} (from env PACUP_PRODUCT_VERSION/PACUP_OS/PACUP_BITNESS)"),
            )?;
            Action::CheckCompat {
                pac,
                version,
                os,
                bitness,
            }
        }
        "setmode" => {
            let m = need_arg("SetMode", arg, "Running|Quiesce")?;
            let mode = match m.to_ascii_lowercase().as_str() {
                "running" => "running",
                "quiesce" => "quiesce",
                _ => {
                    return Err(format!(
                        "unknown mode {m:?} for SetMode; accepted: Running, Quiesce"
                    ))
                }
            };
            let pac = env("ES_PAC").filter(|v| !v.is_empty());
            if let Some(p) = &pac {
                crate::names::PacName::new(p).map_err(|e| format!("env ES_PAC={p}: {e}"))?;
            }
            Action::SetMode { mode, pac }
        }
        "remoldpac" => Action::RemOldPac(pac_arg("RemOldPAC", arg)?),
        _ => {
            return Err(format!(
                "unknown action {verb:?}; accepted: InitPac, CheckCompat, SetMode, RemOldPAC"
            ))
        }
    };
    Ok(Legacy { psor, action })
}

/// Builds the PSOR URL from `-s<type>,<host:port>...` and `-n<sorName>`.
fn psor_url(sor: &str, name: Option<&str>) -> Result<String, String> {
    let mut parts = sor.split(',');
    let kind = parts.next().unwrap_or("");
    let tls = match kind.to_ascii_lowercase().as_str() {
        "redis" => false,
        "redis_tls" => true,
        _ => {
            return Err(format!(
                "unknown PSOR type {kind:?}; accepted: redis, redis_TLS"
            ))
        }
    };
    let hosts: Vec<&str> = parts.collect();
    if hosts.is_empty() {
        return Err(format!("-s{kind} needs at least one <host>:<port>"));
    }
    for h in &hosts {
        let ok = h
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(format!("PSOR address {h:?} is not <host>:<port>"));
        }
    }
    if hosts.len() == 1 {
        return Ok(format!(
            "{}://{}",
            if tls { "rediss" } else { "redis" },
            hosts[0]
        ));
    }
    let master = name
        .filter(|n| !n.is_empty())
        .ok_or("several PSOR addresses mean Redis Sentinel: name the master with -n<sorName>")?;
    Ok(format!(
        "{}://{}/{master}",
        if tls {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        },
        hosts.join(",")
    ))
}

impl Legacy {
    /// Whether the PAC must be looked up in the PSOR (SetMode without `ES_PAC`).
    pub fn needs_only_pac(&self) -> bool {
        matches!(self.action, Action::SetMode { pac: None, .. })
    }

    /// The equivalent `pacup` argv (program name first).
    pub fn pacup_argv(&self, only_pac: Option<&str>) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "pacup".into(),
            "--psor".into(),
            self.psor.clone(),
            "pac".into(),
        ];
        match &self.action {
            Action::InitPac(p) => v.extend(["init".into(), p.clone()]),
            Action::CheckCompat {
                pac,
                version,
                os,
                bitness,
            } => {
                v.extend([
                    "check-compat".into(),
                    pac.clone(),
                    "--product-version".into(),
                    version.clone(),
                ]);
                if let Some(o) = os {
                    v.extend(["--os".into(), o.clone()]);
                }
                if let Some(b) = bitness {
                    v.extend(["--bitness".into(), b.clone()]);
                }
            }
            Action::CheckCompatOnHost { pac, host } => v.extend([
                "check-compat".into(),
                pac.clone(),
                "--host".into(),
                host.clone(),
            ]),
            Action::SetMode { mode, pac } => {
                let p = pac
                    .clone()
                    .or(only_pac.map(String::from))
                    .unwrap_or_default();
                v.extend(["set-mode".into(), p, (*mode).into()]);
            }
            Action::RemOldPac(p) => v.extend(["remove-old".into(), p.clone()]),
        }
        v
    }

    /// The `pacup` command line for this request; invalid names or versions are refused
    /// here with clap's message (exit 2).
    pub fn into_cli(&self, only_pac: Option<&str>) -> Result<Cli, clap::Error> {
        let mut cli = Cli::try_parse_from(self.pacup_argv(only_pac))?;
        cli.global.caspac = true;
        Ok(cli)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, PacCommand, SetModeArg};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn p(args: &[&str]) -> Result<Legacy, String> {
        parse(args, &no_env).map_err(|e| {
            assert!(matches!(e, Error::Usage(_)), "{e:?}");
            e.to_string()
        })
    }

    #[test]
    fn documented_command_lines_verbatim() {
        let cases: &[(&[&str], &str, Action)] = &[
            (
                &["-aInitPac=MyPAC", "-sredis,127.0.0.1:6379"],
                "redis://127.0.0.1:6379",
                Action::InitPac("MyPAC".into()),
            ),
            (
                &["-aSetMode=Running", "-sredis,psor:6379"],
                "redis://psor:6379",
                Action::SetMode {
                    mode: "running",
                    pac: None,
                },
            ),
            (
                &["-aSetMode=Quiesce", "-sredis,psor:6379"],
                "redis://psor:6379",
                Action::SetMode {
                    mode: "quiesce",
                    pac: None,
                },
            ),
            (
                &["-aRemOldPAC=MyPAC", "-sredis,psor:6379"],
                "redis://psor:6379",
                Action::RemOldPac("MyPAC".into()),
            ),
        ];
        for (args, url, action) in cases {
            let l = p(args).unwrap();
            assert_eq!(&l.psor, url, "{args:?}");
            assert_eq!(&l.action, action, "{args:?}");
        }
    }

    #[test]
    fn case_insensitive_letters_actions_and_types() {
        let l = p(&["-AINITPAC=MyPAC", "-SREDIS,h:1"]).unwrap();
        assert_eq!(l.action, Action::InitPac("MyPAC".into()));
        assert_eq!(l.psor, "redis://h:1");
        let l = p(&["-asetmode=running", "-sredis_tls,h:1"]).unwrap();
        assert_eq!(l.psor, "rediss://h:1");
    }

    #[test]
    fn value_may_follow_as_next_argument() {
        let l = p(&["-a", "InitPac=MyPAC", "-s", "redis,h:1"]).unwrap();
        assert_eq!(l.action, Action::InitPac("MyPAC".into()));
        assert_eq!(l.psor, "redis://h:1");
    }

    #[test]
    fn several_hosts_mean_sentinel_with_sor_name() {
        let l = p(&["-aInitPac=P", "-sredis,a:1,b:2", "-nmymaster"]).unwrap();
        assert_eq!(l.psor, "redis+sentinel://a:1,b:2/mymaster");
        let l = p(&["-aInitPac=P", "-sredis_TLS,a:1,b:2", "-n", "m"]).unwrap();
        assert_eq!(l.psor, "rediss+sentinel://a:1,b:2/m");
        assert!(p(&["-aInitPac=P", "-sredis,a:1,b:2"])
            .unwrap_err()
            .contains("-n<sorName>"));
    }

    #[test]
    fn check_compat_without_a_version_checks_the_product_of_pacup_host() {
        let env = |k: &str| (k == "PACUP_HOST").then(|| "host1".to_string());
        let l = parse(&["-aCheckCompat=MyPAC", "-sredis,h:1"], &env).unwrap();
        assert_eq!(
            l.pacup_argv(None),
            [
                "pacup",
                "--psor",
                "redis://h:1",
                "pac",
                "check-compat",
                "MyPAC",
                "--host",
                "host1"
            ]
        );
        l.into_cli(None).expect("a valid pacup command line");
        // An explicit product version wins over the host's.
        let both = |k: &str| match k {
            "PACUP_HOST" => Some("host1".to_string()),
            "PACUP_PRODUCT_VERSION" => Some("2.0.0".to_string()),
            _ => None,
        };
        let l = parse(&["-aCheckCompat=MyPAC", "-sredis,h:1"], &both).unwrap();
        assert!(l
            .pacup_argv(None)
            .contains(&"--product-version".to_string()));
        let bad = |k: &str| (k == "PACUP_HOST").then(|| "no such/host".to_string());
        let e = parse(&["-aCheckCompat=MyPAC", "-sredis,h:1"], &bad).unwrap_err();
        assert!(e.to_string().contains("PACUP_HOST"), "{e}");
    }

    #[test]
    fn environment_rules() {
        let env = |k: &str| match k {
            "ES_PAC" => Some("OtherPAC".to_string()),
            "PACUP_PRODUCT_VERSION" => Some("2.0.0".to_string()),
            "PACUP_BITNESS" => Some("64".to_string()),
            _ => None,
        };
        let l = parse(&["-aSetMode=Running", "-sredis,h:1"], &env).unwrap();
        assert_eq!(
            l.action,
            Action::SetMode {
                mode: "running",
                pac: Some("OtherPAC".into())
            }
        );
        assert!(!l.needs_only_pac());
        let l = parse(&["-aCheckCompat=MyPAC", "-sredis,h:1"], &env).unwrap();
        assert_eq!(
            l.pacup_argv(None),
            [
                "pacup",
                "--psor",
                "redis://h:1",
                "pac",
                "check-compat",
                "MyPAC",
                "--product-version",
                "2.0.0",
                "--bitness",
                "64"
            ]
        );
        let e = p(&["-aCheckCompat=MyPAC", "-sredis,h:1"]).unwrap_err();
        assert!(e.contains("PACUP_PRODUCT_VERSION"), "{e}");
    }

    #[test]
    fn refusals() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "no action"),
            (&["-aInitPac=P"], "no PSOR"),
            (&["-sredis,h:1"], "no action"),
            (&["-aFoo=P", "-sredis,h:1"], "unknown action"),
            (&["-aInitPac", "-sredis,h:1"], "needs PAC"),
            (&["-aInitPac=", "-sredis,h:1"], "needs PAC"),
            (&["-aSetMode=Sideways", "-sredis,h:1"], "unknown mode"),
            (&["-aInitPac=P", "-smemcached,h:1"], "unknown PSOR type"),
            (&["-aInitPac=P", "-sredis"], "at least one"),
            (&["-aInitPac=P", "-sredis,h"], "not <host>:<port>"),
            (&["-aInitPac=P", "-sredis,h:99999"], "not <host>:<port>"),
            (&["-aInitPac=P", "-sredis,h:1", "-x1"], "unknown option"),
            (&["-aInitPac=P", "-aInitPac=Q", "-sredis,h:1"], "twice"),
            (&["-aInitPac=P", "-s"], "needs a value"),
            (&["InitPac=P"], "unexpected argument"),
        ];
        for (args, needle) in cases {
            let e = p(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn translates_into_pacup_structs() {
        let cli = p(&["-aInitPac=MyPAC", "-sredis,127.0.0.1:6379"])
            .unwrap()
            .into_cli(None)
            .unwrap();
        assert_eq!(cli.global.psor, "redis://127.0.0.1:6379");
        assert!(
            matches!(cli.command, Command::Pac(PacCommand::Init { ref pac, force: false }) if pac.as_str() == "MyPAC")
        );
        let cli = p(&["-aSetMode=Quiesce", "-sredis,h:1"])
            .unwrap()
            .into_cli(Some("ONLY"))
            .unwrap();
        assert!(
            matches!(cli.command, Command::Pac(PacCommand::SetMode { ref pac, mode: SetModeArg::Quiesce }) if pac.as_str() == "ONLY")
        );
        // Names and versions are validated in caspac's own terms.
        let e = p(&["-aInitPac=NINECHARS", "-sredis,h:1"]).unwrap_err();
        assert!(
            e.contains("-aInitPac=NINECHARS") && e.contains("PAC name"),
            "{e}"
        );
        let env = |k: &str| (k == "PACUP_PRODUCT_VERSION").then(|| "2.0".to_string());
        let e = parse(&["-aCheckCompat=P", "-sredis,h:1"], &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("PACUP_PRODUCT_VERSION"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(args in proptest::collection::vec(".{0,20}", 0..6)) {
            let _ = parse(&args, &no_env);
        }

        #[test]
        fn option_shaped_noise_never_panics(args in proptest::collection::vec("[-/][aAsSnNx]?[a-zA-Z_=,:0-9]{0,12}", 0..5)) {
            if let Ok(l) = parse(&args, &no_env) {
                // Whatever parses must translate without panicking; refusals are usage errors.
                if let Err(e) = l.into_cli(Some("P")) {
                    proptest::prop_assert_eq!(e.exit_code(), 2);
                }
            }
        }
    }
}
