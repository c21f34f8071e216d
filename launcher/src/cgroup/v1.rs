//! cgroup v1: one directory per controller,
//! `/sys/fs/cgroup/<controller>/strata/<id>`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{keyed, read_pids, read_u64, remove_dir, write_file, CgroupManager, Stats};
use crate::container::Resources;

/// Controllers strata uses, by their mount directory name.
const CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuacct", "pids", "blkio", "cpuset", "devices", "freezer",
];

/// Devices a container may use (docker's default allow list): null, zero,
/// full, random, urandom, tty, console, ptmx, pts; mknod of anything.
const ALLOWED_DEVICES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// A container's v1 cgroups.
#[derive(Debug, Clone)]
pub struct V1 {
    root: PathBuf,
    rel: PathBuf,
    /// Allow every device (`--privileged`).
    pub all_devices: bool,
}

impl V1 {
    /// Groups at `<root>/<controller>/<rel>`.
    pub fn new(root: PathBuf, rel: PathBuf) -> Self {
        Self {
            root,
            rel,
            all_devices: false,
        }
    }

    fn dir(&self, controller: &str) -> PathBuf {
        self.root.join(controller).join(&self.rel)
    }

    fn present(&self) -> Vec<&'static str> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for c in CONTROLLERS {
            let base = self.root.join(c);
            // cpu and cpuacct are usually one hierarchy with two names.
            let canon = fs::canonicalize(&base).unwrap_or(base.clone());
            if base.is_dir() && !seen.contains(&canon) {
                seen.push(canon);
                out.push(*c);
            }
        }
        out
    }

    fn init_cpuset(&self) -> Result<()> {
        // A new cpuset group starts empty; copy the parent's cpus and mems
        // down each level or no task can join.
        let mut parent = self.root.join("cpuset");
        for comp in self.rel.components() {
            let child = parent.join(comp);
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let cur = fs::read_to_string(child.join(f)).unwrap_or_default();
                if cur.trim().is_empty() {
                    let v = fs::read_to_string(parent.join(f)).unwrap_or_default();
                    write_file(&child.join(f), v.trim())?;
                }
            }
            parent = child;
        }
        Ok(())
    }

    fn setup_devices(&self) -> Result<()> {
        let dir = self.dir("devices");
        if !dir.is_dir() {
            return Ok(());
        }
        if self.all_devices {
            return write_file(&dir.join("devices.allow"), "a");
        }
        write_file(&dir.join("devices.deny"), "a")?;
        for rule in ALLOWED_DEVICES {
            write_file(&dir.join("devices.allow"), rule)?;
        }
        Ok(())
    }
}

impl CgroupManager for V1 {
    fn create(&self, res: &Resources) -> Result<()> {
        for c in self.present() {
            let d = self.dir(c);
            fs::create_dir_all(&d).with_context(|| format!("creating cgroup {}", d.display()))?;
            if c == "cpuset" {
                self.init_cpuset()?;
            }
        }
        self.setup_devices()?;
        self.apply(res)
    }

    fn apply(&self, res: &Resources) -> Result<()> {
        let mem = self.dir("memory");
        if res.memory_bytes > 0 {
            write_file(
                &mem.join("memory.limit_in_bytes"),
                &res.memory_bytes.to_string(),
            )?;
            let swap = mem.join("memory.memsw.limit_in_bytes");
            if swap.exists() {
                let v = match res.memory_swap_bytes {
                    -1 => "-1".to_string(),
                    0 => (res.memory_bytes * 2).to_string(),
                    n => n.to_string(),
                };
                write_file(&swap, &v)?;
            } else if res.memory_swap_bytes > 0 {
                bail!("--memory-swap needs swap accounting (memory.memsw.limit_in_bytes), which this kernel lacks");
            }
        }
        let cpu = self.dir("cpu");
        if res.nano_cpus > 0 {
            let period: u64 = 100_000;
            let quota = (res.nano_cpus * period / 1_000_000_000).max(1000);
            write_file(&cpu.join("cpu.cfs_period_us"), &period.to_string())?;
            write_file(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if res.cpu_shares > 0 {
            write_file(&cpu.join("cpu.shares"), &res.cpu_shares.to_string())?;
        }
        if !res.cpuset_cpus.is_empty() {
            write_file(&self.dir("cpuset").join("cpuset.cpus"), &res.cpuset_cpus)?;
        }
        if res.pids_limit != 0 {
            let v = if res.pids_limit < 0 {
                "max".to_string()
            } else {
                res.pids_limit.to_string()
            };
            write_file(&self.dir("pids").join("pids.max"), &v)?;
        }
        let blkio = self.dir("blkio");
        if res.blkio_weight > 0 {
            let f = ["blkio.weight", "blkio.bfq.weight"]
                .iter()
                .map(|n| blkio.join(n))
                .find(|p| p.exists());
            match f {
                Some(f) => write_file(&f, &res.blkio_weight.to_string())?,
                None => bail!(
                    "--blkio-weight: this kernel's io scheduler offers no blkio weight file in {}",
                    blkio.display()
                ),
            }
        }
        for (dev, bps) in &res.device_read_bps {
            let (major, minor) = device_numbers(Path::new(dev))?;
            write_file(
                &blkio.join("blkio.throttle.read_bps_device"),
                &format!("{major}:{minor} {bps}"),
            )?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        for c in self.present() {
            write_file(&self.dir(c).join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let c = if self.dir("pids").is_dir() {
            "pids"
        } else {
            "memory"
        };
        read_pids(&self.dir(c).join("cgroup.procs"))
    }

    fn stats(&self) -> Result<Stats> {
        let mem = self.dir("memory");
        let cpu = self.dir("cpu");
        let pids = self.dir("pids");
        let limit = read_u64(&mem.join("memory.limit_in_bytes")).unwrap_or(0);
        Ok(Stats {
            memory_usage_bytes: read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0),
            memory_max_usage_bytes: read_u64(&mem.join("memory.max_usage_in_bytes")).unwrap_or(0),
            // The kernel reports "no limit" as a huge page-aligned number.
            memory_limit_bytes: if limit >= (1 << 62) { 0 } else { limit },
            memory_failcnt: read_u64(&mem.join("memory.failcnt")).unwrap_or(0),
            cpu_usage_nanos: read_u64(&self.dir("cpuacct").join("cpuacct.usage")).unwrap_or(0),
            cpu_nr_throttled: keyed(&cpu.join("cpu.stat"), "nr_throttled").unwrap_or(0),
            cpu_throttled_nanos: keyed(&cpu.join("cpu.stat"), "throttled_time").unwrap_or(0),
            pids_current: read_u64(&pids.join("pids.current")).unwrap_or(0),
            pids_limit: read_u64(&pids.join("pids.max")).unwrap_or(0),
        })
    }

    fn oom_kills(&self) -> Result<u64> {
        keyed(&self.dir("memory").join("memory.oom_control"), "oom_kill")
    }

    fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for c in self.present() {
            if let Err(e) = remove_dir(&self.dir(c)) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Major and minor numbers of a block device node.
fn device_numbers(path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = fs::metadata(path)
        .with_context(|| format!("--device-read-bps: no device {}", path.display()))?;
    if !md.file_type().is_block_device() {
        bail!(
            "--device-read-bps: {} is not a block device",
            path.display()
        );
    }
    let rdev = md.rdev();
    Ok((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)))
}
