//! FUSE glue: the `fuser::Filesystem` implementation over [`Union`].
//!
//! Hot paths (lookup, getattr, read) take no global lock: nodes live in a
//! sharded map, each node has its own lock, open files are in another
//! sharded map. Entries that come only from immutable lowers get long
//! kernel cache lifetimes and `keep_cache`; everything in the upper gets a
//! short one. File data goes through FUSE passthrough when the kernel and
//! privileges allow it, else through the page cache (writeback cache on).
//! OPENDIR is left unimplemented so the kernel caches every directory
//! listing and sends no OPENDIR/RELEASEDIR; readdir positions are stateless
//! name-hash cookies (see [`Listing`]).

use std::ffi::OsStr;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner,
    Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::inode::{Backing, Node, UpperRef, ROOT_INO};
use crate::latency::BusyLatency;
use crate::layer::{is_private_xattr, EntryKind, LayerAttr, LayerData};
use crate::lookahead::{read_into, PageBuf, ReadState, Served};
use crate::relay::Relay;
use crate::sys::{self, Time};
use crate::union::{errno, DirEnt, Listing, Res, Union};
use crate::whiteout;

/// TTL for entries that come only from immutable lowers.
const TTL_LOWER: Duration = Duration::from_secs(24 * 3600);
/// TTL for entries touched by the upper.
const TTL_UPPER: Duration = Duration::from_secs(1);
/// Longest wait for the kernel to drop an entry (see
/// `UnionFs::invalidate_names_later`).
const INVAL_WAIT: Duration = Duration::from_millis(100);

enum Handle {
    File {
        node: Arc<Node>,
        file: Arc<File>,
        upper: bool,
        backing: bool,
        /// State of reads without passthrough (see [`ReadState`]).
        read: Arc<ReadState>,
    },
    Inline {
        data: Arc<[u8]>,
    },
}

/// Speed-related switches.
#[derive(Clone, Debug)]
pub struct FsTuning {
    /// Try FUSE passthrough (needs root in the initial user namespace).
    pub passthrough: bool,
    /// Use the writeback cache when passthrough is off.
    pub writeback: bool,
    /// Serve sequential READs of uncached lower data with `O_DIRECT`
    /// (see `lookahead::ReadState::serve`).
    pub lower_direct: bool,
    /// Ask the kernel for POSIX ACL support.
    pub posix_acl: bool,
    /// Hold a zero CPU wake-up latency request while requests arrive
    /// (see [`crate::latency`]).
    pub cpu_latency: bool,
}

/// Names the kernel was given for a non-directory with more than one link.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LinkNames {
    /// Only this one so far: (parent inode, hash of the name).
    One(u64, u64),
    /// Several.
    Many,
}

/// The FUSE filesystem.
pub struct UnionFs {
    u: Arc<Union>,
    handles: DashMap<u64, Handle>,
    next_fh: AtomicU64,
    tuning: FsTuning,
    passthrough: AtomicBool,
    writeback: AtomicBool,
    /// FUSE_HANDLE_KILLPRIV_V2 is on: the daemon clears set-user-ID and
    /// set-group-ID bits after writes and truncates by callers without
    /// CAP_FSETID, and the kernel stops asking for `security.capability`
    /// before every write (see [`UnionFs::init`]).
    killpriv: AtomicBool,
    /// Keeps idle CPUs polling while requests arrive (`cpu_latency=on`).
    latency: Option<BusyLatency>,
    /// Per hard-linked node (by inode number, while the kernel knows it):
    /// the names it was shown under (see [`UnionFs::entry_ttl`]).
    link_names: DashMap<u64, LinkNames>,
    /// Key of the name hashes in `link_names`.
    name_key: RandomState,
    /// Sends cache invalidations to the kernel; set once the session exists.
    notifier: Arc<OnceLock<Notifier>>,
    /// Which worker reads next (see [`crate::relay`]); set once mounted.
    relay: Arc<OnceLock<Arc<Relay>>>,
    /// Directories whose attributes the kernel got with the long lifetime
    /// of immutable lowers (see [`UnionFs::refresh_copied_up`]).
    lower_ttl_dirs: DashMap<u64, ()>,
}

fn to_time((s, ns): (i64, i64)) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, ns.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(ns.max(0) as u64)
    }
}

fn ftype(k: EntryKind) -> FileType {
    match k {
        EntryKind::Dir => FileType::Directory,
        EntryKind::File => FileType::RegularFile,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::CharDev | EntryKind::Whiteout => FileType::CharDevice,
        EntryKind::BlockDev => FileType::BlockDevice,
        EntryKind::Fifo => FileType::NamedPipe,
        EntryKind::Socket => FileType::Socket,
    }
}

fn time_arg(t: Option<TimeOrNow>) -> Time {
    match t {
        None => Time::Omit,
        Some(TimeOrNow::Now) => Time::Now,
        Some(TimeOrNow::SpecificTime(st)) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => Time::At(d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                Time::At(-(d.as_secs() as i64), 0)
            }
        },
    }
}

/// Set-user-ID or set-group-ID: such a file's writes must reach the
/// daemon, which clears the bits (see `UnionFs::init`).
fn is_setid(mode: u32) -> bool {
    mode & (libc::S_ISUID | libc::S_ISGID) != 0
}

/// `mode`'s permission bits after a data change by `caller` to a file of
/// group `gid`, as the kernel clears them (`setattr_should_drop_suidgid`):
/// set-user-ID unless the caller has CAP_FSETID; set-group-ID when group
/// execute is set, or when the caller is neither in the group nor
/// CAP_FSETID-capable. `caller` `None`: unknown, cleared.
fn after_data_change(mode: u32, gid: u32, caller: Option<&sys::CallerCreds>) -> u32 {
    let mut m = mode & 0o7777;
    let fsetid = caller.is_some_and(|c| c.cap_fsetid);
    if !fsetid {
        m &= !libc::S_ISUID;
    }
    if m & libc::S_ISGID != 0
        && !fsetid
        && (m & libc::S_IXGRP != 0 || !caller.is_some_and(|c| c.in_group_or_capable(gid)))
    {
        m &= !libc::S_ISGID;
    }
    m
}

fn e(err: i32) -> Errno {
    Errno::from_i32(err)
}

fn is_enoent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

fn check_name(name: &[u8]) -> Res<()> {
    if name.len() > 255 {
        return Err(libc::ENAMETOOLONG);
    }
    Ok(())
}

/// Names users may not create: they would read as whiteouts.
fn check_new_name(name: &[u8]) -> Res<()> {
    check_name(name)?;
    if name.starts_with(whiteout::WH_PREFIX) {
        return Err(libc::EINVAL);
    }
    Ok(())
}

impl UnionFs {
    /// Wraps a union for FUSE.
    pub fn new(u: Arc<Union>, tuning: FsTuning) -> UnionFs {
        opstats_init();
        let latency = tuning.cpu_latency.then(BusyLatency::new);
        UnionFs {
            u,
            handles: sys::new_map(),
            next_fh: AtomicU64::new(1),
            tuning,
            passthrough: AtomicBool::new(false),
            writeback: AtomicBool::new(false),
            killpriv: AtomicBool::new(false),
            latency,
            link_names: sys::new_map(),
            name_key: RandomState::new(),
            notifier: Arc::new(OnceLock::new()),
            relay: Arc::new(OnceLock::new()),
            lower_ttl_dirs: sys::new_map(),
        }
    }

    /// Where the mount puts the connection's request relay.
    pub(crate) fn relay_slot(&self) -> Arc<OnceLock<Arc<Relay>>> {
        self.relay.clone()
    }

    /// Where the mount code puts the session's [`Notifier`], once the
    /// session exists (the filesystem is moved into it before that).
    pub(crate) fn notifier_slot(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }

    fn fattr(&self, a: &LayerAttr) -> FileAttr {
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.blocks,
            atime: to_time(a.atime),
            mtime: to_time(a.mtime),
            ctime: to_time(a.ctime),
            crtime: UNIX_EPOCH,
            kind: ftype(a.kind),
            perm: (a.perm & 0o7777) as u16,
            nlink: a.nlink,
            uid: self.u.opts.uids.to_view(a.uid),
            gid: self.u.opts.gids.to_view(a.gid),
            rdev: a.rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Kernel cache lifetime of the attributes of `node`.
    fn ttl(&self, node: &Node, attr: &LayerAttr) -> Duration {
        if node.kind != EntryKind::Dir
            && attr.nlink > 1
            && self.link_names.get(&node.ino).as_deref() == Some(&LinkNames::Many)
        {
            Duration::ZERO
        } else if node.state.read().lower_only() {
            if node.kind == EntryKind::Dir {
                self.lower_ttl_dirs.insert(node.ino, ());
            }
            TTL_LOWER
        } else {
            TTL_UPPER
        }
    }

    /// After a change below directory `ino` (or to `ino` itself): the
    /// kernel drops the attributes of `ino` and of its ancestors that it got
    /// as immutable lower directories (long lifetime) and that have been
    /// copied up since, as a side effect (a copy-up changes a directory's
    /// link count, size and times). Sent before the change is answered; an
    /// attribute-only inode invalidation takes no lock a request holds.
    fn refresh_copied_up(&self, ino: u64) {
        let Some(notifier) = self.notifier.get() else {
            return;
        };
        let mut cur = self.u.node(ino).ok();
        while let Some(n) = cur {
            let st = n.state.read();
            if !st.lower_only() && self.lower_ttl_dirs.remove(&n.ino).is_some() {
                // ENOENT: the kernel no longer has the inode.
                let _ = notifier.inval_inode(INodeNo(n.ino), -1, 0);
            }
            cur = st.parent.clone();
        }
    }

    /// [`UnionFs::refresh_copied_up`] for each of `inos`, passing `res` on.
    /// A failed change may still have changed them (a copy-up, or what
    /// overlayfs also does before failing) while the kernel, which marks
    /// the directories of a successful change stale itself, keeps their
    /// attributes: it drops them.
    fn changed<T>(&self, inos: &[u64], res: Res<T>) -> Res<T> {
        for &ino in inos {
            if res.is_err() {
                if let Some(n) = self.notifier.get() {
                    // ENOENT: the kernel no longer has the inode.
                    let _ = n.inval_inode(INodeNo(ino), -1, 0);
                }
            }
            self.refresh_copied_up(ino);
        }
        res
    }

    /// Kernel cache lifetime of the entry `parent/name` for `node` (and of
    /// its attributes), recording the name of a hard-linked node.
    ///
    /// Which name of a hard-linked file a later setattr or write-open means
    /// (and so copies up) is the last one the kernel looked up, so once the
    /// kernel knows two names of one node it must look every path up again:
    /// such entries get no cache lifetime, and the first name's entry,
    /// given out with a long one, is invalidated. A node shown under one
    /// name only (the usual case: a lower file whose other links are in
    /// other layers or outside the union) keeps the long lifetimes.
    fn entry_ttl(&self, parent: u64, name: &[u8], node: &Node, attr: &LayerAttr) -> Duration {
        if node.kind == EntryKind::Dir || attr.nlink <= 1 {
            return self.ttl(node, attr);
        }
        let this = LinkNames::One(parent, self.name_key.hash_one(name));
        let first = match self.link_names.entry(node.ino) {
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(this);
                None
            }
            dashmap::mapref::entry::Entry::Occupied(mut o) => match *o.get() {
                LinkNames::Many => return Duration::ZERO,
                seen if seen == this => None,
                LinkNames::One(first_parent, _) => {
                    o.insert(LinkNames::Many);
                    Some(first_parent)
                }
            },
        };
        match first {
            None => self.ttl(node, attr),
            Some(first_parent) => {
                self.invalidate_names_later(first_parent, node.ino, (parent, name));
                Duration::ZERO
            }
        }
    }

    /// Asks the kernel to drop its entries of `parent` that name `ino`,
    /// except `keep`, from another thread: the kernel takes `parent`'s lock
    /// for it, which the caller's request may hold (`parent` is `keep`'s
    /// directory) or another task may hold while it waits for a lock the
    /// request holds. When `parent` is not `keep`'s directory the caller
    /// waits a little for it (usually done in well under a millisecond), so
    /// that the old entry is gone before the request is answered; the wait
    /// is bounded, so a lock cycle only delays.
    fn invalidate_names_later(&self, parent: u64, ino: u64, keep: (u64, &[u8])) {
        let Some(notifier) = self.notifier.get().cloned() else {
            return;
        };
        let Ok(list) = self.u.node(parent).and_then(|p| self.u.listing(&p)) else {
            return;
        };
        let names: Vec<Vec<u8>> = list
            .iter()
            .filter(|d| d.ino == ino && (parent, d.name.as_slice()) != keep)
            .map(|d| d.name.clone())
            .collect();
        if names.is_empty() {
            return;
        }
        let (done, finished) = std::sync::mpsc::sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("unionfs-inval".into())
            .spawn(move || {
                for name in names {
                    // ENOENT: the kernel no longer has that entry.
                    let _ = notifier.inval_entry(INodeNo(parent), OsStr::from_bytes(&name));
                }
                let _ = done.send(());
            });
        match spawned {
            Ok(_) if parent != keep.0 => {
                let _ = finished.recv_timeout(INVAL_WAIT);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!("starting a thread to invalidate kernel entries: {err}"),
        }
    }

    /// Drops the kernel's cached listing of directory `ino` (now under
    /// another parent: its `..` changed). Called before the rename is
    /// answered; an inode invalidation takes no lock the request holds.
    fn invalidate_listing(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            // ENOENT: the kernel has no inode (so no listing) for it.
            let _ = n.inval_inode(INodeNo(ino), 0, 0);
        }
    }

    fn reply_entry(
        &self,
        parent: u64,
        name: &[u8],
        node: &Arc<Node>,
        attr: &LayerAttr,
        reply: ReplyEntry,
    ) {
        node.lookups.fetch_add(1, Ordering::Relaxed);
        let ttl = self.entry_ttl(parent, name, node, attr);
        reply.entry(&ttl, &self.fattr(attr), Generation(0));
    }

    fn child(&self, parent: u64, name: &[u8]) -> Res<(Arc<Node>, Arc<Node>, LayerAttr)> {
        let p = self.u.node(parent)?;
        match self.u.resolve(&p, name)? {
            Some((n, a)) => Ok((p, n, a)),
            None => Err(libc::ENOENT),
        }
    }

    fn new_fh(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.insert(fh, h);
        fh
    }

    fn handle_file(&self, fh: u64) -> Res<(Arc<File>, bool)> {
        match self.handles.get(&fh).as_deref() {
            Some(Handle::File { file, upper, .. }) => Ok((file.clone(), *upper)),
            Some(_) => Err(libc::EBADF),
            None => Err(libc::EBADF),
        }
    }

    /// Prepares `parent/name` for a new object: copies the parent up, checks
    /// the name is free in the union, removes a whiteout. Returns the parent
    /// node, its upper fd, and whether the name existed in the lowers.
    fn prepare_create(
        &self,
        parent: u64,
        name: &[u8],
    ) -> Res<(Arc<Node>, Arc<std::os::fd::OwnedFd>, bool)> {
        check_new_name(name)?;
        let p = self.u.node(parent)?;
        if p.kind != EntryKind::Dir {
            return Err(libc::ENOTDIR);
        }
        let had_upper = p.snapshot().upper_dir().is_some();
        let (found, upper_whiteout) = self.u.resolve_for_create(&p, name)?;
        if found.is_some() {
            return Err(libc::EEXIST);
        }
        let pfd = self.u.ensure_upper_dir(&p)?;
        // The resolve looked in the upper directory only if it was known
        // then; one that ensure_upper_dir just found or made is checked here.
        let had_whiteout =
            (upper_whiteout || !had_upper) && self.u.clear_whiteout(pfd.as_fd(), name)?;
        let below = had_whiteout || self.u.name_in_lowers(&p.snapshot(), name)?;
        Ok((p, pfd, below))
    }

    fn finish_create(&self, p: &Arc<Node>, name: &[u8]) -> Res<(Arc<Node>, LayerAttr)> {
        self.u.invalidate_dir(p.ino);
        match self.u.resolve(p, name)? {
            Some(x) => Ok(x),
            None => Err(libc::EIO),
        }
    }

    fn do_mknod(
        &self,
        req: &Request,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
    ) -> Res<(Arc<Node>, LayerAttr)> {
        let (p, pfd, _below) = self.prepare_create(parent, name)?;
        let fmt = mode & libc::S_IFMT;
        let fmt = if fmt == 0 { libc::S_IFREG } else { fmt };
        if fmt == libc::S_IFCHR && rdev == 0 {
            // A user char 0/0 would read as a whiteout.
            return Err(libc::EPERM);
        }
        sys::mknod_at(pfd.as_fd(), name, fmt | (mode & 0o7777), rdev).map_err(errno)?;
        self.u
            .set_owner(pfd.as_fd(), name, req.uid(), req.gid(), true)?;
        let _ = sys::chmod_at(pfd.as_fd(), name, mode & 0o7777);
        self.finish_create(&p, name)
    }

    fn do_mkdir(
        &self,
        req: &Request,
        parent: u64,
        name: &[u8],
        mode: u32,
    ) -> Res<(Arc<Node>, LayerAttr)> {
        let (p, pfd, below) = self.prepare_create(parent, name)?;
        let up = self.u.upper()?;
        let work = up.work.as_fd();
        let tmp = self.u.tmp_name();
        let res = (|| -> Res<()> {
            sys::mkdir_at(work, &tmp, mode & 0o7777).map_err(errno)?;
            sys::chmod_at(work, &tmp, mode & 0o7777).map_err(errno)?;
            // Like overlayfs: a new directory in a merged parent is opaque.
            let merged_parent = !p.snapshot().lowers.is_empty();
            if below || merged_parent {
                self.u.set_opaque(work, &tmp)?;
            }
            sys::rename_at(work, &tmp, pfd.as_fd(), name, libc::RENAME_NOREPLACE).map_err(errno)?;
            Ok(())
        })();
        if let Err(err) = res {
            let _ = self.u.clear_dir_named(work, &tmp);
            return Err(err);
        }
        // Inherit setgid from the parent like the kernel does.
        if let Ok(pst) = sys::fstat(pfd.as_fd()) {
            if pst.st_mode & libc::S_ISGID != 0 {
                let _ = sys::chmod_at(pfd.as_fd(), name, (mode & 0o7777) | libc::S_ISGID);
            }
        }
        self.u
            .set_owner(pfd.as_fd(), name, req.uid(), req.gid(), false)?;
        self.finish_create(&p, name)
    }

    fn do_symlink(
        &self,
        req: &Request,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> Res<(Arc<Node>, LayerAttr)> {
        let (p, pfd, _) = self.prepare_create(parent, name)?;
        sys::symlink_at(target, pfd.as_fd(), name).map_err(errno)?;
        self.u
            .set_owner(pfd.as_fd(), name, req.uid(), req.gid(), true)?;
        self.finish_create(&p, name)
    }

    fn do_link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Res<(Arc<Node>, LayerAttr)> {
        let node = self.u.node(ino)?;
        if node.kind == EntryKind::Dir {
            return Err(libc::EPERM);
        }
        let (p, pfd, _) = self.prepare_create(newparent, newname)?;
        // With data: the new name has no lower file to take metadata-only data from.
        self.u.copy_up(&node, true)?;
        let st = node.snapshot();
        let sp = st.parent.clone().ok_or(libc::EIO)?;
        let sfd = sp.upper_dir().ok_or(libc::EIO)?;
        sys::link_at(sfd.as_fd(), &st.name, pfd.as_fd(), newname).map_err(errno)?;
        self.u.adjust_group_links(&node, 1);
        self.u.invalidate_dir(p.ino);
        let attr = self.u.attr_of(&node)?;
        Ok((node, attr))
    }

    fn do_unlink(&self, parent: u64, name: &[u8], dir: bool) -> Res<()> {
        check_name(name)?;
        let (p, node, _) = self.child(parent, name)?;
        if dir && node.kind != EntryKind::Dir {
            return Err(libc::ENOTDIR);
        }
        if !dir && node.kind == EntryKind::Dir {
            return Err(libc::EISDIR);
        }
        self.u.upper()?;
        let ps = p.snapshot();
        // A node with no upper copy was found in a lower of this parent just
        // now (it cannot have moved without a copy-up): no second look.
        let lower_only = {
            let ns = node.state.read();
            ns.upper.is_none() && !ns.lowers.is_empty()
        };
        let below = lower_only || self.u.name_in_lowers(&ps, name)?;
        if dir {
            let list = self.u.listing(&node)?;
            if !list.is_empty() {
                return Err(libc::ENOTEMPTY);
            }
            // overlayfs removes a directory whose name is in no lower with a
            // plain rmdir in the upper: whiteouts left in it make that fail.
            let ns = node.snapshot();
            if ns.lowers.is_empty() && !below {
                if let Some(fd) = ns.upper_dir() {
                    if !sys::read_dir(fd.as_fd()).map_err(errno)?.is_empty() {
                        return Err(libc::ENOTEMPTY);
                    }
                }
            }
        }
        let pfd = self.u.ensure_upper_dir(&p)?;
        if !dir && self.u.wants_index_before_removal(&node) {
            self.u.copy_up_for_removal(&node)?;
        }
        let st = node.snapshot();
        // The resolution above found no upper entry for a node still
        // lower-only (not copied up just now for the index), and the kernel
        // holds the parent's lock until this reply.
        let has_upper_here = (st.upper.is_some() || st.lowers.is_empty())
            && match sys::stat_at(pfd.as_fd(), name) {
                Ok(ust) => !whiteout::stat_is_whiteout(pfd.as_fd(), name, &ust),
                Err(_) => false,
            };
        if has_upper_here && !dir {
            // Keep a handle on the upper file: other names and open fds still stat it.
            if let Ok(fd) = sys::open_at(pfd.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0) {
                node.state.write().pinned = Some(Arc::new(fd));
            }
        }
        if has_upper_here {
            if dir {
                if let Some(fd) = st.upper_dir() {
                    self.u.clear_dir(fd.as_fd())?;
                }
            }
            if below && self.u.upper.as_ref().is_some_and(|u| u.char_whiteouts()) {
                // Replace the entry by a whiteout in one step, as overlayfs
                // does: a whiteout (a link to the shared one) made in the work
                // dir swaps places with it, and it is removed there.
                let up = self.u.upper()?;
                let swapped = match self.u.work_whiteout(up) {
                    Ok(tmp) => match sys::rename_at(
                        up.work.as_fd(),
                        &tmp,
                        pfd.as_fd(),
                        name,
                        libc::RENAME_EXCHANGE,
                    ) {
                        Ok(()) => {
                            // The whiteout is in place: the removal is done even
                            // if the old entry cannot be deleted here (the work
                            // dir is emptied at the next mount).
                            if let Err(err) = sys::unlink_at(up.work.as_fd(), &tmp, dir) {
                                tracing::warn!("removing a replaced upper entry: {err}");
                            }
                            true
                        }
                        Err(_) => {
                            let _ = sys::unlink_at(up.work.as_fd(), &tmp, false);
                            false
                        }
                    },
                    Err(_) => false,
                };
                if !swapped {
                    sys::unlink_at(pfd.as_fd(), name, dir).map_err(errno)?;
                    self.u.write_whiteout(pfd.as_fd(), name)?;
                }
            } else {
                sys::unlink_at(pfd.as_fd(), name, dir).map_err(errno)?;
                if below {
                    self.u.write_whiteout(pfd.as_fd(), name)?;
                }
            }
        } else if below {
            self.u.write_whiteout(pfd.as_fd(), name)?;
        }
        self.u.invalidate_dir(p.ino);
        if dir {
            node.state.write().unlinked = true;
            self.u.invalidate_dir(node.ino);
            self.u.drop_node(node.ino);
        } else {
            // Other names of a lower hard-link group keep the node alive.
            let group_left = self.u.adjust_group_links(&node, -1).unwrap_or(0);
            let mut w = node.state.write();
            // Without an upper copy every name of a lower file is gone from this parent.
            w.unlinked = group_left == 0
                && match &w.pinned {
                    Some(fd) => sys::fstat(fd.as_fd())
                        .map(|s| s.st_nlink == 0)
                        .unwrap_or(true),
                    None => true,
                };
        }
        Ok(())
    }

    /// Flags for opening an upper file on behalf of a FUSE open/create:
    /// creation flags are the kernel's business, and with the writeback
    /// cache the kernel does page-cache writes (it needs read access) and
    /// appends itself.
    fn upper_open_flags(&self, flags: i32) -> i32 {
        let mut oflags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_TRUNC);
        if self.writeback.load(Ordering::Relaxed) {
            if oflags & libc::O_ACCMODE == libc::O_WRONLY {
                oflags = (oflags & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            oflags &= !libc::O_APPEND;
        }
        oflags
    }

    fn do_rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Res<()> {
        check_name(name)?;
        check_new_name(newname)?;
        if flags & libc::RENAME_WHITEOUT != 0 {
            return Err(libc::EINVAL);
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        self.u.upper()?;
        let (op, src, _) = self.child(parent, name)?;
        let np = self.u.node(newparent)?;
        let dst = self.u.resolve(&np, newname)?;
        if let Some((d, _)) = &dst {
            if Arc::ptr_eq(d, &src) {
                return Ok(());
            }
        }
        // overlayfs checks a merged target directory for emptiness up front,
        // but a pure upper one only in the final rename of the upper, after
        // the source was copied up and marked (redirect or opaque): the
        // marks stay when that rename fails, so do the same.
        let mut late_enotempty = false;
        match &dst {
            None if exchange => return Err(libc::ENOENT),
            Some(_) if noreplace => return Err(libc::EEXIST),
            Some((d, _)) if !exchange => {
                if src.kind == EntryKind::Dir && d.kind != EntryKind::Dir {
                    return Err(libc::ENOTDIR);
                }
                if src.kind != EntryKind::Dir && d.kind == EntryKind::Dir {
                    return Err(libc::EISDIR);
                }
                if d.kind == EntryKind::Dir && !self.u.listing(d)?.is_empty() {
                    let ds = d.snapshot();
                    if ds.lowers.is_empty() && ds.upper.is_some() {
                        late_enotempty = true;
                    } else {
                        return Err(libc::ENOTEMPTY);
                    }
                } else if d.kind == EntryKind::Dir {
                    // An empty-looking pure upper directory (no lower
                    // directory merged into it, though a lower non-directory
                    // may have the name) is replaced by a plain rename in the
                    // upper: whiteouts left in it make that fail there too.
                    let ds = d.snapshot();
                    if ds.lowers.is_empty() {
                        if let Some(fd) = ds.upper_dir() {
                            if !sys::read_dir(fd.as_fd()).map_err(errno)?.is_empty() {
                                late_enotempty = true;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        // Copy up what moves. Files get their data too: a metadata-only copy
        // finds its data by name, which a rename changes.
        self.u.copy_up(&src, src.kind != EntryKind::Dir)?;
        if let Some((d, _)) = &dst {
            if !exchange && self.u.wants_index_before_removal(d) {
                self.u.copy_up_for_removal(d)?;
            }
        }
        if exchange {
            if let Some((d, _)) = &dst {
                self.u.copy_up(d, d.kind != EntryKind::Dir)?;
            }
        }
        let ofd = self.u.ensure_upper_dir(&op)?;
        let nfd = self.u.ensure_upper_dir(&np)?;
        let old_below = self.u.name_in_lowers(&op.snapshot(), name)?;
        // Like overlayfs, a pure upper directory moved into a merged
        // directory is made opaque, whether or not its new name exists below
        // yet: a lower layer must never show through it.
        let merged = |p: &Arc<Node>| {
            let st = p.snapshot();
            !st.lowers.is_empty() && !st.opaque
        };
        let (old_parent_merged, new_parent_merged) = (merged(&op), merged(&np));
        let src_st = src.snapshot();
        // A directory whose contents come from lowers follows them by redirect;
        // a pure upper directory landing in a merged directory becomes opaque.
        let fix_dir = |node: &Arc<Node>,
                       st: &crate::inode::NodeState,
                       dir_fd: &std::os::fd::OwnedFd,
                       at: &[u8],
                       target_merged: bool|
         -> Res<()> {
            if node.kind != EntryKind::Dir {
                return Ok(());
            }
            if !st.lowers.is_empty() && !st.opaque {
                self.u.set_redirect(dir_fd.as_fd(), at, &st.lower_path)?;
            } else if target_merged && !st.opaque {
                self.u.set_opaque(dir_fd.as_fd(), at)?;
            }
            Ok(())
        };
        if late_enotempty {
            fix_dir(&src, &src_st, &ofd, name, new_parent_merged)?;
            if src.kind == EntryKind::Dir && old_below {
                // A name that exists below needs a whiteout when it moves,
                // so overlayfs renames with RENAME_WHITEOUT, and ext4's
                // failed attempt leaves the old parent's mtime at now. That
                // holds for a pure upper directory over a lower file too.
                let _ = sys::utimens_at(ofd.as_fd(), b"", Time::Omit, Time::Now);
            }
            self.u.invalidate_dir(op.ino);
            return Err(libc::ENOTEMPTY);
        }
        if exchange {
            let (d, _) = dst.clone().ok_or(libc::ENOENT)?;
            let dst_st = d.snapshot();
            sys::rename_at(
                ofd.as_fd(),
                name,
                nfd.as_fd(),
                newname,
                libc::RENAME_EXCHANGE,
            )
            .map_err(errno)?;
            fix_dir(&src, &src_st, &nfd, newname, new_parent_merged)?;
            fix_dir(&d, &dst_st, &ofd, name, old_parent_merged)?;
            {
                let mut w = d.state.write();
                w.parent = Some(op.clone());
                w.name = name.into();
            }
        } else {
            // Clear what is at the target in the upper: a whiteout or an empty merged dir.
            if let Some((d, _)) = &dst {
                if d.kind == EntryKind::Dir {
                    if let Some(fd) = d.upper_dir() {
                        self.u.clear_dir(fd.as_fd())?;
                        sys::unlink_at(nfd.as_fd(), newname, true).map_err(errno)?;
                    }
                    d.state.write().unlinked = true;
                    self.u.drop_node(d.ino);
                } else {
                    // The replaced file may live on (open fds, other names): pin it.
                    let pin = match sys::stat_at(nfd.as_fd(), newname) {
                        Ok(ust) if !whiteout::stat_is_whiteout(nfd.as_fd(), newname, &ust) => {
                            sys::open_at(nfd.as_fd(), newname, libc::O_PATH | libc::O_NOFOLLOW, 0)
                                .ok()
                                .map(Arc::new)
                        }
                        _ => None,
                    };
                    let group_left = self.u.adjust_group_links(d, -1).unwrap_or(0);
                    let mut w = d.state.write();
                    w.unlinked = pin.is_none() && group_left == 0;
                    w.pinned = pin;
                }
            }
            let char_wh = self.u.upper.as_ref().is_some_and(|u| u.char_whiteouts());
            // Like overlayfs, a source that needs a whiteout swaps places with
            // a whiteout at the target (the old name keeps that whiteout);
            // else the rename leaves a fresh one (RENAME_WHITEOUT).
            let target_whiteout = match sys::stat_at(nfd.as_fd(), newname) {
                Ok(st) => whiteout::stat_is_whiteout(nfd.as_fd(), newname, &st),
                Err(_) => false,
            };
            let swap_whiteout = target_whiteout && old_below && char_wh;
            if target_whiteout && !swap_whiteout {
                sys::unlink_at(nfd.as_fd(), newname, false).map_err(errno)?;
            }
            let wh = whiteout::wh_name(newname);
            if sys::stat_at(nfd.as_fd(), &wh).is_ok() {
                sys::unlink_at(nfd.as_fd(), &wh, false).map_err(errno)?;
            }
            let mut whiteout_done = false;
            if swap_whiteout {
                sys::rename_at(
                    ofd.as_fd(),
                    name,
                    nfd.as_fd(),
                    newname,
                    libc::RENAME_EXCHANGE,
                )
                .map_err(errno)?;
                whiteout_done = true;
            } else if old_below && char_wh {
                match sys::rename_at(
                    ofd.as_fd(),
                    name,
                    nfd.as_fd(),
                    newname,
                    libc::RENAME_WHITEOUT,
                ) {
                    // The kernel makes this whiteout as it makes a new
                    // file: group of a set-group-ID directory included.
                    Ok(()) => whiteout_done = true,
                    Err(err)
                        if err.raw_os_error() == Some(libc::EINVAL)
                            || err.raw_os_error() == Some(libc::EPERM) =>
                    {
                        sys::rename_at(ofd.as_fd(), name, nfd.as_fd(), newname, 0)
                            .map_err(errno)?;
                    }
                    Err(err) => return Err(errno(err)),
                }
            } else {
                sys::rename_at(ofd.as_fd(), name, nfd.as_fd(), newname, 0).map_err(errno)?;
            }
            if old_below && !whiteout_done {
                self.u.write_whiteout(ofd.as_fd(), name)?;
            }
            fix_dir(&src, &src_st, &nfd, newname, new_parent_merged)?;
        }
        {
            let mut w = src.state.write();
            w.parent = Some(np.clone());
            w.name = newname.into();
        }
        self.u.invalidate_dir(op.ino);
        self.u.invalidate_dir(np.ino);
        if op.ino != np.ino {
            // A directory that moved has a new `..`.
            if src.kind == EntryKind::Dir {
                self.invalidate_listing(src.ino);
            }
            if let (true, Some((d, _))) = (exchange, &dst) {
                if d.kind == EntryKind::Dir {
                    self.invalidate_listing(d.ino);
                }
            }
        }
        // The kernel moved its entry: a hard-linked node known under one
        // name is now known under the new one.
        self.renamed(src.ino, np.ino, newname);
        if let (true, Some((d, _))) = (exchange, &dst) {
            self.renamed(d.ino, op.ino, name);
        }
        Ok(())
    }

    fn renamed(&self, ino: u64, parent: u64, name: &[u8]) {
        if let Some(mut seen) = self.link_names.get_mut(&ino) {
            if let LinkNames::One(..) = *seen {
                *seen = LinkNames::One(parent, self.name_key.hash_one(name));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Res<LayerAttr> {
        let node = self.u.node(ino)?;
        if mode.is_none()
            && uid.is_none()
            && gid.is_none()
            && size.is_none()
            && atime.is_none()
            && mtime.is_none()
        {
            return self.u.attr_of(&node);
        }
        self.u.copy_up(&node, size.is_some())?;
        let st = node.snapshot();
        let upper_fh = fh
            .and_then(|f| self.handle_file(f.0).ok())
            .filter(|(_, up)| *up);
        let (dir_fd, name) = self.u.upper_entry(&st)?;
        let d = dir_fd.as_fd();
        if let Some(sz) = size {
            match &upper_fh {
                Some((f, _)) => sys::ftruncate(f.as_fd(), sz).map_err(errno)?,
                None => {
                    let f = sys::open_at(d, &name, libc::O_WRONLY | libc::O_NOFOLLOW, 0)
                        .map_err(errno)?;
                    sys::ftruncate(f.as_fd(), sz).map_err(errno)?;
                }
            }
        }
        if uid.is_some() || gid.is_some() {
            let u = uid.map(|v| self.u.opts.uids.to_host(v)).unwrap_or(u32::MAX);
            let g = gid.map(|v| self.u.opts.gids.to_host(v)).unwrap_or(u32::MAX);
            sys::chown_at(d, &name, u, g).map_err(errno)?;
        }
        if let Some(m) = mode {
            if node.kind != EntryKind::Symlink {
                sys::chmod_at(d, &name, m & 0o7777).map_err(errno)?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            sys::utimens_at(d, &name, time_arg(atime), time_arg(mtime)).map_err(errno)?;
        }
        self.u
            .invalidate_dir(st.parent.as_ref().map(|p| p.ino).unwrap_or(ROOT_INO));
        self.u.attr_of(&node)
    }

    fn do_open(&self, ino: u64, flags: i32, reply: ReplyOpen) {
        let node = match self.u.node(ino) {
            Ok(n) => n,
            Err(err) => return reply.error(e(err)),
        };
        let acc = flags & libc::O_ACCMODE;
        let writing = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        let res = (|| -> Res<Handle> {
            if writing {
                self.u.copy_up(&node, true)?;
            }
            let st = node.snapshot();
            if st.upper.is_some() && !st.metacopy {
                let (pfd, name) = self.u.upper_entry(&st)?;
                let oflags = self.upper_open_flags(flags);
                let fd = match sys::open_at(pfd.as_fd(), &name, oflags | libc::O_NOFOLLOW, 0) {
                    Ok(fd) => fd,
                    Err(err) if is_enoent(&err) && st.pinned.is_some() => {
                        // This name is gone but the file lives on under another one.
                        let pin = st.pinned.clone().ok_or(libc::EIO)?;
                        sys::reopen(pin.as_fd(), oflags).map_err(errno)?
                    }
                    Err(err) => return Err(errno(err)),
                };
                return Ok(Handle::File {
                    node: node.clone(),
                    file: Arc::new(File::from(fd)),
                    upper: true,
                    backing: false,
                    read: Arc::default(),
                });
            }
            let &(l, ln) = st.lowers.first().ok_or(libc::ENOENT)?;
            match self.u.layers[l].open(ln).map_err(errno)? {
                LayerData::File(f) => Ok(Handle::File {
                    node: node.clone(),
                    file: Arc::new(f),
                    upper: false,
                    backing: false,
                    read: Arc::default(),
                }),
                LayerData::Inline(data) => Ok(Handle::Inline { data }),
            }
        })();
        let mut h = match res {
            Ok(h) => h,
            Err(err) => return reply.error(e(err)),
        };
        let immutable = matches!(
            &h,
            Handle::File { upper: false, .. } | Handle::Inline { .. }
        );
        let mut fopen = FopenFlags::empty();
        if immutable {
            fopen |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        if flags & libc::O_DIRECT != 0 {
            fopen |= FopenFlags::FOPEN_DIRECT_IO;
        }
        // A set-id file's writes must reach the daemon (see `init`).
        let setid = self.killpriv.load(Ordering::Relaxed)
            && match &h {
                Handle::File {
                    file, upper: true, ..
                } => sys::fstat(file.as_fd()).map_or(true, |st| is_setid(st.st_mode)),
                _ => false,
            };
        // Passthrough: one backing per node, shared by all its handles.
        if self.passthrough.load(Ordering::Relaxed) && flags & libc::O_DIRECT == 0 && !setid {
            if let Handle::File {
                file,
                upper,
                backing,
                ..
            } = &mut h
            {
                let mut b = node.backing.lock();
                let id = match b.as_mut() {
                    Some(cur) if cur.upper == *upper => {
                        cur.refs += 1;
                        Some(cur.id.clone())
                    }
                    Some(_) => None,
                    None => match self.open_backing(file.as_fd(), |f| reply.open_backing(f)) {
                        Ok(id) => {
                            let id = Arc::new(id);
                            *b = Some(Box::new(Backing {
                                id: id.clone(),
                                upper: *upper,
                                refs: 1,
                            }));
                            Some(id)
                        }
                        Err(_) => None,
                    },
                };
                drop(b);
                match id {
                    Some(id) => {
                        *backing = true;
                        node.opens.fetch_add(1, Ordering::Relaxed);
                        let fh = self.new_fh(h);
                        return reply.opened_passthrough(
                            FileHandle(fh),
                            fopen & !FopenFlags::FOPEN_KEEP_CACHE,
                            &id,
                        );
                    }
                    None => {
                        // Another backing file is active on this inode: uncached I/O mixes with it.
                        if node.backing.lock().is_some() {
                            fopen |= FopenFlags::FOPEN_DIRECT_IO;
                            fopen &= !FopenFlags::FOPEN_KEEP_CACHE;
                        }
                    }
                }
            }
        }
        node.opens.fetch_add(1, Ordering::Relaxed);
        let fh = self.new_fh(h);
        reply.opened(FileHandle(fh), fopen);
    }

    /// Clears the set-id bits of upper file `f` (node `ino`) as a data
    /// change by the caller `pid` does, and has the kernel fetch the
    /// attributes again if they changed.
    fn kill_setid(&self, pid: u32, ino: u64, f: BorrowedFd<'_>) {
        if !self.killpriv.load(Ordering::Relaxed) {
            return;
        }
        let Ok(st) = sys::fstat(f) else { return };
        if !is_setid(st.st_mode) {
            return;
        }
        let caller = sys::caller_creds(pid);
        let mode = after_data_change(st.st_mode, st.st_gid, caller.as_ref());
        if mode == st.st_mode & 0o7777 {
            return;
        }
        if let Err(err) = sys::fchmod(f, mode) {
            tracing::warn!(ino, "clearing set-id bits after a data change: {err}");
            return;
        }
        if let Some(n) = self.notifier.get() {
            let _ = n.inval_inode(INodeNo(ino), -1, 0);
        }
    }

    /// Opens a passthrough backing for `f`. With killpriv on, the backing
    /// gets the daemon's credentials without CAP_FSETID: a file that
    /// becomes set-id while open loses the bits on its next write through
    /// the backing, as for an unprivileged writer (set-id files get no
    /// passthrough in the first place).
    fn open_backing(
        &self,
        f: BorrowedFd<'_>,
        open: impl FnOnce(BorrowedFd<'_>) -> io::Result<fuser::BackingId>,
    ) -> io::Result<fuser::BackingId> {
        if self.killpriv.load(Ordering::Relaxed) {
            sys::without_fsetid(|| open(f))
        } else {
            open(f)
        }
    }

    fn release_handle(&self, fh: u64) {
        let Some((_, Handle::File { node, backing, .. })) = self.handles.remove(&fh) else {
            return;
        };
        node.opens.fetch_sub(1, Ordering::Relaxed);
        if backing {
            let mut b = node.backing.lock();
            let last = match b.as_mut() {
                Some(cur) => {
                    cur.refs = cur.refs.saturating_sub(1);
                    cur.refs == 0
                }
                None => false,
            };
            if last {
                *b = None;
            }
        }
    }

    fn xattr_target(&self, node: &Arc<Node>) -> Res<Option<(Arc<std::os::fd::OwnedFd>, Vec<u8>)>> {
        let st = node.snapshot();
        Ok(match &st.upper {
            Some(_) => Some(self.u.upper_entry(&st)?),
            None => None,
        })
    }

    fn do_getxattr(&self, ino: u64, key: &[u8]) -> Res<Vec<u8>> {
        if is_private_xattr(key) {
            return Err(libc::ENODATA);
        }
        let node = self.u.node(ino)?;
        let v = match self.xattr_target(&node)? {
            Some((fd, name)) => sys::get_xattr_at(fd.as_fd(), &name, key).map_err(errno)?,
            None => {
                let st = node.snapshot();
                let &(l, ln) = st.lowers.first().ok_or(libc::ENOENT)?;
                self.u.layers[l].get_xattr(ln, key).map_err(errno)?
            }
        };
        v.ok_or(libc::ENODATA)
    }

    fn do_listxattr(&self, ino: u64) -> Res<Vec<u8>> {
        let node = self.u.node(ino)?;
        let names = match self.xattr_target(&node)? {
            Some((fd, name)) => whiteout::visible_xattrs(fd.as_fd(), &name).map_err(errno)?,
            None => {
                let st = node.snapshot();
                let &(l, ln) = st.lowers.first().ok_or(libc::ENOENT)?;
                self.u.layers[l].list_xattrs(ln).map_err(errno)?
            }
        };
        let mut out = Vec::new();
        for n in names {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    fn do_setxattr(&self, ino: u64, key: &[u8], value: Option<&[u8]>, flags: i32) -> Res<()> {
        if is_private_xattr(key) {
            return Err(libc::EPERM);
        }
        let node = self.u.node(ino)?;
        if value.is_none() {
            // Removing an absent attribute should not copy up.
            self.do_getxattr(ino, key)?;
        }
        // Like overlayfs, an xattr change on a name of an indexed hard-link
        // group goes to the group's upper inode without linking this name up.
        if !matches!(node.state.read().upper, Some(UpperRef::Index(_))) {
            self.u.copy_up(&node, false)?;
        }
        let (fd, name) = self.xattr_target(&node)?.ok_or(libc::EIO)?;
        match value {
            Some(v) => sys::set_xattr_at(fd.as_fd(), &name, key, v, flags).map_err(errno),
            None => sys::remove_xattr_at(fd.as_fd(), &name, key).map_err(errno),
        }
    }

    fn fill_dir(&self, dir: &Node, list: &Listing, offset: u64, reply: &mut ReplyDirectory) {
        for (pos, slot) in slots(list, offset) {
            let full = match slot {
                Slot::Dot => reply.add(INodeNo(dir.ino), pos, FileType::Directory, "."),
                Slot::DotDot => {
                    let parent = dir.state.read().parent.as_ref().map(|p| p.ino);
                    let parent = parent.unwrap_or(ROOT_INO);
                    reply.add(INodeNo(parent), pos, FileType::Directory, "..")
                }
                Slot::Entry(d) => reply.add(
                    INodeNo(d.ino),
                    pos,
                    ftype(d.kind),
                    OsStr::from_bytes(&d.name),
                ),
            };
            if full {
                break;
            }
        }
    }

    /// The directory `ino` and its merged listing, for READDIR(PLUS). There
    /// is no per-open state: OPENDIR is not implemented (see `opendir`).
    fn dir_listing(&self, ino: u64) -> Res<(Arc<Node>, Arc<Listing>)> {
        let node = self.u.node(ino)?;
        if node.kind != EntryKind::Dir {
            return Err(libc::ENOTDIR);
        }
        let list = self.u.listing(&node)?;
        Ok((node, list))
    }
}

/// One place in a directory stream.
enum Slot<'a> {
    Dot,
    DotDot,
    Entry(&'a DirEnt),
}

/// The places of a directory stream after readdir position `offset`, each
/// with the position that follows it: `.` is 1, `..` is 2, entries have
/// their listing cookies (see [`Listing`]).
fn slots(list: &Listing, offset: u64) -> impl Iterator<Item = (u64, Slot<'_>)> + '_ {
    [(1, Slot::Dot), (2, Slot::DotDot)]
        .into_iter()
        .filter(move |(pos, _)| *pos > offset)
        .chain(list.after(offset).map(|(pos, d)| (pos, Slot::Entry(d))))
}

/// The largest read buffer a worker keeps between requests (the kernel
/// asks for at most `max_pages` pages, 1 MiB, per READ).
const READ_BUF_KEEP: usize = 1 << 20;

/// READs at least this large come from the kernel's read-ahead (a
/// sequential reader); after one, the daemon asks the lower's page cache to
/// fetch what follows.
const READ_AHEAD_MIN: usize = crate::lookahead::SEQUENTIAL_MIN;

/// How far ahead, in READ sizes. Without it the lower file's own read-ahead
/// (128 KiB on this disk) starts each 1 MiB READ from cold, and a cold 1 GiB
/// read through the daemon ran at 0.55× overlayfs (dd, 4 interleaved runs);
/// with 4 READs ahead, 0.79×; 8 did no better.
const READ_AHEAD_FACTOR: usize = 4;

/// At least this far ahead: an ordinary user's mount keeps FUSE's 128 KiB
/// window (only root may widen it), so its READs are small.
const READ_AHEAD_LEAST: usize = 4 << 20;

/// After a sequential READ that ended at `end`: asks the lower's page
/// cache to fetch the window that follows (`READ_AHEAD_FACTOR` READs of
/// `size`, at least `READ_AHEAD_LEAST`), minus what an earlier READ of the
/// same handle already asked for (`ahead` keeps where that ended). Each
/// page is asked for once: `POSIX_FADV_WILLNEED` looks up every page of its
/// range even when all are cached, and asking for the whole window after
/// every READ took 45% of the daemon's time (`perf`). Reading a cached
/// 1 GiB lower with `dd` through a `passthrough=0` mount (4 interleaved
/// runs each): 0.72–0.79 s before, 0.30 s after, with 1 MiB or 128 KiB
/// READs; daemon CPU 0.71 s → 0.28 s. A READ behind or beyond the hinted
/// window (a seek) starts a new one. Best effort: a failed hint only costs
/// speed, and two racing READs at worst ask for a range twice.
fn read_ahead(fd: BorrowedFd<'_>, ahead: &AtomicU64, end: u64, size: usize) {
    let Some((from, to)) = read_ahead_range(ahead.load(Ordering::Relaxed), end, size) else {
        return;
    };
    ahead.store(to, Ordering::Relaxed);
    let _ = nix::fcntl::posix_fadvise(
        fd,
        from as i64,
        (to - from) as i64,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    );
}

/// The range [from, to) [`read_ahead`] asks for after a READ of `size`
/// that ended at `end`, when earlier hints reached `done`; `None` when the
/// window is already asked for.
fn read_ahead_range(done: u64, end: u64, size: usize) -> Option<(u64, u64)> {
    let window = (READ_AHEAD_FACTOR * size).max(READ_AHEAD_LEAST) as u64;
    let to = end.saturating_add(window);
    let from = if (end..=to).contains(&done) {
        done
    } else {
        end
    };
    (from < to).then_some((from, to))
}

thread_local! {
    /// Each worker's buffer for READ replies (reads without passthrough).
    /// Allocating it per request cost more than the copy: a fresh 1 MiB
    /// buffer is a fresh mapping (above the allocator's mmap threshold),
    /// faulted in page by page and unmapped again.
    static READ_BUF: std::cell::RefCell<PageBuf> = const { std::cell::RefCell::new(PageBuf::new()) };
}

/// Per-operation request counts, kept only when `UNIONFS_OPSTATS=FILE` is
/// set (see [`opstats_init`]): a tool for finding round trips to remove.
static OPSTATS: std::sync::OnceLock<DashMap<&'static str, u64>> = std::sync::OnceLock::new();

/// Starts counting requests per operation if `UNIONFS_OPSTATS` names a
/// file; [`opstats_write`] writes the counts there at unmount.
pub(crate) fn opstats_init() {
    if std::env::var_os("UNIONFS_OPSTATS").is_some() {
        let _ = OPSTATS.set(sys::new_map());
    }
}

/// Writes the request counts to the `UNIONFS_OPSTATS` file, one
/// `op count` line each, most frequent first.
pub(crate) fn opstats_write() {
    let (Some(stats), Some(path)) = (OPSTATS.get(), std::env::var_os("UNIONFS_OPSTATS")) else {
        return;
    };
    let mut v: Vec<(&str, u64)> = stats.iter().map(|e| (*e.key(), *e.value())).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    let text: String = v.iter().map(|(op, n)| format!("{op} {n}\n")).collect();
    if let Err(err) = std::fs::write(&path, text) {
        tracing::warn!(
            "writing request counts to {}: {err}",
            Path::new(&path).display()
        );
    }
}

impl UnionFs {
    /// Another handle on the CPU latency holder (`cpu_latency=on`).
    pub(crate) fn latency_handle(&self) -> Option<BusyLatency> {
        self.latency.clone()
    }

    /// Runs one request handler; a panic in it is logged and the request
    /// answered EIO (the unsent reply does that when dropped during
    /// unwinding), so one bad request does not take a worker thread, or the
    /// mount, down.
    fn guard(&self, op: &'static str, f: impl FnOnce()) {
        if let Some(l) = &self.latency {
            l.request();
        }
        let relay = self.relay.get();
        if let Some(r) = relay {
            // A flush to disk can take milliseconds: another worker may
            // have to read meanwhile (the relay decides).
            r.start(matches!(op, "fsync" | "fsyncdir"));
        }
        guard(op, f);
        if let Some(r) = relay {
            r.finish();
        }
    }
}

/// Answers a LOOKUP of a name `parent` does not hold with node id 0, which
/// the kernel keeps as a negative entry for the given time (an ENOENT error
/// is forgotten at once). A shell's `PATH` search, the dynamic linker's
/// library search and interpreters' module searches look the same missing
/// names up again and again; kernel overlayfs and fuse-overlayfs answer the
/// repeats from the dentry cache too. Only a change made through the mount
/// can make the name appear, and the kernel replaces the negative entry
/// itself then (create, mkdir, link, rename); a directory that comes only
/// from immutable lowers keeps it as long as its other entries.
fn reply_negative(parent: &Node, reply: ReplyEntry) {
    let ttl = if parent.state.read().lower_only() {
        TTL_LOWER
    } else {
        TTL_UPPER
    };
    let none = FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    };
    reply.entry(&ttl, &none, Generation(0));
}

/// [`UnionFs::guard`] without the latency request.
fn guard(op: &'static str, f: impl FnOnce()) {
    if let Some(stats) = OPSTATS.get() {
        *stats.entry(op).or_insert(0) += 1;
    }
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(op, "request handler panicked, answered EIO: {msg}");
    }
}

impl Filesystem for UnionFs {
    fn destroy(&mut self) {
        opstats_write();
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let caps = config.capabilities();
        // Always readdirplus (no FUSE_READDIRPLUS_AUTO): with the adaptive
        // mode the kernel asks for attributes only in the first chunk of a
        // listing and then sends one LOOKUP per remaining entry.
        let mut want = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ASYNC_DIO;
        if self.tuning.posix_acl {
            want |= InitFlags::FUSE_POSIX_ACL;
        }
        let _ = config.add_capabilities(want & caps);
        // With FUSE_HANDLE_KILLPRIV_V2 the kernel marks an inode "no
        // security xattrs" after the first check (SB_NOSEC), instead of
        // sending GETXATTR security.capability before every write() (1,024
        // round trips for a 1 GiB file written in 1 MiB calls). In return
        // the daemon clears set-id bits itself: on WRITE with
        // FUSE_WRITE_KILL_SUIDGID, on truncate and fallocate by a caller
        // without CAP_FSETID, and set-id files get no passthrough (their
        // writes must reach the daemon). Chown clears them on its own: the
        // host kernel does that for the daemon's fchownat, as before.
        if caps.contains(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            && config
                .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                .is_ok()
        {
            self.killpriv.store(true, Ordering::Relaxed);
        }
        let mut passthrough = false;
        if self.tuning.passthrough
            && sys::euid() == 0
            && caps.contains(InitFlags::FUSE_PASSTHROUGH)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            passthrough = true;
        }
        if !passthrough
            && self.tuning.writeback
            && caps.contains(InitFlags::FUSE_WRITEBACK_CACHE)
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_ok()
        {
            self.writeback.store(true, Ordering::Relaxed);
        }
        self.passthrough.store(passthrough, Ordering::Relaxed);
        tracing::debug!(
            passthrough,
            writeback = self.writeback.load(Ordering::Relaxed),
            killpriv = self.killpriv.load(Ordering::Relaxed),
            "fuse init"
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.guard("lookup", || {
            let p = match self.u.node(parent.0) {
                Ok(p) => p,
                Err(err) => return reply.error(e(err)),
            };
            match self.u.resolve(&p, name.as_bytes()) {
                Ok(Some((n, a))) => self.reply_entry(parent.0, name.as_bytes(), &n, &a, reply),
                Ok(None) => reply_negative(&p, reply),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // Not through the relay: fuser's `batch_forget` calls this once per
        // node inside one request, and a forget has no reply to spin after.
        guard("forget", || {
            if ino.0 == ROOT_INO {
                return;
            }
            let remove = match self.u.nodes.get(&ino.0) {
                Some(n) => {
                    let prev = n.lookups.fetch_sub(
                        nlookup.min(n.lookups.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                    prev <= nlookup
                        && n.kind != EntryKind::Dir
                        && n.opens.load(Ordering::Relaxed) == 0
                }
                None => false,
            };
            if remove {
                let removed = self.u.nodes.remove_if(&ino.0, |_, n| {
                    n.lookups.load(Ordering::Relaxed) == 0 && n.opens.load(Ordering::Relaxed) == 0
                });
                if removed.is_some() {
                    // The kernel has no entry for it left.
                    self.link_names.remove(&ino.0);
                }
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.guard("getattr", || {
            let node = match self.u.node(ino.0) {
                Ok(n) => n,
                Err(err) => return reply.error(e(err)),
            };
            if let Some((f, true)) = fh.and_then(|f| self.handle_file(f.0).ok()) {
                if let Ok(st) = sys::fstat(f.as_fd()) {
                    let mut a = LayerAttr::from_stat(&st);
                    a.ino = node.ino;
                    if node.kind != EntryKind::Dir && !node.state.read().unlinked {
                        // The upper file's own count includes the index entry.
                        self.u.apply_group_links(node.ino, true, &mut a);
                    }
                    return reply.attr(&TTL_UPPER, &self.fattr(&a));
                }
            }
            match self.u.attr_of(&node) {
                Ok(a) => reply.attr(&self.ttl(&node, &a), &self.fattr(&a)),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.guard("setattr", || {
            // A truncate by a caller without CAP_FSETID clears set-id bits
            // (the kernel's FATTR_KILL_SUIDGID, which fuser does not pass on).
            let mode = match (mode, size) {
                (None, Some(_)) if self.killpriv.load(Ordering::Relaxed) => self
                    .u
                    .node(ino.0)
                    .and_then(|n| self.u.attr_of(&n))
                    .ok()
                    .filter(|a| is_setid(a.perm))
                    .map(|a| {
                        let caller = sys::caller_creds(req.pid());
                        (a.perm, after_data_change(a.perm, a.gid, caller.as_ref()))
                    })
                    .filter(|(old, new)| old != new)
                    .map(|(_, new)| new),
                _ => mode,
            };
            let res = self.do_setattr(ino.0, mode, uid, gid, size, atime, mtime, fh);
            match self.changed(&[ino.0], res) {
                Ok(a) => reply.attr(&TTL_UPPER, &self.fattr(&a)),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.guard("readlink", || {
            let res = (|| -> Res<Vec<u8>> {
                let node = self.u.node(ino.0)?;
                let st = node.snapshot();
                match &st.upper {
                    Some(_) => {
                        let p = st.parent.clone().ok_or(libc::EIO)?;
                        let pfd = p.upper_dir().ok_or(libc::EIO)?;
                        sys::readlink_at(pfd.as_fd(), &st.name).map_err(errno)
                    }
                    None => {
                        let &(l, ln) = st.lowers.first().ok_or(libc::ENOENT)?;
                        self.u.layers[l].readlink(ln).map_err(errno)
                    }
                }
            })();
            match res {
                Ok(t) => reply.data(&t),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.guard("mknod", || {
            let res = self.do_mknod(req, parent.0, name.as_bytes(), mode, rdev as u64);
            match self.changed(&[parent.0], res) {
                Ok((n, a)) => self.reply_entry(parent.0, name.as_bytes(), &n, &a, reply),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.guard("mkdir", || {
            match self.changed(
                &[parent.0],
                self.do_mkdir(req, parent.0, name.as_bytes(), mode),
            ) {
                Ok((n, a)) => self.reply_entry(parent.0, name.as_bytes(), &n, &a, reply),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.guard("unlink", || {
            match self.changed(
                &[parent.0],
                self.do_unlink(parent.0, name.as_bytes(), false),
            ) {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.guard("rmdir", || {
            match self.changed(&[parent.0], self.do_unlink(parent.0, name.as_bytes(), true)) {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.guard("symlink", || {
            let res = self.do_symlink(
                req,
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
            );
            match self.changed(&[parent.0], res) {
                Ok((n, a)) => self.reply_entry(parent.0, link_name.as_bytes(), &n, &a, reply),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.guard("rename", || {
            let res = self.do_rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                flags.bits(),
            );
            match self.changed(&[parent.0, newparent.0], res) {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.guard("link", || {
            let newname = newname.as_bytes();
            // The name the kernel reached the node by (its last lookup).
            let source = self.u.node(ino.0).ok().and_then(|n| {
                let st = n.state.read();
                st.parent.as_ref().map(|p| (p.ino, st.name.clone()))
            });
            let res = self.do_link(ino.0, newparent.0, newname);
            match self.changed(&[ino.0, newparent.0], res) {
                Ok((n, a)) => {
                    // The kernel now knows two names of the node, the old
                    // one perhaps with a long lifetime.
                    self.link_names.insert(n.ino, LinkNames::Many);
                    if let Some((p, name)) = source {
                        if (p, &name[..]) != (newparent.0, newname) {
                            self.invalidate_names_later(p, n.ino, (newparent.0, newname));
                        }
                    }
                    self.reply_entry(newparent.0, newname, &n, &a, reply)
                }
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.guard("open", || {
            let acc = flags.0 & libc::O_ACCMODE;
            if acc != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
                // The copy-up `do_open` would make, done first so that the
                // kernel drops what it cached of the copied-up file and
                // directories before the open is answered.
                let copied = self.u.node(ino.0).and_then(|n| {
                    let was_lower = n.state.read().lower_only();
                    self.u.copy_up(&n, true)?;
                    Ok(was_lower)
                });
                match copied {
                    Ok(was_lower) => {
                        if was_lower {
                            if let Some(notifier) = self.notifier.get() {
                                let _ = notifier.inval_inode(ino, -1, 0);
                            }
                        }
                        self.refresh_copied_up(ino.0);
                    }
                    Err(err) => return reply.error(e(err)),
                }
            }
            self.do_open(ino.0, flags.0, reply);
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.guard("read", || {
            let h = self.handles.get(&fh.0);
            match h.as_deref() {
                Some(Handle::File {
                    file, read, upper, ..
                }) => {
                    let file = file.clone();
                    let read = read.clone();
                    let upper = *upper;
                    drop(h);
                    READ_BUF.with_borrow_mut(|buf| {
                        let want = size as usize;
                        let answer = |res: io::Result<&[u8]>| match res {
                            Ok(data) => reply.data(data),
                            Err(err) => reply.error(e(errno(err))),
                        };
                        let on = self.tuning.lower_direct && !upper;
                        if let Served::No(answer) = read.serve(on, &file, offset, want, buf, answer)
                        {
                            match read_into(&file, buf, offset, want) {
                                Ok(got) => {
                                    answer(Ok(&buf.bytes(got)[..got]));
                                    if got == want && want >= READ_AHEAD_MIN {
                                        read_ahead(
                                            file.as_fd(),
                                            &read.ahead,
                                            offset + got as u64,
                                            want,
                                        );
                                    }
                                }
                                Err(err) => answer(Err(err)),
                            }
                        }
                        buf.trim(READ_BUF_KEEP);
                    });
                }
                Some(Handle::Inline { data }) => {
                    let start = (offset as usize).min(data.len());
                    let end = start.saturating_add(size as usize).min(data.len());
                    reply.data(&data[start..end]);
                }
                _ => reply.error(Errno::EBADF),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.guard("write", || match self.handle_file(fh.0) {
            Ok((f, true)) => match sys::pwrite(f.as_fd(), data, offset) {
                Ok(n) => {
                    if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                        self.kill_setid(req.pid(), ino.0, f.as_fd());
                    }
                    reply.written(n as u32)
                }
                Err(err) => reply.error(e(errno(err))),
            },
            Ok(_) => reply.error(Errno::EBADF),
            Err(err) => reply.error(e(err)),
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.guard("flush", || {
            // Nothing to do at close (data goes straight to the upper file,
            // no locks are kept here). ENOSYS makes the kernel stop sending
            // FLUSH, which saves every close() a round trip; it still
            // writes back cached pages before a close returns.
            reply.error(Errno::ENOSYS);
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.guard("release", || {
            self.release_handle(fh.0);
            reply.ok();
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.guard("fsync", || match self.handle_file(fh.0) {
            Ok((f, true)) => match sys::fsync(f.as_fd(), datasync) {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(errno(err))),
            },
            Ok(_) => reply.ok(),
            Err(err) => reply.error(e(err)),
        });
    }

    /// Not implemented, on purpose: after one ENOSYS the kernel sends no
    /// OPENDIR/RELEASEDIR for any directory (two round trips fewer per
    /// directory read), opens every directory with `FOPEN_KEEP_CACHE |
    /// FOPEN_CACHE_DIR` and READDIR(PLUS) carries no handle. The kernel's
    /// cached listing is dropped when this mount changes the directory
    /// (create, mkdir, unlink, rename, link... bump its version) and, for a
    /// directory moved elsewhere, by an inode notification (its `..`).
    /// Readdir positions are stateless (see [`Listing`]).
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.guard("opendir", || reply.error(Errno::ENOSYS));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.guard("readdir", || {
            let (dir, list) = match self.dir_listing(ino.0) {
                Ok(x) => x,
                Err(err) => return reply.error(e(err)),
            };
            self.fill_dir(&dir, &list, offset, &mut reply);
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.guard("readdirplus", || {
            let (dir, list) = match self.dir_listing(ino.0) {
                Ok(x) => x,
                Err(err) => return reply.error(e(err)),
            };
            for (pos, slot) in slots(&list, offset) {
                let full = match slot {
                    Slot::Dot | Slot::DotDot => {
                        let dot = matches!(slot, Slot::Dot);
                        let target = if dot {
                            dir.clone()
                        } else {
                            dir.state
                                .read()
                                .parent
                                .clone()
                                .unwrap_or_else(|| dir.clone())
                        };
                        // "." and ".." do not count as lookups, and the
                        // kernel uses only their inode number and type (it
                        // skips their attributes), so nothing is stat'ed.
                        let a = LayerAttr {
                            ino: target.ino,
                            kind: EntryKind::Dir,
                            perm: 0,
                            uid: 0,
                            gid: 0,
                            size: 0,
                            blocks: 0,
                            nlink: 0,
                            rdev: 0,
                            atime: (0, 0),
                            mtime: (0, 0),
                            ctime: (0, 0),
                        };
                        reply.add(
                            INodeNo(a.ino),
                            pos,
                            if dot { "." } else { ".." },
                            &Duration::ZERO,
                            &self.fattr(&a),
                            Generation(0),
                        )
                    }
                    Slot::Entry(d) => match self.u.resolve_listed(&dir, &list, d) {
                        Ok(Some((node, attr))) => {
                            let ttl = self.entry_ttl(dir.ino, &d.name, &node, &attr);
                            let full = reply.add(
                                INodeNo(node.ino),
                                pos,
                                OsStr::from_bytes(&d.name),
                                &ttl,
                                &self.fattr(&attr),
                                Generation(0),
                            );
                            if !full {
                                node.lookups.fetch_add(1, Ordering::Relaxed);
                            }
                            full
                        }
                        // Gone since the listing was made: skip it.
                        _ => false,
                    },
                };
                if full {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.guard("fsyncdir", || {
            if let Some(fd) = self.u.node(ino.0).ok().and_then(|n| n.upper_dir()) {
                if let Ok(f) = sys::open_at(fd.as_fd(), b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                {
                    let _ = sys::fsync(f.as_fd(), false);
                }
            }
            reply.ok();
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.guard("statfs", || {
            let fd = match &self.u.upper {
                Some(up) => up.root.clone(),
                None => match self.u.node(ROOT_INO).ok().and_then(|n| n.upper_dir()) {
                    Some(fd) => fd,
                    None => {
                        return reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
                    }
                },
            };
            match sys::statvfs(fd.as_fd()) {
                Ok(s) => reply.statfs(
                    s.f_blocks,
                    s.f_bfree,
                    s.f_bavail,
                    s.f_files,
                    s.f_ffree,
                    s.f_bsize as u32,
                    255,
                    s.f_frsize as u32,
                ),
                Err(err) => reply.error(e(errno(err))),
            }
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.guard("setxattr", || {
            let res = self.do_setxattr(ino.0, name.as_bytes(), Some(value), flags);
            match self.changed(&[ino.0], res) {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.guard("getxattr", || {
            match self.do_getxattr(ino.0, name.as_bytes()) {
                Ok(v) if size == 0 => reply.size(v.len() as u32),
                Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
                Ok(v) => reply.data(&v),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.guard("listxattr", || match self.do_listxattr(ino.0) {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
            Ok(v) => reply.data(&v),
            Err(err) => reply.error(e(err)),
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.guard("removexattr", || {
            match self.changed(&[ino.0], self.do_setxattr(ino.0, name.as_bytes(), None, 0)) {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.guard("access", || {
            let res = (|| -> Res<()> {
                let node = self.u.node(ino.0)?;
                let a = self.u.attr_of(&node)?;
                let m = mask.bits();
                if m == libc::F_OK {
                    return Ok(());
                }
                if m & libc::W_OK != 0 && self.u.upper.is_none() {
                    return Err(libc::EROFS);
                }
                if req.uid() == 0 {
                    if m & libc::X_OK != 0 && a.kind != EntryKind::Dir && a.perm & 0o111 == 0 {
                        return Err(libc::EACCES);
                    }
                    return Ok(());
                }
                let uid = self.u.opts.uids.to_view(a.uid);
                let gid = self.u.opts.gids.to_view(a.gid);
                let bits = if req.uid() == uid {
                    (a.perm >> 6) & 7
                } else if req.gid() == gid {
                    (a.perm >> 3) & 7
                } else {
                    a.perm & 7
                };
                if (m as u32) & !bits & 7 != 0 {
                    return Err(libc::EACCES);
                }
                Ok(())
            })();
            match res {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(e(err)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.guard("create", || {
            let name = name.as_bytes();
            let res = (|| -> Res<(Arc<Node>, LayerAttr, std::os::fd::OwnedFd)> {
                let (p, pfd, _) = self.prepare_create(parent.0, name)?;
                // Created with the flags the handle needs: the same fd
                // serves the open (no second open of the new file).
                let fd = sys::open_at(
                    pfd.as_fd(),
                    name,
                    self.upper_open_flags(flags) | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    mode & 0o7777,
                )
                .map_err(errno)?;
                let mut st = sys::fstat(fd.as_fd()).map_err(errno)?;
                let mode = mode & 0o7777;
                // Usually the new file already has the caller's ids and the
                // mode asked for (a root caller, the daemon's umask covered
                // by the caller's): then there is nothing to change.
                if !self.u.created_owner_ok(&st, req.uid(), req.gid()) {
                    // Owner first: chown clears set-id bits.
                    self.u
                        .set_owner(pfd.as_fd(), name, req.uid(), req.gid(), true)?;
                    st.st_mode = 0; // re-read below
                }
                if st.st_mode & 0o7777 != mode {
                    let _ = sys::fchmod(fd.as_fd(), mode);
                    st = sys::fstat(fd.as_fd()).map_err(errno)?;
                }
                self.u.invalidate_dir(p.ino);
                let (node, attr) = self.u.resolve_created(&p, name, &st)?.ok_or(libc::EIO)?;
                Ok((node, attr, fd))
            })();
            let (node, attr, fd) = match self.changed(&[parent.0], res) {
                Ok(x) => x,
                Err(err) => return reply.error(e(err)),
            };
            let file = Arc::new(File::from(fd));
            node.lookups.fetch_add(1, Ordering::Relaxed);
            node.opens.fetch_add(1, Ordering::Relaxed);
            let fattr = self.fattr(&attr);
            // A new set-id file (created so by root) gets no passthrough: see `init`.
            let setid = self.killpriv.load(Ordering::Relaxed) && is_setid(attr.perm);
            if self.passthrough.load(Ordering::Relaxed) && flags & libc::O_DIRECT == 0 && !setid {
                if let Ok(id) = self.open_backing(file.as_fd(), |f| reply.open_backing(f)) {
                    let id = Arc::new(id);
                    *node.backing.lock() = Some(Box::new(Backing {
                        id: id.clone(),
                        upper: true,
                        refs: 1,
                    }));
                    let fh = self.new_fh(Handle::File {
                        node: node.clone(),
                        file,
                        upper: true,
                        backing: true,
                        read: Arc::default(),
                    });
                    return reply.created_passthrough(
                        &TTL_UPPER,
                        &fattr,
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::empty(),
                        &id,
                    );
                }
            }
            let fh = self.new_fh(Handle::File {
                node: node.clone(),
                file,
                upper: true,
                backing: false,
                read: Arc::default(),
            });
            let mut fopen = FopenFlags::empty();
            if flags & libc::O_DIRECT != 0 {
                fopen |= FopenFlags::FOPEN_DIRECT_IO;
            }
            reply.created(&TTL_UPPER, &fattr, Generation(0), FileHandle(fh), fopen);
        });
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.guard("ioctl", || {
            reply.error(Errno::from_i32(libc::ENOTTY));
        });
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.guard("fallocate", || match self.handle_file(fh.0) {
            Ok((f, true)) => match sys::fallocate(f.as_fd(), mode, offset, length) {
                Ok(()) => {
                    self.kill_setid(req.pid(), ino.0, f.as_fd());
                    reply.ok()
                }
                Err(err) => reply.error(e(errno(err))),
            },
            Ok(_) => reply.error(Errno::EBADF),
            Err(err) => reply.error(e(err)),
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.guard("lseek", || match self.handles.get(&fh.0).as_deref() {
            Some(Handle::File { file, .. }) => match sys::lseek(file.as_fd(), offset, whence) {
                Ok(o) => reply.offset(o),
                Err(err) => reply.error(e(errno(err))),
            },
            Some(Handle::Inline { data }) => {
                let len = data.len() as i64;
                match whence {
                    libc::SEEK_DATA if offset < len => reply.offset(offset),
                    libc::SEEK_HOLE if offset < len => reply.offset(len),
                    libc::SEEK_SET => reply.offset(offset),
                    libc::SEEK_END => reply.offset(len + offset),
                    _ => reply.error(Errno::from_i32(libc::ENXIO)),
                }
            }
            _ => reply.error(Errno::EBADF),
        });
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.guard("copy_file_range", || {
            let src = match self.handle_file(fh_in.0) {
                Ok((f, _)) => f,
                Err(err) => return reply.error(e(err)),
            };
            let dst = match self.handle_file(fh_out.0) {
                Ok((f, true)) => f,
                Ok(_) => return reply.error(Errno::EBADF),
                Err(err) => return reply.error(e(err)),
            };
            let mut oi = offset_in as i64;
            let mut oo = offset_out as i64;
            let want = len.min(1 << 30) as usize;
            match sys::copy_file_range(src.as_fd(), &mut oi, dst.as_fd(), &mut oo, want) {
                Ok(n) => {
                    self.kill_setid(req.pid(), ino_out.0, dst.as_fd());
                    reply.written(n as u32)
                }
                Err(err) => reply.error(e(errno(err))),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{guard, read_ahead_range};
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_panicking_handler_is_contained_and_its_captures_dropped() {
        struct Flag<'a>(&'a AtomicBool);
        impl Drop for Flag<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = AtomicBool::new(false);
        let reply = Flag(&dropped);
        guard("test", move || {
            let _keep = reply;
            panic!("boom");
        });
        // The stand-in for the unsent reply was dropped (fuser then answers EIO).
        assert!(dropped.load(Ordering::SeqCst));
        let mut ran = false;
        guard("test", || ran = true);
        assert!(ran);
    }

    #[test]
    fn read_ahead_asks_for_each_range_once() {
        let kib = 1u64 << 10;
        let mib = kib << 10;
        let size = 128 << 10;
        // The first READ asks for the whole window (4 MiB for small READs).
        let mut done = 0;
        let (from, to) = read_ahead_range(done, 128 * kib, size).expect("first hint");
        assert_eq!((from, to), (128 * kib, 128 * kib + 4 * mib));
        done = to;
        // Each following sequential READ asks only for the new 128 KiB.
        let mut asked = to - from;
        for i in 2..=64u64 {
            let (from, to) = read_ahead_range(done, i * 128 * kib, size).expect("next hint");
            assert_eq!(from, done, "READ {i} starts where the last hint ended");
            assert_eq!(to - from, 128 * kib);
            asked += to - from;
            done = to;
        }
        // 8 MiB read, each page of the read plus the window asked for once.
        assert_eq!(asked, 8 * mib + 4 * mib - 128 * kib);
        // The same READ again (a racing worker): nothing new to ask for.
        assert_eq!(read_ahead_range(done, 64 * 128 * kib, size), None);
        // A seek back restarts the window at the READ.
        assert_eq!(
            read_ahead_range(done, 256 * kib, size),
            Some((256 * kib, 256 * kib + 4 * mib))
        );
        // So does a seek past the hinted window.
        assert_eq!(
            read_ahead_range(done, 100 * mib, size),
            Some((100 * mib, 104 * mib))
        );
        // Large READs look four READs ahead.
        assert_eq!(
            read_ahead_range(0, 2 * mib, 2 * mib as usize),
            Some((2 * mib, 10 * mib))
        );
    }
}
