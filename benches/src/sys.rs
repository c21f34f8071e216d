//! Small wrappers over the system facilities cowbench needs: dropping the
//! page cache, reading process facts from /proc, and mount points. No
//! `unsafe` is needed: everything goes through nix or /proc.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{umount2, MntFlags};

/// Flushes dirty data and drops the page, dentry and inode caches.
pub fn drop_caches() -> Result<()> {
    nix::unistd::sync();
    fs::write("/proc/sys/vm/drop_caches", "3")
        .context("writing /proc/sys/vm/drop_caches (cold runs need root)")
}

/// How many times anyone dropped the page cache since boot
/// (`drop_pagecache` in /proc/vmstat), to notice other tenants doing it
/// during a warm measurement. `None` when the kernel does not count it.
pub fn drop_count() -> Option<u64> {
    let text = fs::read_to_string("/proc/vmstat").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("drop_pagecache "))
        .and_then(|v| v.trim().parse().ok())
}

/// A `kB` field of /proc/PID/status, such as `VmHWM` (peak resident set).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// User plus system CPU seconds of a process and all its threads.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100);
    Some((utime + stime) as f64 / ticks as f64)
}

/// Whether the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => text
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether something is mounted on `path`, from /proc/self/mountinfo (a
/// stat of the path would hang or fail on a dead FUSE mount).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| unescape_mountinfo(point) == want)
}

/// A mountinfo path field with its octal escapes (`\040` for a space)
/// undone.
fn unescape_mountinfo(field: &str) -> String {
    String::from_utf8_lossy(&unionfs::mount::unescape_mountinfo(field)).into_owned()
}

/// Unmounts `path`, retrying while it is busy, lazily as the last resort.
pub fn unmount(path: &Path) -> Result<()> {
    for _ in 0..10 {
        if !is_mountpoint(path) {
            return Ok(());
        }
        match umount2(path, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EINVAL) if !is_mountpoint(path) => return Ok(()),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
    umount2(path, MntFlags::MNT_DETACH)
        .with_context(|| format!("unmounting {} (lazy)", path.display()))
}

/// Processes holding /dev/fuse open whose command line names `mountpoint`:
/// the FUSE daemon of that mount, after it daemonised.
pub fn fuse_daemons(mountpoint: &Path) -> Vec<u32> {
    let needle = mountpoint.to_string_lossy().into_owned();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(&needle) {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds_fuse = fds
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == Path::new("/dev/fuse")));
        if holds_fuse {
            found.push(pid);
        }
    }
    found
}

/// Bytes allocated on disk below `root` (st_blocks × 512), following no
/// symlinks: how much data a copy-up really wrote.
pub fn allocated_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            }
            total += meta.blocks() * 512;
        }
    }
    total
}

/// The read-ahead window, in KiB, of the block device holding `path`
/// (`queue/read_ahead_kb` of the device, or of its disk for a partition).
/// Cold sequential reads of the native tree and of kernel overlayfs use
/// it, FUSE reads mostly do not, so it is part of what a cold ratio means.
pub fn disk_readahead_kb(path: &Path) -> Option<u32> {
    let dev = fs::metadata(path).ok()?.dev();
    let base = format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    ["queue/read_ahead_kb", "../queue/read_ahead_kb"]
        .iter()
        .find_map(|rel| fs::read_to_string(format!("{base}/{rel}")).ok())
        .and_then(|s| s.trim().parse().ok())
}

/// The running kernel's release string.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Asks the kernel's PM QoS device for zero CPU wake-up latency; the
/// request lasts while the returned file is open.
pub fn hold_zero_cpu_latency() -> Result<fs::File> {
    let dev = unionfs::latency::DEVICE;
    unionfs::latency::request_zero(Path::new(dev))
        .with_context(|| format!("--hold-cpu-latency: asking {dev} for zero latency (needs root)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process_facts() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmHWM").is_some_and(|kib| kib > 0));
        assert!(threads(pid).is_some_and(|t| t >= 1));
        assert!(cpu_seconds(pid).is_some());
        assert!(alive(pid));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn root_is_a_mountpoint_and_a_plain_dir_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        assert!(!is_mountpoint(&sub));
        assert!(is_mountpoint(Path::new("/proc")));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn allocated_bytes_counts_file_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("f"), vec![1u8; 64 << 10]).expect("write");
        assert!(allocated_bytes(dir.path()) >= 64 << 10);
    }
}
