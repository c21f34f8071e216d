//! cgroup v2 (unified): one directory, `<root>/strata/<id>`, with limits in
//! memory.max, cpu.max, cpu.weight, pids.max, io.weight, cpuset.cpus.
//! Tested here against a fake root directory, since this host's v2 tree has
//! no controllers.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{keyed, read_pids, read_u64, remove_dir, write_file, CgroupManager, Stats};
use crate::container::Resources;

/// A container's v2 cgroup.
#[derive(Debug, Clone)]
pub struct V2 {
    root: PathBuf,
    rel: PathBuf,
}

impl V2 {
    /// The group `<root>/<rel>`.
    pub fn new(root: PathBuf, rel: PathBuf) -> Self {
        Self { root, rel }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    /// Enable the controllers we use in every ancestor's subtree_control
    /// (best effort: a controller the host lacks is simply not enabled).
    fn enable_controllers(&self) {
        let mut dir = self.root.clone();
        for comp in self.rel.components() {
            let ctl = dir.join("cgroup.subtree_control");
            for c in ["memory", "cpu", "pids", "io", "cpuset"] {
                let _ = fs::write(&ctl, format!("+{c}"));
            }
            dir = dir.join(comp);
        }
    }
}

/// Docker's mapping of v1 cpu shares (2..262144) to v2 weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl CgroupManager for V2 {
    fn create(&self, res: &Resources) -> Result<()> {
        let d = self.dir();
        fs::create_dir_all(&d).with_context(|| format!("creating cgroup {}", d.display()))?;
        self.enable_controllers();
        self.apply(res)
    }

    fn apply(&self, res: &Resources) -> Result<()> {
        let d = self.dir();
        if res.memory_bytes > 0 {
            write_file(&d.join("memory.max"), &res.memory_bytes.to_string())?;
            let swap = match res.memory_swap_bytes {
                -1 => "max".to_string(),
                0 => res.memory_bytes.to_string(),
                n => (n as u64).saturating_sub(res.memory_bytes).to_string(),
            };
            write_file(&d.join("memory.swap.max"), &swap)?;
        }
        if res.nano_cpus > 0 {
            let period: u64 = 100_000;
            let quota = (res.nano_cpus * period / 1_000_000_000).max(1000);
            write_file(&d.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if res.cpu_shares > 0 {
            write_file(
                &d.join("cpu.weight"),
                &shares_to_weight(res.cpu_shares).to_string(),
            )?;
        }
        if !res.cpuset_cpus.is_empty() {
            write_file(&d.join("cpuset.cpus"), &res.cpuset_cpus)?;
        }
        if res.pids_limit != 0 {
            let v = if res.pids_limit < 0 {
                "max".to_string()
            } else {
                res.pids_limit.to_string()
            };
            write_file(&d.join("pids.max"), &v)?;
        }
        if res.blkio_weight > 0 {
            // io.weight is 1..10000; blkio weight 10..1000 scales by 10.
            write_file(
                &d.join("io.weight"),
                &format!("default {}", res.blkio_weight as u64 * 10),
            )?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        write_file(&self.dir().join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        read_pids(&self.dir().join("cgroup.procs"))
    }

    fn stats(&self) -> Result<Stats> {
        let d = self.dir();
        Ok(Stats {
            memory_usage_bytes: read_u64(&d.join("memory.current")).unwrap_or(0),
            memory_max_usage_bytes: read_u64(&d.join("memory.peak")).unwrap_or(0),
            memory_limit_bytes: read_u64(&d.join("memory.max")).unwrap_or(0),
            memory_failcnt: keyed(&d.join("memory.events"), "max").unwrap_or(0),
            cpu_usage_nanos: keyed(&d.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
            cpu_nr_throttled: keyed(&d.join("cpu.stat"), "nr_throttled").unwrap_or(0),
            cpu_throttled_nanos: keyed(&d.join("cpu.stat"), "throttled_usec").unwrap_or(0) * 1000,
            pids_current: read_u64(&d.join("pids.current")).unwrap_or(0),
            pids_limit: read_u64(&d.join("pids.max")).unwrap_or(0),
        })
    }

    fn oom_kills(&self) -> Result<u64> {
        keyed(&self.dir().join("memory.events"), "oom_kill")
    }

    fn destroy(&self) -> Result<()> {
        let d = self.dir();
        // cgroup.kill empties the group at once where the kernel has it.
        let _ = fs::write(d.join("cgroup.kill"), "1");
        remove_dir(&d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_land_in_the_v2_files() {
        let root = tempfile::tempdir().unwrap();
        let cg = V2::new(root.path().to_path_buf(), PathBuf::from("strata/abc"));
        let res = Resources {
            memory_bytes: 64 << 20,
            nano_cpus: 500_000_000,
            cpu_shares: 1024,
            pids_limit: 10,
            blkio_weight: 300,
            ..Default::default()
        };
        cg.create(&res).unwrap();
        let d = root.path().join("strata/abc");
        let read = |f: &str| fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), (64u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("pids.max"), "10");
        assert_eq!(read("io.weight"), "default 3000");
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills().unwrap(), 1);
        fs::write(
            d.join("cpu.stat"),
            "usage_usec 1500\nnr_throttled 7\nthrottled_usec 20\n",
        )
        .unwrap();
        let st = cg.stats().unwrap();
        assert_eq!(st.cpu_usage_nanos, 1_500_000);
        assert_eq!(st.cpu_nr_throttled, 7);
        cg.add_process(4242).unwrap();
        assert_eq!(cg.pids().unwrap(), vec![4242]);
    }

    #[test]
    fn weight_mapping_matches_docker() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
    }
}
