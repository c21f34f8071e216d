//! One supervisor per container: a detached `strata __supervise ID`
//! process that provides the rootfs, creates the cgroup, clones the init,
//! attaches the network, pumps output into the log and to attached
//! clients, records the exit (and OOM kills), applies the restart policy,
//! answers the control socket, and cleans up.
//!
//! `launch` starts it from the CLI and hands back a pipe on which the
//! supervisor reports `listening`, then `started` or `failed CODE MESSAGE`.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::cgroup::{self, CgroupManager};
use crate::container::{Container, RestartPolicy, Status};
use crate::control::{self, frame, Reply, Request};
use crate::init::{self, InitConfig};
use crate::process::ProcessSpec;
use crate::rootless::UserNs;
use crate::rootmount::RootMount;
use crate::{
    capabilities, logs, netglue, restart, rootfs, rootless, signals, sys, timefmt, volumes,
};

/// A supervisor just started by [`launch`].
pub struct Launched {
    ready: BufReader<File>,
    /// Its pid.
    pub pid: u32,
}

/// What the supervisor reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// The control socket accepts connections.
    Listening,
    /// The command runs.
    Started,
    /// Start failed with this docker exit code and message.
    Failed(i32, String),
}

impl Launched {
    /// The next report; a supervisor that died says so, with its log.
    pub fn next(&mut self, c: &Container) -> Ready {
        let mut line = String::new();
        match self.ready.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            _ => {
                let log = fs::read_to_string(c.paths.supervisor_log()).unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no diagnostics");
                return Ready::Failed(
                    125,
                    format!("the container's supervisor exited during start: {last}"),
                );
            }
        }
        let line = line.trim_end();
        if line == "listening" {
            return Ready::Listening;
        }
        if line == "started" {
            return Ready::Started;
        }
        let rest = line.strip_prefix("failed ").unwrap_or(line);
        let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        Ready::Failed(code.parse().unwrap_or(125), msg.to_string())
    }
}

/// Start the supervisor of `c` as a detached process. With `attach_wait`
/// it holds the container until a client attaches.
pub fn launch(c: &Container, store: &Path, state: &Path, attach_wait: bool) -> Result<Launched> {
    let (rx, tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the ready pipe")?;
    // The write end must survive exec in the supervisor.
    nix::fcntl::fcntl(
        tx.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .context("passing the ready pipe")?;
    let log = File::create(c.paths.supervisor_log())
        .with_context(|| format!("creating {}", c.paths.supervisor_log().display()))?;
    let exe = std::env::current_exe().context("finding the strata binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--store")
        .arg(store)
        .arg("--state")
        .arg(state)
        .arg("__supervise")
        .arg(&c.config.id)
        .arg("--ready-fd")
        .arg(tx.as_raw_fd().to_string());
    if attach_wait {
        cmd.arg("--attach-wait");
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    let child = cmd.spawn().context("starting the container's supervisor")?;
    drop(tx);
    Ok(Launched {
        ready: BufReader::new(File::from(rx)),
        pid: child.id(),
    })
}

struct Inner {
    pid: i32,
    exits: u64,
    last_exit: i32,
    manual_stop: bool,
    finished: bool,
    attached: usize,
    stdin: Option<File>,
    tty: Option<File>,
    restart: RestartPolicy,
}

struct Shared {
    inner: Mutex<Inner>,
    cond: Condvar,
    clients: Mutex<Vec<UnixStream>>,
    log: Mutex<Option<logs::Writer>>,
    stop_signal: Signal,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn broadcast(&self, kind: u8, data: &[u8]) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.retain_mut(|s| control::write_frame(s, kind, data).is_ok());
    }

    fn output(&self, stream: &str, data: &[u8]) {
        if let Some(w) = self.log.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            if let Err(e) = w.write(stream, data) {
                tracing::warn!("writing the container log: {e:#}");
            }
        }
        self.broadcast(
            if stream == "stderr" {
                frame::STDERR
            } else {
                frame::STDOUT
            },
            data,
        );
    }
}

/// Options of `strata __supervise`.
pub struct Options {
    /// Store directory.
    pub store: PathBuf,
    /// State directory.
    pub state: PathBuf,
    /// Container id.
    pub id: String,
    /// Descriptor of the ready pipe.
    pub ready_fd: Option<RawFd>,
    /// Hold the start until a client attaches.
    pub attach_wait: bool,
}

/// Report lines to the CLI that launched us (ignored once it is gone).
struct ReadyPipe(Option<File>);

impl ReadyPipe {
    fn send(&mut self, line: &str) {
        if let Some(f) = self.0.as_mut() {
            if writeln!(f, "{line}").is_err() {
                self.0 = None;
            }
        }
    }
}

/// Entry point of `strata __supervise`.
pub fn main(opts: Options) -> Result<()> {
    let _ = nix::unistd::setsid();
    let mut ready = ReadyPipe(opts.ready_fd.map(|fd| File::from(sys::owned_fd(fd))));
    let mut c = Container::load(&opts.store, &opts.state, &opts.id)?;
    let result = supervise(&mut c, &opts, &mut ready);
    if let Err(e) = &result {
        ready.send(&format!(
            "failed 125 {}",
            format!("{e:#}").replace('\n', " ")
        ));
        let msg = format!("{e:#}");
        let _ = c.update_state(|s| {
            s.status = if s.started_nanos == 0 {
                Status::Created
            } else {
                Status::Exited
            };
            s.error = msg.clone();
            s.pid = 0;
            s.supervisor_pid = 0;
        });
    }
    result
}

fn supervise(c: &mut Container, opts: &Options, ready: &mut ReadyPipe) -> Result<()> {
    fs::create_dir_all(&c.paths.run)
        .with_context(|| format!("creating {}", c.paths.run.display()))?;
    let sock = c.paths.socket();
    let _ = fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).with_context(|| format!("listening on {}", sock.display()))?;
    let me = std::process::id() as i32;
    let start = crate::container::process_start_time(me).unwrap_or(0);
    c.update_state(|s| {
        s.supervisor_pid = me;
        s.supervisor_start = start;
        s.error.clear();
    })?;
    let stop_signal = signals::parse(if c.config.stop_signal.is_empty() {
        "SIGTERM"
    } else {
        &c.config.stop_signal
    })?;
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            pid: 0,
            exits: 0,
            last_exit: 0,
            manual_stop: false,
            finished: false,
            attached: 0,
            stdin: None,
            tty: None,
            restart: c.config.restart.clone(),
        }),
        cond: Condvar::new(),
        clients: Mutex::new(Vec::new()),
        log: Mutex::new(Some(logs::Writer::open(
            &c.paths.log(),
            c.config.log.clone(),
        )?)),
        stop_signal,
    });
    {
        let shared = shared.clone();
        let container = c.clone();
        std::thread::spawn(move || accept_loop(listener, shared, container));
    }
    ready.send("listening");

    let outcome = run_container(c, opts, &shared, ready);

    // Tear down, then let waiters and attached clients go.
    release(c, &opts.store, &opts.state);
    let final_code = shared.lock().last_exit;
    if c.config.auto_remove {
        let _ = remove_files(c, true);
    } else {
        let _ = c.update_state(|s| {
            if s.status != Status::Created {
                s.status = Status::Exited;
            }
            s.pid = 0;
            s.supervisor_pid = 0;
        });
    }
    {
        let mut inner = shared.lock();
        inner.finished = true;
        shared.cond.notify_all();
    }
    shared.broadcast(frame::EXIT, &final_code.to_be_bytes());
    // Give repliers a moment to write before the process exits.
    std::thread::sleep(Duration::from_millis(50));
    let _ = fs::remove_file(&sock);
    let _ = fs::remove_dir(&c.paths.run);
    outcome
}

fn run_container(
    c: &mut Container,
    opts: &Options,
    shared: &Arc<Shared>,
    ready: &mut ReadyPipe,
) -> Result<()> {
    // Without root: a user namespace, and ids in the union to match it.
    let userns = rootless::active().then(UserNs::detect);
    let root = RootMount::mount(c, &opts.store, userns.as_ref())?;
    let cg: Option<Box<dyn CgroupManager>> = if cgroup::available() {
        let cg = cgroup::for_container(&c.config.id);
        cg.create(&c.config.resources)?;
        Some(cg)
    } else {
        tracing::warn!("cgroups are not writable here: running without resource limits");
        None
    };
    let mut mounts = volumes::prepare(c, &opts.store, root.path())?;
    mounts.sort_by_key(|m| m.target.len());

    if opts.attach_wait {
        let mut inner = shared.lock();
        let deadline = Instant::now() + Duration::from_secs(60);
        while inner.attached == 0 && Instant::now() < deadline {
            inner = shared
                .cond
                .wait_timeout(inner, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    let mut delay: Option<Duration> = None;
    let mut first = true;
    loop {
        let started_at = Instant::now();
        let run = start_once(
            c,
            opts,
            shared,
            root.path(),
            cg.as_deref(),
            &mounts,
            userns.as_ref(),
        );
        let (pid, pumps) = match run {
            Ok(v) => v,
            Err(StartError::Exec(code, msg)) => {
                if first {
                    ready.send(&format!("failed {code} {}", msg.replace('\n', " ")));
                }
                shared.output("stderr", format!("strata: {msg}\n").as_bytes());
                let now = timefmt::now_nanos();
                c.update_state(|s| {
                    s.status = Status::Exited;
                    s.exit_code = code;
                    s.error = msg.clone();
                    s.pid = 0;
                    s.finished_nanos = now;
                    if s.started_nanos == 0 {
                        s.started_nanos = now;
                    }
                })?;
                let mut inner = shared.lock();
                inner.last_exit = code;
                inner.exits += 1;
                shared.cond.notify_all();
                return Ok(());
            }
            Err(StartError::Other(e)) => return Err(e),
        };
        if first {
            ready.send("started");
            first = false;
        }
        let status = wait_for(pid);
        for p in pumps {
            let _ = p.join();
        }
        netglue::detach(c, &opts.state);
        let code = match status {
            WaitStatus::Exited(_, code) => code,
            WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
            _ => 255,
        };
        let oom = cg.as_ref().and_then(|g| g.oom_kills().ok()).unwrap_or(0) > 0;
        let ran_for = started_at.elapsed();
        let (manual, policy) = {
            let mut inner = shared.lock();
            inner.pid = 0;
            inner.stdin = None;
            inner.tty = None;
            (inner.manual_stop, inner.restart.clone())
        };
        let restarts_done = c.state.restart_count;
        let again = restart::should_restart(
            &policy,
            code,
            restarts_done,
            manual || c.state.manually_stopped,
        );
        let now = timefmt::now_nanos();
        c.update_state(|s| {
            s.status = if again {
                Status::Restarting
            } else {
                Status::Exited
            };
            s.exit_code = code;
            s.oom_killed = oom;
            s.pid = 0;
            s.finished_nanos = now;
        })?;
        {
            let mut inner = shared.lock();
            inner.last_exit = code;
            inner.exits += 1;
            shared.cond.notify_all();
        }
        if !again {
            return Ok(());
        }
        // Attached clients see one run, as with docker.
        shared.broadcast(frame::EXIT, &code.to_be_bytes());
        shared
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let d = restart::next_delay(delay, ran_for);
        delay = Some(d);
        let deadline = Instant::now() + d;
        let mut inner = shared.lock();
        while !inner.manual_stop && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            inner = shared
                .cond
                .wait_timeout(inner, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if inner.manual_stop {
            drop(inner);
            c.update_state(|s| s.status = Status::Exited)?;
            return Ok(());
        }
        drop(inner);
        if let Some(g) = &cg {
            // A fresh OOM count for the next run: v1 cannot reset it, so
            // recreate the group.
            let _ = g.destroy();
            g.create(&c.config.resources)?;
        }
        c.update_state(|s| s.restart_count += 1)?;
    }
}

enum StartError {
    Exec(i32, String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// One start: stdio, clone, id maps, cgroup, network, go, and the exec
/// outcome.
fn start_once(
    c: &mut Container,
    opts: &Options,
    shared: &Arc<Shared>,
    root: &Path,
    cg: Option<&dyn CgroupManager>,
    mounts: &[rootfs::PreparedMount],
    userns: Option<&UserNs>,
) -> Result<(Pid, Vec<std::thread::JoinHandle<()>>), StartError> {
    let cfg = &c.config;
    let net = netglue::mode(cfg)?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    let own_netns = net.own_netns();
    if own_netns {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if userns.is_some() {
        // Cloned together, the other namespaces belong to the new user
        // namespace, where the init gets its capabilities.
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let mut pumps = Vec::new();
    let mut keep_for_child: Vec<OwnedFd> = Vec::new();
    let console;
    let stdio: [RawFd; 3];
    if cfg.tty {
        let pty = nix::pty::openpty(None, None).context("allocating a pseudo terminal")?;
        let _ = sys::set_winsize(pty.master.as_fd(), 24, 80);
        console =
            Some(nix::unistd::ttyname(pty.slave.as_fd()).context("naming the pseudo terminal")?);
        let master = File::from(pty.master);
        stdio = [pty.slave.as_raw_fd(); 3];
        keep_for_child.push(pty.slave);
        {
            let mut inner = shared.lock();
            if cfg.interactive {
                inner.stdin = Some(master.try_clone().context("duplicating the pty")?);
            }
            inner.tty = Some(master.try_clone().context("duplicating the pty")?);
        }
        pumps.push(pump(shared.clone(), master, "stdout"));
    } else {
        console = None;
        let (out_r, out_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the stdout pipe")?;
        let (err_r, err_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the stderr pipe")?;
        let stdin_fd = if cfg.interactive {
            let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .context("creating the stdin pipe")?;
            shared.lock().stdin = Some(File::from(in_w));
            let fd = in_r.as_raw_fd();
            keep_for_child.push(in_r);
            fd
        } else {
            null.as_raw_fd()
        };
        stdio = [stdin_fd, out_w.as_raw_fd(), err_w.as_raw_fd()];
        keep_for_child.push(out_w);
        keep_for_child.push(err_w);
        pumps.push(pump(shared.clone(), File::from(out_r), "stdout"));
        pumps.push(pump(shared.clone(), File::from(err_r), "stderr"));
    }

    let spawned = init::spawn(flags, stdio)?;
    drop(keep_for_child);
    let pid = spawned.pid;
    let result = (|| -> Result<InitConfig> {
        if let Some(u) = userns {
            u.write(pid.as_raw())
                .context("writing the id maps of the container's user namespace")?;
        }
        if let Some(g) = cg {
            g.add_process(pid.as_raw())?;
        }
        let link_env = netglue::attach(c, &opts.state, pid.as_raw(), &net)?;
        let mut cfg = build_init_config(
            c,
            root,
            mounts,
            own_netns,
            console.clone(),
            link_env,
            cg.is_some(),
            userns.is_some(),
        )?;
        cfg.join_netns = netglue::join_path(c, &opts.store, &opts.state)?;
        Ok(cfg)
    })();
    let init_cfg = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(StartError::Other(e));
        }
    };
    {
        let mut tx = spawned.config_tx;
        let json = serde_json::to_vec(&init_cfg).context("encoding the init config")?;
        if let Err(e) = tx.write_all(&json) {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(StartError::Other(anyhow::anyhow!(
                "handing the config to the container init: {e}"
            )));
        }
    }
    let mut outcome = String::new();
    let mut err_rx = spawned.error_rx;
    let _ = err_rx.read_to_string(&mut outcome);
    if !outcome.is_empty() {
        let _ = waitpid(pid, None);
        for p in pumps {
            let _ = p.join();
        }
        netglue::detach(c, &opts.state);
        let (code, msg) = outcome.split_once(' ').unwrap_or((&outcome, ""));
        return Err(StartError::Exec(
            code.parse().unwrap_or(125),
            msg.to_string(),
        ));
    }
    shared.lock().pid = pid.as_raw();
    let now = timefmt::now_nanos();
    c.update_state(|s| {
        s.status = Status::Running;
        s.pid = pid.as_raw();
        s.started_nanos = now;
        s.oom_killed = false;
        s.error.clear();
    })?;
    Ok((pid, pumps))
}

#[allow(clippy::too_many_arguments)]
fn build_init_config(
    c: &Container,
    root: &Path,
    mounts: &[rootfs::PreparedMount],
    own_netns: bool,
    console: Option<PathBuf>,
    link_env: Vec<String>,
    cgroupns: bool,
    userns: bool,
) -> Result<InitConfig> {
    let cfg = &c.config;
    let etc = crate::etcfiles::write(c)?;
    let caps = capabilities::effective_set(cfg.privileged, &cfg.cap_add, &cfg.cap_drop)?;
    let mut env = cfg.env.clone();
    env.extend(link_env);
    let seccomp = if cfg.privileged {
        crate::container::SeccompProfile::Unconfined
    } else {
        cfg.seccomp.clone()
    };
    Ok(InitConfig {
        plan: rootfs::Plan {
            root: root.to_path_buf(),
            read_only: cfg.read_only,
            privileged: cfg.privileged,
            mounts: mounts.to_vec(),
            etc_files: etc,
            // mknod is refused in a user namespace: bind the host's nodes.
            mknod: !userns,
            own_netns,
        },
        hostname: Some(cfg.hostname.clone()),
        own_netns,
        cgroupns,
        process: ProcessSpec {
            argv: cfg.argv(),
            env,
            cwd: cfg.working_dir.clone(),
            user: cfg.user.clone(),
            caps,
            seccomp,
            no_new_privs: !cfg.privileged,
            tty: cfg.tty,
            groups_add: Vec::new(),
            oci_caps: None,
        },
        reaper: cfg.init,
        console,
        join_netns: None,
        userns,
    })
}

fn pump(shared: Arc<Shared>, mut src: File, stream: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => shared.output(stream, &buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EIO: the pty's last slave closed.
                Err(_) => break,
            }
        }
    })
}

fn wait_for(pid: Pid) -> WaitStatus {
    loop {
        match waitpid(pid, None) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return s,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return WaitStatus::Exited(pid, 255),
        }
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>, c: Container) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let shared = shared.clone();
        let c = c.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(conn, &shared, &c) {
                tracing::debug!("control connection: {e:#}");
            }
        });
    }
}

fn serve(mut conn: UnixStream, shared: &Arc<Shared>, c: &Container) -> Result<()> {
    let (req, mut reader) = control::read_request(&conn)?;
    match req {
        Request::Attach { stdin } => {
            conn.set_write_timeout(Some(Duration::from_secs(10)))?;
            {
                let finished = shared.lock().finished;
                if finished {
                    let code = shared.lock().last_exit;
                    control::write_frame(&mut conn, frame::EXIT, &code.to_be_bytes())?;
                    return Ok(());
                }
            }
            shared
                .clients
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn.try_clone()?);
            {
                let mut inner = shared.lock();
                inner.attached += 1;
                shared.cond.notify_all();
            }
            if stdin {
                forward_stdin(&mut reader, shared, c.config.tty);
            }
            Ok(())
        }
        Request::Stop { timeout_secs } => {
            let exits_before = mark_manual_stop(shared, c)?;
            let pid = shared.lock().pid;
            if pid > 0 {
                let _ = kill(Pid::from_raw(pid), shared.stop_signal);
                let shared2 = shared.clone();
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
                    let mut inner = shared2.lock();
                    while inner.exits == exits_before
                        && !inner.finished
                        && Instant::now() < deadline
                    {
                        let left = deadline.saturating_duration_since(Instant::now());
                        inner = shared2
                            .cond
                            .wait_timeout(inner, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    if inner.exits == exits_before && inner.pid > 0 {
                        let _ = kill(Pid::from_raw(inner.pid), Signal::SIGKILL);
                    }
                });
            }
            let code = wait_finished(shared);
            control::send_reply(
                &mut conn,
                &Reply {
                    ok: true,
                    exit_code: code,
                    error: String::new(),
                },
            )
        }
        Request::Kill { signal } => {
            let sig =
                Signal::try_from(signal).map_err(|_| anyhow::anyhow!("invalid signal {signal}"))?;
            let pid = shared.lock().pid;
            if pid <= 0 {
                return control::send_reply(
                    &mut conn,
                    &Reply {
                        ok: false,
                        exit_code: 0,
                        error: "container is not running".into(),
                    },
                );
            }
            if matches!(sig, Signal::SIGKILL | Signal::SIGTERM) || sig == shared.stop_signal {
                mark_manual_stop(shared, c)?;
            }
            let r = kill(Pid::from_raw(pid), sig);
            control::send_reply(
                &mut conn,
                &Reply {
                    ok: r.is_ok(),
                    exit_code: 0,
                    error: r.err().map(|e| e.to_string()).unwrap_or_default(),
                },
            )
        }
        Request::Wait => {
            let mut inner = shared.lock();
            let seen = inner.exits;
            while inner.exits == seen && !inner.finished {
                inner = shared.cond.wait(inner).unwrap_or_else(|p| p.into_inner());
            }
            let code = inner.last_exit;
            drop(inner);
            control::send_reply(
                &mut conn,
                &Reply {
                    ok: true,
                    exit_code: code,
                    error: String::new(),
                },
            )
        }
        Request::Update { restart } => {
            shared.lock().restart = restart;
            control::send_reply(
                &mut conn,
                &Reply {
                    ok: true,
                    ..Default::default()
                },
            )
        }
    }
}

/// Record a manual stop (cancels restarts); returns the exit count seen.
fn mark_manual_stop(shared: &Arc<Shared>, c: &Container) -> Result<u64> {
    let exits = {
        let mut inner = shared.lock();
        inner.manual_stop = true;
        shared.cond.notify_all();
        inner.exits
    };
    let mut c = c.clone();
    c.update_state(|s| s.manually_stopped = true)?;
    Ok(exits)
}

fn wait_finished(shared: &Arc<Shared>) -> i32 {
    let mut inner = shared.lock();
    while !inner.finished {
        inner = shared.cond.wait(inner).unwrap_or_else(|p| p.into_inner());
    }
    inner.last_exit
}

fn forward_stdin(reader: &mut BufReader<UnixStream>, shared: &Arc<Shared>, tty: bool) {
    loop {
        match control::read_frame(reader) {
            Ok(Some((frame::STDIN, data))) => {
                let mut inner = shared.lock();
                if let Some(w) = inner.stdin.as_mut() {
                    if w.write_all(&data).is_err() {
                        inner.stdin = None;
                    }
                }
            }
            Ok(Some((frame::RESIZE, data))) if data.len() == 4 => {
                let rows = u16::from_be_bytes([data[0], data[1]]);
                let cols = u16::from_be_bytes([data[2], data[3]]);
                if let Some(t) = shared.lock().tty.as_ref() {
                    let _ = sys::set_winsize(t.as_fd(), rows, cols);
                }
            }
            Ok(Some((frame::STDIN_EOF, _))) | Ok(None) | Err(_) => {
                if !tty {
                    shared.lock().stdin = None;
                }
                return;
            }
            Ok(Some(_)) => {}
        }
    }
}

/// Release what a container holds while it runs: the rootfs mount, the
/// cgroup, the network attachment, the runtime dir. Safe to call again and
/// after its supervisor died.
pub fn release(c: &Container, _store: &Path, state: &Path) {
    crate::rootmount::detach_stale(&c.paths.rootfs());
    if cgroup::available() {
        let _ = cgroup::for_container(&c.config.id).destroy();
    }
    netglue::detach(c, state);
}

/// Delete a container's files (and its anonymous volumes with `volumes`).
pub fn remove_files(c: &Container, volumes: bool) -> Result<()> {
    if volumes {
        crate::volumes::remove_anonymous(c)?;
    }
    let _ = fs::remove_dir_all(&c.paths.run);
    fs::remove_dir_all(&c.paths.dir).with_context(|| format!("removing {}", c.paths.dir.display()))
}

/// Ask the supervisor of a live container to stop it; falls back to
/// killing the init directly when the supervisor does not answer.
pub fn stop(c: &Container, timeout_secs: u64) -> Result<i32> {
    if !c.is_live() {
        return Ok(c.state.exit_code);
    }
    match control::request(&c.paths.socket(), &Request::Stop { timeout_secs }) {
        Ok(r) if r.ok => Ok(r.exit_code),
        Ok(r) => bail!("stopping {}: {}", c.config.name, r.error),
        Err(e) => {
            if c.state.pid > 0 {
                let _ = kill(Pid::from_raw(c.state.pid), Signal::SIGKILL);
            }
            Err(e)
        }
    }
}

/// Wait until the supervisor process `pid` has gone (after a final reply).
pub fn wait_gone(c: &Container) {
    for _ in 0..200 {
        if !c.supervisor_alive() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Read a host file, empty when missing.
pub fn read_or_empty(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}
