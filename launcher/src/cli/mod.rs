//! The `strata` command line: global flags and dispatch to command groups.
//!
//! Each command group owns one module: `container` (run, ps, exec...),
//! `image`, `store`, `network`, `volume`, `system`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod completion;
pub mod container;
pub mod image;
pub mod network;
pub mod oci;
pub mod registry;
pub mod store;
pub mod system;
pub mod volume;

/// strata: layered images on a userspace union filesystem, run as containers.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    /// Global options, accepted before or after the subcommand.
    #[command(flatten)]
    pub globals: Globals,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Globals {
    /// Store directory (default: /var/lib/strata for root,
    /// $XDG_DATA_HOME/strata or ~/.local/share/strata otherwise).
    #[arg(long, global = true, env = "STRATA_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// State directory for running containers (default: /run/strata for root,
    /// $XDG_RUNTIME_DIR/strata otherwise).
    #[arg(long, global = true, env = "STRATA_STATE", value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Log debug detail to stderr.
    #[arg(long, global = true)]
    pub debug: bool,
}

impl Globals {
    /// The store directory to use.
    pub fn store_dir(&self) -> PathBuf {
        if let Some(dir) = &self.store {
            return dir.clone();
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/strata");
        }
        if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("strata");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".local/share/strata")
    }

    /// The state directory to use.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(dir) = &self.state {
            return dir.clone();
        }
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/run/strata");
        }
        match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d).join("strata"),
            None => PathBuf::from(format!("/tmp/strata-{}", nix::unistd::geteuid())),
        }
    }
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Container commands (run, create, start, ps, exec...).
    #[command(flatten)]
    Container(container::Command),
    /// Registry commands (pull, push, login, logout).
    #[command(flatten)]
    Registry(registry::Command),
    /// Manage images.
    #[command(subcommand)]
    Image(image::Command),
    /// Inspect and maintain the layer store.
    #[command(subcommand)]
    Store(store::Command),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::Command),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volume::Command),
    /// System-wide operations.
    #[command(subcommand)]
    System(system::Command),
    /// The runc-compatible OCI runtime (create, start, state, kill, delete).
    Oci(oci::Args),
    /// Print a shell completion script (bash, zsh, fish...).
    Completion(completion::CompletionArgs),
    /// Print the manual page, or write one per command into a directory.
    Man(completion::ManArgs),
}

/// Parse the command line, run the command, and turn errors into a message
/// and exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = if cli.globals.debug { "debug" } else { "warn" };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let result = match cli.command {
        Command::Container(cmd) => container::run(cmd, &cli.globals),
        Command::Registry(cmd) => registry::run(cmd, &cli.globals),
        Command::Image(cmd) => image::run(cmd, &cli.globals),
        Command::Store(cmd) => store::run(cmd, &cli.globals),
        Command::Network(cmd) => network::run(cmd, &cli.globals),
        Command::Volume(cmd) => volume::run(cmd, &cli.globals),
        Command::System(cmd) => system::run(cmd, &cli.globals),
        Command::Oci(args) => oci::run(args),
        Command::Completion(args) => completion::run_completion(args),
        Command::Man(args) => completion::run_man(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("strata: {err:#}");
            ExitCode::from(125)
        }
    }
}
