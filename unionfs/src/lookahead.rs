//! Reads without passthrough that go around the lower's page cache.
//!
//! Without passthrough every byte a reader gets from a lower file passes
//! through the daemon. Read through the lower's page cache, it is cached
//! twice (in the lower's page cache and in the mount's) and copied twice by
//! the daemon (disk → lower page cache → reply buffer → mount page cache).
//! A sequential READ of lower data that is not cached at all therefore
//! reads the disk with `O_DIRECT` straight into the reply buffer: one copy,
//! one cache, as with kernel overlayfs.
//!
//! "Not cached" is asked of `cachestat`, which answers only for files the
//! daemon owns or may write. For the others (an ordinary user reading
//! root's layers) the daemon reads the READ's first page with `RWF_NOWAIT`
//! from a descriptor without read-ahead: EAGAIN means the page was not
//! cached (the kernel then fetches that one page, and only it).
//!
//! `O_DIRECT` has no read-ahead, and the kernel sends the next READ only
//! once the reader has reached the end of the last one, so one sequential
//! reader would keep the disk idle while its reply travels. A *lookahead*
//! thread therefore reads the next [`CHUNK`]s of a sequential reader with
//! `O_DIRECT` while the daemon replies, [`DEPTH`] chunks ahead, within a
//! mount-wide budget of [`BUDGET`] chunks; a READ they cover is answered
//! from them.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, OnceLock};

use nix::fcntl::PosixFadviseAdvice;
use parking_lot::{Condvar, Mutex};

use crate::sys;

/// The page size `O_DIRECT` reads are aligned to.
pub(crate) const PAGE: usize = 4096;

/// READs at least this large come from the kernel's read-ahead (a
/// sequential reader).
pub(crate) const SEQUENTIAL_MIN: usize = 64 << 10;

/// How much one lookahead read fetches: at least a READ, at least 1 MiB
/// (an ordinary user's mount asks for 128 KiB per READ).
pub(crate) const CHUNK: usize = 1 << 20;

/// Chunks read ahead of a sequential reader.
pub(crate) const DEPTH: usize = 2;

/// Chunks in flight or waiting to be read, over all handles of the
/// process: bounds the memory lookahead takes.
pub(crate) const BUDGET: usize = 8;

/// The longest a READ waits for a chunk being read ahead before it reads
/// the data itself. The one lookahead thread serves every mount of the
/// process, so a lower on a file system that hangs must not hang the
/// others' READs with it.
const STALL: std::time::Duration = std::time::Duration::from_secs(2);

/// One page of a [`PageBuf`], aligned as `O_DIRECT` wants.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; PAGE]);

/// A page-aligned byte buffer that grows in pages.
#[derive(Default)]
pub(crate) struct PageBuf(Vec<Page>);

impl PageBuf {
    /// An empty buffer (no allocation).
    pub(crate) const fn new() -> PageBuf {
        PageBuf(Vec::new())
    }

    /// The first `len` bytes rounded up to whole pages, grown if needed.
    pub(crate) fn bytes(&mut self, len: usize) -> &mut [u8] {
        let pages = len.div_ceil(PAGE);
        if self.0.len() < pages {
            self.0.resize(pages, Page([0; PAGE]));
        }
        // SAFETY: `Page` is `repr(C)` around `[u8; PAGE]` with size PAGE
        // (its alignment equals its size, so no padding): the vector's
        // first `pages` elements are `pages * PAGE` initialised bytes,
        // borrowed mutably through `self` for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), pages * PAGE) }
    }

    /// The first `len` bytes (which must have been made by [`Self::bytes`]).
    fn filled(&self, len: usize) -> &[u8] {
        let pages = len.div_ceil(PAGE).min(self.0.len());
        // SAFETY: as in `bytes`, for the first `pages` elements.
        let all = unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), pages * PAGE) };
        &all[..len.min(all.len())]
    }

    /// Frees the buffer if it grew past `keep` bytes.
    pub(crate) fn trim(&mut self, keep: usize) {
        if self.0.len() * PAGE > keep {
            self.0 = Vec::new();
        }
    }
}

/// Reads up to `want` bytes at `offset` of `file` into `buf` (whatever the
/// file's open mode; `O_DIRECT` needs `offset` page-aligned). Stops at
/// the end of the file; a short page read is the end of the file.
pub(crate) fn read_into(
    file: &File,
    buf: &mut PageBuf,
    offset: u64,
    want: usize,
) -> io::Result<usize> {
    let bytes = buf.bytes(want);
    let mut got = 0usize;
    while got < want {
        match sys::pread(file.as_fd(), &mut bytes[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if n % PAGE != 0 {
                    break;
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(got.min(want))
}

/// The lower file opened again with `O_DIRECT`, and its size.
struct Direct {
    file: Arc<File>,
    size: u64,
}

/// One chunk read ahead.
struct Chunk {
    off: u64,
    len: usize,
    state: ChunkState,
    _slot: Slot,
}

enum ChunkState {
    /// The lookahead thread is reading it.
    Pending,
    /// Read: `got` bytes (fewer than `len` at the end of the file).
    Ready { buf: PageBuf, got: usize },
    /// The read failed: a READ of it reads again itself and reports the error.
    Failed,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.off + self.len as u64
    }

    /// Bytes `from..to` of a read chunk (empty if it is not read).
    fn data(&self, from: usize, to: usize) -> &[u8] {
        match &self.state {
            ChunkState::Ready { buf, got } => &buf.filled(*got)[from..to],
            _ => &[],
        }
    }
}

/// What [`ReadState::serve`] does with the chunk a READ starts in.
enum Step {
    /// It is still being read.
    Wait,
    /// It failed, or the READ runs past it into nothing read ahead.
    Clear,
    /// It holds the READ: bytes `from..to` of it.
    One {
        from: usize,
        to: usize,
        consumed: bool,
    },
    /// The READ spans it and the next one, both read.
    Two,
}

/// What a handle has read ahead.
#[derive(Default)]
struct Lookahead {
    chunks: VecDeque<Chunk>,
    /// Where the last direct READ ended: the next one starting there is
    /// sequential.
    last_end: Option<u64>,
}

/// Per-handle state of reads without passthrough.
#[derive(Default)]
pub(crate) struct ReadState {
    /// How far the lower's page cache was asked to read ahead for this
    /// handle (reads through the page cache; see `fs::read_ahead`).
    pub(crate) ahead: AtomicU64,
    /// Made at the first READ that goes around the page cache; `None`
    /// when the lower's file system refuses `O_DIRECT`.
    direct: OnceLock<Option<Direct>>,
    la: Mutex<Lookahead>,
    ready: Condvar,
    /// `cachestat` refused this file (not the daemon's to write): the
    /// handle asks [`sys::page_cached`] instead.
    no_cachestat: AtomicBool,
    /// The descriptor those no-wait probes read from (`POSIX_FADV_RANDOM`);
    /// `None` if it could not be opened.
    probe: OnceLock<Option<File>>,
    /// Lookahead for this handle took longer than [`STALL`]: no more.
    stalled: AtomicBool,
}

/// How [`ReadState::serve`] answered.
pub(crate) enum Served<F> {
    /// It replied (data or error).
    Done,
    /// Not a READ for the direct path: the caller reads through the page
    /// cache and replies with `F`.
    No(F),
}

impl ReadState {
    /// Serves a READ of `want` bytes at `offset` of the lower `file`
    /// around the page cache when it applies: direct reads are on (`on`),
    /// the READ is sequential-sized and page-aligned, and either earlier
    /// lookahead covers it or none of its pages is cached. Replies through
    /// `reply` then (`tl` is the worker's buffer) and schedules lookahead
    /// for a sequential reader.
    pub(crate) fn serve<F: FnOnce(io::Result<&[u8]>)>(
        self: &Arc<Self>,
        on: bool,
        file: &File,
        offset: u64,
        want: usize,
        tl: &mut PageBuf,
        reply: F,
    ) -> Served<F> {
        if !on || want < SEQUENTIAL_MIN || !offset.is_multiple_of(PAGE as u64) {
            return Served::No(reply);
        }
        let mut la = self.la.lock();
        let end = offset + want as u64;
        // A READ larger than a chunk (a raised `fuse_max_pages_limit`)
        // reads directly, without lookahead.
        let look = want <= CHUNK;
        // Wait for lookahead that covers this READ.
        let reply = loop {
            let Some(i) = la
                .chunks
                .iter()
                .position(|c| c.off <= offset && offset < c.end())
                .filter(|_| look)
            else {
                break reply;
            };
            // Chunks before this one are behind the reader.
            if i > 0 {
                la.chunks.drain(..i);
                continue;
            }
            let step = {
                let c = &la.chunks[i];
                match &c.state {
                    ChunkState::Pending => Step::Wait,
                    ChunkState::Failed => Step::Clear,
                    ChunkState::Ready { got, .. } if c.end() >= end || *got < c.len => {
                        // One chunk holds all of it (or up to the end of the file).
                        let from = (offset - c.off) as usize;
                        let to = (from + want).min(*got).max(from);
                        Step::One {
                            from,
                            to,
                            consumed: to >= *got,
                        }
                    }
                    // It runs into the next chunk: gather once that one is
                    // ready too.
                    ChunkState::Ready { .. } => match la.chunks.get(i + 1) {
                        Some(n) if n.off == c.end() => match n.state {
                            ChunkState::Ready { .. } => Step::Two,
                            ChunkState::Pending => Step::Wait,
                            ChunkState::Failed => Step::Clear,
                        },
                        _ => Step::Clear,
                    },
                }
            };
            match step {
                Step::Wait => {
                    if self.ready.wait_for(&mut la, STALL).timed_out() {
                        // The lookahead thread is stuck (a hung file system
                        // it reads for some other handle, perhaps of another
                        // mount): read this handle's data directly from now on.
                        self.stalled.store(true, Ordering::Relaxed);
                        la.chunks.clear();
                        break reply;
                    }
                }
                Step::Clear => {
                    la.chunks.clear();
                    break reply;
                }
                Step::One { from, to, consumed } => {
                    reply(Ok(la.chunks[i].data(from, to)));
                    if consumed {
                        la.chunks.remove(i);
                    }
                    la.last_end = Some(end);
                    self.schedule(&mut la, end);
                    return Served::Done;
                }
                Step::Two => {
                    let n = gather(&la.chunks, i, offset, want, tl);
                    reply(Ok(&tl.filled(n)[..n]));
                    la.chunks.remove(i);
                    la.last_end = Some(end);
                    self.schedule(&mut la, end);
                    return Served::Done;
                }
            }
        };
        // Not read ahead: a seek, or the first READ.
        la.chunks.clear();
        let sequential = offset == 0 || la.last_end == Some(offset);
        la.last_end = None;
        if !self.uncached(file, offset, want) {
            return Served::No(reply);
        }
        let Some(direct) = self.direct_file(file) else {
            return Served::No(reply);
        };
        match read_into(&direct.file, tl, offset, want) {
            Ok(n) => reply(Ok(&tl.filled(n)[..n])),
            // Opened, but this alignment is refused: through the cache.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => return Served::No(reply),
            Err(err) => {
                reply(Err(err));
                return Served::Done;
            }
        }
        la.last_end = Some(end);
        if sequential && look {
            self.schedule(&mut la, end);
        }
        Served::Done
    }

    /// Whether none of `[offset, offset + want)` of `file` is cached, as
    /// far as the daemon can tell: `cachestat` where the kernel answers it,
    /// else whether the first page is cached. Unsure: false (keep the
    /// cache).
    fn uncached(&self, file: &File, offset: u64, want: usize) -> bool {
        if !self.no_cachestat.load(Ordering::Relaxed) {
            match sys::cached_pages(file.as_fd(), offset, want as u64) {
                Ok(n) => return n == 0,
                // `cachestat` answers only for files the caller owns or may
                // write (as `mincore` is blind to the others), and not at
                // all before Linux 6.5.
                Err(err) if matches!(err.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) => {
                    self.no_cachestat.store(true, Ordering::Relaxed);
                }
                Err(_) => return false,
            }
        }
        let probe = self.probe.get_or_init(|| {
            let f = File::from(sys::reopen(file.as_fd(), libc::O_RDONLY).ok()?);
            nix::fcntl::posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_RANDOM).ok()?;
            Some(f)
        });
        match probe {
            Some(f) => matches!(sys::page_cached(f.as_fd(), offset), Ok(false)),
            None => false,
        }
    }

    fn direct_file(&self, file: &File) -> Option<&Direct> {
        self.direct
            .get_or_init(|| {
                let f = sys::reopen(file.as_fd(), libc::O_RDONLY | libc::O_DIRECT).ok()?;
                let size = sys::fstat(f.as_fd()).ok()?.st_size as u64;
                Some(Direct {
                    file: Arc::new(File::from(f)),
                    size,
                })
            })
            .as_ref()
    }

    /// Keeps [`DEPTH`] chunks read ahead of `end` (the end of the READ just
    /// answered), within the end of the file and the [`BUDGET`].
    fn schedule(self: &Arc<Self>, la: &mut Lookahead, end: u64) {
        let Some(Some(direct)) = self.direct.get() else {
            return;
        };
        if self.stalled.load(Ordering::Relaxed) {
            return;
        }
        let mut next = la.chunks.back().map_or(end, |c| c.end().max(end));
        while la.chunks.len() < DEPTH && next < direct.size {
            let Some(slot) = Slot::take() else {
                return;
            };
            let len = CHUNK;
            la.chunks.push_back(Chunk {
                off: next,
                len,
                state: ChunkState::Pending,
                _slot: slot,
            });
            let job = Job {
                state: self.clone(),
                file: direct.file.clone(),
                off: next,
                len,
            };
            if !submit(job) {
                la.chunks.pop_back();
                return;
            }
            next += len as u64;
        }
    }

    /// The lookahead thread finished reading the chunk at `off`.
    fn fill(&self, off: u64, result: io::Result<(PageBuf, usize)>) {
        let mut la = self.la.lock();
        if let Some(c) = la
            .chunks
            .iter_mut()
            .find(|c| c.off == off && matches!(c.state, ChunkState::Pending))
        {
            c.state = match result {
                Ok((buf, got)) => ChunkState::Ready { buf, got },
                Err(_) => ChunkState::Failed,
            };
        }
        drop(la);
        self.ready.notify_all();
    }
}

/// Copies `want` bytes at `offset` out of chunk `i` and the one after it.
fn gather(chunks: &VecDeque<Chunk>, i: usize, offset: u64, want: usize, tl: &mut PageBuf) -> usize {
    let out = tl.bytes(want);
    let mut n = 0usize;
    for c in chunks.iter().skip(i).take(2) {
        let ChunkState::Ready { buf, got } = &c.state else {
            break;
        };
        let pos = offset + n as u64;
        if pos < c.off || pos >= c.end() {
            break;
        }
        let from = (pos - c.off) as usize;
        let take = (want - n).min(got.saturating_sub(from));
        out[n..n + take].copy_from_slice(&buf.filled(*got)[from..from + take]);
        n += take;
        if n == want || *got < c.len {
            break;
        }
    }
    n
}

/// Chunks taken from the [`BUDGET`].
static IN_USE: AtomicUsize = AtomicUsize::new(0);

/// One chunk's share of the [`BUDGET`], given back when dropped.
struct Slot(());

impl Slot {
    fn take() -> Option<Slot> {
        IN_USE
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < BUDGET).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_USE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A chunk for the lookahead thread to read.
struct Job {
    state: Arc<ReadState>,
    file: Arc<File>,
    off: u64,
    len: usize,
}

/// Buffers of finished chunks, kept for the next ones (a fresh buffer is
/// a fresh mapping, faulted in page by page).
static SPARE: Mutex<Vec<PageBuf>> = Mutex::new(Vec::new());

/// Hands `job` to the lookahead thread (started at the first job).
/// `false` if the thread cannot be started.
fn submit(job: Job) -> bool {
    static TX: OnceLock<Option<Mutex<Sender<Job>>>> = OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("unionfs-lookahead".into())
            .spawn(move || {
                for job in rx {
                    let mut buf = SPARE.lock().pop().unwrap_or_default();
                    let res = read_into(&job.file, &mut buf, job.off, job.len);
                    job.state.fill(job.off, res.map(|got| (buf, got)));
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    match tx {
        Some(tx) => tx.lock().send(job).is_ok(),
        None => false,
    }
}

/// Gives a finished chunk's buffer back for reuse.
fn recycle(buf: PageBuf) {
    let mut spare = SPARE.lock();
    if spare.len() < DEPTH {
        spare.push(buf);
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let ChunkState::Ready { buf, .. } =
            std::mem::replace(&mut self.state, ChunkState::Failed)
        {
            recycle(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Position-dependent bytes: a chunk served at the wrong offset shows.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(seed) >> 29) as u8)
            .collect()
    }

    /// A file of `data` in TMPDIR, flushed and evicted from the page cache
    /// (checked: the tests need TMPDIR on a disk file system).
    fn cold_file(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> File {
        let path = dir.path().join(name);
        let mut f = File::create(&path).expect("create");
        f.write_all(data).expect("write");
        f.sync_all().expect("fsync");
        let f = File::open(&path).expect("open");
        nix::fcntl::posix_fadvise(
            &f,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .expect("evict");
        assert_eq!(
            sys::cached_pages(f.as_fd(), 0, data.len() as u64).expect("cachestat"),
            0,
            "this test needs TMPDIR on a disk file system ({} stayed cached)",
            path.display()
        );
        f
    }

    #[test]
    fn page_buffers_are_aligned_for_o_direct() {
        let mut b = PageBuf::new();
        let bytes = b.bytes(10_000);
        assert_eq!(bytes.len(), 3 * PAGE);
        assert_eq!(bytes.as_ptr() as usize % PAGE, 0);
        bytes[9_999] = 7;
        assert_eq!(b.filled(10_000)[9_999], 7);
        b.trim(PAGE);
        assert!(b.0.is_empty(), "trim past the limit frees the buffer");
    }

    /// Two handles read two cold files in turns, with READ sizes that do
    /// not divide the lookahead chunk: every byte matches, and the
    /// budget is given back once the handles are gone.
    #[test]
    fn interleaved_sequential_readers_get_their_own_bytes() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let a = pattern(3 * CHUNK + 5_000, 3);
        let b = pattern(2 * CHUNK + 123, 5);
        let fa = cold_file(&dir, "a", &a);
        let fb = cold_file(&dir, "b", &b);
        let (sa, sb) = (
            Arc::new(ReadState::default()),
            Arc::new(ReadState::default()),
        );
        let mut tl = PageBuf::new();
        let step = 192 * 1024;
        let (mut oa, mut ob) = (0usize, 0usize);
        while oa < a.len() || ob < b.len() {
            for (st, f, data, off) in [(&sa, &fa, &a, &mut oa), (&sb, &fb, &b, &mut ob)] {
                if *off >= data.len() {
                    continue;
                }
                let mut got = None;
                let served = st.serve(true, f, *off as u64, step, &mut tl, |r| {
                    got = Some(r.expect("read").to_vec())
                });
                assert!(
                    matches!(served, Served::Done),
                    "READ at {} of a cold file went through the page cache",
                    *off
                );
                let got = got.expect("a reply");
                let want = &data[*off..(*off + step).min(data.len())];
                assert_eq!(got.len(), want.len(), "length at {}", *off);
                assert!(got == want, "bytes differ at {}", *off);
                *off += got.len();
            }
        }
        drop((sa, sb));
        // The lookahead thread may still hold the last jobs' states.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while IN_USE.load(Ordering::Acquire) != 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            IN_USE.load(Ordering::Acquire),
            0,
            "lookahead budget not given back"
        );
    }

    /// A handle `cachestat` refuses probes one page with `RWF_NOWAIT`: a
    /// cold file is then read around the page cache (the probe leaves just
    /// its one page cached), a cached one through it.
    #[test]
    fn without_cachestat_one_page_tells_cold_from_cached() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let data = pattern(2 * CHUNK, 11);
        let cold = cold_file(&dir, "cold", &data);
        let warm = cold_file(&dir, "warm", &data);
        std::io::copy(&mut &warm, &mut std::io::sink()).expect("warm the file");
        let want = 128 << 10;
        for (f, name, around) in [(&cold, "cold", true), (&warm, "cached", false)] {
            let st = Arc::new(ReadState::default());
            st.no_cachestat.store(true, Ordering::Relaxed);
            let mut tl = PageBuf::new();
            let mut got = None;
            let served = st.serve(true, f, 0, want, &mut tl, |r| {
                got = Some(r.expect("read").to_vec())
            });
            assert_eq!(
                matches!(served, Served::Done),
                around,
                "the {name} file's first READ went the wrong way"
            );
            if around {
                let got = got.expect("a reply");
                assert!(got == data[..want], "the {name} file's bytes differ");
            }
        }
        let cached = sys::cached_pages(cold.as_fd(), 0, data.len() as u64).expect("cachestat");
        assert!(
            cached <= 1,
            "probing and reading the cold file cached {cached} pages"
        );
    }

    /// READs larger than a chunk, and READs that skip ahead inside what
    /// was read ahead, get their whole range.
    #[test]
    fn large_and_skipping_reads_get_whole_ranges() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let data = pattern(6 * CHUNK + 300, 9);
        let f = cold_file(&dir, "c", &data);
        let st = Arc::new(ReadState::default());
        let mut tl = PageBuf::new();
        let mut check = |off: usize, want: usize| {
            let mut got = None;
            let served = st.serve(true, &f, off as u64, want, &mut tl, |r| {
                got = Some(r.expect("read").to_vec())
            });
            let got = match served {
                Served::Done => got.expect("a reply"),
                Served::No(_) => {
                    let mut buf = PageBuf::new();
                    let n = read_into(&f, &mut buf, off as u64, want).expect("buffered read");
                    buf.filled(n)[..n].to_vec()
                }
            };
            let want_bytes = &data[off..(off + want).min(data.len())];
            assert_eq!(got.len(), want_bytes.len(), "length of {want} at {off}");
            assert!(got == want_bytes, "bytes of {want} at {off}");
        };
        // Sequential start, then a skip inside the lookahead window, then
        // a READ of two chunks at once, then the tail.
        check(0, 128 << 10);
        check(128 << 10, 128 << 10);
        check(CHUNK + (64 << 10), 128 << 10);
        check(CHUNK + (192 << 10), 128 << 10);
        check(3 * CHUNK, 2 * CHUNK);
        check(5 * CHUNK, CHUNK);
        check(6 * CHUNK, CHUNK);
    }

    /// A lookahead thread that does not come back (here: blocked on the
    /// spare-buffer lock this test holds) delays a READ by [`STALL`] once;
    /// the handle then reads directly, and every byte still matches.
    #[test]
    fn a_stuck_lookahead_thread_only_delays_a_read() {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let data = pattern(3 * CHUNK, 11);
        let f = cold_file(&dir, "s", &data);
        let st = Arc::new(ReadState::default());
        let mut tl = PageBuf::new();
        let step = 128 << 10;
        let spare = SPARE.lock();
        let mut off = 0usize;
        while off < data.len() {
            let mut got = None;
            let served = st.serve(true, &f, off as u64, step, &mut tl, |r| {
                got = Some(r.expect("read").to_vec())
            });
            assert!(matches!(served, Served::Done), "READ at {off} not served");
            let got = got.expect("a reply");
            assert!(got == data[off..off + step], "bytes differ at {off}");
            off += step;
        }
        drop(spare);
        assert!(
            st.stalled.load(Ordering::Relaxed),
            "the handle never gave up on the stuck lookahead"
        );
    }
}
