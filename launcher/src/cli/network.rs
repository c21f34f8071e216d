//! `strata network` commands.

use std::process::ExitCode;

use super::Globals;

/// `network` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Run one `network` command.
pub fn run(cmd: Command, _globals: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {}
}
