//! Mounting the two filesystems under test: kernel overlayfs and the
//! `unionfs` mount program, plus unmount and daemon bookkeeping.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Kernel overlayfs options of the reference mount: directory rename
/// (redirect) and hardlink-preserving copy-up (index) like unionfs does;
/// metacopy off, this kernel's default, so data is copied up in full.
pub const KERNEL_OPTS: &str = "redirect_dir=on,index=on,metacopy=off";

/// As [`KERNEL_OPTS`] with metadata-only copy-up: needed to read an upper
/// holding metacopy files (unionfs writes them for big files), and to test
/// that unionfs reads kernel-written metacopy+redirect files.
pub const KERNEL_METACOPY_OPTS: &str = "redirect_dir=on,index=on,metacopy=on";

/// Path of the `unionfs` binary: `$STRATA_UNIONFS`, else
/// `<workspace>/target/{debug,release}/unionfs` (also under `$CARGO_TARGET_DIR`).
pub fn unionfs_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_UNIONFS") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "STRATA_UNIONFS={} does not exist: run `cargo build -p unionfs` or fix the variable",
            p.display()
        );
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."));
    let mut dirs = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(t));
    }
    dirs.push(ws.join("target"));
    for d in &dirs {
        for profile in ["debug", "release"] {
            let p = d.join(profile).join("unionfs");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "the unionfs binary was not found under {}: run `cargo build -p unionfs` first (or set STRATA_UNIONFS)",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// Whether `mnt` is a mount point right now (per /proc/self/mountinfo).
pub fn is_mounted(mnt: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mnt.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Mount kernel overlayfs at `mnt`; `lowers` top first.
pub fn mount_kernel(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    mnt: &Path,
    opts: &str,
) -> Result<()> {
    let lower = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={},{opts}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        mnt,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .with_context(|| format!("mount -t overlay on {} with {data}", mnt.display()))
}

/// Unmount `mnt`, retrying on EBUSY, detaching lazily as a last resort.
pub fn unmount(mnt: &Path) -> Result<()> {
    for _ in 0..50 {
        match umount2(mnt, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::Error::EBUSY) => std::thread::sleep(Duration::from_millis(20)),
            Err(nix::Error::EINVAL) if !is_mounted(mnt) => return Ok(()),
            Err(e) => {
                let _ = umount2(mnt, MntFlags::MNT_DETACH);
                bail!("umount {}: {e}", mnt.display());
            }
        }
    }
    umount2(mnt, MntFlags::MNT_DETACH).with_context(|| format!("umount -l {}", mnt.display()))
}

/// How to start unionfs.
#[derive(Clone, Debug)]
pub struct UnionfsCmd {
    /// The binary.
    pub bin: PathBuf,
    /// Extra `-o` options appended after lowerdir/upperdir/workdir.
    pub extra_opts: Vec<String>,
}

/// A running unionfs daemon in the foreground (`-f`), owned by the test.
pub struct UnionfsMount {
    /// Mount point.
    pub mnt: PathBuf,
    child: Option<Child>,
    stderr_path: PathBuf,
}

impl UnionfsCmd {
    /// The binary found by [`unionfs_bin`].
    pub fn locate() -> Result<UnionfsCmd> {
        Ok(UnionfsCmd {
            bin: unionfs_bin()?,
            extra_opts: Vec::new(),
        })
    }

    /// Start `unionfs -f -o lowerdir=..,upperdir=..,workdir=.. MNT` and wait
    /// until the mount is live. Its stderr goes to `log`.
    pub fn mount(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        log: &Path,
    ) -> Result<UnionfsMount> {
        let lower = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut opts = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        for o in &self.extra_opts {
            opts.push(',');
            opts.push_str(o);
        }
        let errf =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(&self.bin)
            .arg("-f")
            .arg("-o")
            .arg(&opts)
            .arg(mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errf)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        let mut m = UnionfsMount {
            mnt: mnt.to_path_buf(),
            child: Some(child),
            stderr_path: log.to_path_buf(),
        };
        let start = Instant::now();
        while !is_mounted(mnt) {
            if let Some(c) = m.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    m.child = None;
                    bail!(
                        "unionfs exited ({status}) before mounting {} with -o {opts}: {}",
                        mnt.display(),
                        m.stderr_tail()
                    );
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "unionfs did not mount {} within 20 s: {}",
                    mnt.display(),
                    m.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(m)
    }
}

impl UnionfsMount {
    /// Process id of the daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last 2 KiB of the daemon's stderr.
    pub fn stderr_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr_path) {
            let _ = f.read_to_string(&mut s);
        }
        let start = s.len().saturating_sub(2048);
        let start = (start..s.len())
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(s.len());
        s[start..].trim().to_string()
    }

    /// Whether the daemon is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// kill -9 the daemon and reap it; the mount stays (ENOTCONN) until
    /// detached.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Unmount and wait for the daemon to exit (killing it after 10 s).
    pub fn unmount(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        let r = if is_mounted(&self.mnt) {
            unmount(&self.mnt)
        } else {
            Ok(())
        };
        if let Some(mut c) = self.child.take() {
            let start = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if start.elapsed() < Duration::from_secs(10) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        r
    }
}

impl Drop for UnionfsMount {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// A kernel mount (overlay or tmpfs) unmounted on drop.
pub struct KernelMount {
    /// Mount point.
    pub mnt: PathBuf,
    done: bool,
}

impl KernelMount {
    /// Guard an existing mount at `mnt`.
    pub fn guard(mnt: &Path) -> KernelMount {
        KernelMount {
            mnt: mnt.to_path_buf(),
            done: false,
        }
    }
    /// Unmount now.
    pub fn unmount(mut self) -> Result<()> {
        self.done = true;
        unmount(&self.mnt)
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        if !self.done {
            let _ = unmount(&self.mnt);
        }
    }
}

/// Mount a tmpfs of `size` (e.g. `8m`) at `mnt`, unmounted when dropped.
pub fn mount_tmpfs(mnt: &Path, size: &str) -> Result<KernelMount> {
    let data = format!("size={size},mode=0755");
    mount(
        Some("tmpfs"),
        mnt,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .with_context(|| format!("mount -t tmpfs -o {data} {}", mnt.display()))?;
    Ok(KernelMount::guard(mnt))
}
