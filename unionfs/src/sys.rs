//! Thin, safe wrappers over the system calls the union needs.
//!
//! Every call is fd-relative (`*at`): the union never glues long absolute
//! host paths, so paths close to `PATH_MAX` inside the mount keep working.
//! All `unsafe` of the crate lives here; each block says why it is sound.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Result of `fstatat`, the fields the union uses.
pub type Stat = libc::stat;

/// `AT_FDCWD` as a borrowed fd-like value is not expressible; callers pass real fds.
fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_ssize(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        // ret is non-negative, so the cast cannot lose information.
        Ok(ret as usize)
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Stat> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: c is a valid NUL-terminated string and st points to writable
    // memory of the right size; the kernel fills it on success.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so the struct is initialised (it was zeroed anyway).
    Ok(unsafe { st.assume_init() })
}

/// `fstat` of an open fd.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    stat_at(fd, b"")
}

/// `openat(dir, name, flags, mode)` with `O_CLOEXEC` added.
pub fn open_at(dir: BorrowedFd<'_>, name: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(if name.is_empty() { b"." } else { name })?;
    // SAFETY: c is NUL-terminated; the returned fd is fresh and owned by us.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory by absolute or relative host path as an `O_PATH` fd.
pub fn open_dir_path(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: c is NUL-terminated; the fd is fresh and owned by us.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh fd from open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Re-opens an `O_PATH` fd with real access `flags` via `/proc/self/fd`.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let c = cstr(path.as_bytes())?;
    // SAFETY: c is NUL-terminated; the fd is fresh and owned by us.
    let nfd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd from open.
    Ok(unsafe { OwnedFd::from_raw_fd(nfd) })
}

/// `mkdirat`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// `mknodat`.
pub fn mknod_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })?;
    Ok(())
}

/// `symlinkat(target, dir, name)`.
pub fn symlink_at(target: &[u8], dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })?;
    Ok(())
}

/// `readlinkat`.
pub fn readlink_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for buf.len() bytes; c is NUL-terminated.
    let n = check_ssize(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// `unlinkat`, with `AT_REMOVEDIR` when `dir_entry`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &[u8], dir_entry: bool) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if dir_entry { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    Ok(())
}

/// `renameat2`.
pub fn rename_at(
    old_dir: BorrowedFd<'_>,
    old: &[u8],
    new_dir: BorrowedFd<'_>,
    new: &[u8],
    flags: u32,
) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: both names are NUL-terminated; renameat2 has no other pointers.
    check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            flags,
        )
    })?;
    Ok(())
}

/// `linkat` without following symlinks.
pub fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &[u8],
    new_dir: BorrowedFd<'_>,
    new: &[u8],
) -> io::Result<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: both names are NUL-terminated.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            o.as_ptr(),
            new_dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

/// `fchownat(AT_SYMLINK_NOFOLLOW)`; `u32::MAX` leaves an id unchanged.
pub fn chown_at(dir: BorrowedFd<'_>, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), c.as_ptr(), uid, gid, flags) })?;
    Ok(())
}

/// `fchmodat` (never on symlinks: Linux cannot chmod them).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    if name.is_empty() {
        // fchmodat cannot act on an O_PATH fd itself: go through its /proc link.
        let p = cstr(format!("/proc/self/fd/{}", dir.as_raw_fd()).as_bytes())?;
        // SAFETY: p is NUL-terminated.
        check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })?;
        return Ok(());
    }
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, 0) })?;
    Ok(())
}

/// `fchmod` on an open (non-`O_PATH`) fd.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })?;
    Ok(())
}

/// A timestamp for [`utimens_at`].
#[derive(Clone, Copy, Debug)]
pub enum Time {
    /// Leave unchanged.
    Omit,
    /// Set to the current time.
    Now,
    /// Set to seconds and nanoseconds since the epoch.
    At(i64, i64),
}

fn timespec(t: Time) -> libc::timespec {
    match t {
        Time::Omit => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Time::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Time::At(s, ns) => libc::timespec {
            tv_sec: s,
            tv_nsec: ns,
        },
    }
}

/// `utimensat(AT_SYMLINK_NOFOLLOW)`; an empty name acts on `dir` itself.
pub fn utimens_at(dir: BorrowedFd<'_>, name: &[u8], atime: Time, mtime: Time) -> io::Result<()> {
    let times = [timespec(atime), timespec(mtime)];
    if name.is_empty() {
        let p = cstr(format!("/proc/self/fd/{}", dir.as_raw_fd()).as_bytes())?;
        // SAFETY: p is NUL-terminated and times is a valid array of two timespecs.
        check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })?;
        return Ok(());
    }
    let c = cstr(name)?;
    // SAFETY: c is NUL-terminated and times is a valid array of two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// `ftruncate`.
pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })?;
    Ok(())
}

/// `fallocate`.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })?;
    Ok(())
}

/// `lseek`.
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain syscall on a valid fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `fsync` or `fdatasync`.
pub fn fsync(fd: BorrowedFd<'_>, data_only: bool) -> io::Result<()> {
    // SAFETY: plain syscalls on a valid fd.
    let r = unsafe {
        if data_only {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    };
    check(r)?;
    Ok(())
}

/// `FICLONE`: share all blocks of `src` with `dst` (btrfs, xfs).
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> io::Result<()> {
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as an integer argument, no pointers.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) })?;
    Ok(())
}

/// One `copy_file_range` call at explicit offsets.
pub fn copy_file_range(
    src: BorrowedFd<'_>,
    src_off: &mut i64,
    dst: BorrowedFd<'_>,
    dst_off: &mut i64,
    len: usize,
) -> io::Result<usize> {
    // SAFETY: the offsets point to valid i64s owned by the caller.
    check_ssize(unsafe {
        libc::copy_file_range(src.as_raw_fd(), src_off, dst.as_raw_fd(), dst_off, len, 0)
            as libc::ssize_t
    })
}

/// `cachestat(2)` (Linux 6.5): its syscall number, the same on every
/// architecture; the `libc` crate does not name it for x86-64 glibc.
const SYS_CACHESTAT: libc::c_long = 451;

/// How many pages of `[offset, offset + len)` of `fd`'s file sit in the
/// page cache (`cachestat`; no I/O, no read-ahead). ENOSYS on kernels
/// before 6.5.
pub fn cached_pages(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = Range { off: offset, len };
    let mut st = Stat::default();
    // SAFETY: both structs match the kernel's `cachestat_range` and
    // `cachestat` layouts and outlive the call; flags must be 0.
    let ret = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const Range,
            &mut st as *mut Stat,
            0u32,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.nr_cache)
}

/// Whether the page at `offset` of `fd`'s file is in the page cache, for
/// callers `cachestat` refuses (it answers only for files the caller owns
/// or may write). It reads that page with `RWF_NOWAIT`, which fails with
/// EAGAIN rather than wait for the disk. A miss still starts a read of the
/// page (the kernel's read-ahead runs before the no-wait check), so `fd`
/// should be opened for this alone and marked `POSIX_FADV_RANDOM`: the miss
/// then costs one page of I/O and one cached page, not a read-ahead window.
/// A page past the end of the file counts as cached (nothing to read).
pub fn page_cached(fd: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let mut page = [0u8; 4096];
    let iov = libc::iovec {
        iov_base: page.as_mut_ptr().cast(),
        iov_len: page.len(),
    };
    // SAFETY: one iovec describing `page`, writable for its whole length
    // and alive across the call.
    let n = unsafe {
        libc::preadv2(
            fd.as_raw_fd(),
            &iov,
            1,
            offset as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    if n >= 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EAGAIN) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// `pread` into `buf`.
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: buf is writable for buf.len() bytes.
    check_ssize(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    })
}

/// `pwrite` from `buf`.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: buf is readable for buf.len() bytes.
    check_ssize(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    })
}

/// `fstatvfs`.
pub fn statvfs(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: st points to writable memory of the right size.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded and filled the struct.
    Ok(unsafe { st.assume_init() })
}

// ---- extended attributes, fd-relative -------------------------------------

/// `struct xattr_args` of getxattrat/setxattrat (Linux 6.13+).
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

#[cfg(target_arch = "x86_64")]
mod xattrat_nr {
    pub const SET: libc::c_long = 463;
    pub const GET: libc::c_long = 464;
    pub const LIST: libc::c_long = 465;
    pub const REMOVE: libc::c_long = 466;
}
#[cfg(not(target_arch = "x86_64"))]
mod xattrat_nr {
    // asm-generic numbering (aarch64, riscv64)
    pub const SET: libc::c_long = 463;
    pub const GET: libc::c_long = 464;
    pub const LIST: libc::c_long = 465;
    pub const REMOVE: libc::c_long = 466;
}

static XATTRAT_MISSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn xattrat_available() -> bool {
    !XATTRAT_MISSING.load(std::sync::atomic::Ordering::Relaxed)
}

fn note_enosys(e: &io::Error) -> bool {
    if e.raw_os_error() == Some(libc::ENOSYS) {
        XATTRAT_MISSING.store(true, std::sync::atomic::Ordering::Relaxed);
        true
    } else {
        false
    }
}

/// Runs `f` on a `/proc/self/fd/N` path naming `dir/name` (an `O_PATH`
/// handle), for kernels without the `*xattrat` calls.
fn with_proc_path<T>(
    dir: BorrowedFd<'_>,
    name: &[u8],
    f: impl FnOnce(&CString) -> io::Result<T>,
) -> io::Result<T> {
    let (holder, fd): (Option<OwnedFd>, RawFd) = if name.is_empty() {
        (None, dir.as_raw_fd())
    } else {
        let o = open_at(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let raw = o.as_raw_fd();
        (Some(o), raw)
    };
    let p = cstr(format!("/proc/self/fd/{fd}").as_bytes())?;
    let r = f(&p);
    drop(holder);
    r
}

/// The path the `*xattrat` calls get for `dir/name`: `.` for `dir` itself.
/// The calls refuse an `O_PATH` fd with `AT_EMPTY_PATH` (EBADF), but a
/// directory's `O_PATH` fd resolves `.` like any other name, without the
/// `/proc/self/fd` walk (the opaque check of every lower directory a cold
/// walk lists goes through here).
fn at_name(name: &[u8]) -> &[u8] {
    if name.is_empty() {
        b"."
    } else {
        name
    }
}

/// Whether `e` came from resolving `.` below the fd: not a directory, or
/// one without search permission. The `/proc/self/fd` path serves those.
/// (A removed directory still resolves `.`: the unit test checks it.)
fn not_a_dir(name: &[u8], e: &io::Error) -> bool {
    name.is_empty() && matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::EACCES))
}

/// Flags of every `*xattrat` call: the object itself, never a symlink's target.
const XATTRAT_FLAGS: u32 = libc::AT_SYMLINK_NOFOLLOW as u32;

/// Reads xattr `key` of `dir/name` (empty name: `dir` itself). `Ok(None)` when absent.
pub fn get_xattr_at(dir: BorrowedFd<'_>, name: &[u8], key: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let k = cstr(key)?;
    let mut buf = vec![0u8; 256];
    loop {
        let r = get_xattr_raw(dir, name, &k, &mut buf);
        match r {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 65536 * 2 => {
                let n = buf.len() * 4;
                buf.resize(n, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

fn get_xattr_raw(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &CString,
    buf: &mut [u8],
) -> io::Result<usize> {
    if xattrat_available() {
        let c = cstr(at_name(name))?;
        let mut args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: buf.len() as u32,
            flags: 0,
        };
        // SAFETY: getxattrat(dfd, path, at_flags, name, args, sizeof args);
        // all pointers are valid for the call, args.value for args.size bytes.
        let r = unsafe {
            libc::syscall(
                xattrat_nr::GET,
                dir.as_raw_fd(),
                c.as_ptr(),
                XATTRAT_FLAGS,
                key.as_ptr(),
                &mut args as *mut XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if !note_enosys(&e) && !not_a_dir(name, &e) {
            return Err(e);
        }
    }
    with_proc_path(dir, name, |p| {
        // SAFETY: p and key are NUL-terminated; buf is writable for its length.
        check_ssize(unsafe {
            libc::getxattr(p.as_ptr(), key.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        })
    })
}

/// Sets xattr `key` on `dir/name`; `flags` as setxattr(2) (XATTR_CREATE/REPLACE).
pub fn set_xattr_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    key: &[u8],
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let k = cstr(key)?;
    if xattrat_available() {
        let c = cstr(at_name(name))?;
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: value.len() as u32,
            flags: flags as u32,
        };
        // SAFETY: setxattrat(dfd, path, at_flags, name, args, sizeof args);
        // args.value is readable for args.size bytes.
        let r = unsafe {
            libc::syscall(
                xattrat_nr::SET,
                dir.as_raw_fd(),
                c.as_ptr(),
                XATTRAT_FLAGS,
                k.as_ptr(),
                &args as *const XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !note_enosys(&e) && !not_a_dir(name, &e) {
            return Err(e);
        }
    }
    with_proc_path(dir, name, |p| {
        // SAFETY: p and k are NUL-terminated; value is readable for its length.
        check(unsafe {
            libc::setxattr(
                p.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        })
        .map(|_| ())
    })
}

/// Sets xattr `key` of the file open (not `O_PATH`) at `fd`: one
/// `fsetxattr`, where [`set_xattr_at`] with an empty name would first try
/// `setxattrat(fd, ".")`, which only directories pass.
pub fn fset_xattr(fd: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: i32) -> io::Result<()> {
    let k = cstr(key)?;
    // SAFETY: fd is open for the call; k is NUL-terminated; value is
    // readable for its length.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(|_| ())
}

/// Removes xattr `key` of `dir/name`.
pub fn remove_xattr_at(dir: BorrowedFd<'_>, name: &[u8], key: &[u8]) -> io::Result<()> {
    let k = cstr(key)?;
    if xattrat_available() {
        let c = cstr(at_name(name))?;
        // SAFETY: removexattrat(dfd, path, at_flags, name); strings NUL-terminated.
        let r = unsafe {
            libc::syscall(
                xattrat_nr::REMOVE,
                dir.as_raw_fd(),
                c.as_ptr(),
                XATTRAT_FLAGS,
                k.as_ptr(),
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if !note_enosys(&e) && !not_a_dir(name, &e) {
            return Err(e);
        }
    }
    with_proc_path(dir, name, |p| {
        // SAFETY: p and k are NUL-terminated.
        check(unsafe { libc::removexattr(p.as_ptr(), k.as_ptr()) }).map(|_| ())
    })
}

/// Lists xattr names of `dir/name` as the raw NUL-separated buffer.
pub fn list_xattr_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match list_xattr_raw(dir, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 65536 * 4 => {
                let n = buf.len() * 4;
                buf.resize(n, 0);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    }
}

fn list_xattr_raw(dir: BorrowedFd<'_>, name: &[u8], buf: &mut [u8]) -> io::Result<usize> {
    if xattrat_available() {
        let c = cstr(at_name(name))?;
        // SAFETY: listxattrat(dfd, path, at_flags, list, size); buf writable.
        let r = unsafe {
            libc::syscall(
                xattrat_nr::LIST,
                dir.as_raw_fd(),
                c.as_ptr(),
                XATTRAT_FLAGS,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if !note_enosys(&e) && !not_a_dir(name, &e) {
            return Err(e);
        }
    }
    with_proc_path(dir, name, |p| {
        // SAFETY: p is NUL-terminated; buf writable for its length.
        check_ssize(unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
    })
}

/// Reads all entries of the directory `dir` (an `O_PATH` or open dir fd):
/// (name, d_ino, d_type), without `.` and `..`.
pub fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, u64, u8)>> {
    let fd = open_at(dir, b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut out = Vec::new();
    // Not zero-filled: clearing 64 KiB on every call costs more than the
    // getdents64 of a small directory (and, in a fresh process, 16 page faults).
    const BUF: usize = 64 * 1024;
    let mut buf: Vec<u8> = Vec::with_capacity(BUF);
    loop {
        buf.clear();
        // SAFETY: the pointer is valid for BUF writable bytes (the capacity);
        // getdents64 writes whole records and returns how many bytes it wrote.
        let n =
            unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), BUF) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        let n = (n as usize).min(BUF);
        // SAFETY: the kernel initialised the first n bytes (n <= capacity).
        unsafe { buf.set_len(n) };
        let mut pos = 0usize;
        while pos + 19 <= n {
            // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name...
            let ino = u64::from_ne_bytes(buf[pos..pos + 8].try_into().unwrap_or([0; 8]));
            let reclen = u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]) as usize;
            let dtype = buf[pos + 18];
            if reclen == 0 || pos + reclen > n {
                break;
            }
            let name_bytes = &buf[pos + 19..pos + reclen];
            let end = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = &name_bytes[..end];
            if name != b"." && name != b".." {
                out.push((name.to_vec(), ino, dtype));
            }
            pos += reclen;
        }
    }
    Ok(out)
}

/// Converts an owned fd into a `File`.
pub fn into_file(fd: OwnedFd) -> File {
    File::from(fd)
}

/// `geteuid()`.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The daemon's effective group id.
pub fn egid() -> u32 {
    // SAFETY: getegid cannot fail.
    unsafe { libc::getegid() }
}

/// What the kernel's set-id clearing looks at in a caller, read from
/// `/proc/PID/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallerCreds {
    /// `CAP_FSETID` is in the effective set.
    pub cap_fsetid: bool,
    /// Filesystem group id.
    pub fsgid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl CallerCreds {
    /// The caller is in group `gid` or has `CAP_FSETID` (the kernel's
    /// `in_group_or_capable`).
    pub fn in_group_or_capable(&self, gid: u32) -> bool {
        self.cap_fsetid || self.fsgid == gid || self.groups.contains(&gid)
    }
}

/// The credentials of process `pid`; `None` when they cannot be read (the
/// caller then counts as unprivileged and outside every group: set-id bits
/// are cleared, the safe side).
pub fn caller_creds(pid: u32) -> Option<CallerCreds> {
    const CAP_FSETID: u32 = 4;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut c = CallerCreds::default();
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("CapEff:") {
            c.cap_fsetid = u64::from_str_radix(v.trim(), 16).ok()? >> CAP_FSETID & 1 == 1;
        } else if let Some(v) = line.strip_prefix("Gid:") {
            c.fsgid = v.split_whitespace().nth(3)?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Groups:") {
            c.groups = v
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect();
        }
    }
    Some(c)
}

/// `struct __user_cap_header_struct` of capget(2)/capset(2).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two of them.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;
const CAP_FSETID_BIT: u32 = 1 << 4;

/// capget or capset on the calling thread.
fn cap_call(nr: libc::c_long, data: &mut [CapData; 2]) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: the header and the two data structs are the kernel's
    // version-3 layout and live across the call; pid 0 is this thread.
    check(unsafe {
        libc::syscall(nr, &mut hdr as *mut CapHeader, data.as_mut_ptr()) as libc::c_int
    })
    .map(|_| ())
}

/// Runs `f` with `CAP_FSETID` dropped from the calling thread's effective
/// set, then raises it again (capabilities are per thread). Without the
/// capability in the effective set (an unprivileged daemon) `f` just runs.
/// One capget and two capset calls, on every passthrough open: the `caps`
/// crate used before made five capget calls for the same.
pub fn without_fsetid<T>(f: impl FnOnce() -> T) -> T {
    let mut data = [CapData::default(); 2];
    let dropped = cap_call(libc::SYS_capget, &mut data).is_ok()
        && data[0].effective & CAP_FSETID_BIT != 0
        && {
            data[0].effective &= !CAP_FSETID_BIT;
            cap_call(libc::SYS_capset, &mut data).is_ok()
        };
    let out = f();
    if dropped {
        data[0].effective |= CAP_FSETID_BIT;
        if let Err(e) = cap_call(libc::SYS_capset, &mut data) {
            tracing::warn!("could not raise CAP_FSETID again: {e}");
        }
    }
    out
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (directory handles are cached).
pub fn raise_nofile_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid rlimit struct for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// Forks the process; returns `Ok(Some(child_pid))` in the parent, `Ok(None)` in the child.
/// Only call while the process has a single thread.
pub fn fork() -> io::Result<Option<i32>> {
    // SAFETY: callers fork before starting any thread, so the child is a
    // complete copy with no lock held by another thread.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else if pid == 0 {
        Ok(None)
    } else {
        Ok(Some(pid))
    }
}

/// `setsid()`.
pub fn setsid() {
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe {
        libc::setsid();
    }
}

/// Redirects stdin/stdout (and stderr unless `keep_stderr`) to /dev/null.
pub fn detach_stdio_keep(keep_stderr: bool) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let last = if keep_stderr { 2 } else { 3 };
        for target in 0..last {
            // SAFETY: dup2 onto the standard descriptors; null stays valid.
            unsafe {
                libc::dup2(null.as_raw_fd(), target);
            }
        }
    }
}

/// Blocks SIGTERM/SIGINT/SIGHUP in the calling thread (inherited by threads
/// spawned afterwards) so one thread can wait for them with [`wait_signal`].
pub fn block_term_signals() -> libc::sigset_t {
    // SAFETY: the sigset is initialised by sigemptyset before use.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Unblocks the signals in `set` in the calling thread.
pub fn unblock_signals(set: &libc::sigset_t) {
    // SAFETY: set is a valid initialised sigset.
    unsafe {
        libc::pthread_sigmask(libc::SIG_UNBLOCK, set, std::ptr::null_mut());
    }
}

/// Waits for one of the signals in `set` (blocked beforehand).
pub fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: set is a valid initialised sigset; sig is writable.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
    sig
}

/// A concurrent map sharded for this machine's CPUs. `DashMap::new` asks
/// `std::thread::available_parallelism`, which reads several cgroup files
/// (about a tenth of a millisecond, a few percent of a mount); the CPU
/// affinity mask gives the count in one system call.
pub fn new_map<K: Eq + std::hash::Hash, V>() -> dashmap::DashMap<K, V> {
    static SHARDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let shards = *SHARDS.get_or_init(|| {
        let cpus = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| {
                (0..nix::sched::CpuSet::count())
                    .filter(|&i| set.is_set(i).unwrap_or(false))
                    .count()
            })
            .unwrap_or(1);
        // A power of two of at least 2, as DashMap requires (it panics otherwise).
        (cpus.max(1) * 4).next_power_of_two().max(2)
    });
    dashmap::DashMap::with_shard_amount(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_of_the_fd_itself_work_for_directories_and_files() {
        use std::os::fd::AsFd;
        let t = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(t.path().join("d")).expect("mkdir");
        std::fs::write(t.path().join("f"), b"x").expect("write");
        // A removed directory keeps its xattrs while an fd holds it.
        std::fs::create_dir(t.path().join("gone")).expect("mkdir");
        let gone = open_dir_path(&t.path().join("gone")).expect("O_PATH fd");
        set_xattr_at(gone.as_fd(), b"", b"user.g", b"v", 0).expect("set");
        std::fs::remove_dir(t.path().join("gone")).expect("rmdir");
        assert_eq!(
            get_xattr_at(gone.as_fd(), b"", b"user.g").expect("get on a removed directory"),
            Some(b"v".to_vec())
        );
        // A file open for real (not O_PATH) takes fset_xattr.
        let file = std::fs::File::open(t.path().join("f")).expect("open");
        fset_xattr(file.as_fd(), b"user.m", b"", 0).expect("fsetxattr");
        let dir = open_dir_path(t.path()).expect("dir");
        assert_eq!(
            get_xattr_at(dir.as_fd(), b"f", b"user.m").expect("get by name"),
            Some(Vec::new())
        );
        for name in ["d", "f"] {
            let fd = open_dir_path(t.path())
                .and_then(|dir| {
                    open_at(
                        dir.as_fd(),
                        name.as_bytes(),
                        libc::O_PATH | libc::O_NOFOLLOW,
                        0,
                    )
                })
                .expect("O_PATH fd");
            let fd = fd.as_fd();
            set_xattr_at(fd, b"", b"user.k", b"v1", 0).expect("set");
            assert_eq!(
                get_xattr_at(fd, b"", b"user.k").expect("get"),
                Some(b"v1".to_vec()),
                "{name}"
            );
            let list = list_xattr_at(fd, b"").expect("list");
            assert!(
                list.split(|&b| b == 0).any(|k| k == b"user.k"),
                "{name}: {list:?}"
            );
            remove_xattr_at(fd, b"", b"user.k").expect("remove");
            assert_eq!(
                get_xattr_at(fd, b"", b"user.k").expect("get"),
                None,
                "{name}"
            );
            // The same through the parent and the name.
            let dir = open_dir_path(t.path()).expect("dir");
            set_xattr_at(dir.as_fd(), name.as_bytes(), b"user.j", b"v2", 0).expect("set by name");
            assert_eq!(
                get_xattr_at(fd, b"", b"user.j").expect("get"),
                Some(b"v2".to_vec()),
                "{name}"
            );
        }
    }

    fn fsetid_effective() -> bool {
        let mut data = [CapData::default(); 2];
        cap_call(libc::SYS_capget, &mut data).expect("capget of this thread");
        data[0].effective & CAP_FSETID_BIT != 0
    }

    #[test]
    fn without_fsetid_drops_and_restores_the_capability() {
        let before = fsetid_effective();
        let inside = without_fsetid(fsetid_effective);
        assert!(!inside, "CAP_FSETID still effective inside without_fsetid");
        assert_eq!(
            fsetid_effective(),
            before,
            "CAP_FSETID not restored after without_fsetid"
        );
        if euid() == 0 {
            assert!(
                before,
                "root without CAP_FSETID: run the tests as real root"
            );
        }
    }
}
