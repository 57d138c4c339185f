//! `demo-upstream`: the JSON echo server behind Envoy in the local stack and the e2e tests.

use std::io::IsTerminal as _;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = demo_upstream::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    demo_upstream::serve(&config, demo_upstream::shutdown_signal()).await?;
    Ok(())
}
