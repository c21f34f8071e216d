//! Every `unsafe` system call the launcher makes, behind small named wrappers.
//!
//! Each wrapper states why its use is sound. Nothing else in the crate uses
//! `unsafe`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// Arguments for [`clone_exec`], prepared before the clone so the child
/// allocates nothing.
pub struct ExecImage {
    /// The program to execute.
    pub path: CString,
    /// Its argv.
    pub argv: Vec<CString>,
    /// Its environment.
    pub envp: Vec<CString>,
    /// File descriptors to place at 3, 4, ... in the child, in order.
    pub fds: Vec<RawFd>,
    /// Descriptors to place at 0, 1, 2.
    pub stdio: [RawFd; 3],
}

/// Clone a child into new namespaces (`flags`) that immediately executes
/// `image`, with SIGKILL as its parent-death signal.
///
/// The child only performs async-signal-safe system calls (dup2, prctl,
/// execve, _exit) on pointers prepared here, so cloning from a
/// multi-threaded process is sound.
pub fn clone_exec(flags: CloneFlags, image: &ExecImage) -> nix::Result<Pid> {
    let mut argv: Vec<*const libc::c_char> = image.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = image.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let path = image.path.as_ptr();
    let fds = image.fds.clone();
    let stdio = image.stdio;
    let mut stack = vec![0u8; 256 * 1024];
    let cb = Box::new(move || -> isize {
        // SAFETY: only raw async-signal-safe syscalls on data prepared
        // before the clone; the child never returns into Rust code that
        // could touch locks held by other threads of the parent.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            // Move the wanted descriptors to high numbers first so the
            // later dup2 calls cannot clobber one another.
            let mut high = [0 as RawFd; 16];
            let n = fds.len().min(13);
            for (i, fd) in fds.iter().take(n).enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 1000);
            }
            let mut std_high = [0 as RawFd; 3];
            for (i, fd) in stdio.iter().enumerate() {
                std_high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 1000);
            }
            for (i, fd) in std_high.iter().enumerate() {
                libc::dup2(*fd, i as RawFd);
            }
            for (i, fd) in high.iter().take(n).enumerate() {
                libc::dup2(*fd, 3 + i as RawFd);
            }
            libc::execve(path, argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    });
    // SAFETY: the stack outlives the call (clone without CLONE_VM copies the
    // address space, so the child has its own copy) and the callback only
    // does async-signal-safe work, see above.
    unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }
}

/// Bring the loopback interface of the current network namespace up.
pub fn loopback_up() -> nix::Result<()> {
    // SAFETY: socket/ioctl on a zeroed ifreq with a NUL-terminated name; the
    // socket is closed on every path.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(Errno::last());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if rc == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        let err = Errno::last();
        libc::close(sock);
        if rc < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// Make `fd` (a terminal) the controlling terminal of this session.
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument, no pointers.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(rc).map(drop)
}

/// Set the window size of terminal `fd`.
pub fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    Errno::result(rc).map(drop)
}

/// The window size of terminal `fd` as (rows, cols).
pub fn get_winsize(fd: BorrowedFd<'_>) -> nix::Result<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes a winsize struct we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        let rc = libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws);
        Errno::result(rc).map(|_| (ws.ws_row, ws.ws_col))
    }
}

/// Fork the current process. Only used by single-threaded processes (the
/// container init and `strata exec` before they start any thread).
pub fn fork_single_threaded() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: callers are single-threaded (documented above), so the child
    // cannot inherit locks held by other threads.
    unsafe { nix::unistd::fork() }
}

/// Set an environment variable in this process before any thread exists.
pub fn set_env_single_threaded(key: &str, value: &str) {
    // SAFETY: called by the single-threaded init only.
    unsafe { std::env::set_var(key, value) }
}

/// Install the process-wide signal disposition `handler` for `sig`.
pub fn set_signal(sig: nix::sys::signal::Signal, handler: nix::sys::signal::SigHandler) {
    let action = nix::sys::signal::SigAction::new(
        handler,
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handlers used are SigDfl, SigIgn or functions that only
    // store to an atomic.
    let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
}

/// Wrap a raw descriptor the caller owns.
pub fn owned_fd(fd: RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: callers pass descriptors handed to this process at a known
    // number (3, 4) by its parent, owned by nobody else.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Whether a process with this pid exists (signal 0 succeeds).
pub fn pid_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
}

/// Borrow a raw descriptor number for one call.
pub fn borrow_fd(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: used only for fcntl/ioctl on numbers this process was handed
    // or listed in /proc/self/fd; a closed number yields EBADF, never
    // memory unsafety.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// `dup2(old, new)` on raw numbers (the container's stdio set-up, where
/// the target numbers 0-4 are fixed by convention).
pub fn dup2_raw(old: RawFd, new: RawFd) -> nix::Result<()> {
    // SAFETY: dup2 only manipulates the descriptor table; no memory is
    // shared with Rust objects (a File owning `new` keeps a valid number).
    let rc = unsafe { libc::dup2(old, new) };
    Errno::result(rc).map(drop)
}

/// seccomp(SECCOMP_SET_MODE_FILTER) of one compiled program, without
/// touching no_new_privs (the caller holds CAP_SYS_ADMIN instead).
pub fn install_seccomp(program: &[seccompiler::sock_filter]) -> std::io::Result<()> {
    if program.is_empty() {
        return Ok(());
    }
    let len = u16::try_from(program.len())
        .map_err(|_| std::io::Error::other("seccomp program longer than 65535 instructions"))?;
    let prog = libc::sock_fprog {
        len,
        // seccompiler's sock_filter is #[repr(C)] with the kernel's layout
        // (u16 code, u8 jt, u8 jf, u32 k), the same as libc's.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `len` valid instructions that outlive the
    // call; the kernel copies them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
