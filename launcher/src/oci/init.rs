//! The OCI container's init (`strata oci __init`), run inside the new
//! namespaces. Descriptor 3 carries the [`OciInit`] as JSON (end-of-file
//! is the "go", after `create` has set up the cgroup and id maps);
//! descriptor 4 gets `ok` once everything is set up, or the error. The
//! init then blocks on the exec fifo until `strata oci start`, and execs
//! the user's process.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use crate::process::{self, ProcessSpec};
use crate::{rootfs, sys};

/// What the init does, sent by `create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OciInit {
    /// Mounts and pivot.
    pub plan: rootfs::Plan,
    /// Host name (own UTS namespace).
    pub hostname: Option<String>,
    /// Bring up loopback in our own network namespace.
    pub own_netns: bool,
    /// Enter a new cgroup namespace once in the cgroup.
    pub cgroupns: bool,
    /// Namespaces to join, as (kind, path), user first.
    pub join: Vec<(String, PathBuf)>,
    /// Paths made inaccessible (linux.maskedPaths).
    pub masked: Vec<String>,
    /// Paths made read-only (linux.readonlyPaths).
    pub readonly: Vec<String>,
    /// (RLIMIT_NAME, soft, hard).
    pub rlimits: Vec<(String, u64, u64)>,
    /// The exec fifo (host path, opened before pivot_root).
    pub fifo: PathBuf,
    /// stdio is a terminal that must become the controlling one.
    pub terminal: bool,
    /// The user's process.
    pub process: ProcessSpec,
}

/// Entry point of `strata oci __init`. Never returns.
pub fn main() -> ! {
    // clone_exec sets a parent-death signal; the container must outlive
    // `strata oci create`.
    let _ = nix::sys::prctl::set_pdeathsig(None);
    let _ = nix::fcntl::fcntl(sys::borrow_fd(4), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let mut status = File::from(sys::owned_fd(4));
    let cfg = match setup() {
        Ok(c) => c,
        Err(e) => {
            let _ = write!(status, "{e:#}");
            std::process::exit(1)
        }
    };
    let (fifo_fd, spec) = cfg;
    let _ = status.write_all(b"ok\n");
    drop(status);
    // Blocks until `start` opens the fifo for reading.
    let fifo_path = format!("/proc/self/fd/{}", fifo_fd.as_raw_fd());
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo_path)
        .and_then(|mut f| f.write_all(b"0"));
    if let Err(e) = opened {
        eprintln!("strata oci init: waiting for start on the exec fifo: {e}");
        std::process::exit(1);
    }
    drop(fifo_fd);
    let failure = process::finalize_and_exec(&spec, None);
    eprintln!("strata oci init: {}", failure.message);
    std::process::exit(failure.code)
}

fn setup() -> Result<(OwnedFd, ProcessSpec)> {
    let mut cfg_file = File::from(sys::owned_fd(3));
    let mut text = String::new();
    cfg_file
        .read_to_string(&mut text)
        .context("reading the init config")?;
    drop(cfg_file);
    if text.is_empty() {
        anyhow::bail!("strata oci create went away before the container was set up");
    }
    let cfg: OciInit = serde_json::from_str(&text).context("parsing the init config")?;
    close_other_fds();
    for (kind, path) in &cfg.join {
        let f = File::open(path)
            .with_context(|| format!("opening the {kind} namespace {}", path.display()))?;
        nix::sched::setns(f.as_fd(), CloneFlags::empty())
            .with_context(|| format!("joining the {kind} namespace {}", path.display()))?;
    }
    crate::init::namespace_basics(cfg.cgroupns, cfg.hostname.as_deref(), cfg.own_netns)?;
    // The fifo lives in the host's state dir: hold it across pivot_root.
    let fifo = nix::fcntl::open(
        &cfg.fifo,
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("opening the exec fifo {}", cfg.fifo.display()))?;
    rootfs::setup(&cfg.plan)?;
    for p in &cfg.masked {
        mask(Path::new(p))?;
    }
    for p in &cfg.readonly {
        readonly(Path::new(p))?;
    }
    nix::unistd::setsid().context("setsid")?;
    if cfg.terminal {
        sys::set_controlling_tty(std::io::stdin().as_fd())
            .context("making the console the controlling terminal")?;
    }
    for (name, soft, hard) in &cfg.rlimits {
        let res = rlimit_resource(name)?;
        nix::sys::resource::setrlimit(res, *soft, *hard)
            .with_context(|| format!("setting {name} to {soft}:{hard}"))?;
    }
    Ok((fifo, cfg.process))
}

fn rlimit_resource(name: &str) -> Result<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Ok(match name {
        "RLIMIT_CPU" => R::RLIMIT_CPU,
        "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
        "RLIMIT_DATA" => R::RLIMIT_DATA,
        "RLIMIT_STACK" => R::RLIMIT_STACK,
        "RLIMIT_CORE" => R::RLIMIT_CORE,
        "RLIMIT_RSS" => R::RLIMIT_RSS,
        "RLIMIT_NPROC" => R::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => R::RLIMIT_AS,
        "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => R::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
        other => anyhow::bail!("unknown rlimit {other} in config.json"),
    })
}

/// Hide `p`: an empty read-only tmpfs over a directory, /dev/null over a
/// file; missing paths are skipped.
fn mask(p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(md) if md.is_dir() => mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .with_context(|| format!("masking {}", p.display())),
        Ok(_) => mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("masking {}", p.display())),
    }
}

/// Bind `p` onto itself read-only; missing paths are skipped.
fn readonly(p: &Path) -> Result<()> {
    if std::fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("binding {} for read-only", p.display()))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, p, None::<&str>, flags, None::<&str>)
        .or_else(|_| {
            mount(
                None::<&str>,
                p,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
        })
        .with_context(|| format!("remounting {} read-only", p.display()))
}

/// Mark every descriptor above 4 close-on-exec.
fn close_other_fds() {
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds.into_iter().filter(|fd| *fd > 4) {
            // A number that closed meanwhile gives EBADF, ignored.
            let _ = nix::fcntl::fcntl(sys::borrow_fd(fd), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
    }
}
