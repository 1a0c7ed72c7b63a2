//! The `taskplane` command line, built into this package so that its tests
//! can start, kill -9 and restart real control-plane processes.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    taskplane_cli::cli::run().await
}
