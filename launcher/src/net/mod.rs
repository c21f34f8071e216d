//! Container networking: network modes, bridge and overlay networks, IPAM,
//! names (`/etc/hosts` kept in sync), `--link`, and published ports (kernel
//! DNAT with nftables).
//!
//! # What this module owns
//!
//! * State under `<state_dir>/net/`: `state.json` (networks, IPAM leases,
//!   attached containers and their port bindings) guarded by the `lock` file
//!   (`flock`). Every public function takes the lock, so separate `strata`
//!   processes (one supervisor per container, CLI commands) can call them at
//!   the same time.
//! * Kernel objects in the network namespace of the calling thread: the
//!   default bridge `strata0`, one bridge `st-<id>` per user network, a VXLAN
//!   device `sx-<id>` per overlay network, one veth pair per container and
//!   network (host side `vs<hash>`), and the nftables table `ip strata`.
//!   The table is regenerated from the state as a whole (one atomic
//!   `nft -f` transaction) after each change, so it never drifts from the
//!   state and a stale rule is removed by removing its record.
//!
//! Interfaces and rules are driven through the `ip`, `bridge` (iproute2),
//! `nsenter` (util-linux) and `nft` (nftables) programs: each change is one
//! short, atomic, well-tested command, there is no async netlink runtime to
//! build, and the same commands are what an operator types to debug.
//!
//! # API for the container runtime
//!
//! ```text
//! // supervisor, after the container's network namespace exists (its init pid):
//! let ctx = NetContext::new(state_dir, id, name, hostname, Some(hosts_path));
//! let req = NetworkRequest { mode: NetworkMode::parse("--network value")?, ip, aliases,
//!                            links: Link::parse each --link, publish: PortSpec::parse each -p,
//!                            publish_all: -P, expose: image EXPOSE + --expose, ..Default::default() };
//! let att = net::attach(&ctx, init_pid, &req)?;   // keep `att` alive while the container runs
//! env.extend(att.link_env.clone());               // docker's link variables
//! // bind-mount `hosts_path` over <rootfs>/etc/hosts (a bind mount, not a copy:
//! // strata rewrites the file in place when peers come and go)
//! ...container exits...
//! net::detach(&ctx.state_dir, &id)?;              // then drop `att` (frees the held host ports)
//! ```
//!
//! * `NetworkMode::Container(name_or_id)`: the runtime joins that container's
//!   network namespace itself; [`attach`] records the relation (for
//!   `inspect`, hosts file) and checks the target is attached.
//! * `NetworkMode::Host`: nothing is created; `netns_pid` is ignored.
//! * `NetworkMode::None`: only `lo`, brought up by [`attach`].
//! * Restart: call [`detach`] then [`attach`] again with the new init pid;
//!   the address may change and every peer's hosts file follows.
//! * `strata inspect`: [`container_info`] gives the [`Attachment`];
//!   [`Attachment::network_settings`] is docker's `NetworkSettings` object.
//! * `strata port NAME`: [`port_lines`].
//! * Any command may call [`cleanup_stale`] (attach does) to remove veths,
//!   leases and rules of containers whose supervisor died (kill -9).
//!
//! # Names
//!
//! Names are served by `/etc/hosts` files that strata keeps in sync, not by a
//! DNS responder: every container's hosts file is rewritten (in place, so a
//! bind mount sees it) whenever any container joins or leaves a network. That
//! needs no extra process per container or network namespace, works with every
//! libc and static binary (busybox), and is current the moment `attach`
//! returns. On user networks a container's file lists every peer sharing a
//! network by name, aliases and short id; on the default bridge only
//! `--link` targets appear.
//!
//! # Outside traffic on real hosts
//!
//! Attaching to a bridge sets `net.ipv4.ip_forward=1` in the calling network
//! namespace and the table masquerades traffic from each network's subnet
//! leaving through any other interface, so containers reach the outside the
//! way docker's do. In the tests everything happens inside network
//! namespaces the tests create, which have no route outside.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod cmd;
mod error;
mod hosts;
mod ipam;
mod nft;
mod ops;
mod port;
mod state;

pub use error::NetError;
pub use ipam::Subnet;
pub use ops::{
    attach, cleanup_stale, connect, container_info, create_network, detach, disconnect,
    inspect_networks, list_networks, port_lines, prune_networks, remove_network, stale_containers,
    ConnectOptions, CreateNetwork, NetworkSummary,
};
pub use port::{ExposedPort, PortBinding, PortGuard, PortRange, PortSpec, Proto};

/// Name of the default bridge network (as in docker).
pub const DEFAULT_NETWORK: &str = "bridge";
/// Kernel interface name of the default bridge network.
pub const DEFAULT_BRIDGE: &str = "strata0";
/// Environment variable that sets the default bridge's subnet when it is
/// first created (otherwise the first /16 of 172.17-31 not clashing with a
/// route of the host is used).
pub const DEFAULT_SUBNET_ENV: &str = "STRATA_BRIDGE_SUBNET";

/// Result type of this module.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// Who is attaching: where the state lives and which container this is.
#[derive(Debug, Clone)]
pub struct NetContext {
    /// strata's state directory (networking keeps `<state_dir>/net/`).
    pub state_dir: PathBuf,
    /// Full container id.
    pub container_id: String,
    /// Container name (without a leading `/`).
    pub container_name: String,
    /// Hostname inside the container (written into its hosts file).
    pub hostname: String,
    /// A file on the host that the runtime bind-mounts over the container's
    /// `/etc/hosts`; strata writes and keeps it current. `None`: no names.
    pub hosts_file: Option<PathBuf>,
    /// The process whose death makes this attachment stale (the supervisor);
    /// [`NetContext::new`] uses the calling process.
    pub supervisor_pid: u32,
}

impl NetContext {
    /// A context whose supervisor is the calling process.
    pub fn new(
        state_dir: impl Into<PathBuf>,
        container_id: impl Into<String>,
        container_name: impl Into<String>,
        hostname: impl Into<String>,
        hosts_file: Option<PathBuf>,
    ) -> Self {
        NetContext {
            state_dir: state_dir.into(),
            container_id: container_id.into(),
            container_name: container_name.into(),
            hostname: hostname.into(),
            hosts_file,
            supervisor_pid: std::process::id(),
        }
    }
}

/// The `--network` choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// Own network namespace with only `lo`.
    None,
    /// The host's network namespace.
    Host,
    /// A bridge network by name: [`DEFAULT_NETWORK`] or a user network
    /// (bridge or overlay driver).
    Bridge(String),
    /// Share the network namespace of another container (name or id).
    Container(String),
}

impl Default for NetworkMode {
    fn default() -> Self {
        NetworkMode::Bridge(DEFAULT_NETWORK.to_string())
    }
}

impl NetworkMode {
    /// Parse a `--network` value: `none`, `host`, `bridge`, `default`,
    /// `container:NAME` or a network name.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "" => Err(NetError::Invalid(
                "empty --network value; use none, host, bridge, container:NAME or a network name"
                    .into(),
            )),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            "bridge" | "default" => Ok(NetworkMode::default()),
            v => match v.strip_prefix("container:") {
                Some("") => Err(NetError::Invalid(
                    "--network container: needs a container name or id".into(),
                )),
                Some(c) => Ok(NetworkMode::Container(c.to_string())),
                None => Ok(NetworkMode::Bridge(v.to_string())),
            },
        }
    }

    /// The docker spelling (`bridge`, `host`, `none`, `container:X`, name).
    pub fn as_docker(&self) -> String {
        match self {
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Bridge(n) => n.clone(),
            NetworkMode::Container(c) => format!("container:{c}"),
        }
    }
}

/// A `--link NAME[:ALIAS]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Name of the linked container.
    pub name: String,
    /// Name it is known by in this container (defaults to `name`).
    pub alias: String,
}

impl Link {
    /// Parse `NAME[:ALIAS]`.
    pub fn parse(value: &str) -> Result<Self> {
        let (name, alias) = match value.split_once(':') {
            Some((n, a)) => (n, a),
            None => (value, value),
        };
        let name = name.trim_start_matches('/');
        if name.is_empty()
            || alias.is_empty()
            || !hosts::valid_name(name)
            || !hosts::valid_name(alias)
        {
            return Err(NetError::Invalid(format!(
                "invalid --link {value:?}: expected NAME[:ALIAS] with letters, digits, '.', '_', '-'"
            )));
        }
        Ok(Link {
            name: name.to_string(),
            alias: alias.to_string(),
        })
    }
}

/// Everything the user asked for about networking of one container.
#[derive(Debug, Clone, Default)]
pub struct NetworkRequest {
    /// `--network`.
    pub mode: NetworkMode,
    /// `--ip`: fixed address (user networks only, as in docker).
    pub ip: Option<Ipv4Addr>,
    /// `--network-alias` (user networks only).
    pub aliases: Vec<String>,
    /// `--link`.
    pub links: Vec<Link>,
    /// `-p`.
    pub publish: Vec<PortSpec>,
    /// `-P`: publish every exposed port on a free host port.
    pub publish_all: bool,
    /// The image's EXPOSE plus `--expose`.
    pub expose: Vec<ExposedPort>,
}

/// One network endpoint of a container, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// Network id (64 hex digits).
    pub network_id: String,
    /// Container address.
    pub ip: Ipv4Addr,
    /// Prefix length of the network's subnet.
    pub prefix_len: u8,
    /// Gateway (the bridge's address on this host).
    pub gateway: Ipv4Addr,
    /// MAC address of the container's interface.
    pub mac: String,
    /// Interface name inside the container (`eth0`, `eth1`...).
    pub interface: String,
    /// Network aliases (user networks).
    pub aliases: Vec<String>,
}

/// The result of [`attach`]: what `inspect` shows, plus the link variables.
///
/// Keep it alive while the container runs: it holds the published host
/// ports bound (see [`PortGuard`]) so no other program can take them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Attachment {
    /// Network mode in docker spelling.
    pub mode: String,
    /// Primary address (first network), if any.
    pub ip: Option<Ipv4Addr>,
    /// Primary gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Primary prefix length (0 when no address).
    pub prefix_len: u8,
    /// Primary MAC address, if any.
    pub mac: Option<String>,
    /// Published ports.
    pub ports: Vec<PortBinding>,
    /// Every network the container is on.
    pub networks: BTreeMap<String, EndpointInfo>,
    /// docker's link environment variables (`DB_PORT_5432_TCP_ADDR=...`).
    pub link_env: Vec<(String, String)>,
    /// Host port reservations (not serialized).
    #[serde(skip)]
    pub port_guards: Vec<PortGuard>,
}

impl Attachment {
    /// docker's `NetworkSettings` object for `inspect`.
    pub fn network_settings(&self) -> serde_json::Value {
        let mut ports = serde_json::Map::new();
        for b in &self.ports {
            let key = format!("{}/{}", b.container_port, b.proto);
            let entry = ports
                .entry(key)
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(list) = entry {
                list.push(serde_json::json!({
                    "HostIp": b.host_ip.to_string(),
                    "HostPort": b.host_port.to_string(),
                }));
            }
        }
        let mut networks = serde_json::Map::new();
        for (name, ep) in &self.networks {
            networks.insert(
                name.clone(),
                serde_json::json!({
                    "NetworkID": ep.network_id,
                    "IPAddress": ep.ip.to_string(),
                    "IPPrefixLen": ep.prefix_len,
                    "Gateway": ep.gateway.to_string(),
                    "MacAddress": ep.mac,
                    "Aliases": ep.aliases,
                }),
            );
        }
        let opt = |v: Option<String>| v.unwrap_or_default();
        serde_json::json!({
            "NetworkMode": self.mode,
            "IPAddress": opt(self.ip.map(|i| i.to_string())),
            "IPPrefixLen": self.prefix_len,
            "Gateway": opt(self.gateway.map(|i| i.to_string())),
            "MacAddress": opt(self.mac.clone()),
            "Ports": ports,
            "Networks": networks,
        })
    }
}
