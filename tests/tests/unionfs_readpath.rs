//! Reads that come to the daemon as READ requests (`passthrough=0`, as for
//! an ordinary user, who cannot use passthrough): whole files, odd offsets
//! and sizes, several readers at once, and the mount's read-ahead window
//! (`readahead_kb=`).

mod unionfs_common;

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use unionfs_common::*;

/// Deterministic, position-dependent bytes (a misplaced chunk shows).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The read-ahead window of the mount at `mnt`, in KiB, from sysfs.
fn readahead_kb(mnt: &Path) -> u32 {
    let dev = fs::metadata(mnt)
        .unwrap_or_else(|e| panic!("stat {}: {e}", mnt.display()))
        .dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("this test needs sysfs mounted to read {path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: not a number: {e}"))
}

#[test]
fn reads_without_passthrough_return_the_lower_bytes() {
    let s = Scratch::new(2);
    let big = pattern(3 * 1024 * 1024 + 1234, 7);
    let other = pattern(2 * 1024 * 1024 + 17, 11);
    write(&s.lower(0, "big"), &big);
    write(&s.lower(1, "dir/other"), &other);
    write(&s.lower(1, "small"), b"tiny");
    let _m = s.mount("passthrough=0");

    assert_eq!(fs::read(s.m("small")).expect("read small"), b"tiny");
    let got = fs::read(s.m("big")).expect("read big");
    assert_eq!(got.len(), big.len(), "length of big read through the mount");
    assert!(
        got == big,
        "big read through the mount differs from the lower"
    );

    // Odd offsets and sizes, across the 1 MiB request boundaries and the end.
    let f = File::open(s.m("big")).expect("open big");
    for (offset, len) in [
        (0usize, 1usize),
        (1, 4095),
        (1024 * 1024 - 100, 300),
        (2 * 1024 * 1024 - 1, 1024 * 1024 + 2),
        (big.len() - 10, 100),
    ] {
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, offset as u64).expect("pread big");
        let want = &big[offset..(offset + len).min(big.len())];
        assert_eq!(n, want.len(), "pread of {len} at {offset}: length");
        assert!(
            &buf[..n] == want,
            "pread of {len} at {offset}: bytes differ"
        );
    }

    // Several readers at once: every worker has its own read buffer.
    std::thread::scope(|sc| {
        for i in 0..4 {
            let (path, want) = if i % 2 == 0 {
                (s.m("big"), &big)
            } else {
                (s.m("dir/other"), &other)
            };
            sc.spawn(move || {
                for _ in 0..3 {
                    // Fresh opens see the kernel's cached pages; reading at
                    // offsets the cache may not hold yet goes to the daemon.
                    let f = File::open(&path).expect("open");
                    let mut buf = vec![0u8; 256 * 1024 + 3];
                    let mut off = (i * 4099) % 65536;
                    while off < want.len() {
                        let n = f.read_at(&mut buf, off as u64).expect("pread");
                        let end = (off + n).min(want.len());
                        assert!(n > 0, "{}: short read at {off}", path.display());
                        assert!(
                            buf[..n] == want[off..end],
                            "{}: bytes differ at {off}",
                            path.display()
                        );
                        off += n;
                    }
                }
            });
        }
    });
}

#[test]
fn the_mount_reads_ahead_one_mib_unless_told_otherwise() {
    let s = Scratch::new(1);
    write(&s.lower(0, "f"), b"data");
    let m = s.mount("passthrough=0");
    // The daemon sets it shortly after the mount is live.
    let until = Instant::now() + Duration::from_secs(3);
    let mut now = readahead_kb(&m.path);
    while now != 1024 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        now = readahead_kb(&m.path);
    }
    assert_eq!(now, 1024, "read-ahead of a default mount, KiB");
    m.unmount();

    let s = Scratch::new(1);
    write(&s.lower(0, "f"), b"data");
    let m = s.mount("readahead_kb=0");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        readahead_kb(&m.path),
        128,
        "readahead_kb=0 must leave FUSE's own default (128 KiB)"
    );
    assert_eq!(fs::read(s.m("f")).expect("read f"), b"data");
    m.unmount();
}

/// The daemon sets the read-ahead window without sending its own mount a
/// request: a daemon thread waiting on its own mount hangs for good if the
/// daemon is killed while a worker holds that request (it did: a `statfs`
/// 20 ms after the mount, under the crash tests' SIGKILL). Nothing here
/// touches the mount, so the daemon must have served no request at all.
#[test]
fn the_daemon_sends_its_own_mount_no_request() {
    let s = Scratch::new(1);
    write(&s.lower(0, "f"), b"data");
    let counts = s.dir.path().join("opstats");
    mount_counting(
        &format!("{},passthrough=0", s.rw_options()),
        &s.mnt,
        &counts,
    );
    // Well past the daemon's start-up work (it waits 20 ms), without a
    // stat of the mount (that would be a request).
    std::thread::sleep(Duration::from_millis(500));
    let mnt = s.mnt.to_string_lossy().to_string();
    let listed = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    assert!(
        listed
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(mnt.as_str())),
        "{mnt} is not in the mount table"
    );
    nix::mount::umount2(&s.mnt, nix::mount::MntFlags::empty()).expect("umount");
    let text = request_counts(&counts);
    let served: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("init ") && !l.starts_with("destroy "))
        .collect();
    assert!(
        served.is_empty(),
        "the daemon served requests nobody but itself sent: {served:?}"
    );
}

/// How many of the pages of `f` in `range` (bytes, page aligned) are in the
/// page cache.
fn resident_pages(f: &File, range: std::ops::Range<usize>) -> usize {
    use std::os::fd::AsRawFd;
    let page = 4096;
    let len = range.end - range.start;
    // SAFETY: a shared read-only mapping of an open file, used only for
    // mincore (never dereferenced) and unmapped before returning.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            range.start as libc::off_t,
        )
    };
    assert_ne!(
        addr,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: `addr` maps `len` bytes and `vec` has one byte per page.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(addr, len) };
    assert_eq!(rc, 0, "mincore: {err}");
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

#[test]
fn sequential_reads_fetch_the_lower_ahead() {
    const MIB: usize = 1024 * 1024;
    let s = Scratch::new(1);
    let data = pattern(16 * MIB, 5);
    write(&s.lower(0, "seq"), &data);
    let lower = File::open(s.lower(0, "seq")).expect("open the lower file");
    lower.sync_all().expect("fsync the lower file");
    nix::fcntl::posix_fadvise(
        &lower,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .expect("evict the lower file's pages");
    let far = 5 * MIB..6 * MIB;
    assert_eq!(
        resident_pages(&lower, far.clone()),
        0,
        "this test needs TMPDIR on a disk file system (pages of {} stayed cached after \
         POSIX_FADV_DONTNEED)",
        s.lower(0, "seq").display()
    );

    // Reads through the lower's page cache (a cold lower otherwise goes
    // around it: `cold_sequential_reads_go_around_the_lower_page_cache`).
    let m = s.mount("passthrough=0,lower_direct=0");
    let until = Instant::now() + Duration::from_secs(3);
    while readahead_kb(&m.path) != 1024 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two sequential 1 MiB reads: the kernel asks for 1 MiB READs, and
    // after each the daemon has the lower's page cache fetch the next 4 MiB.
    let f = File::open(s.m("seq")).expect("open seq");
    let mut buf = vec![0u8; MIB];
    for i in 0..2 {
        f.read_exact_at(&mut buf, (i * MIB) as u64)
            .expect("read seq through the mount");
        assert!(
            buf[..] == data[i * MIB..(i + 1) * MIB],
            "bytes differ at {i} MiB"
        );
    }
    let until = Instant::now() + Duration::from_secs(3);
    let mut got = resident_pages(&lower, far.clone());
    while got == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        got = resident_pages(&lower, far.clone());
    }
    assert!(
        got > 0,
        "after reading the first 2 MiB, none of the lower file's pages at 5-6 MiB were cached: \
         the daemon did not read ahead"
    );
    drop(f);
    m.unmount();
}

/// Writes `data` to lower file `path`, flushes it and evicts its pages, so
/// that the next read of it finds nothing cached.
fn cold_lower(path: &Path, data: &[u8]) -> File {
    write(path, data);
    let f = File::open(path).expect("open the lower file");
    f.sync_all().expect("fsync the lower file");
    nix::fcntl::posix_fadvise(
        &f,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .expect("evict the lower file's pages");
    let len = data.len() / 4096 * 4096;
    assert_eq!(
        resident_pages(&f, 0..len),
        0,
        "this test needs TMPDIR on a disk file system (pages of {} stayed cached after \
         POSIX_FADV_DONTNEED)",
        path.display()
    );
    f
}

/// A page-aligned buffer of `len` bytes (for `O_DIRECT` reads).
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let v = vec![0u8; len + 4096];
    let skew = v.as_ptr().align_offset(4096);
    (v, skew)
}

#[test]
fn cold_sequential_reads_go_around_the_lower_page_cache() {
    const MIB: usize = 1024 * 1024;
    let s = Scratch::new(1);
    let big = pattern(5 * MIB + 1234, 21);
    let odd = pattern(3 * MIB + 777, 23);
    let lower_big = cold_lower(&s.lower(0, "big"), &big);
    let lower_odd = cold_lower(&s.lower(0, "odd"), &odd);
    let m = s.mount("passthrough=0");

    // A whole-file read: the bytes come through, and the lower's page
    // cache stays empty (the data is cached once, in the mount's).
    let got = fs::read(s.m("big")).expect("read big through the mount");
    assert_eq!(got.len(), big.len(), "length of big");
    assert!(
        got == big,
        "big read through the mount differs from the lower"
    );
    let cached = resident_pages(&lower_big, 0..5 * MIB);
    assert_eq!(
        cached, 0,
        "a cold sequential read through a passthrough=0 mount left {cached} pages of the \
         lower file in its page cache: READs did not go around it"
    );

    // READs of exactly the sizes asked for (O_DIRECT through the mount):
    // 192 KiB steps cross the daemon's 1 MiB lookahead chunks, then a seek
    // back, a seek forward, and the end of the file.
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(s.m("odd"))
        .expect("open odd with O_DIRECT through the mount");
    let step = 192 * 1024;
    let (mut v, skew) = aligned(256 * 1024);
    let mut off = 0usize;
    while off < odd.len() {
        let buf = &mut v[skew..skew + step];
        let n = f.read_at(buf, off as u64).expect("pread odd");
        let want = &odd[off..(off + step).min(odd.len())];
        assert_eq!(n, want.len(), "read of {step} at {off}: length");
        assert!(&buf[..n] == want, "read of {step} at {off}: bytes differ");
        off += n;
    }
    for (at, len) in [
        (MIB, 128 * 1024),
        (2 * MIB + 8192, 256 * 1024),
        (3 * MIB, 64 * 1024),
    ] {
        let buf = &mut v[skew..skew + len];
        let n = f.read_at(buf, at as u64).expect("pread odd after a seek");
        let want = &odd[at..(at + len).min(odd.len())];
        assert_eq!(n, want.len(), "read of {len} at {at}: length");
        assert!(&buf[..n] == want, "read of {len} at {at}: bytes differ");
    }
    drop(f);
    assert_eq!(
        resident_pages(&lower_odd, 0..3 * MIB),
        0,
        "O_DIRECT READs of a cold lower went through its page cache"
    );
    m.unmount();

    // lower_direct=0: the same cold read goes through the lower's cache.
    let s = Scratch::new(1);
    let lower = cold_lower(&s.lower(0, "big"), &big);
    let m = s.mount("passthrough=0,lower_direct=0");
    let got = fs::read(s.m("big")).expect("read big through the mount");
    assert!(
        got == big,
        "big read with lower_direct=0 differs from the lower"
    );
    assert!(
        resident_pages(&lower, 0..5 * MIB) > 0,
        "with lower_direct=0 a read through the mount left none of the lower's pages cached"
    );
    m.unmount();
}

/// An ordinary user's mount (through fusermount3) reads cold lower files
/// around their page cache: one the user owns (the daemon asks `cachestat`)
/// and one owned by root (`cachestat` answers EPERM, so the daemon probes
/// one page with `RWF_NOWAIT`, which caches that page). A root-owned lower
/// that is already cached is read from that cache, not the disk. All three
/// read back intact.
#[test]
fn an_ordinary_users_mount_goes_around_the_cache_of_cold_files() {
    const MIB: usize = 1024 * 1024;
    let (uid, gid) = ensure_test_user();
    sh("chmod 666 /dev/fuse");
    let s = Scratch::new(1);
    chmod(s.dir.path(), 0o755);
    let own = pattern(4 * MIB + 99, 31);
    let roots = pattern(4 * MIB, 37);
    let warm = pattern(4 * MIB, 41);
    write(&s.lower(0, "own"), &own);
    write(&s.lower(0, "roots"), &roots);
    write(&s.lower(0, "warm"), &warm);
    sh(&format!("chown -R {uid}:{gid} {}", s.dir.path().display()));
    sh(&format!(
        "chown 0:0 {} {}",
        s.lower(0, "roots").display(),
        s.lower(0, "warm").display()
    ));
    let lower_own = cold_lower(&s.lower(0, "own"), &own);
    let lower_roots = cold_lower(&s.lower(0, "roots"), &roots);
    let lower_warm = cold_lower(&s.lower(0, "warm"), &warm);
    assert!(
        fs::read(s.lower(0, "warm")).expect("read the warm lower") == warm,
        "the lower file warm reads back wrong"
    );
    assert_eq!(
        resident_pages(&lower_warm, 0..4 * MIB),
        1024,
        "this test needs the lower file warm to stay cached after reading it"
    );

    let m = s.mnt.display();
    let script = format!(
        "{bin} -o {opts} {m} && dd if={m}/own of={m}/own.copy bs=1M status=none \
         && dd if={m}/roots of={m}/roots.copy bs=1M status=none",
        bin = unionfs_bin().display(),
        opts = s.rw_options(),
    );
    let (ok, text) = as_user(uid, gid, &script);
    let mounted = Mount {
        path: s.mnt.clone(),
    };
    assert!(ok, "mounting and reading as uid {uid}: {text}");
    let own_cached = resident_pages(&lower_own, 0..4 * MIB);
    let roots_cached = resident_pages(&lower_roots, 0..4 * MIB);
    // The daemon's disk reads (`/proc/PID/io`, all its threads) while the
    // user reads the cached file: none of it should come from the disk.
    let daemon = daemon_of(&s.mnt);
    let before = disk_read_bytes(daemon);
    let (ok, text) = as_user(
        uid,
        gid,
        &format!("dd if={m}/warm of={m}/warm.copy bs=1M status=none"),
    );
    assert!(ok, "reading warm as uid {uid}: {text}");
    let warm_from_disk = disk_read_bytes(daemon) - before;
    drop(mounted);
    for (name, want) in [("own", &own), ("roots", &roots), ("warm", &warm)] {
        assert!(
            fs::read(s.upper.join(format!("{name}.copy"))).expect("the copy") == *want,
            "{name} read through the user's mount differs from the lower"
        );
    }
    assert_eq!(
        own_cached, 0,
        "reading the user's own cold lower file left {own_cached} of its pages cached: \
         the user's daemon did not read around the page cache"
    );
    assert!(
        roots_cached <= 4,
        "reading root's cold lower file left {roots_cached} of its 1,024 pages cached: \
         the user's daemon read it through the page cache, not around it"
    );
    assert!(
        warm_from_disk < MIB as u64,
        "the user's daemon read {warm_from_disk} bytes from the disk for a lower file \
         whose pages were all cached"
    );
}

/// The pid of the FUSE daemon serving `mnt` (the process holding
/// `/dev/fuse` whose command line names `mnt`).
fn daemon_of(mnt: &Path) -> u32 {
    let want = mnt.to_string_lossy().to_string();
    for entry in fs::read_dir("/proc").expect("list /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("unionfs")) && args.contains(&want) {
            return pid;
        }
    }
    panic!("no unionfs daemon serving {want} in /proc");
}

/// `read_bytes` of `/proc/PID/io`: what the process had read from storage.
fn disk_read_bytes(pid: u32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no read_bytes in /proc/{pid}/io: {io}"))
}
