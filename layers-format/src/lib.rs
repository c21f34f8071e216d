//! Content-addressed layer store: blobs addressed by BLAKE3, one mmap-able
//! index per layer, and importers from tar, directories and OCI images.
//!
//! - [`format`]: the on-disk index format, a documented contract.
//! - [`index`]: the index reader ([`index::Index`]) and writer
//!   ([`index::IndexBuilder`]).
//! - [`Store`]: the store directory (blobs, layers, images, names, gc).
//! - [`import`]: importers (tar, directory, OCI layout, docker-save).
//!
//! The library never prints; errors are [`Error`].

pub mod error;
pub mod export;
pub mod format;
pub mod ids;
pub mod image;
pub mod import;
pub mod index;
pub mod maint;
pub mod oci;
mod staging;
pub mod store;
mod sys;
pub mod view;

pub use error::{Error, Result};
pub use ids::{BlobId, ImageId, LayerId};
pub use image::{ImageConfig, ImageRecord, ImageSource, KeptBlob, NewImage};
pub use import::{Compression, DirFormat, LayerImport, SourceKind};
pub use index::{Attr, Checks, Content, DirEntry, FileKind, Index};
pub use maint::{DiskUsage, GcReport, Problem, VerifyReport};
pub use store::{RemovedImage, Store, StoreLock};
