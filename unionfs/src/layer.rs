//! The `Layer` trait: one read-only lower of the union.
//!
//! A layer answers lookups and listings in an already *classified* form:
//! whiteouts of every on-disk form come back as [`EntryKind::Whiteout`],
//! opaque markers are reported by [`Layer::is_opaque`], and marker files
//! (`.wh.NAME`, `.wh..wh..opq`) never show as entries. The union then only
//! merges. Layers are immutable while mounted, which is what lets the union
//! give the kernel long cache lifetimes for entries that come only from them.

use std::fs::File;
use std::io;
use std::sync::Arc;

/// A layer-local handle for one object. Only meaningful to the layer that
/// returned it; the root is [`Layer::root`].
pub type LNode = u64;

/// What kind of object a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// A whiteout: the name is deleted in this layer and hides all layers below.
    Whiteout,
}

impl EntryKind {
    /// The kind for a `st_mode` value.
    pub fn from_mode(mode: u32) -> EntryKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => EntryKind::Dir,
            libc::S_IFLNK => EntryKind::Symlink,
            libc::S_IFCHR => EntryKind::CharDev,
            libc::S_IFBLK => EntryKind::BlockDev,
            libc::S_IFIFO => EntryKind::Fifo,
            libc::S_IFSOCK => EntryKind::Socket,
            _ => EntryKind::File,
        }
    }

    /// The `S_IFMT` bits for this kind (whiteouts read as character devices).
    pub fn mode_bits(self) -> u32 {
        match self {
            EntryKind::Dir => libc::S_IFDIR,
            EntryKind::File => libc::S_IFREG,
            EntryKind::Symlink => libc::S_IFLNK,
            EntryKind::CharDev | EntryKind::Whiteout => libc::S_IFCHR,
            EntryKind::BlockDev => libc::S_IFBLK,
            EntryKind::Fifo => libc::S_IFIFO,
            EntryKind::Socket => libc::S_IFSOCK,
        }
    }
}

/// Attributes of one layer object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerAttr {
    /// Stable inode number within the layer (the union derives st_ino from it).
    pub ino: u64,
    /// Kind of object.
    pub kind: EntryKind,
    /// Permission bits including suid/sgid/sticky (no `S_IFMT` bits).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Allocated 512-byte blocks.
    pub blocks: u64,
    /// Link count.
    pub nlink: u32,
    /// Device number for device nodes.
    pub rdev: u64,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// Modification time.
    pub mtime: (i64, i64),
    /// Status change time.
    pub ctime: (i64, i64),
}

impl LayerAttr {
    /// Builds attributes from a `stat` result.
    pub fn from_stat(st: &libc::stat) -> LayerAttr {
        LayerAttr {
            ino: st.st_ino,
            kind: EntryKind::from_mode(st.st_mode),
            perm: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size.max(0) as u64,
            blocks: st.st_blocks.max(0) as u64,
            nlink: st.st_nlink as u32,
            rdev: st.st_rdev,
            atime: (st.st_atime, st.st_atime_nsec),
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// One entry of a layer directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEntry {
    /// Entry name (never `.wh.` prefixed: whiteouts come as [`EntryKind::Whiteout`]).
    pub name: Vec<u8>,
    /// Kind of entry.
    pub kind: EntryKind,
    /// The layer's inode number of the entry (0 for whiteouts).
    pub ino: u64,
}

/// File content of a layer object, for reads and copy-up.
#[derive(Debug)]
pub enum LayerData {
    /// A real file holding the content (page cache, passthrough, FICLONE work).
    File(File),
    /// Small content held in memory (e.g. inlined in a store index).
    Inline(Arc<[u8]>),
}

/// A read-only lower layer of the union.
pub trait Layer: Send + Sync {
    /// A short description for errors and logs (the directory path, the layer id).
    fn describe(&self) -> String;

    /// The root directory.
    fn root(&self) -> LNode;

    /// Looks `name` up in directory `dir`. Whiteouts (every on-disk form)
    /// come back with kind [`EntryKind::Whiteout`]; marker names are absent.
    fn lookup(&self, dir: LNode, name: &[u8]) -> io::Result<Option<(LNode, EntryKind)>>;

    /// Attributes of `node`.
    fn attr(&self, node: LNode) -> io::Result<LayerAttr>;

    /// [`Layer::lookup`] that also returns the entry's attributes when the
    /// lookup already had them (a plain directory stats the name to look it
    /// up), saving the [`Layer::attr`] call that usually follows.
    #[allow(clippy::type_complexity)]
    fn lookup_attr(
        &self,
        dir: LNode,
        name: &[u8],
    ) -> io::Result<Option<(LNode, EntryKind, Option<LayerAttr>)>> {
        Ok(self.lookup(dir, name)?.map(|(n, k)| (n, k, None)))
    }

    /// All entries of directory `dir`, whiteouts included as [`EntryKind::Whiteout`].
    fn read_dir(&self, dir: LNode) -> io::Result<Vec<LayerEntry>>;

    /// Whether directory `dir` is opaque (hides the same directory in lower layers).
    fn is_opaque(&self, dir: LNode) -> io::Result<bool>;

    /// Target of symlink `node`.
    fn readlink(&self, node: LNode) -> io::Result<Vec<u8>>;

    /// User-visible extended attribute names of `node` (overlay-private ones removed).
    fn list_xattrs(&self, node: LNode) -> io::Result<Vec<Vec<u8>>>;

    /// Value of extended attribute `key` of `node`, `None` when absent.
    fn get_xattr(&self, node: LNode, key: &[u8]) -> io::Result<Option<Vec<u8>>>;

    /// The content of regular file `node`.
    fn open(&self, node: LNode) -> io::Result<LayerData>;

    /// Whether inode numbers of this layer are stable across mounts
    /// (store layers: yes; plain directories: only as stable as the host fs).
    fn stable_inodes(&self) -> bool {
        false
    }
}

/// Whether an xattr name is private to overlay filesystems and must not be
/// shown to users or copied up verbatim.
pub fn is_private_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"trusted.unionfs.")
        || name.starts_with(b"user.unionfs.")
        || name.starts_with(b"user.fuseoverlayfs.")
}
