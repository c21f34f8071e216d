//! Which worker thread reads the next FUSE request.
//!
//! A FUSE request costs two context switches on the daemon's side: the
//! kernel wakes a worker blocked in `read(/dev/fuse)`, and the worker
//! sleeps again once it has replied. On this project's 2-core VM (a PVM
//! guest with shadow paging) a switch between processes costs several
//! microseconds, and most of a metadata-heavy workload's daemon time went
//! there: unpacking 5,000 files made about 7 switches per file and the
//! daemon spent ~65 µs of CPU per file, most of it in `finish_task_switch`.
//!
//! So, as busy servers do, the worker that has just replied *spins* for a
//! short while (`spin=`, 50 µs by default), polling the device, and reads the next
//! request without ever sleeping when one comes in time. That only helps if
//! it is the only thread in `read`: the kernel wakes a blocked reader for
//! every new request, spinner or not. The other workers therefore *park*
//! (a condition variable in this process) instead of going back to `read`
//! when another thread is already reading. Unpacking the same tree then
//! takes a couple of hundred switches instead of 35,000.
//!
//! Parked workers come back when they are needed:
//! - a request that may wait on the disk (`fsync`, `fsyncdir`) hands the
//!   reading to a parked worker before it starts, if another request is
//!   already queued (waking a worker costs more than a short flush: with
//!   the hand-off on every fsync, create+write+fsync of small files took
//!   0.388 ms/file, without it 0.315, overlayfs 0.305);
//! - one parked worker, the *watcher*, checks every [`WATCH`] whether
//!   workers are busy, nobody is reading and no request has started or
//!   finished since its last look (a long copy-up, a cold directory on a
//!   slow disk): then it goes back to reading itself;
//! - when the connection goes away (unmount) every parked worker returns
//!   to `read`, gets `ENODEV` and ends.
//!
//! With one worker (`threads=1`) there is nothing to park; the worker just
//! spins after each reply.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How often the watcher looks for a stalled mount while requests run
/// (each look is a wake-up: 100 a second while the mount is busy).
pub const WATCH: Duration = Duration::from_millis(10);
/// The longest the watcher sleeps while the mount is idle (it also notices
/// an unmount from outside then).
const WATCH_IDLE: Duration = Duration::from_millis(100);
/// No request for this long: the mount is idle.
const IDLE: Duration = Duration::from_millis(50);

/// Decides, at each request's start and end, which worker reads next.
pub struct Relay {
    /// The connection's device (a duplicate): polled for a queued request
    /// and for the end of the connection.
    dev: OwnedFd,
    /// How long a worker that has replied polls for the next request
    /// before it blocks in `read` (zero: never).
    spin: Duration,
    st: Mutex<State>,
    /// Parked workers other than the watcher.
    parked_cv: Condvar,
    /// The watcher.
    watch_cv: Condvar,
}

struct State {
    /// Workers in (or on their way back to) `read`.
    readers: usize,
    /// Workers running a request.
    handling: usize,
    /// Workers parked here.
    parked: usize,
    /// Parked workers asked to go back to reading and not yet gone.
    wanted: usize,
    /// A parked worker is the watcher.
    watcher: bool,
    /// Counts request starts and ends: the watcher compares it.
    progress: u64,
    /// When the last request started.
    last_start: Instant,
    /// The connection is gone: nobody parks any more.
    closing: bool,
}

/// What a worker does once it has finished a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// It is the reader: it spun for the next request and goes back to `read`.
    Read,
    /// It parked and was called back to `read`.
    Unparked,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("spin", &self.spin).finish()
    }
}

impl Relay {
    /// A relay for a connection served by `threads` workers, all of which
    /// start in `read`. `dev` is a duplicate of the connection's device.
    pub fn new(dev: OwnedFd, threads: usize, spin: Duration) -> Relay {
        Relay {
            dev,
            spin,
            st: Mutex::new(State {
                readers: threads.max(1),
                handling: 0,
                parked: 0,
                wanted: 0,
                watcher: false,
                progress: 0,
                last_start: Instant::now(),
                closing: false,
            }),
            parked_cv: Condvar::new(),
            watch_cv: Condvar::new(),
        }
    }

    /// A worker took a request. `may_block`: the request may wait on the
    /// disk for long, so another worker should read meanwhile.
    pub fn start(&self, may_block: bool) {
        let mut st = self.st.lock();
        st.readers = st.readers.saturating_sub(1);
        st.handling += 1;
        st.progress += 1;
        let now = Instant::now();
        let after_idle = now.duration_since(st.last_start) > IDLE;
        st.last_start = now;
        // Only when a request is already waiting: waking a worker costs two
        // context switches, more than a short flush, and the watcher still
        // catches one that takes long.
        if may_block
            && st.readers == 0
            && st.parked > st.wanted
            && self.poll(libc::POLLIN).is_some()
        {
            st.wanted += 1;
            self.parked_cv.notify_one();
            self.watch_cv.notify_one();
        } else if after_idle && st.watcher {
            // The watcher may be on its long idle sleep: shorten it.
            self.watch_cv.notify_one();
        }
    }

    /// A worker has finished its request (the reply is sent). Returns once
    /// it should read again: at once if nobody else reads (after spinning
    /// for the next request), else when it is called back.
    pub fn finish(&self) -> Next {
        let mut st = self.st.lock();
        st.handling = st.handling.saturating_sub(1);
        st.progress += 1;
        if st.readers == 0 || st.closing {
            st.readers += 1;
            drop(st);
            self.spin_for_request();
            return Next::Read;
        }
        st.parked += 1;
        let mut watching = false;
        let mut seen = st.progress;
        let mut nap = WATCH;
        loop {
            if st.closing {
                break;
            }
            if st.wanted > 0 {
                st.wanted -= 1;
                break;
            }
            if !watching && st.watcher {
                self.parked_cv.wait(&mut st);
                continue;
            }
            watching = true;
            st.watcher = true;
            let timed_out = self.watch_cv.wait_for(&mut st, nap).timed_out();
            if !timed_out {
                nap = WATCH;
                continue;
            }
            if self.connection_gone() {
                st.closing = true;
                self.parked_cv.notify_all();
                break;
            }
            if st.readers == 0 && st.handling > 0 && st.progress == seen {
                // Every running request is stuck and nobody reads.
                break;
            }
            seen = st.progress;
            nap = if st.handling == 0 && st.last_start.elapsed() > IDLE {
                (nap * 2).min(WATCH_IDLE)
            } else {
                WATCH
            };
        }
        st.parked -= 1;
        st.readers += 1;
        if watching {
            st.watcher = false;
            if st.parked > 0 {
                // One of the others takes over the watch.
                self.parked_cv.notify_one();
            }
        }
        Next::Unparked
    }

    /// Our own unmount: every parked worker goes back to `read` (and ends
    /// there) without waiting for the watcher.
    pub fn close(&self) {
        let mut st = self.st.lock();
        st.closing = true;
        self.parked_cv.notify_all();
        self.watch_cv.notify_all();
    }

    /// Polls the device until a request is queued or the spin budget is
    /// spent.
    fn spin_for_request(&self) {
        if self.spin.is_zero() {
            return;
        }
        let started = Instant::now();
        loop {
            if self.poll(libc::POLLIN).is_some() || started.elapsed() >= self.spin {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// Whether the device reports the connection ended (unmounted, aborted).
    fn connection_gone(&self) -> bool {
        self.poll(0)
            .is_some_and(|r| r & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
    }

    /// One non-blocking poll of the device for `events`; the returned
    /// events, if any.
    fn poll(&self, events: libc::c_short) -> Option<libc::c_short> {
        let mut p = libc::pollfd {
            fd: self.dev.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid, initialised pollfd; a zero timeout never blocks.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        (n > 0).then_some(p.revents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A pipe stands in for the device: readable when "a request" waits.
    fn relay(threads: usize) -> (Arc<Relay>, OwnedFd) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        (
            Arc::new(Relay::new(r, threads, Duration::from_micros(50))),
            w,
        )
    }

    /// Two workers both take a request; the first to finish becomes the
    /// reader, the second parks (in the returned thread).
    fn reader_and_parked(relay: &Arc<Relay>) -> std::thread::JoinHandle<Next> {
        relay.start(false);
        relay.start(false);
        assert_eq!(relay.finish(), Next::Read);
        let r2 = relay.clone();
        let parked = std::thread::spawn(move || r2.finish());
        std::thread::sleep(Duration::from_millis(20));
        assert!(!parked.is_finished(), "the second worker did not park");
        parked
    }

    #[test]
    fn a_request_that_may_block_calls_a_parked_worker_back_if_others_wait() {
        let (relay, w) = relay(2);
        let parked = reader_and_parked(&relay);
        // Nothing else is queued: the flush runs alone and nobody is woken.
        relay.start(true);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!parked.is_finished(), "woken with nothing queued");
        assert_eq!(relay.finish(), Next::Read);
        // A request is queued behind this flush: a parked worker takes over.
        nix::unistd::write(&w, b"x").expect("write");
        relay.start(true);
        assert_eq!(parked.join().expect("worker"), Next::Unparked);
    }

    #[test]
    fn a_stuck_request_lets_the_watcher_read() {
        let (relay, _w) = relay(2);
        let parked = reader_and_parked(&relay);
        // The reader takes a request that turns out to be slow; the parked
        // worker is the watcher and must come back on its own.
        relay.start(false);
        let t = Instant::now();
        assert_eq!(parked.join().expect("worker"), Next::Unparked);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "the watcher took {:?} to notice",
            t.elapsed()
        );
    }

    #[test]
    fn close_releases_parked_workers() {
        let (relay, _w) = relay(3);
        for _ in 0..3 {
            relay.start(false);
        }
        assert_eq!(relay.finish(), Next::Read);
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let r = relay.clone();
                std::thread::spawn(move || r.finish())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        relay.close();
        for w in workers {
            assert_eq!(w.join().expect("worker"), Next::Unparked);
        }
    }

    #[test]
    fn a_closed_connection_releases_parked_workers() {
        let (relay, w) = relay(2);
        let parked = reader_and_parked(&relay);
        // The write end closing is a hang-up on the read end.
        drop(w);
        assert_eq!(parked.join().expect("worker"), Next::Unparked);
    }

    #[test]
    fn the_reader_spins_until_a_request_is_queued() {
        let (relay, w) = relay(1);
        relay.start(false);
        nix::unistd::write(&w, b"x").expect("write");
        let t = Instant::now();
        assert_eq!(relay.finish(), Next::Read);
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
