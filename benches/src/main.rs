//! cowbench: copy-on-write benchmark across union filesystem backends.
//!
//! Builds (once, cached) a synthetic three-layer root filesystem, mounts it
//! with each backend in turn — the plain merged tree, kernel overlayfs,
//! fuse-overlayfs, unionfs-fuse, strata's unionfs over directories and over a
//! store image, or any mount command — runs the same in-process workloads on
//! each, and prints a markdown table of medians with the slowdown of every
//! backend against kernel overlayfs. `--json` keeps every sample, `--chart`
//! draws an SVG bar chart. Repetitions are interleaved across backends
//! (rep 1: A B C, rep 2: A B C, ...) so drift on a shared machine spreads
//! evenly. Progress goes to stderr, the table to stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;

mod backend;
mod chart;
mod dataset;
mod report;
mod rng;
mod run;
mod store;
mod sys;
mod trash;
mod workload;

use backend::{Backend, CustomSpec, Kind};
use dataset::Scale;
use workload::Workload;

/// Prints a progress line on stderr with the time since start.
macro_rules! progress {
    ($($arg:tt)*) => {
        $crate::log_progress(format_args!($($arg)*))
    };
}
pub(crate) use progress;

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Writes one progress line to stderr.
pub fn log_progress(args: std::fmt::Arguments<'_>) {
    let secs = START.get_or_init(Instant::now).elapsed().as_secs();
    eprintln!("[cowbench {:02}:{:02}] {args}", secs / 60, secs % 60);
}

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "cowbench",
    about = "Copy-on-write benchmark: the same workloads over kernel overlayfs, FUSE union filesystems and strata, side by side",
    after_help = "Backends: native (merged tree as a plain dir, the floor), overlay (kernel overlayfs; the ratio baseline), \
fuse-overlayfs, unionfs-fuse, strata-dir, strata-store. Append mount options with '+', e.g. overlay+metacopy=on, strata-dir+passthrough=0+cpu_latency=off. \
Custom: --custom 'name=X,[umount=CMD,][foreground,]mount=CMD' with placeholders {lowers} (top first, colon separated), \
{lowers_bottom_first}, {lower1} (bottom) {lower2} {lower3}, {upper}, {work}, {mnt}.\n\
Example: sudo cowbench --reps 3 --json results.json --chart results.svg > results.md"
)]
struct Args {
    /// Backends to run, comma separated (default: every one that is available).
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// Workloads to run, comma separated (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    workloads: Vec<Workload>,
    /// Repetitions of every workload on every backend.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Dataset size.
    #[arg(long, value_enum, default_value_t = Scale::Full)]
    scale: Scale,
    /// Short for --scale quick: a small dataset for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Where the dataset, stores and scratch mounts live (needs ~5 GiB for
    /// the full scale; the upper layer must be on the same file system).
    #[arg(long, default_value = "/var/tmp/cowbench")]
    dir: PathBuf,
    /// Write every sample and the summary as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw a grouped bar chart of the ratios as SVG.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// Also write the markdown table to this file.
    #[arg(long, value_name = "FILE.md")]
    table: Option<PathBuf>,
    /// strata's unionfs binary (default: next to cowbench, then
    /// target/release/unionfs, then PATH).
    #[arg(long, value_name = "PATH")]
    unionfs: Option<PathBuf>,
    /// A backend from a mount command template (repeatable).
    #[arg(long, value_name = "SPEC")]
    custom: Vec<String>,
    /// Only build (or check) the dataset (and the store, for strata-store) and exit.
    #[arg(long)]
    prepare_only: bool,
    /// Run nothing: print the table (and --chart, --table) of a saved --json file.
    #[arg(long, value_name = "FILE.json")]
    report_from: Option<PathBuf>,
    /// Hold a zero PM QoS CPU latency request (`/dev/cpu_dma_latency`) for
    /// the whole run, so idle CPUs poll instead of sleeping for every
    /// backend alike. strata's daemon makes that request itself while it is
    /// busy (its `cpu_latency=on` default); this gives the peers the same
    /// machine tuning. Needs root.
    #[arg(long)]
    hold_cpu_latency: bool,
    /// If an earlier run removed its scratch trees less than six minutes
    /// ago, wait until six minutes have passed before measuring: ext4
    /// without a journal makes every create scan recently freed inodes
    /// until then (without this flag, a warning is printed).
    #[arg(long)]
    settle: bool,
}

fn main() {
    START.get_or_init(Instant::now);
    if let Err(err) = real_main() {
        eprintln!("cowbench: {err:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.report_from {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: report::Results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a cowbench --json file", path.display()))?;
        return write_outputs(&args, &results);
    }
    let scale = if args.quick { Scale::Quick } else { args.scale };
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if !nix::unistd::geteuid().is_root() {
        progress!("warning: not root: kernel overlayfs and cold-cache runs need root; those fail or run warm");
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dataset = dataset::prepare(&args.dir, scale)?;
    let mut backends = choose_backends(&args)?;
    if args.prepare_only {
        for backend in backends.iter_mut().filter(|b| b.kind == Kind::StrataStore) {
            backend.store = Some(store::prepare(&args.dir, &dataset)?);
        }
        return Ok(());
    }
    let mut ready = Vec::new();
    for mut backend in backends {
        if backend.kind == Kind::StrataStore {
            match store::prepare(&args.dir, &dataset) {
                Ok(image) => backend.store = Some(image),
                Err(err) => {
                    progress!("skipping {}: {err:#}", backend.label);
                    continue;
                }
            }
        }
        ready.push(backend);
    }
    if ready.is_empty() {
        bail!("no backend is available to run");
    }
    let workloads = if args.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.workloads.clone()
    };
    // Kept open until the run ends: closing it drops the request.
    let _latency = if args.hold_cpu_latency {
        Some(sys::hold_zero_cpu_latency()?)
    } else {
        None
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let results = run::run_all(&run::Plan {
        dataset: &dataset,
        backends: &ready,
        workloads: &workloads,
        reps: args.reps,
        dir: &args.dir,
        command,
        settle: args.settle,
    })?;
    write_outputs(&args, &results)
}

/// Prints the table and writes the files asked for.
fn write_outputs(args: &Args, results: &report::Results) -> Result<()> {
    let table = report::markdown(results);
    print!("{table}");
    if let Some(path) = &args.table {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(results)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        progress!("raw results: {}", path.display());
    }
    if let Some(path) = &args.chart {
        match chart::write_svg(results, path) {
            Ok(()) => progress!("chart: {}", path.display()),
            Err(err) => progress!("no chart: {err:#}"),
        }
    }
    Ok(())
}

/// The backends to run, with binaries resolved; by default every backend
/// whose program exists.
fn choose_backends(args: &Args) -> Result<Vec<Backend>> {
    let unionfs = find_unionfs(args.unionfs.as_ref());
    let explicit = !args.backends.is_empty();
    let names: Vec<String> = if explicit {
        args.backends.clone()
    } else {
        [
            "native",
            "overlay",
            "fuse-overlayfs",
            "unionfs-fuse",
            "strata-dir",
            "strata-store",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut out = Vec::new();
    for name in names.iter().filter(|n| n.as_str() != "custom") {
        let mut backend = Backend::from_name(name)?;
        let program = match backend.kind {
            Kind::FuseOverlayfs => Some("fuse-overlayfs"),
            Kind::UnionfsFuse => Some("unionfs-fuse"),
            _ => None,
        };
        if let Some(program) = program {
            if which(program).is_none() {
                if explicit {
                    bail!("backend {name}: {program} is not installed (apt install {program})");
                }
                progress!("skipping {name}: {program} not installed");
                continue;
            }
        }
        if matches!(backend.kind, Kind::StrataDir | Kind::StrataStore) {
            match &unionfs {
                Some(path) => backend.unionfs = Some(path.clone()),
                None if explicit => bail!(
                    "backend {name}: strata's unionfs binary not found; build it with `cargo build --release -p unionfs` or pass --unionfs PATH"
                ),
                None => {
                    progress!("skipping {name}: strata's unionfs binary not found (cargo build --release -p unionfs, or --unionfs PATH)");
                    continue;
                }
            }
        }
        out.push(backend);
    }
    for spec in &args.custom {
        out.push(Backend::custom(CustomSpec::parse(spec)?));
    }
    let mut labels: Vec<&str> = out.iter().map(|b| b.label.as_str()).collect();
    labels.sort_unstable();
    if labels.windows(2).any(|w| w[0] == w[1]) {
        bail!("two backends share a label; give custom backends distinct name=");
    }
    Ok(out)
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn find_unionfs(given: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.clone());
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("unionfs")));
    sibling
        .filter(|p| p.is_file())
        .or_else(|| Some(PathBuf::from("target/release/unionfs")).filter(|p| p.is_file()))
        .or_else(|| which("unionfs"))
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}
