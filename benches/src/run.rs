//! The run loop: for each repetition, each backend, each workload: mount
//! fresh, measure, read the daemon's facts, unmount.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::backend::{Backend, Kind, Mounted, RunDirs};
use crate::dataset::Dataset;
use crate::progress;
use crate::report::{self, Failure, Meta, Results, Sample};
use crate::sys;
use crate::trash;
use crate::workload::{self, Ctx, Measure, Workload};

/// Mount/unmount cycles per `mount` sample.
const MOUNT_CYCLES: usize = 5;
/// Re-runs of a warm read workload spoiled by someone else's cache drop.
const MAX_RETRIES: u32 = 2;

/// What to run.
pub struct Plan<'a> {
    /// The dataset.
    pub dataset: &'a Dataset,
    /// Backends in report order.
    pub backends: &'a [Backend],
    /// Workloads in run order.
    pub workloads: &'a [Workload],
    /// Repetitions.
    pub reps: usize,
    /// The cowbench directory (scratch mounts live below it).
    pub dir: &'a Path,
    /// The command line, for the report.
    pub command: String,
    /// Wait until scratch trees removed by an earlier run have settled.
    pub settle: bool,
}

struct Runner<'a> {
    plan: &'a Plan<'a>,
    dirs: RunDirs,
    started: Instant,
    own_drops: u64,
    samples: Vec<Sample>,
    failures: Vec<Failure>,
}

/// Runs everything and gathers the results.
pub fn run_all(plan: &Plan<'_>) -> Result<Results> {
    let dirs = RunDirs::new(plan.dir);
    dirs.reset()?;
    // Left by an interrupted run. Freed now, they slow down the first minute
    // of creates on ext4 without a journal (see `trash`); kept, they would
    // pile up.
    dirs.trash.empty()?;
    let left = trash::settle_left(dirs.trash.since_emptied());
    if !left.is_zero() {
        if plan.settle {
            progress!(
                "waiting {} s: scratch trees were removed {} s ago, and ext4 without a journal slows creates for up to {} s after a mass delete (--settle)",
                left.as_secs(),
                (trash::SETTLE - left).as_secs(),
                trash::SETTLE.as_secs()
            );
            std::thread::sleep(left);
        } else {
            progress!(
                "warning: scratch trees were removed {} s ago; on ext4 without a journal creates stay slow for up to {} s after a mass delete, so untar_5k and create_fsync may read high. --settle waits it out",
                (trash::SETTLE - left).as_secs(),
                trash::SETTLE.as_secs()
            );
        }
    }
    let date = utc_now();
    let drops_before = sys::drop_count();
    let mut runner = Runner {
        plan,
        dirs,
        started: Instant::now(),
        own_drops: 0,
        samples: Vec::new(),
        failures: Vec::new(),
    };
    // Each rep starts one backend further along, so that no backend is
    // always the first (or the last) to read the dataset after the others:
    // on a virtual disk the host's own cache and throttling make that
    // position matter.
    let n = plan.backends.len();
    for rep in 1..=plan.reps {
        for i in 0..n {
            let backend = &plan.backends[(i + rep - 1) % n];
            progress!(
                "rep {rep}/{}: {} (load {})",
                plan.reps,
                backend.label,
                loadavg()
            );
            runner.run_backend(backend, rep);
        }
    }
    runner.dirs.trash.empty()?;
    let foreign_drops = match (drops_before, sys::drop_count()) {
        (Some(a), Some(b)) => b.saturating_sub(a).saturating_sub(runner.own_drops),
        _ => 0,
    };
    let backends: Vec<String> = plan.backends.iter().map(|b| b.label.clone()).collect();
    let summary = report::summarise(&runner.samples, &backends);
    Ok(Results {
        meta: Meta {
            date,
            kernel: sys::kernel_release(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            disk_readahead_kb: sys::disk_readahead_kb(&plan.dataset.root),
            scale: plan.dataset.manifest.scale.name().into(),
            reps: plan.reps,
            programs: plan
                .backends
                .iter()
                .map(|b| (b.label.clone(), describe(b, plan.dataset)))
                .collect::<BTreeMap<_, _>>(),
            backends,
            dataset: plan.dataset.manifest.clone(),
            command: plan.command.clone(),
            foreign_drops,
        },
        summary,
        samples: runner.samples,
        failures: runner.failures,
    })
}

impl Runner<'_> {
    fn run_backend(&mut self, backend: &Backend, rep: usize) {
        let mut peak_kib: Option<u64> = None;
        let mut threads: Option<u64> = None;
        for &wl in self.plan.workloads {
            let outcome = if wl == Workload::Mount {
                self.measure_mount(backend, rep)
            } else {
                self.measure(backend, wl, rep)
            };
            match outcome {
                Ok(facts) => {
                    peak_kib = peak_kib.max(facts.hwm_kib);
                    threads = threads.max(facts.threads);
                }
                Err(err) => {
                    progress!("  {} {} FAILED: {err:#}", backend.label, wl.name());
                    self.failures.push(Failure {
                        backend: backend.label.clone(),
                        workload: wl.name().into(),
                        rep,
                        error: format!("{err:#}"),
                    });
                }
            }
        }
        if let Some(kib) = peak_kib {
            progress!(
                "  {} peak daemon RSS {:.1} MiB",
                backend.label,
                kib as f64 / 1024.0
            );
            self.push(
                backend,
                rep,
                Measure::new("peak_rss", kib as f64 / 1024.0, "MiB"),
                0,
                0,
                None,
            );
        }
        if let Some(n) = threads {
            self.push(
                backend,
                rep,
                Measure::new("daemon_threads", n as f64, "threads"),
                0,
                0,
                None,
            );
        }
    }

    fn push(
        &mut self,
        backend: &Backend,
        rep: usize,
        m: Measure,
        foreign_drops: u64,
        retries: u32,
        daemon_cpu_s: Option<f64>,
    ) {
        self.samples.push(Sample {
            backend: backend.label.clone(),
            metric: m.metric.into(),
            rep,
            value: m.value,
            unit: m.unit.into(),
            anomaly: m.anomaly,
            foreign_drops,
            retries,
            daemon_cpu_s,
            at_s: self.started.elapsed().as_secs_f64(),
        });
    }

    /// Mounts fresh, runs the workload, unmounts; returns the daemon's facts.
    fn measure(&mut self, backend: &Backend, wl: Workload, rep: usize) -> Result<DaemonFacts> {
        let dataset = self.plan.dataset;
        let mounted = backend.mount(dataset, &self.dirs)?;
        let outcome = self.measure_mounted(backend, &mounted, wl, rep);
        let facts = DaemonFacts::of(&mounted);
        let unmounted = backend.unmount(mounted, dataset, &self.dirs, wl.writes());
        outcome?;
        unmounted?;
        Ok(facts)
    }

    fn measure_mounted(
        &mut self,
        backend: &Backend,
        mounted: &Mounted,
        wl: Workload,
        rep: usize,
    ) -> Result<()> {
        let upper = (!backend.is_native()).then_some(self.dirs.upper.as_path());
        let mut retries = 0;
        loop {
            let drops_before = sys::drop_count();
            let own_before = self.own_drops;
            let cpu_before = mounted.daemon.and_then(sys::cpu_seconds);
            let mut ctx = Ctx {
                dataset: self.plan.dataset,
                target: &mounted.target,
                upper,
                own_drops: &mut self.own_drops,
            };
            let measures = workload::run(wl, &mut ctx)?;
            let cpu = mounted
                .daemon
                .and_then(sys::cpu_seconds)
                .zip(cpu_before)
                .map(|(after, before)| after - before);
            let foreign = match (drops_before, sys::drop_count()) {
                (Some(a), Some(b)) => b
                    .saturating_sub(a)
                    .saturating_sub(self.own_drops - own_before),
                _ => 0,
            };
            if foreign > 0 && wl.retry_on_foreign_drop() && retries < MAX_RETRIES {
                retries += 1;
                progress!(
                    "  {} {}: another process dropped the page cache during the run; retry {retries}",
                    backend.label,
                    wl.name()
                );
                wait_quiet();
                continue;
            }
            for m in measures {
                let note = m
                    .anomaly
                    .as_deref()
                    .map(|a| format!("  ANOMALY: {a}"))
                    .unwrap_or_default();
                let spoiled = if foreign > 0 {
                    "  (foreign cache drop)"
                } else {
                    ""
                };
                progress!(
                    "  {} {} {} {}{spoiled}{note}",
                    backend.label,
                    m.metric,
                    report::fmt_num(m.value),
                    m.unit
                );
                self.push(backend, rep, m, foreign, retries, cpu);
            }
            return Ok(());
        }
    }

    /// Mount time: the median of a few mount/unmount cycles, in ms.
    fn measure_mount(&mut self, backend: &Backend, rep: usize) -> Result<DaemonFacts> {
        if backend.is_native() {
            return Ok(DaemonFacts::default());
        }
        let dataset = self.plan.dataset;
        let mut times = Vec::with_capacity(MOUNT_CYCLES);
        let mut facts = DaemonFacts::default();
        for _ in 0..MOUNT_CYCLES {
            let mounted = backend.mount(dataset, &self.dirs)?;
            times.extend(mounted.mount_secs.map(|s| s * 1000.0));
            let now = DaemonFacts::of(&mounted);
            facts.hwm_kib = facts.hwm_kib.max(now.hwm_kib);
            facts.threads = facts.threads.max(now.threads);
            backend.unmount(mounted, dataset, &self.dirs, false)?;
        }
        let ms = report::median(&mut times);
        progress!("  {} mount {} ms", backend.label, report::fmt_num(ms));
        self.push(backend, rep, Measure::new("mount", ms, "ms"), 0, 0, None);
        Ok(facts)
    }
}

/// What /proc tells about a FUSE daemon at the end of a workload.
#[derive(Default)]
struct DaemonFacts {
    /// Peak resident set (VmHWM), KiB.
    hwm_kib: Option<u64>,
    /// Threads.
    threads: Option<u64>,
}

impl DaemonFacts {
    fn of(mounted: &Mounted) -> DaemonFacts {
        DaemonFacts {
            hwm_kib: mounted.daemon.and_then(|pid| sys::status_kib(pid, "VmHWM")),
            threads: mounted.daemon.and_then(sys::threads),
        }
    }
}

/// Waits (at most two minutes) until nobody has dropped the page cache for
/// three seconds.
fn wait_quiet() {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = sys::drop_count();
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline && quiet_since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(250));
        let now = sys::drop_count();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The mount program behind a backend and its version.
fn describe(backend: &Backend, dataset: &Dataset) -> String {
    // The line naming the program's own version (FUSE tools also print
    // the library's and fusermount's).
    let version = |program: &Path| -> String {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Command::new(program)
            .arg("--version")
            .output()
            .ok()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                let text = String::from_utf8_lossy(&text).into_owned();
                let lines: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                lines
                    .iter()
                    .find(|l| l.starts_with(&name) && l.contains("version"))
                    .or_else(|| lines.iter().find(|l| l.contains(&name)))
                    .or(lines.first())
                    .map(|l| l.to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    };
    match &backend.kind {
        Kind::Native => format!(
            "plain directory {} (copies of the merged lower files)",
            dataset.flat.display()
        ),
        Kind::Overlay => format!("kernel overlayfs {}", sys::kernel_release()),
        Kind::FuseOverlayfs => format!("fuse-overlayfs: {}", version(Path::new("fuse-overlayfs"))),
        Kind::UnionfsFuse => format!("unionfs-fuse: {}", version(Path::new("unionfs-fuse"))),
        Kind::StrataDir | Kind::StrataStore => match &backend.unionfs {
            Some(path) => format!("{} {}", path.display(), version(path)),
            None => "strata unionfs (not found)".into(),
        },
        Kind::Custom(spec) => format!("custom: {}", spec.mount),
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}
