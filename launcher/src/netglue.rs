//! The container runtime's side of networking: turns a container's network
//! options into a [`net::NetworkRequest`], attaches the init's network
//! namespace through the network module (bridge networks), and keeps the
//! attachment alive while the container runs. `none` (own namespace, only
//! lo), `host` (no namespace) and `container:NAME` (join its namespace) are
//! handled here without the network module's state.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::container::{self, Container, ContainerConfig};
use crate::net::{self, ExposedPort, Link, NetContext, NetworkMode, NetworkRequest, PortSpec};

/// The attachment of this supervisor's container (holds host ports).
static ATTACHMENT: Mutex<Option<net::Attachment>> = Mutex::new(None);

/// A container's parsed network choice.
#[derive(Debug, Clone)]
pub struct Net {
    /// The mode.
    pub mode: NetworkMode,
    /// The full request for the network module.
    pub request: NetworkRequest,
}

impl Net {
    /// Whether the container gets a network namespace of its own.
    pub fn own_netns(&self) -> bool {
        !matches!(self.mode, NetworkMode::Host | NetworkMode::Container(_))
    }
}

/// Parse and check the network options of `cfg`.
pub fn mode(cfg: &ContainerConfig) -> Result<Net> {
    let n = &cfg.network;
    let mode_str = if n.mode.is_empty() {
        net::DEFAULT_NETWORK
    } else {
        n.mode.as_str()
    };
    let mode = NetworkMode::parse(mode_str)?;
    let mut request = NetworkRequest {
        mode: mode.clone(),
        publish_all: n.publish_all,
        ..Default::default()
    };
    for p in &n.publish {
        request.publish.push(PortSpec::parse(p)?);
    }
    for l in &n.links {
        request.links.push(Link::parse(l)?);
    }
    for e in &n.exposed {
        request.expose.extend(ExposedPort::parse(e)?);
    }
    if let Some(ip) = &n.ip {
        request.ip = Some(
            ip.parse()
                .with_context(|| format!("--ip {ip}: not an IPv4 address"))?,
        );
    }
    request.aliases = n.aliases.clone();
    if matches!(mode, NetworkMode::None | NetworkMode::Container(_))
        && (!request.publish.is_empty() || n.publish_all)
    {
        bail!("ports cannot be published with --network {mode_str}");
    }
    Ok(Net { mode, request })
}

/// The network namespace file to join for `container:NAME`.
pub fn join_path(c: &Container, store: &Path, state: &Path) -> Result<Option<PathBuf>> {
    let m = mode(&c.config)?;
    let NetworkMode::Container(target) = &m.mode else {
        return Ok(None);
    };
    let t = container::find(store, state, target)?;
    if !t.is_live() || t.state.pid <= 0 {
        bail!("cannot join the network of container {target}: it is not running");
    }
    Ok(Some(PathBuf::from(format!("/proc/{}/ns/net", t.state.pid))))
}

/// The hosts file the network module keeps for bridge containers.
pub fn hosts_file(c: &Container) -> PathBuf {
    c.paths.dir.join("hosts")
}

/// Attach the namespace of `pid`; returns docker's link variables.
pub fn attach(c: &Container, state: &Path, pid: i32, n: &Net) -> Result<Vec<String>> {
    if !matches!(n.mode, NetworkMode::Bridge(_)) {
        return Ok(Vec::new());
    }
    let ctx = NetContext::new(
        state,
        c.config.id.clone(),
        c.config.name.clone(),
        c.config.hostname.clone(),
        Some(hosts_file(c)),
    );
    let att = net::attach(&ctx, pid, &n.request).with_context(|| {
        format!(
            "attaching {} to network {}",
            c.config.name,
            n.mode.as_docker()
        )
    })?;
    let env = att
        .link_env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    *ATTACHMENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(att);
    Ok(env)
}

/// Detach (idempotent; also used by `rm` after a supervisor died).
pub fn detach(c: &Container, state: &Path) {
    if let Ok(m) = mode(&c.config) {
        if matches!(m.mode, NetworkMode::Bridge(_)) {
            if let Err(e) = net::detach(state, &c.config.id) {
                tracing::warn!("detaching {} from its network: {e}", c.config.name);
            }
        }
    }
    *ATTACHMENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// docker's `NetworkSettings` for inspect.
pub fn settings(c: &Container, state: &Path) -> serde_json::Value {
    if let Ok(Some(att)) = net::container_info(state, &c.config.id) {
        if c.is_live() {
            return att.network_settings();
        }
    }
    let mode = if c.config.network.mode.is_empty() {
        net::DEFAULT_NETWORK.to_string()
    } else {
        c.config.network.mode.clone()
    };
    serde_json::json!({
        "NetworkMode": mode, "IPAddress": "", "IPPrefixLen": 0, "Gateway": "",
        "MacAddress": "", "Ports": {}, "Networks": {},
    })
}
