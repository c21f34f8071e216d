//! The union filesystems under test and how to mount and unmount each one
//! over the dataset: kernel overlayfs through mount(2), FUSE peers and
//! strata's `unionfs` through their mount programs, anything else through a
//! user-given command template.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};

use crate::dataset::Dataset;
use crate::progress;
use crate::sys;
use crate::trash::Trash;

/// How long a mount program may take before the mount counts as failed.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a FUSE daemon may linger after its unmount.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// What kind of backend a [`Backend`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The merged tree as a plain directory: the floor.
    Native,
    /// Kernel overlayfs.
    Overlay,
    /// fuse-overlayfs (the C implementation, or whatever is on PATH).
    FuseOverlayfs,
    /// unionfs-fuse.
    UnionfsFuse,
    /// strata's unionfs over the three lower directories.
    StrataDir,
    /// strata's unionfs over the three lowers imported into a store.
    StrataStore,
    /// A mount command given on the command line.
    Custom(CustomSpec),
}

/// A user-given mount command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomSpec {
    /// Label in the report.
    pub name: String,
    /// Mount command template, run with `sh -c` after substitution.
    pub mount: String,
    /// Unmount command template; umount(2) of the mount point when absent.
    pub umount: Option<String>,
    /// The command stays in the foreground (cowbench backgrounds it and
    /// takes its pid as the daemon's).
    pub foreground: bool,
}

impl CustomSpec {
    /// Parses `name=X,[umount=CMD,][foreground,]mount=CMD`. `mount=` comes
    /// last and takes the rest of the string, commas included.
    pub fn parse(spec: &str) -> Result<CustomSpec> {
        let mut rest = spec;
        let mut out = CustomSpec {
            name: "custom".into(),
            mount: String::new(),
            umount: None,
            foreground: false,
        };
        loop {
            if let Some(cmd) = rest.strip_prefix("mount=") {
                out.mount = cmd.trim().to_string();
                break;
            }
            let (item, tail) = rest.split_once(',').with_context(|| {
                format!("custom backend {spec:?}: expected name=X,...,mount=COMMAND")
            })?;
            match item.split_once('=') {
                Some(("name", v)) if !v.is_empty() => out.name = v.to_string(),
                Some(("umount", v)) => out.umount = Some(v.to_string()),
                Some(("foreground", v)) => out.foreground = v != "0",
                None if item == "foreground" => out.foreground = true,
                _ => bail!(
                    "custom backend {spec:?}: unknown item {item:?} (known: name=, umount=, foreground, mount=)"
                ),
            }
            rest = tail;
        }
        if out.mount.is_empty() {
            bail!("custom backend {spec:?}: empty mount command");
        }
        Ok(out)
    }
}

/// A strata store holding the dataset's layers as one image.
#[derive(Clone, Debug)]
pub struct StoreImage {
    /// The store directory.
    pub store: PathBuf,
    /// The image name inside it.
    pub image: String,
}

/// One backend of a run.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Label in reports, e.g. `overlay+metacopy=on`.
    pub label: String,
    /// Which implementation.
    pub kind: Kind,
    /// Extra mount options appended to the backend's own (`name+opts`).
    pub extra_opts: String,
    /// The strata `unionfs` binary, for the strata backends.
    pub unionfs: Option<PathBuf>,
    /// The imported store, for `strata-store`.
    pub store: Option<StoreImage>,
}

/// Scratch directories of the mount under test.
pub struct RunDirs {
    /// Writable upper layer.
    pub upper: PathBuf,
    /// Work directory next to the upper.
    pub work: PathBuf,
    /// Mount point.
    pub mnt: PathBuf,
    /// Where used uppers wait until the end of the run.
    pub trash: Trash,
}

impl RunDirs {
    /// The scratch directories below `dir`.
    pub fn new(dir: &Path) -> RunDirs {
        let run = dir.join("run");
        RunDirs {
            upper: run.join("upper"),
            work: run.join("work"),
            mnt: run.join("mnt"),
            trash: Trash::new(run.join("trash")),
        }
    }

    /// Unmounts anything an interrupted run left and empties upper and work.
    pub fn reset(&self) -> Result<()> {
        if sys::is_mountpoint(&self.mnt) {
            progress!("unmounting {} left by an earlier run", self.mnt.display());
            sys::unmount(&self.mnt)?;
        }
        for dir in [&self.upper, &self.work] {
            self.trash.discard(dir)?;
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if self.mnt.exists() && !sys::is_mountpoint(&self.mnt) {
            // Files an interrupted run wrote into the bare mount point make
            // mount programs that want an empty one (unionfs-fuse) fail.
            fs::remove_dir_all(&self.mnt)
                .with_context(|| format!("emptying mount point {}", self.mnt.display()))?;
        }
        fs::create_dir_all(&self.mnt)
            .with_context(|| format!("creating {}", self.mnt.display()))?;
        Ok(())
    }
}

/// A mounted backend.
pub struct Mounted {
    /// Root of the tree the workloads run in.
    pub target: PathBuf,
    /// The FUSE daemon, when there is one and it was found.
    pub daemon: Option<u32>,
    /// Seconds from starting the mount to the first successful stat of its root.
    pub mount_secs: Option<f64>,
    /// A foreground custom command we started.
    child: Option<Child>,
}

impl Backend {
    /// Parses a backend name as given to `--backends`: `name`, or `name`
    /// followed by extra mount options, each after a `+`
    /// (`strata-dir+passthrough=0+cpu_latency=off`; `--backends` splits on
    /// commas, so options cannot be joined with them there).
    pub fn from_name(spec: &str) -> Result<Backend> {
        let (name, extra) = spec.split_once('+').unwrap_or((spec, ""));
        let extra = extra.replace('+', ",");
        let kind = match name {
            "native" => Kind::Native,
            "overlay" => Kind::Overlay,
            "fuse-overlayfs" => Kind::FuseOverlayfs,
            "unionfs-fuse" => Kind::UnionfsFuse,
            "strata-dir" => Kind::StrataDir,
            "strata-store" => Kind::StrataStore,
            other => bail!(
                "unknown backend {other:?} (known: native, overlay, fuse-overlayfs, unionfs-fuse, strata-dir, strata-store; others through --custom)"
            ),
        };
        if kind == Kind::Native && !extra.is_empty() {
            bail!("backend native takes no mount options");
        }
        Ok(Backend {
            label: spec.to_string(),
            kind,
            extra_opts: extra,
            unionfs: None,
            store: None,
        })
    }

    /// A backend from a `--custom` spec.
    pub fn custom(spec: CustomSpec) -> Backend {
        Backend {
            label: spec.name.clone(),
            kind: Kind::Custom(spec),
            extra_opts: String::new(),
            unionfs: None,
            store: None,
        }
    }

    /// Whether this backend writes through a mount with an upper layer.
    pub fn is_native(&self) -> bool {
        self.kind == Kind::Native
    }

    /// Mounts the backend over the dataset with an empty upper layer.
    pub fn mount(&self, dataset: &Dataset, dirs: &RunDirs) -> Result<Mounted> {
        if self.is_native() {
            return Ok(Mounted {
                target: dataset.flat.clone(),
                daemon: None,
                mount_secs: None,
                child: None,
            });
        }
        dirs.reset()?;
        let started = Instant::now();
        let mut child = None;
        match &self.kind {
            Kind::Native => unreachable!("handled above"),
            Kind::Overlay => self.mount_overlay(dataset, dirs)?,
            Kind::FuseOverlayfs => {
                let mut cmd = Command::new("fuse-overlayfs");
                cmd.arg("-o")
                    .arg(self.with_extra(overlay_options(dataset, dirs)))
                    .arg(&dirs.mnt);
                run_mount_program(cmd, &self.label)?;
            }
            Kind::UnionfsFuse => {
                let branches = format!(
                    "{}=RW:{}",
                    dirs.upper.display(),
                    dataset
                        .lowers_top_first()
                        .iter()
                        .map(|l| format!("{}=RO", l.display()))
                        .collect::<Vec<_>>()
                        .join(":")
                );
                let mut cmd = Command::new("unionfs-fuse");
                cmd.arg("-o")
                    .arg(self.with_extra("cow".into()))
                    .arg(branches)
                    .arg(&dirs.mnt);
                run_mount_program(cmd, &self.label)?;
            }
            Kind::StrataDir => {
                let mut cmd = Command::new(self.unionfs_bin()?);
                cmd.arg("-o")
                    .arg(self.with_extra(overlay_options(dataset, dirs)))
                    .arg(&dirs.mnt);
                run_mount_program(cmd, &self.label)?;
            }
            Kind::StrataStore => {
                let store = self.store.as_ref().with_context(|| {
                    format!("{}: the dataset was not imported into a store", self.label)
                })?;
                let mut cmd = Command::new(self.unionfs_bin()?);
                cmd.arg("--store")
                    .arg(&store.store)
                    .arg("--image")
                    .arg(&store.image)
                    .arg("--upper")
                    .arg(&dirs.upper)
                    .arg("--work")
                    .arg(&dirs.work);
                if !self.extra_opts.is_empty() {
                    cmd.arg("-o").arg(&self.extra_opts);
                }
                cmd.arg(&dirs.mnt);
                run_mount_program(cmd, &self.label)?;
            }
            Kind::Custom(spec) => {
                let line = substitute(&spec.mount, dataset, dirs);
                let mut cmd = Command::new("sh");
                if spec.foreground {
                    cmd.arg("-c")
                        .arg(format!("exec {line}"))
                        .stdin(Stdio::null())
                        .stdout(Stdio::null());
                    child = Some(
                        cmd.spawn()
                            .with_context(|| format!("{}: starting {line:?}", self.label))?,
                    );
                } else {
                    cmd.arg("-c").arg(&line);
                    run_mount_program(cmd, &self.label)?;
                }
            }
        }
        wait_mounted(&dirs.mnt, &self.label, child.as_mut())?;
        fs::metadata(&dirs.mnt).with_context(|| {
            format!(
                "{}: stat of the new mount {}",
                self.label,
                dirs.mnt.display()
            )
        })?;
        let mount_secs = started.elapsed().as_secs_f64();
        let daemon = match (&child, &self.kind) {
            (Some(child), _) => Some(child.id()),
            (None, Kind::Overlay) => None,
            (None, _) => {
                let found = sys::fuse_daemons(&dirs.mnt);
                if found.is_empty() {
                    progress!(
                        "warning: {}: FUSE daemon not found, no RSS/CPU figures",
                        self.label
                    );
                }
                found.into_iter().min()
            }
        };
        Ok(Mounted {
            target: dirs.mnt.clone(),
            daemon,
            mount_secs: Some(mount_secs),
            child,
        })
    }

    /// Unmounts, waits for the daemon to exit and sets the upper layer aside; for
    /// `native`, repairs the tree if the workload wrote to it.
    pub fn unmount(
        &self,
        mut mounted: Mounted,
        dataset: &Dataset,
        dirs: &RunDirs,
        wrote: bool,
    ) -> Result<()> {
        if self.is_native() {
            return if wrote {
                dataset.restore_flat(&dirs.trash)
            } else {
                Ok(())
            };
        }
        nix::unistd::sync();
        match &self.kind {
            Kind::Custom(CustomSpec {
                umount: Some(cmd), ..
            }) => {
                let line = substitute(cmd, dataset, dirs);
                let status = Command::new("sh")
                    .arg("-c")
                    .arg(&line)
                    .status()
                    .with_context(|| format!("{}: running {line:?}", self.label))?;
                if !status.success() {
                    progress!("warning: {}: {line:?} failed ({status})", self.label);
                }
                if sys::is_mountpoint(&dirs.mnt) {
                    sys::unmount(&dirs.mnt)?;
                }
            }
            _ => sys::unmount(&dirs.mnt)?,
        }
        if let Some(pid) = mounted.daemon {
            let deadline = Instant::now() + EXIT_TIMEOUT;
            while sys::alive(pid) && Instant::now() < deadline {
                if let Some(child) = mounted.child.as_mut() {
                    // Reaps the foreground daemon so it does not stay a zombie.
                    let _ = child.try_wait();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if sys::alive(pid) {
                progress!(
                    "warning: {}: daemon {pid} still running {} s after unmount",
                    self.label,
                    EXIT_TIMEOUT.as_secs()
                );
            }
        }
        if let Some(mut child) = mounted.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                progress!(
                    "warning: {}: foreground daemon did not exit, leaving it",
                    self.label
                );
            }
        }
        for dir in [&dirs.upper, &dirs.work] {
            dirs.trash.discard(dir)?;
        }
        Ok(())
    }

    fn with_extra(&self, options: String) -> String {
        if self.extra_opts.is_empty() {
            options
        } else {
            format!("{options},{}", self.extra_opts)
        }
    }

    fn unionfs_bin(&self) -> Result<&Path> {
        self.unionfs.as_deref().with_context(|| {
            format!(
                "{}: strata's unionfs binary not found; build it with `cargo build --release -p unionfs` or pass --unionfs PATH",
                self.label
            )
        })
    }

    fn mount_overlay(&self, dataset: &Dataset, dirs: &RunDirs) -> Result<()> {
        let options = self.with_extra(overlay_options(dataset, dirs));
        mount(
            Some("overlay"),
            &dirs.mnt,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .with_context(|| {
            format!(
                "{}: mount -t overlay -o {options} {} (needs root)",
                self.label,
                dirs.mnt.display()
            )
        })
    }
}

/// `lowerdir=L3:L2:L1,upperdir=U,workdir=W`, the overlayfs and
/// fuse-overlayfs option string.
fn overlay_options(dataset: &Dataset, dirs: &RunDirs) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}",
        join_paths(&dataset.lowers_top_first()),
        dirs.upper.display(),
        dirs.work.display()
    )
}

fn join_paths(paths: &[&Path]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// Fills the placeholders of a custom command template.
pub fn substitute(template: &str, dataset: &Dataset, dirs: &RunDirs) -> String {
    let bottom_first: Vec<&Path> = dataset.lowers.iter().map(PathBuf::as_path).collect();
    template
        .replace("{lowers}", &join_paths(&dataset.lowers_top_first()))
        .replace("{lowers_bottom_first}", &join_paths(&bottom_first))
        .replace("{lower1}", &dataset.lowers[0].display().to_string())
        .replace("{lower2}", &dataset.lowers[1].display().to_string())
        .replace("{lower3}", &dataset.lowers[2].display().to_string())
        .replace("{upper}", &dirs.upper.display().to_string())
        .replace("{work}", &dirs.work.display().to_string())
        .replace("{mnt}", &dirs.mnt.display().to_string())
}

/// Runs a mount program that daemonises, failing with its stderr.
fn run_mount_program(mut cmd: Command, label: &str) -> Result<()> {
    let shown = format!("{cmd:?}");
    let output = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("{label}: starting {shown} (is it installed?)"))?;
    if !output.status.success() {
        bail!(
            "{label}: {shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn wait_mounted(mnt: &Path, label: &str, mut child: Option<&mut Child>) -> Result<()> {
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    while !sys::is_mountpoint(mnt) {
        if let Some(child) = child.as_deref_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "{label}: mount command exited ({status}) before {} was mounted",
                    mnt.display()
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{label}: {} not mounted after {} s",
                mnt.display(),
                MOUNT_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_spec_keeps_commas_of_the_mount_command() {
        let spec =
            CustomSpec::parse("name=ofs,mount=ofs -o lowerdir={lowers},upperdir={upper} {mnt}")
                .expect("valid spec");
        assert_eq!(spec.name, "ofs");
        assert_eq!(
            spec.mount,
            "ofs -o lowerdir={lowers},upperdir={upper} {mnt}"
        );
        assert!(!spec.foreground);
        let fg = CustomSpec::parse("name=x,foreground,umount=fusermount3 -u {mnt},mount=x {mnt}")
            .expect("valid spec");
        assert!(fg.foreground);
        assert_eq!(fg.umount.as_deref(), Some("fusermount3 -u {mnt}"));
    }

    #[test]
    fn custom_spec_rejects_garbage() {
        assert!(CustomSpec::parse("name=x").is_err());
        assert!(CustomSpec::parse("name=x,colour=blue,mount=y").is_err());
        assert!(CustomSpec::parse("mount=").is_err());
    }

    #[test]
    fn backend_names_parse_with_extra_options() {
        let b = Backend::from_name("overlay+metacopy=on").expect("known backend");
        assert_eq!(b.kind, Kind::Overlay);
        assert_eq!(b.extra_opts, "metacopy=on");
        assert_eq!(b.label, "overlay+metacopy=on");
        assert!(Backend::from_name("zfs").is_err());
        assert!(Backend::from_name("native+x").is_err());
    }
}
