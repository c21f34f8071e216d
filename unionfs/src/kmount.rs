//! Making and removing the kernel side of a FUSE mount.
//!
//! fuser can mount by itself, but when its session ends it unmounts the
//! mount point *by path* even if the filesystem was already unmounted from
//! outside (`fusermount3 -u`, `umount`). If someone mounted something new at
//! the same path in between, that new mount is detached. We therefore mount
//! here, hand the `/dev/fuse` descriptor to [`fuser::Session::from_fd`], and
//! unmount only while our own connection is still alive.
//!
//! As root the mount is made with mount(2); otherwise (or when mount(2) says
//! EPERM) through the set-uid `fusermount3`, which passes the connected
//! descriptor back over a unix socket (`_FUSE_COMMFD`), as libfuse does.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::MsFlags;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};

/// What to mount: the parts of the mount that the kernel sees.
#[derive(Debug, Clone, Default)]
pub struct KernelOptions {
    /// Source shown in /proc/mounts.
    pub fsname: String,
    /// Subtype (`fuse.SUBTYPE`).
    pub subtype: String,
    /// Let users other than the mounter in.
    pub allow_other: bool,
    /// Kernel permission checks from the mode bits.
    pub default_permissions: bool,
    /// Read-only mount.
    pub read_only: bool,
    /// Allow device nodes (default: nodev).
    pub dev: bool,
    /// Honour set-uid bits (default: nosuid).
    pub suid: bool,
    /// `noexec`.
    pub noexec: bool,
    /// `noatime`.
    pub noatime: bool,
    /// `sync`.
    pub sync: bool,
    /// `dirsync`.
    pub dirsync: bool,
}

impl KernelOptions {
    fn flags(&self) -> MsFlags {
        let mut f = MsFlags::empty();
        if !self.dev {
            f |= MsFlags::MS_NODEV;
        }
        if !self.suid {
            f |= MsFlags::MS_NOSUID;
        }
        for (on, flag) in [
            (self.read_only, MsFlags::MS_RDONLY),
            (self.noexec, MsFlags::MS_NOEXEC),
            (self.noatime, MsFlags::MS_NOATIME),
            (self.sync, MsFlags::MS_SYNCHRONOUS),
            (self.dirsync, MsFlags::MS_DIRSYNC),
        ] {
            if on {
                f |= flag;
            }
        }
        f
    }

    /// The `-o` string for fusermount3 (flags spelled out, as it parses them).
    fn fusermount_string(&self) -> String {
        let mut o = vec![
            format!("fsname={}", escape(&self.fsname)),
            format!("subtype={}", escape(&self.subtype)),
        ];
        let words = [
            (self.allow_other, "allow_other"),
            (self.default_permissions, "default_permissions"),
            (self.read_only, "ro"),
            (!self.dev, "nodev"),
            (self.dev, "dev"),
            (!self.suid, "nosuid"),
            (self.suid, "suid"),
            (self.noexec, "noexec"),
            (self.noatime, "noatime"),
            (self.sync, "sync"),
            (self.dirsync, "dirsync"),
        ];
        o.extend(words.iter().filter(|w| w.0).map(|w| w.1.to_string()));
        o.join(",")
    }
}

/// Commas and backslashes in option values are escaped for fusermount3.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace(',', "\\,")
}

/// A live kernel mount made by [`mount`].
#[derive(Debug)]
pub struct KernelMount {
    mountpoint: PathBuf,
    /// A duplicate of the session's `/dev/fuse` descriptor: polling it tells
    /// whether our connection still exists.
    probe: OwnedFd,
    via_fusermount: bool,
    /// Told when we unmount, so parked workers end at once.
    relay: std::sync::OnceLock<std::sync::Arc<crate::relay::Relay>>,
}

/// Mounts a FUSE filesystem at `mountpoint` and returns the connected
/// `/dev/fuse` descriptor (for [`fuser::Session::from_fd`]) and the mount.
pub fn mount(mountpoint: &Path, opts: &KernelOptions) -> io::Result<(OwnedFd, KernelMount)> {
    let mountpoint = mountpoint.canonicalize()?;
    let (fd, via_fusermount) = match mount_sys(&mountpoint, opts) {
        Ok(fd) => (fd, false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            (mount_fusermount(&mountpoint, opts)?, true)
        }
        Err(e) => return Err(e),
    };
    let probe = fd.try_clone()?;
    Ok((
        fd,
        KernelMount {
            mountpoint,
            probe,
            via_fusermount,
            relay: std::sync::OnceLock::new(),
        },
    ))
}

fn mount_sys(mountpoint: &Path, opts: &KernelOptions) -> io::Result<OwnedFd> {
    if nix::unistd::geteuid().as_raw() != 0 {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    let rootmode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| io::Error::new(e.kind(), format!("opening /dev/fuse: {e}")))?;
    let fd = OwnedFd::from(dev);
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        fd.as_raw_fd(),
        rootmode,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    if opts.default_permissions {
        data.push_str(",default_permissions");
    }
    let fstype = format!("fuse.{}", opts.subtype);
    nix::mount::mount(
        Some(opts.fsname.as_str()),
        mountpoint,
        Some(fstype.as_str()),
        opts.flags(),
        Some(data.as_str()),
    )
    .map_err(io::Error::from)?;
    Ok(fd)
}

fn mount_fusermount(mountpoint: &Path, opts: &KernelOptions) -> io::Result<OwnedFd> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let their_raw: RawFd = theirs.as_raw_fd();
    let mut cmd = Command::new(fusermount_bin());
    cmd.arg("-o")
        .arg(opts.fusermount_string())
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", their_raw.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(their_raw, libc::F_GETFD);
            if flags < 0 || libc::fcntl(their_raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("running fusermount3 (package fuse3) to mount as an ordinary user: {e}"),
        )
    })?;
    drop(theirs);
    let received = receive_fd(&ours);
    let out = child.wait_with_output()?;
    match received {
        Ok(fd) if out.status.success() => Ok(fd),
        _ => {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                if msg.is_empty() {
                    format!("fusermount3 failed ({})", out.status)
                } else {
                    msg
                },
            ))
        }
    }
}

fn fusermount_bin() -> OsString {
    std::env::var_os("FUSERMOUNT_PATH").unwrap_or_else(|| "fusermount3".into())
}

fn receive_fd(sock: &OwnedFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut got = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: SCM_RIGHTS hands us fresh descriptors we now own.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if got.is_none() {
                    got = Some(owned);
                }
            }
        }
    }
    got.ok_or_else(|| io::Error::other("fusermount3 sent no /dev/fuse descriptor"))
}

impl KernelMount {
    /// Whether our connection still exists (the kernel sets POLLERR on the
    /// device once the filesystem is unmounted or the connection aborted).
    pub fn connected(&self) -> bool {
        let mut fds = [PollFd::new(self.probe.as_fd(), PollFlags::empty())];
        loop {
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(0) => return true,
                Ok(_) => {
                    return !fds[0]
                        .revents()
                        .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL))
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Unmounts, unless the filesystem is already gone (then a mount made
    /// since at the same path is left alone). `lazy` detaches a busy mount.
    pub fn unmount(&self, lazy: bool) -> io::Result<()> {
        if !self.connected() {
            return Ok(());
        }
        let flags = if lazy {
            nix::mount::MntFlags::MNT_DETACH
        } else {
            nix::mount::MntFlags::empty()
        };
        let res = match nix::mount::umount2(&self.mountpoint, flags) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EPERM) if self.via_fusermount || !is_root() => {
                self.fusermount_unmount(lazy)
            }
            Err(e) => Err(io::Error::new(
                io::Error::from(e).kind(),
                format!("unmounting {}: {e}", self.mountpoint.display()),
            )),
        };
        if res.is_ok() {
            if let Some(r) = self.relay.get() {
                r.close();
            }
        }
        res
    }

    /// Registers the connection's relay, closed when we unmount.
    pub fn on_unmount(&self, relay: std::sync::Arc<crate::relay::Relay>) {
        let _ = self.relay.set(relay);
    }

    fn fusermount_unmount(&self, lazy: bool) -> io::Result<()> {
        let mut cmd = Command::new(fusermount_bin());
        cmd.arg("-u").arg("-q");
        if lazy {
            cmd.arg("-z");
        }
        let out = cmd
            .arg("--")
            .arg(std::ffi::OsStr::from_bytes(
                self.mountpoint.as_os_str().as_bytes(),
            ))
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() || !self.connected() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "fusermount3 -u {}: {}",
                self.mountpoint.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().as_raw() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusermount_options_escape_and_defaults() {
        let o = KernelOptions {
            fsname: "a,b".into(),
            subtype: "unionfs".into(),
            allow_other: true,
            read_only: true,
            ..Default::default()
        };
        assert_eq!(
            o.fusermount_string(),
            "fsname=a\\,b,subtype=unionfs,allow_other,ro,nodev,nosuid"
        );
        let f = o.flags();
        assert!(f.contains(MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_RDONLY));
    }
}
