//! `pacup`: parse, run, map the outcome to its exit code in one place.

use clap::Parser;
use pacup::cli::{self, Cli};

#[tokio::main]
async fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // clap prints usage errors with exit 2 and --help/--version with 0.
        Err(e) => e.exit(),
    };
    cli::init_tracing(&cli.global);
    let code = match cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code_of(&e)
        }
    };
    std::process::exit(code.code());
}
