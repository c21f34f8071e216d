//! Registry commands: `strata pull`, `push`, `login`, `logout`.

use std::process::ExitCode;

use super::Globals;

/// Registry subcommands (top level: `strata pull ...`).
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Run one registry command.
pub fn run(cmd: Command, _globals: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {}
}
