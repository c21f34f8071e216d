//! The union's core without a kernel mount: name resolution through the
//! inode table and merged directory listings, for micro-benchmarks
//! (`benches/benches/union.rs`) and tests. Read-only use: nothing here
//! writes to the upper.

use std::sync::Arc;

use crate::inode::Node;
use crate::mount::{build_union, MountConfig};
use crate::union::Union;
use crate::Error;

/// A union opened from a [`MountConfig`] and driven directly.
pub struct Probe {
    union: Union,
}

impl Probe {
    /// Opens the layers (and upper, if any) of `cfg`; nothing is mounted.
    pub fn open(cfg: &MountConfig) -> Result<Probe, Error> {
        Ok(Probe {
            union: build_union(cfg)?,
        })
    }

    fn walk(&self, path: &[u8]) -> Option<Arc<Node>> {
        let mut node = self.union.node(crate::inode::ROOT_INO).ok()?;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            node = self.union.resolve(&node, comp).ok()??.0;
        }
        Some(node)
    }

    /// The union inode number of `path` (relative to the root, `/`
    /// separated), `None` when it does not exist. Components already looked
    /// up are found in the inode table.
    pub fn resolve(&self, path: &[u8]) -> Option<u64> {
        self.walk(path).map(|n| n.ino)
    }

    /// The number of entries in the merged listing of directory `path`
    /// (served from the listing cache when it holds it).
    pub fn list(&self, path: &[u8]) -> Option<usize> {
        let node = self.walk(path)?;
        self.union.listing(&node).ok().map(|l| l.len())
    }

    /// Like [`Probe::list`], but merges the layers again (cache dropped).
    pub fn list_uncached(&self, path: &[u8]) -> Option<usize> {
        let node = self.walk(path)?;
        self.union.invalidate_dir(node.ino);
        self.union.listing(&node).ok().map(|l| l.len())
    }

    /// Nodes in the inode table.
    pub fn nodes(&self) -> usize {
        self.union.nodes.len()
    }
}
