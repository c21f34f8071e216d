//! Union inodes: the table of live nodes and stable inode numbers.
//!
//! A union inode number is `tag << 56 | layer inode`, where the tag names
//! the layer the object comes from (1 + lower index, or [`UPPER_TAG`]).
//! Copy-up records the original number in an xattr on the upper object, so
//! `st_ino` does not change when a file is copied up, and for store lowers
//! it is the same on every mount. Layer inodes that do not fit in 56 bits
//! get numbers from an overflow map (stable for the life of the mount).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::layer::{EntryKind, LNode};

/// FUSE root inode number.
pub const ROOT_INO: u64 = 1;
/// Tag of objects that exist only in the upper directory.
pub const UPPER_TAG: u64 = 0xfe;
const TAG_SHIFT: u32 = 56;
const LOW_MASK: u64 = (1 << TAG_SHIFT) - 1;
const OVERFLOW_TAG: u64 = 0xff;

/// Allocates union inode numbers.
pub struct InoMap {
    overflow: DashMap<(u64, u64), u64>,
    next_overflow: AtomicU64,
}

impl Default for InoMap {
    // Not derived: `DashMap::default` sizes its shards from
    // `available_parallelism`, which reads cgroup files on every mount.
    fn default() -> Self {
        InoMap {
            overflow: crate::sys::new_map(),
            next_overflow: AtomicU64::new(0),
        }
    }
}

impl InoMap {
    /// The union inode number of inode `ino` of the layer with `tag`.
    pub fn compose(&self, tag: u64, ino: u64) -> u64 {
        if ino <= LOW_MASK && ino != 0 {
            return (tag << TAG_SHIFT) | ino;
        }
        *self.overflow.entry((tag, ino)).or_insert_with(|| {
            let n = self.next_overflow.fetch_add(1, Ordering::Relaxed) + 1;
            (OVERFLOW_TAG << TAG_SHIFT) | (n & LOW_MASK)
        })
    }
}

/// Tag of lower layer `index` (0 = topmost lower).
pub fn lower_tag(index: usize) -> u64 {
    1 + index as u64
}

/// Where a node lives in the upper directory.
#[derive(Clone, Debug)]
pub enum UpperRef {
    /// A directory, with an `O_PATH` fd that follows renames.
    Dir(Arc<OwnedFd>),
    /// A non-directory at (parent's upper dir, name).
    Entry,
    /// A lower hard-linked file whose group was copied up: the upper inode
    /// lives in the work dir's index under this key, and this name is not
    /// linked into the upper yet (it is on its first copy-up trigger, as
    /// with overlayfs's `index=on`).
    Index(Vec<u8>),
}

/// Mutable state of a node.
#[derive(Clone)]
pub struct NodeState {
    /// Parent directory (the root's parent is itself: `None`).
    pub parent: Option<Arc<Node>>,
    /// Name within the parent (the last name it was looked up by).
    pub name: Box<[u8]>,
    /// Upper copy, if any.
    pub upper: Option<UpperRef>,
    /// Lower objects, top first: all merged directories, or the one origin of a non-directory.
    pub lowers: Box<[(usize, LNode)]>,
    /// Path of this directory in the lower layers (what a redirect points at), `/`-separated.
    pub lower_path: Box<[u8]>,
    /// The upper file holds metadata only; data still comes from `lowers[0]`.
    pub metacopy: bool,
    /// The upper directory is opaque.
    pub opaque: bool,
    /// All names are gone (open-unlinked or removed directory).
    pub unlinked: bool,
    /// An `O_PATH` fd of the upper file, kept once one of its names is
    /// removed, so stat stays right (link count of other names, 0 when open-unlinked).
    pub pinned: Option<Arc<OwnedFd>>,
}

impl NodeState {
    /// The upper directory fd, for directories copied up.
    pub fn upper_dir(&self) -> Option<Arc<OwnedFd>> {
        match &self.upper {
            Some(UpperRef::Dir(fd)) => Some(fd.clone()),
            _ => None,
        }
    }

    /// Whether the object lives only in immutable lowers.
    pub fn lower_only(&self) -> bool {
        self.upper.is_none()
    }
}

/// Per-node passthrough backing, shared by all open handles of the node.
pub struct Backing {
    /// The kernel backing id.
    pub id: Arc<fuser::BackingId>,
    /// Whether it points at the upper file (else at lower data).
    pub upper: bool,
    /// Open handles using it.
    pub refs: usize,
}

/// One union inode.
pub struct Node {
    /// Union inode number (also the FUSE node id).
    pub ino: u64,
    /// Kind (never `Whiteout`).
    pub kind: EntryKind,
    /// Kernel lookup count.
    pub lookups: AtomicU64,
    /// Open handles.
    pub opens: AtomicU64,
    /// Mutable state.
    pub state: RwLock<NodeState>,
    /// Serialises copy-up of this node.
    pub copy_lock: Mutex<()>,
    /// Passthrough backing in use (boxed: few nodes are open at a time).
    pub backing: Mutex<Option<Box<Backing>>>,
}

impl Node {
    /// Creates a node.
    pub fn new(ino: u64, kind: EntryKind, state: NodeState) -> Node {
        Node {
            ino,
            kind,
            lookups: AtomicU64::new(0),
            opens: AtomicU64::new(0),
            state: RwLock::new(state),
            copy_lock: Mutex::new(()),
            backing: Mutex::new(None),
        }
    }

    /// A snapshot of the state.
    pub fn snapshot(&self) -> NodeState {
        self.state.read().clone()
    }

    /// The upper directory fd (directories with an upper copy).
    pub fn upper_dir(&self) -> Option<Arc<OwnedFd>> {
        self.state.read().upper_dir()
    }
}
