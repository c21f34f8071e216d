//! `unionfs`: the mount program, command-line compatible with fuse-overlayfs.
//!
//! ```text
//! unionfs [-f] [-d] -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W][,OPTS] MOUNTPOINT
//! unionfs SOURCE MOUNTPOINT -o rw,lowerdir=...        (as `mount -t fuse.unionfs` calls it)
//! unionfs --store DIR --image NAME[:TAG] [--upper U --work W] MOUNTPOINT
//! ```

use std::path::Path;

use anyhow::{bail, Result};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use unionfs::cmdline::{parse_args, Parsed, USAGE};

fn init_tracing(debug: bool) {
    let filter = if debug {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    // `Targets` takes RUST_LOG's `target=level,...` form without the regex
    // engine `EnvFilter` links in: a smaller binary with fewer relocations
    // to apply, which is most of what a mount costs on a slow-paging VM.
    let targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(filter));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .finish()
        .with(targets)
        .try_init();
}

fn run() -> Result<()> {
    let mut cli = match parse_args(std::env::args().skip(1).collect())? {
        Parsed::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Parsed::Version => {
            println!("unionfs {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Parsed::Mount(cli) => *cli,
    };
    // A daemon started without -d sends stderr to /dev/null once the mount
    // is live, so it has nowhere to log to: it skips the subscriber, whose
    // set-up (span slab, formatter) is a tenth of a mount's start-up cost.
    if cli.foreground || cli.debug || std::env::var_os("RUST_LOG").is_some() {
        init_tracing(cli.debug);
    }
    if let (Some(store), Some(image)) = (&cli.store, &cli.image) {
        let mut lowers = unionfs::store_layer::image_lowers(store, image)?;
        lowers.append(&mut cli.cfg.lowers);
        cli.cfg.lowers = lowers;
        if cli.cfg.fsname == "unionfs" {
            cli.cfg.fsname = format!("unionfs:{image}");
        }
    }
    let mp: &Path = &cli.mountpoint;
    if !mp.is_dir() {
        bail!(
            "mount point {} is not a directory: create it first",
            mp.display()
        );
    }
    if cli.foreground {
        unionfs::mount_foreground(cli.cfg, mp, || {})?;
    } else {
        unionfs::mount::mount_daemon(cli.cfg, mp, cli.debug)?;
    }
    Ok(())
}

fn main() {
    // glibc gives every worker thread its own malloc arena (up to 8 per
    // CPU), and the node table's many small allocations then sit in several
    // half-empty heaps. Two arenas keep the daemon's resident memory about
    // 10% lower after a walk of a large tree, at no measurable cost.
    // A fixed mmap threshold: every FUSE worker allocates a zeroed 16 MiB
    // request buffer, and once glibc's adaptive threshold has grown past
    // that (the first buffer freed after INIT raises it), the buffers come
    // from the heap and calloc clears them page by page. Fresh mappings are
    // already zero: 100 fewer page faults before the first request is served.
    // SAFETY: mallopt only sets allocator parameters; no thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    if let Err(e) = run() {
        eprintln!("unionfs: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line. `unionfs::Error` already spells
/// out its cause, so a cause whose text the line holds is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}
