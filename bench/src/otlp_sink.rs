//! `bench otlp-sink`: the e2e test collector ([`e2e::otlp::OtlpReceiver`]) as a process, so
//! `scripts/bench-traces.sh` can measure ext-authz exporting every check's span to a real
//! OTLP/gRPC endpoint. Prints `{"port": N}` once listening, runs until killed, and counts what
//! it received on stderr at exit (SIGTERM).

use std::time::Duration;

/// Options of `bench otlp-sink` (none yet: the port is chosen by the kernel and printed).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    let sink = e2e::otlp::OtlpReceiver::start();
    println!("{}", serde_json::json!({ "port": sink.port() }));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
