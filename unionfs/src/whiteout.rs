//! Whiteouts and opaque markers in host directories, in every form
//! overlay filesystems use:
//!
//! - whiteout as a character device 0/0 (kernel overlayfs, the root form);
//! - whiteout as a `.wh.NAME` file (AUFS/OCI style, fuse-overlayfs unprivileged);
//! - whiteout as an empty regular file with the `overlay.whiteout` xattr
//!   (`trusted.` or `user.`), inside a directory marked `overlay.whiteouts`;
//! - opaque directory by `trusted.overlay.opaque=y`, `user.overlay.opaque=y`
//!   or a `.wh..wh..opq` file inside it.

use std::io;
use std::os::fd::BorrowedFd;

use crate::layer::{EntryKind, LayerEntry};
use crate::sys;

/// Prefix of AUFS-style whiteout files.
pub const WH_PREFIX: &[u8] = b".wh.";
/// Name of the AUFS-style opaque marker file.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

const OPAQUE_XATTRS: [&[u8]; 3] = [
    b"trusted.overlay.opaque",
    b"user.overlay.opaque",
    b"user.fuseoverlayfs.opaque",
];
const WHITEOUT_XATTRS: [&[u8]; 2] = [b"trusted.overlay.whiteout", b"user.overlay.whiteout"];
const WHITEOUTS_DIR_XATTRS: [&[u8]; 2] = [b"trusted.overlay.whiteouts", b"user.overlay.whiteouts"];

/// `.wh.` + name.
pub fn wh_name(name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + WH_PREFIX.len());
    v.extend_from_slice(WH_PREFIX);
    v.extend_from_slice(name);
    v
}

fn missing(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG)
    )
}

/// Which of `keys` `dir/name` has: one listxattr (most files have no
/// xattrs at all), or a getxattr per key if listing fails.
fn present_xattrs<'k>(dir: BorrowedFd<'_>, name: &[u8], keys: &[&'k [u8]]) -> Vec<&'k [u8]> {
    match sys::list_xattr_at(dir, name) {
        Ok(raw) => keys
            .iter()
            .copied()
            .filter(|k| raw.split(|&b| b == 0).any(|n| n == *k))
            .collect(),
        Err(_) => keys
            .iter()
            .copied()
            .filter(|k| matches!(sys::get_xattr_at(dir, name, k), Ok(Some(_))))
            .collect(),
    }
}

fn has_any_xattr(dir: BorrowedFd<'_>, name: &[u8], keys: &[&[u8]]) -> bool {
    !present_xattrs(dir, name, keys).is_empty()
}

/// Whether a stat result is a whiteout by itself (char 0/0, or an empty
/// regular file carrying the `overlay.whiteout` xattr).
pub fn stat_is_whiteout(dir: BorrowedFd<'_>, name: &[u8], st: &libc::stat) -> bool {
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFCHR && st.st_rdev == 0 {
        return true;
    }
    fmt == libc::S_IFREG && st.st_size == 0 && has_any_xattr(dir, name, &WHITEOUT_XATTRS)
}

/// Looks `name` up in host directory `dir` and classifies it.
/// Returns the stat and kind, with `Whiteout` for every whiteout form.
pub fn classify_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
) -> io::Result<Option<(Option<libc::stat>, EntryKind)>> {
    if name.starts_with(WH_PREFIX) {
        return Ok(None);
    }
    match sys::stat_at(dir, name) {
        Ok(st) => {
            if stat_is_whiteout(dir, name, &st) {
                Ok(Some((None, EntryKind::Whiteout)))
            } else {
                Ok(Some((Some(st), EntryKind::from_mode(st.st_mode))))
            }
        }
        Err(e) if missing(&e) => match sys::stat_at(dir, &wh_name(name)) {
            Ok(_) => Ok(Some((None, EntryKind::Whiteout))),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Whether host directory `dir` (an fd of the directory itself) is opaque.
pub fn dir_is_opaque(dir: BorrowedFd<'_>) -> bool {
    for k in present_xattrs(dir, b"", &OPAQUE_XATTRS) {
        if matches!(sys::get_xattr_at(dir, b"", k), Ok(Some(v)) if v == b"y") {
            return true;
        }
    }
    sys::stat_at(dir, OPAQUE_MARKER).is_ok()
}

fn dtype_kind(dtype: u8) -> Option<EntryKind> {
    Some(match dtype {
        libc::DT_DIR => EntryKind::Dir,
        libc::DT_REG => EntryKind::File,
        libc::DT_LNK => EntryKind::Symlink,
        libc::DT_CHR => EntryKind::CharDev,
        libc::DT_BLK => EntryKind::BlockDev,
        libc::DT_FIFO => EntryKind::Fifo,
        libc::DT_SOCK => EntryKind::Socket,
        _ => return None,
    })
}

/// Lists host directory `dir` classified: whiteouts of every form as
/// `Whiteout` entries under the name they hide, marker files dropped.
pub fn read_dir_classified(dir: BorrowedFd<'_>) -> io::Result<Vec<LayerEntry>> {
    let raw = sys::read_dir(dir)?;
    let xattr_whiteouts = has_any_xattr(dir, b"", &WHITEOUTS_DIR_XATTRS);
    let mut out = Vec::with_capacity(raw.len());
    for (name, ino, dtype) in raw {
        if name == OPAQUE_MARKER {
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
            if !hidden.is_empty() {
                out.push(LayerEntry {
                    name: hidden.to_vec(),
                    kind: EntryKind::Whiteout,
                    ino: 0,
                });
            }
            continue;
        }
        let mut kind = dtype_kind(dtype);
        let needs_stat = match kind {
            None | Some(EntryKind::CharDev) => true,
            Some(EntryKind::File) => xattr_whiteouts,
            _ => false,
        };
        if needs_stat {
            match sys::stat_at(dir, &name) {
                Ok(st) => {
                    kind = Some(if stat_is_whiteout(dir, &name, &st) {
                        EntryKind::Whiteout
                    } else {
                        EntryKind::from_mode(st.st_mode)
                    });
                }
                Err(e) if missing(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        let kind = kind.unwrap_or(EntryKind::File);
        out.push(LayerEntry {
            ino: if kind == EntryKind::Whiteout { 0 } else { ino },
            name,
            kind,
        });
    }
    // A real entry wins over a `.wh.` file of the same name.
    dedup_whiteouts(&mut out);
    Ok(out)
}

fn dedup_whiteouts(entries: &mut Vec<LayerEntry>) {
    let real: std::collections::HashSet<Vec<u8>> = entries
        .iter()
        .filter(|e| e.kind != EntryKind::Whiteout)
        .map(|e| e.name.clone())
        .collect();
    let mut seen = std::collections::HashSet::new();
    entries.retain(|e| {
        if e.kind == EntryKind::Whiteout {
            !real.contains(&e.name) && seen.insert(e.name.clone())
        } else {
            true
        }
    });
}

/// Lists the user-visible xattr names of `dir/name`.
pub fn visible_xattrs(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let raw = sys::list_xattr_at(dir, name)?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty() && !crate::layer::is_private_xattr(n))
        .map(|n| n.to_vec())
        .collect())
}

/// Lists all xattr names of `dir/name`, private ones included.
pub fn all_xattrs(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let raw = sys::list_xattr_at(dir, name)?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| n.to_vec())
        .collect())
}
