//! The container's init, both sides of its handshake with the supervisor.
//!
//! The supervisor clones a child into new namespaces that immediately
//! re-executes `strata __init` ([`spawn`]), so the child is a fresh
//! single-threaded process. Descriptor 3 carries the [`InitConfig`] as JSON;
//! the supervisor writes it only after it has put the child in its cgroup,
//! written id maps and attached the network, and end-of-file is the "go".
//! Descriptor 4 is close-on-exec: it closes empty when the command starts,
//! or carries `CODE message` when setup or exec failed ([`main`]).
//!
//! In a user namespace (rootless) the first exec happened before the
//! supervisor wrote the id maps, so the kernel took the init's
//! capabilities; once the config arrives the maps exist and the init
//! executes itself once more, as root of its namespace with a full set.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::process::{self, ProcessSpec};
use crate::{rootfs, sys};

/// What the init does, sent by the supervisor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InitConfig {
    /// Mounts and pivot.
    pub plan: rootfs::Plan,
    /// Host name, when the container has its own UTS namespace.
    pub hostname: Option<String>,
    /// Bring up loopback in our own network namespace.
    pub own_netns: bool,
    /// Enter a new cgroup namespace (after joining the cgroup).
    pub cgroupns: bool,
    /// The process to run.
    pub process: ProcessSpec,
    /// Stay as pid 1, reap zombies and forward signals (`--init`).
    pub reaper: bool,
    /// Host path of the pty slave, bound over /dev/console.
    pub console: Option<PathBuf>,
    /// Join this network namespace (`--network container:NAME`).
    pub join_netns: Option<PathBuf>,
    /// The init was cloned into a new user namespace (rootless).
    #[serde(default)]
    pub userns: bool,
}

/// The supervisor's end of a freshly cloned init.
pub struct Spawned {
    /// Host pid of the init.
    pub pid: Pid,
    /// Write the config here, then drop it: that is the "go".
    pub config_tx: File,
    /// Read the outcome of setup and exec here.
    pub error_rx: File,
}

/// Clone the init into the namespaces in `flags` with `stdio` as its
/// descriptors 0-2.
pub fn spawn(flags: CloneFlags, stdio: [RawFd; 3]) -> Result<Spawned> {
    let (cfg_rx, cfg_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("creating the init config pipe")?;
    let (err_rx, err_tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the init error pipe")?;
    let exe = std::env::current_exe().context("finding the strata binary")?;
    let exe = if exe.exists() {
        exe
    } else {
        PathBuf::from("/proc/self/exe")
    };
    let image = sys::ExecImage {
        path: std::ffi::CString::new(exe.as_os_str().as_encoded_bytes())
            .context("strata binary path")?,
        argv: vec![c"strata".to_owned(), c"__init".to_owned()],
        envp: vec![c"PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        fds: vec![cfg_rx.as_raw_fd(), err_tx.as_raw_fd()],
        stdio,
    };
    let pid = sys::clone_exec(flags, &image).context("cloning the container init")?;
    drop(cfg_rx);
    drop(err_tx);
    Ok(Spawned {
        pid,
        config_tx: File::from(cfg_tx),
        error_rx: File::from(err_rx),
    })
}

/// Entry point of `strata __init`. Never returns.
pub fn main() -> ! {
    // dup2 in the clone cleared close-on-exec; the exec must close it.
    let _ = nix::fcntl::fcntl(
        sys::borrow_fd(4),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mut err = File::from(sys::owned_fd(4));
    let (code, message) = match run() {
        Ok(f) => (f.code, f.message),
        Err(e) => (125, format!("{e:#}")),
    };
    let _ = write!(err, "{code} {message}");
    std::process::exit(code)
}

fn run() -> Result<process::ExecFailure> {
    let mut cfg_file = File::from(sys::owned_fd(3));
    let mut text = String::new();
    cfg_file
        .read_to_string(&mut text)
        .context("reading the init config")?;
    drop(cfg_file);
    if text.is_empty() {
        anyhow::bail!("the supervisor went away before starting the container");
    }
    let cfg: InitConfig = serde_json::from_str(&text).context("parsing the init config")?;
    if cfg.userns {
        if !has_namespace_caps() {
            return reexec_with_caps(&text);
        }
        // Gaining capabilities in that exec cleared the parent-death
        // signal: without it a killed supervisor would leave us running.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
            .context("setting the parent-death signal")?;
    }
    close_other_fds();
    if let Some(ns) = &cfg.join_netns {
        let f = File::open(ns).with_context(|| format!("opening {}", ns.display()))?;
        nix::sched::setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("joining {}", ns.display()))?;
    }
    crate::init::namespace_basics(cfg.cgroupns, cfg.hostname.as_deref(), cfg.own_netns)?;
    rootfs::setup(&cfg.plan)?;
    nix::unistd::setsid().context("setsid")?;
    if let Some(console) = &cfg.console {
        sys::set_controlling_tty(std::io::stdin().as_fd())
            .context("making the pty the controlling terminal")?;
        // Best effort: /dev/console pointing at our terminal.
        let _ = rootfs::bind_console(console);
    }
    if cfg.reaper {
        return reap(&cfg);
    }
    Ok(process::finalize_and_exec(
        &cfg.process,
        cfg.hostname.as_deref(),
    ))
}

/// Set in the environment of the second exec of a rootless init.
const REEXEC_ENV: &str = "STRATA_INIT_REEXEC";

fn has_namespace_caps() -> bool {
    caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false)
}

/// Execute `strata __init` again with `config` on descriptor 3 (a memfd)
/// and the error pipe kept on 4: now that the id maps exist, the exec
/// makes the init root of its user namespace with every capability.
fn reexec_with_caps(config: &str) -> Result<process::ExecFailure> {
    use std::io::{Seek, SeekFrom};
    if std::env::var_os(REEXEC_ENV).is_some() {
        anyhow::bail!(
            "the container init has no capabilities in its user namespace after re-executing              (are the id maps written?)"
        );
    }
    let fd =
        nix::sys::memfd::memfd_create(c"strata-init-config", nix::sys::memfd::MFdFlags::empty())
            .context("creating a memfd for the init config")?;
    let mut f = File::from(fd);
    f.write_all(config.as_bytes())
        .and_then(|_| f.seek(SeekFrom::Start(0)).map(drop))
        .context("writing the init config to a memfd")?;
    // The memfd may already be descriptor 3 (the config pipe was closed);
    // else dup2 puts it there, without close-on-exec.
    let raw = std::os::fd::IntoRawFd::into_raw_fd(f);
    if raw != 3 {
        sys::dup2_raw(raw, 3).context("placing the init config on descriptor 3")?;
        drop(sys::owned_fd(raw));
    }
    nix::fcntl::fcntl(
        sys::borrow_fd(4),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .context("keeping the error pipe open across exec")?;
    let env = [
        c"PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        std::ffi::CString::new(format!("{REEXEC_ENV}=1")).context("init environment")?,
    ];
    let err = nix::unistd::execve(
        c"/proc/self/exe",
        &[c"strata".to_owned(), c"__init".to_owned()],
        &env,
    )
    .unwrap_err();
    Err(anyhow::anyhow!(
        "re-executing the container init in its user namespace: {err}"
    ))
}

/// Mark every descriptor above 4 close-on-exec (anything the supervisor
/// leaked must not reach the container).
fn close_other_fds() {
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<RawFd> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        for fd in fds.into_iter().filter(|fd| *fd > 4) {
            // A number that closed meanwhile gives EBADF, ignored.
            let _ = nix::fcntl::fcntl(
                sys::borrow_fd(fd),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
        }
    }
}

const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// `--init`: fork the command, forward signals to it, reap every orphan,
/// and exit with the command's status.
fn reap(cfg: &InitConfig) -> Result<process::ExecFailure> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .context("blocking signals in the init")?;
    let child = match sys::fork_single_threaded().context("forking the command")? {
        nix::unistd::ForkResult::Child => {
            let _ = mask.thread_unblock();
            return Ok(process::finalize_and_exec(
                &cfg.process,
                cfg.hostname.as_deref(),
            ));
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    // Our copy of the error pipe must not keep it open: the child's exec
    // closes the other copy and that end-of-file means "started".
    // fd 4 stays owned by main's File, so replace it with /dev/null
    // instead of closing it.
    if let Ok(null) = File::open("/dev/null") {
        let _ = sys::dup2_raw(null.as_raw_fd(), 4);
    }
    let sfd = nix::sys::signalfd::SignalFd::new(&mask).context("creating the init signalfd")?;
    loop {
        let info = match sfd.read_signal() {
            Ok(Some(i)) => i,
            Ok(None) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("reading signals in the init"),
        };
        let signo = info.ssi_signo as i32;
        if signo == libc::SIGCHLD {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => std::process::exit(code),
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                        std::process::exit(128 + sig as i32)
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        } else if let Ok(sig) = Signal::try_from(signo) {
            let _ = nix::sys::signal::kill(child, sig);
        }
    }
}

/// The steps every container init takes once its namespaces exist: a
/// cgroup namespace of its own (`cgroupns`), the host name, and lo up in
/// a network namespace of its own. Shared by `strata run` and `strata oci`.
pub(crate) fn namespace_basics(
    cgroupns: bool,
    hostname: Option<&str>,
    own_netns: bool,
) -> Result<()> {
    if cgroupns {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .context("creating the cgroup namespace")?;
    }
    if let Some(h) = hostname {
        nix::unistd::sethostname(h).with_context(|| format!("setting the host name {h}"))?;
    }
    if own_netns {
        sys::loopback_up().context("bringing up lo")?;
    }
    Ok(())
}
