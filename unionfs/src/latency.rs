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
//! first request of a burst opens the device, and a helper thread closes it
//! once no request came for [`IDLE_RELEASE`]. An idle mount holds nothing
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

/// Holds a zero CPU latency request while requests keep coming.
pub struct BusyLatency {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    idle: Duration,
    /// Requests seen; the releaser compares it across an idle period.
    requests: AtomicU64,
    /// The device is open (a fast check on the request path).
    held: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// The open device while the request is held.
    file: Option<File>,
    /// Opening or writing the device failed once: never try again.
    failed: bool,
    /// A releaser thread is running.
    releaser: bool,
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
                held: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// Called at the start of every request.
    pub fn request(&self) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        if !self.inner.held.load(Ordering::Relaxed) {
            self.acquire();
        }
    }

    /// Whether the latency request is held now.
    pub fn held(&self) -> bool {
        self.inner.held.load(Ordering::Relaxed)
    }

    #[cold]
    fn acquire(&self) {
        let inner = &self.inner;
        let mut st = inner.state.lock();
        if st.file.is_some() || st.failed {
            return;
        }
        match request_zero(&inner.path) {
            Ok(f) => {
                st.file = Some(f);
                inner.held.store(true, Ordering::Relaxed);
            }
            Err(err) => {
                st.failed = true;
                tracing::debug!(
                    device = %inner.path.display(),
                    "no CPU latency request (idle CPUs may sleep deeply): {err}"
                );
                return;
            }
        }
        if st.releaser {
            inner.wake.notify_one();
            return;
        }
        let weak = Arc::downgrade(inner);
        let spawned = std::thread::Builder::new()
            .name("unionfs-latency".into())
            .spawn(move || release_loop(weak));
        match spawned {
            Ok(_) => st.releaser = true,
            Err(err) => {
                // Nobody would release it: do not hold it at all.
                st.file = None;
                st.failed = true;
                inner.held.store(false, Ordering::Relaxed);
                tracing::debug!("no CPU latency request (no releaser thread): {err}");
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

/// Releases the request after an idle period; waits while nothing is held.
/// Ends once the holder is gone (it holds only a weak reference between
/// rounds, so dropping the mount's [`BusyLatency`] frees everything).
fn release_loop(weak: Weak<Inner>) {
    // How long to wait for a new burst before checking whether the holder
    // still exists.
    const PARK: Duration = Duration::from_secs(1);
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let before = inner.requests.load(Ordering::Relaxed);
        if inner.held.load(Ordering::Relaxed) {
            std::thread::sleep(inner.idle);
            if inner.requests.load(Ordering::Relaxed) == before {
                let mut st = inner.state.lock();
                st.file = None;
                inner.held.store(false, Ordering::Relaxed);
            }
        } else {
            let mut st = inner.state.lock();
            if st.file.is_none() {
                inner.wake.wait_for(&mut st, PARK);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(b.held(), "the first request takes the latency request");
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
        assert!(b.held());
        std::thread::sleep(Duration::from_millis(1000));
        assert!(!b.held());
    }

    #[test]
    fn a_device_that_cannot_be_opened_is_not_retried() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = BusyLatency::with_device(dir.path().join("missing"), Duration::from_millis(5));
        b.request();
        b.request();
        assert!(!b.held());
        assert!(b.inner.state.lock().failed);
    }
}
