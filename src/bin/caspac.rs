//! `caspac`: the vendor's PSOR admin syntax on top of pacup (SPEC section 6).
//!
//! The legacy argv is translated into pacup's own argument structs and run by the same
//! code, so both binaries behave and exit alike.

use pacup::cli::{self, caspac};
use pacup::{Error, ExitCode};

async fn resolve_only_pac(legacy: &caspac::Legacy) -> anyhow::Result<String> {
    // SetMode without ES_PAC: the PAC is the only one in the PSOR.
    let probe = legacy.into_cli(Some("P"))?;
    let opts = cli::commands::psor_options(&probe.global)?;
    let psor = pacup::conn::Psor::connect(&opts).await?;
    Ok(cli::commands::pac_or_only(&psor, None, "env ES_PAC")
        .await?
        .to_string())
}

async fn run(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let env = |k: &str| std::env::var(k).ok();
    let legacy = caspac::parse(&args, &env)
        .map_err(|e| anyhow::Error::new(Error::invalid("caspac arguments", args.join(" "), e)))?;
    let only = if legacy.needs_only_pac() {
        Some(resolve_only_pac(&legacy).await?)
    } else {
        None
    };
    let cli = legacy.into_cli(only.as_deref())?;
    cli::init_tracing(&cli.global);
    cli::run(cli).await
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| a == "-h" || a == "--help" || a == "-?" || a == "/?")
    {
        println!("{}", caspac::USAGE);
        std::process::exit(0);
    }
    let code = match run(args).await {
        Ok(c) => c,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<Error>()
                    .is_some_and(|x| x.exit_code() == ExitCode::InvalidInput)
            }) && e
                .chain()
                .any(|c| c.to_string().contains("caspac arguments"))
            {
                eprintln!("caspac: {e:#}\n{}", caspac::USAGE);
            } else {
                eprintln!("caspac: {e:#}");
            }
            cli::exit_code_of(&e)
        }
    };
    std::process::exit(code.code());
}
