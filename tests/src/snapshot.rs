//! Snapshots of a directory tree and their comparison.
//!
//! Compared for the visible (merged) tree: names, file types, full
//! `st_mode`, owner, group, sizes of non-directories, contents, symlink
//! targets, link counts of non-directories, which names are hard links of
//! each other (grouped by `st_ino`), every xattr except `security.*`
//! (so a leaked `trusted.overlay.*` shows), the `d_type` readdir reports and
//! whether readdir's `d_ino` equals `st_ino`, and `st_mtime` within
//! [`MTIME_SLACK_SECS`].
//!
//! Deliberately not compared, and why:
//! - atime: relatime and the snapshot's own reads change it.
//! - ctime: set to "now" by the kernel on every change and not settable;
//!   the two mounts run the same op microseconds apart.
//! - inode numbers themselves: each filesystem numbers inodes its own way;
//!   only their consistency (hard-link grouping, `d_ino == st_ino`) matters.
//! - `st_dev`, `st_blocks`, `st_blksize`, directory sizes: properties of
//!   the backing filesystem, not of the union semantics.
//! - directory link counts: overlayfs reports 1 for merged directories
//!   (so `find` does not use the leaf optimisation); any value is valid.
//! - mtimes closer than [`MTIME_SLACK_SECS`]: operations set them to "now"
//!   at slightly different instants on the two mounts; lower trees use
//!   fixed times from 2001, so a lost or wrongly preserved time still shows.
//!
//! For upper directories ([`SnapshotKind::Upper`]) whiteouts are recorded as
//! such (char 0/0) and of the `trusted.overlay.*` xattrs only `opaque` is
//! compared; redirect, origin, impure, nlink and metacopy details are
//! implementation choices (the redirect value differs legitimately, e.g.
//! absolute vs relative), so they are not. File contents in the upper are
//! compared unless either side is a metacopy (`trusted.overlay.metacopy`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt};
use std::path::Path;

use crate::sys;

/// Allowed difference between the two mounts' mtimes.
pub const MTIME_SLACK_SECS: i64 = 30;

/// Which kind of tree is snapshotted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotKind {
    /// A mounted union as users see it.
    Visible,
    /// An upper directory in overlayfs's on-disk format.
    Upper,
    /// A union mounted over an upper written earlier: as `Visible` but link
    /// counts and hard-link grouping are not compared, because overlayfs's
    /// `index=on` keeps that state in the work dir, which a remount with a
    /// fresh work dir does not have; for the same reason hard-linked
    /// entries are compared by type only. `d_ino == st_ino` is not compared
    /// either: overlayfs keeps it consistent only for copy-ups it recorded
    /// with its own origin xattrs; nor is mtime, which for metacopy and
    /// indexed files depends on that old work dir state too.
    Remounted,
}

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// File type letter: d f l p c b s, or `w` for a whiteout (upper only).
    pub ftype: char,
    /// Full st_mode.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size (non-directories).
    pub size: Option<u64>,
    /// mtime seconds.
    pub mtime: i64,
    /// Link count (non-directories).
    pub nlink: Option<u64>,
    /// File content (regular files), or an error string.
    pub content: Option<Result<Vec<u8>, String>>,
    /// Symlink target.
    pub target: Option<String>,
    /// Extended attributes compared.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// File type readdir reported.
    pub dtype: char,
    /// Whether readdir's d_ino equals lstat's st_ino.
    pub dino_ok: bool,
    /// Whether this upper file is a metacopy (upper only).
    pub metacopy: bool,
    /// st_ino (only used to group hard links).
    pub ino: u64,
}

/// A snapshot: path → entry, plus errors met while walking.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Entries by relative path.
    pub entries: BTreeMap<String, Entry>,
    /// Walk errors (`path: error`).
    pub errors: Vec<String>,
    /// Names readdir listed but lstat could not find (ENOENT). Kernel
    /// overlayfs lists a whiteout in a directory that is not merged (nothing
    /// below it) yet hides it from lookup; such ghosts on the reference side
    /// are ignored.
    pub ghosts: Vec<String>,
}

fn type_char(ft: fs::FileType) -> char {
    if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_fifo() {
        'p'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_socket() {
        's'
    } else {
        '?'
    }
}

/// Walk `root` and record every entry below it.
pub fn snapshot(root: &Path, kind: SnapshotKind) -> Snapshot {
    let mut snap = Snapshot::default();
    walk(root, "", kind, &mut snap, 0);
    snap
}

fn walk(root: &Path, rel: &str, kind: SnapshotKind, snap: &mut Snapshot, depth: usize) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) => {
            snap.errors.push(format!("readdir {rel:?}: {e}"));
            return;
        }
    };
    let mut subdirs = Vec::new();
    for de in rd {
        let de = match de {
            Ok(de) => de,
            Err(e) => {
                snap.errors.push(format!("readdir {rel:?}: {e}"));
                break;
            }
        };
        let name = de.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let full = root.join(&path);
        let md = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                snap.ghosts.push(path);
                continue;
            }
            Err(e) => {
                snap.errors.push(format!("lstat {path:?}: {e}"));
                continue;
            }
        };
        let dtype = de.file_type().map(type_char).unwrap_or('?');
        let mut ftype = type_char(md.file_type());
        if kind == SnapshotKind::Upper && ftype == 'c' && md.rdev() == 0 {
            ftype = 'w';
        }
        let is_dir = ftype == 'd';
        let mut xattrs = Vec::new();
        let mut metacopy = false;
        match sys::llistxattr(&full) {
            Ok(names) => {
                for n in names {
                    if n.starts_with("security.") {
                        continue;
                    }
                    if kind == SnapshotKind::Upper && n.starts_with("trusted.overlay.") {
                        if n == "trusted.overlay.metacopy" {
                            metacopy = true;
                        }
                        if n != "trusted.overlay.opaque" {
                            continue;
                        }
                    }
                    let v = sys::lgetxattr(&full, &n).ok().flatten().unwrap_or_default();
                    xattrs.push((n, v));
                }
            }
            Err(e) => snap.errors.push(format!("listxattr {path:?}: {e}")),
        }
        let content = (ftype == 'f').then(|| fs::read(&full).map_err(|e| e.to_string()));
        let target = (ftype == 'l').then(|| {
            fs::read_link(&full)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|e| format!("<{e}>"))
        });
        snap.entries.insert(
            path.clone(),
            Entry {
                ftype,
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                size: (!is_dir).then_some(md.size()),
                mtime: md.mtime(),
                nlink: (!is_dir).then_some(md.nlink()),
                content,
                target,
                xattrs,
                dtype: if ftype == 'w' { 'w' } else { dtype },
                dino_ok: de.ino() == md.ino(),
                metacopy,
                ino: md.ino(),
            },
        );
        if is_dir && depth < 16 {
            subdirs.push(path);
        }
    }
    for s in subdirs {
        walk(root, &s, kind, snap, depth + 1);
    }
}

fn show_content(c: &Option<Result<Vec<u8>, String>>) -> String {
    match c {
        None => "-".into(),
        Some(Err(e)) => format!("<read error: {e}>"),
        Some(Ok(d)) if d.len() <= 48 => format!("{:?}", String::from_utf8_lossy(d)),
        Some(Ok(d)) => format!("{} bytes, first differing data not shown", d.len()),
    }
}

fn hardlink_groups(s: &Snapshot) -> BTreeSet<Vec<String>> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (p, e) in &s.entries {
        if e.ftype != 'd' && e.ftype != 'w' {
            by_ino.entry(e.ino).or_default().push(p.clone());
        }
    }
    by_ino.into_values().filter(|v| v.len() > 1).collect()
}

/// Differences between `a` (the reference, kernel overlayfs) and `b`
/// (unionfs), as readable lines; empty when they match.
pub fn compare(a: &Snapshot, b: &Snapshot, kind: SnapshotKind) -> Vec<String> {
    compare_with(a, b, kind, false)
}

/// Prefix of unionfs's own bookkeeping xattrs in the upper dir.
pub const PRIVATE_XATTR_PREFIX: &str = "trusted.unionfs.";

/// As [`compare`]; with `ignore_private`, unionfs's bookkeeping xattrs
/// ([`PRIVATE_XATTR_PREFIX`]) are left out of upper-dir and remount
/// comparisons (like overlayfs's own origin/impure xattrs are), so that
/// one known format difference does not mask everything else.
pub fn compare_with(
    a: &Snapshot,
    b: &Snapshot,
    kind: SnapshotKind,
    ignore_private: bool,
) -> Vec<String> {
    let strip = |x: &[(String, Vec<u8>)]| -> Vec<(String, Vec<u8>)> {
        x.iter()
            .filter(|(n, _)| {
                !(ignore_private
                    && kind != SnapshotKind::Visible
                    && n.starts_with(PRIVATE_XATTR_PREFIX))
            })
            .cloned()
            .collect()
    };
    let mut out = Vec::new();
    let new_ghosts: Vec<&String> = b.ghosts.iter().filter(|g| !a.ghosts.contains(g)).collect();
    if !new_ghosts.is_empty() {
        out.push(format!(
            "unionfs readdir lists names lstat cannot find: {new_ghosts:?}"
        ));
    }
    if a.errors != b.errors {
        out.push(format!(
            "walk errors: overlayfs {:?} vs unionfs {:?}",
            a.errors, b.errors
        ));
    }
    for (p, ea) in &a.entries {
        let Some(eb) = b.entries.get(p) else {
            out.push(format!(
                "{p}: present in overlayfs ({}), missing in unionfs",
                ea.ftype
            ));
            continue;
        };
        let d = |out: &mut Vec<String>, what: &str, x: String, y: String| {
            if x != y {
                out.push(format!("{p}: {what}: overlayfs {x} vs unionfs {y}"));
            }
        };
        d(&mut out, "type", ea.ftype.to_string(), eb.ftype.to_string());
        if ea.ftype != eb.ftype {
            continue;
        }
        if kind == SnapshotKind::Remounted
            && (ea.nlink.is_some_and(|n| n > 1) || eb.nlink.is_some_and(|n| n > 1))
        {
            // A hard link copied up through one name reaches its other
            // names via the index in the old work dir only (the remount
            // shows such a name's lower file, with the lower link count).
            continue;
        }
        d(
            &mut out,
            "mode",
            format!("0{:o}", ea.mode),
            format!("0{:o}", eb.mode),
        );
        d(
            &mut out,
            "owner",
            format!("{}:{}", ea.uid, ea.gid),
            format!("{}:{}", eb.uid, eb.gid),
        );
        d(
            &mut out,
            "symlink target",
            format!("{:?}", ea.target),
            format!("{:?}", eb.target),
        );
        d(
            &mut out,
            "xattrs",
            format!("{:?}", xattr_show(&strip(&ea.xattrs))),
            format!("{:?}", xattr_show(&strip(&eb.xattrs))),
        );
        if kind != SnapshotKind::Upper {
            d(
                &mut out,
                "d_type",
                ea.dtype.to_string(),
                eb.dtype.to_string(),
            );
            // Only an inconsistency unionfs adds counts: overlayfs itself reports
            // d_ino != st_ino in some merged directories.
            if kind == SnapshotKind::Visible && ea.dino_ok && !eb.dino_ok {
                d(
                    &mut out,
                    "d_ino == st_ino",
                    ea.dino_ok.to_string(),
                    eb.dino_ok.to_string(),
                );
            }
            if kind == SnapshotKind::Visible {
                d(
                    &mut out,
                    "nlink",
                    format!("{:?}", ea.nlink),
                    format!("{:?}", eb.nlink),
                );
            }
            if kind == SnapshotKind::Visible && (ea.mtime - eb.mtime).abs() > MTIME_SLACK_SECS {
                out.push(format!(
                    "{p}: mtime: overlayfs {} vs unionfs {}",
                    ea.mtime, eb.mtime
                ));
            }
        }
        let data_comparable = !(ea.metacopy || eb.metacopy);
        if data_comparable {
            d(
                &mut out,
                "size",
                format!("{:?}", ea.size),
                format!("{:?}", eb.size),
            );
            if ea.content != eb.content {
                out.push(format!(
                    "{p}: content: overlayfs {} vs unionfs {}",
                    show_content(&ea.content),
                    show_content(&eb.content)
                ));
            }
        }
    }
    for (p, eb) in &b.entries {
        // overlayfs (index=on) copies up one name of a hard-link group and
        // reaches the others through its index; unionfs links all names up.
        let linked_up =
            kind == SnapshotKind::Upper && eb.ftype == 'f' && eb.nlink.is_some_and(|n| n > 1);
        if !a.entries.contains_key(p) && !linked_up {
            out.push(format!(
                "{p}: missing in overlayfs, present in unionfs ({})",
                eb.ftype
            ));
        }
    }
    if kind == SnapshotKind::Visible {
        let (ga, gb) = (hardlink_groups(a), hardlink_groups(b));
        if ga != gb {
            out.push(format!(
                "hard-link groups (same st_ino): overlayfs {ga:?} vs unionfs {gb:?}"
            ));
        }
    }
    out
}

fn xattr_show(x: &[(String, Vec<u8>)]) -> Vec<String> {
    x.iter()
        .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v)))
        .collect()
}
