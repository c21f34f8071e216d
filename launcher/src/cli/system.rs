//! `strata system` commands: `boot` and `shutdown`, strata's answer to a
//! daemon restart (there is no daemon).
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
use crate::restart;

/// `system` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start the containers whose restart policy asks for it after a host
    /// start (docker's rules after a daemon restart).
    Boot,
    /// Stop every running container with its stop timeout, remembering
    /// which ones `boot` should bring back.
    Shutdown,
}

/// Run one `system` command.
pub fn run(cmd: Command, g: &Globals) -> Result<ExitCode> {
    let d = Dirs::new(&g.store_dir(), &g.state_dir())?;
    let mut failed = false;
    match cmd {
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
