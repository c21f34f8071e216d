//! The operations: networks (create, rm, ls, inspect, prune), containers
//! (attach, detach, connect, disconnect), published ports and stale cleanup.
//!
//! Each public function locks the state, changes the kernel, saves the
//! state, regenerates the nftables table and rewrites the hosts files.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::hosts;
use super::ipam::Subnet;
use super::nft;
use super::port::{reserve, ExposedPort, PortBinding, PortGuard, PortSpec};
use super::state::{self, ContainerRec, Driver, Endpoint, Locked, Mode, Network, State};
use super::{cmd, Attachment, EndpointInfo, NetContext, NetError, NetworkMode, NetworkRequest};
use super::{Result, DEFAULT_BRIDGE, DEFAULT_NETWORK, DEFAULT_SUBNET_ENV};

/// UDP port of VXLAN (IANA).
const VXLAN_PORT: &str = "4789";
/// Default MTU of overlay networks (1500 minus VXLAN's 50 bytes).
const OVERLAY_MTU: u32 = 1450;

fn digest_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Fixed id of a built-in network.
fn builtin_id(name: &str) -> String {
    digest_hex(&format!("strata builtin network {name}"))
}

fn is_predefined(name: &str) -> bool {
    matches!(name, "bridge" | "host" | "none" | "default")
}

/// What `strata network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateNetwork {
    /// Network name.
    pub name: String,
    /// Overlay (VXLAN to `peers`) instead of a host-local bridge.
    pub overlay: bool,
    /// Subnet (chosen automatically for bridges when `None`).
    pub subnet: Option<Subnet>,
    /// Gateway (default: first host address of the ip range or subnet).
    pub gateway: Option<Ipv4Addr>,
    /// Allocate container addresses from this part of the subnet only
    /// (overlay: give each host its own range).
    pub ip_range: Option<Subnet>,
    /// Overlay: underlay addresses of the other hosts.
    pub peers: Vec<Ipv4Addr>,
    /// Overlay: VXLAN id (default: derived from the name, so every host agrees).
    pub vni: Option<u32>,
    /// Overlay: local underlay address to send from.
    pub local: Option<Ipv4Addr>,
    /// MTU of the bridge and veths (default 1500, overlay 1450).
    pub mtu: Option<u32>,
    /// Do not masquerade traffic leaving the network (docker's `--internal`
    /// without the routing cut).
    pub no_masquerade: bool,
}

/// One line of `strata network ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSummary {
    /// Network id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Driver (`bridge`, `overlay`, `host`, `null`).
    pub driver: String,
    /// `local` or `global`.
    pub scope: String,
}

/// Options of `strata network connect`.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Fixed address.
    pub ip: Option<Ipv4Addr>,
    /// Network aliases.
    pub aliases: Vec<String>,
}

// ---------------------------------------------------------------- networks

fn candidate_subnets() -> impl Iterator<Item = Subnet> {
    let wide = (17..=31u8).map(|b| Subnet {
        addr: Ipv4Addr::new(172, b, 0, 0),
        prefix: 16,
    });
    let narrow = (0..16u8).map(|i| Subnet {
        addr: Ipv4Addr::new(192, 168, i * 16, 0),
        prefix: 20,
    });
    wide.chain(narrow)
}

fn check_overlap(state: &State, subnet: &Subnet) -> Result<()> {
    for n in state.networks.values() {
        if n.subnet.overlaps(subnet) {
            return Err(NetError::SubnetOverlap {
                subnet: subnet.to_string(),
                other: n.name.clone(),
                other_subnet: n.subnet.to_string(),
            });
        }
    }
    Ok(())
}

/// First candidate subnet clashing neither with a network nor a host route.
fn choose_subnet(state: &State) -> Result<Subnet> {
    let routes: Vec<Subnet> = cmd::host_routes()?
        .iter()
        .filter_map(|r| {
            let (addr, prefix) = r.split_once('/').unwrap_or((r.as_str(), "32"));
            let addr = addr.parse::<Ipv4Addr>().ok()?;
            let prefix = prefix.parse::<u8>().ok().filter(|p| *p <= 32)?;
            Some(Subnet { addr, prefix }.normalized())
        })
        .collect();
    candidate_subnets()
        .find(|c| {
            routes.iter().all(|r| !r.overlaps(c))
                && state.networks.values().all(|n| !n.subnet.overlaps(c))
        })
        .ok_or(NetError::NoFreeSubnet)
}

fn first_host(s: &Subnet) -> Ipv4Addr {
    Ipv4Addr::from(s.host_range().0)
}

fn build_network(
    state: &State,
    req: &CreateNetwork,
    id: String,
    bridge: String,
) -> Result<Network> {
    let subnet = match req.subnet {
        Some(s) => {
            check_overlap(state, &s)?;
            s
        }
        None if req.overlay => {
            return Err(NetError::Invalid(format!(
                "overlay network {} needs --subnet (the same on every host) and a different --ip-range on each host",
                req.name
            )))
        }
        None => choose_subnet(state)?,
    };
    if subnet.prefix > 30 {
        return Err(NetError::BadSubnet {
            spec: subnet.to_string(),
            why: "too small: use a prefix of /30 or shorter".into(),
        });
    }
    if let Some(r) = req.ip_range {
        if !subnet.contains(r.network()) || !subnet.contains(r.broadcast()) {
            return Err(NetError::BadSubnet {
                spec: r.to_string(),
                why: format!("--ip-range must lie inside --subnet {subnet}"),
            });
        }
    }
    let gateway = req
        .gateway
        .unwrap_or_else(|| first_host(&req.ip_range.unwrap_or(subnet)));
    let (lo, hi) = subnet.host_range();
    if !(lo..=hi).contains(&u32::from(gateway)) {
        return Err(NetError::AddressOutside {
            ip: gateway,
            network: req.name.clone(),
            subnet: subnet.to_string(),
        });
    }
    let short = id.get(..8).unwrap_or(&id).to_string();
    let (vni, vxlan) = if req.overlay {
        let derived =
            u32::from_str_radix(&digest_hex(&req.name)[..6], 16).unwrap_or(0) % 16_000_000 + 4096;
        let vni = req.vni.unwrap_or(derived);
        if vni == 0 || vni > 16_777_215 {
            return Err(NetError::Invalid(format!(
                "VXLAN id {vni} out of range 1-16777215"
            )));
        }
        (Some(vni), Some(format!("sx-{short}")))
    } else {
        (None, None)
    };
    Ok(Network {
        name: req.name.clone(),
        id,
        driver: if req.overlay {
            Driver::Overlay
        } else {
            Driver::Bridge
        },
        subnet,
        ip_range: req.ip_range,
        gateway,
        bridge,
        mtu: req
            .mtu
            .unwrap_or(if req.overlay { OVERLAY_MTU } else { 1500 }),
        masquerade: !req.no_masquerade,
        vni,
        vxlan,
        peers: req.peers.clone(),
        local: req.local,
        created: state::now(),
        pool: Default::default(),
    })
}

/// Create the network's kernel interfaces (idempotent).
fn ensure_infra(n: &Network) -> Result<()> {
    let mtu = n.mtu.to_string();
    if !cmd::link_exists(&n.bridge) {
        cmd::ip(&[
            "link", "add", "name", &n.bridge, "mtu", &mtu, "type", "bridge",
        ])?;
    }
    let addr = format!("{}/{}", n.gateway, n.subnet.prefix);
    cmd::ip(&["addr", "replace", &addr, "dev", &n.bridge])?;
    if let (Some(vx), Some(vni)) = (&n.vxlan, n.vni) {
        if !cmd::link_exists(vx) {
            let vni = vni.to_string();
            let mut args = vec![
                "link", "add", "name", vx, "mtu", &mtu, "type", "vxlan", "id", &vni, "dstport",
                VXLAN_PORT,
            ];
            let local = n.local.map(|l| l.to_string());
            if let Some(l) = &local {
                args.extend(["local", l.as_str()]);
            }
            cmd::ip(&args)?;
            for peer in &n.peers {
                let p = peer.to_string();
                cmd::run(
                    "bridge",
                    &["fdb", "append", "00:00:00:00:00:00", "dev", vx, "dst", &p],
                )?;
            }
        }
        cmd::ip(&["link", "set", "dev", vx, "master", &n.bridge, "up"])?;
    }
    cmd::ip(&["link", "set", "dev", &n.bridge, "up"])?;
    cmd::sysctl(&format!("net.ipv4.conf.{}.route_localnet", n.bridge), "1")?;
    cmd::sysctl("net.ipv4.ip_forward", "1")?;
    Ok(())
}

fn teardown_infra(n: &Network) -> Result<()> {
    if let Some(vx) = &n.vxlan {
        cmd::delete_link(vx)?;
    }
    cmd::delete_link(&n.bridge)
}

/// Make sure the default bridge network has a record.
fn ensure_default(state: &mut State) -> Result<()> {
    if state.networks.contains_key(DEFAULT_NETWORK) {
        return Ok(());
    }
    let subnet = match std::env::var(DEFAULT_SUBNET_ENV) {
        Ok(v) if !v.is_empty() => Some(Subnet::parse(&v)?),
        _ => None,
    };
    let req = CreateNetwork {
        name: DEFAULT_NETWORK.into(),
        subnet,
        ..Default::default()
    };
    let n = build_network(
        state,
        &req,
        builtin_id(DEFAULT_NETWORK),
        DEFAULT_BRIDGE.into(),
    )?;
    state.networks.insert(n.name.clone(), n);
    Ok(())
}

/// Save the state, then bring the nftables table and hosts files in line.
fn commit(lk: &Locked) -> Result<()> {
    lk.save()?;
    nft::apply(&lk.state)?;
    hosts::sync_all(&lk.state);
    Ok(())
}

/// `strata network create`: returns the new network's id.
pub fn create_network(state_dir: &Path, req: &CreateNetwork) -> Result<String> {
    if is_predefined(&req.name) {
        return Err(NetError::Predefined(req.name.clone()));
    }
    if !hosts::valid_name(&req.name) {
        return Err(NetError::Invalid(format!(
            "invalid network name {:?}: use letters, digits, '.', '_', '-'",
            req.name
        )));
    }
    let mut lk = state::lock(state_dir)?;
    if lk.state.networks.contains_key(&req.name) {
        return Err(NetError::NetworkExists(req.name.clone()));
    }
    let id = state::new_id();
    let bridge = format!("st-{}", &id[..8]);
    let n = build_network(&lk.state, req, id.clone(), bridge)?;
    if let Err(e) = ensure_infra(&n) {
        let _ = teardown_infra(&n);
        return Err(e);
    }
    lk.state.networks.insert(n.name.clone(), n);
    commit(&lk)?;
    Ok(id)
}

fn users_of(state: &State, network: &str) -> Vec<String> {
    state
        .containers
        .values()
        .filter(|c| c.endpoints.contains_key(network))
        .map(|c| c.name.clone())
        .collect()
}

/// `strata network rm`.
pub fn remove_network(state_dir: &Path, name: &str) -> Result<()> {
    if is_predefined(name) {
        return Err(NetError::Predefined(name.to_string()));
    }
    let mut lk = state::lock(state_dir)?;
    reap_stale(&mut lk.state);
    let key = find_network_key(&lk.state, name)?;
    let users = users_of(&lk.state, &key);
    if !users.is_empty() {
        return Err(NetError::NetworkInUse {
            name: key,
            containers: users.join(", "),
        });
    }
    if let Some(n) = lk.state.networks.remove(&key) {
        teardown_infra(&n)?;
    }
    commit(&lk)
}

/// `strata network prune`: remove every user network without containers;
/// returns the removed names.
pub fn prune_networks(state_dir: &Path) -> Result<Vec<String>> {
    let mut lk = state::lock(state_dir)?;
    reap_stale(&mut lk.state);
    let unused: Vec<String> = lk
        .state
        .networks
        .keys()
        .filter(|n| n.as_str() != DEFAULT_NETWORK && users_of(&lk.state, n).is_empty())
        .cloned()
        .collect();
    for name in &unused {
        if let Some(n) = lk.state.networks.remove(name) {
            teardown_infra(&n)?;
        }
    }
    commit(&lk)?;
    Ok(unused)
}

fn find_network_key(state: &State, key: &str) -> Result<String> {
    if state.networks.contains_key(key) {
        return Ok(key.to_string());
    }
    let mut hits = state
        .networks
        .values()
        .filter(|n| !key.is_empty() && n.id.starts_with(key));
    match (hits.next(), hits.next()) {
        (Some(n), None) => Ok(n.name.clone()),
        _ => Err(NetError::NoSuchNetwork(key.to_string())),
    }
}

/// `strata network ls`: built-in networks first, then user networks.
pub fn list_networks(state_dir: &Path) -> Result<Vec<NetworkSummary>> {
    let lk = state::lock(state_dir)?;
    let builtin = |name: &str, driver: &str| NetworkSummary {
        id: builtin_id(name),
        name: name.into(),
        driver: driver.into(),
        scope: "local".into(),
    };
    let mut out = vec![
        builtin("bridge", "bridge"),
        builtin("host", "host"),
        builtin("none", "null"),
    ];
    for n in lk.state.networks.values() {
        if n.name == DEFAULT_NETWORK {
            continue;
        }
        out.push(NetworkSummary {
            id: n.id.clone(),
            name: n.name.clone(),
            driver: n.driver.name().into(),
            scope: if n.driver == Driver::Overlay {
                "global"
            } else {
                "local"
            }
            .into(),
        });
    }
    Ok(out)
}

fn network_json(state: &State, n: &Network) -> serde_json::Value {
    let mut containers = serde_json::Map::new();
    for c in state.containers.values() {
        if let Some(ep) = c.endpoints.get(&n.name) {
            containers.insert(
                c.id.clone(),
                serde_json::json!({
                    "Name": c.name,
                    "MacAddress": ep.mac,
                    "IPv4Address": format!("{}/{}", ep.ip, n.subnet.prefix),
                    "Aliases": ep.aliases,
                }),
            );
        }
    }
    let mut config = serde_json::json!({
        "Subnet": n.subnet.to_string(),
        "Gateway": n.gateway.to_string(),
    });
    if let Some(r) = n.ip_range {
        config["IPRange"] = serde_json::Value::String(r.to_string());
    }
    let mut options = serde_json::json!({
        "com.docker.network.bridge.name": n.bridge,
        "com.docker.network.driver.mtu": n.mtu.to_string(),
        "com.docker.network.bridge.enable_ip_masquerade": n.masquerade.to_string(),
    });
    if let Some(vni) = n.vni {
        options["vxlan.id"] = serde_json::Value::String(vni.to_string());
        options["vxlan.peers"] = serde_json::Value::String(
            n.peers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    serde_json::json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created,
        "Scope": if n.driver == Driver::Overlay { "global" } else { "local" },
        "Driver": n.driver.name(),
        "IPAM": { "Driver": "default", "Config": [config] },
        "Containers": containers,
        "Options": options,
    })
}

/// `strata network inspect`: docker-shaped JSON of each named network.
pub fn inspect_networks(state_dir: &Path, names: &[String]) -> Result<Vec<serde_json::Value>> {
    let lk = state::lock(state_dir)?;
    let mut out = Vec::new();
    for name in names {
        let name = if name == "default" {
            DEFAULT_NETWORK
        } else {
            name.as_str()
        };
        if let Ok(key) = find_network_key(&lk.state, name) {
            if let Some(n) = lk.state.networks.get(&key) {
                out.push(network_json(&lk.state, n));
                continue;
            }
        }
        match name {
            "bridge" | "host" | "none" => out.push(serde_json::json!({
                "Name": name,
                "Id": builtin_id(name),
                "Scope": "local",
                "Driver": if name == "none" { "null" } else { name },
                "IPAM": { "Driver": "default", "Config": [] },
                "Containers": {},
            })),
            _ => return Err(NetError::NoSuchNetwork(name.to_string())),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- endpoints

fn mac_of(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

fn host_veth_name(container_id: &str, network: &str) -> String {
    format!(
        "vs{}",
        &digest_hex(&format!("{container_id}\0{network}"))[..10]
    )
}

/// Connect the container `cid` (its rec must be in the state) to `net_name`.
fn add_endpoint(
    state: &mut State,
    cid: &str,
    net_name: &str,
    want_ip: Option<Ipv4Addr>,
    aliases: &[String],
) -> Result<Endpoint> {
    let net = state
        .networks
        .get(net_name)
        .ok_or_else(|| NetError::NoSuchNetwork(net_name.to_string()))?
        .clone();
    let rec = state
        .containers
        .get(cid)
        .ok_or_else(|| NetError::NoSuchContainer(cid.to_string()))?
        .clone();
    if rec.endpoints.contains_key(net_name) {
        return Err(NetError::Invalid(format!(
            "container {} is already connected to network {net_name}",
            rec.name
        )));
    }
    for a in aliases {
        if !hosts::valid_name(a) {
            return Err(NetError::Invalid(format!("invalid network alias {a:?}")));
        }
    }
    if net_name == DEFAULT_NETWORK && (want_ip.is_some() || !aliases.is_empty()) {
        return Err(NetError::Invalid(
            "--ip and --network-alias need a user-defined network (strata network create)".into(),
        ));
    }
    ensure_infra(&net)?;
    // Lease the address.
    let pool = &mut state
        .networks
        .get_mut(net_name)
        .ok_or_else(|| NetError::NoSuchNetwork(net_name.to_string()))?
        .pool;
    let ip = match want_ip {
        Some(ip) => {
            let (lo, hi) = net.subnet.host_range();
            if !(lo..=hi).contains(&u32::from(ip)) || ip == net.gateway {
                return Err(NetError::AddressOutside {
                    ip,
                    network: net_name.to_string(),
                    subnet: net.subnet.to_string(),
                });
            }
            if pool.leases.contains_key(&ip) {
                return Err(NetError::AddressInUse {
                    ip,
                    network: net_name.to_string(),
                });
            }
            pool.leases.insert(ip, cid.to_string());
            ip
        }
        None => pool
            .allocate(net.range(), net.gateway, cid)
            .ok_or_else(|| NetError::PoolExhausted(net_name.to_string()))?,
    };
    let ifname = (0..)
        .map(|i| format!("eth{i}"))
        .find(|n| rec.endpoints.values().all(|e| &e.ifname != n))
        .unwrap_or_else(|| "eth0".into());
    let ep = Endpoint {
        ip,
        mac: mac_of(ip),
        host_veth: host_veth_name(cid, net_name),
        ifname,
        aliases: aliases.to_vec(),
    };
    if let Err(e) = plumb(&net, &rec, &ep) {
        let _ = cmd::delete_link(&ep.host_veth);
        if let Some(n) = state.networks.get_mut(net_name) {
            n.pool.leases.remove(&ip);
        }
        return Err(e);
    }
    if let Some(c) = state.containers.get_mut(cid) {
        c.endpoints.insert(net_name.to_string(), ep.clone());
    }
    Ok(ep)
}

/// Create the veth pair and configure the container side.
fn plumb(net: &Network, rec: &ContainerRec, ep: &Endpoint) -> Result<()> {
    let mtu = net.mtu.to_string();
    let pid = rec.netns_pid.to_string();
    cmd::delete_link(&ep.host_veth)?;
    cmd::ip(&[
        "link",
        "add",
        "name",
        &ep.host_veth,
        "mtu",
        &mtu,
        "type",
        "veth",
        "peer",
        "name",
        &ep.ifname,
        "mtu",
        &mtu,
        "netns",
        &pid,
    ])?;
    cmd::ip(&[
        "link",
        "set",
        "dev",
        &ep.host_veth,
        "master",
        &net.bridge,
        "up",
    ])?;
    let mut script = format!(
        "link set dev lo up\nlink set dev {if} address {mac}\naddr add {ip}/{p} dev {if}\nlink set dev {if} up\n",
        if = ep.ifname,
        mac = ep.mac,
        ip = ep.ip,
        p = net.subnet.prefix,
    );
    if rec.endpoints.is_empty() {
        script.push_str(&format!("route replace default via {}\n", net.gateway));
    }
    cmd::ip_batch_in(rec.netns_pid, &script)
}

/// Remove one endpoint's veth and lease (missing veth is fine).
fn drop_endpoint(state: &mut State, cid: &str, net_name: &str) -> Result<()> {
    let ep = state
        .containers
        .get_mut(cid)
        .and_then(|c| c.endpoints.remove(net_name));
    if let Some(n) = state.networks.get_mut(net_name) {
        n.pool
            .leases
            .retain(|ip, owner| owner != cid || ep.as_ref().is_some_and(|e| e.ip != *ip));
    }
    match ep {
        Some(ep) => cmd::delete_link(&ep.host_veth),
        None => Ok(()),
    }
}

/// Remove a container record with all its endpoints and leases.
fn drop_container(state: &mut State, cid: &str) -> Result<()> {
    let nets: Vec<String> = state
        .containers
        .get(cid)
        .map(|c| c.endpoints.keys().cloned().collect())
        .unwrap_or_default();
    let mut first_err = None;
    for n in nets {
        if let Err(e) = drop_endpoint(state, cid, &n) {
            first_err.get_or_insert(e);
        }
    }
    for n in state.networks.values_mut() {
        n.pool.release_owner(cid);
    }
    state.containers.remove(cid);
    first_err.map_or(Ok(()), Err)
}

/// Remove every container whose supervisor is gone; returns their ids.
fn reap_stale(state: &mut State) -> Vec<String> {
    let dead: Vec<String> = state
        .containers
        .values()
        .filter(|c| !state::alive(c))
        .map(|c| c.id.clone())
        .collect();
    for id in &dead {
        if let Err(e) = drop_container(state, id) {
            tracing::warn!("cleaning up networking of dead container {id}: {e}");
        }
    }
    dead
}

/// The containers whose supervisor died but whose networking (veths,
/// leases, port rules, hosts entries) is still recorded: (id, name, what
/// they hold). Changes nothing.
pub fn stale_containers(state_dir: &Path) -> Result<Vec<(String, String, String)>> {
    let lk = state::lock(state_dir)?;
    Ok(lk
        .state
        .containers
        .values()
        .filter(|c| !state::alive(c))
        .map(|c| {
            let mut held: Vec<String> = c
                .endpoints
                .iter()
                .map(|(net, e)| format!("{net} {}", e.ip))
                .collect();
            if !c.ports.is_empty() {
                held.push(format!("{} published port(s)", c.ports.len()));
            }
            if held.is_empty() {
                held.push("a network record".into());
            }
            (c.id.clone(), c.name.clone(), held.join(", "))
        })
        .collect())
}

/// Remove veths, leases, port rules and hosts entries of every container
/// whose supervisor died; returns the ids cleaned. Cheap when nothing is
/// stale; any command may call it.
pub fn cleanup_stale(state_dir: &Path) -> Result<Vec<String>> {
    let mut lk = state::lock(state_dir)?;
    let dead = reap_stale(&mut lk.state);
    if !dead.is_empty() {
        commit(&lk)?;
    }
    Ok(dead)
}

// ---------------------------------------------------------------- ports

fn port_pool() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let parsed = range.and_then(|r| {
        let mut it = r.split_whitespace().map(|x| x.parse::<u16>().ok());
        Some((it.next()??, it.next()??))
    });
    match parsed {
        Some((a, b)) if a > 0 && a <= b => (a, b),
        _ => (32768, 60999),
    }
}

struct Publisher<'a> {
    state: &'a State,
    taken: Vec<PortBinding>,
    guards: Vec<PortGuard>,
}

impl Publisher<'_> {
    fn clash(&self, b: &PortBinding) -> Option<String> {
        for c in self.state.containers.values() {
            if c.ports.iter().any(|o| o.clashes(b)) {
                return Some(format!("published by container {}", c.name));
            }
        }
        self.taken
            .iter()
            .any(|o| o.clashes(b))
            .then(|| "published twice by this container".to_string())
    }

    /// Claim `b` or fail with why.
    fn claim(&mut self, b: PortBinding) -> Result<()> {
        let addr = SocketAddrV4::new(b.host_ip, b.host_port);
        if let Some(why) = self.clash(&b) {
            return Err(NetError::PortTaken {
                addr,
                proto: b.proto.to_string(),
                why,
            });
        }
        let guard = reserve(addr, b.proto)?;
        self.guards.push(guard);
        self.taken.push(b);
        Ok(())
    }

    /// Claim the first free port of `first..=last` for `ctr`.
    fn claim_any(&mut self, ip: Ipv4Addr, first: u16, last: u16, ctr: ExposedPort) -> Result<()> {
        for host_port in first..=last {
            let b = PortBinding {
                container_port: ctr.port,
                proto: ctr.proto,
                host_ip: ip,
                host_port,
            };
            if self.claim(b).is_ok() {
                return Ok(());
            }
        }
        Err(NetError::NoFreePort {
            first,
            last,
            proto: ctr.proto.to_string(),
        })
    }

    fn publish(&mut self, spec: &PortSpec) -> Result<()> {
        let ip = spec.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let (pool_first, pool_last) = port_pool();
        let ctr = spec.container_ports;
        for (i, port) in (ctr.first..=ctr.last).enumerate() {
            let e = ExposedPort {
                port,
                proto: spec.proto,
            };
            match spec.host_ports {
                None => self.claim_any(ip, pool_first, pool_last, e)?,
                Some(h) if h.len() == ctr.len() => {
                    // i < h.len() <= 65535, and first + i <= last.
                    let host_port = h.first + i as u16;
                    self.claim(PortBinding {
                        container_port: port,
                        proto: spec.proto,
                        host_ip: ip,
                        host_port,
                    })?
                }
                Some(h) => self.claim_any(ip, h.first, h.last, e)?,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- attach

fn endpoint_info(state: &State, net: &str, ep: &Endpoint) -> Option<EndpointInfo> {
    let n = state.networks.get(net)?;
    Some(EndpointInfo {
        network_id: n.id.clone(),
        ip: ep.ip,
        prefix_len: n.subnet.prefix,
        gateway: n.gateway,
        mac: ep.mac.clone(),
        interface: ep.ifname.clone(),
        aliases: ep.aliases.clone(),
    })
}

fn attachment_of(state: &State, c: &ContainerRec) -> Attachment {
    let owner = hosts::netns_owner(state, c);
    let networks: BTreeMap<String, EndpointInfo> = owner
        .endpoints
        .iter()
        .filter_map(|(n, ep)| endpoint_info(state, n, ep).map(|i| (n.clone(), i)))
        .collect();
    let primary = networks.values().next();
    let mode = match &c.mode {
        Mode::None => "none".to_string(),
        Mode::Host => "host".to_string(),
        Mode::Bridge(n) => n.clone(),
        Mode::Container(t) => format!("container:{t}"),
    };
    Attachment {
        mode,
        ip: primary.map(|p| p.ip),
        gateway: primary.map(|p| p.gateway),
        prefix_len: primary.map_or(0, |p| p.prefix_len),
        mac: primary.map(|p| p.mac.clone()),
        ports: owner.ports.clone(),
        networks,
        link_env: hosts::link_env(state, c),
        port_guards: Vec::new(),
    }
}

fn new_rec(
    ctx: &NetContext,
    netns_pid: i32,
    mode: Mode,
    req: &NetworkRequest,
) -> Result<ContainerRec> {
    let supervisor_start = state::process_start(ctx.supervisor_pid).ok_or_else(|| {
        NetError::Invalid(format!(
            "supervisor process {} of container {} is not running",
            ctx.supervisor_pid, ctx.container_name
        ))
    })?;
    let mut exposed = req.expose.clone();
    exposed.sort();
    exposed.dedup();
    Ok(ContainerRec {
        id: ctx.container_id.clone(),
        name: ctx.container_name.trim_start_matches('/').to_string(),
        hostname: ctx.hostname.clone(),
        hosts_file: ctx.hosts_file.clone(),
        supervisor_pid: ctx.supervisor_pid,
        supervisor_start,
        netns_pid,
        mode,
        endpoints: BTreeMap::new(),
        ports: Vec::new(),
        links: req.links.clone(),
        exposed,
    })
}

/// Set up networking for a container whose network namespace belongs to
/// process `netns_pid` (ignored for host mode), per `req`.
///
/// Creates the default bridge on first use, leases an address, creates a
/// veth pair (container side `eth0`, MAC `02:42:<ip>`, default route via the
/// gateway), reserves and DNATs published ports, writes the hosts file of
/// this and every other container, and records everything so [`detach`]
/// or [`cleanup_stale`] can undo it. On error nothing is left behind.
pub fn attach(ctx: &NetContext, netns_pid: i32, req: &NetworkRequest) -> Result<Attachment> {
    let mut lk = state::lock(&ctx.state_dir)?;
    reap_stale(&mut lk.state);
    let cid = ctx.container_id.clone();
    if lk.state.containers.contains_key(&cid) {
        drop_container(&mut lk.state, &cid)?;
    }
    if lk
        .state
        .containers
        .values()
        .any(|c| c.name == ctx.container_name)
        && !ctx.container_name.is_empty()
    {
        return Err(NetError::Invalid(format!(
            "a container named {} is already attached; remove it first",
            ctx.container_name
        )));
    }
    let has_ports = !req.publish.is_empty() || req.publish_all;
    let mode = match &req.mode {
        NetworkMode::None | NetworkMode::Container(_) if has_ports => {
            return Err(NetError::Invalid(format!(
                "ports cannot be published with --network {}",
                req.mode.as_docker()
            )))
        }
        NetworkMode::None => Mode::None,
        NetworkMode::Host => {
            if has_ports {
                tracing::warn!("published ports are discarded with --network host");
            }
            Mode::Host
        }
        NetworkMode::Bridge(name) => {
            let name = if name == "default" {
                DEFAULT_NETWORK
            } else {
                name.as_str()
            };
            if name == DEFAULT_NETWORK {
                ensure_default(&mut lk.state)?;
            }
            Mode::Bridge(find_network_key(&lk.state, name)?)
        }
        NetworkMode::Container(target) => {
            let t = lk
                .state
                .find_container(target)
                .ok_or_else(|| NetError::NoSuchContainer(target.clone()))?;
            Mode::Container(hosts::netns_owner(&lk.state, t).id.clone())
        }
    };
    let mut netns = netns_pid;
    if let Mode::Container(t) = &mode {
        netns = lk
            .state
            .containers
            .get(t)
            .map_or(netns_pid, |t| t.netns_pid);
    }
    if mode != Mode::Host && netns <= 0 {
        return Err(NetError::Invalid(format!(
            "invalid network namespace pid {netns}"
        )));
    }
    let rec = new_rec(ctx, netns, mode.clone(), req)?;
    for link in &rec.links {
        if hosts::resolve_link(&lk.state, &rec, &link.name).is_none()
            && !matches!(mode, Mode::Bridge(_))
        {
            return Err(NetError::Invalid(format!(
                "cannot link to {}: links need a bridge network",
                link.name
            )));
        }
    }
    lk.state.containers.insert(cid.clone(), rec);
    let result = attach_inner(&mut lk.state, &cid, &mode, req);
    match result {
        Ok(guards) => {
            if let Err(e) = commit(&lk) {
                let _ = drop_container(&mut lk.state, &cid);
                let _ = commit(&lk);
                return Err(e);
            }
            let rec = lk
                .state
                .containers
                .get(&cid)
                .ok_or_else(|| NetError::NoSuchContainer(cid.clone()))?;
            let mut att = attachment_of(&lk.state, rec);
            att.port_guards = guards;
            Ok(att)
        }
        Err(e) => {
            let _ = drop_container(&mut lk.state, &cid);
            Err(e)
        }
    }
}

fn attach_inner(
    state: &mut State,
    cid: &str,
    mode: &Mode,
    req: &NetworkRequest,
) -> Result<Vec<PortGuard>> {
    match mode {
        Mode::Host | Mode::Container(_) => return Ok(Vec::new()),
        Mode::None => {
            let pid = state.containers.get(cid).map_or(0, |c| c.netns_pid);
            cmd::ip_batch_in(pid, "link set dev lo up\n")?;
            return Ok(Vec::new());
        }
        Mode::Bridge(net) => {
            add_endpoint(state, cid, net, req.ip, &req.aliases)?;
        }
    }
    // Links must resolve now that we are on the network.
    if let Some(rec) = state.containers.get(cid) {
        for link in &rec.links {
            if hosts::resolve_link(state, rec, &link.name).is_none() {
                return Err(NetError::Invalid(format!(
                    "cannot link to {}: no running container of that name on a network shared with {}",
                    link.name, rec.name
                )));
            }
        }
    }
    let mut publisher = Publisher {
        state,
        taken: Vec::new(),
        guards: Vec::new(),
    };
    for spec in &req.publish {
        publisher.publish(spec)?;
    }
    if req.publish_all {
        let (first, last) = port_pool();
        let mut exposed = req.expose.clone();
        exposed.sort();
        exposed.dedup();
        for e in exposed {
            let done = publisher
                .taken
                .iter()
                .any(|b| b.container_port == e.port && b.proto == e.proto);
            if !done {
                publisher.claim_any(Ipv4Addr::UNSPECIFIED, first, last, e)?;
            }
        }
    }
    let Publisher { taken, guards, .. } = publisher;
    if let Some(rec) = state.containers.get_mut(cid) {
        rec.ports = taken;
    }
    Ok(guards)
}

/// Undo [`attach`] for a container: veths, leases, port rules, hosts
/// entries. Unknown containers are fine (already detached).
pub fn detach(state_dir: &Path, container_id: &str) -> Result<()> {
    let mut lk = state::lock(state_dir)?;
    let Some(id) = lk.state.find_container(container_id).map(|c| c.id.clone()) else {
        return Ok(());
    };
    let result = drop_container(&mut lk.state, &id);
    commit(&lk)?;
    result
}

/// `strata network connect`: connect a running container to a network.
pub fn connect(
    state_dir: &Path,
    network: &str,
    container: &str,
    opts: &ConnectOptions,
) -> Result<EndpointInfo> {
    let mut lk = state::lock(state_dir)?;
    reap_stale(&mut lk.state);
    let net = if network == "default" {
        DEFAULT_NETWORK
    } else {
        network
    };
    if net == DEFAULT_NETWORK {
        ensure_default(&mut lk.state)?;
    }
    let net = find_network_key(&lk.state, net)?;
    let rec = lk
        .state
        .find_container(container)
        .ok_or_else(|| NetError::NoSuchContainer(container.to_string()))?;
    if !matches!(rec.mode, Mode::Bridge(_)) {
        return Err(NetError::Invalid(format!(
            "container {} uses its network mode exclusively and cannot join other networks",
            rec.name
        )));
    }
    let cid = rec.id.clone();
    let ep = add_endpoint(&mut lk.state, &cid, &net, opts.ip, &opts.aliases)?;
    commit(&lk)?;
    endpoint_info(&lk.state, &net, &ep).ok_or_else(|| NetError::NoSuchNetwork(net.clone()))
}

/// `strata network disconnect`.
pub fn disconnect(state_dir: &Path, network: &str, container: &str) -> Result<()> {
    let mut lk = state::lock(state_dir)?;
    reap_stale(&mut lk.state);
    let net = if network == "default" {
        DEFAULT_NETWORK
    } else {
        network
    };
    let net = find_network_key(&lk.state, net)?;
    let rec = lk
        .state
        .find_container(container)
        .ok_or_else(|| NetError::NoSuchContainer(container.to_string()))?;
    if !rec.endpoints.contains_key(&net) {
        return Err(NetError::Invalid(format!(
            "container {} is not connected to network {net}",
            rec.name
        )));
    }
    let cid = rec.id.clone();
    let result = drop_endpoint(&mut lk.state, &cid, &net);
    commit(&lk)?;
    result
}

/// What `inspect` shows for a container (by id, name or id prefix), or
/// `None` when it is not attached.
pub fn container_info(state_dir: &Path, container: &str) -> Result<Option<Attachment>> {
    let lk = state::lock(state_dir)?;
    Ok(lk
        .state
        .find_container(container)
        .map(|c| attachment_of(&lk.state, c)))
}

/// `strata port NAME [PORT[/PROTO]]`: lines like `80/tcp -> 0.0.0.0:32768`.
pub fn port_lines(state_dir: &Path, container: &str, filter: Option<&str>) -> Result<Vec<String>> {
    let lk = state::lock(state_dir)?;
    let rec = lk
        .state
        .find_container(container)
        .ok_or_else(|| NetError::NoSuchContainer(container.to_string()))?;
    let rec = hosts::netns_owner(&lk.state, rec);
    let wanted = match filter {
        Some(f) => Some(ExposedPort::parse(f)?),
        None => None,
    };
    let mut ports = rec.ports.clone();
    ports.sort();
    Ok(ports
        .iter()
        .filter(|b| {
            wanted.as_ref().is_none_or(|w| {
                w.iter()
                    .any(|e| e.port == b.container_port && e.proto == b.proto)
            })
        })
        .map(|b| b.line())
        .collect())
}
