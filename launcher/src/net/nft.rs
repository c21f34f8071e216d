//! The nftables table `ip strata`, generated whole from the state.
//!
//! * `prerouting`/`output` (nat): DNAT of each published port to the
//!   container; `output` covers connections made on the host itself,
//!   including to 127.0.0.1 (with `route_localnet` on the bridges).
//! * `postrouting` (nat): masquerade loopback sources going into a bridge
//!   (the only case where the client address cannot be kept: 127.0.0.1 is
//!   not routable in the container) and, for networks with masquerading,
//!   traffic from the subnet leaving through another interface.
//!   Traffic from a network back into the same network after DNAT (a
//!   container using a published port) is masqueraded too (hairpin).
//! * `forward` (filter): traffic between two different strata networks is
//!   dropped, so networks are isolated from each other.

use std::fmt::Write;

use super::cmd;
use super::state::State;
use super::Result;

/// The nft script that replaces the table with the state's rules (or
/// removes it when there is nothing to do).
pub(crate) fn render(state: &State) -> String {
    let mut s = String::from("table ip strata {}\ndelete table ip strata\n");
    if state.networks.is_empty() && state.containers.values().all(|c| c.ports.is_empty()) {
        return s;
    }
    let mut dnat = String::new();
    for c in state.containers.values() {
        let Some(ip) = c.endpoints.values().next().map(|e| e.ip) else {
            continue;
        };
        for b in &c.ports {
            let dst = if b.host_ip.is_unspecified() {
                "fib daddr type local".to_string()
            } else {
                format!("ip daddr {}", b.host_ip)
            };
            let _ = writeln!(
                dnat,
                "    {dst} {p} dport {} dnat to {ip}:{} comment \"{}\"",
                b.host_port,
                b.container_port,
                c.id.get(..12).unwrap_or(&c.id),
                p = b.proto,
            );
        }
    }
    let mut post = String::new();
    let mut forward = String::new();
    let bridges: Vec<&str> = state.networks.values().map(|n| n.bridge.as_str()).collect();
    for n in state.networks.values() {
        let _ = writeln!(
            post,
            "    oifname \"{}\" ip saddr 127.0.0.0/8 masquerade",
            n.bridge
        );
        // Hairpin: a container reaching a published port of its own network
        // through a host address; without this the reply would bypass the host.
        let _ = writeln!(
            post,
            "    oifname \"{}\" ip saddr {} ct status dnat masquerade",
            n.bridge, n.subnet
        );
        if n.masquerade {
            let _ = writeln!(
                post,
                "    ip saddr {} oifname != \"{}\" masquerade",
                n.subnet, n.bridge
            );
        }
        let others: Vec<String> = bridges
            .iter()
            .filter(|b| **b != n.bridge)
            .map(|b| format!("\"{b}\""))
            .collect();
        if !others.is_empty() {
            let _ = writeln!(
                forward,
                "    iifname \"{}\" oifname {{ {} }} drop",
                n.bridge,
                others.join(", ")
            );
        }
    }
    let _ = write!(
        s,
        "table ip strata {{\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{post}  }}\n\
         \x20 chain forward {{\n    type filter hook forward priority filter; policy accept;\n{forward}  }}\n\
         }}\n"
    );
    s
}

/// Replace the table with the state's rules.
pub(crate) fn apply(state: &State) -> Result<()> {
    cmd::nft_apply(&render(state))
}
