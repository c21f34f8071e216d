//! The union itself: name resolution across layers, merged listings,
//! copy-up and the writes into the upper directory. The FUSE glue in
//! `fs.rs` calls into this.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::inode::{lower_tag, InoMap, Node, NodeState, UpperRef, ROOT_INO, UPPER_TAG};
use crate::layer::{EntryKind, LNode, Layer, LayerAttr, LayerData};
use crate::sys::{self, Time};
use crate::whiteout;

/// Files at least this big get a metadata-only copy-up for chmod/chown/
/// utimes/xattr changes. Smaller ones are copied whole: cheap, and readable
/// by kernel overlayfs mounted without `metacopy=on`.
pub const METACOPY_MIN_SIZE: u64 = 1 << 20;

/// errno-carrying result.
pub type Res<T> = Result<T, i32>;

/// Converts an io error to an errno.
pub fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The writable upper directory and its work directory.
pub struct Upper {
    /// Upper root.
    pub root: Arc<OwnedFd>,
    /// `WORKDIR/work`: copy-up staging area on the same filesystem.
    pub work: Arc<OwnedFd>,
    /// `WORKDIR/unionfs-index`: the copied-up inodes of lower hard-link
    /// groups, one per group, named by the hex union inode number of the
    /// lower origin. Names of the group still only in the lowers reach the
    /// upper copy through it; it persists across mounts.
    pub index: IndexDir,
    /// Whiteouts are written as char 0/0 (else as `.wh.NAME` files):
    /// probed at the first whiteout (see [`Upper::char_whiteouts`]).
    pub char_whiteouts: OnceLock<bool>,
    /// Private xattr namespace: `trusted.` as root, `user.` otherwise.
    pub xattr_ns: &'static str,
    /// Name in the work dir of the whiteout inode that new whiteouts are
    /// hard links to (overlayfs does the same since Linux 5.8): removing a
    /// lower file then allocates no inode. Made by the first whiteout.
    pub shared_whiteout: Mutex<SharedWhiteout>,
}

/// State of [`Upper::shared_whiteout`].
#[derive(Debug, Default)]
pub enum SharedWhiteout {
    /// Not made yet.
    #[default]
    Unmade,
    /// This work-dir name.
    Made(Vec<u8>),
    /// The upper filesystem refused a hard link: one inode per whiteout.
    Refused,
}

impl Upper {
    fn key(&self, suffix: &str) -> Vec<u8> {
        format!("{}{}", self.xattr_ns, suffix).into_bytes()
    }

    /// Whether whiteouts are char 0/0 devices: whether this process may
    /// make one in the work dir, tried once, at the first whiteout rather
    /// than at mount (a mount that removes nothing never writes there).
    pub fn char_whiteouts(&self) -> bool {
        *self.char_whiteouts.get_or_init(|| {
            let probe = format!("#probe-{}", std::process::id()).into_bytes();
            let ok = sys::mknod_at(self.work.as_fd(), &probe, libc::S_IFCHR, 0).is_ok();
            if ok {
                let _ = sys::unlink_at(self.work.as_fd(), &probe, false);
            }
            ok
        })
    }
}

/// The hard-link index directory (`WORKDIR/unionfs-index`), made when the
/// first lower hard-link group is copied up: until then there is nothing
/// to find in it, and a mount does not have to create it.
pub struct IndexDir {
    /// `WORKDIR`, where the index is made.
    parent: OwnedFd,
    dir: OnceLock<Arc<OwnedFd>>,
    making: Mutex<()>,
}

/// Name of the hard-link index inside the work directory (not `index`,
/// which kernel overlayfs uses for its own, differently named, entries).
pub const INDEX_DIR: &[u8] = b"unionfs-index";

impl IndexDir {
    /// The index of work directory `parent`, opened if it exists.
    pub fn open(parent: OwnedFd) -> io::Result<IndexDir> {
        let dir = OnceLock::new();
        match Self::open_at(parent.as_fd()) {
            Ok(fd) => {
                let _ = dir.set(Arc::new(fd));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        Ok(IndexDir {
            parent,
            dir,
            making: Mutex::new(()),
        })
    }

    fn open_at(parent: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        sys::open_at(
            parent,
            INDEX_DIR,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
    }

    /// The index directory if it exists.
    pub fn get(&self) -> Option<&Arc<OwnedFd>> {
        self.dir.get()
    }

    /// The index directory, made if it does not exist yet.
    pub fn get_or_make(&self) -> io::Result<&Arc<OwnedFd>> {
        if let Some(d) = self.dir.get() {
            return Ok(d);
        }
        let _making = self.making.lock();
        if self.dir.get().is_none() {
            match sys::mkdir_at(self.parent.as_fd(), INDEX_DIR, 0o700) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            let _ = self.dir.set(Arc::new(Self::open_at(self.parent.as_fd())?));
        }
        self.dir
            .get()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))
    }
}

/// One entry of a merged directory listing.
#[derive(Clone, Debug)]
pub struct DirEnt {
    /// Name.
    pub name: Vec<u8>,
    /// Union inode number.
    pub ino: u64,
    /// Kind.
    pub kind: EntryKind,
    /// Bit `l` set: lower layer `l` holds the name (see [`LowerHint`]).
    pub in_lowers: u64,
}

/// What a merged listing learned about the lowers of one of its names:
/// a lower layer that was listed without the name need not be asked for
/// it again (lowers never change). Layers past the 64th are always asked.
#[derive(Clone, Copy, Debug, Default)]
pub struct LowerHint {
    listed: u64,
    present: u64,
}

/// A resolved name: its node and attributes, `None` when the union has no
/// such name.
pub type Resolved = Option<(Arc<Node>, LayerAttr)>;

/// What a resolve is told and what it found out beyond the node.
#[derive(Default)]
struct Probe {
    /// In: the attributes of a non-directory just created at the name in
    /// the upper (skips the upper probe and the xattr reads).
    created: Option<libc::stat>,
    /// Out: the upper directory holds a whiteout for the name.
    upper_whiteout: bool,
}

impl LowerHint {
    fn absent_from(self, layer: usize) -> bool {
        layer < 64 && (self.listed >> layer) & 1 == 1 && (self.present >> layer) & 1 == 0
    }
}

fn layer_bit(layer: usize) -> u64 {
    if layer < 64 {
        1 << layer
    } else {
        0
    }
}

/// readdir position of the first listing entry: positions 1 and 2 are
/// `.` and `..`, 0 is the start.
pub const FIRST_COOKIE: u64 = 3;

/// A merged directory listing in readdir order, with the readdir position
/// ("cookie") after each entry.
///
/// Cookies come from a keyed hash of the name and entries are sorted by
/// them, so an entry keeps its position however other entries come and go:
/// a reader that continues from a saved position in a listing computed
/// after changes gets every entry that was neither added nor removed
/// meanwhile exactly once, with no per-reader state in the daemon. Two
/// names with the same hash (62 bits, random key per mount) are told apart
/// by bumping the later cookie.
pub struct Listing {
    entries: Vec<DirEnt>,
    cookies: Vec<u64>,
    /// The directory's lowers when it was listed, and which were read.
    lowers: Box<[(usize, LNode)]>,
    listed: u64,
}

impl Listing {
    /// The lower-layer hint for `entry` of this listing, when `lowers` are
    /// still the directory's lowers.
    pub fn hint(&self, entry: &DirEnt) -> LowerHint {
        LowerHint {
            listed: self.listed,
            present: entry.in_lowers,
        }
    }

    fn new(
        entries: Vec<DirEnt>,
        hasher: &RandomState,
        lowers: Box<[(usize, LNode)]>,
        listed: u64,
    ) -> Listing {
        let mut keyed: Vec<(u64, DirEnt)> = entries
            .into_iter()
            .map(|d| (FIRST_COOKIE + (hasher.hash_one(&d.name) >> 2), d))
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        let mut cookies = Vec::with_capacity(keyed.len());
        let mut out = Vec::with_capacity(keyed.len());
        let mut last = 0;
        for (c, d) in keyed {
            // Below 2^62 + 3 + len: never near the sign bit of a file offset.
            let c = c.max(last + 1);
            cookies.push(c);
            out.push(d);
            last = c;
        }
        Listing {
            entries: out,
            cookies,
            lowers,
            listed,
        }
    }

    /// The entries after readdir position `pos`, each with its own position.
    pub fn after(&self, pos: u64) -> impl Iterator<Item = (u64, &DirEnt)> + '_ {
        let start = self.cookies.partition_point(|&c| c <= pos);
        self.cookies[start..]
            .iter()
            .copied()
            .zip(&self.entries[start..])
    }
}

impl std::ops::Deref for Listing {
    type Target = [DirEnt];

    fn deref(&self) -> &[DirEnt] {
        &self.entries
    }
}

/// Id mapping between what the mount shows and what is stored on disk.
#[derive(Clone, Debug, Default)]
pub struct IdMapping {
    /// (id shown in the mount, id on disk, count) ranges.
    pub ranges: Vec<(u32, u32, u32)>,
    /// Every id shows as 0 (root).
    pub squash_to_root: bool,
}

impl IdMapping {
    /// On-disk id → id shown in the mount.
    pub fn to_view(&self, host: u32) -> u32 {
        if self.squash_to_root {
            return 0;
        }
        if self.ranges.is_empty() {
            return host;
        }
        for &(view, h, n) in &self.ranges {
            if host >= h && host - h < n {
                return view + (host - h);
            }
        }
        65534
    }

    /// Id shown in the mount → on-disk id.
    pub fn to_host(&self, view: u32) -> u32 {
        if self.ranges.is_empty() {
            return view;
        }
        for &(v, h, n) in &self.ranges {
            if view >= v && view - v < n {
                return h + (view - v);
            }
        }
        view
    }
}

/// Runtime options of the union.
#[derive(Clone, Debug)]
pub struct UnionOptions {
    /// Metadata-only copy-up for chmod/chown/utimes/xattr changes.
    pub metacopy: bool,
    /// fsync copied-up data before it becomes visible.
    pub fsync: bool,
    /// uid mapping.
    pub uids: IdMapping,
    /// gid mapping.
    pub gids: IdMapping,
    /// Capacity of the merged-listing cache (directories).
    pub dir_cache_entries: usize,
}

/// The union of N read-only lowers and an optional upper.
pub struct Union {
    /// Lowers, top first.
    pub layers: Vec<Arc<dyn Layer>>,
    /// Upper, when writable.
    pub upper: Option<Upper>,
    /// Live nodes by union inode number.
    pub nodes: DashMap<u64, Arc<Node>>,
    /// Inode number allocation.
    pub inos: InoMap,
    /// Merged directory listings.
    dir_cache: Mutex<lru::LruCache<u64, Arc<Listing>>>,
    /// Key of the name hash that orders listings (see [`Listing`]).
    cookie_key: RandomState,
    /// Link counts of lower hard-link groups once one of their names was
    /// copied up, linked or removed: names still only in the lower count
    /// too, as with overlayfs's `index=on` (by union inode number).
    group_links: DashMap<u64, Group>,
    /// Lower hard-linked files known to have no index entry (saves a
    /// lookup in the index on every lookup of such a name).
    index_absent: DashMap<u64, ()>,
    /// Options.
    pub opts: UnionOptions,
    /// Daemon runs privileged (chown of new files possible).
    pub privileged: bool,
    /// The daemon's effective uid and gid (it never changes them): what
    /// new entries get from the kernel.
    pub daemon_ids: (u32, u32),
    tmp_counter: AtomicU64,
    /// This process's id, for temporary names (`getpid` is a system call).
    pid: u32,
    /// The upper filesystem has no reflinks (see [`copy_data`]).
    no_reflink: std::sync::atomic::AtomicBool,
}

/// A tracked lower hard-link group.
#[derive(Clone, Copy, Debug)]
struct Group {
    /// Names of the group in the union.
    links: u32,
    /// The group's upper inode lives in the index (its link count there
    /// counts the index entry too, so the union count is `links`).
    indexed: bool,
}

/// Index entry xattr: the group's link count in the union.
const INDEX_NLINK: &str = "overlay.unionfs.nlink";
/// Index entry xattr: the lower file's mtime when the group was copied up
/// (an index entry whose lower changed since is stale).
const INDEX_LOWER: &str = "overlay.unionfs.lower";

fn lower_stamp(a: &LayerAttr) -> Vec<u8> {
    format!("{}.{}:{}", a.mtime.0, a.mtime.1, a.size).into_bytes()
}

/// Puts back a directory's times saved before a change users did not make
/// (a copy-up or link-up into it); best effort.
fn restore_times(dir: BorrowedFd<'_>, saved: Option<&libc::stat>) {
    if let Some(pt) = saved {
        let _ = sys::utimens_at(
            dir,
            b"",
            Time::At(pt.st_atime, pt.st_atime_nsec),
            Time::At(pt.st_mtime, pt.st_mtime_nsec),
        );
    }
}

fn join_path(base: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(base.len() + 1 + name.len());
    p.extend_from_slice(base);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

fn is_missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

impl Union {
    /// Builds a union; creates the root node. The work dir must already be clean.
    pub fn new(layers: Vec<Arc<dyn Layer>>, upper: Option<Upper>, opts: UnionOptions) -> Union {
        let lowers: Vec<(usize, LNode)> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.root()))
            .collect();
        let root_state = NodeState {
            parent: None,
            name: Box::default(),
            upper: upper.as_ref().map(|u| UpperRef::Dir(u.root.clone())),
            lowers: lowers.into(),
            lower_path: Box::default(),
            metacopy: false,
            opaque: false,
            unlinked: false,
            pinned: None,
        };
        let nodes = sys::new_map();
        let root = Arc::new(Node::new(ROOT_INO, EntryKind::Dir, root_state));
        root.lookups.store(1, Ordering::Relaxed);
        nodes.insert(ROOT_INO, root);
        let cap = NonZeroUsize::new(opts.dir_cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        Union {
            layers,
            upper,
            nodes,
            inos: InoMap::default(),
            dir_cache: Mutex::new(lru::LruCache::new(cap)),
            cookie_key: RandomState::new(),
            group_links: sys::new_map(),
            index_absent: sys::new_map(),
            opts,
            privileged: sys::euid() == 0,
            daemon_ids: (sys::euid(), sys::egid()),
            tmp_counter: AtomicU64::new(0),
            pid: std::process::id(),
            no_reflink: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The node for `ino`.
    pub fn node(&self, ino: u64) -> Res<Arc<Node>> {
        self.nodes.get(&ino).map(|n| n.clone()).ok_or(libc::ESTALE)
    }

    /// The upper, or EROFS.
    pub fn upper(&self) -> Res<&Upper> {
        self.upper.as_ref().ok_or(libc::EROFS)
    }

    /// The index key of a lower hard-link group's origin, when it can be
    /// indexed (there is an upper, whose index is made on first use, and
    /// the number is stable across mounts).
    fn index_key(&self, ino: u64) -> Option<Vec<u8>> {
        self.upper.as_ref()?;
        let tag = ino >> 56;
        if tag == 0 || tag > self.layers.len() as u64 {
            return None;
        }
        Some(format!("{ino:016x}").into_bytes())
    }

    fn index_dir(&self) -> Res<&Arc<OwnedFd>> {
        self.upper()?.index.get_or_make().map_err(errno)
    }

    /// Finds the index entry of lower hard-linked file `ino` (whose lower
    /// attributes are `la`); loads the group's link count from it. A stale
    /// entry (its lower changed) is removed.
    fn index_lookup(&self, ino: u64, la: Option<&LayerAttr>) -> Option<(Vec<u8>, libc::stat)> {
        if self.index_absent.contains_key(&ino) {
            return None;
        }
        let key = self.index_key(ino)?;
        let up = self.upper.as_ref()?;
        let idx = up.index.get()?;
        let found = match sys::stat_at(idx.as_fd(), &key) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {
                let stamp = sys::get_xattr_at(idx.as_fd(), &key, &up.key(INDEX_LOWER))
                    .ok()
                    .flatten();
                if la.is_none_or(|la| stamp.as_deref() == Some(&lower_stamp(la)[..])) {
                    Some(st)
                } else {
                    tracing::warn!(
                        "index entry {} is stale (its lower file changed): removed",
                        String::from_utf8_lossy(&key)
                    );
                    let _ = sys::unlink_at(idx.as_fd(), &key, false);
                    None
                }
            }
            _ => None,
        };
        let Some(st) = found else {
            self.index_absent.insert(ino, ());
            return None;
        };
        let links = sys::get_xattr_at(idx.as_fd(), &key, &up.key(INDEX_NLINK))
            .ok()
            .flatten()
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u32>().ok())
            .unwrap_or_else(|| match la {
                Some(la) => la.nlink,
                None => u32::try_from(st.st_nlink.saturating_sub(1)).unwrap_or(u32::MAX),
            });
        self.group_links.entry(ino).or_insert(Group {
            links,
            indexed: true,
        });
        Some((key, st))
    }

    /// Records the group's link count on its index entry.
    fn index_store_links(&self, ino: u64, links: u32) {
        let (Some(key), Some(up)) = (self.index_key(ino), self.upper.as_ref()) else {
            return;
        };
        let Some(idx) = up.index.get() else {
            return;
        };
        if links == 0 {
            // No name of the group is left: the index entry goes too.
            let _ = sys::unlink_at(idx.as_fd(), &key, false);
            self.index_absent.insert(ino, ());
            return;
        }
        if let Err(err) = sys::set_xattr_at(
            idx.as_fd(),
            &key,
            &up.key(INDEX_NLINK),
            links.to_string().as_bytes(),
            0,
        ) {
            tracing::warn!(
                "recording the link count on index entry {}: {err}",
                String::from_utf8_lossy(&key)
            );
        }
    }

    /// Whether `node` is a lower-only name of a lower hard-link group that
    /// can be indexed: overlayfs copies such a name up (into the index)
    /// before it whites it out or renames over it, so the group's link
    /// count has an index entry to live on.
    pub fn wants_index_before_removal(&self, node: &Arc<Node>) -> bool {
        if node.kind != EntryKind::File || self.index_key(node.ino).is_none() {
            return false;
        }
        let st = node.state.read();
        match &st.upper {
            // A name reaching the index: linked up first, as for any change.
            Some(UpperRef::Index(_)) => return true,
            Some(_) => return false,
            None => {}
        }
        st.lowers
            .first()
            .and_then(|&(l, n)| self.layers[l].attr(n).ok())
            .is_some_and(|a| a.nlink > 1)
    }

    /// Where the upper copy of non-directory state `st` lives: (directory
    /// fd, name) of its linked name, or of its index entry.
    pub fn upper_entry(&self, st: &NodeState) -> Res<(Arc<OwnedFd>, Vec<u8>)> {
        match &st.upper {
            Some(UpperRef::Entry) => {
                let p = st.parent.as_ref().ok_or(libc::EIO)?;
                Ok((p.upper_dir().ok_or(libc::EIO)?, st.name.to_vec()))
            }
            Some(UpperRef::Index(key)) => Ok((self.index_dir()?.clone(), key.clone())),
            Some(UpperRef::Dir(fd)) => Ok((fd.clone(), Vec::new())),
            None => Err(libc::EIO),
        }
    }

    // ---- name resolution ------------------------------------------------

    fn walk_lower_path(&self, layer: usize, path: &[u8]) -> Option<LNode> {
        let l = &self.layers[layer];
        let mut cur = l.root();
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            match l.lookup(cur, comp) {
                Ok(Some((n, EntryKind::Dir))) => cur = n,
                _ => return None,
            }
        }
        Some(cur)
    }

    /// Follows a directory redirect `path` (`/`-separated from the root)
    /// in one lower layer. As in overlayfs, an opaque directory anywhere
    /// on the path (not only at its end) hides the layers below.
    fn walk_redirect(&self, layer: usize, path: &[u8]) -> RedirectWalk {
        let l = &self.layers[layer];
        let mut cur = l.root();
        let mut opaque = false;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            match l.lookup(cur, comp) {
                Ok(Some((n, EntryKind::Dir))) => {
                    cur = n;
                    opaque |= l.is_opaque(n).unwrap_or(false);
                }
                Ok(Some(_)) => return RedirectWalk::Stop,
                Ok(None) | Err(_) if opaque => return RedirectWalk::Stop,
                Ok(None) | Err(_) => return RedirectWalk::Missing,
            }
        }
        RedirectWalk::Dir(cur, opaque)
    }

    /// The topmost lower non-directory at `path` (`/`-separated from the
    /// root), for the data of a metacopy file with a redirect.
    fn find_lower_file(&self, path: &[u8]) -> Option<(usize, LNode, EntryKind)> {
        let cut = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let (dir, name) = path.split_at(cut);
        if name.is_empty() {
            return None;
        }
        for l in 0..self.layers.len() {
            let Some(d) = self.walk_lower_path(l, dir) else {
                continue;
            };
            match self.layers[l].lookup(d, name) {
                Ok(Some((_, EntryKind::Whiteout))) => return None,
                Ok(Some((n, EntryKind::File))) => return Some((l, n, EntryKind::File)),
                Ok(Some(_)) => return None,
                Ok(None) | Err(_) => {}
            }
        }
        None
    }

    /// The lowers holding `name` under `lowers` (top first: the first
    /// non-directory, or every directory down to an opaque one), with the
    /// first one's attributes when the lookup had them.
    #[allow(clippy::type_complexity)]
    fn lower_candidates(
        &self,
        lowers: &[(usize, LNode)],
        name: &[u8],
        dirs_only: bool,
        hint: LowerHint,
    ) -> Res<(Vec<(usize, LNode, EntryKind)>, Option<LayerAttr>)> {
        let mut out = Vec::new();
        let mut first_attr = None;
        for &(l, dir) in lowers {
            if hint.absent_from(l) {
                continue;
            }
            match self.layers[l].lookup_attr(dir, name).map_err(errno)? {
                None => continue,
                Some((_, EntryKind::Whiteout, _)) => break,
                Some((n, kind, attr)) => {
                    if kind != EntryKind::Dir {
                        if out.is_empty() && !dirs_only {
                            out.push((l, n, kind));
                            first_attr = attr;
                        }
                        break;
                    }
                    if out.is_empty() {
                        first_attr = attr;
                    }
                    out.push((l, n, kind));
                    if self.layers[l].is_opaque(n).map_err(errno)? {
                        break;
                    }
                }
            }
        }
        Ok((out, first_attr))
    }

    /// Whether `name` is visible in the lowers of `parent` (so deleting it needs a whiteout).
    pub fn name_in_lowers(&self, parent: &NodeState, name: &[u8]) -> Res<bool> {
        if parent.opaque {
            return Ok(false);
        }
        Ok(!self
            .lower_candidates(&parent.lowers, name, false, LowerHint::default())?
            .0
            .is_empty())
    }

    fn origin_of(&self, dir: BorrowedFd<'_>, name: &[u8]) -> Option<u64> {
        let up = self.upper.as_ref()?;
        let v = sys::get_xattr_at(dir, name, &up.key("overlay.unionfs.origin")).ok()??;
        std::str::from_utf8(&v).ok()?.parse().ok()
    }

    /// Resolves `name` in `parent` to a node (creating or refreshing it);
    /// `Ok(None)` when it does not exist in the union.
    pub fn resolve(&self, parent: &Arc<Node>, name: &[u8]) -> Res<Option<(Arc<Node>, LayerAttr)>> {
        self.resolve_hinted(parent, name, None, &mut Probe::default())
    }

    /// [`Union::resolve`] before a create: also says whether the upper
    /// directory holds a whiteout for `name` (which the create must remove).
    /// Without one there is nothing to clear: the kernel holds the parent's
    /// lock from the lookup to the create, so no one adds one in between.
    pub fn resolve_for_create(&self, parent: &Arc<Node>, name: &[u8]) -> Res<(Resolved, bool)> {
        let mut probe = Probe::default();
        let found = self.resolve_hinted(parent, name, None, &mut probe)?;
        Ok((found, probe.upper_whiteout))
    }

    /// The node of a non-directory this daemon has just created at `name`
    /// in `parent`'s upper directory, with `st` its attributes: its own
    /// entry, with no overlay xattrs and nothing below it to look up.
    pub fn resolve_created(
        &self,
        parent: &Arc<Node>,
        name: &[u8],
        st: &libc::stat,
    ) -> Res<Option<(Arc<Node>, LayerAttr)>> {
        let mut probe = Probe {
            created: Some(*st),
            ..Probe::default()
        };
        self.resolve_hinted(parent, name, None, &mut probe)
    }

    /// [`Union::resolve`] for a name of `listing`, the parent's listing:
    /// lower layers the listing showed without the name are not asked.
    pub fn resolve_listed(
        &self,
        parent: &Arc<Node>,
        listing: &Listing,
        entry: &DirEnt,
    ) -> Res<Option<(Arc<Node>, LayerAttr)>> {
        self.resolve_hinted(
            parent,
            &entry.name,
            Some((listing, listing.hint(entry))),
            &mut Probe::default(),
        )
    }

    fn resolve_hinted(
        &self,
        parent: &Arc<Node>,
        name: &[u8],
        hint: Option<(&Listing, LowerHint)>,
        probe: &mut Probe,
    ) -> Res<Option<(Arc<Node>, LayerAttr)>> {
        if name.len() > 255 {
            return Err(libc::ENAMETOOLONG);
        }
        if name == b"." || name == b".." {
            return Err(libc::EINVAL);
        }
        let ps = parent.snapshot();
        // The hint holds only while the directory still has the lowers it
        // was listed with.
        let hint = match hint {
            Some((listing, h)) if *listing.lowers == *ps.lowers => h,
            _ => LowerHint::default(),
        };
        let mut upper_st: Option<libc::stat> = None;
        let mut upper_dir_fd: Option<Arc<OwnedFd>> = None;
        let mut opaque = false;
        let mut metacopy = false;
        let mut redirect: Option<Vec<u8>> = None;
        let mut origin = None;
        // A non-directory just created in the upper: known, not probed.
        let created = probe
            .created
            .filter(|st| EntryKind::from_mode(st.st_mode) != EntryKind::Dir);
        if let Some(st) = created {
            upper_st = Some(st);
        } else if let Some(pfd) = ps.upper_dir() {
            match whiteout::classify_at(pfd.as_fd(), name).map_err(errno)? {
                None => {}
                Some((_, EntryKind::Whiteout)) => {
                    probe.upper_whiteout = true;
                    return Ok(None);
                }
                Some((st, kind)) => {
                    let st = st.ok_or(libc::EIO)?;
                    if kind == EntryKind::Dir {
                        let fd = sys::open_at(
                            pfd.as_fd(),
                            name,
                            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                            0,
                        )
                        .map_err(errno)?;
                        opaque = whiteout::dir_is_opaque(fd.as_fd());
                        if let Some(up) = &self.upper {
                            redirect =
                                sys::get_xattr_at(fd.as_fd(), b"", &up.key("overlay.redirect"))
                                    .ok()
                                    .flatten();
                        }
                        origin = self.origin_of(fd.as_fd(), b"");
                        upper_dir_fd = Some(Arc::new(fd));
                    } else {
                        if let Some(up) = &self.upper {
                            metacopy = kind == EntryKind::File
                                && matches!(
                                    sys::get_xattr_at(
                                        pfd.as_fd(),
                                        name,
                                        &up.key("overlay.metacopy")
                                    ),
                                    Ok(Some(_))
                                );
                        }
                        if metacopy {
                            // Kernel overlayfs records where the data of a renamed
                            // metacopy file lives in the lowers.
                            if let Some(up) = &self.upper {
                                redirect = sys::get_xattr_at(
                                    pfd.as_fd(),
                                    name,
                                    &up.key("overlay.redirect"),
                                )
                                .ok()
                                .flatten();
                            }
                        }
                        origin = self.origin_of(pfd.as_fd(), name);
                    }
                    upper_st = Some(st);
                }
            }
        }
        let upper_kind = upper_st.map(|s| EntryKind::from_mode(s.st_mode));
        // The directory's path in the lowers, following a redirect.
        let lower_path = match &redirect {
            Some(r) if r.starts_with(b"/") => r.clone(),
            Some(r) => join_path(&ps.lower_path, r),
            None => join_path(&ps.lower_path, name),
        };
        let mut lowers: Vec<(usize, LNode, EntryKind)> = Vec::new();
        let mut first_attr: Option<LayerAttr> = None;
        let search_lowers = match upper_kind {
            None => true,
            Some(EntryKind::Dir) => !opaque,
            Some(_) => metacopy,
        };
        // An absolute redirect reaches the lowers from the root, even under an opaque parent.
        if search_lowers && (!ps.opaque || redirect.is_some()) {
            if metacopy && redirect.is_some() {
                if let Some(found) = self.find_lower_file(&lower_path) {
                    lowers.push(found);
                }
            } else if redirect.is_some() {
                for l in 0..self.layers.len() {
                    match self.walk_redirect(l, &lower_path) {
                        RedirectWalk::Dir(n, opaque) => {
                            lowers.push((l, n, EntryKind::Dir));
                            if opaque {
                                break;
                            }
                        }
                        RedirectWalk::Missing => {}
                        // Like a plain lookup, a whiteout or a non-directory
                        // at the path hides every layer below it.
                        RedirectWalk::Stop => break,
                    }
                }
            } else {
                let dirs_only = upper_kind == Some(EntryKind::Dir);
                (lowers, first_attr) = self.lower_candidates(&ps.lowers, name, dirs_only, hint)?;
                if metacopy {
                    if lowers.first().is_some_and(|c| c.2 != EntryKind::File) {
                        first_attr = None;
                    }
                    lowers.retain(|c| c.2 == EntryKind::File);
                    lowers.truncate(1);
                }
            }
        }
        if upper_kind.is_none() && lowers.is_empty() {
            return Ok(None);
        }
        let kind = match upper_kind {
            Some(k) => k,
            None => lowers[0].2,
        };
        // Attributes and the union inode number.
        // The top lower's attributes: the lookup's own when it had them.
        let mut top_lower_attr = || -> Res<LayerAttr> {
            let &(l, n, _) = lowers.first().ok_or(libc::ENOENT)?;
            match first_attr.take() {
                Some(a) => Ok(a),
                None => self.layers[l].attr(n).map_err(errno),
            }
        };
        let mut indexed: Option<Vec<u8>> = None;
        let (attr, ino) = if let Some(st) = &upper_st {
            let mut a = LayerAttr::from_stat(st);
            let ino = match origin {
                Some(o) => o,
                None if kind == EntryKind::Dir && !lowers.is_empty() => {
                    let la = top_lower_attr()?;
                    self.inos.compose(lower_tag(lowers[0].0), la.ino)
                }
                None => self.inos.compose(UPPER_TAG, st.st_ino),
            };
            if metacopy {
                if let Ok(la) = top_lower_attr() {
                    a.blocks = la.blocks;
                }
            }
            (a, ino)
        } else {
            let l = lowers[0].0;
            let la = top_lower_attr()?;
            let ino = self.inos.compose(lower_tag(l), la.ino);
            if kind == EntryKind::File && la.nlink > 1 {
                // A name of a lower hard-link group whose upper copy is in the index.
                if let Some((key, ist)) = self.index_lookup(ino, Some(&la)) {
                    let mut a = LayerAttr::from_stat(&ist);
                    if let Some(up) = &self.upper {
                        let idx = self.index_dir()?;
                        metacopy = matches!(
                            sys::get_xattr_at(idx.as_fd(), &key, &up.key("overlay.metacopy")),
                            Ok(Some(_))
                        );
                    }
                    if metacopy {
                        a.blocks = la.blocks;
                    }
                    indexed = Some(key);
                    (a, ino)
                } else {
                    (la, ino)
                }
            } else {
                (la, ino)
            }
        };
        let merged_dir = kind == EntryKind::Dir
            && ((upper_kind.is_some() && !lowers.is_empty()) || lowers.len() > 1);
        let mut attr = attr;
        attr.ino = ino;
        if merged_dir {
            attr.nlink = 1;
        }
        if kind != EntryKind::Dir {
            if upper_kind == Some(EntryKind::File)
                && attr.nlink > 1
                && origin.is_some()
                && !self.group_links.contains_key(&ino)
            {
                // A linked name of an indexed group: load the group's count.
                self.index_lookup(ino, None);
            }
            self.apply_group_links(ino, upper_kind.is_some() || indexed.is_some(), &mut attr);
        }
        let state = NodeState {
            parent: Some(parent.clone()),
            name: name.into(),
            upper: match (upper_kind, upper_dir_fd) {
                (Some(EntryKind::Dir), Some(fd)) => Some(UpperRef::Dir(fd)),
                (Some(_), _) => Some(UpperRef::Entry),
                (None, _) => indexed.map(UpperRef::Index),
            },
            lowers: lowers.iter().map(|&(l, n, _)| (l, n)).collect(),
            lower_path: lower_path.into(),
            metacopy,
            opaque,
            unlinked: false,
            pinned: None,
        };
        let node = self.install_node(ino, kind, state)?;
        // A hard link whose other name was copied up without an index
        // entry (not a regular file, or an unstable inode number): link
        // this name too.
        if upper_kind.is_none() && kind != EntryKind::Dir {
            let cur = node.snapshot();
            if matches!(cur.upper, Some(UpperRef::Entry)) && !cur.unlinked {
                self.link_up(&node, parent, name)?;
                return Ok(Some((node.clone(), self.attr_of(&node)?)));
            }
        }
        Ok(Some((node, attr)))
    }

    /// Inserts or refreshes a node; increments nothing.
    fn install_node(&self, ino: u64, kind: EntryKind, state: NodeState) -> Res<Arc<Node>> {
        match self.nodes.entry(ino) {
            Entry::Occupied(o) => {
                let n = o.get().clone();
                drop(o);
                if n.kind != kind {
                    // The inode number was reused by a different object.
                    let fresh = Arc::new(Node::new(ino, kind, state));
                    self.nodes.insert(ino, fresh.clone());
                    return Ok(fresh);
                }
                {
                    let mut st = n.state.write();
                    let keep_upper =
                        st.upper.is_some() && state.upper.is_none() && kind != EntryKind::Dir;
                    if keep_upper {
                        // The other name of a copied-up hard link: keep the upper
                        // state; `link_up` moves the node to this name once linked.
                    } else {
                        *st = state;
                    }
                }
                Ok(n)
            }
            Entry::Vacant(v) => {
                let n = Arc::new(Node::new(ino, kind, state));
                v.insert(n.clone());
                Ok(n)
            }
        }
    }

    /// Links the indexed upper copy of `node` at its current name (the
    /// first copy-up trigger on a name of a copied-up hard-link group).
    fn link_up_index(&self, node: &Arc<Node>, st: &NodeState, key: &[u8]) -> Res<()> {
        let parent = st.parent.clone().ok_or(libc::EIO)?;
        let pfd = self.ensure_upper_dir(&parent)?;
        let idx = self.index_dir()?;
        // Linking up is not a change users made: keep the directory's times.
        let dir_times = sys::fstat(pfd.as_fd()).ok();
        sys::link_at(idx.as_fd(), key, pfd.as_fd(), &st.name).map_err(errno)?;
        restore_times(pfd.as_fd(), dir_times.as_ref());
        {
            let mut w = node.state.write();
            if w.name == st.name && w.parent.as_ref().map(|p| p.ino) == Some(parent.ino) {
                w.upper = Some(UpperRef::Entry);
            }
        }
        self.invalidate_dir(parent.ino);
        Ok(())
    }

    /// Links an already copied-up hard-linked node at `parent/name` in the upper.
    fn link_up(&self, node: &Arc<Node>, parent: &Arc<Node>, name: &[u8]) -> Res<()> {
        let src = node.snapshot();
        let sp = src.parent.clone().ok_or(libc::EIO)?;
        let sfd = self.ensure_upper_dir(&sp)?;
        let dfd = self.ensure_upper_dir(parent)?;
        // Linking up is not a change users made: keep the directory's times.
        let dir_times = sys::fstat(dfd.as_fd()).ok();
        match sys::link_at(sfd.as_fd(), &src.name, dfd.as_fd(), name) {
            Ok(()) => {
                restore_times(dfd.as_fd(), dir_times.as_ref());
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(errno(e)),
        }
        let mut st = node.state.write();
        st.parent = Some(parent.clone());
        st.name = name.into();
        self.invalidate_dir(parent.ino);
        Ok(())
    }

    /// Sets the link count of a member of a tracked lower hard-link group:
    /// an upper copy shows at least the group's count, a lower-only name
    /// exactly that count (names removed since the mount no longer count).
    pub fn apply_group_links(&self, ino: u64, has_upper: bool, a: &mut LayerAttr) {
        if let Some(g) = self.group_links.get(&ino) {
            a.nlink = if has_upper && !g.indexed {
                a.nlink.max(g.links)
            } else {
                g.links
            };
        }
    }

    /// Changes the link count of the lower hard-link group of non-directory
    /// `node` by `delta` (a name removed or added), starting to track it from
    /// the lower link count when needed. `None` when `node` is not in a
    /// lower hard-link group; else the group's new count.
    pub fn adjust_group_links(&self, node: &Arc<Node>, delta: i64) -> Option<u32> {
        if node.kind == EntryKind::Dir {
            return None;
        }
        let initial = || -> Option<u32> {
            let st = node.snapshot();
            let &(l, n) = st.lowers.first()?;
            let nlink = self.layers[l].attr(n).ok()?.nlink;
            (nlink > 1).then_some(nlink)
        };
        let mut e = match self.group_links.get_mut(&node.ino) {
            Some(e) => e,
            None => {
                let start = initial()?;
                self.group_links.entry(node.ino).or_insert(Group {
                    links: start,
                    indexed: false,
                })
            }
        };
        let v = (i64::from(e.links) + delta).clamp(0, i64::from(u32::MAX));
        // The clamp above keeps `v` within u32.
        e.links = u32::try_from(v).unwrap_or(0);
        let g = *e;
        drop(e);
        if g.indexed {
            self.index_store_links(node.ino, g.links);
            if g.links == 0 {
                if let Some(mut e) = self.group_links.get_mut(&node.ino) {
                    e.indexed = false;
                }
            }
        }
        Some(g.links)
    }

    /// Current attributes of a node.
    pub fn attr_of(&self, node: &Arc<Node>) -> Res<LayerAttr> {
        let st = node.snapshot();
        let mut a = match &st.upper {
            Some(UpperRef::Dir(fd)) => {
                LayerAttr::from_stat(&sys::fstat(fd.as_fd()).map_err(errno)?)
            }
            Some(UpperRef::Entry) | Some(UpperRef::Index(_)) => {
                let s = match (&st.pinned, &st.upper) {
                    (None, Some(UpperRef::Index(key))) => {
                        sys::stat_at(self.index_dir()?.as_fd(), key).map_err(errno)?
                    }
                    (Some(fd), _) => sys::fstat(fd.as_fd()).map_err(errno)?,
                    (None, _) => {
                        let p = st.parent.as_ref().ok_or(libc::EIO)?;
                        let pfd = p.upper_dir().ok_or(libc::EIO)?;
                        sys::stat_at(pfd.as_fd(), &st.name).map_err(|e| {
                            if is_missing(&e) {
                                libc::ENOENT
                            } else {
                                errno(e)
                            }
                        })?
                    }
                };
                let mut a = LayerAttr::from_stat(&s);
                if st.metacopy {
                    if let Some(&(l, n)) = st.lowers.first() {
                        if let Ok(la) = self.layers[l].attr(n) {
                            a.blocks = la.blocks;
                        }
                    }
                }
                a
            }
            None => {
                let &(l, n) = st.lowers.first().ok_or(libc::ENOENT)?;
                self.layers[l].attr(n).map_err(errno)?
            }
        };
        a.ino = node.ino;
        if node.kind == EntryKind::Dir
            && ((st.upper.is_some() && !st.lowers.is_empty()) || st.lowers.len() > 1)
        {
            a.nlink = 1;
        }
        if node.kind != EntryKind::Dir && !st.unlinked {
            self.apply_group_links(node.ino, st.upper.is_some(), &mut a);
        }
        if st.unlinked && st.pinned.is_none() && node.kind != EntryKind::Dir {
            a.nlink = 0;
        }
        Ok(a)
    }

    // ---- listings ---------------------------------------------------------

    /// Drops the cached listing of directory `ino`.
    pub fn invalidate_dir(&self, ino: u64) {
        self.dir_cache.lock().pop(&ino);
    }

    /// The merged listing of directory `node` (cached), in readdir order.
    pub fn listing(&self, node: &Arc<Node>) -> Res<Arc<Listing>> {
        if let Some(l) = self.dir_cache.lock().get(&node.ino) {
            return Ok(l.clone());
        }
        let st = node.snapshot();
        // Name -> its index in `out` (or None for a name hidden by a whiteout).
        let mut seen: HashMap<Vec<u8>, Option<usize>> = HashMap::new();
        let mut out: Vec<DirEnt> = Vec::new();
        let mut listed = 0u64;
        if let Some(fd) = st.upper_dir() {
            for e in whiteout::read_dir_classified(fd.as_fd()).map_err(errno)? {
                if seen.contains_key(&e.name) {
                    continue;
                }
                if e.kind == EntryKind::Whiteout {
                    seen.insert(e.name, None);
                    continue;
                }
                let ino = match self.origin_of(fd.as_fd(), &e.name) {
                    Some(o) => o,
                    None => self.inos.compose(UPPER_TAG, e.ino),
                };
                seen.insert(e.name.clone(), Some(out.len()));
                out.push(DirEnt {
                    name: e.name,
                    ino,
                    kind: e.kind,
                    in_lowers: 0,
                });
            }
        }
        if !st.opaque {
            for &(l, dir) in &st.lowers {
                for e in self.layers[l].read_dir(dir).map_err(errno)? {
                    match seen.get(&e.name) {
                        Some(Some(i)) => {
                            out[*i].in_lowers |= layer_bit(l);
                            continue;
                        }
                        Some(None) => continue,
                        None => {}
                    }
                    if e.kind == EntryKind::Whiteout {
                        seen.insert(e.name, None);
                        continue;
                    }
                    seen.insert(e.name.clone(), Some(out.len()));
                    out.push(DirEnt {
                        ino: self.inos.compose(lower_tag(l), e.ino),
                        name: e.name,
                        kind: e.kind,
                        in_lowers: layer_bit(l),
                    });
                }
                listed |= layer_bit(l);
                if self.layers[l].is_opaque(dir).map_err(errno)? {
                    break;
                }
            }
        }
        let list = Arc::new(Listing::new(
            out,
            &self.cookie_key,
            st.lowers.clone(),
            listed,
        ));
        self.dir_cache.lock().put(node.ino, list.clone());
        Ok(list)
    }

    // ---- upper writes -----------------------------------------------------

    /// A fresh name for a temporary object in the work dir.
    pub(crate) fn tmp_name(&self) -> Vec<u8> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        format!("#u{}-{n}", self.pid).into_bytes()
    }

    /// Makes sure directory `node` has an upper copy; returns its fd.
    pub fn ensure_upper_dir(&self, node: &Arc<Node>) -> Res<Arc<OwnedFd>> {
        if let Some(fd) = node.upper_dir() {
            return Ok(fd);
        }
        self.copy_up(node, false)?;
        node.upper_dir().ok_or(libc::EIO)
    }

    /// Copies `node` up. `with_data`: also complete a metadata-only copy.
    pub fn copy_up(&self, node: &Arc<Node>, with_data: bool) -> Res<()> {
        self.copy_up_inner(node, with_data, false)
    }

    /// The copy-up overlayfs makes before it whites out (or renames over)
    /// a lower hard-linked name, so the group's link count has an index
    /// entry to live on: metadata only, whatever the size, since that
    /// name's data is never read through its upper copy.
    pub fn copy_up_for_removal(&self, node: &Arc<Node>) -> Res<()> {
        self.copy_up_inner(node, false, true)
    }

    fn copy_up_inner(&self, node: &Arc<Node>, with_data: bool, meta_only: bool) -> Res<()> {
        let up = self.upper()?;
        let _guard = node.copy_lock.lock();
        let mut st = node.snapshot();
        if let Some(UpperRef::Index(key)) = &st.upper {
            self.link_up_index(node, &st, key)?;
            st = node.snapshot();
        }
        if st.upper.is_some() {
            if with_data && st.metacopy {
                return self.complete_metacopy(node, &st);
            }
            return Ok(());
        }
        let parent = st.parent.clone().ok_or(libc::EIO)?;
        let pfd = self.ensure_upper_dir(&parent)?;
        let &(l, ln) = st.lowers.first().ok_or(libc::ENOENT)?;
        let layer = &self.layers[l];
        let attr = layer.attr(ln).map_err(errno)?;
        let work = up.work.as_fd();
        let tmp = self.tmp_name();
        let parent_times = sys::fstat(pfd.as_fd()).ok();
        let mut metacopy = false;
        // A lower hard-link group is copied up into the index and linked
        // from there, so its other names reach the copy (overlayfs index=on).
        let index_key = match node.kind {
            EntryKind::File if attr.nlink > 1 => self.index_key(node.ino),
            _ => None,
        };
        let res = (|| -> Res<()> {
            match node.kind {
                EntryKind::Dir => {
                    sys::mkdir_at(work, &tmp, 0o700).map_err(errno)?;
                }
                EntryKind::File => {
                    let f = sys::open_at(
                        work,
                        &tmp,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                        0o600,
                    )
                    .map_err(errno)?;
                    if meta_only
                        || (!with_data && self.opts.metacopy && attr.size >= METACOPY_MIN_SIZE)
                    {
                        sys::ftruncate(f.as_fd(), attr.size).map_err(errno)?;
                        sys::fset_xattr(f.as_fd(), &up.key("overlay.metacopy"), b"", 0)
                            .map_err(errno)?;
                        metacopy = true;
                    } else {
                        let data = layer.open(ln).map_err(errno)?;
                        copy_data(&data, f.as_fd(), attr.size, &self.no_reflink).map_err(errno)?;
                        if self.opts.fsync {
                            sys::fsync(f.as_fd(), false).map_err(errno)?;
                        }
                    }
                }
                EntryKind::Symlink => {
                    let target = layer.readlink(ln).map_err(errno)?;
                    sys::symlink_at(&target, work, &tmp).map_err(errno)?;
                }
                EntryKind::CharDev | EntryKind::BlockDev | EntryKind::Fifo | EntryKind::Socket => {
                    sys::mknod_at(work, &tmp, node.kind.mode_bits() | attr.perm, attr.rdev)
                        .map_err(errno)?;
                }
                EntryKind::Whiteout => return Err(libc::EIO),
            }
            // xattrs (user-visible ones), origin, owner, mode, times.
            for key in layer.list_xattrs(ln).map_err(errno)? {
                if let Ok(Some(v)) = layer.get_xattr(ln, &key) {
                    let _ = sys::set_xattr_at(work, &tmp, &key, &v, 0);
                }
            }
            let _ = sys::set_xattr_at(
                work,
                &tmp,
                &up.key("overlay.unionfs.origin"),
                node.ino.to_string().as_bytes(),
                0,
            );
            if self.privileged {
                sys::chown_at(work, &tmp, attr.uid, attr.gid).map_err(errno)?;
            }
            if node.kind != EntryKind::Symlink {
                sys::chmod_at(work, &tmp, attr.perm).map_err(errno)?;
            }
            sys::utimens_at(
                work,
                &tmp,
                Time::At(attr.atime.0, attr.atime.1),
                Time::At(attr.mtime.0, attr.mtime.1),
            )
            .map_err(errno)?;
            if let Some(key) = &index_key {
                let idx = self.index_dir()?;
                let links = self
                    .group_links
                    .get(&node.ino)
                    .map(|g| g.links)
                    .unwrap_or(attr.nlink);
                sys::set_xattr_at(
                    work,
                    &tmp,
                    &up.key(INDEX_NLINK),
                    links.to_string().as_bytes(),
                    0,
                )
                .map_err(errno)?;
                sys::set_xattr_at(work, &tmp, &up.key(INDEX_LOWER), &lower_stamp(&attr), 0)
                    .map_err(errno)?;
                match sys::rename_at(work, &tmp, idx.as_fd(), key, libc::RENAME_NOREPLACE) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        // Left by an earlier mount and not seen by lookup: it is stale.
                        sys::rename_at(work, &tmp, idx.as_fd(), key, 0).map_err(errno)?;
                    }
                    Err(e) => return Err(errno(e)),
                }
                self.index_absent.remove(&node.ino);
                sys::link_at(idx.as_fd(), key, pfd.as_fd(), &st.name).map_err(errno)?;
                return Ok(());
            }
            sys::rename_at(work, &tmp, pfd.as_fd(), &st.name, libc::RENAME_NOREPLACE)
                .map_err(errno)?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = sys::unlink_at(work, &tmp, node.kind == EntryKind::Dir);
            return Err(e);
        }
        restore_times(pfd.as_fd(), parent_times.as_ref());
        let upper_ref = if node.kind == EntryKind::Dir {
            let fd = sys::open_at(
                pfd.as_fd(),
                &st.name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(errno)?;
            // Directory times again: the rename touched them on some filesystems.
            let _ = sys::utimens_at(
                fd.as_fd(),
                b"",
                Time::At(attr.atime.0, attr.atime.1),
                Time::At(attr.mtime.0, attr.mtime.1),
            );
            UpperRef::Dir(Arc::new(fd))
        } else {
            UpperRef::Entry
        };
        let mut w = node.state.write();
        w.upper = Some(upper_ref);
        w.metacopy = metacopy;
        drop(w);
        if node.kind != EntryKind::Dir && attr.nlink > 1 {
            let mut g = self.group_links.entry(node.ino).or_insert(Group {
                links: attr.nlink,
                indexed: false,
            });
            g.indexed = index_key.is_some();
        }
        self.invalidate_dir(parent.ino);
        Ok(())
    }

    /// Fills in the data of a metadata-only copy, then drops the marker.
    fn complete_metacopy(&self, node: &Arc<Node>, st: &NodeState) -> Res<()> {
        let up = self.upper()?;
        let &(l, ln) = st.lowers.first().ok_or(libc::EIO)?;
        let parent = st.parent.clone().ok_or(libc::EIO)?;
        let pfd = parent.upper_dir().ok_or(libc::EIO)?;
        let f = sys::open_at(pfd.as_fd(), &st.name, libc::O_WRONLY | libc::O_NOFOLLOW, 0)
            .map_err(errno)?;
        let cur = sys::fstat(f.as_fd()).map_err(errno)?;
        let data = self.layers[l].open(ln).map_err(errno)?;
        let size = self.layers[l].attr(ln).map_err(errno)?.size;
        copy_data(&data, f.as_fd(), size, &self.no_reflink).map_err(errno)?;
        sys::ftruncate(f.as_fd(), cur.st_size.max(0) as u64).map_err(errno)?;
        if self.opts.fsync {
            sys::fsync(f.as_fd(), false).map_err(errno)?;
        }
        sys::utimens_at(
            f.as_fd(),
            b"",
            Time::At(cur.st_atime, cur.st_atime_nsec),
            Time::At(cur.st_mtime, cur.st_mtime_nsec),
        )
        .map_err(errno)?;
        match sys::remove_xattr_at(pfd.as_fd(), &st.name, &up.key("overlay.metacopy")) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(errno(e)),
        }
        node.state.write().metacopy = false;
        Ok(())
    }

    /// Makes a char 0/0 whiteout under a fresh temporary name in the work
    /// dir and returns that name. It is a hard link to the shared whiteout
    /// inode; when the link count is exhausted (EMLINK) a new shared inode
    /// is started, and a filesystem that refuses links gets a fresh inode
    /// per whiteout.
    pub fn work_whiteout(&self, up: &Upper) -> io::Result<Vec<u8>> {
        let work = up.work.as_fd();
        let tmp = self.tmp_name();
        let mut shared = up.shared_whiteout.lock();
        // Two tries: a full or vanished shared inode is replaced once.
        for _ in 0..2 {
            let name = match &*shared {
                SharedWhiteout::Refused => break,
                SharedWhiteout::Made(name) => name.clone(),
                SharedWhiteout::Unmade => {
                    let name = self.tmp_name();
                    sys::mknod_at(work, &name, libc::S_IFCHR, 0)?;
                    *shared = SharedWhiteout::Made(name.clone());
                    name
                }
            };
            match sys::link_at(work, &name, work, &tmp) {
                Ok(()) => return Ok(tmp),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMLINK | libc::ENOENT)) => {
                    let _ = sys::unlink_at(work, &name, false);
                    *shared = SharedWhiteout::Unmade;
                }
                Err(e) => {
                    tracing::warn!("work dir refuses hard links ({e}): one inode per whiteout");
                    *shared = SharedWhiteout::Refused;
                }
            }
        }
        drop(shared);
        sys::mknod_at(work, &tmp, libc::S_IFCHR, 0)?;
        Ok(tmp)
    }

    /// Writes a whiteout for `name` in upper directory `dir`.
    pub fn write_whiteout(&self, dir: BorrowedFd<'_>, name: &[u8]) -> Res<()> {
        let up = self.upper()?;
        if up.char_whiteouts() {
            // Usually one link to the shared whiteout inode, straight into
            // place: it appears whole or not at all, and belongs to the
            // mounter whatever the directory's set-group-ID bit says.
            let shared = match &*up.shared_whiteout.lock() {
                SharedWhiteout::Made(n) => Some(n.clone()),
                _ => None,
            };
            if let Some(shared) = shared {
                match sys::link_at(up.work.as_fd(), &shared, dir, name) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Ok(()),
                    // A full or vanished shared inode: the path below
                    // replaces it.
                    Err(_) => {}
                }
            }
            // Made in the work dir and moved into place, as overlayfs does:
            // the whiteout belongs to the mounter even in a set-group-ID
            // directory, and never shows half made.
            match self.work_whiteout(up) {
                Ok(tmp) => {
                    return match sys::rename_at(
                        up.work.as_fd(),
                        &tmp,
                        dir,
                        name,
                        libc::RENAME_NOREPLACE,
                    ) {
                        Ok(()) => Ok(()),
                        Err(e) => {
                            let _ = sys::unlink_at(up.work.as_fd(), &tmp, false);
                            if e.raw_os_error() == Some(libc::EEXIST) {
                                Ok(())
                            } else {
                                Err(errno(e))
                            }
                        }
                    };
                }
                Err(e) if e.raw_os_error() != Some(libc::EPERM) => return Err(errno(e)),
                Err(_) => {}
            }
        }
        match sys::open_at(
            dir,
            &whiteout::wh_name(name),
            libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW,
            0o700,
        ) {
            Ok(_) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    /// Removes a whiteout for `name` in upper dir `dir` (all forms); returns whether one existed.
    pub fn clear_whiteout(&self, dir: BorrowedFd<'_>, name: &[u8]) -> Res<bool> {
        let mut had = false;
        if let Ok(st) = sys::stat_at(dir, name) {
            if whiteout::stat_is_whiteout(dir, name, &st) {
                sys::unlink_at(dir, name, false).map_err(errno)?;
                had = true;
            } else {
                return Err(libc::EEXIST);
            }
        }
        let wh = whiteout::wh_name(name);
        if sys::stat_at(dir, &wh).is_ok() {
            sys::unlink_at(dir, &wh, false).map_err(errno)?;
            had = true;
        }
        Ok(had)
    }

    /// Marks upper directory `dir/name` opaque.
    pub fn set_opaque(&self, dir: BorrowedFd<'_>, name: &[u8]) -> Res<()> {
        let up = self.upper()?;
        let key = up.key("overlay.opaque");
        match sys::set_xattr_at(dir, name, &key, b"y", 0) {
            Ok(()) => Ok(()),
            Err(_) => {
                // No xattr support for this namespace: the AUFS marker file.
                let fd =
                    sys::open_at(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(errno)?;
                sys::open_at(
                    fd.as_fd(),
                    whiteout::OPAQUE_MARKER,
                    libc::O_WRONLY | libc::O_CREAT,
                    0o700,
                )
                .map(|_| ())
                .map_err(errno)
            }
        }
    }

    /// Sets a redirect on upper directory `dir/name` to its lower path.
    pub fn set_redirect(&self, dir: BorrowedFd<'_>, name: &[u8], lower_path: &[u8]) -> Res<()> {
        let up = self.upper()?;
        let mut v = lower_path.to_vec();
        if !v.starts_with(b"/") {
            v.insert(0, b'/');
        }
        sys::set_xattr_at(dir, name, &up.key("overlay.redirect"), &v, 0).map_err(errno)
    }

    /// Deletes everything inside upper dir `fd` (whiteouts and markers of an empty merged dir).
    pub fn clear_dir(&self, fd: BorrowedFd<'_>) -> Res<()> {
        for (name, _, dtype) in sys::read_dir(fd).map_err(errno)? {
            if dtype == libc::DT_DIR {
                let sub = sys::open_at(
                    fd,
                    &name,
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(errno)?;
                self.clear_dir(sub.as_fd())?;
                sys::unlink_at(fd, &name, true).map_err(errno)?;
            } else {
                sys::unlink_at(fd, &name, false).map_err(errno)?;
            }
        }
        Ok(())
    }

    /// Removes `dir/name` whatever it is (a directory with its contents).
    pub fn clear_dir_named(&self, dir: BorrowedFd<'_>, name: &[u8]) -> Res<()> {
        match sys::open_at(
            dir,
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        ) {
            Ok(fd) => {
                self.clear_dir(fd.as_fd())?;
                sys::unlink_at(dir, name, true).map_err(errno)
            }
            Err(_) => sys::unlink_at(dir, name, false).map_err(errno),
        }
    }

    /// Drops a node from the table (after rmdir / when forgotten).
    pub fn drop_node(&self, ino: u64) {
        if ino != ROOT_INO {
            self.nodes.remove(&ino);
        }
    }

    /// Whether an entry the daemon just created, with attributes `st`,
    /// already has the owner [`Union::set_owner`] would give it for a caller
    /// with `uid`/`gid`: the caller's ids. (A set-group-ID parent gave it
    /// the parent's group; when that equals the caller's, it is right too.)
    pub fn created_owner_ok(&self, st: &libc::stat, uid: u32, gid: u32) -> bool {
        !self.privileged
            || (st.st_uid == self.opts.uids.to_host(uid)
                && st.st_gid == self.opts.gids.to_host(gid))
    }

    /// Gives `dir/name` the owner of the caller (on-disk ids), honouring
    /// setgid dirs; `made_in_dir`: the entry was created in `dir` itself
    /// (not moved there), so no chown is needed when it already has them.
    pub fn set_owner(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        uid: u32,
        gid: u32,
        made_in_dir: bool,
    ) -> Res<()> {
        if !self.privileged {
            return Ok(());
        }
        let uid = self.opts.uids.to_host(uid);
        let mut gid = self.opts.gids.to_host(gid);
        // What an entry made in `dir` got from the kernel: the daemon's own
        // ids, or the group of a set-group-ID parent. (An entry made in the
        // work dir and moved here got the work dir's, so it is always chowned.)
        let (daemon_uid, mut made_gid) = self.daemon_ids;
        if let Ok(pst) = sys::fstat(dir) {
            if pst.st_mode & libc::S_ISGID != 0 {
                gid = pst.st_gid;
                made_gid = pst.st_gid;
            }
        }
        if made_in_dir && uid == daemon_uid && gid == made_gid {
            // Already right (a root caller on a root daemon): no chown.
            return Ok(());
        }
        sys::chown_at(dir, name, uid, gid).map_err(errno)
    }
}

/// Copies `size` bytes of layer data into `dst`: FICLONE, then
/// copy_file_range, then read/write.
///
/// `no_reflink` is set once the upper filesystem answered FICLONE with
/// EOPNOTSUPP (it has no shared extents, e.g. ext4), and FICLONE is not
/// tried again.
pub fn copy_data(
    src: &LayerData,
    dst: BorrowedFd<'_>,
    size: u64,
    no_reflink: &std::sync::atomic::AtomicBool,
) -> io::Result<()> {
    match src {
        LayerData::Inline(bytes) => {
            let mut off = 0usize;
            while off < bytes.len() {
                let n = sys::pwrite(dst, &bytes[off..], off as u64)?;
                if n == 0 {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                off += n;
            }
            Ok(())
        }
        LayerData::File(f) => {
            if size == 0 {
                return Ok(());
            }
            if !no_reflink.load(Ordering::Relaxed) {
                match sys::ficlone(dst, f.as_fd()) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        no_reflink.store(true, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
            let mut src_off: i64 = 0;
            let mut dst_off: i64 = 0;
            let mut use_cfr = true;
            while (src_off as u64) < size {
                if use_cfr {
                    let want = (size - src_off as u64).min(1 << 30) as usize;
                    match sys::copy_file_range(f.as_fd(), &mut src_off, dst, &mut dst_off, want) {
                        Ok(0) => break,
                        Ok(_) => continue,
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::EXDEV)
                                    | Some(libc::ENOSYS)
                                    | Some(libc::EINVAL)
                                    | Some(libc::EOPNOTSUPP)
                            ) =>
                        {
                            use_cfr = false;
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    let mut buf = vec![0u8; 1 << 20];
                    let n = sys::pread(f.as_fd(), &mut buf, src_off as u64)?;
                    if n == 0 {
                        break;
                    }
                    let mut w = 0;
                    while w < n {
                        let m = sys::pwrite(dst, &buf[w..n], dst_off as u64 + w as u64)?;
                        if m == 0 {
                            return Err(io::Error::from_raw_os_error(libc::EIO));
                        }
                        w += m;
                    }
                    src_off += n as i64;
                    dst_off += n as i64;
                }
            }
            Ok(())
        }
    }
}

/// What one lower layer holds at a directory redirect's path.
enum RedirectWalk {
    /// A directory: part of the merged view; `true` when an opaque
    /// directory on the way (or the directory itself) hides the layers below.
    Dir(LNode, bool),
    /// Nothing there: look further down.
    Missing,
    /// A whiteout or a non-directory: the layers below are hidden.
    Stop,
}
