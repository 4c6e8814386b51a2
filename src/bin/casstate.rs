//! `casstate`: the vendor's syntax on pacup's regions; prints a region's state (for a command driver's `region_state` template)
//! (docs/vendor-tools.md).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pacup::cli::vendor::main(pacup::cli::vendor::Tool::Casstate).await
}
