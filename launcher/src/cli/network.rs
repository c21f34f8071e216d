//! `strata network` commands: create, ls, inspect, rm, prune, connect,
//! disconnect. The work is done by [`crate::net`].

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::Globals;
use crate::net::{self, ConnectOptions, CreateNetwork, Subnet};

/// `network` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a network.
    Create {
        /// Driver: `bridge` (this host) or `overlay` (VXLAN to --peer hosts).
        #[arg(short = 'd', long, default_value = "bridge", value_parser = ["bridge", "overlay"])]
        driver: String,
        /// Subnet in CIDR form (default: a free /16 of 172.17-31 or /20 of 192.168).
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (default: first address of the ip range or subnet).
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        /// Hand out container addresses from this part of the subnet only.
        #[arg(long)]
        ip_range: Option<String>,
        /// Overlay: underlay address of another host (repeatable).
        #[arg(long = "peer", value_name = "HOST_IP")]
        peers: Vec<Ipv4Addr>,
        /// Overlay: VXLAN id (default: derived from the name).
        #[arg(long)]
        vni: Option<u32>,
        /// Overlay: local underlay address to send from.
        #[arg(long)]
        local: Option<Ipv4Addr>,
        /// MTU of the network's interfaces (default 1500, overlay 1450).
        #[arg(long)]
        mtu: Option<u32>,
        /// Do not masquerade traffic leaving the network.
        #[arg(long)]
        no_masquerade: bool,
        /// Network name.
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only print ids.
        #[arg(short, long)]
        quiet: bool,
        /// Print full ids.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show networks as JSON.
    Inspect {
        /// Network names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        /// Network names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every user network without containers.
    Prune {
        /// Do not ask (accepted for docker compatibility; never asks).
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a running container to a network.
    Connect {
        /// Fixed address on the network.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Network alias (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Network name or id.
        network: String,
        /// Container name or id.
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        /// Accepted for docker compatibility.
        #[arg(short, long)]
        force: bool,
        /// Network name or id.
        network: String,
        /// Container name or id.
        container: String,
    },
}

/// Run one `network` command.
pub fn run(cmd: Command, globals: &Globals) -> anyhow::Result<ExitCode> {
    let state = globals.state_dir();
    // Containers whose supervisor was killed leave rules behind; clean first.
    net::cleanup_stale(&state).context("cleaning up networking of dead containers")?;
    match cmd {
        Command::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            peers,
            vni,
            local,
            mtu,
            no_masquerade,
            name,
        } => {
            let overlay = driver == "overlay";
            if !overlay && (!peers.is_empty() || vni.is_some() || local.is_some()) {
                bail!("--peer, --vni and --local need -d overlay");
            }
            let req = CreateNetwork {
                name,
                overlay,
                subnet: subnet.as_deref().map(Subnet::parse).transpose()?,
                gateway,
                ip_range: ip_range.as_deref().map(Subnet::parse).transpose()?,
                peers,
                vni,
                local,
                mtu,
                no_masquerade,
            };
            println!("{}", net::create_network(&state, &req)?);
        }
        Command::Ls { quiet, no_trunc } => {
            let list = net::list_networks(&state)?;
            let id = |s: &str| -> String {
                if no_trunc {
                    s.to_string()
                } else {
                    s.chars().take(12).collect()
                }
            };
            if quiet {
                for n in &list {
                    println!("{}", id(&n.id));
                }
            } else {
                let w = if no_trunc { 64 } else { 12 };
                let row = |id: &str, name: &str, driver: &str, scope: &str| {
                    println!("{id:<w$}   {name:<20} {driver:<10} {scope}");
                };
                row("NETWORK ID", "NAME", "DRIVER", "SCOPE");
                for n in &list {
                    row(&id(&n.id), &n.name, &n.driver, &n.scope);
                }
            }
        }
        Command::Inspect { names } => {
            let v = net::inspect_networks(&state, &names)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Rm { names } => {
            let mut failed = false;
            for n in names {
                match net::remove_network(&state, &n) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("strata: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Prune { force: _ } => {
            let removed = net::prune_networks(&state)?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
            }
        }
        Command::Connect {
            ip,
            aliases,
            network,
            container,
        } => {
            net::connect(
                &state,
                &network,
                &container,
                &ConnectOptions { ip, aliases },
            )?;
        }
        Command::Disconnect {
            force: _,
            network,
            container,
        } => {
            net::disconnect(&state, &network, &container)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
