//! A runc-compatible OCI runtime: `strata oci create|start|state|kill|delete`.
//!
//! Like runc there is no daemon. `create` clones the container's init
//! (`strata oci __init`, [`init`]) into the namespaces of the bundle's
//! `config.json`, puts it in its cgroup, writes its id maps and sends it an
//! [`init::OciInit`]; the init sets up the root filesystem with
//! [`crate::rootfs`] and then blocks opening the state directory's
//! `exec.fifo` for writing. `create` returns once the init reports it is
//! ready; the init is reparented and keeps waiting. `start` opens the fifo
//! for reading, which lets the init exec the user's process
//! ([`crate::process::finalize_and_exec`]). The state of a container is its
//! state directory (`<root>/<id>/state.json` plus the fifo while it has
//! not been started) and whether its init pid is still the same process.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Hook, Hooks, Spec};
use serde::{Deserialize, Serialize};

use crate::cgroup::{self, CgroupManager};
use crate::container::{process_start_time, write_atomic, Resources};

pub mod init;
pub mod ops;
pub mod translate;

/// The runtime-spec version strata implements.
pub const OCI_VERSION: &str = "1.0.2";

/// The fifo the init blocks on until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";

/// What `create` records about a container (`<root>/<id>/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    /// Container id.
    pub id: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// Start time of that pid (clock ticks since boot), to tell pid reuse.
    pub start_time: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Annotations from config.json.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Creation time, RFC 3339.
    pub created: String,
    /// The cgroup path below each hierarchy, when a cgroup was made.
    pub cgroup: Option<PathBuf>,
    /// Hooks from config.json (poststart and poststop run later).
    pub hooks: Option<Hooks>,
}

/// A container's status as the runtime spec names it (plus runc's paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Set up, waiting for `start`.
    Created,
    /// The user's process runs.
    Running,
    /// Frozen by `pause`.
    Paused,
    /// The process has exited.
    Stopped,
}

impl Status {
    /// The spec's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// One container's state directory.
#[derive(Debug, Clone)]
pub struct Handle {
    /// `<root>/<id>`.
    pub dir: PathBuf,
    /// What create recorded.
    pub saved: Saved,
}

/// Refuse ids that could escape the state root.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+:@".contains(c));
    if !ok {
        bail!("invalid container id {id:?}: use letters, digits and . _ - + : @");
    }
    Ok(())
}

impl Handle {
    /// Load container `id` from the state root.
    pub fn load(root: &Path, id: &str) -> Result<Self> {
        validate_id(id)?;
        let dir = root.join(id);
        let file = dir.join("state.json");
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "container {id} does not exist (no state in {})",
                    dir.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let saved = serde_json::from_str(&text).with_context(|| {
            format!(
                "parsing {}: remove it with `delete --force`",
                file.display()
            )
        })?;
        Ok(Self { dir, saved })
    }

    /// Write the state file.
    pub fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.saved).context("encoding the state")?;
        write_atomic(&self.dir.join("state.json"), &bytes)
    }

    /// The exec fifo path.
    pub fn fifo(&self) -> PathBuf {
        self.dir.join(EXEC_FIFO)
    }

    /// Whether the init is still the process create started.
    pub fn alive(&self) -> bool {
        process_start_time(self.saved.pid) == Some(self.saved.start_time)
    }

    /// The container's cgroup manager, if it has a cgroup.
    pub fn cgroup(&self) -> Option<Box<dyn CgroupManager>> {
        self.saved.cgroup.as_deref().map(cgroup_manager)
    }

    /// The freezer state file (cgroup v1) of the container.
    pub fn freezer_state(&self) -> Option<PathBuf> {
        let rel = self.saved.cgroup.as_ref()?;
        let p = Path::new("/sys/fs/cgroup/freezer")
            .join(rel)
            .join("freezer.state");
        p.exists().then_some(p)
    }

    /// The current status.
    pub fn status(&self) -> Status {
        if !self.alive() {
            return Status::Stopped;
        }
        if self.fifo().exists() {
            return Status::Created;
        }
        if let Some(f) = self.freezer_state() {
            if fs::read_to_string(f).is_ok_and(|s| s.trim() == "FROZEN") {
                return Status::Paused;
            }
        }
        Status::Running
    }

    /// The runtime-spec state document.
    pub fn state_json(&self) -> serde_json::Value {
        self.state_json_as(self.status())
    }

    /// The state document with a given status (hooks run mid-transition).
    pub fn state_json_as(&self, status: Status) -> serde_json::Value {
        let mut v = serde_json::json!({
            "ociVersion": OCI_VERSION,
            "id": self.saved.id,
            "status": status.as_str(),
            "bundle": self.saved.bundle,
            "rootfs": "",
            "created": self.saved.created,
            "owner": "",
        });
        if status != Status::Stopped {
            v["pid"] = serde_json::json!(self.saved.pid);
        } else {
            v["pid"] = serde_json::json!(0);
        }
        if !self.saved.annotations.is_empty() {
            v["annotations"] = serde_json::json!(self.saved.annotations);
        }
        v
    }
}

/// The cgroup manager for a path below each hierarchy.
pub fn cgroup_manager(rel: &Path) -> Box<dyn CgroupManager> {
    let root = PathBuf::from("/sys/fs/cgroup");
    match cgroup::detect() {
        cgroup::Mode::Unified => Box::new(cgroup::v2::V2::new(root, rel.to_path_buf())),
        cgroup::Mode::Hybrid | cgroup::Mode::Legacy => {
            Box::new(cgroup::v1::V1::new(root, rel.to_path_buf()))
        }
    }
}

/// The `linux.resources.memory` settings strata's [`Resources`] has no
/// field for (reservation, swappiness, disableOOMKiller), written straight
/// into the container's memory cgroup as runc does. On cgroup v2 only the
/// reservation exists (`memory.low`); the other two have no v2 file and
/// are left alone there, as runc does.
pub fn apply_memory_extras(spec: &Spec, rel: &Path) -> Result<()> {
    let Some(m) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
    else {
        return Ok(());
    };
    let root = PathBuf::from("/sys/fs/cgroup");
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let write = |dir: &Path, file: &str, value: String| -> Result<()> {
        let path = dir.join(file);
        std::fs::write(&path, &value)
            .with_context(|| format!("writing {value} to {}", path.display()))
    };
    match cgroup::detect() {
        cgroup::Mode::Unified => {
            if let Some(r) = m.reservation().filter(|r| *r > 0) {
                write(&root.join(rel), "memory.low", r.to_string())?;
            }
        }
        cgroup::Mode::Hybrid | cgroup::Mode::Legacy => {
            let dir = root.join("memory").join(rel);
            if let Some(r) = m.reservation().filter(|r| *r != 0) {
                write(&dir, "memory.soft_limit_in_bytes", r.to_string())?;
            }
            if let Some(sw) = m.swappiness() {
                if sw > 100 {
                    bail!("linux.resources.memory.swappiness {sw} is out of range (0-100)");
                }
                write(&dir, "memory.swappiness", sw.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                write(&dir, "memory.oom_control", "1".into())?;
            }
        }
    }
    Ok(())
}

/// Load and check a bundle's config.json.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    Spec::load(&path).with_context(|| format!("loading {}", path.display()))
}

/// Run `hooks` in order with `state` on their stdin; the first failure is
/// the error.
pub fn run_hooks(kind: &str, hooks: Option<&Vec<Hook>>, state: &serde_json::Value) -> Result<()> {
    let Some(hooks) = hooks else { return Ok(()) };
    let input = serde_json::to_vec(state).context("encoding the state for hooks")?;
    for h in hooks {
        run_hook(h, &input).with_context(|| format!("{kind} hook {}", h.path().display()))?;
    }
    Ok(())
}

fn run_hook(h: &Hook, input: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let args = h.args().clone().unwrap_or_default();
    let mut cmd = Command::new(h.path());
    if let Some(a0) = args.first() {
        cmd.arg0(a0);
    }
    cmd.args(args.iter().skip(1));
    cmd.env_clear();
    for kv in h.env().clone().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting the hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that ignores its stdin may close it early: not an error,
        // and no reason to die of SIGPIPE (main sets it to the default
        // action), so ignore it around the write only: the hook was
        // spawned before and keeps the default.
        use nix::sys::signal::{SigHandler, Signal};
        crate::sys::set_signal(Signal::SIGPIPE, SigHandler::SigIgn);
        let _ = stdin.write_all(input);
        drop(stdin);
        crate::sys::set_signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
    let timeout = h.timeout().filter(|t| *t > 0).map(|t| t as u64);
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for the hook")? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            if !status.success() {
                bail!("failed ({status}): {}", err.trim());
            }
            return Ok(());
        }
        if let Some(t) = timeout {
            if started.elapsed().as_secs() >= t {
                let _ = child.kill();
                let _ = child.wait();
                bail!("timed out after {t}s");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Resources for the existing cgroup code from `linux.resources`.
pub fn resources(spec: &Spec) -> Resources {
    let mut r = Resources::default();
    let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return r;
    };
    if let Some(m) = res.memory() {
        if let Some(limit) = m.limit().filter(|l| *l > 0) {
            r.memory_bytes = limit as u64;
        }
        if let Some(swap) = m.swap() {
            r.memory_swap_bytes = swap;
        }
    }
    if let Some(c) = res.cpu() {
        if let (Some(q), Some(p)) = (c.quota(), c.period()) {
            if q > 0 && p > 0 {
                r.nano_cpus = (q as u64).saturating_mul(1_000_000_000) / p;
            }
        }
        if let Some(s) = c.shares() {
            r.cpu_shares = s;
        }
        if let Some(cpus) = c.cpus() {
            r.cpuset_cpus = cpus.clone();
        }
    }
    if let Some(p) = res.pids() {
        r.pids_limit = p.limit();
    }
    r
}

/// The runtime-spec features document (`strata oci features`).
pub fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": [
            "bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "mode", "size"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false
            },
            "seccomp": { "enabled": false },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "org.opencontainers.runc.checkpoint.enabled": "false",
            "io.github.strata.runtime": "strata oci"
        }
    })
}
