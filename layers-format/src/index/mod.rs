//! Reading a layer index: one memory-mapped, validated, immutable file.
//!
//! The on-disk layout is specified in [`crate::format`]. [`Index::open`] checks
//! every offset, length, count and cross reference once; afterwards every
//! accessor is a bounds-checked slice read that cannot fail on a valid file,
//! and returns `None`/empty for inode numbers that do not exist.

mod builder;

pub use builder::{FileData, IndexBuilder, Meta, NodeId};

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::{self, dirent as de, hdr, ino as io, xattr as xa};
use crate::ids::BlobId;

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
    /// A whiteout: hides this name in lower layers.
    Whiteout,
}

impl FileKind {
    /// The on-disk code of this kind.
    pub fn code(self) -> u8 {
        match self {
            FileKind::Regular => 1,
            FileKind::Directory => 2,
            FileKind::Symlink => 3,
            FileKind::CharDevice => 4,
            FileKind::BlockDevice => 5,
            FileKind::Fifo => 6,
            FileKind::Socket => 7,
            FileKind::Whiteout => 8,
        }
    }

    /// The kind for an on-disk code.
    pub fn from_code(code: u8) -> Option<FileKind> {
        Some(match code {
            1 => FileKind::Regular,
            2 => FileKind::Directory,
            3 => FileKind::Symlink,
            4 => FileKind::CharDevice,
            5 => FileKind::BlockDevice,
            6 => FileKind::Fifo,
            7 => FileKind::Socket,
            8 => FileKind::Whiteout,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits for this kind; a whiteout shows as a character
    /// device (overlayfs represents it as char 0/0).
    pub fn type_bits(self) -> u32 {
        match self {
            FileKind::Regular => libc::S_IFREG,
            FileKind::Directory => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::CharDevice | FileKind::Whiteout => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
        }
    }

    /// The kind for `S_IFMT` bits of a `st_mode` (never `Whiteout`).
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }
}

/// The attributes of one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number (1 is the root).
    pub ino: u64,
    /// Inode type.
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky; no type bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (regular files: content; symlinks: target length).
    pub size: u64,
    /// Link count.
    pub nlink: u32,
    /// Device number (Linux `makedev` encoding) for device nodes.
    pub rdev: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Status change time, seconds.
    pub ctime_sec: i64,
    /// Status change time, nanoseconds.
    pub ctime_nsec: u32,
}

/// One directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// Entry name (no `/`, never `.` or `..`).
    pub name: &'a [u8],
    /// Target inode number.
    pub ino: u64,
    /// Target inode type.
    pub kind: FileKind,
}

/// Where the bytes of a regular file are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content<'a> {
    /// No bytes (empty file, or not a regular file).
    Empty,
    /// The bytes, stored in the index itself.
    Inline(&'a [u8]),
    /// A blob in the store ([`crate::Store::open_blob`]).
    Blob(BlobId),
}

enum Data {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Map(m) => m,
            Data::Owned(v) => v,
        }
    }
}

/// An open, validated layer index. Cheap to share: `Send + Sync`, all
/// accessors take `&self`.
pub struct Index {
    data: Data,
    path: PathBuf,
    features: u32,
    inode_count: u64,
    dirent_count: u64,
    xattr_count: u64,
    blob_count: u64,
    dirent_off: usize,
    xattr_off: usize,
    blob_off: usize,
    heap_off: usize,
    heap_len: usize,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.path)
            .field("inodes", &self.inode_count)
            .field("dirents", &self.dirent_count)
            .finish()
    }
}

/// How much of an index is checked when it is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    /// The header only: magic, version, features, section offsets and the
    /// file length. For a file that passed [`Checks::Full`] before and has
    /// not changed since (see [`crate::store::Store::open_layer`]). Reads
    /// never panic or leave the file whatever it holds, but a damaged body
    /// can give wrong answers.
    Header,
    /// The header and every record, offset and cross reference.
    Structure,
    /// The structure and the body checksum.
    Full,
}

/// Little-endian reads that never panic: out of range reads give zero (a
/// validated index never reads out of range).
trait LeRead {
    fn u8_at(&self, off: usize) -> u8;
    fn u16_at(&self, off: usize) -> u16;
    fn u32_at(&self, off: usize) -> u32;
    fn u64_at(&self, off: usize) -> u64;
}

impl LeRead for [u8] {
    #[inline]
    fn u8_at(&self, off: usize) -> u8 {
        self.get(off).copied().unwrap_or(0)
    }
    #[inline]
    fn u16_at(&self, off: usize) -> u16 {
        match self.get(off..off.wrapping_add(2)) {
            Some(&[a, b]) => u16::from_le_bytes([a, b]),
            _ => 0,
        }
    }
    #[inline]
    fn u32_at(&self, off: usize) -> u32 {
        self.get(off..off.wrapping_add(4))
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map_or(0, u32::from_le_bytes)
    }
    #[inline]
    fn u64_at(&self, off: usize) -> u64 {
        self.get(off..off.wrapping_add(8))
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map_or(0, u64::from_le_bytes)
    }
}

impl Index {
    /// Open and memory-map the index at `path`, check its structure and its
    /// checksum. Corrupt input gives [`Error::CorruptIndex`] naming the file.
    pub fn open(path: &Path) -> Result<Index> {
        let index = Self::open_unverified(path)?;
        index.verify()?;
        Ok(index)
    }

    /// Open and check the structure (every offset, length and cross
    /// reference), but not the body checksum. This is enough for memory
    /// safety; call [`Index::verify`] to check the checksum.
    pub fn open_unverified(path: &Path) -> Result<Index> {
        let file = File::open(path).ctx("open layer index", path)?;
        let len = file.metadata().ctx("stat layer index", path)?.len();
        Self::from_file(&file, len, path, Checks::Structure)
    }

    /// Map the open index `file` (`len` bytes, from its `fstat`) and run
    /// `checks` on it; `path` names it in errors.
    pub fn from_file(file: &File, len: u64, path: &Path, checks: Checks) -> Result<Index> {
        if len < format::HEADER_LEN as u64 {
            return Err(Error::CorruptIndex {
                path: path.to_path_buf(),
                problem: format!(
                    "file is {len} bytes, shorter than the {}-byte header",
                    format::HEADER_LEN
                ),
            });
        }
        let map = crate::sys::map_readonly(file).ctx("mmap layer index", path)?;
        let index = Self::from_data(Data::Map(map), path.to_path_buf(), checks)?;
        if checks == Checks::Full {
            index.verify()?;
        }
        Ok(index)
    }

    /// Check an in-memory index (structure and checksum); `name` is used in
    /// error messages.
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Index> {
        let index = Self::from_data(Data::Owned(bytes), name.into(), Checks::Structure)?;
        index.verify()?;
        Ok(index)
    }

    /// Like [`Index::from_bytes`] without the checksum check.
    pub fn from_bytes_unverified(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<Index> {
        Self::from_data(Data::Owned(bytes), name.into(), Checks::Structure)
    }

    fn from_data(data: Data, path: PathBuf, checks: Checks) -> Result<Index> {
        let b = data.bytes();
        let corrupt = |problem: String| Error::CorruptIndex {
            path: path.clone(),
            problem,
        };
        if b.len() < format::HEADER_LEN {
            return Err(corrupt(format!(
                "file is {} bytes, shorter than the header",
                b.len()
            )));
        }
        if b[..8] != format::MAGIC {
            return Err(corrupt("bad magic, not a strata layer index".into()));
        }
        let version = b.u32_at(hdr::VERSION);
        if version != format::VERSION {
            return Err(Error::UnsupportedIndex {
                path,
                problem: format!(
                    "format version {version}, this strata reads version {}",
                    format::VERSION
                ),
            });
        }
        let features = b.u32_at(hdr::FEATURES);
        if features & !format::KNOWN_FEATURES != 0 {
            return Err(Error::UnsupportedIndex {
                path,
                problem: format!(
                    "unknown feature flags {:#x}",
                    features & !format::KNOWN_FEATURES
                ),
            });
        }
        let file_len = b.u64_at(hdr::FILE_LEN);
        if file_len != b.len() as u64 {
            return Err(corrupt(format!(
                "header says {file_len} bytes but the file has {} (truncated or appended to)",
                b.len()
            )));
        }
        let inode_count = u64::from(b.u32_at(hdr::INODE_COUNT));
        let dirent_count = u64::from(b.u32_at(hdr::DIRENT_COUNT));
        let xattr_count = u64::from(b.u32_at(hdr::XATTR_COUNT));
        let blob_count = u64::from(b.u32_at(hdr::BLOB_COUNT));
        let heap_len = b.u64_at(hdr::HEAP_LEN);
        // Expected layout: sections back to back in a fixed order. All in
        // u64 with counts < 2^32 and record sizes < 2^7: no overflow.
        let inode_off = format::HEADER_LEN as u64;
        let dirent_off = inode_off + inode_count * format::INODE_LEN as u64;
        let xattr_off = dirent_off + dirent_count * format::DIRENT_LEN as u64;
        let blob_off = xattr_off + xattr_count * format::XATTR_LEN as u64;
        let heap_off = blob_off + blob_count * format::BLOB_LEN as u64;
        let expect = [
            (hdr::INODE_OFF, inode_off, "inode table"),
            (hdr::DIRENT_OFF, dirent_off, "directory entry table"),
            (hdr::XATTR_OFF, xattr_off, "xattr table"),
            (hdr::BLOB_OFF, blob_off, "blob table"),
            (hdr::HEAP_OFF, heap_off, "heap"),
        ];
        for (field, want, what) in expect {
            let got = b.u64_at(field);
            if got != want {
                return Err(corrupt(format!("{what} offset is {got}, expected {want}")));
            }
        }
        if b.u64_at(hdr::RESERVED) != 0 {
            return Err(corrupt("reserved header field is not zero".into()));
        }
        if heap_off.checked_add(heap_len) != Some(file_len) {
            return Err(corrupt(format!(
                "sections end at {} but the file has {file_len} bytes",
                heap_off.saturating_add(heap_len)
            )));
        }
        if inode_count == 0 {
            return Err(corrupt("no inodes (the root directory is missing)".into()));
        }
        let index = Index {
            features,
            inode_count,
            dirent_count,
            xattr_count,
            blob_count,
            // All below file_len, which fits in usize since it is a slice length.
            dirent_off: dirent_off as usize,
            xattr_off: xattr_off as usize,
            blob_off: blob_off as usize,
            heap_off: heap_off as usize,
            heap_len: heap_len as usize,
            data,
            path,
        };
        if checks != Checks::Header {
            index.validate().map_err(corrupt_owned(&index.path))?;
        }
        Ok(index)
    }

    /// Check the body checksum stored in the header.
    pub fn verify(&self) -> Result<()> {
        let b = self.data.bytes();
        let want = &b[hdr::CHECKSUM..hdr::CHECKSUM + 32];
        let got = blake3::hash(&b[format::HEADER_LEN..]);
        if got.as_bytes()[..] != want[..] {
            return Err(Error::CorruptIndex {
                path: self.path.clone(),
                problem: format!(
                    "checksum mismatch (header {}, body hashes to {}): the file was modified or damaged; remove the layer and re-import it",
                    hex::encode(want),
                    got.to_hex()
                ),
            });
        }
        Ok(())
    }

    /// The file this index was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// Feature flags of the file.
    pub fn features(&self) -> u32 {
        self.features
    }

    /// Number of inodes (inode numbers are `1..=inode_count`).
    pub fn inode_count(&self) -> u64 {
        self.inode_count
    }

    /// Number of directory entries in the whole index.
    pub fn dirent_count(&self) -> u64 {
        self.dirent_count
    }

    /// The root directory's inode number (always 1).
    pub fn root_ino(&self) -> u64 {
        1
    }

    // ---- raw record access -------------------------------------------------

    #[inline]
    fn inode_rec(&self, ino: u64) -> Option<&[u8]> {
        if ino == 0 || ino > self.inode_count {
            return None;
        }
        let off = format::HEADER_LEN + (ino as usize - 1) * format::INODE_LEN;
        self.data.bytes().get(off..off + format::INODE_LEN)
    }

    #[inline]
    fn dirent_rec(&self, i: u64) -> &[u8] {
        let off = self.dirent_off + (i as usize) * format::DIRENT_LEN;
        self.data
            .bytes()
            .get(off..off + format::DIRENT_LEN)
            .unwrap_or(&[])
    }

    #[inline]
    fn xattr_rec(&self, i: u64) -> &[u8] {
        let off = self.xattr_off + (i as usize) * format::XATTR_LEN;
        self.data
            .bytes()
            .get(off..off + format::XATTR_LEN)
            .unwrap_or(&[])
    }

    #[inline]
    fn heap(&self, off: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(off).ok()?;
        let len = usize::try_from(len).ok()?;
        let end = start.checked_add(len)?;
        if end > self.heap_len {
            return None;
        }
        self.data
            .bytes()
            .get(self.heap_off + start..self.heap_off + end)
    }

    #[inline]
    fn dirent_name(&self, rec: &[u8]) -> &[u8] {
        self.heap(
            u64::from(rec.u32_at(de::NAME_OFF)),
            u64::from(rec.u16_at(de::NAME_LEN)),
        )
        .unwrap_or(&[])
    }

    /// The dirent range `[first, first+count)` of a directory inode.
    #[inline]
    fn dir_range(&self, dir_ino: u64) -> Option<(u64, u64)> {
        let rec = self.inode_rec(dir_ino)?;
        if rec.u8_at(io::KIND) != FileKind::Directory.code() {
            return None;
        }
        Some((rec.u64_at(io::A), rec.u64_at(io::B)))
    }

    fn blob_at(&self, i: u64) -> Option<BlobId> {
        if i >= self.blob_count {
            return None;
        }
        let off = self.blob_off + i as usize * format::BLOB_LEN;
        let s = self.data.bytes().get(off..off + 32)?;
        Some(BlobId(<[u8; 32]>::try_from(s).ok()?))
    }

    // ---- public accessors --------------------------------------------------

    /// Look up `name` in directory `dir_ino` (binary search).
    pub fn lookup(&self, dir_ino: u64, name: &[u8]) -> Option<u64> {
        let (first, count) = self.dir_range(dir_ino)?;
        let (mut lo, mut hi) = (0u64, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let rec = self.dirent_rec(first + mid);
            match self.dirent_name(rec).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(rec.u64_at(de::INO)),
            }
        }
        None
    }

    /// Resolve a `/`-separated path relative to the root (no symlinks
    /// followed; empty components and `.` are skipped).
    pub fn lookup_path(&self, path: &[u8]) -> Option<u64> {
        let mut ino = self.root_ino();
        for comp in path.split(|&c| c == b'/') {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            ino = self.lookup(ino, comp)?;
        }
        Some(ino)
    }

    /// The attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Option<Attr> {
        let r = self.inode_rec(ino)?;
        Some(Attr {
            ino,
            kind: FileKind::from_code(r.u8_at(io::KIND))?,
            mode: r.u32_at(io::MODE),
            uid: r.u32_at(io::UID),
            gid: r.u32_at(io::GID),
            size: r.u64_at(io::SIZE),
            nlink: r.u32_at(io::NLINK),
            rdev: r.u64_at(io::RDEV),
            mtime_sec: r.u64_at(io::MTIME_SEC) as i64,
            mtime_nsec: r.u32_at(io::MTIME_NSEC),
            ctime_sec: r.u64_at(io::CTIME_SEC) as i64,
            ctime_nsec: r.u32_at(io::CTIME_NSEC),
        })
    }

    /// The kind of `ino`.
    pub fn kind(&self, ino: u64) -> Option<FileKind> {
        FileKind::from_code(self.inode_rec(ino)?.u8_at(io::KIND))
    }

    /// Whether directory `dir_ino` is opaque (hides lower layers' entries).
    pub fn is_opaque(&self, dir_ino: u64) -> bool {
        self.inode_rec(dir_ino)
            .is_some_and(|r| r.u8_at(io::FLAGS) & format::INODE_OPAQUE != 0)
    }

    /// The parent of directory `dir_ino` (the root's parent is the root).
    pub fn parent(&self, dir_ino: u64) -> Option<u64> {
        let r = self.inode_rec(dir_ino)?;
        let p = u64::from(r.u32_at(io::PARENT));
        (p != 0).then_some(p)
    }

    /// Number of entries in directory `dir_ino` (whiteouts included).
    pub fn dir_len(&self, dir_ino: u64) -> Option<u64> {
        self.dir_range(dir_ino).map(|(_, n)| n)
    }

    /// The entries of directory `dir_ino` from `offset` on (0 is the start),
    /// sorted by name. Each item carries the offset of the entry after it,
    /// to pass back to continue a listing; offsets are stable.
    pub fn readdir(
        &self,
        dir_ino: u64,
        offset: u64,
    ) -> impl Iterator<Item = (u64, DirEntry<'_>)> + '_ {
        let (first, count) = self.dir_range(dir_ino).unwrap_or((0, 0));
        (offset.min(count)..count).map(move |i| {
            let rec = self.dirent_rec(first + i);
            let entry = DirEntry {
                name: self.dirent_name(rec),
                ino: rec.u64_at(de::INO),
                // Validated on open to be a known code.
                kind: FileKind::from_code(rec.u8_at(de::KIND)).unwrap_or(FileKind::Regular),
            };
            (i + 1, entry)
        })
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> Option<&[u8]> {
        let r = self.inode_rec(ino)?;
        if r.u8_at(io::KIND) != FileKind::Symlink.code() {
            return None;
        }
        self.heap(r.u64_at(io::A), r.u64_at(io::B))
    }

    /// The extended attributes of `ino`, sorted by name.
    pub fn xattrs(&self, ino: u64) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let (start, count) = self.inode_rec(ino).map_or((0, 0), |r| {
            (
                u64::from(r.u32_at(io::XATTR_START)),
                u64::from(r.u32_at(io::XATTR_COUNT)),
            )
        });
        (start..start + count).map(move |i| self.xattr_at(i))
    }

    fn xattr_at(&self, i: u64) -> (&[u8], &[u8]) {
        let rec = self.xattr_rec(i);
        let name = self
            .heap(
                u64::from(rec.u32_at(xa::NAME_OFF)),
                u64::from(rec.u16_at(xa::NAME_LEN)),
            )
            .unwrap_or(&[]);
        let value = self
            .heap(
                u64::from(rec.u32_at(xa::VALUE_OFF)),
                u64::from(rec.u32_at(xa::VALUE_LEN)),
            )
            .unwrap_or(&[]);
        (name, value)
    }

    /// One extended attribute of `ino` (binary search).
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Option<&[u8]> {
        let r = self.inode_rec(ino)?;
        let start = u64::from(r.u32_at(io::XATTR_START));
        let (mut lo, mut hi) = (0u64, u64::from(r.u32_at(io::XATTR_COUNT)));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (n, v) = self.xattr_at(start + mid);
            match n.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }

    /// Where the content of regular file `ino` is.
    pub fn content(&self, ino: u64) -> Content<'_> {
        let Some(r) = self.inode_rec(ino) else {
            return Content::Empty;
        };
        if r.u8_at(io::KIND) != FileKind::Regular.code() {
            return Content::Empty;
        }
        match r.u8_at(io::CONTENT) {
            format::CONTENT_INLINE => self
                .heap(r.u64_at(io::A), r.u64_at(io::B))
                .map_or(Content::Empty, Content::Inline),
            format::CONTENT_BLOB => self
                .blob_at(r.u64_at(io::A))
                .map_or(Content::Empty, Content::Blob),
            _ => Content::Empty,
        }
    }

    /// Every blob this layer refers to.
    pub fn blobs(&self) -> impl Iterator<Item = BlobId> + '_ {
        (0..self.blob_count).filter_map(|i| self.blob_at(i))
    }

    // ---- validation --------------------------------------------------------

    /// Check every record once. Returns a description of the first problem.
    fn validate(&self) -> std::result::Result<(), String> {
        let n = self.inode_count;
        let mut dir_cursor = 0u64;
        for ino in 1..=n {
            self.validate_inode(ino, &mut dir_cursor)
                .map_err(|p| format!("inode {ino}: {p}"))?;
        }
        if dir_cursor != self.dirent_count {
            return Err(format!(
                "directories own {dir_cursor} entries but the table has {}",
                self.dirent_count
            ));
        }
        let root = self.inode_rec(1).ok_or("no root inode")?;
        if root.u8_at(io::KIND) != FileKind::Directory.code() {
            return Err("inode 1 (the root) is not a directory".into());
        }
        if root.u32_at(io::PARENT) != 1 {
            return Err("the root directory's parent is not itself".into());
        }
        // Count references to every inode from directory entries.
        let mut refs = vec![0u32; n as usize];
        for dir in 1..=n {
            let Some((first, count)) = self.dir_range(dir) else {
                continue;
            };
            self.validate_dir(dir, first, count, &mut refs)
                .map_err(|p| format!("directory inode {dir}: {p}"))?;
        }
        for (i, &r) in refs.iter().enumerate() {
            let ino = i as u64 + 1;
            let rec = self
                .inode_rec(ino)
                .ok_or("inode table shorter than its count")?;
            let is_dir = rec.u8_at(io::KIND) == FileKind::Directory.code();
            let ok = if ino == 1 {
                r == 0
            } else if is_dir {
                r == 1
            } else {
                r >= 1 && r == rec.u32_at(io::NLINK)
            };
            if !ok {
                return Err(format!(
                    "inode {ino} is named by {r} directory entries (nlink {}, directory: {is_dir})",
                    rec.u32_at(io::NLINK)
                ));
            }
        }
        Ok(())
    }

    fn validate_inode(&self, ino: u64, dir_cursor: &mut u64) -> std::result::Result<(), String> {
        let r = self.inode_rec(ino).ok_or("record out of range")?;
        let kind = FileKind::from_code(r.u8_at(io::KIND))
            .ok_or_else(|| format!("unknown kind {}", r.u8_at(io::KIND)))?;
        let flags = r.u8_at(io::FLAGS);
        if flags & !format::INODE_OPAQUE != 0 || (flags != 0 && kind != FileKind::Directory) {
            return Err(format!("bad flags {flags:#x}"));
        }
        let content = r.u8_at(io::CONTENT);
        if r.u8_at(io::RESERVED) != 0 {
            return Err("reserved byte is not zero".into());
        }
        if r.u32_at(io::MODE) & !0o7777 != 0 {
            return Err(format!(
                "mode {:#o} has bits outside 0o7777",
                r.u32_at(io::MODE)
            ));
        }
        if r.u32_at(io::MTIME_NSEC) >= 1_000_000_000 || r.u32_at(io::CTIME_NSEC) >= 1_000_000_000 {
            return Err("nanoseconds out of range".into());
        }
        let xs = u64::from(r.u32_at(io::XATTR_START));
        let xc = u64::from(r.u32_at(io::XATTR_COUNT));
        if xs + xc > self.xattr_count {
            return Err(format!(
                "xattr range {xs}+{xc} beyond the table of {}",
                self.xattr_count
            ));
        }
        self.validate_xattrs(xs, xc)?;
        let parent = u64::from(r.u32_at(io::PARENT));
        let (a, b, size) = (r.u64_at(io::A), r.u64_at(io::B), r.u64_at(io::SIZE));
        if kind != FileKind::Regular && content != format::CONTENT_EMPTY {
            return Err("content kind set on a non-regular file".into());
        }
        if kind != FileKind::Directory && parent != 0 {
            return Err("parent set on a non-directory".into());
        }
        match kind {
            FileKind::Directory => {
                if parent == 0 || parent > self.inode_count {
                    return Err(format!("parent {parent} out of range"));
                }
                if a != *dir_cursor {
                    return Err(format!("entries start at {a}, expected {dir_cursor}"));
                }
                *dir_cursor = a
                    .checked_add(b)
                    .filter(|&e| e <= self.dirent_count)
                    .ok_or_else(|| {
                        format!(
                            "entry range {a}+{b} beyond the table of {}",
                            self.dirent_count
                        )
                    })?;
            }
            FileKind::Symlink => {
                if b == 0 || b != size || self.heap(a, b).is_none() {
                    return Err(format!(
                        "symlink target {a}+{b} (size {size}) invalid or outside the heap"
                    ));
                }
            }
            FileKind::Regular => match content {
                format::CONTENT_EMPTY if size == 0 && a == 0 && b == 0 => {}
                format::CONTENT_INLINE if b == size && self.heap(a, b).is_some() => {}
                format::CONTENT_BLOB if a < self.blob_count && b == 0 && size > 0 => {}
                _ => {
                    return Err(format!(
                        "bad content (kind {content}, a {a}, b {b}, size {size})"
                    ))
                }
            },
            _ => {
                if a != 0 || b != 0 {
                    return Err("data fields set on a special file".into());
                }
            }
        }
        Ok(())
    }

    fn validate_xattrs(&self, start: u64, count: u64) -> std::result::Result<(), String> {
        let mut prev: Option<&[u8]> = None;
        for i in start..start + count {
            let rec = self.xattr_rec(i);
            let nl = u64::from(rec.u16_at(xa::NAME_LEN));
            let vl = u64::from(rec.u32_at(xa::VALUE_LEN));
            let name = self
                .heap(u64::from(rec.u32_at(xa::NAME_OFF)), nl)
                .ok_or_else(|| format!("xattr {i}: name outside the heap"))?;
            self.heap(u64::from(rec.u32_at(xa::VALUE_OFF)), vl)
                .ok_or_else(|| format!("xattr {i}: value outside the heap"))?;
            if name.is_empty()
                || name.len() > format::NAME_MAX
                || vl as usize > format::XATTR_VALUE_MAX
            {
                return Err(format!("xattr {i}: bad name or value length"));
            }
            if rec.u16_at(xa::RESERVED) != 0 {
                return Err(format!("xattr {i}: reserved field not zero"));
            }
            if prev.is_some_and(|p| p >= name) {
                return Err(format!("xattr {i}: names not sorted or duplicated"));
            }
            prev = Some(name);
        }
        Ok(())
    }

    fn validate_dir(
        &self,
        dir: u64,
        first: u64,
        count: u64,
        refs: &mut [u32],
    ) -> std::result::Result<(), String> {
        let mut prev: Option<&[u8]> = None;
        let mut subdirs = 0u64;
        for i in first..first + count {
            let rec = self.dirent_rec(i);
            let name = self
                .heap(
                    u64::from(rec.u32_at(de::NAME_OFF)),
                    u64::from(rec.u16_at(de::NAME_LEN)),
                )
                .ok_or_else(|| format!("entry {i}: name outside the heap"))?;
            if name.is_empty()
                || name.len() > format::NAME_MAX
                || name == b"."
                || name == b".."
                || name.iter().any(|&c| c == b'/' || c == 0)
            {
                return Err(format!(
                    "entry {i}: invalid name {:?}",
                    String::from_utf8_lossy(name)
                ));
            }
            if prev.is_some_and(|p| p >= name) {
                return Err(format!("entry {i}: names not sorted or duplicated"));
            }
            prev = Some(name);
            if rec.u8_at(de::RESERVED) != 0 {
                return Err(format!("entry {i}: reserved byte not zero"));
            }
            let target = rec.u64_at(de::INO);
            let trec = self
                .inode_rec(target)
                .ok_or_else(|| format!("entry {i}: inode {target} out of range"))?;
            if trec.u8_at(io::KIND) != rec.u8_at(de::KIND) {
                return Err(format!("entry {i}: kind differs from inode {target}'s"));
            }
            let slot = &mut refs[target as usize - 1];
            *slot = slot.saturating_add(1);
            if trec.u8_at(io::KIND) == FileKind::Directory.code() {
                subdirs += 1;
                if u64::from(trec.u32_at(io::PARENT)) != dir {
                    return Err(format!(
                        "entry {i}: directory {target} names another parent"
                    ));
                }
            }
        }
        let nlink = self
            .inode_rec(dir)
            .map_or(0, |r| u64::from(r.u32_at(io::NLINK)));
        if nlink != subdirs + 2 {
            return Err(format!(
                "nlink {nlink}, expected {} (2 + subdirectories)",
                subdirs + 2
            ));
        }
        Ok(())
    }
}

fn corrupt_owned(path: &Path) -> impl FnOnce(String) -> Error + '_ {
    move |problem| Error::CorruptIndex {
        path: path.to_path_buf(),
        problem,
    }
}

#[cfg(test)]
mod tests;
