//! `strata store` commands.

use std::process::ExitCode;

use super::Globals;

/// `store` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Run one `store` command.
pub fn run(cmd: Command, _globals: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {}
}
