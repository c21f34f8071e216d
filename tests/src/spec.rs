//! Declarative layer trees: what a lower (or the initial upper) contains,
//! written to disk the way kernel overlayfs expects (whiteouts as char 0/0,
//! opaque directories via `trusted.overlay.opaque=y`).

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::sys;

/// The kind of one entry in a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory; `opaque` hides everything below it in lower layers.
    Dir {
        /// Marked `trusted.overlay.opaque=y`.
        opaque: bool,
    },
    /// A regular file with this content.
    File {
        /// File content.
        data: Vec<u8>,
    },
    /// A symbolic link (targets are relative and never contain `..`).
    Symlink {
        /// Link target.
        target: String,
    },
    /// A named pipe.
    Fifo,
    /// A whiteout (character device 0/0) hiding the name in lower layers.
    Whiteout,
    /// A second name for the regular file at `to` in the same layer.
    HardLink {
        /// Existing path in the same layer.
        to: String,
    },
}

/// One entry of a layer tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Relative path, `/`-separated, no `.` or `..` components.
    pub path: String,
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits (07777 mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch); atime is set to the same.
    pub mtime: i64,
    /// `user.*` extended attributes.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// A whole layer: entries in creation order (parents are made as needed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerSpec {
    /// The entries.
    pub nodes: Vec<Node>,
}

/// Default mtime given to directories created implicitly as parents.
pub const IMPLICIT_DIR_MTIME: i64 = 1_000_000_000;

impl Node {
    /// A directory with mode 0755 owned by root.
    pub fn dir(path: &str) -> Node {
        Node::new(path, NodeKind::Dir { opaque: false }, 0o755)
    }
    /// An opaque directory with mode 0755 owned by root.
    pub fn opaque_dir(path: &str) -> Node {
        Node::new(path, NodeKind::Dir { opaque: true }, 0o755)
    }
    /// A regular file with mode 0644 owned by root.
    pub fn file(path: &str, data: &[u8]) -> Node {
        Node::new(
            path,
            NodeKind::File {
                data: data.to_vec(),
            },
            0o644,
        )
    }
    /// A symlink.
    pub fn symlink(path: &str, target: &str) -> Node {
        Node::new(
            path,
            NodeKind::Symlink {
                target: target.to_string(),
            },
            0o777,
        )
    }
    /// A whiteout.
    pub fn whiteout(path: &str) -> Node {
        Node::new(path, NodeKind::Whiteout, 0)
    }
    /// A fifo with mode 0644.
    pub fn fifo(path: &str) -> Node {
        Node::new(path, NodeKind::Fifo, 0o644)
    }
    /// A hard link to `to` (same layer).
    pub fn hardlink(path: &str, to: &str) -> Node {
        Node::new(path, NodeKind::HardLink { to: to.to_string() }, 0)
    }
    /// Any node, owned by root, with a fixed old mtime.
    pub fn new(path: &str, kind: NodeKind, mode: u32) -> Node {
        Node {
            path: path.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: IMPLICIT_DIR_MTIME + 12_345,
            xattrs: Vec::new(),
        }
    }
    /// Builder: owner.
    pub fn owner(mut self, uid: u32, gid: u32) -> Node {
        self.uid = uid;
        self.gid = gid;
        self
    }
    /// Builder: permission bits.
    pub fn mode(mut self, mode: u32) -> Node {
        self.mode = mode;
        self
    }
    /// Builder: one `user.*` xattr.
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Node {
        self.xattrs.push((name.to_string(), value.to_vec()));
        self
    }

    /// Rust source that rebuilds this node (for reproducers).
    pub fn to_rust(&self) -> String {
        let p = format!("{:?}", self.path);
        let mut s = match &self.kind {
            NodeKind::Dir { opaque: false } => format!("Node::dir({p})"),
            NodeKind::Dir { opaque: true } => format!("Node::opaque_dir({p})"),
            NodeKind::File { data } => match data.first() {
                Some(b)
                    if data.len() > 16 && *data == crate::ops::pattern(*b, data.len() as u32) =>
                {
                    format!("Node::file({p}, &pattern({b}, {}))", data.len())
                }
                _ => format!("Node::file({p}, {})", bytes_literal(data)),
            },
            NodeKind::Symlink { target } => format!("Node::symlink({p}, {target:?})"),
            NodeKind::Fifo => format!("Node::fifo({p})"),
            NodeKind::Whiteout => format!("Node::whiteout({p})"),
            NodeKind::HardLink { to } => format!("Node::hardlink({p}, {to:?})"),
        };
        let default = Node::new(&self.path, self.kind.clone(), 0);
        let default_mode = match self.kind {
            NodeKind::Dir { .. } => 0o755,
            NodeKind::File { .. } | NodeKind::Fifo => 0o644,
            NodeKind::Symlink { .. } => 0o777,
            _ => 0,
        };
        if self.mode != default_mode {
            let _ = write!(s, ".mode(0o{:o})", self.mode);
        }
        if (self.uid, self.gid) != (default.uid, default.gid) {
            let _ = write!(s, ".owner({}, {})", self.uid, self.gid);
        }
        if self.mtime != default.mtime {
            let _ = write!(s, ".mtime({})", self.mtime);
        }
        for (n, v) in &self.xattrs {
            let _ = write!(s, ".xattr({n:?}, {})", bytes_literal(v));
        }
        s
    }

    /// Builder: modification time.
    pub fn mtime(mut self, mtime: i64) -> Node {
        self.mtime = mtime;
        self
    }
}

/// A `b"..."` literal for `data`.
pub fn bytes_literal(data: &[u8]) -> String {
    let mut s = String::from("b\"");
    for b in data {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(*b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    s
}

fn io_err(path: &Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what} {}: {e}", path.display()))
}

impl LayerSpec {
    /// A layer from nodes.
    pub fn new(nodes: Vec<Node>) -> LayerSpec {
        LayerSpec { nodes }
    }

    /// Write the layer into the (existing, empty) directory `root`.
    ///
    /// Entries whose parent is not a directory, or whose path exists
    /// already, are skipped, so any generated spec builds. Times are set
    /// last, deepest first, so creating children does not disturb them.
    pub fn build(&self, root: &Path) -> io::Result<()> {
        let mut times: Vec<(String, i64)> = Vec::new();
        for node in &self.nodes {
            if node.path.is_empty() {
                continue;
            }
            if !ensure_parents(root, &node.path, &mut times)? {
                continue;
            }
            let path = root.join(&node.path);
            if path.symlink_metadata().is_ok() {
                continue;
            }
            match &node.kind {
                NodeKind::Dir { opaque } => {
                    std::fs::create_dir(&path).map_err(|e| io_err(&path, "mkdir", e))?;
                    if *opaque {
                        sys::lsetxattr(&path, "trusted.overlay.opaque", b"y")
                            .map_err(|e| io_err(&path, "set opaque xattr on", e))?;
                    }
                }
                NodeKind::File { data } => {
                    std::fs::write(&path, data).map_err(|e| io_err(&path, "write", e))?
                }
                NodeKind::Symlink { target } => {
                    symlink(target, &path).map_err(|e| io_err(&path, "symlink", e))?
                }
                NodeKind::Fifo => mknod(&path, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
                    .map_err(|e| io_err(&path, "mkfifo", e))?,
                NodeKind::Whiteout => mknod(&path, SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(|e| io_err(&path, "mknod whiteout", e))?,
                NodeKind::HardLink { to } => {
                    let target = root.join(to);
                    match target.symlink_metadata() {
                        Ok(m) if m.is_file() => std::fs::hard_link(&target, &path)
                            .map_err(|e| io_err(&path, "link", e))?,
                        _ => continue,
                    }
                    // A hard link shares the target's attributes: nothing else to set.
                    continue;
                }
            }
            // user.* xattrs exist only on regular files and directories.
            let is_link = !matches!(node.kind, NodeKind::File { .. } | NodeKind::Dir { .. });
            if !matches!(node.kind, NodeKind::Whiteout) {
                for (name, value) in &node.xattrs {
                    if !is_link {
                        sys::lsetxattr(&path, name, value)
                            .map_err(|e| io_err(&path, "setxattr", e))?;
                    }
                }
                if !matches!(node.kind, NodeKind::Symlink { .. }) {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(node.mode))
                        .map_err(|e| io_err(&path, "chmod", e))?;
                }
                std::os::unix::fs::lchown(&path, Some(node.uid), Some(node.gid))
                    .map_err(|e| io_err(&path, "chown", e))?;
            }
            times.push((node.path.clone(), node.mtime));
        }
        times.sort_by_key(|(p, _)| std::cmp::Reverse(p.matches('/').count()));
        for (rel, t) in times {
            let path = root.join(&rel);
            let ts = TimeSpec::new(t, 0);
            utimensat(
                nix::fcntl::AT_FDCWD,
                &path,
                &ts,
                &ts,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| io_err(&path, "utimensat", e))?;
        }
        Ok(())
    }

    /// Rust source for this layer (for reproducers).
    pub fn to_rust(&self) -> String {
        let mut s = String::from("LayerSpec::new(vec![");
        for n in &self.nodes {
            let _ = write!(s, "\n            {},", n.to_rust());
        }
        if !self.nodes.is_empty() {
            s.push_str("\n        ");
        }
        s.push_str("])");
        s
    }

    /// Shell commands that build this layer under `$dir` (for reproducers).
    pub fn to_shell(&self, dir: &str) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let p = format!("\"{dir}/{}\"", n.path);
            if let Some((parent, _)) = n.path.rsplit_once('/') {
                let _ = writeln!(s, "mkdir -p \"{dir}/{parent}\"");
            }
            match &n.kind {
                NodeKind::Dir { opaque } => {
                    let _ = writeln!(s, "mkdir -p {p}");
                    if *opaque {
                        let _ = writeln!(s, "setfattr -n trusted.overlay.opaque -v y {p}");
                    }
                }
                NodeKind::File { data } => {
                    let _ = writeln!(s, "printf '{}' > {p}", shell_printf(data));
                }
                NodeKind::Symlink { target } => {
                    let _ = writeln!(s, "ln -s '{target}' {p}");
                }
                NodeKind::Fifo => {
                    let _ = writeln!(s, "mkfifo {p}");
                }
                NodeKind::Whiteout => {
                    let _ = writeln!(s, "mknod {p} c 0 0");
                    continue;
                }
                NodeKind::HardLink { to } => {
                    let _ = writeln!(s, "ln \"{dir}/{to}\" {p}");
                    continue;
                }
            }
            for (name, value) in &n.xattrs {
                let _ = writeln!(
                    s,
                    "setfattr -h -n {name} -v '{}' {p}",
                    String::from_utf8_lossy(value)
                );
            }
            if !matches!(n.kind, NodeKind::Symlink { .. }) {
                let _ = writeln!(s, "chmod {:o} {p}", n.mode);
            }
            let _ = writeln!(s, "chown -h {}:{} {p}", n.uid, n.gid);
            let _ = writeln!(s, "touch -h -d @{} {p}", n.mtime);
        }
        s
    }
}

/// `data` escaped for a single-quoted printf format.
pub fn shell_printf(data: &[u8]) -> String {
    let mut s = String::new();
    for b in data {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b' ' | b'.' | b'-' | b'_' => {
                s.push(char::from(*b))
            }
            _ => {
                let _ = write!(s, "\\{b:03o}");
            }
        }
    }
    s
}

/// Create missing parent directories of `rel` under `root`; false when a
/// parent exists but is not a directory.
fn ensure_parents(root: &Path, rel: &str, times: &mut Vec<(String, i64)>) -> io::Result<bool> {
    let mut acc = String::new();
    let comps: Vec<&str> = rel.split('/').collect();
    for comp in &comps[..comps.len().saturating_sub(1)] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(comp);
        let p = root.join(&acc);
        match p.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(_) => {
                std::fs::create_dir(&p).map_err(|e| io_err(&p, "mkdir", e))?;
                times.push((acc.clone(), IMPLICIT_DIR_MTIME));
            }
        }
    }
    Ok(true)
}
