//! `strata volume` commands.

use std::process::ExitCode;

use super::Globals;

/// `volume` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Run one `volume` command.
pub fn run(cmd: Command, _globals: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {}
}
