//! `strata image` commands.

use std::process::ExitCode;

use super::Globals;

/// `image` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Run one `image` command.
pub fn run(cmd: Command, _globals: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {}
}
