//! `strata system` commands.

use std::process::ExitCode;

use super::Globals;

/// `system` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Run one `system` command.
pub fn run(cmd: Command, _globals: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {}
}
