//! runbench: container start time, side by side, in one run.
//!
//! Prepares one busybox root filesystem three ways — imported into a private
//! strata store, as a runc bundle (`runc spec`, `args: ["true"]`) and as a
//! podman image (`podman import` of a tar of the same tree) — then times
//! `true` in a fresh container with each runtime: `runc run`, `strata oci
//! run` on the same bundle (no union mount: the like-for-like comparison
//! with runc), `strata run --rm` on the union mount with `--network none`
//! and with the default bridge, and `podman run --rm`. Repetitions are
//! interleaved across rows (run 1: A B C, run 2: A B C, ...) so drift on a
//! shared machine spreads evenly. The whole benchmark runs in a network
//! namespace of its own, so the bridge row never touches the host's
//! networking. Everything it creates (podman image, containers, temp dirs)
//! is removed at the end, also when a run fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;

mod stats;

use stats::{ratio, Summary};

/// Prints a progress line on stderr.
macro_rules! progress {
    ($($arg:tt)*) => {
        eprintln!("[runbench] {}", format_args!($($arg)*))
    };
}

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "runbench",
    about = "Container start time: `true` in a fresh container with runc, strata and podman, side by side",
    after_help = "Run as root, from a release build (cargo build --release -p launcher -p strata-benches). \
The benchmark unshares a network namespace of its own at start and brings its lo up, so every container \
(and the bridge, veth and nft rules of the strata-bridge row) lives inside it and goes away with it; \
host networking is never touched and no traffic leaves the machine.\n\
Example: sudo target/release/runbench --runs 20 --json benches/results/runbench.json > table.md"
)]
struct Args {
    /// Timed runs of every row.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed warm-up runs of every row before the timed ones.
    #[arg(long, default_value_t = 2)]
    warmups: usize,
    /// Rows to run, comma separated (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    rows: Vec<Row>,
    /// The strata binary (default: `strata` next to this executable).
    #[arg(long)]
    strata: Option<PathBuf>,
    /// The runc binary.
    #[arg(long, default_value = "runc")]
    runc: PathBuf,
    /// The podman binary.
    #[arg(long, default_value = "podman")]
    podman: PathBuf,
    /// Parent of the temporary directory (store, state, bundle).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Write every sample and the summary as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// One line of the table: a way to run `true` in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Row {
    /// `/bin/true` on the host: the cost of spawning and reaping a process.
    Host,
    /// `runc run` on the prepared bundle (the baseline).
    Runc,
    /// `strata oci run` on the same bundle.
    StrataOci,
    /// `strata run --rm --network none` on the union mount.
    StrataNone,
    /// `strata run --rm` with the default bridge network.
    StrataBridge,
    /// `podman run --rm --network none`.
    Podman,
}

impl Row {
    const ALL: [Row; 6] = [
        Row::Host,
        Row::Runc,
        Row::StrataOci,
        Row::StrataNone,
        Row::StrataBridge,
        Row::Podman,
    ];

    fn label(self) -> &'static str {
        match self {
            Row::Host => "host /bin/true (spawn floor)",
            Row::Runc => "runc run (bundle)",
            Row::StrataOci => "strata oci run (same bundle)",
            Row::StrataNone => "strata run --rm --network none",
            Row::StrataBridge => "strata run --rm (bridge)",
            Row::Podman => "podman run --rm --network none",
        }
    }
}

/// Everything the benchmark prepared; `Drop` removes it all.
struct Prepared {
    strata: PathBuf,
    runc: PathBuf,
    podman: PathBuf,
    store: PathBuf,
    state: PathBuf,
    bundle: PathBuf,
    runc_root: PathBuf,
    oci_root: PathBuf,
    /// The podman image tag, once imported.
    podman_image: Option<String>,
    /// Unique prefix for container ids and names.
    tag: String,
    /// Removed last, after every container is gone.
    dir: Option<tempfile::TempDir>,
}

impl Prepared {
    /// Make the temp dir, the strata store, the runc bundle and (when a
    /// podman row is asked for) the podman image.
    fn new(args: &Args, strata: PathBuf, rows: &[Row]) -> Result<Prepared> {
        fs::create_dir_all(&args.dir)
            .with_context(|| format!("creating {}", args.dir.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("runbench-")
            .tempdir_in(&args.dir)
            .with_context(|| format!("creating a temp dir in {}", args.dir.display()))?;
        let root = dir.path().to_path_buf();
        let mut p = Prepared {
            strata,
            runc: args.runc.clone(),
            podman: args.podman.clone(),
            store: root.join("store"),
            state: root.join("state"),
            bundle: root.join("bundle"),
            runc_root: root.join("runc-root"),
            oci_root: root.join("oci-root"),
            podman_image: None,
            tag: format!("runbench-{}", std::process::id()),
            dir: Some(dir),
        };
        // From here on `p` cleans up whatever was made if a step fails.
        progress!("preparing in {}", root.display());
        launcher::busybox_image::import(&p.store, "busybox:latest")
            .context("importing the busybox image into the strata store")?;
        p.make_bundle()?;
        if rows.contains(&Row::Podman) {
            p.import_podman_image(&root.join("rootfs.tar"))?;
        }
        Ok(p)
    }

    /// A runc bundle: the busybox tree as rootfs and `runc spec`'s default
    /// config with `args: ["true"]` and no terminal.
    fn make_bundle(&self) -> Result<()> {
        let rootfs = self.bundle.join("rootfs");
        fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
        launcher::busybox_image::build(&rootfs).context("building the busybox rootfs")?;
        let mut spec = Command::new(&self.runc);
        spec.arg("spec").arg("--bundle").arg(&self.bundle);
        run_quiet(&mut spec, "runc spec")?;
        let path = self.bundle.join("config.json");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {} (from runc spec)", path.display()))?;
        let process = config
            .get_mut("process")
            .and_then(serde_json::Value::as_object_mut)
            .with_context(|| format!("{} has no process object", path.display()))?;
        process.insert("terminal".into(), false.into());
        process.insert("args".into(), serde_json::json!(["true"]));
        fs::write(&path, serde_json::to_vec_pretty(&config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// `podman import` of a tar of the bundle's rootfs under a unique tag.
    fn import_podman_image(&mut self, tar_path: &Path) -> Result<()> {
        let rootfs = self.bundle.join("rootfs");
        let file = fs::File::create(tar_path)
            .with_context(|| format!("creating {}", tar_path.display()))?;
        let mut builder = tar::Builder::new(file);
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", &rootfs)
            .with_context(|| format!("archiving {}", rootfs.display()))?;
        builder
            .into_inner()
            .with_context(|| format!("finishing {}", tar_path.display()))?;
        let image = format!("localhost/{}:latest", self.tag);
        let mut import = Command::new(&self.podman);
        import
            .arg("import")
            .arg("--quiet")
            .arg(tar_path)
            .arg(&image);
        // Record the tag first: a half-finished import is removed too.
        self.podman_image = Some(image);
        run_quiet(&mut import, "podman import")?;
        let _ = fs::remove_file(tar_path);
        Ok(())
    }

    /// The command one run of `row` executes; `n` makes ids unique.
    fn command(&self, row: Row, n: usize) -> Command {
        match row {
            Row::Host => Command::new("/bin/true"),
            Row::Runc => {
                let mut c = Command::new(&self.runc);
                c.arg("--root")
                    .arg(&self.runc_root)
                    .arg("run")
                    .arg("--bundle")
                    .arg(&self.bundle)
                    .arg(format!("{}-runc-{n}", self.tag));
                c
            }
            Row::StrataOci => {
                let mut c = Command::new(&self.strata);
                c.arg("oci")
                    .arg("--root")
                    .arg(&self.oci_root)
                    .arg("run")
                    .arg("--bundle")
                    .arg(&self.bundle)
                    .arg(format!("{}-oci-{n}", self.tag));
                c
            }
            Row::StrataNone | Row::StrataBridge => {
                let mut c = self.strata_cmd();
                c.arg("run").arg("--rm");
                if row == Row::StrataNone {
                    c.arg("--network").arg("none");
                }
                c.arg("busybox:latest").arg("true");
                c
            }
            Row::Podman => {
                let mut c = Command::new(&self.podman);
                // The hard rlimits here cannot be raised (no
                // CAP_SYS_RESOURCE in the bounding set): podman's defaults fail.
                c.args(["run", "--rm", "--network", "none"])
                    .args(["--ulimit", "nofile=1024:1024"])
                    .args(["--ulimit", "nproc=1024:1024"])
                    .arg(self.podman_image.as_deref().unwrap_or("missing-image"))
                    .arg("true");
                c
            }
        }
    }

    /// The temp dir (empty once removed).
    fn root(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    fn strata_cmd(&self) -> Command {
        let mut c = Command::new(&self.strata);
        c.arg("--store")
            .arg(&self.store)
            .arg("--state")
            .arg(&self.state);
        c
    }

    /// Best-effort removal of every container and the podman image.
    fn cleanup(&mut self) {
        for (bin, root) in [
            (self.runc.clone(), self.runc_root.clone()),
            (self.strata.clone(), self.oci_root.clone()),
        ] {
            if !root.exists() {
                continue;
            }
            let mut list = Command::new(&bin);
            if bin == self.strata {
                list.arg("oci");
            }
            list.arg("--root").arg(&root).args(["list", "-q"]);
            for id in output_lines(&mut list) {
                let mut del = Command::new(&bin);
                if bin == self.strata {
                    del.arg("oci");
                }
                del.arg("--root").arg(&root).args(["delete", "-f", &id]);
                let _ = run_quiet(&mut del, "delete");
            }
        }
        if self.state.exists() {
            let mut ps = self.strata_cmd();
            ps.args(["ps", "-aq", "--no-trunc"]);
            for id in output_lines(&mut ps) {
                let mut rm = self.strata_cmd();
                rm.args(["rm", "-f", "-v", &id]);
                let _ = run_quiet(&mut rm, "strata rm");
            }
        }
        if let Some(image) = self.podman_image.take() {
            let mut rmi = Command::new(&self.podman);
            rmi.args(["rmi", "-f", &image]);
            if let Err(e) = run_quiet(&mut rmi, "podman rmi") {
                progress!("warning: {e:#}");
            }
        }
        if let Some(dir) = self.dir.take() {
            detach_mounts_under(dir.path());
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                progress!("warning: removing {}: {e}", path.display());
            }
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Lazily unmount anything still mounted below `dir` (deepest first), so
/// removing the temp dir never walks into a live union mount.
fn detach_mounts_under(dir: &Path) {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        progress!("warning: {} was still mounted: detaching it", m.display());
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Run a command to completion with no stdin and its output captured;
/// an error carries its stderr.
fn run_quiet(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what} ({:?})", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The non-empty lines a command prints, or none when it fails.
fn output_lines(cmd: &mut Command) -> Vec<String> {
    run_quiet(cmd, "list")
        .map(|o| {
            String::from_utf8_lossy(&o)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Wall time of one run in milliseconds: from spawn to reaped exit.
fn time_once(mut cmd: Command, row: Row) -> Result<f64> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("starting {:?} for {}", cmd.get_program(), row.label()))?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}\ncommand: {:?}",
            row.label(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            cmd
        );
    }
    Ok(ms)
}

/// The 1-minute load average.
fn loadavg_1min() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The first line a command prints, or "unknown".
fn first_line(program: &Path, args: &[&str]) -> String {
    let mut c = Command::new(program);
    c.args(args);
    output_lines(&mut c)
        .into_iter()
        .next()
        .unwrap_or_else(|| "unknown".into())
}

/// A network namespace of our own with lo up: every container the
/// benchmark starts (and strata's bridge) lives in it.
fn enter_private_netns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("unshare(CLONE_NEWNET) for a private network namespace (run as root)")?;
    let mut up = Command::new("ip");
    up.args(["link", "set", "lo", "up"]);
    run_quiet(&mut up, "ip link set lo up (package iproute2)")?;
    Ok(())
}

/// The strata binary: `--strata`, else the one next to this executable.
fn find_strata(arg: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = arg {
        if !p.is_file() {
            bail!("--strata {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("finding this executable's path")?;
    let next = exe.with_file_name("strata");
    if next.is_file() {
        return Ok(next);
    }
    bail!(
        "no strata binary next to {}: build it with `cargo build --release -p launcher` or pass --strata PATH",
        exe.display()
    )
}

/// Measured facts about the machine during the run.
#[derive(Debug, Serialize)]
struct Machine {
    /// `uname -srm`.
    kernel: String,
    /// Online CPUs.
    cpus: usize,
    /// 1-minute load average before the first run.
    loadavg_start: Option<f64>,
    /// Highest 1-minute load average seen after a round of runs.
    loadavg_max: Option<f64>,
    /// 1-minute load average after the last run.
    loadavg_end: Option<f64>,
    /// `runc --version`, `podman --version`, `strata --version`.
    versions: Vec<String>,
}

/// One row's samples and summary.
#[derive(Debug, Serialize)]
struct RowResult {
    row: Row,
    label: &'static str,
    command: String,
    samples_ms: Vec<f64>,
    summary: Option<Summary>,
    median_vs_runc: Option<f64>,
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct Report {
    /// When the timed runs started.
    date_utc: String,
    runs: usize,
    warmups: usize,
    machine: Machine,
    rows: Vec<RowResult>,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runbench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("run runbench as root: runc, strata's cgroups and the network namespace need it");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let rows: Vec<Row> = if args.rows.is_empty() {
        Row::ALL.to_vec()
    } else {
        Row::ALL
            .into_iter()
            .filter(|r| args.rows.contains(r))
            .collect()
    };
    // Before any thread exists: unshare applies to the calling thread, and
    // every child inherits it.
    enter_private_netns()?;
    let strata = find_strata(args.strata.as_deref())?;
    let loadavg_start = loadavg_1min();
    let mut machine = Machine {
        kernel: first_line(Path::new("uname"), &["-srm"]),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        loadavg_start,
        loadavg_max: loadavg_start,
        loadavg_end: None,
        versions: vec![
            first_line(&args.runc, &["--version"]),
            first_line(&args.podman, &["--version"]),
            first_line(&strata, &["--version"]),
        ],
    };
    let prep = Prepared::new(&args, strata, &rows)?;
    let date_utc = first_line(Path::new("date"), &["-u", "+%Y-%m-%dT%H:%M:%SZ"]);

    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(args.runs); rows.len()];
    let total = args.warmups + args.runs;
    for round in 0..total {
        let mut line = Vec::with_capacity(rows.len());
        for (i, &row) in rows.iter().enumerate() {
            let ms = time_once(prep.command(row, round), row)?;
            if round >= args.warmups {
                samples[i].push(ms);
            }
            line.push(format!("{row:?} {ms:.1}"));
        }
        if let Some(load) = loadavg_1min() {
            machine.loadavg_max = Some(machine.loadavg_max.map_or(load, |m| m.max(load)));
        }
        let kind = if round < args.warmups {
            "warm-up"
        } else {
            "run"
        };
        progress!("{kind} {}/{total}: {} ms", round + 1, line.join(", "));
    }
    machine.loadavg_end = loadavg_1min();

    let runc_median = rows
        .iter()
        .position(|&r| r == Row::Runc)
        .and_then(|i| Summary::of(&samples[i]))
        .map(|s| s.median_ms);
    let results: Vec<RowResult> = rows
        .iter()
        .zip(samples)
        .map(|(&row, samples_ms)| {
            let summary = Summary::of(&samples_ms);
            let median_vs_runc = summary
                .zip(runc_median)
                .and_then(|(s, base)| ratio(s.median_ms, base));
            RowResult {
                row,
                label: row.label(),
                command: display_command(&prep.command(row, 0), &prep.root()),
                samples_ms,
                summary,
                median_vs_runc,
            }
        })
        .collect();
    let report = Report {
        date_utc,
        runs: args.runs,
        warmups: args.warmups,
        machine,
        rows: results,
    };
    print!("{}", markdown(&report));
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        progress!("wrote {}", path.display());
    }
    drop(prep);
    Ok(())
}

/// A command line for the table, with the temp dir shortened to `$TMP`.
fn display_command(cmd: &Command, tmp: &Path) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let text = parts.join(" ");
    let tmp = tmp.to_string_lossy();
    if tmp.is_empty() {
        text
    } else {
        text.replace(tmp.as_ref(), "$TMP")
    }
}

/// The markdown table and the lines around it.
fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s.push_str("| what | median ms | min ms | max ms | median / runc |\n");
    s.push_str("|---|---:|---:|---:|---:|\n");
    for row in &r.rows {
        let (med, min, max) =
            row.summary
                .map_or(("-".into(), "-".into(), "-".into()), |x: Summary| {
                    (
                        format!("{:.1}", x.median_ms),
                        format!("{:.1}", x.min_ms),
                        format!("{:.1}", x.max_ms),
                    )
                });
        let vs = row
            .median_vs_runc
            .map_or("-".into(), |v| format!("{v:.2}×"));
        s.push_str(&format!(
            "| {} | {med} | {min} | {max} | {vs} |\n",
            row.label
        ));
    }
    s.push('\n');
    let median = |want: Row| {
        r.rows
            .iter()
            .find(|x| x.row == want)
            .and_then(|x| x.summary)
            .map(|x| x.median_ms)
    };
    if let (Some(strata), Some(runc)) = (median(Row::StrataNone), median(Row::Runc)) {
        s.push_str(&format!(
            "strata run --rm --network none / runc run: {:.2}× (aim: at most 1×)\n",
            strata / runc
        ));
    }
    if let (Some(strata), Some(podman)) = (median(Row::StrataNone), median(Row::Podman)) {
        s.push_str(&format!(
            "podman run --rm / strata run --rm (both --network none): {:.1}× (aim: at least 5×)\n",
            podman / strata
        ));
    }
    let m = &r.machine;
    let load = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.2}"));
    s.push_str(&format!(
        "\n{} timed runs per row after {} warm-ups, interleaved; started {}; {}; {} CPUs; \
1-min load average {} at start, {} at most, {} at end{}.\n{}\n",
        r.runs,
        r.warmups,
        r.date_utc,
        m.kernel,
        m.cpus,
        load(m.loadavg_start),
        load(m.loadavg_max),
        load(m.loadavg_end),
        if m.loadavg_max.is_some_and(|l| l > 1.0) {
            " (shared, loaded machine: absolute times are inflated)"
        } else {
            ""
        },
        m.versions.join("; "),
    ));
    s.push_str("\nCommands (`$TMP` is the run's temp dir):\n\n");
    for row in &r.rows {
        s.push_str(&format!("- {}: `{}`\n", row.label, row.command));
    }
    s
}
