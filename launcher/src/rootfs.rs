//! The container's mount namespace, set up by its init: the root bind,
//! /proc, /sys (read-only), cgroup files, a minimal /dev, volumes, the init
//! layer files, pivot_root, and docker's masked and read-only paths.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use serde::{Deserialize, Serialize};

/// docker's masked paths: made unreadable inside the container.
pub const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// docker's read-only paths.
pub const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// One mount prepared by the supervisor (sources are host paths).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreparedMount {
    /// "bind" or "tmpfs".
    pub kind: String,
    /// Host path for binds.
    pub source: PathBuf,
    /// Path inside the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// tmpfs options.
    pub options: String,
}

/// What the init mounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    /// The rootfs (union mount point or a plain directory).
    pub root: PathBuf,
    /// Make the root read-only.
    pub read_only: bool,
    /// Skip masked paths and read-only /proc/sys.
    pub privileged: bool,
    /// Mounts after the basic ones, in order.
    pub mounts: Vec<PreparedMount>,
    /// Files bind-mounted over /etc/hostname, /etc/hosts, /etc/resolv.conf.
    pub etc_files: Vec<(PathBuf, String)>,
    /// Device nodes can be created (false in a user namespace: bind them).
    pub mknod: bool,
    /// sysfs can be mounted (we own the network namespace).
    pub own_netns: bool,
}

/// Resolve `path` (absolute, as seen inside the container) under `root`,
/// following symlinks as if `root` were `/`: nothing can lead outside it.
pub fn secure_join(root: &Path, path: &str) -> Result<PathBuf> {
    let mut todo: VecDeque<OsString> = Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            cur.pop();
            continue;
        }
        let full = root.join(&cur).join(&part);
        match fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    bail!("too many symlinks resolving {path} in the container");
                }
                let target = fs::read_link(&full)
                    .with_context(|| format!("reading link {}", full.display()))?;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                let mut parts: Vec<OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_owned()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                while let Some(p) = parts.pop() {
                    todo.push_front(p);
                }
            }
            _ => cur.push(&part),
        }
    }
    Ok(root.join(cur))
}

fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(src, target, fstype, flags, data).with_context(|| {
        format!(
            "mounting {} on {} ({})",
            src.unwrap_or("none"),
            target.display(),
            fstype.unwrap_or("bind")
        )
    })
}

fn bind(src: &Path, target: &Path, read_only: bool) -> Result<()> {
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {} on {}", src.display(), target.display()))?;
    if read_only {
        remount_ro(target)?;
    }
    Ok(())
}

fn remount_ro(target: &Path) -> Result<()> {
    // Keep the flags the mount already has (nosuid, nodev...), or an
    // unprivileged remount is refused.
    let st = nix::sys::statvfs::statvfs(target)
        .with_context(|| format!("statvfs {}", target.display()))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    use nix::sys::statvfs::FsFlags;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if st.flags().contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("remounting {} read-only", target.display()))
}

fn mkdir_p(p: &Path) -> Result<()> {
    fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

/// Create `target` like `source` (a file for a file, else a directory).
fn make_target(source: &Path, target: &Path) -> Result<()> {
    if source.is_dir() {
        mkdir_p(target)
    } else {
        if let Some(parent) = target.parent() {
            mkdir_p(parent)?;
        }
        if !target.exists() {
            fs::write(target, b"").with_context(|| format!("creating {}", target.display()))?;
        }
        Ok(())
    }
}

/// Set up everything under `plan.root` and pivot into it. On return the
/// process's root is the container root and its cwd is `/`.
pub fn setup(plan: &Plan) -> Result<()> {
    let root = &plan.root;
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    bind(root, root, false)?;
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;

    let proc_dir = secure_join(root, "/proc")?;
    mkdir_p(&proc_dir)?;
    mnt(Some("proc"), &proc_dir, Some("proc"), nosuid, None)?;

    let sys_dir = secure_join(root, "/sys")?;
    mkdir_p(&sys_dir)?;
    if plan.own_netns {
        mnt(
            Some("sysfs"),
            &sys_dir,
            Some("sysfs"),
            nosuid | MsFlags::MS_RDONLY,
            None,
        )?;
    } else {
        bind(Path::new("/sys"), &sys_dir, true)?;
    }
    if crate::rootless::in_user_namespace() {
        // cgroup v1 cannot be mounted from a user namespace: show the
        // host's hierarchies read-only (a bound /sys has them already).
        let host = Path::new("/sys/fs/cgroup");
        let target = sys_dir.join("fs/cgroup");
        if plan.own_netns && host.is_dir() && target.is_dir() {
            bind(host, &target, true)?;
        }
    } else {
        mount_cgroups(&sys_dir.join("fs/cgroup"))?;
    }

    setup_dev(root, plan.mknod)?;

    for m in &plan.mounts {
        let target = secure_join(root, &m.target)?;
        match m.kind.as_str() {
            "tmpfs" => {
                mkdir_p(&target)?;
                let opts = if m.options.is_empty() {
                    "mode=1777".to_string()
                } else {
                    m.options.clone()
                };
                let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                if m.read_only {
                    flags |= MsFlags::MS_RDONLY;
                }
                mnt(Some("tmpfs"), &target, Some("tmpfs"), flags, Some(&opts))?;
            }
            _ => {
                make_target(&m.source, &target)?;
                bind(&m.source, &target, m.read_only)?;
            }
        }
    }
    for (src, dst) in &plan.etc_files {
        let target = secure_join(root, dst)?;
        make_target(src, &target)?;
        bind(src, &target, false)?;
    }

    std::env::set_current_dir(root).with_context(|| format!("entering {}", root.display()))?;
    nix::unistd::pivot_root(".", ".").context("pivot_root into the container root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    std::env::set_current_dir("/").context("chdir / in the container")?;

    if !plan.privileged {
        for p in MASKED {
            mask(Path::new(p))?;
        }
        for p in READONLY {
            let p = Path::new(p);
            if p.exists() {
                bind(p, p, true)?;
            }
        }
    }
    if plan.read_only {
        remount_ro(Path::new("/"))?;
    }
    Ok(())
}

fn mask(p: &Path) -> Result<()> {
    match fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(md) if md.is_dir() => mnt(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
        Ok(_) => bind(Path::new("/dev/null"), p, false),
    }
}

/// Mount the host's cgroup hierarchies (as seen from the container's cgroup
/// namespace) read-only under `dir`.
fn mount_cgroups(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let host = Path::new("/sys/fs/cgroup");
    let mut v1 = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 4 {
            continue;
        }
        let mp = Path::new(f[1]);
        if f[2] == "cgroup2" && mp == host {
            return mnt(
                Some("cgroup2"),
                dir,
                Some("cgroup2"),
                flags | MsFlags::MS_RDONLY,
                None,
            );
        }
        if (f[2] == "cgroup" || f[2] == "cgroup2") && mp.parent() == Some(host) {
            v1.push((
                mp.file_name().map(|n| n.to_owned()),
                f[2].to_string(),
                f[3].to_string(),
            ));
        }
    }
    if v1.is_empty() {
        return Ok(());
    }
    mnt(Some("tmpfs"), dir, Some("tmpfs"), flags, Some("mode=755"))?;
    for (name, fstype, opts) in v1 {
        let Some(name) = name else { continue };
        let target = dir.join(&name);
        mkdir_p(&target)?;
        let keep: Vec<&str> = opts
            .split(',')
            .filter(|o| {
                ![
                    "rw", "ro", "nosuid", "nodev", "noexec", "relatime", "noatime",
                ]
                .contains(o)
            })
            .collect();
        let data = keep.join(",");
        let src = if fstype == "cgroup2" {
            "cgroup2"
        } else {
            "cgroup"
        };
        mnt(
            Some(src),
            &target,
            Some(&fstype),
            flags | MsFlags::MS_RDONLY,
            Some(&data),
        )?;
    }
    // The usual aliases (cpu -> cpu,cpuacct).
    if let Ok(entries) = fs::read_dir(host) {
        for e in entries.flatten() {
            if let Ok(t) = fs::read_link(e.path()) {
                let _ = symlink(t, dir.join(e.file_name()));
            }
        }
    }
    remount_ro(dir)
}

fn setup_dev(root: &Path, can_mknod: bool) -> Result<()> {
    let dev = secure_join(root, "/dev")?;
    mkdir_p(&dev)?;
    mnt(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        if can_mknod {
            mknod(
                &p,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            )
            .with_context(|| format!("creating device {}", p.display()))?;
            // mknod honours the umask; make the mode exact.
            fs::set_permissions(&p, fs::Permissions::from_mode(0o666))?;
        } else {
            fs::write(&p, b"").with_context(|| format!("creating {}", p.display()))?;
            bind(&Path::new("/dev").join(name), &p, false)?;
        }
    }
    let pts = dev.join("pts");
    mkdir_p(&pts)?;
    mnt(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    symlink("pts/ptmx", dev.join("ptmx")).context("linking /dev/ptmx")?;
    let shm = dev.join("shm");
    mkdir_p(&shm)?;
    mnt(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    let mq = dev.join("mqueue");
    mkdir_p(&mq)?;
    // mqueue needs our own ipc namespace; skip quietly where refused.
    let _ = mount(
        Some("mqueue"),
        &mq,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    );
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        symlink(target, dev.join(link)).with_context(|| format!("linking /dev/{link}"))?;
    }
    Ok(())
}

/// Bind the terminal `tty_path` (a host pty slave) over /dev/console.
pub fn bind_console(tty_path: &Path) -> Result<()> {
    let console = Path::new("/dev/console");
    fs::write(console, b"").context("creating /dev/console")?;
    bind(tty_path, console, false)
}

/// Whether `p` is a mount point (its device differs from its parent's or it
/// is listed in /proc/self/mountinfo).
pub fn is_mountpoint(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = p.as_os_str().as_bytes();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| unescape(m).as_bytes() == want)
    })
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc")).unwrap();
        symlink("/etc", r.join("abs")).unwrap();
        symlink("../../..", r.join("up")).unwrap();
        symlink("up/x", r.join("chain")).unwrap();
        assert_eq!(secure_join(r, "/abs/passwd").unwrap(), r.join("etc/passwd"));
        assert_eq!(secure_join(r, "/up").unwrap(), r.to_path_buf());
        assert_eq!(secure_join(r, "/chain").unwrap(), r.join("x"));
        assert_eq!(secure_join(r, "/../../etc").unwrap(), r.join("etc"));
        symlink("loop", r.join("loop")).unwrap();
        assert!(secure_join(r, "/loop").is_err());
    }
}
