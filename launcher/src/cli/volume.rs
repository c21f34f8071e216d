//! `strata volume` commands: create, ls, inspect, rm, prune.

use std::process::ExitCode;

use anyhow::Result;

use super::Globals;
use crate::{timefmt, volumes};

/// `volume` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a named volume (a random name when none is given).
    Create {
        /// Labels `KEY=VALUE`.
        #[arg(short, long)]
        label: Vec<String>,
        /// Name.
        name: Option<String>,
    },
    /// List volumes.
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses them).
    Rm {
        /// Remove even when in use.
        #[arg(short, long)]
        force: bool,
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune {
        /// Also named volumes (default: anonymous only, as docker does).
        #[arg(short, long)]
        all: bool,
        /// Do not ask (strata never asks; accepted for docker habits).
        #[arg(short, long)]
        force: bool,
    },
}

fn inspect_json(store: &std::path::Path, v: &volumes::Volume) -> serde_json::Value {
    serde_json::json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": volumes::data_dir(store, &v.name),
        "CreatedAt": timefmt::rfc3339(v.created_nanos),
        "Labels": v.labels,
        "Scope": "local",
        "Anonymous": v.anonymous,
    })
}

/// Run one `volume` command.
pub fn run(cmd: Command, g: &Globals) -> Result<ExitCode> {
    let store = g.store_dir();
    let state = g.state_dir();
    match cmd {
        Command::Create { label, name } => {
            let name = match name {
                Some(n) => n,
                None => crate::container::new_id()?,
            };
            let (v, _) = volumes::ensure(&store, &name, false, &label)?;
            println!("{}", v.name);
        }
        Command::Ls { quiet } => {
            let list = volumes::list(&store)?;
            if !quiet {
                println!("{:<8} VOLUME NAME", "DRIVER");
            }
            for v in list {
                if quiet {
                    println!("{}", v.name);
                } else {
                    println!("{:<8} {}", v.driver, v.name);
                }
            }
        }
        Command::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(inspect_json(&store, &volumes::load(&store, n)?));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Rm { force, names } => {
            let mut failed = false;
            for n in &names {
                match volumes::remove(&store, &state, n, force) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("strata: {e:#}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Prune { all, force: _ } => {
            let mut freed = 0u64;
            for v in volumes::list(&store)? {
                if !all && !v.anonymous {
                    continue;
                }
                if volumes::users(&store, &state, &v.name)?.is_empty() {
                    freed += crate::lifecycle::dir_size(&volumes::data_dir(&store, &v.name));
                    volumes::remove(&store, &state, &v.name, false)?;
                    println!("{}", v.name);
                }
            }
            println!(
                "Total reclaimed space: {}",
                crate::cli::container::human_bytes(freed)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
