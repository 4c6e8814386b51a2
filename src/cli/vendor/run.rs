//! The `main` of casstart, casstop and casstate: argv, help and version, then the request
//! against the PSOR.

use super::{parse, probe, Action, Request, Tool};
use crate::cli::output::outln;
use crate::cli::{self, Cli, GlobalArgs};
use crate::error::{Error, ExitCode};
use clap::Parser;

/// The global options, from the environment only: the vendor's syntax has no place for
/// them, and real regions read the PSOR from their configuration.
#[derive(Debug, Parser)]
#[command(name = "pacup", no_binary_name = true)]
struct FromEnv {
    #[command(flatten)]
    global: GlobalArgs,
}

/// A bad `PACUP_*` value (only `PACUP_BY` has a form to check), named by its variable:
/// clap's own message would name a `--by` flag these tools do not have.
fn env_error(e: clap::Error) -> Error {
    use clap::error::{ContextKind, ContextValue};
    let text = |k| match e.get(k) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let flag = text(ContextKind::InvalidArg);
    let var = flag
        .trim_start_matches("--")
        .split(' ')
        .next()
        .unwrap_or("")
        .replace('-', "_")
        .to_ascii_uppercase();
    let why = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
    let why = why.split_once("\": ").map_or(why.as_str(), |(_, w)| w);
    Error::invalid(
        format!("env PACUP_{var}"),
        text(ContextKind::InvalidValue),
        why,
    )
}

/// Global options from `PACUP_*`, with the audit name saying which tool acted.
fn global_from_env(tool: Tool) -> anyhow::Result<GlobalArgs> {
    let mut g = FromEnv::try_parse_from(std::iter::empty::<String>())
        .map_err(env_error)?
        .global;
    let who = g.by.take().unwrap_or_else(crate::names::default_actor);
    g.by = Some(format!("{who} ({tool})"));
    Ok(g)
}

/// argv as text: the vendor's syntax is all text, and a byte string that is not UTF-8 is
/// bad input (exit 2), not a reason to panic.
fn text_args() -> Result<Vec<String>, String> {
    std::env::args_os()
        .skip(1)
        .enumerate()
        .map(|(i, a)| {
            a.into_string().map_err(|a| {
                format!(
                    "argument {} is not valid UTF-8: {:?}",
                    i + 1,
                    a.to_string_lossy()
                )
            })
        })
        .collect()
}

fn usage_error(tool: Tool, msg: &str) -> std::process::ExitCode {
    eprintln!("{tool}: {msg}\n{}", tool.usage());
    ExitCode::InvalidInput.into()
}

/// Runs `tool` with the process's argv and environment; returns its exit code.
pub async fn main(tool: Tool) -> std::process::ExitCode {
    use std::io::Write as _;
    let args = match text_args() {
        Ok(a) => a,
        Err(msg) => return usage_error(tool, &msg),
    };
    if args
        .iter()
        .any(|a| matches!(a.as_str(), "-h" | "--help" | "-?" | "/?"))
    {
        // A reader that went away (`casstart /? | head -1`) is not an error.
        let _ = writeln!(std::io::stdout(), "{}", tool.usage());
        return ExitCode::Ok.into();
    }
    if args.len() == 1 && matches!(args[0].as_str(), "--version" | "-V") {
        let _ = writeln!(
            std::io::stdout(),
            "{tool} (pacup {})",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::Ok.into();
    }
    let env = |k: &str| std::env::var(k).ok();
    let req = match parse(tool, &args, &env) {
        Ok(r) => r,
        Err(msg) => return usage_error(tool, &msg),
    };
    let code = match run(tool, req).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{tool}: {e:#}");
            cli::exit_code_of(&e)
        }
    };
    code.into()
}

async fn run(tool: Tool, req: Request) -> anyhow::Result<ExitCode> {
    let global = global_from_env(tool)?;
    cli::init_tracing(&global);
    let opts = cli::commands::psor_options(&global)?;
    let psor = crate::conn::Psor::connect(&opts).await?;
    let pac = cli::commands::pac_or_only(&psor, req.pac.clone(), "env ES_PAC").await?;
    let snap = crate::psor::Pac::new(psor, pac.clone()).snapshot().await?;
    let resolved = probe::resolve_region(&snap, req.region.as_str()).map_err(Error::refused)?;
    if let Some(r) = resolved.as_deref().filter(|r| *r != req.region.as_str()) {
        tracing::info!("region {} is {r} in PAC {pac}", req.region);
    }
    let region = resolved.unwrap_or_else(|| req.region.to_string());
    if let Action::State { json } = req.action {
        let Some(p) = probe::probe(&snap, &region) else {
            if !snap.exists && snap.hosts.is_empty() {
                return Err(Error::NoSuchPac(pac.to_string()).into());
            }
            return Err(Error::refused(format!(
                "region {region} is not known in PAC {pac}: it has no region record and no \
                 host agent lists it"
            ))
            .into());
        };
        if json {
            outln!("{}", p.json());
        } else {
            outln!("{}", p.line());
        }
        return Ok(ExitCode::Ok);
    }
    // Start and stop are `pacup region start|stop`, run by the same code.
    let argv = req
        .pacup_argv(pac.as_str(), &region)
        .expect("start and stop have a pacup command line");
    let mut cli = Cli::try_parse_from(argv)?;
    cli.global = global;
    cli::run(cli).await
}
