//! Container lifecycle operations behind the CLI: create, start (attached
//! or not), stop, kill, remove, wait, rename, and the image side of create.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::container::{
    self, Container, ContainerConfig, ContainerState, MountSpec, Paths, Status,
};
use crate::control::{self, Request};
use crate::supervisor::{self, Ready};
use crate::{terminal, timefmt};

/// Where things live.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Store directory.
    pub store: std::path::PathBuf,
    /// State directory.
    pub state: std::path::PathBuf,
}

impl Dirs {
    /// Make both directories absolute (supervisors do not share our cwd).
    /// Without root the state directory is made private to the user (mode
    /// 0700: it may sit in a shared /tmp and holds control sockets).
    pub fn new(store: &Path, state: &Path) -> Result<Self> {
        fs::create_dir_all(store).with_context(|| format!("creating store {}", store.display()))?;
        fs::create_dir_all(state)
            .with_context(|| format!("creating state dir {}", state.display()))?;
        if crate::rootless::active() {
            private_dir(state)?;
        }
        Ok(Self {
            store: fs::canonicalize(store)?,
            state: fs::canonicalize(state)?,
        })
    }
}

/// Give `dir` mode 0700 when it is ours and others may enter it.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if md.uid() == nix::unistd::geteuid().as_raw() && md.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (mode 0700)", dir.display()))?;
    }
    Ok(())
}

/// Fill image defaults into `cfg` from the store (unless `--rootfs`).
pub fn apply_image(
    dirs: &Dirs,
    cfg: &mut ContainerConfig,
    entrypoint_set: bool,
    cmd_given: bool,
) -> Result<()> {
    if cfg.rootfs_dir.is_some() {
        return Ok(());
    }
    let store = layers_format::Store::open(&dirs.store)
        .with_context(|| format!("opening the store {}", dirs.store.display()))?;
    let img = store.resolve_image(&cfg.image).with_context(|| {
        format!(
            "unable to find image {:?} (import or pull it first)",
            cfg.image
        )
    })?;
    let ic = &img.config;
    cfg.image_id = Some(img.id.to_string());
    cfg.layers = img.layers.iter().map(|l| l.to_string()).collect();
    if !entrypoint_set {
        cfg.entrypoint = ic.entrypoint.clone().unwrap_or_default();
    }
    if !cmd_given && (!entrypoint_set || cfg.entrypoint.is_empty()) {
        cfg.cmd = ic.cmd.clone().unwrap_or_default();
    }
    let mut env = ic.env.clone();
    for e in &cfg.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
    cfg.env = env;
    if cfg.working_dir.is_empty() {
        cfg.working_dir = ic.working_dir.clone().unwrap_or_default();
    }
    if cfg.user.is_empty() {
        cfg.user = ic.user.clone().unwrap_or_default();
    }
    if cfg.stop_signal.is_empty() {
        cfg.stop_signal = ic.stop_signal.clone().unwrap_or_default();
    }
    cfg.network.exposed.extend(ic.exposed_ports.iter().cloned());
    for v in &ic.volumes {
        let target = v.trim_end_matches('/').to_string();
        if !cfg.mounts.iter().any(|m| m.target == target) {
            cfg.mounts.push(MountSpec {
                kind: "volume".into(),
                source: String::new(),
                target,
                read_only: false,
                options: String::new(),
                anonymous: true,
            });
        }
    }
    Ok(())
}

/// Create a container from a complete config: checks, id, name, dirs.
/// Nothing is left behind when it fails.
pub fn create(dirs: &Dirs, mut cfg: ContainerConfig) -> Result<Container> {
    cfg.id = container::new_id()?;
    if cfg.name.is_empty() {
        cfg.name = container::random_name(&cfg.id);
    } else {
        container::validate_name(&cfg.name)?;
    }
    if cfg.hostname.is_empty() {
        cfg.hostname = cfg.id[..12].to_string();
    }
    if cfg.argv().is_empty() {
        bail!(
            "no command specified: give one after the image (the image has no CMD or ENTRYPOINT)"
        );
    }
    if crate::rootless::active() {
        if cfg.network.mode.is_empty() {
            cfg.network.mode = crate::rootless::DEFAULT_NETWORK.into();
        }
        crate::rootless::check_config(&cfg)?;
    }
    crate::netglue::mode(&cfg)?;
    crate::capabilities::effective_set(cfg.privileged, &cfg.cap_add, &cfg.cap_drop)?;
    // Anonymous volumes get their names now so restarts reuse them.
    for m in cfg.mounts.iter_mut() {
        if m.kind == "volume" && m.source.is_empty() {
            m.source = container::new_id()?;
            m.anonymous = true;
        }
    }
    resolve_volumes_from(dirs, &mut cfg)?;
    cfg.created_nanos = timefmt::now_nanos();
    let root = container::containers_root(&dirs.store);
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = container::lock_file(&root.join(".lock"))?;
    if let Some(other) = container::list(&dirs.store, &dirs.state)?
        .into_iter()
        .find(|c| c.config.name == cfg.name)
    {
        bail!(
            "the container name {:?} is already in use by container {}: remove or rename that container first",
            cfg.name,
            other.short_id()
        );
    }
    let paths = Paths::new(&dirs.store, &dirs.state, &cfg.id);
    let result = (|| -> Result<Container> {
        fs::create_dir_all(paths.upper())?;
        fs::create_dir_all(paths.work())?;
        if let Some(img) = &cfg.image_id {
            fs::write(paths.dir.join("image-id"), img)?;
        }
        let c = Container {
            config: cfg,
            state: ContainerState::default(),
            paths: paths.clone(),
        };
        c.save_config()?;
        container::write_atomic(&c.paths.state(), &serde_json::to_vec_pretty(&c.state)?)?;
        Ok(c)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&paths.dir);
    }
    result
}

fn resolve_volumes_from(dirs: &Dirs, cfg: &mut ContainerConfig) -> Result<()> {
    for spec in cfg.volumes_from.clone() {
        let (name, mode) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
        let force_ro = match mode {
            "" | "rw" => None,
            "ro" => Some(true),
            other => bail!("invalid --volumes-from mode {other:?}: use ro or rw"),
        };
        let src = container::find(&dirs.store, &dirs.state, name)?;
        for m in &src.config.mounts {
            if m.kind == "tmpfs" || cfg.mounts.iter().any(|x| x.target == m.target) {
                continue;
            }
            let mut m = m.clone();
            // Shared volumes belong to their creator: `rm -v` here keeps them.
            m.anonymous = false;
            if let Some(ro) = force_ro {
                m.read_only = ro;
            }
            cfg.mounts.push(m);
        }
    }
    Ok(())
}

/// Start `c`. With `attach`, stream its output (and stdin when
/// `interactive`) and return its exit code; else return 0 once it runs.
pub fn start(dirs: &Dirs, c: &mut Container, attach: bool) -> Result<i32> {
    if c.is_live() {
        if attach {
            return attach_to(c);
        }
        return Ok(0);
    }
    crate::supervisor::release(c, &dirs.store, &dirs.state);
    if crate::rootless::active() {
        for w in crate::rootless::warnings() {
            eprintln!("strata: warning: {w}");
        }
    }
    c.update_state(|s| {
        s.restart_count = 0;
        s.manually_stopped = false;
        s.stopped_by_shutdown = false;
        s.error.clear();
    })?;
    let mut sup = supervisor::launch(c, &dirs.store, &dirs.state, attach)?;
    match sup.next(c) {
        Ready::Listening => {}
        Ready::Failed(code, msg) => return fail_start(c, sup.pid, code, &msg),
        Ready::Started => {}
    }
    let stream = if attach {
        Some(control::attach(&c.paths.socket(), c.config.interactive)?)
    } else {
        None
    };
    match sup.next(c) {
        Ready::Started | Ready::Listening => {}
        Ready::Failed(code, msg) => {
            if let Some(s) = stream {
                // Drain whatever the container printed before failing.
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            return fail_start(c, sup.pid, code, &msg);
        }
    }
    let Some(stream) = stream else { return Ok(0) };
    let code = terminal::relay_attach(stream, c.config.interactive, c.config.tty)?;
    c.reload()?;
    Ok(code.unwrap_or(c.state.exit_code))
}

fn fail_start(c: &Container, supervisor_pid: u32, code: i32, msg: &str) -> Result<i32> {
    eprintln!("strata: cannot start container {}: {msg}", c.config.name);
    if c.config.auto_remove {
        // With --rm the supervisor removes the container as it exits;
        // nothing may be left when we return. It is our child: reap it.
        wait_child_exit(supervisor_pid, std::time::Duration::from_secs(10));
    }
    Ok(code)
}

/// Wait (up to `limit`) for our child `pid` to exit, and reap it.
fn wait_child_exit(pid: u32, limit: std::time::Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let Ok(raw) = i32::try_from(pid) else { return };
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        match waitpid(nix::unistd::Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            _ => return,
        }
    }
}

/// Attach to a running container's output until it exits.
pub fn attach_to(c: &Container) -> Result<i32> {
    let stream = control::attach(&c.paths.socket(), c.config.interactive)?;
    let code = terminal::relay_attach(stream, c.config.interactive, c.config.tty)?;
    Ok(code.unwrap_or(0))
}

/// Stop with the stop signal, SIGKILL after `timeout_secs`.
pub fn stop(c: &Container, timeout_secs: Option<u64>) -> Result<()> {
    if !c.is_live() {
        return Ok(());
    }
    let t = timeout_secs.unwrap_or(c.config.stop_timeout_secs);
    supervisor::stop(c, t)?;
    supervisor::wait_gone(c);
    Ok(())
}

/// Send `signal` to the container's init.
pub fn kill(c: &Container, signal: nix::sys::signal::Signal) -> Result<()> {
    if !c.is_live() {
        bail!("container {} is not running", c.config.name);
    }
    let r = control::request(
        &c.paths.socket(),
        &Request::Kill {
            signal: signal as i32,
        },
    )?;
    if !r.ok {
        bail!("killing {}: {}", c.config.name, r.error);
    }
    Ok(())
}

/// Remove a container (refused while running unless `force`).
pub fn remove(dirs: &Dirs, c: &Container, force: bool, volumes: bool) -> Result<()> {
    if c.is_live() {
        if !force {
            bail!(
                "cannot remove running container {}: stop it first or use rm -f",
                c.config.name
            );
        }
        if let Err(e) = kill(c, nix::sys::signal::Signal::SIGKILL) {
            tracing::debug!("kill before rm: {e:#}");
        }
        let mut c2 = c.clone();
        for _ in 0..500 {
            if !c2.supervisor_alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = c2.reload();
        if c2.supervisor_alive() {
            bail!(
                "container {} did not stop; its supervisor (pid {}) still runs",
                c.config.name,
                c2.state.supervisor_pid
            );
        }
    }
    supervisor::release(c, &dirs.store, &dirs.state);
    if !c.paths.dir.exists() {
        return Ok(()); // --rm got there first
    }
    supervisor::remove_files(c, volumes)
}

/// Wait for the container to stop; returns its exit code.
pub fn wait(c: &Container) -> Result<i32> {
    let mut c = c.clone();
    if c.is_live() {
        if let Ok(r) = control::request(&c.paths.socket(), &Request::Wait) {
            if matches!(c.state.status, Status::Running | Status::Restarting) {
                let _ = c.reload();
                if c.state.status == Status::Restarting {
                    return Ok(r.exit_code);
                }
            }
            return Ok(r.exit_code);
        }
        while c.supervisor_alive() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        c.reload()?;
    }
    Ok(c.state.exit_code)
}

/// Rename a container.
pub fn rename(dirs: &Dirs, c: &mut Container, new_name: &str) -> Result<()> {
    container::validate_name(new_name)?;
    let root = container::containers_root(&dirs.store);
    let _lock = container::lock_file(&root.join(".lock"))?;
    if container::list(&dirs.store, &dirs.state)?
        .iter()
        .any(|o| o.config.name == new_name)
    {
        bail!("the container name {new_name:?} is already in use");
    }
    c.config.name = new_name.to_string();
    c.save_config()
}

/// Disk bytes used under `dir` (allocated blocks, each inode once,
/// directories included): what `du -sB1 DIR` prints.
pub fn dir_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = fs::symlink_metadata(dir)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if md.is_dir() {
                stack.push(e.path());
                total += md.blocks() * 512;
            } else if seen.insert((md.dev(), md.ino())) {
                total += md.blocks() * 512;
            }
        }
    }
    total
}
