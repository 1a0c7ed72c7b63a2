//! `taskplane`: see [`taskplane_server::cli`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    taskplane_server::cli::run().await
}
