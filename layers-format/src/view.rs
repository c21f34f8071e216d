//! A read-only merged view of an image's layers, with OCI whiteout and
//! opaque semantics: what the union filesystem shows, computed directly
//! from the indexes (used by `strata image tree` and by tests).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::ids::LayerId;
use crate::index::{Attr, FileKind, Index};
use crate::store::Store;

/// One visible entry of a merged directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Which layer it comes from (0 is the base layer).
    pub layer: usize,
    /// Inode in that layer.
    pub ino: u64,
    /// Attributes in that layer.
    pub attr: Attr,
}

/// The layers of an image, opened, base first.
#[derive(Debug)]
pub struct MergedView {
    layers: Vec<Index>,
}

impl MergedView {
    /// Open the layers (base first).
    pub fn open(store: &Store, layers: &[LayerId]) -> Result<MergedView> {
        let layers = layers
            .iter()
            .map(|l| store.open_layer(l))
            .collect::<Result<_>>()?;
        Ok(MergedView { layers })
    }

    /// A view over already opened indexes (base first).
    pub fn from_indexes(layers: Vec<Index>) -> MergedView {
        MergedView { layers }
    }

    /// The layer indexes, base first.
    pub fn layers(&self) -> &[Index] {
        &self.layers
    }

    /// For each layer (top first), the inode of directory `path` there, as
    /// long as no layer above hides it (whiteout, non-directory, or an opaque
    /// directory on the path).
    fn dir_inos(&self, path: &[&[u8]]) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (i, idx) in self.layers.iter().enumerate().rev() {
            let mut ino = idx.root_ino();
            let mut opaque = idx.is_opaque(ino);
            let mut state = Some(ino);
            for comp in path {
                match idx.lookup(ino, comp) {
                    Some(c) if idx.kind(c) == Some(FileKind::Directory) => {
                        ino = c;
                        opaque |= idx.is_opaque(c);
                        state = Some(c);
                    }
                    Some(_) => {
                        // A whiteout or a non-directory hides the rest below.
                        return out;
                    }
                    None => {
                        state = None;
                        break;
                    }
                }
            }
            if let Some(ino) = state {
                out.push((i, ino));
            }
            if opaque {
                break;
            }
        }
        out
    }

    /// The visible entries of directory `path` (components), sorted by name.
    pub fn readdir(&self, path: &[&[u8]]) -> Vec<MergedEntry> {
        let mut seen: BTreeMap<Vec<u8>, Option<MergedEntry>> = BTreeMap::new();
        for (layer, ino) in self.dir_inos(path) {
            let idx = &self.layers[layer];
            for (_, e) in idx.readdir(ino, 0) {
                if seen.contains_key(e.name) {
                    continue;
                }
                let value = match (e.kind, idx.attr(e.ino)) {
                    (FileKind::Whiteout, _) | (_, None) => None,
                    (_, Some(attr)) => Some(MergedEntry {
                        name: e.name.to_vec(),
                        layer,
                        ino: e.ino,
                        attr,
                    }),
                };
                seen.insert(e.name.to_vec(), value);
            }
        }
        seen.into_values().flatten().collect()
    }

    /// The attributes of the merged root (from the top layer).
    pub fn root_attr(&self) -> Option<(usize, Attr)> {
        let top = self.layers.len().checked_sub(1)?;
        let idx = &self.layers[top];
        idx.attr(idx.root_ino()).map(|a| (top, a))
    }

    /// Walk the whole merged tree depth first (pre-order) in name order,
    /// calling `f` with each entry's path and entry (not the root). Iterative.
    pub fn walk(&self, mut f: impl FnMut(&[u8], &MergedEntry)) {
        let mut stack: Vec<(Vec<u8>, MergedEntry)> = Vec::new();
        let push_dir = |stack: &mut Vec<(Vec<u8>, MergedEntry)>, dir: &[u8]| {
            let comps: Vec<&[u8]> = dir
                .split(|&c| c == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            for e in self.readdir(&comps).into_iter().rev() {
                let path = if dir.is_empty() {
                    e.name.clone()
                } else {
                    [dir, b"/", &e.name].concat()
                };
                stack.push((path, e));
            }
        };
        push_dir(&mut stack, b"");
        while let Some((path, e)) = stack.pop() {
            f(&path, &e);
            if e.attr.kind == FileKind::Directory {
                push_dir(&mut stack, &path);
            }
        }
    }
}
