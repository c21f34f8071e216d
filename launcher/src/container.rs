//! A container's configuration and state, and where they live on disk.
//!
//! Durable files (config, state, logs, the rw layer, the init-layer files)
//! live in `<store>/containers/<id>/` so they survive a host restart and the
//! store's gc sees `image-id` as a root. Runtime files (the supervisor's
//! control socket and the rootfs mount point) live in `<state>/<id16>/`.
//! `state.json` is rewritten atomically (temp file + rename) under an
//! advisory lock, so a reader never sees half a file.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::timefmt;

/// Resource limits, as given on the command line (docker's units).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    /// Memory limit in bytes (`--memory`), 0 for none.
    pub memory_bytes: u64,
    /// Memory + swap limit in bytes (`--memory-swap`), 0 for none, -1 unlimited.
    pub memory_swap_bytes: i64,
    /// CPU limit in billionths of a CPU (`--cpus`), 0 for none.
    pub nano_cpus: u64,
    /// Relative CPU weight (`--cpu-shares`), 0 for the default.
    pub cpu_shares: u64,
    /// CPUs allowed (`--cpuset-cpus`), empty for all.
    pub cpuset_cpus: String,
    /// Maximum number of processes (`--pids-limit`), 0 for none.
    pub pids_limit: i64,
    /// Block IO weight 10-1000 (`--blkio-weight`), 0 for the default.
    pub blkio_weight: u16,
    /// Read rate limits as (device path, bytes per second).
    pub device_read_bps: Vec<(String, u64)>,
}

/// The seccomp profile a container runs under.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub enum SeccompProfile {
    /// The built-in docker-like default filter.
    #[default]
    Default,
    /// No filter (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// A docker-format JSON profile, stored inline.
    Custom(String),
}

/// One mount requested with `-v`, `--mount` or `--tmpfs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountSpec {
    /// "bind", "volume" or "tmpfs".
    pub kind: String,
    /// Host path (bind), volume name (volume, empty while anonymous) or "".
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// tmpfs options ("size=64m,mode=1777") or "".
    pub options: String,
    /// An anonymous volume (removed by `rm -v`).
    #[serde(default)]
    pub anonymous: bool,
}

/// Restart policy (`--restart`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RestartPolicy {
    /// "no", "always", "unless-stopped" or "on-failure".
    pub name: String,
    /// For on-failure: the most restarts, 0 for unlimited.
    pub maximum_retry_count: u32,
}

/// Network options handed to the network layer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NetworkOptions {
    /// "bridge" (default), "none", "host", "container:NAME" or a network name.
    pub mode: String,
    /// `-p` specs as given.
    pub publish: Vec<String>,
    /// `-P`.
    pub publish_all: bool,
    /// `--link NAME[:ALIAS]`.
    pub links: Vec<String>,
    /// Ports the image exposes ("80/tcp").
    pub exposed: Vec<String>,
    /// `--ip`: a fixed address on a user-defined network.
    #[serde(default)]
    pub ip: Option<String>,
    /// `--network-alias`: extra names on a user-defined network.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Log rotation options (`--log-opt max-size=...,max-file=...`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogOptions {
    /// Rotate when the current file reaches this many bytes.
    pub max_size_bytes: u64,
    /// Keep at most this many files (current + rotated).
    pub max_files: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            max_size_bytes: 10 * 1024 * 1024,
            max_files: 3,
        }
    }
}

/// Everything fixed when the container is created.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// 64 hex digits.
    pub id: String,
    /// Unique name, without a leading slash.
    pub name: String,
    /// The image as the user named it (or the rootfs directory).
    pub image: String,
    /// The store's image id, when the rootfs is an image.
    pub image_id: Option<String>,
    /// Store layer ids, base first.
    pub layers: Vec<String>,
    /// A plain directory used as the rootfs instead of an image.
    pub rootfs_dir: Option<PathBuf>,
    /// Entrypoint in effect.
    pub entrypoint: Vec<String>,
    /// Command in effect.
    pub cmd: Vec<String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub working_dir: String,
    /// `user[:group]` to run as, empty for root.
    pub user: String,
    /// Host name inside the container.
    pub hostname: String,
    /// Allocate a pseudo terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// Signal `stop` sends first.
    pub stop_signal: String,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout_secs: u64,
    /// Mount the rootfs read-only.
    pub read_only: bool,
    /// Run a reaper as pid 1.
    pub init: bool,
    /// All capabilities, no seccomp, no masked paths, all devices.
    pub privileged: bool,
    /// Capabilities added to the default set.
    pub cap_add: Vec<String>,
    /// Capabilities dropped from the default set.
    pub cap_drop: Vec<String>,
    /// Seccomp profile.
    pub seccomp: SeccompProfile,
    /// Run in a new user namespace mapping root to the caller.
    pub userns: bool,
    /// Limits.
    pub resources: Resources,
    /// Networking.
    pub network: NetworkOptions,
    /// Volumes and other mounts.
    pub mounts: Vec<MountSpec>,
    /// `--volumes-from` as given.
    pub volumes_from: Vec<String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Remove the container when it exits.
    pub auto_remove: bool,
    /// Log rotation.
    pub log: LogOptions,
    /// Creation time, epoch nanoseconds.
    pub created_nanos: u64,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<String>,
}

impl ContainerConfig {
    /// The full command line: entrypoint followed by cmd.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint
            .iter()
            .chain(self.cmd.iter())
            .cloned()
            .collect()
    }
}

/// Docker's container states.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started (or reset).
    #[default]
    Created,
    /// The init process runs.
    Running,
    /// Waiting to be restarted by its policy.
    Restarting,
    /// Stopped.
    Exited,
    /// Being removed.
    Removing,
    /// Broken beyond use (its supervisor vanished mid-start).
    Dead,
}

impl Status {
    /// Lower-case name, as docker prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Removing => "removing",
            Status::Dead => "dead",
        }
    }
}

/// What changes while a container lives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerState {
    /// Current status.
    pub status: Status,
    /// Host pid of the container's init, 0 when not running.
    pub pid: i32,
    /// Pid of the supervisor, 0 when none.
    pub supervisor_pid: i32,
    /// Start time (clock ticks since boot) of the supervisor, to tell a
    /// recycled pid apart.
    pub supervisor_start: u64,
    /// Last exit code.
    pub exit_code: i32,
    /// The last exit was an OOM kill.
    pub oom_killed: bool,
    /// Why the last start failed, or why the supervisor vanished.
    pub error: String,
    /// Last start, epoch nanoseconds.
    pub started_nanos: u64,
    /// Last exit, epoch nanoseconds.
    pub finished_nanos: u64,
    /// Restarts done by the policy since the last manual start.
    pub restart_count: u32,
    /// The user stopped or killed the container (unless-stopped and boot
    /// look at this).
    pub manually_stopped: bool,
    /// Stopped by `system shutdown` (boot restarts these by policy).
    #[serde(default)]
    pub stopped_by_shutdown: bool,
    /// Bytes in the rw layer when last measured.
    #[serde(default)]
    pub size_rw: u64,
    /// When `size_rw` was measured, epoch nanoseconds.
    #[serde(default)]
    pub size_measured_nanos: u64,
}

/// Where one container's files are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `<store>/containers/<id>`.
    pub dir: PathBuf,
    /// `<state>/<id16>`.
    pub run: PathBuf,
}

impl Paths {
    /// The paths for container `id`.
    pub fn new(store: &Path, state: &Path, id: &str) -> Self {
        Self {
            dir: containers_root(store).join(id),
            run: state.join(&id[..16.min(id.len())]),
        }
    }
    /// config.json.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    /// state.json.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The rw layer.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// The union's work dir.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Log directory.
    pub fn log(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    /// The supervisor's control socket.
    pub fn socket(&self) -> PathBuf {
        self.run.join("sock")
    }
    /// Where the rootfs is mounted while the container runs.
    pub fn rootfs(&self) -> PathBuf {
        self.run.join("rootfs")
    }
    /// The supervisor's own diagnostics.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
}

/// `<store>/containers`.
pub fn containers_root(store: &Path) -> PathBuf {
    store.join("containers")
}

/// Write `bytes` to `path` atomically: temp file, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", path.display()))?;
    Ok(())
}

/// A container: config, state and paths.
#[derive(Debug, Clone)]
pub struct Container {
    /// Fixed configuration.
    pub config: ContainerConfig,
    /// Last saved state.
    pub state: ContainerState,
    /// Its files.
    pub paths: Paths,
}

impl Container {
    /// Load container `id`.
    pub fn load(store: &Path, state_dir: &Path, id: &str) -> Result<Self> {
        let paths = Paths::new(store, state_dir, id);
        let config: ContainerConfig = read_json(&paths.config())?;
        let state: ContainerState = read_json(&paths.state()).unwrap_or_default();
        let mut c = Self {
            config,
            state,
            paths,
        };
        c.notice_dead_supervisor()?;
        Ok(c)
    }

    /// Save the config.
    pub fn save_config(&self) -> Result<()> {
        write_atomic(
            &self.paths.config(),
            &serde_json::to_vec_pretty(&self.config)?,
        )
    }

    /// Read-modify-write the state under the container's lock; returns the
    /// new state and keeps `self.state` in sync.
    pub fn update_state(&mut self, f: impl FnOnce(&mut ContainerState)) -> Result<ContainerState> {
        let _lock = lock_file(&self.paths.dir.join("lock"))?;
        let mut st: ContainerState = read_json(&self.paths.state()).unwrap_or_default();
        f(&mut st);
        write_atomic(&self.paths.state(), &serde_json::to_vec_pretty(&st)?)?;
        self.state = st.clone();
        Ok(st)
    }

    /// Re-read the state from disk.
    pub fn reload(&mut self) -> Result<()> {
        self.state = read_json(&self.paths.state()).unwrap_or_default();
        self.notice_dead_supervisor()
    }

    /// Whether the supervisor recorded in the state is still alive.
    pub fn supervisor_alive(&self) -> bool {
        self.state.supervisor_pid > 0
            && process_start_time(self.state.supervisor_pid)
                .is_some_and(|t| t == self.state.supervisor_start)
    }

    /// A state that claims a live process while its supervisor is gone is
    /// turned into "exited" (the kernel killed the init with it), and the
    /// change is saved so every command agrees.
    fn notice_dead_supervisor(&mut self) -> Result<()> {
        let claims_live = matches!(self.state.status, Status::Running | Status::Restarting);
        if claims_live && !self.supervisor_alive() {
            let pid = self.state.supervisor_pid;
            self.update_state(|s| {
                if matches!(s.status, Status::Running | Status::Restarting) {
                    s.status = Status::Exited;
                    s.exit_code = 137;
                    s.pid = 0;
                    s.finished_nanos = timefmt::now_nanos();
                    s.error = format!("supervisor (pid {pid}) died; the container was killed");
                }
            })?;
        }
        Ok(())
    }

    /// Whether the container is running or restarting under a live supervisor.
    pub fn is_live(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Restarting) && self.supervisor_alive()
    }

    /// The first 12 digits of the id.
    pub fn short_id(&self) -> &str {
        &self.config.id[..12.min(self.config.id.len())]
    }
}

/// Read and parse a JSON file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let mut s = String::new();
    fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .read_to_string(&mut s)
        .with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&s).with_context(|| format!("parsing {}", path.display()))
}

/// Take an exclusive advisory lock on `path` (created if missing).
pub fn lock_file(path: &Path) -> Result<nix::fcntl::Flock<fs::File>> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
}

/// Start time of `pid` in clock ticks since boot (field 22 of
/// /proc/PID/stat), `None` if it does not exist or is a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// All containers in the store, oldest first.
pub fn list(store: &Path, state_dir: &Path) -> Result<Vec<Container>> {
    let root = containers_root(store);
    let mut out = Vec::new();
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", root.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() != 64 || !entry.path().join("config.json").exists() {
            continue;
        }
        match Container::load(store, state_dir, &name) {
            Ok(c) => out.push(c),
            Err(e) => tracing::warn!("skipping container {name}: {e:#}"),
        }
    }
    out.sort_by_key(|c| c.config.created_nanos);
    Ok(out)
}

/// Find a container by full name, full id or unique id prefix.
pub fn find(store: &Path, state_dir: &Path, key: &str) -> Result<Container> {
    let key = key.trim_start_matches('/');
    if key.is_empty() {
        bail!("empty container name or id");
    }
    let all = list(store, state_dir)?;
    if let Some(c) = all
        .iter()
        .find(|c| c.config.name == key || c.config.id == key)
    {
        return Ok(c.clone());
    }
    let matches: Vec<&Container> = all
        .iter()
        .filter(|c| c.config.id.starts_with(key))
        .collect();
    match matches.len() {
        1 => Ok(matches[0].clone()),
        0 => bail!("no such container: {key} (see `strata ps -a`)"),
        _ => bail!("container id prefix {key} is ambiguous: give more digits or the name"),
    }
}

/// A fresh random 64-hex-digit id.
pub fn new_id() -> Result<String> {
    let mut buf = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom for a container id")?;
    Ok(hex::encode(buf))
}

/// A docker-like random name, "adjective_noun".
pub fn random_name(id: &str) -> String {
    const ADJ: &[&str] = &[
        "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nifty", "proud", "quirky", "sharp", "tender", "vivid", "witty", "zealous",
    ];
    const NOUN: &[&str] = &[
        "turing", "hopper", "lovelace", "ritchie", "thompson", "knuth", "dijkstra", "hamilton",
        "torvalds", "liskov", "lamport", "wirth", "backus", "kay", "perlman", "allen",
    ];
    let b = hex::decode(&id[..8.min(id.len())]).unwrap_or_default();
    let a = b.first().copied().unwrap_or(0) as usize % ADJ.len();
    let n = b.get(1).copied().unwrap_or(0) as usize % NOUN.len();
    format!("{}_{}_{}", ADJ[a], NOUN[n], &id[8..12.min(id.len())])
}

/// Check a user-given container name like docker does.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!("invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    Ok(())
}
