//! `strata system` commands: `boot` and `shutdown`, strata's answer to a
//! daemon restart (there is no daemon); `check` and `prune` for what killed
//! supervisors leave behind (see [`crate::housekeeping`]).
//!
//! `system shutdown` (for the host's stop unit) stops every running
//! container with its own stop timeout and marks it as stopped by shutdown.
//! `system boot` (for the host's start unit) then starts what docker starts
//! after its daemon restarts: `always` containers even if they were stopped
//! by hand, `unless-stopped` ones unless they were stopped by hand before the
//! shutdown, and `on-failure` ones whose last exit was non-zero.

use std::process::ExitCode;

use anyhow::Result;

use super::Globals;
use crate::container::{self, Status};
use crate::lifecycle::{self, Dirs};
use crate::{housekeeping, restart};

/// `system` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start the containers whose restart policy asks for it after a host
    /// start (docker's rules after a daemon restart).
    Boot,
    /// Stop every running container with its stop timeout, remembering
    /// which ones `boot` should bring back.
    Shutdown,
    /// List what containers whose supervisor was killed left behind
    /// (mounts, cgroups, processes, networking, stray state); exit status 1
    /// when there is any.
    ///
    /// Example: `strata system check`
    Check,
    /// Remove what `system check` lists. Unlike docker's `system prune`, no
    /// container, image, volume or network is removed: stopped containers
    /// keep their rw layer.
    ///
    /// Example: `strata system prune`
    Prune,
}

/// Run one `system` command.
pub fn run(cmd: Command, g: &Globals) -> Result<ExitCode> {
    let d = Dirs::new(&g.store_dir(), &g.state_dir())?;
    let mut failed = false;
    match cmd {
        Command::Check => {
            let found = housekeeping::find(&d)?;
            if found.is_empty() {
                println!("no leftovers");
            } else {
                print_table(&found);
                failed = true;
            }
        }
        Command::Prune => {
            let found = housekeeping::find(&d)?;
            if found.is_empty() {
                println!("nothing to prune");
            }
            for (it, res) in housekeeping::remove(&d, &found) {
                match res {
                    Ok(()) => println!(
                        "removed {} of {}: {}",
                        it.kind.as_str(),
                        it.container,
                        it.detail
                    ),
                    Err(e) => {
                        eprintln!(
                            "strata: could not remove {} of {} ({}): {e:#}",
                            it.kind.as_str(),
                            it.container,
                            it.detail
                        );
                        failed = true;
                    }
                }
            }
        }
        Command::Shutdown => {
            for c in container::list(&d.store, &d.state)? {
                if !c.is_live() {
                    continue;
                }
                let was_manual = c.state.manually_stopped;
                match lifecycle::stop(&c, None) {
                    Ok(()) => {
                        let mut c = c.clone();
                        c.update_state(|s| {
                            s.manually_stopped = was_manual;
                            s.stopped_by_shutdown = true;
                        })?;
                        println!("{}", c.config.name);
                    }
                    Err(e) => {
                        eprintln!("strata: stopping {}: {e:#}", c.config.name);
                        failed = true;
                    }
                }
            }
        }
        Command::Boot => {
            for mut c in container::list(&d.store, &d.state)? {
                if c.is_live() || c.state.status == Status::Created {
                    continue;
                }
                let s = &c.state;
                if !restart::restart_at_boot(
                    &c.config.restart,
                    s.exit_code,
                    s.manually_stopped,
                    s.stopped_by_shutdown,
                ) {
                    continue;
                }
                let count = s.restart_count;
                match lifecycle::start(&d, &mut c, false) {
                    Ok(0) => {
                        c.update_state(|s| s.restart_count = count)?;
                        println!("{}", c.config.name);
                    }
                    Ok(code) => {
                        eprintln!(
                            "strata: starting {} failed with exit code {code}",
                            c.config.name
                        );
                        failed = true;
                    }
                    Err(e) => {
                        eprintln!("strata: starting {}: {e:#}", c.config.name);
                        failed = true;
                    }
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_table(items: &[housekeeping::Leftover]) {
    let w = items
        .iter()
        .map(|i| i.container.len())
        .max()
        .unwrap_or(0)
        .max("CONTAINER".len());
    println!("{:<10} {:<w$} DETAIL", "KIND", "CONTAINER");
    for i in items {
        println!("{:<10} {:<w$} {}", i.kind.as_str(), i.container, i.detail);
    }
}
