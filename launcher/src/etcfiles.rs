//! The init layer: /etc/hostname, /etc/hosts and /etc/resolv.conf written
//! in the container's own directory and bind-mounted over the image's
//! files, which stay untouched.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::container::Container;
use crate::net::NetworkMode;
use crate::netglue;

/// Write the three files (keeping a hosts file the network module manages)
/// and return (host path, container path) pairs.
pub fn write(c: &Container) -> Result<Vec<(PathBuf, String)>> {
    let dir = &c.paths.dir;
    let hostname = dir.join("hostname");
    fs::write(&hostname, format!("{}\n", c.config.hostname))
        .with_context(|| format!("writing {}", hostname.display()))?;
    let mode = netglue::mode(&c.config)?.mode;
    let hosts = netglue::hosts_file(c);
    match mode {
        NetworkMode::Bridge(_) => {
            // The network module writes it on attach; make sure it exists.
            if !hosts.exists() {
                fs::write(&hosts, base_hosts(&c.config.hostname))?;
            }
        }
        NetworkMode::Host => {
            let host = fs::read_to_string("/etc/hosts").unwrap_or_else(|_| base_hosts(""));
            fs::write(&hosts, host)?;
        }
        _ => fs::write(&hosts, base_hosts(&c.config.hostname))?,
    }
    let resolv = dir.join("resolv.conf");
    fs::write(&resolv, resolv_conf(matches!(mode, NetworkMode::Host)))
        .with_context(|| format!("writing {}", resolv.display()))?;
    Ok(vec![
        (hostname, "/etc/hostname".to_string()),
        (hosts, "/etc/hosts".to_string()),
        (resolv, "/etc/resolv.conf".to_string()),
    ])
}

fn base_hosts(hostname: &str) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        s.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    s
}

/// The host's resolv.conf; outside host networking, loopback name servers
/// (unreachable from the container) are dropped and, if none remain,
/// docker's public fallbacks are used.
fn resolv_conf(host_net: bool) -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if host_net {
        return host;
    }
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("nameserver") {
            let addr = addr.trim();
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}
