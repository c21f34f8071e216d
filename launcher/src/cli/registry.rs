//! Registry commands: `strata pull`, `push`, `login`, `logout`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use super::Globals;
use crate::registry::auth::{self, Credentials};
use crate::registry::client::{Client, ClientOptions};
use crate::registry::manifest::Platform;
use crate::registry::progress::{Mode, Progress};
use crate::registry::{pull, push, Reference};

const PULL_EXAMPLES: &str = "\
Examples:
  strata pull busybox                         # docker.io/library/busybox:latest
  strata pull 127.0.0.1:5000/tools/app:1.2    # plain HTTP is allowed for localhost
  strata pull --platform linux/arm64 alpine
  strata pull registry.example/app@sha256:<digest>
  strata pull --tls-verify=false myreg.lan:5000/app";

const PUSH_EXAMPLES: &str = "\
Examples:
  strata push 127.0.0.1:5000/app:1.0          # push under the image's own name
  strata push app:1.0 registry.example/team/app:1.0
  strata push --creds user:pass app registry.example/app";

const LOGIN_EXAMPLES: &str = "\
Examples:
  strata login registry.example               # prompts for user and password
  echo \"$TOKEN\" | strata login -u ci --password-stdin registry.example
  strata login --authfile ./auth.json -u me -p secret 127.0.0.1:5000";

const LOGOUT_EXAMPLES: &str = "\
Examples:
  strata logout registry.example
  strata logout --all";

/// Options shared by commands that talk to a registry.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Require HTTPS with a verified certificate (default: true, except that
    /// localhost and 127.0.0.1 may use plain HTTP); `--tls-verify=false`
    /// allows plain HTTP and self-signed certificates.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub tls_verify: Option<bool>,
    /// Auth file to use instead of the default ones
    /// ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json).
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
    /// Credentials for this command only, `USER:PASSWORD`.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
}

impl RegistryArgs {
    fn client_options(&self) -> anyhow::Result<ClientOptions> {
        Ok(ClientOptions {
            tls_verify: self.tls_verify,
            creds: self
                .creds
                .as_deref()
                .map(Credentials::parse_pair)
                .transpose()?,
            auth_file: self.authfile.clone(),
        })
    }
}

/// `strata pull` arguments.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Image to pull: `[REGISTRY/]NAME[:TAG|@DIGEST]`.
    pub image: String,
    /// Platform to pick from a multi-platform image, `OS/ARCH[/VARIANT]`
    /// (default: this machine's).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// Registry options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `strata push` arguments.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Image in the store (name or id).
    pub image: String,
    /// Where to push, `REGISTRY/NAME[:TAG]` (default: the image's name).
    pub destination: Option<String>,
    /// Print only the manifest digest.
    #[arg(short, long)]
    pub quiet: bool,
    /// Registry options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `strata login` arguments.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Registry host, e.g. `registry.example` or `127.0.0.1:5000`
    /// (default: docker.io).
    pub registry: Option<String>,
    /// User name (prompted for on a terminal if missing).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (visible in the process list: prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Require HTTPS with a verified certificate (see `strata pull --help`).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub tls_verify: Option<bool>,
    /// Auth file to write instead of the default one.
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
}

/// `strata logout` arguments.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// Registry host to forget (default: docker.io).
    #[arg(conflicts_with = "all")]
    pub registry: Option<String>,
    /// Forget the credentials of every registry.
    #[arg(short, long)]
    pub all: bool,
    /// Auth file to edit instead of the default one.
    #[arg(long, value_name = "PATH")]
    pub authfile: Option<PathBuf>,
}

/// Registry subcommands (top level: `strata pull ...`).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Download an image from a registry into the store.
    #[command(after_help = PULL_EXAMPLES)]
    Pull(PullArgs),
    /// Upload an image from the store to a registry.
    #[command(after_help = PUSH_EXAMPLES)]
    Push(PushArgs),
    /// Save credentials for a registry (auth file, mode 0600).
    #[command(after_help = LOGIN_EXAMPLES)]
    Login(LoginArgs),
    /// Remove saved credentials for a registry.
    #[command(after_help = LOGOUT_EXAMPLES)]
    Logout(LogoutArgs),
}

/// Run one registry command.
pub fn run(cmd: Command, globals: &Globals) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Pull(args) => run_pull(args, globals),
        Command::Push(args) => run_push(args, globals),
        Command::Login(args) => run_login(args),
        Command::Logout(args) => run_logout(args),
    }
}

fn open_store(globals: &Globals) -> anyhow::Result<layers_format::Store> {
    let dir = globals.store_dir();
    layers_format::Store::open(&dir).with_context(|| {
        format!(
            "open store {} (pass --store DIR to use another)",
            dir.display()
        )
    })
}

fn run_pull(args: PullArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let reference: Reference = args.image.parse()?;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let store = open_store(globals)?;
    let client = Client::connect(&reference.registry, &args.registry.client_options()?)?;
    let progress = Progress::new(Mode::detect(args.quiet));
    // Held from the first layer import until the image is recorded, so a
    // concurrent `strata store gc` cannot sweep layers and kept blobs not
    // yet referenced.
    let _lock = store
        .lock_shared()
        .with_context(|| format!("lock store {}", store.root().display()))?;
    let target = crate::registry::store::StoreTarget::new(&store)?;
    let outcome = pull::pull(&client, &reference, &platform, &target, &progress)
        .with_context(|| format!("pull {reference}"))?;
    progress.message(&format!(
        "Pulled {reference}: {} layer(s) downloaded, {} already present",
        outcome.downloaded_layers, outcome.skipped_layers
    ));
    println!("{}", outcome.image_id);
    Ok(ExitCode::SUCCESS)
}

fn run_push(args: PushArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let store = open_store(globals)?;
    let dest_text = args.destination.as_deref().unwrap_or(&args.image);
    let dest: Reference = dest_text
        .parse()
        .with_context(|| format!("destination {dest_text:?}: give REGISTRY/NAME[:TAG]"))?;
    if dest.digest.is_some() {
        bail!("destination {dest}: push to a tag, not a digest");
    }
    let client = Client::connect(&dest.registry, &args.registry.client_options()?)?;
    let progress = Progress::new(Mode::detect(args.quiet));
    let outcome = push::push(&client, &store, &args.image, &dest, &progress)
        .with_context(|| format!("push {} to {dest}", args.image))?;
    progress.message(&format!(
        "Pushed {dest}: {} blob(s) uploaded, {} already there",
        outcome.uploaded_blobs, outcome.existing_blobs
    ));
    println!("{}", outcome.manifest_digest);
    Ok(ExitCode::SUCCESS)
}

fn registry_name(given: Option<&str>) -> anyhow::Result<String> {
    let raw = given.unwrap_or(crate::registry::reference::DEFAULT_REGISTRY);
    let host = raw
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = host
        .strip_suffix("/v1")
        .or(host.strip_suffix("/v2"))
        .unwrap_or(host);
    if host.is_empty() || host.contains('/') {
        bail!("{raw:?} is not a registry host; give e.g. registry.example or 127.0.0.1:5000");
    }
    Ok(if host == "index.docker.io" {
        crate::registry::reference::DEFAULT_REGISTRY.to_string()
    } else {
        host.to_string()
    })
}

fn prompt(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("read from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn run_login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_name(args.registry.as_deref())?;
    let interactive = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if interactive && !args.password_stdin => prompt("Username: ")?,
        None => bail!("no user name: pass --username (-u)"),
    };
    if username.is_empty() {
        bail!("the user name is empty");
    }
    let password = if let Some(p) = args.password {
        p
    } else if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("read the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else if interactive {
        crate::registry::auth::read_password_from_terminal("Password: ")?
    } else {
        bail!("no password: pass --password-stdin and write it to standard input");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let creds = Credentials { username, password };
    let opts = ClientOptions {
        tls_verify: args.tls_verify,
        creds: Some(creds.clone()),
        auth_file: None,
    };
    let client = Client::connect(&registry, &opts)?;
    client
        .check_login()
        .with_context(|| format!("log in to {registry}"))?;
    let path = auth::auth_file_for_writing(args.authfile.as_deref())?;
    auth::store(&path, &registry, &creds)?;
    eprintln!("Login Succeeded (credentials saved in {})", path.display());
    Ok(ExitCode::SUCCESS)
}

fn run_logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let path = auth::auth_file_for_writing(args.authfile.as_deref())?;
    if args.all {
        auth::remove(&path, None)?;
        eprintln!("Removed all credentials from {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let registry = registry_name(args.registry.as_deref())?;
    if auth::remove(&path, Some(&registry))? {
        eprintln!("Removed login credentials for {registry}");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!(
            "not logged in to {registry} (no entry in {})",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_normalise() {
        assert_eq!(registry_name(None).unwrap(), "docker.io");
        assert_eq!(
            registry_name(Some("https://index.docker.io/v1/")).unwrap(),
            "docker.io"
        );
        assert_eq!(
            registry_name(Some("127.0.0.1:5000")).unwrap(),
            "127.0.0.1:5000"
        );
        assert!(registry_name(Some("a/b")).is_err());
    }
}
