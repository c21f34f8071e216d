//! Control groups behind one trait: [`v1::V1`] (this machine: legacy or
//! hybrid hierarchy) and [`v2::V2`] (unified). [`detect`] picks the mode the
//! way youki does, from the filesystem type of `/sys/fs/cgroup`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::container::Resources;

pub mod v1;
pub mod v2;

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only cgroup v2 at /sys/fs/cgroup.
    Unified,
    /// v1 controllers plus a v2 tree at /sys/fs/cgroup/unified.
    Hybrid,
    /// Only v1.
    Legacy,
}

/// Usage numbers for `inspect` and `stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Bytes of memory in use.
    pub memory_usage_bytes: u64,
    /// Peak memory use.
    pub memory_max_usage_bytes: u64,
    /// Memory limit (0 for none).
    pub memory_limit_bytes: u64,
    /// Times the limit was hit.
    pub memory_failcnt: u64,
    /// CPU time used, nanoseconds.
    pub cpu_usage_nanos: u64,
    /// Periods in which the group was throttled.
    pub cpu_nr_throttled: u64,
    /// Total throttled time, nanoseconds.
    pub cpu_throttled_nanos: u64,
    /// Processes in the group.
    pub pids_current: u64,
    /// Process limit (0 for none).
    pub pids_limit: u64,
}

/// One container's cgroup(s).
pub trait CgroupManager: Send + Sync {
    /// Create the group and apply `res`.
    fn create(&self, res: &Resources) -> Result<()>;
    /// Apply new limits to an existing group.
    fn apply(&self, res: &Resources) -> Result<()>;
    /// Move process `pid` into the group.
    fn add_process(&self, pid: i32) -> Result<()>;
    /// Pids in the group.
    fn pids(&self) -> Result<Vec<i32>>;
    /// Current usage.
    fn stats(&self) -> Result<Stats>;
    /// How many processes the kernel's OOM killer killed in the group.
    fn oom_kills(&self) -> Result<u64>;
    /// Remove the group (its processes must be gone).
    fn destroy(&self) -> Result<()>;
}

/// Detect the host's cgroup mode.
pub fn detect() -> Mode {
    detect_at(Path::new("/sys/fs/cgroup"))
}

fn detect_at(root: &Path) -> Mode {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
    let is_v2 = |p: &Path| {
        statfs(p)
            .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
            .unwrap_or(false)
    };
    if is_v2(root) {
        Mode::Unified
    } else if is_v2(&root.join("unified")) {
        Mode::Hybrid
    } else {
        Mode::Legacy
    }
}

/// The manager for container `id` on this host.
pub fn for_container(id: &str) -> Box<dyn CgroupManager> {
    let rel = PathBuf::from("strata").join(id);
    match detect() {
        Mode::Unified => Box::new(v2::V2::new(PathBuf::from("/sys/fs/cgroup"), rel)),
        Mode::Hybrid | Mode::Legacy => Box::new(v1::V1::new(PathBuf::from("/sys/fs/cgroup"), rel)),
    }
}

/// Whether this process may manage cgroups (root, writable hierarchy).
pub fn available() -> bool {
    nix::unistd::geteuid().is_root()
        && nix::unistd::access("/sys/fs/cgroup", nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Write `value` to the control file `path`, naming it in the error.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Read a control file as a trimmed string.
pub(crate) fn read_file(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

/// Read a control file holding one number; "max" reads as 0.
pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    let s = read_file(path)?;
    if s == "max" {
        return Ok(0);
    }
    s.parse()
        .with_context(|| format!("parsing {} ({s:?})", path.display()))
}

/// Value of `key` in a flat-keyed file ("key value" lines).
pub(crate) fn keyed(path: &Path, key: &str) -> Result<u64> {
    let s = read_file(path)?;
    for line in s.lines() {
        let mut it = line.split_whitespace();
        if it.next() == Some(key) {
            if let Some(v) = it.next() {
                return v
                    .parse()
                    .with_context(|| format!("parsing {key} in {}", path.display()));
            }
        }
    }
    Ok(0)
}

/// Pids listed in a cgroup.procs file.
pub(crate) fn read_pids(path: &Path) -> Result<Vec<i32>> {
    Ok(read_file(path)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// Remove a cgroup directory, retrying while the kernel finishes reaping
/// its last processes.
pub(crate) fn remove_dir(path: &Path) -> Result<()> {
    for _ in 0..50 {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    fs::remove_dir(path).with_context(|| format!("removing cgroup {}", path.display()))
}
