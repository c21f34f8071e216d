//! Container commands, flattened into the top level: `strata run`, `ps`,
//! `exec`, `logs`, `inspect`... Parsing lives here; the work is done by the
//! runtime modules (`lifecycle`, `supervisor`, `exec`, `logs`...).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args};

use super::Globals;
use crate::container::{
    self, Container, ContainerConfig, LogOptions, NetworkOptions, Resources, SeccompProfile, Status,
};
use crate::lifecycle::{self, Dirs};
use crate::{exec, inspect, logs, restart, signals, supervisor, timefmt, volumes};

/// Container commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create and start a container.
    Run(Box<RunArgs>),
    /// Create a container without starting it.
    Create(Box<RunArgs>),
    /// Start stopped containers.
    Start {
        /// Attach to output and wait for the exit.
        #[arg(short, long)]
        attach: bool,
        /// Attach stdin.
        #[arg(short, long)]
        interactive: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop running containers (stop signal, then SIGKILL after a timeout).
    Stop {
        /// Seconds to wait before SIGKILL (default: the container's --stop-timeout, 10).
        #[arg(short, long)]
        time: Option<u64>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop then start containers.
    Restart {
        /// Seconds to wait before SIGKILL.
        #[arg(short, long)]
        time: Option<u64>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal (default SIGKILL) to containers.
    Kill {
        /// Signal name or number.
        #[arg(short, long, default_value = "SIGKILL")]
        signal: String,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        /// Remove their anonymous volumes too.
        #[arg(short, long)]
        volumes: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps {
        /// Show all containers (default: running only).
        #[arg(short, long)]
        all: bool,
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
        /// Show sizes.
        #[arg(short, long)]
        size: bool,
        /// Full ids and commands.
        #[arg(long)]
        no_trunc: bool,
        /// Output format: `table` or `json` (one object per line).
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show a container's output.
    Logs {
        /// Keep following new output until the container stops.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines ("all" for everything).
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Prefix each line with its time stamp.
        #[arg(short, long)]
        timestamps: bool,
        /// Container.
        container: String,
    },
    /// Run a command in a running container.
    Exec {
        /// Keep stdin open.
        #[arg(short, long)]
        interactive: bool,
        /// Allocate a pseudo terminal.
        #[arg(short, long)]
        tty: bool,
        /// Do not wait for the command.
        #[arg(short, long)]
        detach: bool,
        /// `user[:group]`.
        #[arg(short, long)]
        user: Option<String>,
        /// Working directory.
        #[arg(short, long)]
        workdir: Option<String>,
        /// Environment `KEY=VALUE`.
        #[arg(short, long)]
        env: Vec<String>,
        /// Full privileges for this process.
        #[arg(long)]
        privileged: bool,
        /// Container.
        container: String,
        /// Command and arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Show low-level information as JSON (docker's shape).
    Inspect {
        /// Include SizeRw and SizeRootFs.
        #[arg(short, long)]
        size: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show the processes of a container.
    Top {
        /// Container.
        container: String,
    },
    /// Wait for containers to stop and print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Copy files between a container and the host (`CTR:PATH` on one side).
    Cp {
        /// Source (`CONTAINER:PATH` or a host path).
        src: String,
        /// Destination (`CONTAINER:PATH` or a host path).
        dst: String,
    },
    /// Rename a container.
    Rename {
        /// Current name or id.
        container: String,
        /// New name.
        new_name: String,
    },
    /// Export a container's filesystem as a tar archive.
    Export {
        /// Write to this file instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Container.
        container: String,
    },
    /// Create an image from a container's changes.
    Commit {
        /// Commit message (kept as a label).
        #[arg(short, long)]
        message: Option<String>,
        /// Container.
        container: String,
        /// Image name (`name[:tag]`).
        image: Option<String>,
    },
    /// Change a container's restart policy or limits.
    Update {
        /// New restart policy.
        #[arg(long)]
        restart: Option<String>,
        /// New memory limit.
        #[arg(short, long)]
        memory: Option<String>,
        /// New CPU limit.
        #[arg(long)]
        cpus: Option<f64>,
        /// New pids limit.
        #[arg(long)]
        pids_limit: Option<i64>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show live resource usage.
    Stats {
        /// Print once and exit.
        #[arg(long)]
        no_stream: bool,
        /// Containers (default: all running).
        containers: Vec<String>,
    },
    /// List a container's published ports.
    Port {
        /// Container.
        container: String,
        /// `PORT[/PROTO]` to show.
        filter: Option<String>,
    },
    /// Build the built-in busybox image, import it and run a container on
    /// the union mount (the README's first command).
    Demo,
    /// Internal: the per-container supervisor.
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// Container id.
        id: String,
        /// Descriptor to report readiness on.
        #[arg(long)]
        ready_fd: Option<i32>,
        /// Wait for a client to attach before starting.
        #[arg(long)]
        attach_wait: bool,
    },
    /// Internal: the container's init.
    #[command(name = "__init", hide = true)]
    Init,
}

/// Flags of `run` and `create`.
#[derive(Debug, Clone, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Run in the background and print the id.
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment `KEY=VALUE` (or `KEY` to copy ours).
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Read environment lines from a file.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Working directory.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// `user[:group]`.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Keep stdin open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Signal that stops the container.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL.
    #[arg(long)]
    pub stop_timeout: Option<u64>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Run a reaper as pid 1 that forwards signals.
    #[arg(long)]
    pub init: bool,
    /// All capabilities, no seccomp, no masked paths.
    #[arg(long)]
    pub privileged: bool,
    /// Add capabilities.
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop capabilities.
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// `seccomp=unconfined|FILE.json`, `no-new-privileges`.
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Memory limit (`64m`, `1g`).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory plus swap limit (`-1` unlimited).
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// CPUs (`0.5`).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Relative CPU weight.
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<u64>,
    /// CPUs allowed (`0-1`).
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Process limit.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Block IO weight (10-1000).
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// Read rate limit `DEVICE:RATE`.
    #[arg(long)]
    pub device_read_bps: Vec<String>,
    /// Network: bridge, none, host, container:NAME or a network name.
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Fixed IPv4 address on a user-defined network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Extra name of the container on a user-defined network.
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// Publish ports `[ip:][hostPort:]containerPort[/proto]`.
    #[arg(short, long)]
    pub publish: Vec<String>,
    /// Publish every exposed port.
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Link to another container `NAME[:ALIAS]`.
    #[arg(long)]
    pub link: Vec<String>,
    /// Expose a port.
    #[arg(long)]
    pub expose: Vec<String>,
    /// Volumes `HOST:CTR[:ro]`, `NAME:CTR`, `CTR`.
    #[arg(short, long)]
    pub volume: Vec<String>,
    /// Mounts `type=bind|volume|tmpfs,source=...,target=...`.
    #[arg(long)]
    pub mount: Vec<String>,
    /// tmpfs mounts `PATH[:OPTIONS]`.
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount the volumes of another container `NAME[:ro|rw]`.
    #[arg(long)]
    pub volumes_from: Vec<String>,
    /// Restart policy.
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Log options `max-size=10m`, `max-file=3`.
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Labels `KEY=VALUE`.
    #[arg(short, long)]
    pub label: Vec<String>,
    /// Use a plain directory as the root filesystem instead of an image;
    /// then every argument is the command.
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Image, then command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Parse `64m`, `1g`, `512k`, `100b`, `1048576`.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| {
        anyhow::anyhow!("invalid size {s:?}: use a number with an optional b, k, m or g suffix")
    })?;
    if n < 0.0 || !n.is_finite() {
        bail!("invalid size {s:?}: must not be negative");
    }
    Ok((n * mult as f64) as u64)
}

fn split_command(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

impl RunArgs {
    /// Turn flags into a container config (image defaults not yet applied).
    fn to_config(&self) -> Result<(ContainerConfig, bool, bool)> {
        let mut args = self.args.clone();
        let image = match &self.rootfs {
            Some(dir) => {
                if !dir.is_dir() {
                    bail!("--rootfs {}: not a directory", dir.display());
                }
                dir.to_string_lossy().into_owned()
            }
            None => {
                if args.is_empty() {
                    bail!("an image is required: strata run [OPTIONS] IMAGE [COMMAND] [ARG...]");
                }
                args.remove(0)
            }
        };
        let mut env = Vec::new();
        for f in &self.env_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading --env-file {}", f.display()))?;
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                env.push(expand_env(line));
            }
        }
        env.extend(self.env.iter().map(|e| expand_env(e)));
        let mut mounts = Vec::new();
        for v in &self.volume {
            mounts.push(volumes::parse_v(v)?);
        }
        for m in &self.mount {
            mounts.push(volumes::parse_mount(m)?);
        }
        for t in &self.tmpfs {
            mounts.push(volumes::parse_tmpfs(t)?);
        }
        let mut seccomp = SeccompProfile::Default;
        for o in &self.security_opt {
            match o.split_once(['=', ':']) {
                Some(("seccomp", "unconfined")) => seccomp = SeccompProfile::Unconfined,
                Some(("seccomp", file)) => {
                    let text = std::fs::read_to_string(file).with_context(|| format!("reading seccomp profile {file}"))?;
                    crate::seccomp::from_docker_json(&text)?;
                    seccomp = SeccompProfile::Custom(text);
                }
                _ if o == "no-new-privileges" || o == "no-new-privileges:true" => {}
                _ => bail!("unsupported --security-opt {o:?}: use seccomp=unconfined, seccomp=FILE.json or no-new-privileges"),
            }
        }
        let mut resources = Resources::default();
        if let Some(m) = &self.memory {
            resources.memory_bytes = parse_bytes(m)?;
            if resources.memory_bytes < 6 << 20 {
                bail!("--memory {m}: the minimum is 6m");
            }
        }
        if let Some(m) = &self.memory_swap {
            resources.memory_swap_bytes = if m == "-1" {
                -1
            } else {
                parse_bytes(m)? as i64
            };
        }
        if let Some(c) = self.cpus {
            if !(c > 0.0 && c <= 1024.0) {
                bail!("--cpus {c}: must be a positive number of CPUs");
            }
            resources.nano_cpus = (c * 1e9) as u64;
        }
        resources.cpu_shares = self.cpu_shares.unwrap_or(0);
        resources.cpuset_cpus = self.cpuset_cpus.clone().unwrap_or_default();
        resources.pids_limit = self.pids_limit.unwrap_or(0);
        if let Some(w) = self.blkio_weight {
            if !(10..=1000).contains(&w) {
                bail!("--blkio-weight {w}: must be between 10 and 1000");
            }
            resources.blkio_weight = w;
        }
        for d in &self.device_read_bps {
            let (dev, rate) = d
                .rsplit_once(':')
                .ok_or_else(|| anyhow::anyhow!("--device-read-bps {d:?}: use DEVICE:RATE"))?;
            resources
                .device_read_bps
                .push((dev.to_string(), parse_bytes(rate)?));
        }
        let mut log = LogOptions::default();
        for o in &self.log_opt {
            match o.split_once('=') {
                Some(("max-size", v)) => log.max_size_bytes = parse_bytes(v)?,
                Some(("max-file", v)) => {
                    log.max_files = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        anyhow::anyhow!("--log-opt max-file={v}: must be a positive number")
                    })?
                }
                _ => bail!("unsupported --log-opt {o:?}: use max-size=SIZE or max-file=N"),
            }
        }
        if let Some(s) = &self.stop_signal {
            signals::parse(s)?;
        }
        let restart_policy = restart::parse(&self.restart)?;
        if self.rm && restart_policy.name != "no" {
            bail!("conflicting options: --restart and --rm");
        }
        let entrypoint_set = self.entrypoint.is_some();
        let cmd_given = !args.is_empty();
        let cfg = ContainerConfig {
            name: self.name.clone().unwrap_or_default(),
            image,
            rootfs_dir: self
                .rootfs
                .as_ref()
                .map(|d| std::fs::canonicalize(d).unwrap_or(d.clone())),
            entrypoint: self
                .entrypoint
                .as_deref()
                .map(split_command)
                .unwrap_or_default(),
            cmd: args,
            env,
            working_dir: self.workdir.clone().unwrap_or_default(),
            user: self.user.clone().unwrap_or_default(),
            hostname: self.hostname.clone().unwrap_or_default(),
            tty: self.tty,
            interactive: self.interactive,
            stop_signal: self.stop_signal.clone().unwrap_or_default(),
            stop_timeout_secs: self.stop_timeout.unwrap_or(10),
            read_only: self.read_only,
            init: self.init,
            privileged: self.privileged,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            seccomp,
            resources,
            network: NetworkOptions {
                mode: self
                    .network
                    .clone()
                    .unwrap_or_else(|| crate::rootless::default_network().into()),
                publish: self.publish.clone(),
                publish_all: self.publish_all,
                links: self.link.clone(),
                exposed: self.expose.clone(),
                ip: self.ip.clone(),
                aliases: self.network_alias.clone(),
            },
            mounts,
            volumes_from: self.volumes_from.clone(),
            restart: restart_policy,
            auto_remove: self.rm,
            log,
            labels: self.label.clone(),
            ..Default::default()
        };
        Ok((cfg, entrypoint_set, cmd_given))
    }
}

fn expand_env(e: &str) -> String {
    if e.contains('=') {
        e.to_string()
    } else {
        format!("{e}={}", std::env::var(e).unwrap_or_default())
    }
}

fn dirs(g: &Globals) -> Result<Dirs> {
    Dirs::new(&g.store_dir(), &g.state_dir())
}

/// Containers whose supervisor was killed leave veths, address leases and
/// nft rules behind; the commands that start, list or remove containers clear
/// them first. Best effort: a failure here must not block the command.
fn tidy_networks(g: &Globals) {
    if let Err(e) = crate::net::cleanup_stale(&g.state_dir()) {
        tracing::debug!("cleaning up networking of dead containers: {e:#}");
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(c.clamp(0, 255) as u8)
}

/// Create a container from run/create flags.
pub fn create_from_args(d: &Dirs, a: &RunArgs) -> Result<Container> {
    let (mut cfg, ep, cmd) = a.to_config()?;
    lifecycle::apply_image(d, &mut cfg, ep, cmd)?;
    lifecycle::create(d, cfg)
}

/// Run one container command.
pub fn run(cmd: Command, g: &Globals) -> Result<ExitCode> {
    if matches!(
        cmd,
        Command::Run(_) | Command::Start { .. } | Command::Ps { .. } | Command::Rm { .. }
    ) {
        tidy_networks(g);
    }
    match cmd {
        Command::Init => crate::init::main(),
        Command::Supervise {
            id,
            ready_fd,
            attach_wait,
        } => {
            let d = dirs(g)?;
            supervisor::main(supervisor::Options {
                store: d.store,
                state: d.state,
                id,
                ready_fd,
                attach_wait,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(a) => {
            let d = dirs(g)?;
            let mut c = create_from_args(&d, &a)?;
            if a.detach {
                let rc = lifecycle::start(&d, &mut c, false)?;
                if rc != 0 {
                    return Ok(code(rc));
                }
                println!("{}", c.config.id);
                return Ok(ExitCode::SUCCESS);
            }
            let rc = lifecycle::start(&d, &mut c, true)?;
            if c.config.auto_remove {
                supervisor::wait_gone(&c);
            }
            Ok(code(rc))
        }
        Command::Create(a) => {
            let d = dirs(g)?;
            let c = create_from_args(&d, &a)?;
            println!("{}", c.config.id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Start {
            attach,
            interactive,
            containers,
        } => {
            let d = dirs(g)?;
            let mut last = 0;
            for name in &containers {
                let mut c = container::find(&d.store, &d.state, name)?;
                if interactive {
                    c.config.interactive = true;
                }
                last = lifecycle::start(&d, &mut c, attach)?;
                if !attach {
                    if last != 0 {
                        return Ok(code(last));
                    }
                    println!("{name}");
                }
            }
            Ok(code(last))
        }
        Command::Stop { time, containers } => each(g, &containers, |_, c| lifecycle::stop(c, time)),
        Command::Restart { time, containers } => each(g, &containers, |d, c| {
            lifecycle::stop(c, time)?;
            let mut c = container::find(&d.store, &d.state, &c.config.id)?;
            let rc = lifecycle::start(d, &mut c, false)?;
            if rc != 0 {
                bail!("restarting {} failed with exit code {rc}", c.config.name);
            }
            Ok(())
        }),
        Command::Kill { signal, containers } => {
            let sig = signals::parse(&signal)?;
            each(g, &containers, |_, c| lifecycle::kill(c, sig))
        }
        Command::Rm {
            force,
            volumes,
            containers,
        } => each(g, &containers, |d, c| {
            lifecycle::remove(d, c, force, volumes)
        }),
        Command::Ps {
            all,
            quiet,
            size,
            no_trunc,
            format,
        } => {
            let d = dirs(g)?;
            ps(&d, all, quiet, size, no_trunc, &format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            follow,
            tail,
            timestamps,
            container,
        } => {
            let d = dirs(g)?;
            let c = container::find(&d.store, &d.state, &container)?;
            show_logs(&c, follow, &tail, timestamps)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec {
            interactive,
            tty,
            detach,
            user,
            workdir,
            env,
            privileged,
            container,
            command,
        } => {
            let d = dirs(g)?;
            let c = container::find(&d.store, &d.state, &container)?;
            let opts = exec::ExecOptions {
                argv: command,
                env: env.iter().map(|e| expand_env(e)).collect(),
                user,
                workdir,
                tty,
                interactive,
                detach,
                privileged,
            };
            Ok(code(exec::exec(&c, &opts)?))
        }
        Command::Inspect { size, containers } => {
            let d = dirs(g)?;
            let mut out = Vec::new();
            let mut missing = None;
            for name in &containers {
                match container::find(&d.store, &d.state, name) {
                    Ok(c) => out.push(inspect::inspect(&d, &c, size)),
                    Err(e) => missing = Some(e),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            match missing {
                Some(e) => Err(e),
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Top { container } => {
            let d = dirs(g)?;
            let c = container::find(&d.store, &d.state, &container)?;
            inspect::top(&c)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait { containers } => {
            let d = dirs(g)?;
            let mut last = 0;
            for name in &containers {
                let c = container::find(&d.store, &d.state, name)?;
                last = lifecycle::wait(&c)?;
                println!("{last}");
            }
            let _ = last;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cp { src, dst } => {
            let d = dirs(g)?;
            crate::files::cp(&d, &src, &dst)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rename {
            container,
            new_name,
        } => {
            let d = dirs(g)?;
            let mut c = container::find(&d.store, &d.state, &container)?;
            lifecycle::rename(&d, &mut c, &new_name)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { output, container } => {
            let d = dirs(g)?;
            let c = container::find(&d.store, &d.state, &container)?;
            crate::files::export(&d, &c, output.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Commit {
            message,
            container,
            image,
        } => {
            let d = dirs(g)?;
            let c = container::find(&d.store, &d.state, &container)?;
            let id = crate::files::commit(&d, &c, image.as_deref(), message.as_deref())?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Update {
            restart,
            memory,
            cpus,
            pids_limit,
            containers,
        } => each(g, &containers, |_, c| {
            update(c, restart.as_deref(), memory.as_deref(), cpus, pids_limit)
        }),
        Command::Stats {
            no_stream,
            containers,
        } => {
            let d = dirs(g)?;
            inspect::stats(&d, &containers, no_stream)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Port { container, filter } => {
            let d = dirs(g)?;
            let c = container::find(&d.store, &d.state, &container)?;
            for line in crate::net::port_lines(&d.state, &c.config.id, filter.as_deref())? {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            let d = dirs(g)?;
            Ok(code(crate::demo::run(&d)?))
        }
    }
}

/// Apply `f` to each named container; report failures and exit 1 when
/// any failed (docker prints the names that worked).
fn each(
    g: &Globals,
    names: &[String],
    f: impl Fn(&Dirs, &Container) -> Result<()>,
) -> Result<ExitCode> {
    let d = dirs(g)?;
    let mut failed = false;
    for name in names {
        let r = container::find(&d.store, &d.state, name).and_then(|c| f(&d, &c));
        match r {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("strata: {e:#}");
                failed = true;
            }
        }
    }
    if failed && names.len() == 1 {
        return Ok(ExitCode::from(125));
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn update(
    c: &Container,
    restart_s: Option<&str>,
    memory: Option<&str>,
    cpus: Option<f64>,
    pids: Option<i64>,
) -> Result<()> {
    let mut c = c.clone();
    if let Some(r) = restart_s {
        let p = restart::parse(r)?;
        if c.config.auto_remove && p.name != "no" {
            bail!("cannot set a restart policy on a container started with --rm");
        }
        c.config.restart = p.clone();
        if c.is_live() {
            crate::control::request(
                &c.paths.socket(),
                &crate::control::Request::Update { restart: p },
            )?;
        }
    }
    let mut res = c.config.resources.clone();
    if let Some(m) = memory {
        res.memory_bytes = parse_bytes(m)?;
    }
    if let Some(cp) = cpus {
        res.nano_cpus = (cp * 1e9) as u64;
    }
    if let Some(p) = pids {
        res.pids_limit = p;
    }
    if res != c.config.resources {
        if c.is_live() && crate::cgroup::available() {
            crate::cgroup::for_container(&c.config.id).apply(&res)?;
        }
        c.config.resources = res;
    }
    c.save_config()
}

/// docker's STATUS column.
pub fn status_text(c: &Container) -> String {
    let s = &c.state;
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => format!(
            "Up {}",
            timefmt::human_duration(timefmt::since(s.started_nanos))
        ),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            s.exit_code,
            timefmt::human_duration(timefmt::since(s.finished_nanos))
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code,
            timefmt::human_duration(timefmt::since(s.finished_nanos))
        ),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
    }
}

fn ps(d: &Dirs, all: bool, quiet: bool, size: bool, no_trunc: bool, format: &str) -> Result<()> {
    let list: Vec<Container> = container::list(&d.store, &d.state)?
        .into_iter()
        .filter(|c| all || c.is_live())
        .rev()
        .collect();
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &list {
            writeln!(
                out,
                "{}",
                if no_trunc { &c.config.id } else { c.short_id() }
            )?;
        }
        return Ok(());
    }
    if format == "json" {
        for c in &list {
            let mut v = serde_json::json!({
                "ID": c.short_id(), "Image": c.config.image, "Command": c.config.argv().join(" "),
                "CreatedAt": timefmt::rfc3339(c.config.created_nanos), "State": c.state.status.as_str(),
                "Status": status_text(c), "Names": c.config.name, "Ports": inspect::ports_text(d, c),
                "RestartCount": c.state.restart_count,
            });
            if size {
                let (rw, virt) = inspect::sizes(d, c);
                v["Size"] = serde_json::json!(rw);
                v["SizeRootFs"] = serde_json::json!(virt);
            }
            writeln!(out, "{v}")?;
        }
        return Ok(());
    }
    if format != "table" {
        bail!("unknown --format {format:?}: use table or json");
    }
    let mut rows = vec![vec![
        "CONTAINER ID".to_string(),
        "IMAGE".into(),
        "COMMAND".into(),
        "CREATED".into(),
        "STATUS".into(),
        "PORTS".into(),
        "NAMES".into(),
    ]];
    if size {
        rows[0].push("SIZE".into());
    }
    for c in &list {
        let mut command = format!("\"{}\"", c.config.argv().join(" "));
        if !no_trunc && command.chars().count() > 22 {
            command = format!("{}…\"", command.chars().take(20).collect::<String>());
        }
        let mut row = vec![
            if no_trunc {
                c.config.id.clone()
            } else {
                c.short_id().to_string()
            },
            c.config.image.clone(),
            command,
            format!(
                "{} ago",
                timefmt::human_duration(timefmt::since(c.config.created_nanos))
            ),
            status_text(c),
            inspect::ports_text(d, c),
            c.config.name.clone(),
        ];
        if size {
            let (rw, virt) = inspect::sizes(d, c);
            row.push(format!(
                "{} (virtual {})",
                human_bytes(rw),
                human_bytes(virt)
            ));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == r.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end())?;
    }
    Ok(())
}

/// Sizes as docker prints them (`1.5MB`, decimal units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", UNITS[i]).replace(".000", "")
    }
}

fn show_logs(c: &Container, follow: bool, tail: &str, timestamps: bool) -> Result<()> {
    let path = c.paths.log();
    let recs = logs::read_all(&path)?;
    let skip = match tail {
        "all" | "" => 0,
        n => {
            let n: usize = n
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid --tail {n:?}: use a number or all"))?;
            recs.len().saturating_sub(n)
        }
    };
    for r in &recs[skip..] {
        if logs::print(r, timestamps).is_err() {
            return Ok(());
        }
    }
    if !follow {
        return Ok(());
    }
    let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut c = c.clone();
    let mut quiet_rounds = 0;
    logs::follow(
        &path,
        offset,
        |r| logs::print(r, timestamps),
        || {
            let _ = c.reload();
            if c.is_live() {
                quiet_rounds = 0;
                true
            } else {
                // One more pass to pick up the last lines.
                quiet_rounds += 1;
                quiet_rounds < 2
            }
        },
    )
}
