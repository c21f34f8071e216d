//! # The layer index format, version 1 (a contract)
//!
//! One immutable file per layer, `<store>/layers/<layer-id>.idx`, where the
//! layer id is the BLAKE3 hash of the whole file. The file is read through a
//! memory map; every offset and length in it is checked once, when it is
//! opened ([`crate::index::Index::open`]), so that later reads are plain slice
//! accesses. All integers are little-endian. All records have a fixed size.
//!
//! ## Layout
//!
//! ```text
//! +---------------------------+ 0
//! | header (128 bytes)        |
//! +---------------------------+ 128
//! | inode table               |  inode_count  x 88 bytes
//! | directory entry table     |  dirent_count x 16 bytes
//! | xattr table               |  xattr_count  x 16 bytes
//! | blob table                |  blob_count   x 32 bytes
//! | byte heap                 |  heap_len bytes (names, xattr values,
//! |                           |  symlink targets, inline file content)
//! +---------------------------+ file_len
//! ```
//!
//! The sections follow each other without gaps, in this order; a file whose
//! header states other offsets is rejected.
//!
//! ## Header
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `STRATAIX` |
//! | 8 | 4 | format version, `1` |
//! | 12 | 4 | feature flags ([`FEATURE_XATTRS`], [`FEATURE_INLINE`], [`FEATURE_WHITEOUTS`]); a bit not known to the reader makes the file unsupported |
//! | 16 | 8 | file length in bytes |
//! | 24 | 32 | checksum: BLAKE3 of bytes `128..file_len` (the body) |
//! | 56 | 4 | inode count (at least 1: the root) |
//! | 60 | 4 | directory entry count |
//! | 64 | 4 | xattr count |
//! | 68 | 4 | blob count |
//! | 72 | 8 | heap length |
//! | 80 | 8 | inode table offset (always 128) |
//! | 88 | 8 | dirent table offset |
//! | 96 | 8 | xattr table offset |
//! | 104 | 8 | blob table offset |
//! | 112 | 8 | heap offset |
//! | 120 | 8 | reserved, zero |
//!
//! ## Inode record (88 bytes)
//!
//! Inode number `n` (starting at 1) is record `n - 1`. Inode 1 is the root
//! directory. Inode numbers are therefore stable for a given index file.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | kind: 1 regular, 2 directory, 3 symlink, 4 char device, 5 block device, 6 fifo, 7 socket, 8 whiteout |
//! | 1 | 1 | flags: bit 0 [`INODE_OPAQUE`] (directories only): lower layers' entries of this directory are hidden |
//! | 2 | 1 | content kind (regular files): 0 empty, 1 inline, 2 blob; 0 for other kinds |
//! | 3 | 1 | reserved, zero |
//! | 4 | 4 | mode: permission bits including setuid, setgid, sticky (`& 0o7777`); no file type bits |
//! | 8 | 4 | uid |
//! | 12 | 4 | gid |
//! | 16 | 4 | nlink |
//! | 20 | 4 | first xattr record index |
//! | 24 | 4 | xattr record count |
//! | 28 | 4 | directories: inode number of the parent (the root's parent is itself); 0 otherwise |
//! | 32 | 8 | rdev (devices), Linux `makedev` encoding; 0 otherwise |
//! | 40 | 8 | size in bytes (regular: content length; symlink: target length) |
//! | 48 | 8 | mtime seconds (signed) |
//! | 56 | 8 | ctime seconds (signed) |
//! | 64 | 4 | mtime nanoseconds (< 10^9) |
//! | 68 | 4 | ctime nanoseconds (< 10^9) |
//! | 72 | 8 | `a`: directory: first dirent index; symlink and inline content: heap offset; blob content: blob table index |
//! | 80 | 8 | `b`: directory: entry count; symlink and inline content: length; 0 otherwise |
//!
//! ## Directory entry record (16 bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | name heap offset |
//! | 4 | 2 | name length (1..=255) |
//! | 6 | 1 | kind of the target inode (same codes as above) |
//! | 7 | 1 | reserved, zero |
//! | 8 | 8 | target inode number |
//!
//! The entries of one directory are contiguous and sorted by name bytes
//! (strictly, so names are unique). Directories own consecutive ranges: the
//! first directory in inode order starts at entry 0 and each next directory
//! starts where the previous one ended, so every entry belongs to exactly one
//! directory. Names never contain `/` or NUL and are never `.` or `..`;
//! `.`/`..` are not stored.
//!
//! ## Hardlink groups, whiteouts, opaque directories
//!
//! A hardlink group is one inode named by several entries; its `nlink` is the
//! number of entries naming it. A directory is named by exactly one entry
//! (the root by none) and its `nlink` is 2 plus its number of subdirectories.
//!
//! A whiteout is an entry of kind 8 (its inode has kind 8 and no content):
//! it hides the same name in lower layers. The OCI `.wh.NAME` files and
//! overlayfs char 0/0 devices are turned into this form on import, and back on
//! export. An opaque directory (OCI `.wh..wh..opq`, overlayfs
//! `overlay.opaque=y`) has flag [`INODE_OPAQUE`]: entries of the same
//! directory in lower layers are hidden, its own entries stay visible.
//!
//! ## Xattr record (16 bytes)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | name heap offset |
//! | 4 | 4 | value heap offset |
//! | 8 | 2 | name length (1..=255) |
//! | 10 | 2 | reserved, zero |
//! | 12 | 4 | value length (at most 65536) |
//!
//! The xattrs of one inode are contiguous and sorted strictly by name.
//!
//! ## Blob table
//!
//! 32-byte BLAKE3 hashes of file contents, stored in the store under
//! `blobs/<first 2 hex>/<64 hex>`. Each entry is unique.
//!
//! ## Inline content
//!
//! Regular files of at most [`INLINE_MAX`] bytes are stored in the heap
//! rather than as blobs.
//!
//! ## Checksum
//!
//! The header's checksum covers the body. [`crate::index::Index::open`]
//! checks the structure and the checksum;
//! [`crate::index::Index::open_unverified`] checks only the structure (which is
//! enough for memory safety) and [`crate::index::Index::verify`] checks the
//! checksum later.

/// File magic, the first 8 bytes.
pub const MAGIC: [u8; 8] = *b"STRATAIX";
/// The version this crate writes and reads.
pub const VERSION: u32 = 1;
/// Feature flag: some inode has xattrs.
pub const FEATURE_XATTRS: u32 = 1 << 0;
/// Feature flag: some file content is inline.
pub const FEATURE_INLINE: u32 = 1 << 1;
/// Feature flag: the layer has whiteouts or opaque directories.
pub const FEATURE_WHITEOUTS: u32 = 1 << 2;
/// All feature flags this reader understands.
pub const KNOWN_FEATURES: u32 = FEATURE_XATTRS | FEATURE_INLINE | FEATURE_WHITEOUTS;

/// Header length in bytes.
pub const HEADER_LEN: usize = 128;
/// Inode record length in bytes.
pub const INODE_LEN: usize = 88;
/// Directory entry record length in bytes.
pub const DIRENT_LEN: usize = 16;
/// Xattr record length in bytes.
pub const XATTR_LEN: usize = 16;
/// Blob table entry length in bytes.
pub const BLOB_LEN: usize = 32;

/// Inode flag: directory is opaque.
pub const INODE_OPAQUE: u8 = 1;
/// Content kind: no content (size 0).
pub const CONTENT_EMPTY: u8 = 0;
/// Content kind: bytes in the heap.
pub const CONTENT_INLINE: u8 = 1;
/// Content kind: a blob in the store.
pub const CONTENT_BLOB: u8 = 2;

/// Largest file stored inline in the index.
pub const INLINE_MAX: u64 = 64;
/// Longest name of a directory entry or xattr.
pub const NAME_MAX: usize = 255;
/// Largest xattr value.
pub const XATTR_VALUE_MAX: usize = 65536;

/// Header field offsets.
pub(crate) mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const FEATURES: usize = 12;
    pub const FILE_LEN: usize = 16;
    pub const CHECKSUM: usize = 24;
    pub const INODE_COUNT: usize = 56;
    pub const DIRENT_COUNT: usize = 60;
    pub const XATTR_COUNT: usize = 64;
    pub const BLOB_COUNT: usize = 68;
    pub const HEAP_LEN: usize = 72;
    pub const INODE_OFF: usize = 80;
    pub const DIRENT_OFF: usize = 88;
    pub const XATTR_OFF: usize = 96;
    pub const BLOB_OFF: usize = 104;
    pub const HEAP_OFF: usize = 112;
    pub const RESERVED: usize = 120;
}

/// Inode record field offsets.
pub(crate) mod ino {
    pub const KIND: usize = 0;
    pub const FLAGS: usize = 1;
    pub const CONTENT: usize = 2;
    pub const RESERVED: usize = 3;
    pub const MODE: usize = 4;
    pub const UID: usize = 8;
    pub const GID: usize = 12;
    pub const NLINK: usize = 16;
    pub const XATTR_START: usize = 20;
    pub const XATTR_COUNT: usize = 24;
    pub const PARENT: usize = 28;
    pub const RDEV: usize = 32;
    pub const SIZE: usize = 40;
    pub const MTIME_SEC: usize = 48;
    pub const CTIME_SEC: usize = 56;
    pub const MTIME_NSEC: usize = 64;
    pub const CTIME_NSEC: usize = 68;
    pub const A: usize = 72;
    pub const B: usize = 80;
}

/// Directory entry field offsets.
pub(crate) mod dirent {
    pub const NAME_OFF: usize = 0;
    pub const NAME_LEN: usize = 4;
    pub const KIND: usize = 6;
    pub const RESERVED: usize = 7;
    pub const INO: usize = 8;
}

/// Xattr record field offsets.
pub(crate) mod xattr {
    pub const NAME_OFF: usize = 0;
    pub const VALUE_OFF: usize = 4;
    pub const NAME_LEN: usize = 8;
    pub const RESERVED: usize = 10;
    pub const VALUE_LEN: usize = 12;
}
