//! `bench criterion`: the medians and means of criterion benchmarks already run, read from
//! `target/criterion/<name>/new/estimates.json`, as one JSON line each for `bench/report.py`.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

/// Options of `bench criterion`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// criterion's output directory.
    #[arg(long, default_value = "target/criterion")]
    dir: PathBuf,
    /// Benchmark names; one that has not run (no estimates file) is skipped.
    names: Vec<String>,
}

/// One output line.
#[derive(Serialize)]
struct Estimate<'a> {
    kind: &'static str,
    name: &'a str,
    median_ns: f64,
    mean_ns: f64,
}

/// Prints one line per benchmark that has estimates.
pub fn run(args: &Args) -> anyhow::Result<()> {
    for name in &args.names {
        let path = args.dir.join(name).join("new/estimates.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let estimates: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let point = |which: &str| {
            estimates[which]["point_estimate"]
                .as_f64()
                .with_context(|| format!("{}: no {which}.point_estimate", path.display()))
        };
        let line = Estimate {
            kind: "criterion",
            name,
            median_ns: point("median")?,
            mean_ns: point("mean")?,
        };
        println!("{}", serde_json::to_string(&line)?);
    }
    Ok(())
}
