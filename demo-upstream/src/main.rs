//! `demo-upstream`: the JSON echo server behind Envoy in the local stack and the e2e tests.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = demo_upstream::Config::parse();
    // The same logging and signals as the real services (stderr, LOG_FORMAT, SIGTERM/SIGINT).
    edge_process::telemetry::init(config.log_format, "demo-upstream");
    let shutdown = async {
        edge_process::shutdown_signal().await;
    };
    demo_upstream::serve(&config, shutdown).await?;
    Ok(())
}
