//! The daemon holds a zero PM QoS CPU latency request while requests
//! arrive and drops it when the mount goes idle (`cpu_latency=on`, the
//! default), and never with `cpu_latency=off`. Checked against the
//! kernel's own aggregate value in `/dev/cpu_dma_latency`, so this test
//! lives alone in its binary: another mount in the same process would hold
//! the request too.

mod unionfs_common;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use unionfs_common::*;

const DEVICE: &str = "/dev/cpu_dma_latency";

/// The kernel's current CPU latency limit in µs (all requests combined).
fn latency_limit() -> i32 {
    let mut f = File::open(DEVICE).unwrap_or_else(|e| {
        panic!("this test needs {DEVICE} (kernel PM QoS) readable as root: {e}")
    });
    let mut b = [0u8; 4];
    f.read_exact(&mut b)
        .unwrap_or_else(|e| panic!("reading {DEVICE}: {e}"));
    i32::from_ne_bytes(b)
}

/// Sends the daemon a steady stream of requests (GETXATTR of a missing
/// name is never cached by the kernel) while sampling the limit; returns
/// the samples.
fn samples_while_busy(file: &Path) -> Vec<i32> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let got = strata_tests::sys::lgetxattr(file, "user.missing")
                    .unwrap_or_else(|e| panic!("getxattr {}: {e}", file.display()));
                assert!(got.is_none(), "user.missing must not exist");
                sent += 1;
            }
            assert!(sent > 100, "only {sent} requests reached the mount");
        });
        // Let the burst start, then sample.
        std::thread::sleep(Duration::from_millis(20));
        let mut samples = Vec::new();
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            samples.push(latency_limit());
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        samples
    })
}

/// Waits up to `limit` for the latency limit to be back at `want`.
fn settles_to(want: i32, limit: Duration) -> i32 {
    let until = Instant::now() + limit;
    loop {
        let now = latency_limit();
        if now == want || Instant::now() > until {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn busy_mount_holds_a_zero_cpu_latency_request_and_idle_mount_drops_it() {
    let idle = latency_limit();
    assert_ne!(
        idle, 0,
        "something else on this machine already holds a zero CPU latency \
         request ({DEVICE} reads 0); stop it (tuned's latency profiles, \
         cyclictest, another unionfs mount) and run again"
    );

    let s = Scratch::new(1);
    write(&s.lower(0, "f"), b"data");
    let m = s.mount("");
    let busy = samples_while_busy(&s.m("f"));
    let zero = busy.iter().filter(|&&v| v == 0).count();
    // Most samples, not all: a descheduled request thread may leave a gap
    // longer than the release delay on a loaded machine.
    assert!(
        zero * 2 >= busy.len(),
        "cpu_latency=on: only {zero} of {} samples during a request burst \
         read 0: {busy:?}",
        busy.len()
    );
    assert_eq!(
        settles_to(idle, Duration::from_secs(2)),
        idle,
        "the request is still held 2 s after the last FUSE request"
    );
    m.unmount();

    let s = Scratch::new(1);
    write(&s.lower(0, "f"), b"data");
    let m = s.mount("cpu_latency=off");
    let busy = samples_while_busy(&s.m("f"));
    assert!(
        busy.iter().all(|&v| v == idle),
        "cpu_latency=off still changed the limit: {busy:?} (idle {idle})"
    );
    m.unmount();
    assert_eq!(latency_limit(), idle);
}
