//! [`DirLayer`]: a plain host directory as a read-only lower (`lowerdir=`).
//!
//! Every access is relative to a directory fd (`O_PATH`), opened once per
//! directory and kept, so deep trees work however long their host path is.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;

use crate::layer::{EntryKind, LNode, Layer, LayerAttr, LayerData, LayerEntry};
use crate::{sys, whiteout};

struct DNode {
    parent: LNode,
    name: Box<[u8]>,
    dir_fd: OnceLock<Arc<OwnedFd>>,
    /// Whether the directory is opaque; lowers do not change, so it is
    /// asked once (resolving a name and listing the directory both need it).
    opaque: OnceLock<bool>,
}

/// A host directory used as a read-only layer.
pub struct DirLayer {
    path: PathBuf,
    nodes: DashMap<LNode, Arc<DNode>>,
    by_name: DashMap<(LNode, Box<[u8]>), LNode>,
    next: AtomicU64,
}

const ROOT: LNode = 1;

impl DirLayer {
    /// Opens `path` as a layer.
    pub fn open(path: &Path) -> io::Result<DirLayer> {
        let fd = sys::open_dir_path(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open lower directory {}: {e}", path.display()),
            )
        })?;
        let nodes = DashMap::new();
        let root = DNode {
            parent: ROOT,
            name: Box::from(&b""[..]),
            dir_fd: OnceLock::new(),
            opaque: OnceLock::new(),
        };
        let _ = root.dir_fd.set(Arc::new(fd));
        nodes.insert(ROOT, Arc::new(root));
        Ok(DirLayer {
            path: path.to_path_buf(),
            nodes,
            by_name: DashMap::new(),
            next: AtomicU64::new(ROOT + 1),
        })
    }

    fn node(&self, id: LNode) -> io::Result<Arc<DNode>> {
        self.nodes
            .get(&id)
            .map(|n| n.clone())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))
    }

    /// The directory fd of directory node `id`.
    fn dir_fd(&self, id: LNode) -> io::Result<Arc<OwnedFd>> {
        let node = self.node(id)?;
        if let Some(fd) = node.dir_fd.get() {
            return Ok(fd.clone());
        }
        let parent = self.dir_fd(node.parent)?;
        let fd = sys::open_at(
            parent.as_fd(),
            &node.name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        let _ = node.dir_fd.set(Arc::new(fd));
        node.dir_fd
            .get()
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))
    }

    /// (parent dir fd, name) of a node; the root is (root fd, "").
    fn locate(&self, id: LNode) -> io::Result<(Arc<OwnedFd>, Box<[u8]>)> {
        if id == ROOT {
            return Ok((self.dir_fd(ROOT)?, Box::from(&b""[..])));
        }
        let node = self.node(id)?;
        Ok((self.dir_fd(node.parent)?, node.name.clone()))
    }

    fn intern(&self, dir: LNode, name: &[u8]) -> LNode {
        let key = (dir, Box::from(name));
        if let Some(id) = self.by_name.get(&key) {
            return *id;
        }
        *self.by_name.entry(key).or_insert_with(|| {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            self.nodes.insert(
                id,
                Arc::new(DNode {
                    parent: dir,
                    name: Box::from(name),
                    dir_fd: OnceLock::new(),
                    opaque: OnceLock::new(),
                }),
            );
            id
        })
    }
}

impl Layer for DirLayer {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn root(&self) -> LNode {
        ROOT
    }

    fn lookup(&self, dir: LNode, name: &[u8]) -> io::Result<Option<(LNode, EntryKind)>> {
        Ok(self.lookup_attr(dir, name)?.map(|(n, k, _)| (n, k)))
    }

    fn lookup_attr(
        &self,
        dir: LNode,
        name: &[u8],
    ) -> io::Result<Option<(LNode, EntryKind, Option<LayerAttr>)>> {
        let fd = self.dir_fd(dir)?;
        match whiteout::classify_at(fd.as_fd(), name)? {
            None => Ok(None),
            Some((_, EntryKind::Whiteout)) => Ok(Some((0, EntryKind::Whiteout, None))),
            Some((st, kind)) => Ok(Some((
                self.intern(dir, name),
                kind,
                st.as_ref().map(LayerAttr::from_stat),
            ))),
        }
    }

    fn attr(&self, node: LNode) -> io::Result<LayerAttr> {
        let (dir, name) = self.locate(node)?;
        let st = if name.is_empty() {
            sys::fstat(dir.as_fd())?
        } else {
            sys::stat_at(dir.as_fd(), &name)?
        };
        Ok(LayerAttr::from_stat(&st))
    }

    fn read_dir(&self, dir: LNode) -> io::Result<Vec<LayerEntry>> {
        let fd = self.dir_fd(dir)?;
        whiteout::read_dir_classified(fd.as_fd())
    }

    fn is_opaque(&self, dir: LNode) -> io::Result<bool> {
        let node = self.node(dir)?;
        if let Some(&o) = node.opaque.get() {
            return Ok(o);
        }
        let fd = self.dir_fd(dir)?;
        let o = whiteout::dir_is_opaque(fd.as_fd());
        let _ = node.opaque.set(o);
        Ok(o)
    }

    fn readlink(&self, node: LNode) -> io::Result<Vec<u8>> {
        let (dir, name) = self.locate(node)?;
        sys::readlink_at(dir.as_fd(), &name)
    }

    fn list_xattrs(&self, node: LNode) -> io::Result<Vec<Vec<u8>>> {
        let (dir, name) = self.locate(node)?;
        whiteout::visible_xattrs(dir.as_fd(), &name)
    }

    fn get_xattr(&self, node: LNode, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let (dir, name) = self.locate(node)?;
        sys::get_xattr_at(dir.as_fd(), &name, key)
    }

    fn open(&self, node: LNode) -> io::Result<LayerData> {
        let (dir, name) = self.locate(node)?;
        let fd = sys::open_at(
            dir.as_fd(),
            &name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOATIME,
            0,
        )
        .or_else(|e| {
            if e.raw_os_error() == Some(libc::EPERM) {
                // O_NOATIME needs ownership or CAP_FOWNER.
                sys::open_at(dir.as_fd(), &name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
            } else {
                Err(e)
            }
        })?;
        Ok(LayerData::File(sys::into_file(fd)))
    }
}
