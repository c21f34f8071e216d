//! The container's root filesystem as the supervisor provides it: the
//! image's store layers under a union mount with the container's upper and
//! work dirs, or a plain directory (`--rootfs DIR`) used as it is.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::container::Container;

/// A mounted (or borrowed) rootfs; unmounted on drop.
pub struct RootMount {
    path: PathBuf,
}

impl RootMount {
    /// Provide the rootfs of `c` at `c.paths.rootfs()` (or the directory).
    pub fn mount(c: &Container, _store: &Path) -> Result<Self> {
        if let Some(dir) = &c.config.rootfs_dir {
            if !dir.is_dir() {
                bail!("rootfs directory {} is gone", dir.display());
            }
            return Ok(Self { path: dir.clone() });
        }
        bail!(
            "image rootfs for {} needs the union filesystem, which this build lacks",
            c.config.image
        )
    }

    /// Where the rootfs is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl RootMount {
    /// A read-only view of the merged rootfs of a stopped container (for
    /// `export` and `cp`), mounted at a private temporary path.
    pub fn mount_view(c: &Container, _store: &Path) -> Result<Self> {
        bail!("reading the rootfs of stopped container {} needs the union filesystem, which this build lacks", c.config.name)
    }
}
