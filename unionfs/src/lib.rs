//! Union filesystem over FUSE: N read-only lowers plus one writable upper,
//! with kernel overlayfs semantics (whiteouts, opaque directories, copy-up,
//! metadata-only copy-up, directory rename by redirect, stable inodes).
//!
//! - [`layer`]: the [`Layer`] trait for read-only lowers; [`DirLayer`]
//!   (a plain directory) and [`StoreLayer`] (a `layers-format` store layer).
//! - [`whiteout`]: the on-disk whiteout and opaque forms.
//! - `union`: name resolution, merged listings, copy-up.
//! - `fs`: the FUSE operations.
//! - [`mount`]: [`MountConfig`], [`mount_background`], [`mount_foreground`].
//!
//! The launcher mounts a container rootfs in-process with
//! [`mount_background`]; the `unionfs` binary is a fuse-overlayfs
//! compatible mount program.

pub mod cmdline;
pub mod dir_layer;
mod fs;
mod inode;
mod kmount;
pub mod latency;
pub mod layer;
mod lookahead;
pub mod mount;
pub mod probe;
pub mod relay;
pub mod store_layer;
mod sys;
mod union;
pub mod whiteout;

pub use dir_layer::DirLayer;
pub use layer::{EntryKind, LNode, Layer, LayerAttr, LayerData, LayerEntry};
pub use mount::{mount_background, mount_foreground, IdRange, LowerSpec, MountConfig, MountHandle};
pub use store_layer::StoreLayer;

/// Errors of the union filesystem library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a named thing failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being accessed.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The mount configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// The layer store failed.
    #[error("layer store: {0}")]
    Store(String),
}
