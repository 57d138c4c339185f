//! Every metric login-service/README.md lists (the `GET /metrics` row of the HTTP API table) is
//! in the live `/metrics` of the real binary, with its type and labels; and every metric family
//! the binary exports is listed there (issue #20). The README is parsed, so a newly documented
//! metric is checked without touching this test. `POST /token`'s outcomes `issued` and
//! `reuse_detected` are checked by value.

use std::collections::BTreeSet;

use crate::helpers::{TestDb, basic, run_cli_ok};
use crate::served::Served;

/// A metric as the README lists it: `name{label=…}`, and a `(type)` after it if one is named.
#[derive(Debug)]
struct Documented {
    name: String,
    labels: Vec<String>,
    kind: Option<String>,
}

/// The metrics named in the README's `GET /metrics` row: backticked `login_…` tokens.
fn documented(readme: &str) -> Vec<Documented> {
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `GET /metrics`"))
        .expect("README: no `GET /metrics` row in the HTTP API table");
    let mut out = Vec::new();
    let mut rest = row;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let end = after.find('`').expect("unbalanced backticks");
        let token = &after[..end];
        rest = &after[end + 1..];
        if !token.starts_with("login_") {
            continue;
        }
        let (name, labels) = match token.split_once('{') {
            Some((name, inner)) => (
                name,
                inner
                    .trim_end_matches('}')
                    .split(',')
                    .map(|l| l.split('=').next().unwrap().trim().to_owned())
                    .collect(),
            ),
            None => (token, Vec::new()),
        };
        let kind = rest
            .trim_start()
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .map(|(k, _)| k)
            .filter(|k| ["counter", "gauge", "histogram", "summary"].contains(k))
            .map(str::to_owned);
        out.push(Documented {
            name: name.to_owned(),
            labels,
            kind,
        });
    }
    out
}

/// `# TYPE family kind` lines of an OpenMetrics text.
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (f, k) = l.split_once(' ').unwrap();
            (f.to_owned(), k.to_owned())
        })
        .collect()
}

/// The sample lines (name and label part) of an OpenMetrics text.
fn samples(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            let labels = l[name_end..]
                .strip_prefix('{')
                .and_then(|r| r.split_once('}'))
                .map_or("", |(ls, _)| ls);
            (l[..name_end].to_owned(), labels.to_owned())
        })
        .collect()
}

/// The family a documented sample name belongs to (OpenMetrics: counters lose `_total`).
fn family_of(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

#[test]
fn every_documented_metric_is_exported_and_every_exported_one_documented() {
    let readme = include_str!("../../README.md");
    let listed = documented(readme);
    assert!(listed.len() >= 5, "README parse found only {listed:?}");

    let db = TestDb::sqlite();
    run_cli_ok(&db, &[], &["migrate"], None);
    run_cli_ok(
        &db,
        &[],
        &["user", "add", "m@example.com", "--password-stdin"],
        Some("pw\n"),
    );
    let secret = "m".repeat(32);
    let server = Served::start(
        &[("DATABASE_URL", &db.url), ("JWT_SECRET", &secret)],
        "/readyz",
        200,
    );
    let http = reqwest::blocking::Client::new();
    // `login_attempts_total{outcome=…}` has a series only once a login was answered: one
    // success and one refusal.
    for (pw, status) in [("pw", 200), ("wrong", 401)] {
        let r = http
            .post(server.url("/login"))
            .header(
                "authorization",
                basic(format!("m@example.com:{pw}").as_bytes()),
            )
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
    }
    // `login_token_requests_total{outcome=…}` likewise: a refresh session, one rotation, then
    // the used token again (a reuse).
    let r = http
        .post(server.url("/login?refresh=true"))
        .header("authorization", basic(b"m@example.com:pw"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().unwrap();
    let first = v["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    for status in [200, 400] {
        let r = http
            .post(server.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=refresh_token&refresh_token={first}"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
    }
    let text = http
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let fams = families(&text);
    let samples = samples(&text);

    for m in &listed {
        let family = family_of(&m.name);
        let (_, kind) = fams
            .iter()
            .find(|(f, _)| f == family)
            .unwrap_or_else(|| panic!("{}: no `# TYPE {family}` in /metrics:\n{text}", m.name));
        if let Some(doc_kind) = &m.kind {
            assert_eq!(kind, doc_kind, "{}: type", m.name);
        }
        // The sample itself: a histogram shows as `_count`/`_sum`/`_bucket`.
        let sample = if kind == "histogram" {
            format!("{}_count", m.name)
        } else {
            m.name.clone()
        };
        let series: Vec<&String> = samples
            .iter()
            .filter(|(n, _)| *n == sample)
            .map(|(_, l)| l)
            .collect();
        assert!(
            !series.is_empty(),
            "{}: no sample {sample}:\n{text}",
            m.name
        );
        for label in &m.labels {
            assert!(
                series.iter().any(|l| l.contains(&format!("{label}=\""))),
                "{}: no series with label {label}:\n{text}",
                m.name
            );
        }
    }

    // The outcomes the README names for `POST /token` are the labels counted: a rotation is
    // `issued` (not a login success), the used token again is `reuse_detected`.
    for (outcome, n) in [("issued", 1), ("reuse_detected", 1)] {
        let line = format!("login_token_requests_total{{outcome=\"{outcome}\"}} {n}");
        assert!(
            readme.contains(&format!("`{outcome}`")),
            "README: {outcome}"
        );
        assert!(text.lines().any(|l| l == line), "no `{line}`:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l == "login_attempts_total{outcome=\"success\"} 2"),
        "the refresh login counts once as a login, the rotations not at all:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "login_token_duration_seconds_count 2"),
        "{text}"
    );

    // And the other way: nothing exported that the README does not list.
    let documented_families: BTreeSet<&str> = listed.iter().map(|m| family_of(&m.name)).collect();
    let undocumented: Vec<&str> = fams
        .iter()
        .map(|(f, _)| f.as_str())
        .filter(|f| !documented_families.contains(f))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in login-service/README.md: {undocumented:?}"
    );
    server.stop();
}
