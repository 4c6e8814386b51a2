//! `casstart`: the vendor's syntax on pacup's regions; starts a region through its host agent
//! (docs/vendor-tools.md).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pacup::cli::vendor::main(pacup::cli::vendor::Tool::Casstart).await
}
