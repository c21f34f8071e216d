//! The workloads, each done in-process with std file system calls so that
//! every backend pays the same user-space cost; only mounting runs other
//! programs.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::dataset::{self, Dataset, BIGDIR_REL, CHOWN_REL, RAND_REL, RM_REL, SEQ_REL};
use crate::rng::Rng;
use crate::sys;

/// Owner the `chown_r` workload gives the tree.
const CHOWN_TO: u32 = 4242;

/// A workload as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Stat every file after dropping caches.
    #[value(name = "walk_cold")]
    WalkCold,
    /// Stat every file, second pass.
    #[value(name = "walk_warm")]
    WalkWarm,
    /// List the 10,000-entry merged directory, repeatedly.
    #[value(name = "readdir10k")]
    Readdir10k,
    /// A shell's PATH search, repeated: stat each of 50 commands in six
    /// PATH directories until found (four misses, then `bin`).
    #[value(name = "path_search")]
    PathSearch,
    /// Read the 1 GiB lower file after dropping caches.
    #[value(name = "seqread_cold")]
    SeqreadCold,
    /// Read the 1 GiB lower file, second pass.
    #[value(name = "seqread_warm")]
    SeqreadWarm,
    /// 4 KiB reads at random offsets of a cached lower file.
    #[value(name = "randread4k")]
    Randread4k,
    /// Append one byte to the 1 GiB lower file and fsync it.
    #[value(name = "copyup_1g")]
    Copyup1g,
    /// Append one byte to each of 1,000 small lower files.
    #[value(name = "copyup_small")]
    CopyupSmall,
    /// Unpack a tarball of 5,000 small files into the mount.
    #[value(name = "untar_5k")]
    Untar5k,
    /// Create, write 4 KiB and fsync small files.
    #[value(name = "create_fsync")]
    CreateFsync,
    /// Write a new 1 GiB file and fsync it.
    #[value(name = "seqwrite_1g")]
    Seqwrite1g,
    /// Remove a subtree present in all lowers.
    #[value(name = "rm_rf")]
    RmRf,
    /// Change the owner of a tree of large lower files.
    #[value(name = "chown_r")]
    ChownR,
    /// Mount and unmount time.
    #[value(name = "mount")]
    Mount,
}

impl Workload {
    /// Every workload in report order.
    pub const ALL: [Workload; 15] = [
        Workload::WalkCold,
        Workload::WalkWarm,
        Workload::Readdir10k,
        Workload::PathSearch,
        Workload::SeqreadCold,
        Workload::SeqreadWarm,
        Workload::Randread4k,
        Workload::Copyup1g,
        Workload::CopyupSmall,
        Workload::Untar5k,
        Workload::CreateFsync,
        Workload::Seqwrite1g,
        Workload::RmRf,
        Workload::ChownR,
        Workload::Mount,
    ];

    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::WalkCold => "walk_cold",
            Workload::WalkWarm => "walk_warm",
            Workload::Readdir10k => "readdir10k",
            Workload::PathSearch => "path_search",
            Workload::SeqreadCold => "seqread_cold",
            Workload::SeqreadWarm => "seqread_warm",
            Workload::Randread4k => "randread4k",
            Workload::Copyup1g => "copyup_1g",
            Workload::CopyupSmall => "copyup_small",
            Workload::Untar5k => "untar_5k",
            Workload::CreateFsync => "create_fsync",
            Workload::Seqwrite1g => "seqwrite_1g",
            Workload::RmRf => "rm_rf",
            Workload::ChownR => "chown_r",
            Workload::Mount => "mount",
        }
    }

    /// Whether the workload changes the tree (the `native` tree is repaired
    /// afterwards; union backends get a fresh upper anyway).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Workload::Copyup1g
                | Workload::CopyupSmall
                | Workload::Untar5k
                | Workload::CreateFsync
                | Workload::Seqwrite1g
                | Workload::RmRf
                | Workload::ChownR
        )
    }

    /// Read-only measurements that a foreign cache drop spoils: re-run them.
    pub fn retry_on_foreign_drop(self) -> bool {
        matches!(
            self,
            Workload::WalkWarm
                | Workload::Readdir10k
                | Workload::PathSearch
                | Workload::SeqreadWarm
                | Workload::Randread4k
        )
    }
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Measure {
    /// Metric name (a workload name, or a secondary figure such as `copyup_1g_nofsync`).
    pub metric: &'static str,
    /// The value in `unit`.
    pub value: f64,
    /// Unit of `value`.
    pub unit: &'static str,
    /// Anomaly found while checking the result (wrong count, wrong size).
    pub anomaly: Option<String>,
}

impl Measure {
    /// A figure without anomaly.
    pub fn new(metric: &'static str, value: f64, unit: &'static str) -> Measure {
        Measure {
            metric,
            value,
            unit,
            anomaly: None,
        }
    }

    fn check(mut self, anomaly: Option<String>) -> Measure {
        self.anomaly = anomaly;
        self
    }
}

/// What a workload runs against.
pub struct Ctx<'a> {
    /// The dataset.
    pub dataset: &'a Dataset,
    /// Root of the mounted (or native) tree.
    pub target: &'a Path,
    /// The upper directory, for union backends.
    pub upper: Option<&'a Path>,
    /// Cache drops this run did itself, to tell them from foreign ones.
    pub own_drops: &'a mut u64,
}

impl Ctx<'_> {
    fn drop_caches(&mut self) -> Result<()> {
        sys::drop_caches()?;
        *self.own_drops += 1;
        Ok(())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.target.join(rel)
    }
}

/// Runs one workload (not `mount`, which the runner measures) and returns its figures.
pub fn run(workload: Workload, ctx: &mut Ctx<'_>) -> Result<Vec<Measure>> {
    let params = ctx.dataset.params;
    match workload {
        Workload::WalkCold => {
            ctx.drop_caches()?;
            walk(ctx, "walk_cold")
        }
        Workload::WalkWarm => {
            walk(ctx, "walk_warm")?;
            walk(ctx, "walk_warm")
        }
        Workload::Readdir10k => readdir(ctx, params.readdir_iters),
        Workload::PathSearch => path_search(ctx, params.path_rounds),
        Workload::SeqreadCold => {
            ctx.drop_caches()?;
            seqread(ctx, "seqread_cold")
        }
        Workload::SeqreadWarm => {
            seqread(ctx, "seqread_warm")?;
            seqread(ctx, "seqread_warm")
        }
        Workload::Randread4k => randread(ctx, params.randread_secs),
        Workload::Copyup1g => copyup_big(ctx),
        Workload::CopyupSmall => copyup_small(ctx),
        Workload::Untar5k => untar(ctx),
        Workload::CreateFsync => create_fsync(ctx, params.fsync_files),
        Workload::Seqwrite1g => seqwrite(ctx, params.seqwrite_bytes),
        Workload::RmRf => rm_rf(ctx),
        Workload::ChownR => chown_r(ctx),
        Workload::Mount => bail!("mount is measured by the runner"),
    }
}

fn expect_eq(what: &str, got: u64, want: u64) -> Option<String> {
    (got != want).then(|| format!("{what}: got {got}, expected {want}"))
}

/// lstat of every entry below the root, depth first, like `find -exec stat`.
fn walk(ctx: &Ctx<'_>, metric: &'static str) -> Result<Vec<Measure>> {
    let started = Instant::now();
    let mut files = 0u64;
    let mut stack = vec![ctx.target.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            let meta =
                fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                files += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let want = ctx.dataset.manifest.merged_files as u64;
    Ok(vec![
        Measure::new(metric, secs, "s").check(expect_eq("files", files, want))
    ])
}

fn readdir(ctx: &Ctx<'_>, iters: usize) -> Result<Vec<Measure>> {
    let dir = ctx.path(BIGDIR_REL);
    let mut times = Vec::with_capacity(iters);
    let mut count = 0u64;
    for _ in 0..iters.max(1) {
        let started = Instant::now();
        count = 0;
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            entry.with_context(|| format!("listing {}", dir.display()))?;
            count += 1;
        }
        times.push(started.elapsed().as_secs_f64());
    }
    let ms = crate::report::median(&mut times) * 1000.0;
    let want = ctx.dataset.manifest.bigdir_entries as u64;
    Ok(vec![
        Measure::new("readdir10k", ms, "ms/listing").check(expect_eq("entries", count, want))
    ])
}

/// The PATH a shell searches, in order: only `usr/bin` and `bin` exist in
/// the dataset, and the commands are `bin/applet*`.
const SEARCH_PATH: [&str; 6] = [
    "usr/local/sbin",
    "usr/local/bin",
    "usr/sbin",
    "usr/bin",
    "sbin",
    "bin",
];

/// Commands looked for per round.
const SEARCH_NAMES: usize = 50;

/// `rounds` PATH searches for each of [`SEARCH_NAMES`] commands (stat in
/// each PATH directory until one holds it), after one unmeasured round:
/// what a shell script running many commands, or a dynamic linker probing
/// library directories, costs the file system. Microseconds per search.
fn path_search(ctx: &Ctx<'_>, rounds: usize) -> Result<Vec<Measure>> {
    let bin = ctx.target.join("bin");
    let mut names: Vec<String> = fs::read_dir(&bin)
        .with_context(|| format!("listing {}", bin.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("applet"))
        .collect();
    names.sort();
    names.truncate(SEARCH_NAMES);
    let dirs: Vec<PathBuf> = SEARCH_PATH.iter().map(|d| ctx.target.join(d)).collect();
    let search = |name: &str| dirs.iter().any(|d| fs::metadata(d.join(name)).is_ok());
    for n in &names {
        search(n);
    }
    let started = Instant::now();
    let mut found = 0u64;
    for _ in 0..rounds {
        for n in &names {
            found += u64::from(search(n));
        }
    }
    let searches = (rounds * names.len()).max(1);
    let us = started.elapsed().as_secs_f64() * 1e6 / searches as f64;
    Ok(vec![Measure::new("path_search", us, "us/search").check(
        expect_eq("commands found", found, (rounds * SEARCH_NAMES) as u64),
    )])
}

fn seqread(ctx: &Ctx<'_>, metric: &'static str) -> Result<Vec<Measure>> {
    let path = ctx.path(SEQ_REL);
    let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let started = Instant::now();
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let want = ctx.dataset.params.seq_bytes;
    Ok(vec![Measure::new(metric, mib(total) / secs, "MiB/s")
        .check(expect_eq("bytes read", total, want))])
}

fn randread(ctx: &Ctx<'_>, secs: f64) -> Result<Vec<Measure>> {
    let path = ctx.path(RAND_REL);
    let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // Warm the cache: this measures the read path, not the disk.
    std::io::copy(&mut file, &mut std::io::sink())
        .with_context(|| format!("reading {}", path.display()))?;
    let blocks = ctx.dataset.params.rand_bytes / 4096;
    let mut rng = Rng::new(0x4b);
    let mut buf = [0u8; 4096];
    let mut ops = 0u64;
    let mut short = 0u64;
    let budget = Duration::from_secs_f64(secs);
    let started = Instant::now();
    loop {
        for _ in 0..256 {
            let offset = rng.below(blocks) * 4096;
            let n = file
                .read_at(&mut buf, offset)
                .with_context(|| format!("reading {} at {offset}", path.display()))?;
            if n != buf.len() {
                short += 1;
            }
        }
        ops += 256;
        if started.elapsed() >= budget {
            break;
        }
    }
    let iops = ops as f64 / started.elapsed().as_secs_f64();
    Ok(vec![
        Measure::new("randread4k", iops, "IOPS").check(expect_eq("short reads", short, 0))
    ])
}

/// Opens `path` for appending without creating or truncating it.
fn open_append(path: &Path) -> Result<File> {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {} for append", path.display()))
}

fn copyup_big(ctx: &Ctx<'_>) -> Result<Vec<Measure>> {
    // The source sits in the page cache, as it would right after a read:
    // read through the mount, so each backend caches what it copies from
    // (a store backend's blob, not the directory lower).
    let path = ctx.path(SEQ_REL);
    let mut warm = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    std::io::copy(&mut warm, &mut std::io::sink())
        .with_context(|| format!("reading {}", path.display()))?;
    drop(warm);
    nix::unistd::sync();
    let started = Instant::now();
    let mut file = open_append(&path)?;
    file.write_all(b"x")
        .with_context(|| format!("appending to {}", path.display()))?;
    let written = started.elapsed().as_secs_f64();
    file.sync_all()
        .with_context(|| format!("fsync of {}", path.display()))?;
    drop(file);
    let synced = started.elapsed().as_secs_f64();
    let size = fs::metadata(&path)
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let anomaly = expect_eq("size", size, ctx.dataset.params.seq_bytes + 1);
    Ok(vec![
        Measure::new("copyup_1g", synced, "s").check(anomaly.clone()),
        Measure::new("copyup_1g_nofsync", written, "s").check(anomaly),
    ])
}

fn copyup_small(ctx: &Ctx<'_>) -> Result<Vec<Measure>> {
    nix::unistd::sync();
    let targets = &ctx.dataset.plan.copyup_targets;
    let started = Instant::now();
    for rel in targets {
        let path = ctx.path(rel);
        open_append(&path)?
            .write_all(b"x")
            .with_context(|| format!("appending to {}", path.display()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut wrong = 0u64;
    for rel in targets {
        let size = fs::symlink_metadata(ctx.path(rel)).map(|m| m.len()).ok();
        if size != ctx.dataset.manifest.sizes.get(rel).map(|s| s + 1) {
            wrong += 1;
        }
    }
    let per_file_ms = secs * 1000.0 / targets.len().max(1) as f64;
    Ok(vec![Measure::new("copyup_small", per_file_ms, "ms/file")
        .check(expect_eq("files with a wrong size", wrong, 0))])
}

fn untar(ctx: &Ctx<'_>) -> Result<Vec<Measure>> {
    let dest = ctx.path("bench-new/untar");
    fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let tarball = &ctx.dataset.tarball;
    // Read the tarball before timing: this measures the writes, not the source.
    let bytes = fs::read(tarball).with_context(|| format!("reading {}", tarball.display()))?;
    nix::unistd::sync();
    let started = Instant::now();
    tar::Archive::new(bytes.as_slice())
        .unpack(&dest)
        .with_context(|| format!("unpacking {} into {}", tarball.display(), dest.display()))?;
    let secs = started.elapsed().as_secs_f64();
    let files = dataset::walk_paths(&dest)?
        .iter()
        .filter(|p| p.is_file())
        .count() as u64;
    Ok(vec![Measure::new("untar_5k", secs, "s").check(expect_eq(
        "files",
        files,
        ctx.dataset.params.tar_files as u64,
    ))])
}

fn create_fsync(ctx: &Ctx<'_>, count: usize) -> Result<Vec<Measure>> {
    let dir = ctx.path("bench-new/fsync");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut data = vec![0u8; 4096];
    Rng::new(0xf5).fill(&mut data);
    nix::unistd::sync();
    let started = Instant::now();
    for i in 0..count {
        let path = dir.join(format!("f{i}"));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(&data)
            .with_context(|| format!("writing {}", path.display()))?;
        file.sync_all()
            .with_context(|| format!("fsync of {}", path.display()))?;
    }
    let per_file_ms = started.elapsed().as_secs_f64() * 1000.0 / count.max(1) as f64;
    Ok(vec![Measure::new("create_fsync", per_file_ms, "ms/file")])
}

fn seqwrite(ctx: &Ctx<'_>, bytes: u64) -> Result<Vec<Measure>> {
    let dir = ctx.path("bench-new");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("seqwrite.bin");
    let mut chunk = vec![0u8; 1 << 20];
    Rng::new(0x5e9).fill(&mut chunk);
    nix::unistd::sync();
    let started = Instant::now();
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    file.sync_all()
        .with_context(|| format!("fsync of {}", path.display()))?;
    let secs = started.elapsed().as_secs_f64();
    let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(vec![Measure::new(
        "seqwrite_1g",
        mib(bytes) / secs,
        "MiB/s",
    )
    .check(expect_eq("size", size, bytes))])
}

fn rm_rf(ctx: &Ctx<'_>) -> Result<Vec<Measure>> {
    let path = ctx.path(RM_REL);
    nix::unistd::sync();
    let started = Instant::now();
    fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
    let secs = started.elapsed().as_secs_f64();
    let anomaly = fs::symlink_metadata(&path)
        .is_ok()
        .then(|| format!("{} still exists", path.display()));
    Ok(vec![Measure::new("rm_rf", secs, "s").check(anomaly)])
}

/// `chown -R` of a tree of large lower files; also reports how much data the
/// upper layer holds afterwards (a metadata-only copy-up writes none).
fn chown_r(ctx: &Ctx<'_>) -> Result<Vec<Measure>> {
    let root = ctx.path(CHOWN_REL);
    nix::unistd::sync();
    let started = Instant::now();
    std::os::unix::fs::lchown(&root, Some(CHOWN_TO), Some(CHOWN_TO))
        .with_context(|| format!("chown of {}", root.display()))?;
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            std::os::unix::fs::lchown(&path, Some(CHOWN_TO), Some(CHOWN_TO))
                .with_context(|| format!("chown of {}", path.display()))?;
            if entry.file_type()?.is_dir() {
                stack.push(path);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let mut not_changed = 0u64;
    for path in dataset::walk_paths(&root)? {
        if fs::symlink_metadata(&path).map(|m| m.uid()).ok() != Some(CHOWN_TO) {
            not_changed += 1;
        }
    }
    let mut out = vec![Measure::new("chown_r", secs, "s").check(expect_eq(
        "entries not chowned",
        not_changed,
        0,
    ))];
    if let Some(upper) = ctx.upper {
        nix::unistd::sync();
        out.push(Measure::new(
            "chown_r_upper",
            mib(sys::allocated_bytes(upper)),
            "MiB",
        ));
    }
    Ok(out)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}
