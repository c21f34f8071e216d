//! The persistent networking state: `<state_dir>/net/state.json`, changed
//! only under an exclusive `flock` on `<state_dir>/net/lock`.
//!
//! Format (JSON, `version` 1): `networks` by name (driver, subnet, gateway,
//! kernel interface names, IPAM pool with leases → container id) and
//! `containers` by id (supervisor pid and start time for liveness, netns
//! pid, hosts file, endpoints by network name, port bindings, links).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::ipam::{Pool, Subnet};
use super::port::{ExposedPort, PortBinding};
use super::{Link, NetError, Result};

/// Network driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Driver {
    /// A Linux bridge on this host.
    Bridge,
    /// A bridge plus a VXLAN device reaching peer hosts.
    Overlay,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Overlay => "overlay",
        }
    }
}

/// One network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Network {
    pub name: String,
    pub id: String,
    pub driver: Driver,
    pub subnet: Subnet,
    /// Addresses handed out come from here (default: the subnet).
    pub ip_range: Option<Subnet>,
    pub gateway: Ipv4Addr,
    /// Kernel bridge name.
    pub bridge: String,
    pub mtu: u32,
    /// Masquerade traffic from the subnet leaving through other interfaces.
    pub masquerade: bool,
    /// Overlay only: VXLAN id, device, peers and local underlay address.
    pub vni: Option<u32>,
    pub vxlan: Option<String>,
    pub peers: Vec<Ipv4Addr>,
    pub local: Option<Ipv4Addr>,
    /// Unix seconds.
    pub created: u64,
    pub pool: Pool,
}

impl Network {
    /// The usable host addresses.
    pub fn range(&self) -> (u32, u32) {
        let (sf, sl) = self.subnet.host_range();
        match self.ip_range {
            Some(r) => {
                let (rf, rl) = r.host_range();
                (rf.max(sf), rl.min(sl))
            }
            None => (sf, sl),
        }
    }
}

/// One endpoint: a container on a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Endpoint {
    pub ip: Ipv4Addr,
    pub mac: String,
    /// Host side of the veth pair.
    pub host_veth: String,
    /// Interface name in the container.
    pub ifname: String,
    pub aliases: Vec<String>,
}

/// How a container is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "target")]
pub(crate) enum Mode {
    None,
    Host,
    Bridge(String),
    Container(String),
}

/// One attached container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerRec {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub hosts_file: Option<PathBuf>,
    pub supervisor_pid: u32,
    /// Start time (clock ticks since boot) of the supervisor, against pid reuse.
    pub supervisor_start: u64,
    pub netns_pid: i32,
    pub mode: Mode,
    /// Network name → endpoint.
    pub endpoints: BTreeMap<String, Endpoint>,
    pub ports: Vec<PortBinding>,
    pub links: Vec<Link>,
    pub exposed: Vec<ExposedPort>,
}

/// The whole state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub version: u32,
    pub networks: BTreeMap<String, Network>,
    pub containers: BTreeMap<String, ContainerRec>,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: 1,
            networks: BTreeMap::new(),
            containers: BTreeMap::new(),
        }
    }
}

impl State {
    /// Find a container by full id, name, or unique id prefix.
    pub fn find_container(&self, key: &str) -> Option<&ContainerRec> {
        let key = key.trim_start_matches('/');
        if let Some(c) = self.containers.get(key) {
            return Some(c);
        }
        if let Some(c) = self.containers.values().find(|c| c.name == key) {
            return Some(c);
        }
        let mut by_prefix = self.containers.values().filter(|c| c.id.starts_with(key));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(c), None) if !key.is_empty() => Some(c),
            _ => None,
        }
    }
}

/// The locked state: dropping it releases the lock (changes are only kept
/// through [`Locked::save`]).
pub(crate) struct Locked {
    pub state: State,
    path: PathBuf,
    _lock: Flock<File>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lock and read the state under `state_dir/net`.
pub(crate) fn lock(state_dir: &Path) -> Result<Locked> {
    let dir = state_dir.join("net");
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let lock_path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| NetError::Io {
        path: lock_path.clone(),
        source: std::io::Error::from(errno),
    })?;
    let path = dir.join("state.json");
    let state = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| NetError::CorruptState {
            path: path.clone(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(io(&path)(e)),
    };
    Ok(Locked {
        state,
        path,
        _lock: lock,
    })
}

impl Locked {
    /// Write the state atomically (temp file, fsync, rename).
    pub fn save(&self) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let bytes =
            serde_json::to_vec_pretty(&self.state).map_err(|source| NetError::CorruptState {
                path: self.path.clone(),
                source,
            })?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        Ok(())
    }
}

/// Start time of a process in clock ticks since boot, `None` if it is gone
/// (a zombie is gone: a killed supervisor may wait a while to be reaped).
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come field 3 (state) onwards; starttime is field 22.
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Is the supervisor of `c` still the process that attached it?
pub(crate) fn alive(c: &ContainerRec) -> bool {
    process_start(c.supervisor_pid) == Some(c.supervisor_start)
}

/// A fresh 64-hex-digit id.
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 32];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        // No /dev/urandom: fall back to time and pid (ids only need to be unique).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = t ^ (u128::from(std::process::id()) << 64);
        bytes[..16].copy_from_slice(&seed.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
