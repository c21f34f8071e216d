//! `strata-fsfuzz`: run random operation sequences on kernel overlayfs and
//! on unionfs side by side and report every divergence with a minimised
//! reproducer (a Rust test and a shell script). Needs root.
//!
//! ```text
//! strata-fsfuzz --seed 1 --time 60 --ops 30 --unionfs target/debug/unionfs
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use strata_tests::diff::{minimise, run, Config, Reproducer};
use strata_tests::mount::UnionfsCmd;
use strata_tests::{scenario_from_bytes, scenario_from_seed};

/// Differential fuzzer: unionfs against kernel overlayfs.
#[derive(Parser, Debug)]
#[command(name = "strata-fsfuzz", version)]
struct Args {
    /// First seed; seeds seed, seed+1, ... are run (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Time budget in seconds (default 60; 0 = until --count is reached).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Stop after this many seeds.
    #[arg(long)]
    count: Option<u64>,
    /// Maximum operations per sequence.
    #[arg(long, default_value_t = 30)]
    ops: usize,
    /// The unionfs binary (default: $STRATA_UNIONFS or target/{debug,release}/unionfs).
    #[arg(long)]
    unionfs: Option<PathBuf>,
    /// Extra `-o` option for unionfs (repeatable).
    #[arg(long = "unionfs-opt")]
    unionfs_opts: Vec<String>,
    /// Compare the trees only at the end of each sequence (faster).
    #[arg(long)]
    end_only: bool,
    /// Do not compare the upper directories' format.
    #[arg(long)]
    no_upper: bool,
    /// Do not cross-remount (kernel over unionfs's upper and vice versa).
    #[arg(long)]
    no_cross: bool,
    /// Maximum runs spent minimising one divergence.
    #[arg(long, default_value_t = 400)]
    minimise_budget: usize,
    /// Also compare unionfs's own `trusted.unionfs.*` xattrs in the upper.
    #[arg(long)]
    strict_xattrs: bool,
    /// Reference kernel mount with metacopy=on (default off, like this kernel).
    #[arg(long)]
    kernel_metacopy: bool,
    /// Stop at the first divergence.
    #[arg(long)]
    stop: bool,
    /// Decode this file (e.g. a cargo-fuzz input) instead of seeds and run it once.
    #[arg(long)]
    input: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let unionfs = match &args.unionfs {
        Some(p) => UnionfsCmd {
            bin: p.clone(),
            extra_opts: args.unionfs_opts.clone(),
        },
        None => UnionfsCmd {
            extra_opts: args.unionfs_opts.clone(),
            ..UnionfsCmd::locate()?
        },
    };
    let cfg = Config {
        unionfs,
        compare_each_op: !args.end_only,
        compare_upper: !args.no_upper,
        cross_remount: !args.no_cross,
        minimise_budget: args.minimise_budget,
        ignore_private_xattrs: !args.strict_xattrs,
        kernel_metacopy: args.kernel_metacopy,
    };
    if let Some(input) = &args.input {
        let data = std::fs::read(input).with_context(|| format!("read {}", input.display()))?;
        let sc = scenario_from_bytes(&data, args.ops);
        return report_one(&sc, &cfg, &format!("input {}", input.display())).map(|_| ());
    }
    let first = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let start = Instant::now();
    let budget = Duration::from_secs(args.time);
    let (mut done, mut diverged) = (0u64, Vec::new());
    let mut last_print = Instant::now();
    let mut seed = first;
    loop {
        if args.count.is_some_and(|c| done >= c) || (args.time > 0 && start.elapsed() >= budget) {
            break;
        }
        let sc = scenario_from_seed(seed, args.ops);
        if report_one(&sc, &cfg, &format!("seed {seed}"))? {
            diverged.push(seed);
            if args.stop {
                done += 1;
                break;
            }
        }
        done += 1;
        seed = seed.wrapping_add(1);
        if last_print.elapsed() > Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!(
                "{done} seeds, {:.2} seeds/s, {} diverged",
                rate(done, start),
                diverged.len()
            );
        }
    }
    println!(
        "seeds {first}..{} run: {done}, {:.2} seeds/s, {} diverged{}",
        first.wrapping_add(done),
        rate(done, start),
        diverged.len(),
        if diverged.is_empty() {
            String::new()
        } else {
            format!(": {diverged:?}")
        }
    );
    if diverged.is_empty() {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

fn rate(done: u64, start: Instant) -> f64 {
    done as f64 / start.elapsed().as_secs_f64().max(1e-3)
}

/// Run one scenario; on divergence minimise it and print the reproducer.
/// Returns whether it diverged.
fn report_one(sc: &strata_tests::Scenario, cfg: &Config, what: &str) -> Result<bool> {
    match run(sc, cfg) {
        Err(e) => {
            println!("{what}: harness error (not counted as a divergence): {e:#}");
            Ok(false)
        }
        Ok(None) => Ok(false),
        Ok(Some(d)) => {
            println!("{what}: {d}");
            let (min, md) = minimise(sc, cfg, &d);
            println!(
                "{what}: minimised to {} ops, {} layer entries: {md}\n{}",
                min.ops.len(),
                min.lowers
                    .iter()
                    .chain(std::iter::once(&min.upper))
                    .map(|l| l.nodes.len())
                    .sum::<usize>(),
                Reproducer::new(&min, &md)
            );
            Ok(true)
        }
    }
}
