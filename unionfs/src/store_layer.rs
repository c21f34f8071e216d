//! [`StoreLayer`]: a layer of a `layers-format` store as a read-only lower,
//! read straight from its mmap-ed index and the content blobs (no
//! extraction). Inode numbers come from the index, so they are the same on
//! every mount.

use std::io;
use std::path::Path;
use std::sync::Arc;

use layers_format::{Content, FileKind, Index, LayerId, Store};

use crate::layer::{is_private_xattr, EntryKind, LNode, Layer, LayerAttr, LayerData, LayerEntry};
use crate::{Error, LowerSpec};

/// One store layer: its index and the store holding its blobs.
pub struct StoreLayer {
    store: Arc<Store>,
    index: Index,
    id: String,
}

fn kind(k: FileKind) -> EntryKind {
    match k {
        FileKind::Regular => EntryKind::File,
        FileKind::Directory => EntryKind::Dir,
        FileKind::Symlink => EntryKind::Symlink,
        FileKind::CharDevice => EntryKind::CharDev,
        FileKind::BlockDevice => EntryKind::BlockDev,
        FileKind::Fifo => EntryKind::Fifo,
        FileKind::Socket => EntryKind::Socket,
        FileKind::Whiteout => EntryKind::Whiteout,
    }
}

fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl StoreLayer {
    /// Opens layer `layer` (hex id) of `store`.
    pub fn open(store: Arc<Store>, layer: &str) -> Result<StoreLayer, Error> {
        let id =
            LayerId::from_hex(layer).map_err(|e| Error::Store(format!("layer id {layer}: {e}")))?;
        let index = store
            .open_layer(&id)
            .map_err(|e| Error::Store(format!("opening layer {layer}: {e}")))?;
        Ok(StoreLayer {
            store,
            index,
            id: layer.to_string(),
        })
    }
}

impl Layer for StoreLayer {
    fn describe(&self) -> String {
        format!("store layer {}", self.id)
    }

    fn root(&self) -> LNode {
        self.index.root_ino()
    }

    fn lookup(&self, dir: LNode, name: &[u8]) -> io::Result<Option<(LNode, EntryKind)>> {
        let Some(ino) = self.index.lookup(dir, name) else {
            return Ok(None);
        };
        let k = self.index.kind(ino).ok_or_else(not_found)?;
        Ok(Some((ino, kind(k))))
    }

    fn attr(&self, node: LNode) -> io::Result<LayerAttr> {
        let a = self.index.attr(node).ok_or_else(not_found)?;
        let mtime = (a.mtime_sec, a.mtime_nsec as i64);
        Ok(LayerAttr {
            ino: a.ino,
            kind: kind(a.kind),
            perm: a.mode & 0o7777,
            uid: a.uid,
            gid: a.gid,
            size: a.size,
            blocks: a.size.div_ceil(512),
            nlink: a.nlink.max(1),
            rdev: a.rdev,
            atime: mtime,
            mtime,
            ctime: (a.ctime_sec, a.ctime_nsec as i64),
        })
    }

    fn read_dir(&self, dir: LNode) -> io::Result<Vec<LayerEntry>> {
        Ok(self
            .index
            .readdir(dir, 0)
            .map(|(_, e)| LayerEntry {
                name: e.name.to_vec(),
                kind: kind(e.kind),
                ino: if e.kind == FileKind::Whiteout {
                    0
                } else {
                    e.ino
                },
            })
            .collect())
    }

    fn is_opaque(&self, dir: LNode) -> io::Result<bool> {
        Ok(self.index.is_opaque(dir))
    }

    fn readlink(&self, node: LNode) -> io::Result<Vec<u8>> {
        self.index
            .readlink(node)
            .map(|t| t.to_vec())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn list_xattrs(&self, node: LNode) -> io::Result<Vec<Vec<u8>>> {
        Ok(self
            .index
            .xattrs(node)
            .filter(|(k, _)| !is_private_xattr(k))
            .map(|(k, _)| k.to_vec())
            .collect())
    }

    fn get_xattr(&self, node: LNode, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(self.index.getxattr(node, key).map(|v| v.to_vec()))
    }

    fn open(&self, node: LNode) -> io::Result<LayerData> {
        match self.index.content(node) {
            Content::Empty => Ok(LayerData::Inline(Arc::from(&[][..]))),
            Content::Inline(b) => Ok(LayerData::Inline(Arc::from(b))),
            Content::Blob(id) => self
                .store
                .open_blob(&id)
                .map(LayerData::File)
                .map_err(|e| io::Error::other(e.to_string())),
        }
    }

    fn stable_inodes(&self) -> bool {
        true
    }
}

/// Opens layer `layer` (hex id) of the store at `store`.
pub fn open_store_layer(store: &Path, layer: &str) -> Result<Arc<dyn Layer>, Error> {
    let s = Store::open(store)
        .map_err(|e| Error::Store(format!("opening store {}: {e}", store.display())))?;
    Ok(Arc::new(StoreLayer::open(Arc::new(s), layer)?))
}

/// The lowers of image `image` (`name[:tag]` or id) in store `store`, top layer first.
pub fn image_lowers(store: &Path, image: &str) -> Result<Vec<LowerSpec>, Error> {
    let s = Arc::new(
        Store::open(store)
            .map_err(|e| Error::Store(format!("opening store {}: {e}", store.display())))?,
    );
    let rec = s
        .resolve_image(image)
        .map_err(|e| Error::Store(format!("image {image} in store {}: {e}", store.display())))?;
    let mut out = Vec::with_capacity(rec.layers.len());
    for id in rec.layers.iter().rev() {
        let l = StoreLayer::open(s.clone(), &id.to_hex())?;
        out.push(LowerSpec::Custom(Arc::new(l)));
    }
    Ok(out)
}
