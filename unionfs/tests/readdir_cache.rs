//! Directory listings through a real mount (root, /dev/fuse): readdir
//! positions stay valid while the directory changes between chunks, and the
//! kernel's cached listings (every directory is cached: unionfs does not
//! implement OPENDIR) follow every change made through the mount.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Lowers `l0` (top) and `l1`, an upper, a work dir and a mount point.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("unionfs-readdir-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        for d in ["l0", "l1", "upper", "work", "mnt"] {
            fs::create_dir(root.join(d)).expect("mkdir scratch");
        }
        Scratch { _dir: dir, root }
    }

    fn lower(&self, i: usize, rel: &str) -> PathBuf {
        self.root.join(format!("l{i}")).join(rel)
    }

    fn m(&self, rel: &str) -> PathBuf {
        self.root.join("mnt").join(rel)
    }

    fn mount(&self) -> Mounted {
        let r = |d: &str| self.root.join(d).display().to_string();
        let opts = format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            r("l0"),
            r("l1"),
            r("upper"),
            r("work")
        );
        let mnt = self.root.join("mnt");
        let out = Command::new(env!("CARGO_BIN_EXE_unionfs"))
            .args(["-o", &opts])
            .arg(&mnt)
            .output()
            .expect("run unionfs");
        assert!(
            out.status.success(),
            "unionfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(is_mounted(&mnt), "{} is not mounted", mnt.display());
        Mounted(mnt)
    }
}

fn is_mounted(p: &Path) -> bool {
    let want = p.display().to_string();
    fs::read_to_string("/proc/self/mounts")
        .expect("read /proc/self/mounts")
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// A live mount, unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_mounted(&self.0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn write(p: &Path, data: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).expect("mkdir -p");
    }
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// One directory entry as getdents64 returns it.
#[derive(Clone, Debug)]
struct Dent {
    name: String,
    ino: u64,
    /// Position after this entry.
    off: i64,
}

fn open_dir(p: &Path) -> OwnedFd {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
        .into()
}

/// One getdents64 call with a `size`-byte buffer (few entries per call, so
/// a listing takes many calls); empty at the end.
fn getdents(fd: &OwnedFd, size: usize) -> Vec<Dent> {
    let mut buf = vec![0u8; size];
    // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`, which
    // outlives the call; `fd` is an open directory.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    assert!(n >= 0, "getdents64: {}", std::io::Error::last_os_error());
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < n as usize {
        // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
        let rec = &buf[at..];
        let ino = u64::from_ne_bytes(rec[0..8].try_into().expect("8 bytes"));
        let off = i64::from_ne_bytes(rec[8..16].try_into().expect("8 bytes"));
        let reclen = u16::from_ne_bytes(rec[16..18].try_into().expect("2 bytes")) as usize;
        let name = &rec[19..reclen];
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(Dent {
            name: String::from_utf8_lossy(&name[..len]).into_owned(),
            ino,
            off,
        });
        at += reclen;
    }
    out
}

fn seek(fd: &OwnedFd, pos: i64) {
    // SAFETY: lseek on an open fd has no memory effects.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), pos, libc::SEEK_SET) };
    assert_eq!(r, pos, "lseek: {}", std::io::Error::last_os_error());
}

/// Every entry from the current position to the end.
fn read_rest(fd: &OwnedFd) -> Vec<Dent> {
    let mut all = Vec::new();
    loop {
        let chunk = getdents(fd, 4096);
        if chunk.is_empty() {
            return all;
        }
        all.extend(chunk);
    }
}

/// Names (without `.` and `..`) of a listing read with std.
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn counts(list: &[Dent]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for d in list {
        *m.entry(d.name.clone()).or_insert(0) += 1;
    }
    m
}

/// A merged directory `big`: 1,500 names only in l1, 1,000 in l0 (500 of
/// them shadowing l1), 300 made through the mount. Returns the 2,800 names.
fn big_merged_dir(s: &Scratch) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for i in 0..1500 {
        write(&s.lower(1, &format!("big/a{i:04}")), b"1");
        all.insert(format!("a{i:04}"));
    }
    for i in 1000..2000 {
        write(&s.lower(0, &format!("big/a{i:04}")), b"0");
        all.insert(format!("a{i:04}"));
    }
    all
}

fn add_upper_names(s: &Scratch, all: &mut BTreeSet<String>) {
    for i in 0..300 {
        let n = format!("u{i:03}");
        write(&s.m(&format!("big/{n}")), b"u");
        all.insert(n);
    }
}

#[test]
fn chunked_reads_return_each_unchanged_entry_once_while_the_dir_changes() {
    let s = Scratch::new();
    let mut before = big_merged_dir(&s);
    let _m = s.mount();
    add_upper_names(&s, &mut before);
    let dir = s.m("big");
    let fd = open_dir(&dir);
    let mut got = Vec::new();
    let mut removed = BTreeSet::new();
    let mut created = BTreeSet::new();
    // Names to remove ahead of the reader: a fixed shuffle of the originals.
    let mut ahead: Vec<String> = before.iter().cloned().collect();
    ahead.sort_by_key(|n| n.bytes().rev().collect::<Vec<u8>>());
    let mut round = 0;
    loop {
        let chunk = getdents(&fd, 700);
        if chunk.is_empty() {
            break;
        }
        got.extend(chunk.iter().cloned());
        // Between chunks: remove two names the reader has seen, two it may
        // not have, and create two new ones.
        let seen: Vec<String> = chunk
            .iter()
            .filter(|d| d.name != "." && d.name != ".." && !removed.contains(&d.name))
            .map(|d| d.name.clone())
            .take(2)
            .collect();
        let unseen: Vec<String> = ahead
            .iter()
            .filter(|n| !removed.contains(*n))
            .take(2)
            .cloned()
            .collect();
        for n in seen.into_iter().chain(unseen) {
            if removed.contains(&n) {
                continue;
            }
            fs::remove_file(dir.join(&n)).unwrap_or_else(|e| panic!("unlink {n}: {e}"));
            removed.insert(n);
        }
        for k in 0..2 {
            let n = format!("new{round}-{k}");
            write(&dir.join(&n), b"n");
            created.insert(n);
        }
        round += 1;
    }
    assert!(round > 20, "the listing came in {round} chunks only");
    let c = counts(&got);
    for (name, n) in &c {
        assert_eq!(*n, 1, "{name} returned {n} times");
        assert!(
            before.contains(name) || created.contains(name) || name == "." || name == "..",
            "{name} was never in the directory"
        );
    }
    for name in before.difference(&removed) {
        assert!(
            c.contains_key(name),
            "{name} (never removed) was not returned"
        );
    }
    assert_eq!(c.get("."), Some(&1));
    assert_eq!(c.get(".."), Some(&1));
    // A new listing shows exactly the current contents.
    let now: BTreeSet<String> = before
        .union(&created)
        .filter(|n| !removed.contains(*n))
        .cloned()
        .collect();
    assert_eq!(names(&dir), now);
    // rm -rf of what is left (a merged dir with upper, lower and whiteouts).
    let out = Command::new("rm")
        .arg("-rf")
        .arg(&dir)
        .output()
        .expect("run rm");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::symlink_metadata(&dir).is_err(), "big still there");
    assert!(!names(&s.m("")).contains("big"));
}

#[test]
fn saved_positions_stay_valid_after_changes() {
    let s = Scratch::new();
    let mut before = big_merged_dir(&s);
    let _m = s.mount();
    add_upper_names(&s, &mut before);
    let dir = s.m("big");
    let fd = open_dir(&dir);
    let first = read_rest(&fd);
    assert_eq!(first.len(), before.len() + 2);
    let cut = 1200;
    let pos = first[cut - 1].off;
    let head: BTreeSet<String> = first[..cut].iter().map(|d| d.name.clone()).collect();
    let tail: Vec<String> = first[cut..].iter().map(|d| d.name.clone()).collect();
    // Remove every 7th name on both sides of the saved position, add some.
    let mut removed = BTreeSet::new();
    for (i, d) in first.iter().enumerate() {
        if i % 7 == 3 && d.name != "." && d.name != ".." {
            fs::remove_file(dir.join(&d.name)).expect("unlink");
            removed.insert(d.name.clone());
        }
    }
    for i in 0..50 {
        write(&dir.join(format!("later{i}")), b"x");
    }
    let check = |rest: &[Dent], what: &str| {
        let c = counts(rest);
        for (name, n) in &c {
            assert_eq!(*n, 1, "{what}: {name} returned {n} times");
            assert!(
                !head.contains(name),
                "{what}: {name} comes before the saved position"
            );
        }
        for name in tail.iter().filter(|n| !removed.contains(*n)) {
            assert!(c.contains_key(name), "{what}: {name} missing after seekdir");
        }
    };
    // Same stream (the kernel may answer from its cached listing).
    seek(&fd, pos);
    check(&read_rest(&fd), "same stream");
    // A fresh stream that starts reading (so the kernel drops its cache
    // and asks the daemon), then jumps to the saved position.
    let fresh = open_dir(&dir);
    assert!(!getdents(&fresh, 300).is_empty());
    seek(&fresh, pos);
    let rest = read_rest(&fresh);
    check(&rest, "fresh stream");
    for name in &removed {
        assert!(
            !rest.iter().any(|d| &d.name == name),
            "fresh stream: {name} was removed before the stream read it"
        );
    }
    // Rewind: the whole current listing once.
    seek(&fresh, 0);
    let again = read_rest(&fresh);
    let c = counts(&again);
    assert!(c.values().all(|&n| n == 1));
    assert_eq!(again.len(), before.len() - removed.len() + 50 + 2);
}

#[test]
fn cached_listings_follow_changes_made_through_the_mount() {
    let s = Scratch::new();
    write(&s.lower(1, "lo/x"), b"x");
    write(&s.lower(1, "mg/x"), b"x");
    write(&s.lower(0, "mg/y"), b"y");
    write(&s.lower(1, "other/z"), b"z");
    let _m = s.mount();
    fs::create_dir(s.m("up")).expect("mkdir up");
    write(&s.m("up/x"), b"x");
    for d in ["lo", "mg", "up"] {
        let dir = s.m(d);
        let other = s.m("other");
        let mut want = names(&dir);
        let mut want_other = names(&other);
        let step = |what: &str, want: &BTreeSet<String>, want_other: &BTreeSet<String>| {
            // Twice: the second listing comes from the kernel's cache.
            for _ in 0..2 {
                assert_eq!(&names(&dir), want, "{d}: after {what}");
                assert_eq!(&names(&other), want_other, "other: after {what} in {d}");
            }
        };
        step("mount", &want, &want_other);
        write(&dir.join("f"), b"f");
        want.insert("f".into());
        step("create", &want, &want_other);
        fs::create_dir(dir.join("sub")).expect("mkdir");
        want.insert("sub".into());
        step("mkdir", &want, &want_other);
        std::os::unix::fs::symlink("f", dir.join("sym")).expect("symlink");
        want.insert("sym".into());
        step("symlink", &want, &want_other);
        let fifo = CString::new(dir.join("fifo").as_os_str().as_bytes()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
        want.insert("fifo".into());
        step("mknod", &want, &want_other);
        fs::hard_link(dir.join("f"), dir.join("hard")).expect("link");
        want.insert("hard".into());
        step("link", &want, &want_other);
        fs::rename(dir.join("f"), dir.join("g")).expect("rename within");
        want.remove("f");
        want.insert("g".into());
        step("rename within the dir", &want, &want_other);
        fs::rename(other.join("z"), dir.join("z")).expect("rename in");
        want_other.remove("z");
        want.insert("z".into());
        step("rename into the dir", &want, &want_other);
        fs::rename(dir.join("z"), other.join("z")).expect("rename out");
        want.remove("z");
        want_other.insert("z".into());
        step("rename out of the dir", &want, &want_other);
        fs::rename(dir.join("x"), other.join("x")).expect("rename lower name out");
        want.remove("x");
        want_other.insert("x".into());
        step("rename of a lower name out", &want, &want_other);
        fs::rename(other.join("x"), dir.join("x")).expect("rename back");
        want.insert("x".into());
        want_other.remove("x");
        step("rename back", &want, &want_other);
        for n in ["g", "hard", "sym", "fifo"] {
            fs::remove_file(dir.join(n)).expect("unlink");
            want.remove(n);
            step("unlink", &want, &want_other);
        }
        fs::remove_dir(dir.join("sub")).expect("rmdir");
        want.remove("sub");
        step("rmdir", &want, &want_other);
    }
}

#[test]
fn a_moved_directory_lists_its_new_parent() {
    let s = Scratch::new();
    write(&s.lower(1, "a/sub/f"), b"f");
    fs::create_dir_all(s.lower(1, "b")).expect("mkdir b");
    let _m = s.mount();
    let dotdot = |p: &Path| -> u64 {
        let fd = open_dir(p);
        let all = read_rest(&fd);
        all.iter()
            .find(|d| d.name == "..")
            .map(|d| d.ino)
            .expect("a `..` entry")
    };
    let ino = |p: &Path| fs::symlink_metadata(p).expect("lstat").ino();
    // Listed (and cached by the kernel) before the move.
    assert_eq!(dotdot(&s.m("a/sub")), ino(&s.m("a")));
    assert_eq!(dotdot(&s.m("a/sub")), ino(&s.m("a")));
    fs::rename(s.m("a/sub"), s.m("b/sub")).expect("move the directory");
    assert_eq!(dotdot(&s.m("b/sub")), ino(&s.m("b")));
    assert_eq!(names(&s.m("b/sub")), BTreeSet::from(["f".to_string()]));
    assert!(names(&s.m("a")).is_empty());
}

#[test]
fn hard_linked_lower_files_stay_one_file() {
    let s = Scratch::new();
    write(&s.lower(1, "a/one"), b"old");
    fs::create_dir_all(s.lower(1, "b")).expect("mkdir");
    fs::hard_link(s.lower(1, "a/one"), s.lower(1, "b/two")).expect("link in the lower");
    // A file linked from outside the union: one name inside it.
    write(&s.root.join("outside"), b"solo");
    fs::hard_link(s.root.join("outside"), s.lower(1, "a/solo")).expect("link from outside");
    let _m = s.mount();
    // Listing both directories shows both names of the same file.
    assert_eq!(
        names(&s.m("a")),
        BTreeSet::from(["one".to_string(), "solo".to_string()])
    );
    assert_eq!(names(&s.m("b")), BTreeSet::from(["two".to_string()]));
    let ino = |p: &Path| fs::symlink_metadata(p).expect("lstat").ino();
    assert_eq!(ino(&s.m("a/one")), ino(&s.m("b/two")));
    fs::write(s.m("b/two"), b"new").expect("write through the second name");
    assert_eq!(fs::read(s.m("a/one")).expect("read"), b"new");
    fs::write(s.m("a/one"), b"newer").expect("write through the first name");
    assert_eq!(fs::read(s.m("b/two")).expect("read"), b"newer");
    assert_eq!(ino(&s.m("a/one")), ino(&s.m("b/two")));
    // Renamed, still one file under both names.
    fs::rename(s.m("a/one"), s.m("a/uno")).expect("rename");
    assert_eq!(
        names(&s.m("a")),
        BTreeSet::from(["uno".to_string(), "solo".to_string()])
    );
    fs::write(s.m("b/two"), b"newest").expect("write through the second name");
    assert_eq!(fs::read(s.m("a/uno")).expect("read"), b"newest");
    assert_eq!(ino(&s.m("a/uno")), ino(&s.m("b/two")));
    // The single-name file copies up under its one name.
    fs::write(s.m("a/solo"), b"changed").expect("write solo");
    assert_eq!(
        fs::read(s.root.join("upper/a/solo")).expect("upper"),
        b"changed"
    );
    assert_eq!(fs::read(s.root.join("outside")).expect("outside"), b"solo");
}
