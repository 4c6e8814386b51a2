//! `caspac`: the vendor's PSOR admin syntax on top of pacup (docs/reference.md#caspac).
//!
//! The legacy argv is translated into pacup's own argument structs and run by the same
//! code, so both binaries behave and exit alike.

use pacup::cli::{self, caspac};
use pacup::ExitCode;

async fn resolve_only_pac(legacy: &caspac::Legacy) -> anyhow::Result<String> {
    // SetMode without ES_PAC: the PAC is the only one in the PSOR.
    let probe = legacy.into_cli(Some("P"))?;
    let opts = cli::commands::psor_options(&probe.global)?;
    let psor = pacup::conn::Psor::connect(&opts).await?;
    Ok(cli::commands::pac_or_only(&psor, None, "env ES_PAC")
        .await?
        .to_string())
}

/// Several `-s` addresses: asks the first reachable node whether they are Sentinels or
/// Cluster nodes, and takes the URL for that.
async fn resolve_nodes(mut legacy: caspac::Legacy) -> anyhow::Result<caspac::Legacy> {
    if let Some(nodes) = legacy.nodes.clone() {
        let probe = legacy.into_cli(Some("P"))?;
        let opts = cli::commands::psor_options(&probe.global)?;
        let mode = pacup::conn::server_mode(&opts, &nodes.hosts, nodes.tls).await?;
        legacy.psor = nodes.url_for(mode)?;
    }
    Ok(legacy)
}

/// Runs a parsed request with the same code (and exit codes) as `pacup`.
async fn run(legacy: caspac::Legacy) -> anyhow::Result<ExitCode> {
    let only = if legacy.needs_only_pac() {
        Some(resolve_only_pac(&legacy).await?)
    } else {
        None
    };
    let cli = legacy.into_cli(only.as_deref())?;
    cli::init_tracing(&cli.global);
    cli::run(cli).await
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

fn usage_error(msg: &str) -> std::process::ExitCode {
    eprintln!("caspac: {msg}\n{}", caspac::USAGE);
    ExitCode::InvalidInput.into()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use std::io::Write as _;
    let args = match text_args() {
        Ok(a) => a,
        Err(msg) => return usage_error(&msg),
    };
    let first = args.first().map(String::as_str);
    if args
        .iter()
        .any(|a| a == "-h" || a == "--help" || a == "-?" || a == "/?")
    {
        // A reader that went away (`caspac --help | head -1`) is not an error.
        let _ = writeln!(std::io::stdout(), "{}", caspac::USAGE);
        return ExitCode::Ok.into();
    }
    if matches!(first, Some("--version" | "-V")) && args.len() == 1 {
        let _ = writeln!(
            std::io::stdout(),
            "caspac (pacup {})",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::Ok.into();
    }
    let env = |k: &str| std::env::var(k).ok();
    let legacy = match caspac::parse(&args, &env) {
        Ok(l) => l,
        Err(e) => return usage_error(&e.to_string()),
    };
    let legacy = match resolve_nodes(legacy).await {
        Ok(l) => l,
        // A node list that is neither Sentinel (with -n) nor Cluster is bad input, like
        // any other refusal of the arguments: shown with the usage.
        Err(e) => match e.downcast_ref::<pacup::error::Error>() {
            Some(pacup::error::Error::Usage(msg)) => return usage_error(msg),
            _ => {
                eprintln!("caspac: {e:#}");
                return cli::exit_code_of(&e).into();
            }
        },
    };
    let code = match run(legacy).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("caspac: {e:#}");
            cli::exit_code_of(&e)
        }
    };
    code.into()
}
