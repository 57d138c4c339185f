//! `bench measure`: runs one load command (`wrk` with `bench/wrk/report.lua`) and prints its JSON
//! summary line, extended with the configuration, the round, and what chosen processes and CPUs
//! spent while it ran (from `/proc`, read just before and just after).
//!
//! Why here and not in the script: the line is a record `bench/report.py` aggregates, so it is
//! built by a serializer from typed fields (a malformed wrk line fails the run instead of
//! producing a broken record), and the CPU accounting reads `/proc` the same way the soak driver
//! and `bench grpc` do ([`e2e::procfs`]).

use std::process::{Command, Stdio};

use anyhow::Context as _;
use e2e::procfs::{self, CpuSet, CpuTimes};
use serde::{Deserialize, Serialize};

/// Options of `bench measure`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration measured, copied into the output as `config`.
    #[arg(long)]
    config: String,
    /// Round number, copied into the output as `round` (omitted when not given).
    #[arg(long)]
    round: Option<u32>,
    /// `NAME=CPULIST` (taskset syntax): the share of the time CPUs CPULIST were busy, reported
    /// as `NAME_busy_pct`; repeatable, reported in order.
    #[arg(long = "busy", value_name = "NAME=CPULIST", value_parser = named::<CpuSet>)]
    busy: Vec<(String, CpuSet)>,
    /// `NAME=PID`: the CPU time (user + system, all threads) process PID spent, reported as
    /// `NAME_cpu_us`; repeatable, reported in order after the `--busy` fields.
    #[arg(long = "cpu", value_name = "NAME=PID", value_parser = named::<u32>)]
    cpu: Vec<(String, u32)>,
    /// The load command and its arguments, after `--`; its stdout must hold one line starting
    /// with `{"kind"` (bench/wrk/report.lua's summary).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Parses `NAME=VALUE`.
fn named<T: std::str::FromStr>(arg: &str) -> Result<(String, T), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {arg:?}"))?;
    let value = value
        .parse()
        .map_err(|_| format!("{name}: cannot parse {value:?}"))?;
    Ok((name.to_owned(), value))
}

/// The summary line of `bench/wrk/report.lua`, field for field and in its order.
#[derive(Debug, Deserialize, Serialize)]
struct WrkSummary {
    kind: String,
    label: String,
    requests: u64,
    duration_s: f64,
    rps: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: f64,
    non2xx: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    timeouts: u64,
}

/// Named measurements in the order they were asked for.
struct Fields(Vec<(String, serde_json::Value)>);

impl Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// One output line: wrk's summary, then what `bench measure` adds.
#[derive(Serialize)]
struct Measurement<'a> {
    #[serde(flatten)]
    summary: WrkSummary,
    config: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    round: Option<u32>,
    #[serde(flatten)]
    spent: Fields,
}

/// Runs the command between the two readings and prints one JSON line.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let read_cpus = || -> anyhow::Result<Vec<CpuTimes>> {
        args.busy
            .iter()
            .map(|(name, cpus)| CpuTimes::read(cpus).with_context(|| format!("{name}: /proc/stat")))
            .collect()
    };
    let read_procs = || -> anyhow::Result<Vec<f64>> {
        args.cpu
            .iter()
            .map(|(name, pid)| {
                procfs::cpu_micros(*pid).with_context(|| format!("{name}: CPU time of pid {pid}"))
            })
            .collect()
    };

    let (cores_before, procs_before) = (read_cpus()?, read_procs()?);
    let (program, rest) = args.command.split_first().context("no command")?;
    let output = Command::new(program)
        .args(rest)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {program}"))?;
    let (procs_after, cores_after) = (read_procs()?, read_cpus()?);
    anyhow::ensure!(output.status.success(), "{program}: {}", output.status);

    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("{\"kind\""))
        .with_context(|| format!("{program} printed no summary line: {stdout}"))?;
    let summary: WrkSummary =
        serde_json::from_str(line).with_context(|| format!("summary line {line:?}"))?;

    let mut spent = Vec::new();
    for ((name, _), (before, after)) in args.busy.iter().zip(cores_before.iter().zip(&cores_after))
    {
        spent.push((format!("{name}_busy_pct"), before.busy_pct(after).into()));
    }
    for ((name, _), (before, after)) in args.cpu.iter().zip(procs_before.iter().zip(&procs_after)) {
        // Whole microseconds: /proc counts in clock ticks (10 ms), so nothing is lost.
        let micros = (after - before).round() as i64;
        spent.push((format!("{name}_cpu_us"), micros.into()));
    }
    let measurement = Measurement {
        summary,
        config: &args.config,
        round: args.round,
        spent: Fields(spent),
    };
    println!("{}", serde_json::to_string(&measurement)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_keeps_wrks_fields_and_order_then_adds_the_measurements() {
        let line = r#"{"kind":"wrk","label":"a","requests":10,"duration_s":2.000,"rps":5.0,"p50_us":1,"p90_us":2,"p99_us":3,"p999_us":4,"max_us":5,"mean_us":1.5,"non2xx":0,"connect_errors":0,"read_errors":0,"write_errors":0,"timeouts":0}"#;
        let measurement = Measurement {
            summary: serde_json::from_str(line).unwrap(),
            config: "a",
            round: Some(2),
            spent: Fields(vec![
                ("envoy_core_busy_pct".into(), 98.4.into()),
                ("envoy_cpu_us".into(), 11_810_000i64.into()),
            ]),
        };
        let out = serde_json::to_string(&measurement).unwrap();
        assert_eq!(
            out,
            format!(
                "{},\"config\":\"a\",\"round\":2,\"envoy_core_busy_pct\":98.4,\
                 \"envoy_cpu_us\":11810000}}",
                line.replace("2.000", "2.0").trim_end_matches('}')
            )
        );
    }

    #[test]
    fn named_values_need_a_name_and_a_parsable_value() {
        assert_eq!(named::<u32>("authz=42"), Ok(("authz".to_owned(), 42)));
        assert!(named::<u32>("authz").is_err());
        assert!(named::<u32>("authz=x").is_err());
    }
}
