//! Every metric in ext-authz/README.md's "Metrics" table is in the live `/metrics` of the real
//! binary, with the documented type and every documented label value; and every family the
//! binary exports is in the table (issue #20). The README is parsed, so a newly documented metric
//! is checked without touching this test. Nothing is exempt: every family exists from the start
//! (the README: "All `(decision, reason)` series are created at startup"), and one allow and
//! one deny are sent anyway.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use crate::support::*;
use e2e::oidc_issuer::{Alg, TestIssuer};

/// A row of the table: name, type, and each label with its documented values.
#[derive(Debug)]
struct Documented {
    name: String,
    kind: String,
    labels: Vec<(String, Vec<String>)>,
}

/// The backticked tokens of `text`.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The rows of the "## Metrics" table.
fn documented(readme: &str) -> Vec<Documented> {
    let section = readme
        .split("\n## Metrics")
        .nth(1)
        .expect("README: no `## Metrics` section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `ext_authz_"))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 3, "row {row:?}");
            // A label is written "`label` = `value` \| `value`" or "`label` = `v`, `v`, …"; a
            // cell without " = " describes a metric without labels.
            let labels = cells[2]
                .split(';')
                .filter_map(|part| {
                    let (name, values) = part.split_once(" = ")?;
                    let name = backticked(name).pop()?.to_owned();
                    Some((
                        name,
                        backticked(values).into_iter().map(str::to_owned).collect(),
                    ))
                })
                .collect();
            Documented {
                name: backticked(cells[0])[0].to_owned(),
                kind: cells[1].to_owned(),
                labels,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exported_and_every_exported_one_documented() {
    let listed = documented(include_str!("../../README.md"));
    assert!(listed.len() >= 12, "README parse found only {listed:?}");
    assert!(listed.iter().any(|m| !m.labels.is_empty()), "{listed:?}");

    // An external issuer, so the per-issuer `ext_authz_jwks_*` families exist too.
    let issuer = TestIssuer::start(&[("k-rs", Alg::Rs256)]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ext-authz"))
        .env_clear()
        .env("RUST_LOG", "info")
        .env("JWT_SECRET", SECRET)
        .env("LOG_FORMAT", "json")
        .args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--oidc-issuer",
            &format!("test={}#edge", issuer.url),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (grpc_addr, metrics_addr, _log) = serving_addrs(&mut child);
    let mut client = authz(tcp_channel(grpc_addr).await);
    let good = format!("Bearer {}", token("default", SECRET, &[]));
    assert_eq!(
        http_status(&check(&mut client, Some(&good), &[]).await),
        200
    );
    assert_eq!(http_status(&check(&mut client, None, &[]).await), 401);
    let text = scrape(metrics_addr).await;
    let _ = child.kill();
    let _ = child.wait();

    let families: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let samples: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| l.starts_with("ext_authz_"))
        .map(|l| {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            let labels = l[end..]
                .strip_prefix('{')
                .and_then(|r| r.split_once('}'))
                .map_or("", |(ls, _)| ls);
            (&l[..end], labels)
        })
        .collect();

    for m in &listed {
        // OpenMetrics: a counter's family drops `_total`; a histogram's samples are `_count`…
        let family = m.name.strip_suffix("_total").unwrap_or(&m.name);
        let kind = families
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, k)| *k)
            .unwrap_or_else(|| panic!("{}: no `# TYPE {family}` in /metrics:\n{text}", m.name));
        assert_eq!(kind, m.kind, "{}: type", m.name);
        let sample = if kind == "histogram" {
            format!("{}_count", m.name)
        } else {
            m.name.clone()
        };
        let series: Vec<&str> = samples
            .iter()
            .filter(|(n, _)| *n == sample)
            .map(|(_, l)| *l)
            .collect();
        assert!(
            !series.is_empty(),
            "{}: no sample {sample}:\n{text}",
            m.name
        );
        for (label, values) in &m.labels {
            assert!(
                !values.is_empty(),
                "{}: label {label} lists no values",
                m.name
            );
            for value in values {
                let wanted = format!("{label}=\"{value}\"");
                assert!(
                    series.iter().any(|l| l.split(',').any(|kv| kv == wanted)),
                    "{}: no series with {wanted}:\n{text}",
                    m.name
                );
            }
        }
    }

    let documented: BTreeSet<&str> = listed
        .iter()
        .map(|m| m.name.strip_suffix("_total").unwrap_or(&m.name))
        .collect();
    let undocumented: Vec<&str> = families
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| !documented.contains(f))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in ext-authz/README.md: {undocumented:?}"
    );
}
