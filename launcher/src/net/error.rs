//! The one error type of the networking module.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

/// What can go wrong while setting up or tearing down networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A file under the state directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The state file does not parse.
    #[error("network state {path} is corrupt ({source}); move it aside and recreate the networks")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A helper program could not be started.
    #[error("cannot run `{program}` ({source}); install {package}")]
    MissingTool {
        /// Program name.
        program: String,
        /// Debian package that provides it.
        package: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A helper program failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// No network by that name.
    #[error("network {0} not found; list networks with `strata network ls`")]
    NoSuchNetwork(String),
    /// A network by that name exists.
    #[error("network {0} already exists; pick another name or remove it first")]
    NetworkExists(String),
    /// The network still has containers.
    #[error("network {name} has active endpoints ({containers}); stop or disconnect them first")]
    NetworkInUse {
        /// Network name.
        name: String,
        /// Names of the attached containers.
        containers: String,
    },
    /// Built-in networks cannot be removed or created.
    #[error("{0} is a pre-defined network and cannot be created or removed")]
    Predefined(String),
    /// No container by that name or id is attached.
    #[error("container {0} is not attached to any network (is it running?)")]
    NoSuchContainer(String),
    /// A bad `-p` value.
    #[error("invalid port spec {spec:?}: {why}")]
    BadPortSpec {
        /// What was given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// A bad subnet, range or address.
    #[error("invalid subnet {spec:?}: {why}")]
    BadSubnet {
        /// What was given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// Two networks would overlap.
    #[error("subnet {subnet} overlaps network {other} ({other_subnet}); choose another --subnet")]
    SubnetOverlap {
        /// The requested subnet.
        subnet: String,
        /// The network it clashes with.
        other: String,
        /// That network's subnet.
        other_subnet: String,
    },
    /// No free subnet for a new network.
    #[error("no free subnet left in 172.17-31.0.0/16 and 192.168.0.0/16; pass --subnet")]
    NoFreeSubnet,
    /// The requested address is taken.
    #[error("address {ip} is already in use on network {network}")]
    AddressInUse {
        /// Address.
        ip: Ipv4Addr,
        /// Network name.
        network: String,
    },
    /// The requested address is not usable on that network.
    #[error("address {ip} is not a usable host address of network {network} ({subnet})")]
    AddressOutside {
        /// Address.
        ip: Ipv4Addr,
        /// Network name.
        network: String,
        /// Its subnet.
        subnet: String,
    },
    /// Every address is leased.
    #[error("no free address left on network {0}; remove containers or use a larger subnet")]
    PoolExhausted(String),
    /// A host port is taken (by strata or another program).
    #[error("host port {addr}/{proto} is already in use ({why}); choose another host port")]
    PortTaken {
        /// Address and port.
        addr: SocketAddrV4,
        /// tcp or udp.
        proto: String,
        /// Who holds it.
        why: String,
    },
    /// No free port for `-P`.
    #[error("no free host port left in {first}-{last} for {proto}")]
    NoFreePort {
        /// Pool start.
        first: u16,
        /// Pool end.
        last: u16,
        /// tcp or udp.
        proto: String,
    },
    /// Anything else the user asked for that cannot work.
    #[error("{0}")]
    Invalid(String),
}
