//! Writing a layer index: an in-memory tree, serialised into the format of
//! [`crate::format`] by [`IndexBuilder::build`].
//!
//! Importers add entries one at a time, in any order; a later entry of the
//! same name replaces an earlier one (as `tar -x` does), a directory entry
//! over an existing directory only updates its metadata. Whiteouts and
//! opaque markers follow the OCI image-spec: a whiteout hides the name in
//! lower layers only, never an entry of the same layer.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::format::{self, dirent as de, hdr, ino as io, xattr as xa};
use crate::ids::BlobId;
use crate::index::FileKind;

/// Metadata of one node being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits (`& 0o7777` is kept).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Status change time, seconds.
    pub ctime_sec: i64,
    /// Status change time, nanoseconds.
    pub ctime_nsec: u32,
    /// Device number for device nodes.
    pub rdev: u64,
    /// Extended attributes, by name.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Default for Meta {
    /// Root-owned, mode 0755, time zero: what a directory implied by a
    /// deeper path gets.
    fn default() -> Self {
        Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            ctime_sec: 0,
            ctime_nsec: 0,
            rdev: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Where a regular file's bytes are, for the builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileData {
    /// Empty file.
    Empty,
    /// Tiny file kept in the index.
    Inline(Vec<u8>),
    /// A blob in the store.
    Blob(BlobId),
}

/// A node in the tree being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(u32);

#[derive(Debug)]
enum Body {
    Dir {
        children: BTreeMap<Vec<u8>, NodeId>,
        opaque: bool,
    },
    File {
        size: u64,
        data: FileData,
    },
    Symlink(Vec<u8>),
    Special(FileKind),
    Whiteout,
}

#[derive(Debug)]
struct Node {
    meta: Meta,
    body: Body,
}

/// Builds one layer index in memory.
#[derive(Debug)]
pub struct IndexBuilder {
    nodes: Vec<Node>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&c| c == b'/' || c == 0)
    {
        return Err(Error::Invalid {
            kind: "entry name",
            value: String::from_utf8_lossy(name).into_owned(),
            problem: "names must be non-empty, not . or .., without / or NUL".into(),
        });
    }
    if name.len() > format::NAME_MAX {
        return Err(Error::Invalid {
            kind: "entry name",
            value: String::from_utf8_lossy(&name[..40]).into_owned() + "...",
            problem: format!("{} bytes, longer than {}", name.len(), format::NAME_MAX),
        });
    }
    Ok(())
}

impl IndexBuilder {
    /// A tree with only a root directory (mode 0755, root-owned).
    pub fn new() -> Self {
        IndexBuilder {
            nodes: vec![Node {
                meta: Meta::default(),
                body: Body::Dir {
                    children: BTreeMap::new(),
                    opaque: false,
                },
            }],
        }
    }

    /// The root directory.
    pub fn root(&self) -> NodeId {
        NodeId(0)
    }

    fn node(&self, id: NodeId) -> &Node {
        // NodeIds are only made by this builder, as indexes into `nodes`,
        // which never shrinks.
        &self.nodes[id.0 as usize]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.0 as usize]
    }

    /// The metadata of a node, to change it.
    pub fn meta_mut(&mut self, id: NodeId) -> &mut Meta {
        &mut self.node_mut(id).meta
    }

    /// The metadata of a node.
    pub fn meta(&self, id: NodeId) -> &Meta {
        &self.node(id).meta
    }

    /// The kind of a node.
    pub fn kind(&self, id: NodeId) -> FileKind {
        match &self.node(id).body {
            Body::Dir { .. } => FileKind::Directory,
            Body::File { .. } => FileKind::Regular,
            Body::Symlink(_) => FileKind::Symlink,
            Body::Special(k) => *k,
            Body::Whiteout => FileKind::Whiteout,
        }
    }

    /// The child `name` of directory `dir`.
    pub fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.node(dir).body {
            Body::Dir { children, .. } => children.get(name).copied(),
            _ => None,
        }
    }

    /// Number of nodes made so far (including replaced ones).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn new_node(&mut self, meta: Meta, body: Body) -> Result<NodeId> {
        let id = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&i| i < u32::MAX - 1)
            .ok_or_else(|| {
                Error::bad_input("index builder", "more than 2^32 inodes in one layer")
            })?;
        self.nodes.push(Node { meta, body });
        Ok(NodeId(id))
    }

    fn children_mut(&mut self, dir: NodeId) -> Result<&mut BTreeMap<Vec<u8>, NodeId>> {
        match &mut self.node_mut(dir).body {
            Body::Dir { children, .. } => Ok(children),
            _ => Err(Error::bad_input(
                "index builder",
                "parent is not a directory",
            )),
        }
    }

    /// Put `node` at `dir/name`, replacing whatever was there. Returns
    /// whether a whiteout was replaced.
    fn attach(&mut self, dir: NodeId, name: &[u8], node: NodeId) -> Result<bool> {
        check_name(name)?;
        let old = self.children_mut(dir)?.insert(name.to_vec(), node);
        Ok(old.is_some_and(|o| matches!(self.node(o).body, Body::Whiteout)))
    }

    /// Add or update directory `dir/name`. An existing directory keeps its
    /// children and only takes the new metadata; anything else is replaced.
    /// A directory replacing a whiteout of the same layer becomes opaque (the
    /// whiteout hid the lower directory; this layer's entries stay visible).
    pub fn insert_dir(&mut self, dir: NodeId, name: &[u8], meta: Meta) -> Result<NodeId> {
        check_name(name)?;
        if let Some(existing) = self.child(dir, name) {
            if self.kind(existing) == FileKind::Directory {
                self.node_mut(existing).meta = meta;
                return Ok(existing);
            }
        }
        let id = self.new_node(
            meta,
            Body::Dir {
                children: BTreeMap::new(),
                opaque: false,
            },
        )?;
        if self.attach(dir, name, id)? {
            self.set_opaque(id);
        }
        Ok(id)
    }

    /// Add regular file `dir/name` of `size` bytes stored as `data`.
    pub fn insert_file(
        &mut self,
        dir: NodeId,
        name: &[u8],
        meta: Meta,
        size: u64,
        data: FileData,
    ) -> Result<NodeId> {
        let ok = match &data {
            FileData::Empty => size == 0,
            FileData::Inline(b) => b.len() as u64 == size,
            FileData::Blob(_) => size > 0,
        };
        if !ok {
            return Err(Error::bad_input(
                "index builder",
                format!("file content does not match size {size}"),
            ));
        }
        let data = match data {
            FileData::Inline(b) if b.is_empty() => FileData::Empty,
            d => d,
        };
        let id = self.new_node(meta, Body::File { size, data })?;
        self.attach(dir, name, id)?;
        Ok(id)
    }

    /// Add symlink `dir/name` pointing at `target`.
    pub fn insert_symlink(
        &mut self,
        dir: NodeId,
        name: &[u8],
        meta: Meta,
        target: &[u8],
    ) -> Result<NodeId> {
        if target.is_empty() || target.len() > 4095 || target.contains(&0) {
            return Err(Error::bad_input(
                String::from_utf8_lossy(name),
                "symlink target is empty, longer than 4095 bytes or contains NUL",
            ));
        }
        let id = self.new_node(meta, Body::Symlink(target.to_vec()))?;
        self.attach(dir, name, id)?;
        Ok(id)
    }

    /// Add a device node, fifo or socket `dir/name` (`kind` must be one of
    /// those); the device number is `meta.rdev`.
    pub fn insert_special(
        &mut self,
        dir: NodeId,
        name: &[u8],
        meta: Meta,
        kind: FileKind,
    ) -> Result<NodeId> {
        if !matches!(
            kind,
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo | FileKind::Socket
        ) {
            return Err(Error::bad_input(
                "index builder",
                format!("{kind:?} is not a special file kind"),
            ));
        }
        let id = self.new_node(meta, Body::Special(kind))?;
        self.attach(dir, name, id)?;
        Ok(id)
    }

    /// Record a whiteout for `dir/name`: the name is hidden in lower layers.
    /// If this layer has an entry of that name, it stays (the whiteout only
    /// applies to lower layers); if that entry is a directory it becomes
    /// opaque, so that the lower directory's contents stay hidden.
    pub fn insert_whiteout(&mut self, dir: NodeId, name: &[u8]) -> Result<()> {
        check_name(name)?;
        match self.child(dir, name) {
            Some(existing) => {
                if self.kind(existing) == FileKind::Directory {
                    self.set_opaque(existing);
                }
                Ok(())
            }
            None => {
                let meta = Meta {
                    mode: 0,
                    ..Meta::default()
                };
                let id = self.new_node(meta, Body::Whiteout)?;
                self.attach(dir, name, id)?;
                Ok(())
            }
        }
    }

    /// Mark directory `dir` opaque (no-op for other kinds).
    pub fn set_opaque(&mut self, dir: NodeId) {
        if let Body::Dir { opaque, .. } = &mut self.node_mut(dir).body {
            *opaque = true;
        }
    }

    /// Whether `dir` is marked opaque.
    pub fn is_opaque(&self, dir: NodeId) -> bool {
        matches!(self.node(dir).body, Body::Dir { opaque: true, .. })
    }

    /// Make `dir/name` another name of `target` (a hardlink).
    pub fn link(&mut self, dir: NodeId, name: &[u8], target: NodeId) -> Result<()> {
        if matches!(self.node(target).body, Body::Dir { .. } | Body::Whiteout) {
            return Err(Error::bad_input(
                String::from_utf8_lossy(name),
                "hardlink to a directory or whiteout",
            ));
        }
        if self.child(dir, name) == Some(target) {
            return Ok(());
        }
        self.attach(dir, name, target)?;
        Ok(())
    }

    /// Remove `dir/name` (no-op if absent).
    pub fn remove(&mut self, dir: NodeId, name: &[u8]) {
        if let Body::Dir { children, .. } = &mut self.node_mut(dir).body {
            children.remove(name);
        }
    }

    /// Serialise the tree reachable from the root into index bytes.
    /// Inode numbers are given breadth first in name order, so the same tree
    /// always gives the same bytes (and so the same layer id).
    pub fn build(&self) -> Result<Vec<u8>> {
        let too_big = |what: &str| {
            Error::bad_input(
                "index builder",
                format!("layer too large: {what} exceeds 2^32"),
            )
        };
        // 1. Number the reachable nodes, breadth first.
        let mut ino_of: HashMap<NodeId, u32> = HashMap::new();
        let mut order: Vec<NodeId> = vec![self.root()];
        let mut refs: Vec<u32> = vec![0];
        ino_of.insert(self.root(), 1);
        let mut queue = VecDeque::from([self.root()]);
        let mut parent_of: Vec<u32> = vec![1];
        while let Some(dir) = queue.pop_front() {
            let dir_ino = ino_of[&dir];
            if let Body::Dir { children, .. } = &self.node(dir).body {
                for &child in children.values() {
                    match ino_of.get(&child) {
                        Some(&i) => refs[i as usize - 1] += 1,
                        None => {
                            let i = u32::try_from(order.len() + 1)
                                .map_err(|_| too_big("inode count"))?;
                            ino_of.insert(child, i);
                            order.push(child);
                            refs.push(1);
                            let is_dir = matches!(self.node(child).body, Body::Dir { .. });
                            parent_of.push(if is_dir { dir_ino } else { 0 });
                            if is_dir {
                                queue.push_back(child);
                            }
                        }
                    }
                }
            }
        }
        // 2. Lay out records.
        let mut inodes = Vec::with_capacity(order.len() * format::INODE_LEN);
        let mut dirents = Vec::new();
        let mut xattrs = Vec::new();
        let mut blobs: Vec<BlobId> = Vec::new();
        let mut blob_index: HashMap<BlobId, u64> = HashMap::new();
        let mut heap: Vec<u8> = Vec::new();
        let mut dirent_count = 0u64;
        let mut xattr_count = 0u64;
        let mut features = 0u32;
        let push_heap = |heap: &mut Vec<u8>, bytes: &[u8]| -> Result<u32> {
            let off = u32::try_from(heap.len()).map_err(|_| too_big("heap"))?;
            heap.extend_from_slice(bytes);
            Ok(off)
        };
        for (i, &id) in order.iter().enumerate() {
            let node = self.node(id);
            let mut rec = [0u8; format::INODE_LEN];
            let kind = self.kind(id);
            let (mut a, mut b, mut size, mut content, mut flags, mut nlink) =
                (0u64, 0u64, 0u64, 0u8, 0u8, refs[i]);
            match &node.body {
                Body::Dir { children, opaque } => {
                    a = dirent_count;
                    b = children.len() as u64;
                    size = 4096;
                    if *opaque {
                        flags |= format::INODE_OPAQUE;
                        features |= format::FEATURE_WHITEOUTS;
                    }
                    let mut subdirs = 0u32;
                    for (name, child) in children {
                        let ckind = self.kind(*child);
                        if ckind == FileKind::Directory {
                            subdirs += 1;
                        }
                        let mut d = [0u8; format::DIRENT_LEN];
                        let off = push_heap(&mut heap, name)?;
                        d[de::NAME_OFF..de::NAME_OFF + 4].copy_from_slice(&off.to_le_bytes());
                        d[de::NAME_LEN..de::NAME_LEN + 2]
                            .copy_from_slice(&(name.len() as u16).to_le_bytes());
                        d[de::KIND] = ckind.code();
                        d[de::INO..de::INO + 8]
                            .copy_from_slice(&u64::from(ino_of[child]).to_le_bytes());
                        dirents.extend_from_slice(&d);
                    }
                    dirent_count += b;
                    nlink = 2 + subdirs;
                }
                Body::File { size: s, data } => {
                    size = *s;
                    match data {
                        FileData::Empty => {}
                        FileData::Inline(bytes) => {
                            content = format::CONTENT_INLINE;
                            features |= format::FEATURE_INLINE;
                            a = u64::from(push_heap(&mut heap, bytes)?);
                            b = bytes.len() as u64;
                        }
                        FileData::Blob(id) => {
                            content = format::CONTENT_BLOB;
                            a = *blob_index.entry(*id).or_insert_with(|| {
                                blobs.push(*id);
                                blobs.len() as u64 - 1
                            });
                        }
                    }
                }
                Body::Symlink(target) => {
                    a = u64::from(push_heap(&mut heap, target)?);
                    b = target.len() as u64;
                    size = b;
                }
                Body::Special(_) => {}
                Body::Whiteout => features |= format::FEATURE_WHITEOUTS,
            }
            let m = &node.meta;
            let xstart = xattr_count;
            for (name, value) in &m.xattrs {
                if name.is_empty()
                    || name.len() > format::NAME_MAX
                    || value.len() > format::XATTR_VALUE_MAX
                {
                    return Err(Error::bad_input(
                        "index builder",
                        format!(
                            "xattr {:?} has a bad name or a value over 64 KiB",
                            String::from_utf8_lossy(name)
                        ),
                    ));
                }
                features |= format::FEATURE_XATTRS;
                let mut x = [0u8; format::XATTR_LEN];
                let noff = push_heap(&mut heap, name)?;
                let voff = push_heap(&mut heap, value)?;
                x[xa::NAME_OFF..xa::NAME_OFF + 4].copy_from_slice(&noff.to_le_bytes());
                x[xa::VALUE_OFF..xa::VALUE_OFF + 4].copy_from_slice(&voff.to_le_bytes());
                x[xa::NAME_LEN..xa::NAME_LEN + 2]
                    .copy_from_slice(&(name.len() as u16).to_le_bytes());
                x[xa::VALUE_LEN..xa::VALUE_LEN + 4]
                    .copy_from_slice(&(value.len() as u32).to_le_bytes());
                xattrs.extend_from_slice(&x);
                xattr_count += 1;
            }
            let xcount = xattr_count - xstart;
            let rdev = if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
                m.rdev
            } else {
                0
            };
            let (mtime_nsec, ctime_nsec) =
                (m.mtime_nsec.min(999_999_999), m.ctime_nsec.min(999_999_999));
            rec[io::KIND] = kind.code();
            rec[io::FLAGS] = flags;
            rec[io::CONTENT] = content;
            put32(&mut rec, io::MODE, m.mode & 0o7777);
            put32(&mut rec, io::UID, m.uid);
            put32(&mut rec, io::GID, m.gid);
            put32(&mut rec, io::NLINK, nlink);
            put32(
                &mut rec,
                io::XATTR_START,
                u32::try_from(xstart).map_err(|_| too_big("xattr count"))?,
            );
            put32(&mut rec, io::XATTR_COUNT, xcount as u32);
            put32(&mut rec, io::PARENT, parent_of[i]);
            put64(&mut rec, io::RDEV, rdev);
            put64(&mut rec, io::SIZE, size);
            put64(&mut rec, io::MTIME_SEC, m.mtime_sec as u64);
            put64(&mut rec, io::CTIME_SEC, m.ctime_sec as u64);
            put32(&mut rec, io::MTIME_NSEC, mtime_nsec);
            put32(&mut rec, io::CTIME_NSEC, ctime_nsec);
            put64(&mut rec, io::A, a);
            put64(&mut rec, io::B, b);
            inodes.extend_from_slice(&rec);
        }
        let dirent_count32 = u32::try_from(dirent_count).map_err(|_| too_big("entry count"))?;
        let xattr_count32 = u32::try_from(xattr_count).map_err(|_| too_big("xattr count"))?;
        let blob_count32 = u32::try_from(blobs.len()).map_err(|_| too_big("blob count"))?;
        // 3. Header and body.
        let mut out = vec![0u8; format::HEADER_LEN];
        out.reserve(inodes.len() + dirents.len() + xattrs.len() + blobs.len() * 32 + heap.len());
        out.extend_from_slice(&inodes);
        let dirent_off = out.len() as u64;
        out.extend_from_slice(&dirents);
        let xattr_off = out.len() as u64;
        out.extend_from_slice(&xattrs);
        let blob_off = out.len() as u64;
        for b in &blobs {
            out.extend_from_slice(b.as_bytes());
        }
        let heap_off = out.len() as u64;
        out.extend_from_slice(&heap);
        let file_len = out.len() as u64;
        let checksum = blake3::hash(&out[format::HEADER_LEN..]);
        out[hdr::MAGIC..hdr::MAGIC + 8].copy_from_slice(&format::MAGIC);
        put32(&mut out, hdr::VERSION, format::VERSION);
        put32(&mut out, hdr::FEATURES, features);
        put64(&mut out, hdr::FILE_LEN, file_len);
        out[hdr::CHECKSUM..hdr::CHECKSUM + 32].copy_from_slice(checksum.as_bytes());
        put32(&mut out, hdr::INODE_COUNT, order.len() as u32);
        put32(&mut out, hdr::DIRENT_COUNT, dirent_count32);
        put32(&mut out, hdr::XATTR_COUNT, xattr_count32);
        put32(&mut out, hdr::BLOB_COUNT, blob_count32);
        put64(&mut out, hdr::HEAP_LEN, heap.len() as u64);
        put64(&mut out, hdr::INODE_OFF, format::HEADER_LEN as u64);
        put64(&mut out, hdr::DIRENT_OFF, dirent_off);
        put64(&mut out, hdr::XATTR_OFF, xattr_off);
        put64(&mut out, hdr::BLOB_OFF, blob_off);
        put64(&mut out, hdr::HEAP_OFF, heap_off);
        Ok(out)
    }
}

fn put32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
