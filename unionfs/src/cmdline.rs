//! The mount program's command line (fuse-overlayfs compatible), parsed
//! into a [`MountConfig`]. Kept in the library so it can be fuzzed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::{IdRange, LowerSpec, MountConfig};

/// The usage text of the `unionfs` mount program.
pub const USAGE: &str =
    "usage: unionfs [-f] [-d] -o lowerdir=A:B[,upperdir=U,workdir=W][,options] MOUNTPOINT
       unionfs SOURCE MOUNTPOINT -o lowerdir=...        (mount -t fuse.unionfs form)
       unionfs --store DIR --image NAME[:TAG] [--upper U --work W] [-o options] MOUNTPOINT

options: lowerdir= upperdir= workdir= squash_to_root uidmapping=C:H:N[:C:H:N...]
         gidmapping=... fsync=0|1 allow_other allow_root default_permissions
         threads=N passthrough=0|1 writeback=0|1 lower_direct=0|1 metacopy=on|off cpu_latency=on|off
         spin=MICROSECONDS readahead_kb=KIB fsname=NAME
         ro rw dev nodev suid nosuid exec noexec atime noatime (others are ignored)
  -f  stay in the foreground      -d  debug output (implies -f)";

/// A parsed command line of the mount program.
#[derive(Clone)]
pub struct Cli {
    /// What to mount.
    pub cfg: MountConfig,
    /// Where.
    pub mountpoint: PathBuf,
    /// `-f`: serve in the foreground.
    pub foreground: bool,
    /// `-d`: debug output (implies foreground).
    pub debug: bool,
    /// `--store DIR`.
    pub store: Option<PathBuf>,
    /// `--image NAME[:TAG]`.
    pub image: Option<String>,
}

/// What the command line asks for.
pub enum Parsed {
    /// `-h`/`--help`.
    Help,
    /// `-V`/`--version`.
    Version,
    /// Mount.
    Mount(Box<Cli>),
}

/// Splits a mount option string on commas outside double quotes.
pub fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_mapping(v: &str, what: &str) -> Result<Vec<IdRange>> {
    let nums: Vec<u32> = v
        .split(':')
        .map(|n| n.parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!("{what}={v}: ids must be numbers, as CONTAINER:HOST:COUNT[:...]")
        })?;
    if nums.is_empty() || !nums.len().is_multiple_of(3) {
        bail!("{what}={v}: give triples CONTAINER:HOST:COUNT separated by ':'");
    }
    Ok(nums
        .chunks(3)
        .map(|c| IdRange {
            inside: c[0],
            outside: c[1],
            count: c[2],
        })
        .collect())
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "on" | "yes" | "true" => Ok(true),
        "0" | "off" | "no" | "false" => Ok(false),
        _ => bail!("{key}={v}: use on/off or 1/0"),
    }
}

/// Applies one `-o` option (`key` or `key=value`) to `cfg`; unknown
/// options are ignored, as fuse-overlayfs does, and bad values are errors.
pub fn apply_option(cfg: &mut MountConfig, opt: &str) -> Result<()> {
    let (key, val) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    match (key, val) {
        ("lowerdir", Some(v)) => {
            cfg.lowers = v
                .split(':')
                .filter(|p| !p.is_empty())
                .map(|p| LowerSpec::Dir(PathBuf::from(p)))
                .collect();
        }
        ("upperdir", Some(v)) => cfg.upper = Some(PathBuf::from(v)),
        ("workdir", Some(v)) => cfg.work = Some(PathBuf::from(v)),
        ("squash_to_root", None) => cfg.squash_to_root = true,
        ("uidmapping", Some(v)) => cfg.uid_map = parse_mapping(v, "uidmapping")?,
        ("gidmapping", Some(v)) => cfg.gid_map = parse_mapping(v, "gidmapping")?,
        ("fsync", Some(v)) => cfg.fsync = parse_bool(key, v)?,
        ("allow_other", None) | ("allow_root", None) => cfg.allow_other = true,
        ("default_permissions", None) => cfg.default_permissions = true,
        ("threads", Some(v)) => {
            cfg.threads = v
                .parse()
                .with_context(|| format!("threads={v}: give a number of worker threads"))?
        }
        ("passthrough", Some(v)) => cfg.passthrough = parse_bool(key, v)?,
        ("writeback", Some(v)) => cfg.writeback = parse_bool(key, v)?,
        ("lower_direct", Some(v)) => cfg.lower_direct = parse_bool(key, v)?,
        ("metacopy", Some(v)) => cfg.metacopy = parse_bool(key, v)?,
        ("cpu_latency", Some(v)) => cfg.cpu_latency = parse_bool(key, v)?,
        ("spin", Some(v)) => {
            cfg.spin_us = v.parse().with_context(|| {
                format!("spin={v}: give microseconds to poll for the next request (0: off)")
            })?
        }
        ("readahead_kb", Some(v)) => {
            cfg.readahead_kb = v.parse().with_context(|| {
                format!("readahead_kb={v}: give the read-ahead window in KiB (0: the kernel's)")
            })?
        }
        ("fsname", Some(v)) => cfg.fsname = v.to_string(),
        (
            "ro" | "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime"
            | "sync" | "async" | "dirsync",
            None,
        ) => cfg.mount_options.push(key.to_string()),
        _ => tracing::debug!(option = opt, "ignoring unknown mount option"),
    }
    Ok(())
}

/// Parses the arguments after the program name. Never exits the process
/// and never panics, whatever the input.
pub fn parse_args(args: Vec<String>) -> Result<Parsed> {
    let mut cfg = MountConfig::default();
    let mut positionals = Vec::new();
    let mut foreground = false;
    let mut debug = false;
    let mut store = None;
    let mut image = None;
    let mut opts: Vec<String> = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<String> {
            it.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "-f" => foreground = true,
            "-d" | "--debug" => {
                debug = true;
                foreground = true;
            }
            "-o" => opts.push(value("-o")?),
            "--store" => store = Some(PathBuf::from(value("--store")?)),
            "--image" => image = Some(value("--image")?),
            "--upper" => cfg.upper = Some(PathBuf::from(value("--upper")?)),
            "--work" => cfg.work = Some(PathBuf::from(value("--work")?)),
            s if s.starts_with("-o") && s.len() > 2 => opts.push(s[2..].to_string()),
            s if s.starts_with('-') && s.len() > 1 => bail!("unknown flag {s}\n{USAGE}"),
            _ => positionals.push(a),
        }
    }
    for o in opts.iter().flat_map(|o| split_options(o)) {
        apply_option(&mut cfg, &o)?;
    }
    let mountpoint = match positionals.len() {
        1 => PathBuf::from(&positionals[0]),
        2 => {
            if cfg.fsname == "unionfs" {
                cfg.fsname = positionals[0].clone();
            }
            PathBuf::from(&positionals[1])
        }
        0 => bail!("missing MOUNTPOINT\n{USAGE}"),
        _ => bail!("too many arguments: {positionals:?}\n{USAGE}"),
    };
    if mountpoint.as_os_str().is_empty() {
        bail!("the mount point is an empty string\n{USAGE}");
    }
    if store.is_some() != image.is_some() {
        bail!("--store and --image go together\n{USAGE}");
    }
    Ok(Parsed::Mount(Box::new(Cli {
        cfg,
        mountpoint,
        foreground,
        debug,
        store,
        image,
    })))
}
