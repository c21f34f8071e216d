//! Crash consistency: kill -9 the unionfs daemon at random points during a
//! copy-up of a big file, a directory rename, unlinks that write whiteouts
//! and metadata-only (metacopy) chowns; detach the dead mount, remount the
//! same upper/work, and check: no partial file is visible, no completed
//! unlink's whiteout is lost, fsync-ed files survive, completed chowns stay
//! and the work dir holds no leftovers after the remount.
//!
//! `STRATA_CRASH_ITERS=N` sets the iterations per scenario (default 4);
//! `STRATA_CRASH_LONG=1` uses 1 GiB for the copy-up file and 100 iterations.
//! The random seed is printed; `STRATA_CRASH_SEED` repeats a run.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_tests::gen::SplitMix;
use strata_tests::mount::{is_mounted, UnionfsCmd, UnionfsMount};
use strata_tests::pattern;

fn long_mode() -> bool {
    std::env::var_os("STRATA_CRASH_LONG").is_some()
}

fn iterations() -> usize {
    std::env::var("STRATA_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if long_mode() { 100 } else { 4 })
}

fn rng(test: &str) -> SplitMix {
    let seed = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SplitMix::from_clock().next_u64());
    eprintln!("{test}: STRATA_CRASH_SEED={seed}");
    SplitMix(seed)
}

struct Fixture {
    dir: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
    cmd: UnionfsCmd,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix(&format!("strata-crash-{tag}-"))
            .tempdir()
            .expect("create a temp dir")
            .keep();
        let f = Fixture {
            lower: dir.join("lower"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            mnt: dir.join("mnt"),
            cmd: UnionfsCmd::locate().unwrap_or_else(|e| panic!("{e:#}")),
            dir,
        };
        fs::create_dir_all(&f.lower).expect("mkdir lower");
        f
    }

    /// Fresh upper and work dirs for the next iteration.
    fn reset(&self) {
        for d in [&self.upper, &self.work] {
            let _ = fs::remove_dir_all(d);
            fs::create_dir_all(d).expect("mkdir upper/work");
        }
        fs::create_dir_all(&self.mnt).expect("mkdir mnt");
    }

    fn mount(&self) -> UnionfsMount {
        self.cmd
            .mount(
                std::slice::from_ref(&self.lower),
                &self.upper,
                &self.work,
                &self.mnt,
                &self.dir.join("unionfs.log"),
            )
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// kill -9 the daemon and detach its dead mount.
    fn crash(&self, um: &mut UnionfsMount) {
        um.kill9();
        if is_mounted(&self.mnt) {
            nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH)
                .expect("umount -l the dead mount");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

/// Non-directory entries left below `dir` (partial copy-ups, temp names).
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => out.extend(leftovers(&p)),
            Ok(_) => out.push(p),
            Err(_) => {}
        }
    }
    out
}

fn assert_work_clean(f: &Fixture, ctx: &str) {
    let left = leftovers(&f.work);
    assert!(
        left.is_empty(),
        "{ctx}: work dir leftovers not cleaned at mount: {left:?}"
    );
}

#[test]
fn kill_during_copy_up_of_a_big_file_leaves_no_partial_file() {
    let f = Fixture::new("copyup");
    let mut rng = rng("copy-up");
    let size: usize = if long_mode() { 1 << 30 } else { 64 << 20 };
    {
        let mut out = File::create(f.lower.join("big")).expect("create lower big");
        let chunk = pattern(17, 1 << 20);
        for _ in 0..size >> 20 {
            out.write_all(&chunk).expect("write lower big");
        }
    }
    let check_content = |p: &Path, extra: bool| -> Result<(), String> {
        let m = fs::metadata(p).map_err(|e| format!("stat {}: {e}", p.display()))?;
        let want = size as u64 + u64::from(extra);
        if m.len() != size as u64 && m.len() != size as u64 + 1 {
            return Err(format!(
                "{}: size {} (lower {size}): partial copy-up visible",
                p.display(),
                m.len()
            ));
        }
        let data = read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
        let chunk = pattern(17, 1 << 20);
        for (i, c) in data[..size].chunks(1 << 20).enumerate() {
            if c != &chunk[..c.len()] {
                return Err(format!(
                    "{}: MiB {i} differs from the lower file",
                    p.display()
                ));
            }
        }
        if extra && m.len() != want {
            return Err(format!("{}: completed append lost", p.display()));
        }
        Ok(())
    };
    // Time one full copy-up to aim the kills.
    f.reset();
    let um = f.mount();
    let t0 = Instant::now();
    OpenOptions::new()
        .append(true)
        .open(f.mnt.join("big"))
        .expect("open for copy-up")
        .write_all(b"+")
        .expect("append");
    let full_ms = t0.elapsed().as_millis().max(5) as u64;
    um.unmount().expect("unmount");
    let mut interrupted = 0;
    for it in 0..iterations() {
        f.reset();
        let mut um = f.mount();
        let path = f.mnt.join("big");
        let done = Arc::new(AtomicUsize::new(0));
        let done2 = done.clone();
        let worker = std::thread::spawn(move || {
            let r = OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|mut h| {
                    h.write_all(b"+")?;
                    h.sync_all()
                });
            if r.is_ok() {
                done2.store(1, Ordering::SeqCst);
            }
        });
        std::thread::sleep(Duration::from_millis(rng.below(full_ms * 3 / 2)));
        f.crash(&mut um);
        let _ = worker.join();
        let completed = done.load(Ordering::SeqCst) == 1;
        if !completed {
            interrupted += 1;
        }
        let upper_big = f.upper.join("big");
        if upper_big.exists() {
            check_content(&upper_big, completed)
                .unwrap_or_else(|e| panic!("iteration {it}, upper: {e}"));
        }
        let um = f.mount();
        assert_work_clean(&f, &format!("iteration {it}"));
        check_content(&f.mnt.join("big"), completed)
            .unwrap_or_else(|e| panic!("iteration {it}, after remount: {e}"));
        um.unmount().expect("unmount");
    }
    eprintln!("copy-up: {interrupted} of {} kills landed before the copy-up completed (full copy-up {full_ms} ms)", iterations());
}

#[test]
fn kill_during_directory_rename_keeps_one_complete_tree() {
    let f = Fixture::new("rename");
    let mut rng = rng("rename");
    for i in 0..200 {
        let d = f.lower.join(format!("tree/sub{}", i % 10));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join(format!("f{i}")), pattern(i as u8, 1000)).expect("write");
    }
    let expect_tree = |root: &Path| -> Result<(), String> {
        for i in 0..200 {
            let p = root.join(format!("sub{}/f{i}", i % 10));
            match read(&p) {
                Ok(d) if d == pattern(i as u8, 1000) => {}
                Ok(_) => return Err(format!("{}: wrong content", p.display())),
                Err(e) => return Err(format!("{}: {e}", p.display())),
            }
        }
        Ok(())
    };
    for it in 0..iterations() {
        f.reset();
        let mut um = f.mount();
        let (a, b) = (f.mnt.join("tree"), f.mnt.join("renamed"));
        let worker = std::thread::spawn(move || {
            let mut ok = 0;
            for k in 0..50 {
                let (from, to) = if k % 2 == 0 { (&a, &b) } else { (&b, &a) };
                if fs::rename(from, to).is_err() {
                    break;
                }
                ok += 1;
            }
            ok
        });
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        f.crash(&mut um);
        let renames = worker.join().unwrap_or(0);
        let um = f.mount();
        assert_work_clean(&f, &format!("iteration {it}"));
        let (ta, tb) = (f.mnt.join("tree").exists(), f.mnt.join("renamed").exists());
        assert!(
            ta != tb,
            "iteration {it}: after {renames} renames, tree exists: {ta}, renamed exists: {tb}"
        );
        let root = if ta {
            f.mnt.join("tree")
        } else {
            f.mnt.join("renamed")
        };
        expect_tree(&root).unwrap_or_else(|e| panic!("iteration {it}: {e}"));
        um.unmount().expect("unmount");
    }
}

#[test]
fn kill_during_unlinks_loses_no_whiteout_and_keeps_fsynced_files() {
    let f = Fixture::new("unlink");
    let mut rng = rng("unlink");
    let n = 300;
    for i in 0..n {
        fs::write(f.lower.join(format!("f{i}")), pattern(i as u8, 100)).expect("write lower file");
    }
    for it in 0..iterations() {
        f.reset();
        let mut um = f.mount();
        let mnt = f.mnt.clone();
        let progress = Arc::new(AtomicUsize::new(0));
        let p2 = progress.clone();
        let worker = std::thread::spawn(move || {
            for i in 0..n {
                if fs::remove_file(mnt.join(format!("f{i}"))).is_err() {
                    return;
                }
                if i % 10 == 0 {
                    let r = File::create(mnt.join(format!("new{i}"))).and_then(|mut h| {
                        h.write_all(&pattern(i as u8, 5000))?;
                        h.sync_all()
                    });
                    if r.is_err() {
                        return;
                    }
                }
                p2.store(i + 1, Ordering::SeqCst);
            }
        });
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        f.crash(&mut um);
        let _ = worker.join();
        let done = progress.load(Ordering::SeqCst);
        let um = f.mount();
        assert_work_clean(&f, &format!("iteration {it}"));
        for i in 0..n {
            let p = f.mnt.join(format!("f{i}"));
            if i < done {
                assert!(!p.exists(), "iteration {it}: f{i} was unlinked (ok returned) but is visible again: whiteout lost");
            } else if let Ok(d) = read(&p) {
                assert!(
                    d == pattern(i as u8, 100),
                    "iteration {it}: f{i} has wrong content"
                );
            }
            if i < done && i % 10 == 0 {
                let d = read(&f.mnt.join(format!("new{i}")))
                    .unwrap_or_else(|e| panic!("iteration {it}: fsync-ed new{i} lost: {e}"));
                assert!(
                    d == pattern(i as u8, 5000),
                    "iteration {it}: fsync-ed new{i} has wrong content"
                );
            }
        }
        um.unmount().expect("unmount");
    }
}

#[test]
fn kill_during_metacopy_chown_keeps_data_and_completed_owners() {
    let f = Fixture::new("chown");
    let mut rng = rng("chown");
    let n = 100;
    for i in 0..n {
        fs::write(f.lower.join(format!("f{i}")), pattern(i as u8, 256 * 1024))
            .expect("write lower file");
    }
    for it in 0..iterations() {
        f.reset();
        let mut um = f.mount();
        let mnt = f.mnt.clone();
        let progress = Arc::new(AtomicUsize::new(0));
        let p2 = progress.clone();
        let worker = std::thread::spawn(move || {
            for i in 0..n {
                if std::os::unix::fs::chown(
                    mnt.join(format!("f{i}")),
                    Some(1000 + i as u32),
                    Some(2000),
                )
                .is_err()
                {
                    return;
                }
                p2.store(i + 1, Ordering::SeqCst);
            }
        });
        std::thread::sleep(Duration::from_millis(rng.below(100)));
        f.crash(&mut um);
        let _ = worker.join();
        let done = progress.load(Ordering::SeqCst);
        let um = f.mount();
        assert_work_clean(&f, &format!("iteration {it}"));
        for i in 0..n {
            let p = f.mnt.join(format!("f{i}"));
            let m = fs::symlink_metadata(&p)
                .unwrap_or_else(|e| panic!("iteration {it}: f{i} vanished: {e}"));
            if i < done {
                assert_eq!(
                    (m.uid(), m.gid()),
                    (1000 + i as u32, 2000),
                    "iteration {it}: completed chown of f{i} lost"
                );
            }
            let d = read(&p).unwrap_or_else(|e| panic!("iteration {it}: read f{i}: {e}"));
            assert!(
                d == pattern(i as u8, 256 * 1024),
                "iteration {it}: f{i} content damaged by an interrupted chown"
            );
        }
        um.unmount().expect("unmount");
    }
}
