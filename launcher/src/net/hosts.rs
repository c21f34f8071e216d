//! Container `/etc/hosts` files (names of peers, aliases and links) and
//! docker's link environment variables.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use super::state::{ContainerRec, Mode, State};
use super::{NetError, Result, DEFAULT_NETWORK};

/// Is `name` usable as a host name / alias?
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The record whose network namespace `c` uses (itself, or the target of
/// `container:` mode).
pub(crate) fn netns_owner<'a>(state: &'a State, c: &'a ContainerRec) -> &'a ContainerRec {
    match &c.mode {
        Mode::Container(target) => state.containers.get(target).unwrap_or(c),
        _ => c,
    }
}

/// Resolve a link of `c` to the target and its address on a shared network.
pub(crate) fn resolve_link<'a>(
    state: &'a State,
    c: &ContainerRec,
    target_name: &str,
) -> Option<(&'a ContainerRec, Ipv4Addr)> {
    let target = state.containers.values().find(|t| t.name == target_name)?;
    let target = netns_owner(state, target);
    let me = netns_owner(state, c);
    me.endpoints
        .keys()
        .find_map(|net| target.endpoints.get(net).map(|ep| (target, ep.ip)))
}

/// The hosts file of `c`.
pub(crate) fn render(state: &State, c: &ContainerRec) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if c.mode == Mode::Host {
        // Host mode: the host's own file.
        return std::fs::read_to_string("/etc/hosts").unwrap_or(out);
    }
    let me = netns_owner(state, c);
    match me.endpoints.values().next() {
        Some(ep) if c.hostname == short(&c.id) => {
            out.push_str(&format!("{}\t{}\n", ep.ip, c.hostname))
        }
        Some(ep) => out.push_str(&format!("{}\t{} {}\n", ep.ip, c.hostname, short(&c.id))),
        None => out.push_str(&format!("127.0.1.1\t{}\n", c.hostname)),
    }
    let mut lines = Vec::new();
    for link in &me.links {
        if let Some((target, ip)) = resolve_link(state, me, &link.name) {
            let mut names = vec![link.alias.clone()];
            if link.name != link.alias {
                names.push(link.name.clone());
            }
            names.push(short(&target.id).to_string());
            lines.push(format!("{ip}\t{}", names.join(" ")));
        }
    }
    for net in me.endpoints.keys() {
        if net == DEFAULT_NETWORK {
            continue;
        }
        for peer in state.containers.values() {
            if peer.id == me.id || !matches!(peer.mode, Mode::Bridge(_)) {
                continue;
            }
            let Some(pep) = peer.endpoints.get(net) else {
                continue;
            };
            let mut names = vec![peer.name.clone()];
            names.extend(pep.aliases.iter().cloned());
            names.push(short(&peer.id).to_string());
            names.dedup();
            lines.push(format!("{}\t{}", pep.ip, names.join(" ")));
            // Containers sharing the peer's namespace answer there too.
            for sharer in state.containers.values() {
                if sharer.mode == Mode::Container(peer.id.clone()) {
                    lines.push(format!("{}\t{}", pep.ip, sharer.name));
                }
            }
        }
    }
    lines.dedup();
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Write `content` into `path` in place (same inode, so a bind mount of the
/// file sees it): write from offset 0, then cut off any old tail.
pub(crate) fn write_in_place(path: &Path, content: &str) -> Result<()> {
    let io = |source| NetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    f.write_all(content.as_bytes()).map_err(io)?;
    f.set_len(content.len() as u64).map_err(io)?;
    Ok(())
}

/// Rewrite every attached container's hosts file. A file that cannot be
/// written (container gone) is skipped with a warning.
pub(crate) fn sync_all(state: &State) {
    for c in state.containers.values() {
        if let Some(path) = &c.hosts_file {
            if let Err(e) = write_in_place(path, &render(state, c)) {
                tracing::warn!("cannot update hosts file of container {}: {e}", c.name);
            }
        }
    }
}

fn env_key(alias: &str) -> String {
    alias
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// docker's link variables of `c`: `ALIAS_NAME`, `ALIAS_PORT`,
/// `ALIAS_PORT_<p>_<PROTO>[_ADDR|_PORT|_PROTO]` for each port the target
/// exposes or publishes.
pub(crate) fn link_env(state: &State, c: &ContainerRec) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for link in &c.links {
        let Some((target, ip)) = resolve_link(state, c, &link.name) else {
            continue;
        };
        let key = env_key(&link.alias);
        env.push((format!("{key}_NAME"), format!("/{}/{}", c.name, link.alias)));
        let mut ports: Vec<(u16, String)> = target
            .exposed
            .iter()
            .map(|e| (e.port, e.proto.to_string()))
            .chain(
                target
                    .ports
                    .iter()
                    .map(|b| (b.container_port, b.proto.to_string())),
            )
            .collect();
        ports.sort();
        ports.dedup();
        if let Some((port, proto)) = ports.first() {
            env.push((format!("{key}_PORT"), format!("{proto}://{ip}:{port}")));
        }
        for (port, proto) in &ports {
            let p = format!("{key}_PORT_{port}_{}", proto.to_ascii_uppercase());
            env.push((p.clone(), format!("{proto}://{ip}:{port}")));
            env.push((format!("{p}_ADDR"), ip.to_string()));
            env.push((format!("{p}_PORT"), port.to_string()));
            env.push((format!("{p}_PROTO"), proto.clone()));
        }
    }
    env
}
