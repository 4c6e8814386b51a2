//! `pacup`: parse, run, and map the outcome to the documented exit code in one place
//! (docs/reference.md, "Exit codes").

use clap::Parser;
use pacup::cli::{self, Cli};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // clap prints usage errors (exit 2) and --help/--version (exit 0) itself; a
        // closed stdout while printing help is not worth a panic.
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    cli::init_tracing(&cli.global);
    let code = match cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code_of(&e)
        }
    };
    code.into()
}
