//! `taskplane`: see [`taskplane_cli::cli`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    taskplane_cli::cli::run().await
}
