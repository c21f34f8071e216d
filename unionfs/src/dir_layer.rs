//! [`DirLayer`]: a plain host directory as a read-only lower (`lowerdir=`).
//!
//! Every access is relative to a directory fd (`O_PATH`), opened once per
//! directory and kept, so deep trees work however long their host path is.
//!
//! Every name the union asks about gets a layer node number, kept until
//! unmount. The tables are compact (one map entry per name, the name stored
//! once, found again by a keyed hash), because a walk of a large tree asks
//! about every name in every layer.

use std::hash::{BuildHasher, RandomState};
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
    nodes: DashMap<LNode, DNode>,
    /// (parent, keyed hash of the name) -> node; the node holds the name.
    by_hash: DashMap<(LNode, u64), LNode>,
    /// The rare second name of a parent whose hash is already taken.
    collided: DashMap<(LNode, Box<[u8]>), LNode>,
    name_key: RandomState,
    next: AtomicU64,
    /// Tests: every name hashes alike, so the collision path is taken.
    #[cfg(test)]
    same_hash: bool,
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
        let nodes = sys::new_map();
        let root = DNode {
            parent: ROOT,
            name: Box::from(&b""[..]),
            dir_fd: OnceLock::new(),
            opaque: OnceLock::new(),
        };
        let _ = root.dir_fd.set(Arc::new(fd));
        nodes.insert(ROOT, root);
        Ok(DirLayer {
            path: path.to_path_buf(),
            nodes,
            by_hash: sys::new_map(),
            collided: sys::new_map(),
            name_key: RandomState::new(),
            next: AtomicU64::new(ROOT + 1),
            #[cfg(test)]
            same_hash: false,
        })
    }

    fn stale() -> io::Error {
        io::Error::from_raw_os_error(libc::ESTALE)
    }

    /// The directory fd of directory node `id`.
    fn dir_fd(&self, id: LNode) -> io::Result<Arc<OwnedFd>> {
        // Map guards are dropped before recursing or calling the kernel.
        let (parent, name) = {
            let node = self.nodes.get(&id).ok_or_else(Self::stale)?;
            if let Some(fd) = node.dir_fd.get() {
                return Ok(fd.clone());
            }
            (node.parent, node.name.clone())
        };
        let pfd = self.dir_fd(parent)?;
        let fd = Arc::new(sys::open_at(
            pfd.as_fd(),
            &name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?);
        let node = self.nodes.get(&id).ok_or_else(Self::stale)?;
        Ok(node.dir_fd.get_or_init(|| fd).clone())
    }

    /// (parent dir fd, name) of a node; the root is (root fd, "").
    fn locate(&self, id: LNode) -> io::Result<(Arc<OwnedFd>, Box<[u8]>)> {
        if id == ROOT {
            return Ok((self.dir_fd(ROOT)?, Box::from(&b""[..])));
        }
        let (parent, name) = {
            let node = self.nodes.get(&id).ok_or_else(Self::stale)?;
            (node.parent, node.name.clone())
        };
        Ok((self.dir_fd(parent)?, name))
    }

    fn named(&self, id: LNode, name: &[u8]) -> bool {
        self.nodes.get(&id).is_some_and(|n| &*n.name == name)
    }

    fn new_node(&self, dir: LNode, name: &[u8]) -> LNode {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.nodes.insert(
            id,
            DNode {
                parent: dir,
                name: Box::from(name),
                dir_fd: OnceLock::new(),
                opaque: OnceLock::new(),
            },
        );
        id
    }

    fn name_hash(&self, name: &[u8]) -> u64 {
        #[cfg(test)]
        if self.same_hash {
            return 0;
        }
        self.name_key.hash_one(name)
    }

    fn intern(&self, dir: LNode, name: &[u8]) -> LNode {
        let key = (dir, self.name_hash(name));
        if let Some(id) = self.by_hash.get(&key).map(|id| *id) {
            if self.named(id, name) {
                return id;
            }
            // Another name of `dir` has this hash (a 64-bit keyed hash: rare).
            return *self
                .collided
                .entry((dir, Box::from(name)))
                .or_insert_with(|| self.new_node(dir, name));
        }
        let id = *self
            .by_hash
            .entry(key)
            .or_insert_with(|| self.new_node(dir, name));
        if self.named(id, name) {
            id
        } else {
            // Lost a race to a colliding name.
            *self
                .collided
                .entry((dir, Box::from(name)))
                .or_insert_with(|| self.new_node(dir, name))
        }
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
        if let Some(&o) = self.nodes.get(&dir).ok_or_else(Self::stale)?.opaque.get() {
            return Ok(o);
        }
        let fd = self.dir_fd(dir)?;
        let o = whiteout::dir_is_opaque(fd.as_fd());
        if let Some(node) = self.nodes.get(&dir) {
            let _ = node.opaque.set(o);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(t.path().join("a/b")).expect("mkdir");
        for i in 0..200 {
            std::fs::write(t.path().join(format!("a/f{i}")), vec![b'x'; i]).expect("write");
        }
        std::fs::write(t.path().join("a/b/deep"), b"deep").expect("write");
        t
    }

    fn check(layer: &DirLayer) {
        let root = layer.root();
        let (a, kind) = layer.lookup(root, b"a").expect("lookup").expect("a exists");
        assert_eq!(kind, EntryKind::Dir);
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let name = format!("f{i}");
            let (n, kind) = layer
                .lookup(a, name.as_bytes())
                .expect("lookup")
                .expect("exists");
            assert_eq!(kind, EntryKind::File);
            assert!(seen.insert(n), "{name} got the node of another name");
            let again = layer
                .lookup(a, name.as_bytes())
                .expect("lookup")
                .expect("exists");
            assert_eq!(again.0, n, "{name} got a second node");
            assert_eq!(layer.attr(n).expect("attr").size, i as u64, "{name}");
        }
        assert!(layer.lookup(a, b"missing").expect("lookup").is_none());
        let (b, _) = layer.lookup(a, b"b").expect("lookup").expect("b exists");
        let (deep, _) = layer
            .lookup(b, b"deep")
            .expect("lookup")
            .expect("deep exists");
        match layer.open(deep).expect("open") {
            LayerData::File(mut f) => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut f, &mut s).expect("read");
                assert_eq!(s, "deep");
            }
            LayerData::Inline(_) => panic!("a directory layer has no inline data"),
        }
        assert!(!layer.is_opaque(b).expect("opaque"));
        assert_eq!(layer.read_dir(a).expect("read_dir").len(), 201);
    }

    #[test]
    fn names_get_one_node_each() {
        let t = tree();
        check(&DirLayer::open(t.path()).expect("open layer"));
    }

    #[test]
    fn names_with_the_same_hash_stay_apart() {
        let t = tree();
        let mut layer = DirLayer::open(t.path()).expect("open layer");
        layer.same_hash = true;
        check(&layer);
    }
}
