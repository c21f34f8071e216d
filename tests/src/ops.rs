//! Filesystem operations applied to a mounted tree, each returning its errno.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::sys;

/// Flags of a rename.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameMode {
    /// Plain `rename(2)`.
    Plain,
    /// `renameat2(RENAME_NOREPLACE)`.
    NoReplace,
    /// `renameat2(RENAME_EXCHANGE)`.
    Exchange,
}

/// One operation; paths are relative to the mount root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `open(O_CREAT|O_WRONLY|O_TRUNC, mode)` (O_EXCL when `excl`).
    Create {
        /// Path.
        path: String,
        /// Creation mode (before umask).
        mode: u32,
        /// Fail with EEXIST if it exists.
        excl: bool,
    },
    /// `pwrite` of `len` pattern bytes at `offset` (open O_WRONLY).
    Write {
        /// Path.
        path: String,
        /// Offset.
        offset: u64,
        /// Length.
        len: u32,
        /// Pattern seed.
        byte: u8,
    },
    /// `write` of `len` pattern bytes with O_APPEND.
    Append {
        /// Path.
        path: String,
        /// Length.
        len: u32,
        /// Pattern seed.
        byte: u8,
    },
    /// `truncate(2)`.
    Truncate {
        /// Path.
        path: String,
        /// New size.
        len: u64,
    },
    /// `renameat2`.
    Rename {
        /// Source.
        from: String,
        /// Destination.
        to: String,
        /// Flags.
        mode: RenameMode,
    },
    /// `link(2)`.
    Link {
        /// Existing name.
        from: String,
        /// New name.
        to: String,
    },
    /// `symlink(2)`.
    Symlink {
        /// Target (relative, no `..`).
        target: String,
        /// New name.
        path: String,
    },
    /// `unlink(2)`.
    Unlink {
        /// Path.
        path: String,
    },
    /// `rmdir(2)`.
    Rmdir {
        /// Path.
        path: String,
    },
    /// `mkdir(2)`.
    Mkdir {
        /// Path.
        path: String,
        /// Mode (before umask).
        mode: u32,
    },
    /// `chmod(2)` (follows symlinks).
    Chmod {
        /// Path.
        path: String,
        /// Mode.
        mode: u32,
    },
    /// `lchown(2)`.
    Chown {
        /// Path.
        path: String,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// `utimensat(AT_SYMLINK_NOFOLLOW)`.
    Utimes {
        /// Path.
        path: String,
        /// Access time (seconds).
        atime: i64,
        /// Modification time (seconds).
        mtime: i64,
    },
    /// `lsetxattr`.
    SetXattr {
        /// Path.
        path: String,
        /// Attribute name (`user.*`).
        name: String,
        /// Value.
        value: Vec<u8>,
    },
    /// `lremovexattr`.
    RemoveXattr {
        /// Path.
        path: String,
        /// Attribute name.
        name: String,
    },
    /// `mknod(S_IFIFO)`.
    Mkfifo {
        /// Path.
        path: String,
        /// Mode (before umask).
        mode: u32,
    },
}

/// The data an op writes: `len` bytes derived from `byte`.
pub fn pattern(byte: u8, len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| byte.wrapping_add((i % 251) as u8))
        .collect()
}

/// Outcome of one op: success or the errno it failed with.
pub type OpResult = Result<(), i32>;

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn nix_errno(e: nix::Error) -> i32 {
    e as i32
}

/// Name of an errno value (`ENOENT`), or its number.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ENXIO => "ENXIO",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSYS => "ENOSYS",
        libc::ERANGE => "ERANGE",
        libc::E2BIG => "E2BIG",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// Human-readable outcome.
pub fn result_name(r: &OpResult) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(e) => errno_name(*e),
    }
}

impl Op {
    /// Apply the op under `root` (a mount point).
    pub fn apply(&self, root: &Path) -> OpResult {
        match self {
            // O_NONBLOCK: opening a fifo for writing must not wait for a reader.
            Op::Create { path, mode, excl } => OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .create(!*excl)
                .create_new(*excl)
                .truncate(!*excl)
                .mode(*mode)
                .open(root.join(path))
                .map(drop)
                .map_err(errno),
            Op::Write {
                path,
                offset,
                len,
                byte,
            } => {
                let f = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(root.join(path))
                    .map_err(errno)?;
                f.write_all_at(&pattern(*byte, *len), *offset)
                    .map_err(errno)
            }
            Op::Append { path, len, byte } => {
                let mut f = OpenOptions::new()
                    .append(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(root.join(path))
                    .map_err(errno)?;
                f.write_all(&pattern(*byte, *len)).map_err(errno)
            }
            Op::Truncate { path, len } => {
                nix::unistd::truncate(&root.join(path), *len as i64).map_err(nix_errno)
            }
            Op::Rename { from, to, mode } => {
                let flags = match mode {
                    RenameMode::Plain => RenameFlags::empty(),
                    RenameMode::NoReplace => RenameFlags::RENAME_NOREPLACE,
                    RenameMode::Exchange => RenameFlags::RENAME_EXCHANGE,
                };
                renameat2(AT_FDCWD, &root.join(from), AT_FDCWD, &root.join(to), flags)
                    .map_err(nix_errno)
            }
            Op::Link { from, to } => {
                std::fs::hard_link(root.join(from), root.join(to)).map_err(errno)
            }
            Op::Symlink { target, path } => {
                std::os::unix::fs::symlink(target, root.join(path)).map_err(errno)
            }
            Op::Unlink { path } => std::fs::remove_file(root.join(path)).map_err(errno),
            Op::Rmdir { path } => std::fs::remove_dir(root.join(path)).map_err(errno),
            Op::Mkdir { path, mode } => {
                nix::unistd::mkdir(&root.join(path), Mode::from_bits_truncate(*mode))
                    .map_err(nix_errno)
            }
            Op::Chmod { path, mode } => {
                std::fs::set_permissions(root.join(path), std::fs::Permissions::from_mode(*mode))
                    .map_err(errno)
            }
            Op::Chown { path, uid, gid } => {
                std::os::unix::fs::lchown(root.join(path), Some(*uid), Some(*gid)).map_err(errno)
            }
            Op::Utimes { path, atime, mtime } => utimensat(
                AT_FDCWD,
                &root.join(path),
                &TimeSpec::new(*atime, 0),
                &TimeSpec::new(*mtime, 0),
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(nix_errno),
            Op::SetXattr { path, name, value } => {
                sys::lsetxattr(&root.join(path), name, value).map_err(errno)
            }
            Op::RemoveXattr { path, name } => {
                sys::lremovexattr(&root.join(path), name).map_err(errno)
            }
            Op::Mkfifo { path, mode } => mknod(
                &root.join(path),
                SFlag::S_IFIFO,
                Mode::from_bits_truncate(*mode),
                0,
            )
            .map_err(nix_errno),
        }
    }

    /// Rust source that constructs this op.
    pub fn to_rust(&self) -> String {
        match self {
            Op::Create { path, mode, excl } => {
                format!("Op::Create {{ path: {path:?}.into(), mode: 0o{mode:o}, excl: {excl} }}")
            }
            Op::Write { path, offset, len, byte } => format!(
                "Op::Write {{ path: {path:?}.into(), offset: {offset}, len: {len}, byte: {byte} }}"
            ),
            Op::Append { path, len, byte } => {
                format!("Op::Append {{ path: {path:?}.into(), len: {len}, byte: {byte} }}")
            }
            Op::Truncate { path, len } => {
                format!("Op::Truncate {{ path: {path:?}.into(), len: {len} }}")
            }
            Op::Rename { from, to, mode } => format!(
                "Op::Rename {{ from: {from:?}.into(), to: {to:?}.into(), mode: RenameMode::{mode:?} }}"
            ),
            Op::Link { from, to } => {
                format!("Op::Link {{ from: {from:?}.into(), to: {to:?}.into() }}")
            }
            Op::Symlink { target, path } => {
                format!("Op::Symlink {{ target: {target:?}.into(), path: {path:?}.into() }}")
            }
            Op::Unlink { path } => format!("Op::Unlink {{ path: {path:?}.into() }}"),
            Op::Rmdir { path } => format!("Op::Rmdir {{ path: {path:?}.into() }}"),
            Op::Mkdir { path, mode } => {
                format!("Op::Mkdir {{ path: {path:?}.into(), mode: 0o{mode:o} }}")
            }
            Op::Chmod { path, mode } => {
                format!("Op::Chmod {{ path: {path:?}.into(), mode: 0o{mode:o} }}")
            }
            Op::Chown { path, uid, gid } => {
                format!("Op::Chown {{ path: {path:?}.into(), uid: {uid}, gid: {gid} }}")
            }
            Op::Utimes { path, atime, mtime } => format!(
                "Op::Utimes {{ path: {path:?}.into(), atime: {atime}, mtime: {mtime} }}"
            ),
            Op::SetXattr { path, name, value } => format!(
                "Op::SetXattr {{ path: {path:?}.into(), name: {name:?}.into(), value: {}.to_vec() }}",
                crate::spec::bytes_literal(value)
            ),
            Op::RemoveXattr { path, name } => {
                format!("Op::RemoveXattr {{ path: {path:?}.into(), name: {name:?}.into() }}")
            }
            Op::Mkfifo { path, mode } => {
                format!("Op::Mkfifo {{ path: {path:?}.into(), mode: 0o{mode:o} }}")
            }
        }
    }

    /// A shell command doing the same under `$M` (python3 where the
    /// coreutils have no exact equivalent).
    pub fn to_shell(&self) -> String {
        let py = |code: String| format!("python3 -c '{code}'");
        match self {
            Op::Create { path, mode, excl } => py(format!(
                "import os; os.close(os.open(\"'\"$M\"'/{path}\", os.O_CREAT|os.O_WRONLY|{}, 0o{mode:o}))",
                if *excl { "os.O_EXCL" } else { "os.O_TRUNC" }
            )),
            Op::Write { path, offset, len, byte } => py(format!(
                "import os; fd=os.open(\"'\"$M\"'/{path}\", os.O_WRONLY); os.pwrite(fd, bytes(({byte}+i%251)%256 for i in range({len})), {offset})"
            )),
            Op::Append { path, len, byte } => py(format!(
                "import os; fd=os.open(\"'\"$M\"'/{path}\", os.O_WRONLY|os.O_APPEND); os.write(fd, bytes(({byte}+i%251)%256 for i in range({len})))"
            )),
            Op::Truncate { path, len } => format!("truncate -s {len} \"$M/{path}\""),
            Op::Rename { from, to, mode } => {
                let flags = match mode {
                    RenameMode::Plain => 0,
                    RenameMode::NoReplace => 1,
                    RenameMode::Exchange => 2,
                };
                py(format!(
                    "import ctypes,os,sys; l=ctypes.CDLL(None,use_errno=True); r=l.renameat2(-100,b\"'\"$M\"'/{from}\",-100,b\"'\"$M\"'/{to}\",{flags}); sys.exit(r and os.strerror(ctypes.get_errno()))"
                ))
            }
            Op::Link { from, to } => format!("ln \"$M/{from}\" \"$M/{to}\""),
            Op::Symlink { target, path } => format!("ln -s '{target}' \"$M/{path}\""),
            Op::Unlink { path } => format!("unlink \"$M/{path}\""),
            Op::Rmdir { path } => format!("rmdir \"$M/{path}\""),
            Op::Mkdir { path, mode } => format!("mkdir -m {mode:o} \"$M/{path}\""),
            Op::Chmod { path, mode } => format!("chmod {mode:o} \"$M/{path}\""),
            Op::Chown { path, uid, gid } => format!("chown -h {uid}:{gid} \"$M/{path}\""),
            Op::Utimes { path, atime, mtime } => py(format!(
                "import os; os.utime(\"'\"$M\"'/{path}\", ({atime},{mtime}), follow_symlinks=False)"
            )),
            Op::SetXattr { path, name, value } => format!(
                "setfattr -h -n {name} -v 0x{} \"$M/{path}\"",
                value.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            Op::RemoveXattr { path, name } => format!("setfattr -h -x {name} \"$M/{path}\""),
            Op::Mkfifo { path, mode } => format!("mkfifo -m {mode:o} \"$M/{path}\""),
        }
    }

    /// Short name of the op kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Write { .. } => "write",
            Op::Append { .. } => "append",
            Op::Truncate { .. } => "truncate",
            Op::Rename { .. } => "rename",
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Unlink { .. } => "unlink",
            Op::Rmdir { .. } => "rmdir",
            Op::Mkdir { .. } => "mkdir",
            Op::Chmod { .. } => "chmod",
            Op::Chown { .. } => "chown",
            Op::Utimes { .. } => "utimes",
            Op::SetXattr { .. } => "setxattr",
            Op::RemoveXattr { .. } => "removexattr",
            Op::Mkfifo { .. } => "mkfifo",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rust())
    }
}
