//! The container's root filesystem as the supervisor provides it: the
//! image's store layers under a union mount (the `unionfs` library, served
//! by threads of the supervisor) with the container's upper and work dirs,
//! or a plain directory (`--rootfs DIR`) used as it is. Without root the
//! mount goes through fusermount3 and maps ids for the container's user
//! namespace (see [`crate::rootless`]).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use unionfs::{LowerSpec, MountConfig, MountHandle};

use crate::container::Container;
use crate::rootfs;
use crate::rootless::UserNs;

/// A mounted (or borrowed) rootfs; unmounted on drop.
pub struct RootMount {
    path: PathBuf,
    handle: Option<MountHandle>,
    remove_dir: bool,
}

fn store_lowers(c: &Container, store: &Path) -> Vec<LowerSpec> {
    // The store lists layers base first; a union wants the top first.
    c.config
        .layers
        .iter()
        .rev()
        .map(|l| LowerSpec::Store {
            store: store.to_path_buf(),
            layer: l.clone(),
        })
        .collect()
}

/// Detach whatever is mounted at `mp` (a mount left by a supervisor that
/// was killed: its FUSE server is gone). Without root the mount belongs to
/// the user and only fusermount3 may take it away.
pub fn detach_stale(mp: &Path) {
    if !rootfs::is_mountpoint(mp) {
        return;
    }
    if nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH).is_ok() {
        return;
    }
    let done = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(done, Ok(s) if s.success()) {
        tracing::warn!(
            "could not unmount the stale rootfs {}: unmount it by hand (fusermount3 -u -z)",
            mp.display()
        );
    }
}

fn clear_stale(mp: &Path) -> Result<()> {
    detach_stale(mp);
    fs::create_dir_all(mp).with_context(|| format!("creating mount point {}", mp.display()))
}

impl RootMount {
    /// Provide the rootfs of `c` at `c.paths.rootfs()` (or the directory).
    /// With `userns` (rootless) the union shows the image's ids as the
    /// host ids that namespace maps back to them.
    pub fn mount(c: &Container, store: &Path, userns: Option<&UserNs>) -> Result<Self> {
        if let Some(dir) = &c.config.rootfs_dir {
            if !dir.is_dir() {
                bail!("rootfs directory {} is gone", dir.display());
            }
            return Ok(Self {
                path: dir.clone(),
                handle: None,
                remove_dir: false,
            });
        }
        let mp = c.paths.rootfs();
        clear_stale(&mp)?;
        let (uid_map, gid_map) = userns.map(UserNs::union_maps).unwrap_or_default();
        let cfg = MountConfig {
            lowers: store_lowers(c, store),
            upper: Some(c.paths.upper()),
            work: Some(c.paths.work()),
            allow_other: true,
            uid_map,
            gid_map,
            fsname: format!("strata-{}", c.short_id()),
            ..MountConfig::default()
        };
        let handle = unionfs::mount_background(cfg, &mp).with_context(|| {
            let hint = if userns.is_some() {
                " (without root this needs fusermount3, /dev/fuse open to you and \
                 user_allow_other in /etc/fuse.conf)"
            } else {
                ""
            };
            format!(
                "mounting the union rootfs of {} at {}{hint}",
                c.config.name,
                mp.display()
            )
        })?;
        Ok(Self {
            path: mp,
            handle: Some(handle),
            remove_dir: false,
        })
    }

    /// A read-only view of the merged rootfs (upper as the top lower), for
    /// `export` and `cp` of a stopped container, at a private path.
    /// With `writable` the container's own upper and work dirs are used
    /// (for `cp` into a stopped container).
    pub fn mount_view(c: &Container, store: &Path, writable: bool) -> Result<Self> {
        if let Some(dir) = &c.config.rootfs_dir {
            return Ok(Self {
                path: dir.clone(),
                handle: None,
                remove_dir: false,
            });
        }
        let mp = c.paths.run.join(format!("view-{}", std::process::id()));
        clear_stale(&mp)?;
        let mut lowers = Vec::new();
        if !writable {
            lowers.push(LowerSpec::Dir(c.paths.upper()));
        }
        lowers.extend(store_lowers(c, store));
        let cfg = MountConfig {
            lowers,
            upper: writable.then(|| c.paths.upper()),
            work: writable.then(|| c.paths.work()),
            fsname: format!("strata-view-{}", c.short_id()),
            ..MountConfig::default()
        };
        let handle = unionfs::mount_background(cfg, &mp)
            .with_context(|| format!("mounting a view of {} at {}", c.config.name, mp.display()))?;
        Ok(Self {
            path: mp,
            handle: Some(handle),
            remove_dir: true,
        })
    }

    /// Where the rootfs is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RootMount {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if let Err(e) = h.unmount() {
                tracing::warn!("unmounting {}: {e}", self.path.display());
                let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if self.remove_dir {
            let _ = fs::remove_dir(&self.path);
            if let Some(parent) = self.path.parent() {
                // The run dir of a stopped container holds nothing else.
                let _ = fs::remove_dir(parent);
            }
        }
    }
}
