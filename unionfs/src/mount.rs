//! Mounting: [`MountConfig`], [`mount_background`], [`mount_foreground`].

use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use fuser::{Config, SessionACL};

use crate::kmount::{self, KernelMount, KernelOptions};

use crate::dir_layer::DirLayer;
use crate::fs::{FsTuning, UnionFs};
use crate::latency::BusyLatency;
use crate::layer::Layer;
use crate::relay::Relay;
use crate::sys;
use crate::union::{IdMapping, IndexDir, Union, UnionOptions, Upper, INDEX_DIR};
use crate::Error;

/// One lower layer of a mount.
#[derive(Clone)]
pub enum LowerSpec {
    /// A plain directory (`lowerdir=`).
    Dir(PathBuf),
    /// One layer of a `layers-format` store: the store directory and the layer id (hex).
    Store {
        /// Store directory.
        store: PathBuf,
        /// Layer id as hex.
        layer: String,
    },
    /// Any other [`Layer`] implementation.
    Custom(Arc<dyn Layer>),
}

impl std::fmt::Debug for LowerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LowerSpec::Dir(p) => write!(f, "Dir({})", p.display()),
            LowerSpec::Store { store, layer } => write!(f, "Store({}, {layer})", store.display()),
            LowerSpec::Custom(l) => write!(f, "Custom({})", l.describe()),
        }
    }
}

/// An id mapping range: `count` ids starting at `inside` (shown in the
/// mount) map to ids starting at `outside` (stored on disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    /// First id as shown in the mount.
    pub inside: u32,
    /// First id as stored on disk.
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

/// Everything a mount needs.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// Read-only lowers, top first (like `lowerdir=TOP:...:BOTTOM`).
    pub lowers: Vec<LowerSpec>,
    /// Writable upper directory; `None` gives a read-only mount.
    pub upper: Option<PathBuf>,
    /// Work directory on the same filesystem as `upper` (required with `upper`).
    pub work: Option<PathBuf>,
    /// Let other users (and containers' users) access the mount (`allow_other`).
    pub allow_other: bool,
    /// Kernel permission checks (`default_permissions`); on by default.
    pub default_permissions: bool,
    /// Show every file as owned by root (fuse-overlayfs `squash_to_root`).
    pub squash_to_root: bool,
    /// uid mapping (fuse-overlayfs `uidmapping=`); empty is the identity.
    pub uid_map: Vec<IdRange>,
    /// gid mapping (fuse-overlayfs `gidmapping=`); empty is the identity.
    pub gid_map: Vec<IdRange>,
    /// FUSE worker threads (each with its own cloned /dev/fuse fd).
    pub threads: usize,
    /// Use FUSE passthrough for file data when the kernel and privileges allow it.
    pub passthrough: bool,
    /// Use the kernel writeback cache when passthrough is off.
    pub writeback: bool,
    /// Serve sequential READs of lower data that is not in the page cache
    /// with `O_DIRECT` (reads without passthrough): the data is then cached
    /// once, in the mount's page cache, not twice.
    pub lower_direct: bool,
    /// Metadata-only copy-up for chmod/chown/utimes/xattr changes.
    pub metacopy: bool,
    /// fsync copied-up data (fuse-overlayfs `fsync=1`).
    pub fsync: bool,
    /// Keep idle CPUs out of deep sleep while requests arrive, by holding
    /// a zero PM QoS CPU latency request (root only; see [`crate::latency`]).
    pub cpu_latency: bool,
    /// How long a worker that has replied polls for the next request
    /// before it sleeps, in microseconds (0: never; see [`crate::relay`]).
    pub spin_us: u64,
    /// The mount's read-ahead window in KiB, set through sysfs once the
    /// mount is live (root only; 0 keeps the kernel's 128 KiB). It sizes
    /// the READ requests of reads that do not go through passthrough.
    pub readahead_kb: u32,
    /// Source name shown in /proc/mounts.
    pub fsname: String,
    /// Extra generic mount options passed to the kernel (`nodev`, `nosuid`, `noexec`, `noatime`, ...).
    pub mount_options: Vec<String>,
}

/// The default spin budget (`spin=`), in microseconds: longer than the
/// gap between the requests of one busy process (10–30 µs here).
pub const DEFAULT_SPIN_US: u64 = 50;

/// The default read-ahead window (`readahead_kb=`): one READ request of
/// the kernel's maximum size (256 pages) instead of eight of 128 KiB.
pub const DEFAULT_READAHEAD_KB: u32 = 1024;

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            lowers: Vec::new(),
            upper: None,
            work: None,
            allow_other: false,
            default_permissions: true,
            squash_to_root: false,
            uid_map: Vec::new(),
            gid_map: Vec::new(),
            threads: 4,
            passthrough: true,
            writeback: true,
            lower_direct: true,
            metacopy: true,
            fsync: false,
            cpu_latency: true,
            spin_us: DEFAULT_SPIN_US,
            readahead_kb: DEFAULT_READAHEAD_KB,
            fsname: "unionfs".to_string(),
            mount_options: Vec::new(),
        }
    }
}

fn open_lower(spec: &LowerSpec) -> Result<Arc<dyn Layer>, Error> {
    match spec {
        LowerSpec::Dir(p) => Ok(Arc::new(DirLayer::open(p).map_err(|e| Error::Io {
            what: format!("lower directory {}", p.display()),
            source: e,
        })?)),
        LowerSpec::Store { store, layer } => crate::store_layer::open_store_layer(store, layer),
        LowerSpec::Custom(l) => Ok(l.clone()),
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Opens the upper and work dirs and cleans the work area (made if new).
/// A mount writes nothing else until something changes: the whiteout form
/// is probed at the first whiteout, the hard-link index made at the first
/// copy-up of a lower hard-link group.
fn open_upper(upper: &Path, work: &Path) -> Result<Upper, Error> {
    let root = sys::open_dir_path(upper)
        .map_err(io_err(format!("upper directory {}", upper.display())))?;
    let work_root =
        sys::open_dir_path(work).map_err(io_err(format!("work directory {}", work.display())))?;
    let ust =
        sys::fstat(root.as_fd()).map_err(io_err(format!("upper directory {}", upper.display())))?;
    let wst = sys::fstat(work_root.as_fd())
        .map_err(io_err(format!("work directory {}", work.display())))?;
    if ust.st_dev != wst.st_dev {
        return Err(Error::Config(format!(
            "upper {} and work {} must be on the same filesystem",
            upper.display(),
            work.display()
        )));
    }
    // A work dir made just now is empty: nothing to clean.
    let fresh = match sys::mkdir_at(work_root.as_fd(), b"work", 0o700) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
        Err(e) => {
            return Err(Error::Io {
                what: format!("work directory {}/work", work.display()),
                source: e,
            })
        }
    };
    let workdir = sys::open_at(
        work_root.as_fd(),
        b"work",
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(io_err(format!("work directory {}/work", work.display())))?;
    let privileged = sys::euid() == 0;
    let index = IndexDir::open(work_root).map_err(io_err(format!(
        "index directory {}/{}",
        work.display(),
        String::from_utf8_lossy(INDEX_DIR)
    )))?;
    let up = Upper {
        root: Arc::new(root),
        work: Arc::new(workdir),
        index,
        char_whiteouts: OnceLock::new(),
        xattr_ns: if privileged { "trusted." } else { "user." },
        shared_whiteout: Default::default(),
    };
    // Leftovers of an interrupted copy-up are never visible: remove them.
    if !fresh {
        clean_work(&up).map_err(io_err(format!(
            "cleaning work directory {}/work",
            work.display()
        )))?;
    }
    Ok(up)
}

fn clean_work(up: &Upper) -> std::io::Result<()> {
    fn rm_tree(dir: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
        for (name, _, dtype) in sys::read_dir(dir)? {
            if dtype == libc::DT_DIR {
                let sub = sys::open_at(
                    dir,
                    &name,
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?;
                rm_tree(sub.as_fd())?;
                sys::unlink_at(dir, &name, true)?;
            } else {
                sys::unlink_at(dir, &name, false)?;
            }
        }
        Ok(())
    }
    rm_tree(up.work.as_fd())
}

fn to_mapping(ranges: &[IdRange], squash: bool) -> IdMapping {
    IdMapping {
        ranges: ranges
            .iter()
            .map(|r| (r.inside, r.outside, r.count))
            .collect(),
        squash_to_root: squash,
    }
}

/// Opens the layers and the upper of `cfg` and builds the union (no mount).
pub(crate) fn build_union(cfg: &MountConfig) -> Result<Union, Error> {
    if cfg.lowers.is_empty() && cfg.upper.is_none() {
        return Err(Error::Config(
            "no lower layers and no upper directory: give lowerdir= or an image".into(),
        ));
    }
    if cfg.upper.is_some() != cfg.work.is_some() {
        return Err(Error::Config(
            "upperdir and workdir go together: give both or neither".into(),
        ));
    }
    sys::raise_nofile_limit();
    let layers = cfg
        .lowers
        .iter()
        .map(open_lower)
        .collect::<Result<Vec<_>, _>>()?;
    let upper = match (&cfg.upper, &cfg.work) {
        (Some(u), Some(w)) => Some(open_upper(u, w)?),
        _ => None,
    };
    let opts = UnionOptions {
        metacopy: cfg.metacopy,
        fsync: cfg.fsync,
        uids: to_mapping(&cfg.uid_map, cfg.squash_to_root),
        gids: to_mapping(&cfg.gid_map, cfg.squash_to_root),
        dir_cache_entries: 256,
    };
    Ok(Union::new(layers, upper, opts))
}

/// Builds the FUSE filesystem and the fuser session config for `cfg`.
fn prepare(cfg: &MountConfig) -> Result<(UnionFs, Config, KernelOptions), Error> {
    let union = Arc::new(build_union(cfg)?);
    let read_only = union.upper.is_none();
    let fs = UnionFs::new(
        union,
        FsTuning {
            passthrough: cfg.passthrough,
            writeback: cfg.writeback,
            lower_direct: cfg.lower_direct,
            posix_acl: cfg.default_permissions,
            cpu_latency: cfg.cpu_latency,
        },
    );
    let mut k = KernelOptions {
        fsname: cfg.fsname.clone(),
        subtype: "unionfs".to_string(),
        allow_other: cfg.allow_other,
        default_permissions: cfg.default_permissions,
        read_only,
        ..KernelOptions::default()
    };
    for o in &cfg.mount_options {
        match o.as_str() {
            "dev" => k.dev = true,
            "nodev" => k.dev = false,
            "suid" => k.suid = true,
            "nosuid" => k.suid = false,
            "exec" => k.noexec = false,
            "noexec" => k.noexec = true,
            "atime" => k.noatime = false,
            "noatime" => k.noatime = true,
            "sync" => k.sync = true,
            "async" => k.sync = false,
            "dirsync" => k.dirsync = true,
            "ro" => k.read_only = true,
            _ => {}
        }
    }
    let mut config = Config::default();
    config.acl = acl(cfg);
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = true;
    Ok((fs, config, k))
}

fn acl(cfg: &MountConfig) -> SessionACL {
    if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    }
}

/// Mounts the kernel side and starts a fuser session on the connection.
fn connect(cfg: &MountConfig, mountpoint: &Path) -> Result<Connected, Error> {
    let (fs, config, kopts) = prepare(cfg)?;
    let notifier = fs.notifier_slot();
    let latency = fs.latency_handle();
    let relay_slot = fs.relay_slot();
    let (fd, km) = kmount::mount(mountpoint, &kopts)
        .map_err(io_err(format!("mounting at {}", mountpoint.display())))?;
    let km = Arc::new(km);
    match fd.try_clone() {
        Ok(dev) => {
            let relay = Arc::new(Relay::new(
                dev,
                cfg.threads.max(1),
                std::time::Duration::from_micros(cfg.spin_us),
            ));
            km.on_unmount(relay.clone());
            let _ = relay_slot.set(relay);
        }
        // Without a relay every worker simply goes back to `read`.
        Err(e) => tracing::warn!("no request relay (duplicating /dev/fuse): {e}"),
    }
    match fuser::Session::from_fd(fs, fd, acl(cfg), config) {
        Ok(s) => {
            let _ = notifier.set(s.notifier());
            Ok(Connected {
                session: s,
                kernel: km,
                latency,
                readahead_kb: cfg.readahead_kb,
            })
        }
        Err(e) => {
            let _ = km.unmount(true);
            Err(io_err(format!("mounting at {}", mountpoint.display()))(e))
        }
    }
}

/// A mounted, handshaken connection not yet served.
struct Connected {
    session: fuser::Session<UnionFs>,
    kernel: Arc<KernelMount>,
    /// The filesystem's CPU latency holder, if it makes requests.
    latency: Option<BusyLatency>,
    /// `readahead_kb` to set once requests are served.
    readahead_kb: u32,
}

/// A live mount served by background threads. Unmounts on drop.
pub struct MountHandle {
    session: Option<fuser::BackgroundSession>,
    kernel: Arc<KernelMount>,
    mountpoint: PathBuf,
}

impl MountHandle {
    /// The mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the server threads to finish.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), Error> {
        if self.session.is_none() {
            return Ok(());
        }
        self.kernel
            .unmount(false)
            .map_err(io_err(format!("unmounting {}", self.mountpoint.display())))?;
        if let Some(s) = self.session.take() {
            s.join()
                .map_err(io_err(format!("serving {}", self.mountpoint.display())))?;
        }
        Ok(())
    }

    /// Waits until the filesystem is unmounted from outside (`umount`, `fusermount3 -u`).
    pub fn wait(mut self) -> Result<(), Error> {
        if let Some(s) = self.session.take() {
            s.join()
                .map_err(io_err(format!("serving {}", self.mountpoint.display())))?;
        }
        Ok(())
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!("{e}");
        }
    }
}

/// Mounts the union described by `cfg` at `mountpoint` and serves it from
/// background threads.
///
/// Returns once the mount is live (the kernel handshake is done), so the
/// caller can use the mount point at once. As root the mount is made with
/// mount(2); as an ordinary user through `fusermount3` (needs `/dev/fuse`
/// readable and writable, and `user_allow_other` in /etc/fuse.conf for
/// `allow_other`). The returned [`MountHandle`] unmounts when dropped or on
/// [`MountHandle::unmount`].
///
/// ```no_run
/// use unionfs::{mount_background, LowerSpec, MountConfig};
/// let cfg = MountConfig {
///     lowers: vec![LowerSpec::Dir("/srv/lower".into())],
///     upper: Some("/srv/upper".into()),
///     work: Some("/srv/work".into()),
///     allow_other: true,
///     ..MountConfig::default()
/// };
/// let handle = mount_background(cfg, std::path::Path::new("/srv/rootfs"))?;
/// // ... run the container on /srv/rootfs ...
/// handle.unmount()?;
/// # Ok::<(), unionfs::Error>(())
/// ```
pub fn mount_background(cfg: MountConfig, mountpoint: &Path) -> Result<MountHandle, Error> {
    let Connected {
        session,
        kernel,
        latency,
        readahead_kb,
    } = connect(&cfg, mountpoint)?;
    if let Some(l) = latency {
        l.start();
    }
    let bg = session.spawn().map_err(io_err(format!(
        "starting the server for {}",
        mountpoint.display()
    )))?;
    set_readahead(mountpoint, readahead_kb);
    Ok(MountHandle {
        session: Some(bg),
        kernel,
        mountpoint: mountpoint.to_path_buf(),
    })
}

/// Mounts and serves in the calling thread until the filesystem is
/// unmounted (`umount`, `fusermount3 -u`) or one of SIGTERM/SIGINT/SIGHUP
/// arrives (then it unmounts itself). `ready` is called once the mount is live.
pub fn mount_foreground(
    cfg: MountConfig,
    mountpoint: &Path,
    ready: impl FnOnce(),
) -> Result<(), Error> {
    let sigs = sys::block_term_signals();
    let conn = connect(&cfg, mountpoint)?;
    ready();
    serve(conn, sigs, mountpoint)
}

/// Sets the read-ahead window of the mount at `mountpoint` to `kb` KiB
/// (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`; 0: leave it). FUSE starts a
/// mount at 128 KiB and the INIT reply can only lower it, so sequential reads
/// without passthrough come in 128 KiB READ requests; 1 MiB takes an eighth
/// of the round trips. Best effort: only root may write the file. It finds
/// the mount in `/proc/self/mountinfo` and sends the mount no request.
pub fn set_readahead(mountpoint: &Path, kb: u32) {
    if kb == 0 {
        return;
    }
    match fuse_dev_at(mountpoint) {
        Ok(Some(dev)) => {
            let path = format!(
                "/sys/class/bdi/{}:{}/read_ahead_kb",
                libc::major(dev),
                libc::minor(dev)
            );
            if let Err(err) = std::fs::write(&path, kb.to_string()) {
                tracing::debug!("read-ahead left as is ({path}: {err})");
            }
        }
        // Unmounted meanwhile: never tune the file system underneath.
        Ok(None) => tracing::debug!(
            "read-ahead left as is: {} is not a FUSE mount",
            mountpoint.display()
        ),
        Err(err) => tracing::debug!("read-ahead left as is ({}: {err})", mountpoint.display()),
    }
}

/// The device number of the FUSE file system mounted on top at `path`, or
/// `None` if the top mount there is not FUSE (unmounted meanwhile).
///
/// Read from `/proc/self/mountinfo`, never by a `stat` or `statfs` of the
/// mount: those are requests to this very daemon. A daemon thread waiting
/// on its own mount, when the daemon is killed after a worker has taken
/// the request, waits for an answer nobody will send; it cannot be killed
/// (the kernel waits out requests already in user space), and it keeps
/// `/dev/fuse` open, so the mount is never torn down either.
fn fuse_dev_at(path: &Path) -> std::io::Result<Option<u64>> {
    // Resolve the parent only: resolving the last component enters the mount.
    let abs = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            std::fs::canonicalize(parent)?.join(name)
        }
        _ => path.to_path_buf(),
    };
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let top = table
        .lines()
        .filter_map(parse_mountinfo)
        .rfind(|m| m.point == abs);
    Ok(top.and_then(|m| {
        let fuse = m.fstype == "fuse" || m.fstype == "fuseblk" || m.fstype.starts_with("fuse.");
        fuse.then_some(m.dev)
    }))
}

/// The fields of a `/proc/self/mountinfo` line [`fuse_dev_at`] needs.
#[derive(Debug, PartialEq)]
struct MountLine {
    dev: u64,
    point: PathBuf,
    fstype: String,
}

/// Parses one `/proc/self/mountinfo` line: `ID PARENT MAJOR:MINOR ROOT
/// POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`, with spaces,
/// tabs, newlines and backslashes in paths escaped as octal (`\040`).
fn parse_mountinfo(line: &str) -> Option<MountLine> {
    let (head, tail) = line.split_once(" - ")?;
    let fields: Vec<&str> = head.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let point = unescape_mountinfo(fields.get(4)?);
    let fstype = tail.split(' ').next()?.to_string();
    Some(MountLine {
        dev: libc::makedev(major.parse().ok()?, minor.parse().ok()?),
        point: PathBuf::from(std::ffi::OsString::from_vec(point)),
        fstype,
    })
}

/// Undoes the octal escapes of a `/proc/self/mountinfo` path field: the
/// kernel writes a space, tab, newline or backslash in a mount point as
/// `\ooo` (`\040` is a space).
pub fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(c) => {
                out.push(c);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// How long the signal thread waits before starting its own work (the
/// latency holder) and waiting for signals.
const STARTUP_QUIET: std::time::Duration = std::time::Duration::from_millis(20);

fn serve(conn: Connected, sigs: libc::sigset_t, mountpoint: &Path) -> Result<(), Error> {
    let Connected {
        session,
        kernel,
        latency,
        readahead_kb,
    } = conn;
    let unmounter = kernel.clone();
    let mnt = mountpoint.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("unionfs-signals".into())
        .spawn(move || {
            // Let the request threads start first: on a 2-CPU machine this
            // thread and the latency holder would otherwise compete with
            // them for the first requests after the mount. A signal that
            // arrives meanwhile stays pending (it is blocked) until the wait.
            std::thread::sleep(STARTUP_QUIET);
            set_readahead(&mnt, readahead_kb);
            // Off the path of the first request, which would start it.
            if let Some(l) = latency {
                l.start();
            }
            let sig = sys::wait_signal(&sigs);
            tracing::info!(sig, "signal received, unmounting");
            if unmounter.unmount(false).is_err() {
                let _ = unmounter.unmount(true);
            }
        });
    if let Err(e) = spawned {
        // Nothing would unmount on a signal: take the mount down rather
        // than serve one that SIGTERM cannot stop.
        let _ = kernel.unmount(true);
        return Err(io_err("starting the signal thread".into())(e));
    }
    let res = session
        .run()
        .map_err(io_err(format!("serving {}", mountpoint.display())));
    // Only if the session ended with the mount still there (an error).
    let _ = kernel.unmount(true);
    res
}

/// Mounts in a daemon process (like fuse-overlayfs without `-f`): mounts
/// and completes the kernel handshake in this process, so every error is
/// returned here, then forks; the child serves the mount in its own session
/// until unmounted or SIGTERM, and this returns at once. Call it before
/// starting any thread.
pub fn mount_daemon(cfg: MountConfig, mountpoint: &Path, keep_stderr: bool) -> Result<(), Error> {
    let sigs = sys::block_term_signals();
    let conn = match connect(&cfg, mountpoint) {
        Ok(c) => c,
        Err(e) => {
            sys::unblock_signals(&sigs);
            return Err(e);
        }
    };
    match sys::fork() {
        Err(e) => {
            let _ = conn.kernel.unmount(true);
            sys::unblock_signals(&sigs);
            Err(io_err("forking the daemon".into())(e))
        }
        Ok(Some(_child)) => {
            // The child owns the connection now. Dropping the session here
            // would run the filesystem's destroy hook in this process.
            std::mem::forget(conn);
            sys::unblock_signals(&sigs);
            Ok(())
        }
        Ok(None) => {
            sys::setsid();
            sys::detach_stdio_keep(keep_stderr);
            let code = match serve(conn, sigs, mountpoint) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e}");
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_mountinfo, MountLine};
    use std::path::PathBuf;

    #[test]
    fn mountinfo_lines_give_device_point_and_type() {
        let line = "45 27 0:40 / /tmp/a\\040b/mnt rw,nosuid,nodev,relatime shared:7 - \
                    fuse.unionfs unionfs rw,user_id=0,group_id=0";
        assert_eq!(
            parse_mountinfo(line),
            Some(MountLine {
                dev: libc::makedev(0, 40),
                point: PathBuf::from("/tmp/a b/mnt"),
                fstype: "fuse.unionfs".into(),
            })
        );
        let odd = "46 27 259:3 / /x\\134y\\011z rw - ext4 /dev/vda1 rw";
        let m = parse_mountinfo(odd).expect("a line with escapes");
        assert_eq!(m.point, PathBuf::from("/x\\y\tz"));
        assert_eq!(m.dev, libc::makedev(259, 3));
        assert_eq!(m.fstype, "ext4");
        assert_eq!(parse_mountinfo("garbage"), None);
        assert_eq!(parse_mountinfo("1 2 nocolon / /a rw - ext4 x rw"), None);
    }
}
