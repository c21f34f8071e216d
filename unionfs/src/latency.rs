//! Low CPU wake-up latency while the filesystem is busy.
//!
//! Every FUSE request is two wake-ups: the caller's thread wakes a daemon
//! thread, and the reply wakes the caller. When the CPU being woken is idle
//! the cost depends on how deep it sleeps. On a virtual machine whose
//! guest does not poll before halting (this project's own 2-core VM runs
//! with `haltpoll.guest_halt_poll_ns=0`), waking a halted virtual CPU takes
//! the host about 45 µs, and a request served on the other CPU costs about
//! 100 µs instead of 6 µs on the same one. Measured with a `getxattr` loop
//! against a mount: 90 µs per request with one daemon thread, 20–30 µs with
//! four (the scheduler sometimes keeps both sides on one CPU), 8–12 µs when
//! idle CPUs poll instead of halting.
//!
//! The kernel's answer is a PM QoS CPU latency request: while a process
//! holds `/dev/cpu_dma_latency` open with the value 0, idle CPUs take only
//! their shallowest idle state (a polling loop on most machines), the same
//! request latency-sensitive programs and tuned's `latency-performance`
//! profile make. [`BusyLatency`] makes it only while requests arrive: the
//! first request of a burst wakes a helper thread, which opens the device
//! and closes it once no request came for [`IDLE_RELEASE`]. An idle mount holds nothing
//! and costs nothing. Only root may open the device; everyone else (and
//! `cpu_latency=off`) gets the default idle behaviour.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The kernel's PM QoS CPU latency device.
pub const DEVICE: &str = "/dev/cpu_dma_latency";

/// How long the request is kept after the last FUSE request.
pub const IDLE_RELEASE: Duration = Duration::from_millis(10);

/// Holds a zero CPU latency request while requests keep coming. Clones
/// share one holder.
#[derive(Clone)]
pub struct BusyLatency {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Duration,
    /// Requests seen; the holder compares it across an idle period.
    requests: AtomicU64,
    /// A request arrived while nothing was held: the holder should take it.
    /// Set on the request path, cleared by the holder when it releases.
    wanted: AtomicBool,
    /// The device is open.
    held: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Opening or writing the device failed once: never try again.
    failed: bool,
    /// The holder thread is running.
    holder: bool,
}

impl BusyLatency {
    /// A holder for the kernel device, released after [`IDLE_RELEASE`].
    pub fn new() -> BusyLatency {
        BusyLatency::with_device(PathBuf::from(DEVICE), IDLE_RELEASE)
    }

    /// A holder for `path` (a test gives a regular file), released after `idle`.
    pub fn with_device(path: PathBuf, idle: Duration) -> BusyLatency {
        BusyLatency {
            inner: Arc::new(Inner {
                path,
                idle,
                requests: AtomicU64::new(0),
                wanted: AtomicBool::new(false),
                held: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// Called at the start of every request. It only counts and, at the
    /// start of a burst, wakes the holder thread: opening the device (the
    /// kernel then updates every CPU's idle policy) and starting a thread
    /// stay off the request's path.
    pub fn request(&self) {
        let inner = &self.inner;
        inner.requests.fetch_add(1, Ordering::Relaxed);
        if !inner.held.load(Ordering::Relaxed) && !inner.wanted.swap(true, Ordering::AcqRel) {
            self.wake_holder();
        }
    }

    /// Starts the holder thread. Until then requests are only counted; a
    /// burst already under way is taken up as soon as the thread runs. The
    /// mount calls it from a thread that is not serving requests, a little
    /// after the request threads have started.
    pub fn start(&self) {
        let mut st = self.inner.state.lock();
        self.ensure_holder(&mut st);
    }

    /// Whether the latency request is held now.
    pub fn held(&self) -> bool {
        self.inner.held.load(Ordering::Relaxed)
    }

    #[cold]
    fn wake_holder(&self) {
        let st = self.inner.state.lock();
        if st.failed {
            return;
        }
        // Before `start` there is no holder to wake: the request path never
        // starts a thread. `start` finds `wanted` set and takes the request.
        if st.holder {
            self.inner.wake.notify_one();
        }
    }

    fn ensure_holder(&self, st: &mut State) {
        if st.holder || st.failed {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        match std::thread::Builder::new()
            .name("unionfs-latency".into())
            .spawn(move || hold_loop(weak))
        {
            Ok(_) => st.holder = true,
            Err(err) => {
                // Nobody would release a request: never make one.
                st.failed = true;
                tracing::debug!("no CPU latency request (no holder thread): {err}");
            }
        }
    }
}

/// Asks for zero CPU wake-up latency through the PM QoS device at `path`
/// (normally [`DEVICE`]); the request lasts while the returned file is open.
pub fn request_zero(path: &std::path::Path) -> std::io::Result<File> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(&0i32.to_ne_bytes())?;
    Ok(f)
}

impl Default for BusyLatency {
    fn default() -> Self {
        BusyLatency::new()
    }
}

/// The holder thread: takes the request when a burst starts, releases it
/// after an idle period, and waits in between. Ends once the mount's
/// [`BusyLatency`] is gone (it holds only a weak reference between rounds).
fn hold_loop(weak: Weak<Inner>) {
    // How long to wait for a new burst before checking whether the holder
    // still exists.
    const PARK: Duration = Duration::from_secs(1);
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        {
            let mut st = inner.state.lock();
            if !inner.wanted.load(Ordering::Acquire) {
                inner.wake.wait_for(&mut st, PARK);
                continue;
            }
        }
        let file = match request_zero(&inner.path) {
            Ok(f) => f,
            Err(err) => {
                inner.state.lock().failed = true;
                tracing::debug!(
                    device = %inner.path.display(),
                    "no CPU latency request (idle CPUs may sleep deeply): {err}"
                );
                return;
            }
        };
        inner.held.store(true, Ordering::Release);
        loop {
            let before = inner.requests.load(Ordering::Relaxed);
            std::thread::sleep(inner.idle);
            if inner.requests.load(Ordering::Relaxed) == before {
                break;
            }
        }
        // Cleared before `held`: a request that sees `held` false then
        // finds `wanted` false too and wakes this thread again.
        inner.wanted.store(false, Ordering::Release);
        inner.held.store(false, Ordering::Release);
        drop(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `cond` for up to five seconds.
    fn wait_until(cond: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    fn content(p: &std::path::Path) -> Vec<u8> {
        std::fs::read(p).unwrap_or_default()
    }

    #[test]
    fn holds_while_busy_and_releases_when_idle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dev = dir.path().join("dev");
        std::fs::write(&dev, b"").expect("fake device");
        // Generous periods: a loaded machine may oversleep the short ones.
        let b = BusyLatency::with_device(dev.clone(), Duration::from_millis(200));
        assert!(!b.held(), "nothing is held before the first request");
        b.request();
        // The request path starts no thread: nothing is held before `start`.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!b.held(), "held before the holder thread was started");
        b.start();
        assert!(
            wait_until(|| b.held()),
            "the holder did not take up the burst that began before it started"
        );
        assert_eq!(content(&dev), 0i32.to_ne_bytes());
        // Requests closer together than the idle period keep it.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(20));
            b.request();
            assert!(b.held(), "released in the middle of a burst");
        }
        std::thread::sleep(Duration::from_millis(1000));
        assert!(!b.held(), "still held 1 s after the last request");
        // A new burst takes it again.
        b.request();
        assert!(wait_until(|| b.held()), "a new burst did not take it again");
        std::thread::sleep(Duration::from_millis(1000));
        assert!(!b.held());
    }

    #[test]
    fn a_device_that_cannot_be_opened_is_not_retried() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = BusyLatency::with_device(dir.path().join("missing"), Duration::from_millis(5));
        b.start();
        b.request();
        assert!(
            wait_until(|| b.inner.state.lock().failed),
            "the failure was not recorded"
        );
        b.request();
        assert!(!b.held());
    }
}
