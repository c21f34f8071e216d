//! The runtime operations behind `strata oci`: create, start, kill,
//! delete, pause, resume, ps.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::translate::translate;
use super::{load_spec, resources, run_hooks, validate_id, Handle, Saved, Status, EXEC_FIFO};
use crate::container::process_start_time;
use crate::{cgroup, sys, timefmt};

/// Options of `create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Write the init's pid here.
    pub pid_file: Option<PathBuf>,
    /// Send the pty master here when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
}

/// Create container `id` under the state `root`; on return its init waits
/// for `start`.
pub fn create(root: &Path, id: &str, opts: &CreateOptions) -> Result<()> {
    validate_id(id)?;
    let bundle = fs::canonicalize(&opts.bundle)
        .with_context(|| format!("bundle {} not found", opts.bundle.display()))?;
    let spec = load_spec(&bundle)?;
    fs::create_dir_all(root).with_context(|| format!("creating state root {}", root.display()))?;
    let dir = root.join(id);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("container with id {id} already exists")
        }
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    let result = create_in(&dir, id, &bundle, &spec, opts);
    if result.is_err() {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn create_in(
    dir: &Path,
    id: &str,
    bundle: &Path,
    spec: &oci_spec::runtime::Spec,
    opts: &CreateOptions,
) -> Result<()> {
    let fifo = dir.join(EXEC_FIFO);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("creating {}", fifo.display()))?;
    let tr = translate(spec, bundle, &fifo)?;
    if let Some(p) = &tr.join_pid {
        let f =
            fs::File::open(p).with_context(|| format!("opening pid namespace {}", p.display()))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWPID)
            .with_context(|| format!("joining pid namespace {}", p.display()))?;
    }

    // stdio: ours, or a new pty whose master goes to the console socket.
    let mut _pty_slave: Option<OwnedFd> = None;
    let stdio: [RawFd; 3] = if tr.terminal {
        let sock = opts
            .console_socket
            .as_ref()
            .context("process.terminal is set: --console-socket is required")?;
        let slave = open_console(sock)?;
        let fd = slave.as_raw_fd();
        _pty_slave = Some(slave);
        [fd; 3]
    } else {
        if opts.console_socket.is_some() {
            bail!("--console-socket given but process.terminal is false in config.json");
        }
        [0, 1, 2]
    };

    let (cfg_rx, cfg_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("creating the init config pipe")?;
    let (st_rx, st_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("creating the init status pipe")?;
    let exe = std::env::current_exe().context("finding the strata binary")?;
    let image = sys::ExecImage {
        path: CString::new(exe.as_os_str().as_encoded_bytes()).context("strata binary path")?,
        argv: vec![
            c"strata".to_owned(),
            c"oci".to_owned(),
            c"__init".to_owned(),
        ],
        envp: vec![c"PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        fds: vec![cfg_rx.as_raw_fd(), st_tx.as_raw_fd()],
        stdio,
    };
    let pid = sys::clone_exec(tr.clone_flags, &image).context("cloning the container init")?;
    drop(cfg_rx);
    drop(st_tx);
    drop(_pty_slave);
    let kill_init = || {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    };
    let start_time = process_start_time(pid.as_raw()).unwrap_or(0);
    let rel = cgroup_rel(spec, id);
    let mut handle = Handle {
        dir: dir.to_path_buf(),
        saved: Saved {
            id: id.to_string(),
            pid: pid.as_raw(),
            start_time,
            bundle: bundle.to_path_buf(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            created: timefmt::rfc3339(timefmt::now_nanos()),
            cgroup: None,
            hooks: spec.hooks().clone(),
        },
    };
    let setup = (|| -> Result<()> {
        if cgroup::available() {
            let cg = super::cgroup_manager(&rel);
            handle.saved.cgroup = Some(rel.clone());
            cg.create(&resources(spec))
                .with_context(|| format!("setting up cgroup {}", rel.display()))?;
            super::apply_memory_extras(spec, &rel)
                .with_context(|| format!("setting up cgroup {}", rel.display()))?;
            cg.add_process(pid.as_raw())?;
        }
        handle.save()?;
        if !tr.uid_map.is_empty() {
            write_map(pid, "uid_map", &tr.uid_map)?;
        }
        if !tr.gid_map.is_empty() {
            write_map(pid, "gid_map", &tr.gid_map)?;
        }
        let text = serde_json::to_vec(&tr.init).context("encoding the init config")?;
        let mut tx = fs::File::from(cfg_tx);
        tx.write_all(&text).context("sending the init config")?;
        drop(tx);
        let mut answer = String::new();
        fs::File::from(st_rx)
            .read_to_string(&mut answer)
            .context("reading the init's status")?;
        if answer.trim() != "ok" {
            if answer.is_empty() {
                bail!("the container init exited during set-up");
            }
            bail!("container set-up failed: {}", answer.trim());
        }
        let hooks = spec.hooks().as_ref();
        let state = handle.state_json_as(Status::Created);
        run_hooks(
            "prestart",
            hooks.and_then(|h| h.prestart().as_ref()),
            &state,
        )?;
        run_hooks(
            "createRuntime",
            hooks.and_then(|h| h.create_runtime().as_ref()),
            &state,
        )?;
        if let Some(pf) = &opts.pid_file {
            crate::container::write_atomic(pf, pid.as_raw().to_string().as_bytes())
                .with_context(|| format!("writing pid file {}", pf.display()))?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        kill_init();
        if let Some(cg) = handle.cgroup() {
            let _ = cg.destroy();
        }
        return Err(e);
    }
    Ok(())
}

fn cgroup_rel(spec: &oci_spec::runtime::Spec, id: &str) -> PathBuf {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .filter(|p| !p.as_os_str().is_empty());
    match given {
        // A relative path is relative to our own cgroup in runc; we anchor
        // it at the hierarchy roots, which is what callers mean in practice.
        Some(p) => p
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect(),
        None => PathBuf::from("strata-oci").join(id),
    }
}

fn write_map(pid: Pid, file: &str, lines: &str) -> Result<()> {
    let path = format!("/proc/{pid}/{file}");
    fs::write(&path, lines).with_context(|| format!("writing {path} ({})", lines.trim()))
}

/// Make a pty, send its master over the unix socket at `sock` (as runc
/// does) and return the slave.
fn open_console(sock: &Path) -> Result<OwnedFd> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let pty = nix::pty::openpty(None, None).context("opening a pty")?;
    let name = nix::unistd::ttyname(&pty.slave)
        .map(|p| p.to_string_lossy().to_string())
        .unwrap_or_default();
    let stream = std::os::unix::net::UnixStream::connect(sock)
        .with_context(|| format!("connecting to console socket {}", sock.display()))?;
    let fds = [pty.master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .with_context(|| format!("sending the pty to {}", sock.display()))?;
    Ok(pty.slave)
}

/// Wait (at most 2 s) until the container's init has replaced itself with
/// the user's program, so that `start` returns with the command running as
/// runc's does (the init does its last steps after the exec fifo): a
/// signal sent right after `start` then reaches the program, not the
/// init. The init runs this same binary until its exec; a program that is
/// this binary too just costs the full wait.
fn wait_for_exec(pid: i32) {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let Ok(me) = id("/proc/self/exe") else { return };
    let exe = format!("/proc/{pid}/exe");
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        match id(&exe) {
            Ok(x) if x == me => std::thread::sleep(Duration::from_millis(1)),
            _ => return,
        }
    }
}

/// Let a created container exec its process.
pub fn start(root: &Path, id: &str) -> Result<()> {
    let h = Handle::load(root, id)?;
    match h.status() {
        Status::Created => {}
        s => bail!(
            "cannot start container {id}: it is {}, not created",
            s.as_str()
        ),
    }
    let fifo = h.fifo();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(&fifo)
        .with_context(|| format!("opening {}", fifo.display()))?;
    let mut buf = [0u8; 1];
    loop {
        match f.read(&mut buf) {
            Ok(n) if n > 0 => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", fifo.display())),
        }
        if !h.alive() {
            let _ = fs::remove_file(&fifo);
            bail!("container {id} exited before it could be started");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    fs::remove_file(&fifo).with_context(|| format!("removing {}", fifo.display()))?;
    wait_for_exec(h.saved.pid);
    let hooks = h.saved.hooks.as_ref();
    if let Err(e) = run_hooks(
        "poststart",
        hooks.and_then(|x| x.poststart().as_ref()),
        &h.state_json_as(Status::Running),
    ) {
        // The spec: a poststart failure is logged, the container goes on.
        tracing::warn!("{e:#}");
    }
    Ok(())
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

/// Send `sig` to the container's init, or with `all` to every process in
/// its cgroup.
pub fn kill(root: &Path, id: &str, sig: Signal, all: bool) -> Result<()> {
    let h = Handle::load(root, id)?;
    if h.status() == Status::Stopped {
        bail!("cannot kill container {id}: it is not running");
    }
    if all {
        if let Some(cg) = h.cgroup() {
            for p in cg.pids()? {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), sig);
            }
            return Ok(());
        }
    }
    nix::sys::signal::kill(Pid::from_raw(h.saved.pid), sig)
        .with_context(|| format!("sending {sig} to container {id} (pid {})", h.saved.pid))
}

/// Delete a container; a running one only with `force` (killed first).
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let h = match Handle::load(root, id) {
        Ok(h) => h,
        Err(e) => {
            // `delete --force` of a broken or missing state succeeds, as runc.
            let dir = root.join(id);
            if force && validate_id(id).is_ok() {
                if dir.exists() {
                    fs::remove_dir_all(&dir)
                        .with_context(|| format!("removing {}", dir.display()))?;
                }
                return Ok(());
            }
            return Err(e);
        }
    };
    match h.status() {
        Status::Stopped => {}
        Status::Created => kill_and_wait(&h)?,
        s if force => {
            if s == Status::Paused {
                let _ = resume(root, id);
            }
            kill_and_wait(&h)?;
        }
        s => bail!(
            "cannot delete container {id}: it is {} (stop it first or use --force)",
            s.as_str()
        ),
    }
    if let Some(cg) = h.cgroup() {
        if let Ok(pids) = cg.pids() {
            for p in pids {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        cg.destroy()
            .with_context(|| format!("removing the cgroup of container {id}"))?;
    }
    let hooks = h.saved.hooks.as_ref();
    if let Err(e) = run_hooks(
        "poststop",
        hooks.and_then(|x| x.poststop().as_ref()),
        &h.state_json_as(Status::Stopped),
    ) {
        tracing::warn!("{e:#}");
    }
    fs::remove_dir_all(&h.dir).with_context(|| format!("removing {}", h.dir.display()))
}

fn kill_and_wait(h: &Handle) -> Result<()> {
    let _ = nix::sys::signal::kill(Pid::from_raw(h.saved.pid), Signal::SIGKILL);
    let t0 = Instant::now();
    while h.alive() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!(
                "container {} (pid {}) did not die after SIGKILL",
                h.saved.id,
                h.saved.pid
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn freeze(root: &Path, id: &str, want: &str) -> Result<()> {
    let h = Handle::load(root, id)?;
    let st = h.status();
    let ok = match want {
        "FROZEN" => st == Status::Running || st == Status::Created,
        _ => st == Status::Paused,
    };
    if !ok {
        bail!(
            "cannot {} container {id}: it is {}",
            if want == "FROZEN" { "pause" } else { "resume" },
            st.as_str()
        );
    }
    let f = h
        .freezer_state()
        .with_context(|| format!("container {id} has no freezer cgroup"))?;
    fs::write(&f, want).with_context(|| format!("writing {want} to {}", f.display()))?;
    let t0 = Instant::now();
    loop {
        let cur = fs::read_to_string(&f).unwrap_or_default();
        if cur.trim() == want {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("container {id} is still {} after 10s", cur.trim());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Freeze every process of the container (freezer cgroup).
pub fn pause(root: &Path, id: &str) -> Result<()> {
    freeze(root, id, "FROZEN")
}

/// Thaw a paused container.
pub fn resume(root: &Path, id: &str) -> Result<()> {
    freeze(root, id, "THAWED")
}

/// Pids of the container's processes (its cgroup, or just the init).
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    let h = Handle::load(root, id)?;
    if h.status() == Status::Stopped {
        return Ok(Vec::new());
    }
    match h.cgroup() {
        Some(cg) => cg.pids(),
        None => Ok(vec![h.saved.pid]),
    }
}

/// Ids of every container under `root`.
pub fn list(root: &Path) -> Result<Vec<Handle>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    for e in rd.flatten() {
        if let Some(name) = e.file_name().to_str() {
            if let Ok(h) = Handle::load(root, name) {
                out.push(h);
            }
        }
    }
    out.sort_by(|a, b| a.saved.created.cmp(&b.saved.created));
    Ok(out)
}

/// What `exec` runs.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Command and arguments (empty: take them from `process`).
    pub argv: Vec<String>,
    /// A runtime-spec process.json (`--process`).
    pub process: Option<PathBuf>,
    /// Extra `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// `uid[:gid]`.
    pub user: Option<String>,
    /// Do not wait for the process.
    pub detach: bool,
    /// Write the process's host pid here.
    pub pid_file: Option<PathBuf>,
}

const EXEC_NAMESPACES: &[(&str, nix::sched::CloneFlags)] = &[
    ("user", nix::sched::CloneFlags::CLONE_NEWUSER),
    ("cgroup", nix::sched::CloneFlags::CLONE_NEWCGROUP),
    ("ipc", nix::sched::CloneFlags::CLONE_NEWIPC),
    ("uts", nix::sched::CloneFlags::CLONE_NEWUTS),
    ("net", nix::sched::CloneFlags::CLONE_NEWNET),
    ("pid", nix::sched::CloneFlags::CLONE_NEWPID),
    ("mnt", nix::sched::CloneFlags::CLONE_NEWNS),
];

/// Run another process in a running container (its namespaces and
/// cgroup, the bundle's capabilities); returns its exit code, or 0 with
/// `detach`. The calling process must be single-threaded (the CLI is).
pub fn exec(root: &Path, id: &str, opts: &ExecOptions) -> Result<i32> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let h = Handle::load(root, id)?;
    if h.status() != Status::Running {
        bail!(
            "cannot exec in container {id}: it is {}",
            h.status().as_str()
        );
    }
    let spec = load_spec(&h.saved.bundle)?;
    let base = spec
        .process()
        .clone()
        .context("the bundle's config.json has no process")?;
    let process = match &opts.process {
        Some(p) => {
            let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str::<oci_spec::runtime::Process>(&text)
                .with_context(|| format!("parsing {}", p.display()))?
        }
        None => base,
    };
    if process.terminal().unwrap_or(false) && opts.process.is_some() {
        bail!("exec with a terminal is not supported by strata oci");
    }
    let mut argv = opts.argv.clone();
    if argv.is_empty() {
        argv = process.args().clone().unwrap_or_default();
    }
    if argv.is_empty() {
        bail!("exec needs a command");
    }
    let mut env = process.env().clone().unwrap_or_default();
    env.extend(opts.env.iter().cloned());
    let u = process.user();
    let caps = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().clone().or_else(|| c.effective().clone()))
        .map(|set| set.iter().map(|c| format!("CAP_{c}")).collect())
        .unwrap_or_default();
    let pspec = crate::process::ProcessSpec {
        argv,
        env,
        cwd: opts
            .cwd
            .clone()
            .unwrap_or_else(|| process.cwd().to_string_lossy().to_string()),
        user: opts
            .user
            .clone()
            .unwrap_or_else(|| format!("{}:{}", u.uid(), u.gid())),
        caps,
        seccomp: super::translate::seccomp_profile(spec.linux().as_ref())?,
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        tty: false,
        groups_add: u.additional_gids().clone().unwrap_or_default(),
        oci_caps: super::translate::cap_sets(&process),
    };
    let pid = h.saved.pid;
    let mut ns = Vec::new();
    for (name, flag) in EXEC_NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let ours = format!("/proc/self/ns/{name}");
        let same = match (fs::metadata(&theirs), fs::metadata(&ours)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            let f = fs::File::open(&theirs).with_context(|| format!("opening {theirs}"))?;
            ns.push((f, *flag, *name));
        }
    }
    // Host paths mean something else once in the mount namespace: open
    // the pid file now.
    let mut pid_file = match &opts.pid_file {
        Some(pf) => Some(
            fs::File::create(pf).with_context(|| format!("creating pid file {}", pf.display()))?,
        ),
        None => None,
    };
    if let Some(cg) = h.cgroup() {
        cg.add_process(std::process::id() as i32)
            .with_context(|| format!("joining the cgroup of container {id}"))?;
    }
    for (f, flag, name) in &ns {
        nix::sched::setns(f.as_fd(), *flag)
            .with_context(|| format!("joining the {name} namespace of container {id}"))?;
    }
    match sys::fork_single_threaded().context("forking the exec process")? {
        nix::unistd::ForkResult::Child => {
            let fail = crate::process::finalize_and_exec(&pspec, None);
            eprintln!("strata oci exec: {}", fail.message);
            std::process::exit(fail.code);
        }
        nix::unistd::ForkResult::Parent { child } => {
            if let Some(f) = pid_file.as_mut() {
                f.write_all(child.as_raw().to_string().as_bytes())
                    .context("writing the pid file")?;
            }
            drop(pid_file);
            if opts.detach {
                return Ok(0);
            }
            loop {
                match nix::sys::wait::waitpid(child, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return Ok(c),
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("waiting for the exec process"),
                }
            }
        }
    }
}
