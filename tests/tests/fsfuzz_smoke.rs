//! CI smoke run of the differential fuzzer: generated sequences against
//! kernel overlayfs for a time budget (default 60 s, `STRATA_FSFUZZ_SECS`),
//! seeds counting up from a fixed base (`STRATA_FSFUZZ_SEED`, default
//! 100000) so a CI failure names seeds that reproduce with
//! `strata-fsfuzz --seed N --count 1`. Long runs: see the `strata-fsfuzz`
//! binary. Needs root and the built `unionfs` binary.

use std::time::{Duration, Instant};

use strata_tests::diff::{check, Config};
use strata_tests::scenario_from_seed;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs generated sequences for the time budget; `compare_upper` decides
/// whether the upper dirs' on-disk format is compared too.
fn smoke(compare_upper: bool) {
    let secs = env_u64("STRATA_FSFUZZ_SECS", 60);
    let first = env_u64("STRATA_FSFUZZ_SEED", 100_000);
    let mut cfg = Config::full().unwrap_or_else(|e| panic!("{e:#}"));
    cfg.minimise_budget = 40;
    cfg.compare_upper = compare_upper;
    cfg.cross_remount = compare_upper;
    let start = Instant::now();
    let mut seed = first;
    let mut failures = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) && failures.len() < 3 {
        if let Err(e) = check(&scenario_from_seed(seed, 30), &cfg) {
            failures.push(format!("seed {seed}: {e}"));
        }
        seed += 1;
    }
    let run = seed - first;
    eprintln!(
        "fsfuzz smoke: {run} seeds from {first} in {:.0?}",
        start.elapsed()
    );
    assert!(run > 0, "no sequence ran within {secs} s");
    assert!(
        failures.is_empty(),
        "{} diverging seeds:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// What users see: errno of every operation and the visible tree after each
/// one must match kernel overlayfs.
#[test]
fn fsfuzz_smoke_against_kernel_overlayfs() {
    smoke(false);
}

/// The upper dirs' on-disk format as well, and each side's upper mounted
/// by the other implementation (kernel overlayfs over unionfs's upper,
/// unionfs over the kernel's).
#[test]
fn fsfuzz_smoke_upper_format() {
    smoke(true);
}
