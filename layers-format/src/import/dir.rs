//! Importing a directory tree as a layer, either as plain files or as an
//! overlayfs upper directory (whiteouts and opaque markers translated).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::INLINE_MAX;
use crate::ids::LayerId;
use crate::index::FileData;
use crate::index::{FileKind, IndexBuilder, Meta, NodeId};
use crate::staging::Staging;
use crate::store::Store;

/// How to read a directory being imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirFormat {
    /// Every file as it is (a char 0/0 device stays a device).
    Plain,
    /// An overlayfs / fuse-overlayfs upper directory: char 0/0 devices,
    /// `.wh.NAME` files and files with an `overlay.whiteout` xattr are
    /// whiteouts; directories with `trusted.overlay.opaque=y`,
    /// `user.overlay.opaque=y`, `user.fuseoverlayfs.opaque=y` or a
    /// `.wh..wh..opq` file are opaque. Overlay-private xattrs are dropped.
    OverlayUpper,
}

const OPAQUE_XATTRS: [&[u8]; 3] = [
    b"trusted.overlay.opaque",
    b"user.overlay.opaque",
    b"user.fuseoverlayfs.opaque",
];
const WHITEOUT_XATTRS: [&[u8]; 2] = [b"trusted.overlay.whiteout", b"user.overlay.whiteout"];
const REDIRECT_XATTRS: [&[u8]; 2] = [b"trusted.overlay.redirect", b"user.overlay.redirect"];

fn is_overlay_private(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.fuseoverlayfs.")
}

/// Metadata of `md` plus the xattrs of `path`.
fn meta_of(path: &Path, md: &fs::Metadata) -> Result<Meta> {
    let mut xattrs = std::collections::BTreeMap::new();
    for name in crate::sys::list_xattrs(path).ctx("list xattrs", path)? {
        if let Some(value) = crate::sys::get_xattr(path, &name).ctx("read xattr", path)? {
            xattrs.insert(name, value);
        }
    }
    Ok(Meta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        ctime_sec: md.ctime(),
        ctime_nsec: md.ctime_nsec().clamp(0, 999_999_999) as u32,
        rdev: md.rdev(),
        xattrs,
    })
}

pub(crate) fn import(store: &Store, root: &Path, format: DirFormat) -> Result<LayerId> {
    let md = fs::symlink_metadata(root).ctx("stat", root)?;
    if !md.is_dir() {
        return Err(Error::bad_input(
            root.display().to_string(),
            "not a directory",
        ));
    }
    let mut b = IndexBuilder::new();
    let mut staging = Staging::new(store);
    let mut links: HashMap<(u64, u64), NodeId> = HashMap::new();
    let root_node = b.root();
    let mut root_meta = meta_of(root, &md)?;
    if format == DirFormat::OverlayUpper {
        if has_opaque_xattr(&root_meta) {
            b.set_opaque(root_node);
        }
        root_meta.xattrs.retain(|k, _| !is_overlay_private(k));
    }
    *b.meta_mut(root_node) = root_meta;
    // Iterative walk: no recursion, however deep the tree.
    let mut stack: Vec<(PathBuf, NodeId)> = vec![(root.to_path_buf(), root_node)];
    while let Some((dir_path, dir_node)) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir_path)
            .ctx("read directory", &dir_path)?
            .collect::<std::io::Result<_>>()
            .ctx("read directory", &dir_path)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.as_bytes();
            let md = fs::symlink_metadata(&path).ctx("stat", &path)?;
            let mut meta = meta_of(&path, &md)?;
            let kind = FileKind::from_mode(md.mode())
                .ok_or_else(|| Error::bad_input(path.display().to_string(), "unknown file type"))?;
            let shown = || path.display().to_string();
            if format == DirFormat::OverlayUpper {
                if name == b".wh..wh..opq" {
                    b.set_opaque(dir_node);
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(b".wh.") {
                    if !hidden.starts_with(b".wh.") {
                        b.insert_whiteout(dir_node, hidden)
                            .map_err(|e| Error::bad_input(shown(), e.to_string()))?;
                    }
                    continue;
                }
                let is_whiteout = (kind == FileKind::CharDevice && md.rdev() == 0)
                    || (kind == FileKind::Regular
                        && WHITEOUT_XATTRS.iter().any(|x| meta.xattrs.contains_key(*x)));
                if is_whiteout {
                    b.insert_whiteout(dir_node, name)
                        .map_err(|e| Error::bad_input(shown(), e.to_string()))?;
                    continue;
                }
                if kind == FileKind::Directory
                    && REDIRECT_XATTRS.iter().any(|x| meta.xattrs.contains_key(*x))
                {
                    return Err(Error::bad_input(
                        shown(),
                        "directory was renamed in the overlay (redirect xattr); committing renamed directories is not supported",
                    ));
                }
            }
            let opaque = format == DirFormat::OverlayUpper
                && kind == FileKind::Directory
                && has_opaque_xattr(&meta);
            if format == DirFormat::OverlayUpper {
                meta.xattrs.retain(|k, _| !is_overlay_private(k));
            }
            let wrap = |e: Error| Error::bad_input(shown(), e.to_string());
            match kind {
                FileKind::Directory => {
                    let node = b.insert_dir(dir_node, name, meta).map_err(wrap)?;
                    if opaque {
                        b.set_opaque(node);
                    }
                    stack.push((path, node));
                }
                FileKind::Regular => {
                    if md.nlink() > 1 {
                        if let Some(&target) = links.get(&(md.dev(), md.ino())) {
                            b.link(dir_node, name, target).map_err(wrap)?;
                            continue;
                        }
                    }
                    let size = md.len();
                    let data = if size == 0 {
                        FileData::Empty
                    } else {
                        let mut f = File::open(&path).ctx("open", &path)?;
                        if size <= INLINE_MAX {
                            let mut buf = Vec::with_capacity(size as usize);
                            f.read_to_end(&mut buf).ctx("read", &path)?;
                            if buf.len() as u64 != size {
                                return Err(Error::bad_input(
                                    shown(),
                                    "file changed size while being imported",
                                ));
                            }
                            FileData::Inline(buf)
                        } else {
                            let (id, n) = staging.add_blob(&mut f, &shown())?;
                            if n != size {
                                return Err(Error::bad_input(
                                    shown(),
                                    "file changed size while being imported",
                                ));
                            }
                            FileData::Blob(id)
                        }
                    };
                    let node = b
                        .insert_file(dir_node, name, meta, size, data)
                        .map_err(wrap)?;
                    if md.nlink() > 1 {
                        links.insert((md.dev(), md.ino()), node);
                    }
                }
                FileKind::Symlink => {
                    let target = fs::read_link(&path).ctx("readlink", &path)?;
                    b.insert_symlink(dir_node, name, meta, target.as_os_str().as_bytes())
                        .map_err(wrap)?;
                }
                FileKind::CharDevice
                | FileKind::BlockDevice
                | FileKind::Fifo
                | FileKind::Socket => {
                    if md.nlink() > 1 {
                        if let Some(&target) = links.get(&(md.dev(), md.ino())) {
                            b.link(dir_node, name, target).map_err(wrap)?;
                            continue;
                        }
                    }
                    let node = b.insert_special(dir_node, name, meta, kind).map_err(wrap)?;
                    if md.nlink() > 1 {
                        links.insert((md.dev(), md.ino()), node);
                    }
                }
                FileKind::Whiteout => {}
            }
        }
    }
    let bytes = b.build()?;
    let id = staging.stage_index(&bytes)?;
    staging.commit()?;
    Ok(id)
}

fn has_opaque_xattr(meta: &Meta) -> bool {
    OPAQUE_XATTRS
        .iter()
        .any(|x| meta.xattrs.get(*x).is_some_and(|v| v.as_slice() == b"y"))
}
