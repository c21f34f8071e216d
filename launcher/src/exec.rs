//! `strata exec`: run another process in a running container. The calling
//! (single-threaded) process joins the container's cgroup and namespaces
//! itself, then forks; the child is inside the container's pid namespace
//! and applies the container's user, capabilities and seccomp filter
//! before exec.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;

use crate::container::{Container, SeccompProfile};
use crate::process::ProcessSpec;
use crate::{capabilities, cgroup, sys, terminal};

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Command and arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<String>,
    /// `user[:group]` (default: the container's).
    pub user: Option<String>,
    /// Working directory (default: the container's).
    pub workdir: Option<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// Do not wait.
    pub detach: bool,
    /// Full privileges for this process.
    pub privileged: bool,
}

/// In joining order: the user namespace first (rootless containers), as
/// it grants the capabilities to join the others.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Run `opts` in `c`; returns the process's exit code (docker's rules).
pub fn exec(c: &Container, opts: &ExecOptions) -> Result<i32> {
    if !c.is_live() || c.state.pid <= 0 {
        bail!("container {} is not running", c.config.name);
    }
    if opts.argv.is_empty() {
        bail!("exec needs a command");
    }
    let pid = c.state.pid;
    let cfg = &c.config;
    let privileged = cfg.privileged || opts.privileged;
    let caps = capabilities::effective_set(privileged, &cfg.cap_add, &cfg.cap_drop)?;
    let mut env = cfg.env.clone();
    env.extend(opts.env.iter().cloned());
    let spec = ProcessSpec {
        argv: opts.argv.clone(),
        env,
        cwd: opts
            .workdir
            .clone()
            .unwrap_or_else(|| cfg.working_dir.clone()),
        user: opts.user.clone().unwrap_or_else(|| cfg.user.clone()),
        caps,
        seccomp: if privileged {
            SeccompProfile::Unconfined
        } else {
            cfg.seccomp.clone()
        },
        no_new_privs: !privileged,
        tty: opts.tty,
        groups_add: Vec::new(),
        oci_caps: None,
    };
    // Open every namespace first: /proc paths change meaning once we join
    // the mount namespace.
    let mut ns = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            continue;
        }
        let f = File::open(&theirs)
            .with_context(|| format!("opening {theirs}: is the container still running?"))?;
        ns.push((f, *flag, *name));
    }
    if cgroup::available() {
        cgroup::for_container(&cfg.id)
            .add_process(std::process::id() as i32)
            .context("joining the container's cgroup")?;
    }
    for (f, flag, name) in &ns {
        nix::sched::setns(f.as_fd(), *flag)
            .with_context(|| format!("joining the container's {name} namespace"))?;
    }
    let pty = if opts.tty {
        Some(nix::pty::openpty(None, None).context("allocating a terminal in the container")?)
    } else {
        None
    };
    let stdin_null = if opts.interactive {
        None
    } else {
        Some(File::open("/dev/null").context("opening /dev/null")?)
    };
    match sys::fork_single_threaded().context("forking the exec process")? {
        ForkResult::Child => {
            if let Some(p) = &pty {
                let _ = nix::unistd::setsid();
                for fd in 0..3 {
                    let _ = sys::dup2_raw(p.slave.as_raw_fd(), fd);
                }
                let _ = sys::set_controlling_tty(std::io::stdin().as_fd());
            } else if let Some(null) = &stdin_null {
                let _ = sys::dup2_raw(null.as_raw_fd(), 0);
            }
            drop(pty);
            let fail = crate::process::finalize_and_exec(&spec, Some(&cfg.hostname));
            eprintln!("strata: {}", fail.message);
            std::process::exit(fail.code);
        }
        ForkResult::Parent { child } => {
            if opts.detach {
                return Ok(0);
            }
            let status = match pty {
                Some(p) => {
                    drop(p.slave);
                    terminal::relay_pty(File::from(p.master), opts.interactive, child)?
                }
                None => waitpid(child, None).context("waiting for the exec process")?,
            };
            Ok(match status {
                WaitStatus::Exited(_, code) => code,
                WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                _ => 255,
            })
        }
    }
}
