//! `strata container` commands.

use std::process::ExitCode;

use super::Globals;

/// `container` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Run one `container` command.
pub fn run(cmd: Command, _globals: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {}
}
