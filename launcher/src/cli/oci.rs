//! `strata oci`: the runc-compatible OCI runtime command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};

use crate::oci::{self, ops};

/// `strata oci [--root DIR] [--log FILE] [--log-format text|json] COMMAND`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    strata oci create --bundle /srv/bundle c1\n  \
    strata oci start c1\n  \
    strata oci state c1\n  \
    strata oci kill c1 KILL\n  \
    strata oci delete --force c1")]
pub struct Args {
    /// State directory of the runtime (default /run/strata-oci for root).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Append errors to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of --log lines.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Accepted for runc compatibility; systemd cgroups are not supported.
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// The operation.
    #[command(subcommand)]
    pub command: Command,
}

/// Format of the --log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `time level=error msg="..."`.
    Text,
    /// One JSON object per line.
    Json,
}

/// runc's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container from a bundle; it waits for `start`.
    Create {
        /// Container id.
        id: String,
        /// Bundle directory holding config.json.
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// Write the container's pid to this file.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Unix socket that receives the pty master (process.terminal).
        #[arg(long, value_name = "SOCK")]
        console_socket: Option<PathBuf>,
        /// Accepted for runc compatibility (strata always pivots).
        #[arg(long)]
        no_pivot: bool,
        /// Accepted for runc compatibility.
        #[arg(long)]
        no_new_keyring: bool,
    },
    /// Create and start a container, then wait for it and return its status.
    Run {
        /// Container id.
        id: String,
        /// Bundle directory holding config.json.
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// Write the container's pid to this file.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
    },
    /// Run the process of a created container.
    Start {
        /// Container id.
        id: String,
    },
    /// Print the runtime-spec state of a container as JSON.
    State {
        /// Container id.
        id: String,
    },
    /// Send a signal (name or number, default SIGTERM) to a container.
    Kill {
        /// Container id.
        id: String,
        /// Signal.
        #[arg(default_value = "SIGTERM")]
        signal: String,
        /// Signal every process in the container.
        #[arg(long, short = 'a')]
        all: bool,
    },
    /// Delete a stopped (or, with --force, running) container.
    Delete {
        /// Container id.
        id: String,
        /// Kill a running container first.
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Print the runtime's features as JSON.
    Features,
    /// List the processes of a container.
    Ps {
        /// Container id.
        id: String,
        /// table or json.
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
    },
    /// List containers.
    List {
        /// table or json.
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        /// Only ids.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Run another process in a running container.
    Exec {
        /// Container id.
        id: String,
        /// A runtime-spec process.json to run.
        #[arg(long, short = 'p', value_name = "FILE")]
        process: Option<PathBuf>,
        /// Extra environment, KEY=VALUE.
        #[arg(long, short = 'e')]
        env: Vec<String>,
        /// Working directory.
        #[arg(long)]
        cwd: Option<String>,
        /// uid[:gid].
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// Do not wait for the process.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Write the process's pid here.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Command and arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause {
        /// Container id.
        id: String,
    },
    /// Thaw a paused container.
    Resume {
        /// Container id.
        id: String,
    },
    /// The container's init (internal).
    #[command(name = "__init", hide = true)]
    Init,
}

/// Run `strata oci ...`.
pub fn run(args: Args) -> Result<ExitCode> {
    let root = args.root.clone().unwrap_or_else(default_root);
    let result = dispatch(&args.command, &root);
    if let Err(e) = &result {
        if let Some(log) = &args.log {
            // Best effort: the error still reaches stderr.
            let _ = write_log(log, args.log_format, &format!("{e:#}"));
        }
    }
    result
}

fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/strata-oci");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("strata-oci"),
        None => PathBuf::from(format!("/tmp/strata-oci-{}", nix::unistd::geteuid())),
    }
}

fn write_log(path: &Path, format: LogFormat, msg: &str) -> Result<()> {
    let time = crate::timefmt::rfc3339(crate::timefmt::now_nanos());
    let line = match format {
        LogFormat::Json => {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        }
        LogFormat::Text => format!("time={time:?} level=error msg={msg:?}"),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing log {}", path.display()))
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).context("encoding JSON")?;
    println!("{text}");
    Ok(())
}

fn dispatch(cmd: &Command, root: &Path) -> Result<ExitCode> {
    match cmd {
        Command::Create {
            id,
            bundle,
            pid_file,
            console_socket,
            ..
        } => {
            let opts = ops::CreateOptions {
                bundle: bundle.clone(),
                pid_file: pid_file.clone(),
                console_socket: console_socket.clone(),
            };
            ops::create(root, id, &opts)?;
        }
        Command::Run {
            id,
            bundle,
            pid_file,
        } => return run_container(root, id, bundle, pid_file.as_deref()),
        Command::Start { id } => ops::start(root, id)?,
        Command::State { id } => print_json(&oci::Handle::load(root, id)?.state_json())?,
        Command::Kill { id, signal, all } => {
            let sig = crate::signals::parse(signal)?;
            ops::kill(root, id, sig, *all)?;
        }
        Command::Delete { id, force } => ops::delete(root, id, *force)?,
        Command::Features => print_json(&oci::features())?,
        Command::Ps { id, format } => {
            let pids = ops::pids(root, id)?;
            if format == "json" {
                print_json(&serde_json::json!(pids))?;
            } else {
                println!("{:>8}  CMD", "PID");
                for p in pids {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                        .map(|b| {
                            String::from_utf8_lossy(&b)
                                .trim_end_matches('\0')
                                .replace('\0', " ")
                        })
                        .unwrap_or_default();
                    println!("{p:>8}  {cmd}");
                }
            }
        }
        Command::List { format, quiet } => {
            let all = ops::list(root)?;
            if *quiet {
                for h in &all {
                    println!("{}", h.saved.id);
                }
            } else if format == "json" {
                let v: Vec<serde_json::Value> = all.iter().map(|h| h.state_json()).collect();
                print_json(&serde_json::json!(v))?;
            } else {
                println!("{:<24} {:>8} {:<8} BUNDLE", "ID", "PID", "STATUS");
                for h in &all {
                    let st = h.status();
                    let pid = if st == oci::Status::Stopped {
                        0
                    } else {
                        h.saved.pid
                    };
                    println!(
                        "{:<24} {:>8} {:<8} {}",
                        h.saved.id,
                        pid,
                        st.as_str(),
                        h.saved.bundle.display()
                    );
                }
            }
        }
        Command::Exec {
            id,
            process,
            env,
            cwd,
            user,
            detach,
            pid_file,
            command,
        } => {
            let opts = ops::ExecOptions {
                argv: command.clone(),
                process: process.clone(),
                env: env.clone(),
                cwd: cwd.clone(),
                user: user.clone(),
                detach: *detach,
                pid_file: pid_file.clone(),
            };
            let code = ops::exec(root, id, &opts)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)));
        }
        Command::Pause { id } => ops::pause(root, id)?,
        Command::Resume { id } => ops::resume(root, id)?,
        Command::Init => oci::init::main(),
    }
    Ok(ExitCode::SUCCESS)
}

/// `run`: create, start, wait for the init to exit, delete; the exit
/// status is the container's.
fn run_container(
    root: &Path,
    id: &str,
    bundle: &Path,
    pid_file: Option<&Path>,
) -> Result<ExitCode> {
    let opts = ops::CreateOptions {
        bundle: bundle.to_path_buf(),
        pid_file: pid_file.map(Path::to_path_buf),
        console_socket: None,
    };
    ops::create(root, id, &opts)?;
    let h = oci::Handle::load(root, id)?;
    ops::start(root, id)?;
    // The init is our child until we exit: wait for it directly.
    let pid = nix::unistd::Pid::from_raw(h.saved.pid);
    let code = loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => break c,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the container"),
        }
    };
    ops::delete(root, id, true)?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}
