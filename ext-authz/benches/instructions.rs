//! Instruction counts per check for the token-cache scenarios, independent of the machine's
//! load: `scripts/bench-cache.sh` runs this binary under `valgrind --tool=callgrind` twice per
//! scenario (N and 2N checks) and divides the difference by N, so setup (key generation,
//! minting) cancels out.
//!
//! Usage: `instructions SCENARIO CHECKS [service]` (`service`: through
//! `AuthzService::check_request` instead of `decide`; cargo's `--bench` argument is ignored); prints
//! one line: the checks, how many were allowed (all, or it fails) and the cache's hits and
//! misses (the warm-up check included).

use std::hint::black_box;

mod algs;
// The request headers `algs` builds its checks from; the rest of `common` serves the other benches.
#[allow(dead_code)]
mod common;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (name, checks, service) = match args.as_slice() {
        [name, checks] => (name, checks, false),
        [name, checks, how] if how == "service" => (name, checks, true),
        _ => {
            eprintln!(
                "usage: instructions SCENARIO CHECKS [service]; scenarios: {}",
                algs::NAMES.join(" ")
            );
            std::process::exit(64);
        }
    };
    let checks: usize = checks.parse().expect("CHECKS is a number");
    let scenario = algs::Scenario::new(name).unwrap_or_else(|| {
        eprintln!(
            "unknown scenario {name}; scenarios: {}",
            algs::NAMES.join(" ")
        );
        std::process::exit(64);
    });
    let (allowed, (hits, misses)) = if service {
        let mut s = scenario.into_service();
        let allowed = (0..checks).filter(|_| black_box(s.run())).count();
        (allowed, s.cache_counts())
    } else {
        let mut s = scenario;
        let allowed = (0..checks)
            .filter(|_| matches!(black_box(s.run()), ext_authz::check::Decision::Allow { .. }))
            .count();
        (allowed, s.cache_counts())
    };
    assert_eq!(allowed, checks, "every check of {name} must allow");
    algs::assert_measured(name, (hits, misses));
    println!("{name} checks={checks} allowed={allowed} cache_hits={hits} cache_misses={misses}");
}
