//! Full-disk faults: upper and work dir on a small tmpfs. Filling it gives
//! ENOSPC to the writer, never corrupts what is already in the upper, a
//! copy-up bigger than the free space fails cleanly (no partial file
//! visible, none left in the upper), and the mount works again once space
//! is freed. Needs root and the built `unionfs` binary.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use strata_tests::mount::{mount_tmpfs, UnionfsCmd, UnionfsMount};
use strata_tests::pattern;

struct Fixture {
    dir: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn fixture(tag: &str) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix(&format!("strata-enospc-{tag}-"))
        .tempdir()
        .expect("create a temp dir")
        .keep();
    let f = Fixture {
        lower: dir.join("lower"),
        upper: dir.join("space/upper"),
        work: dir.join("space/work"),
        mnt: dir.join("mnt"),
        dir,
    };
    for d in [&f.lower, &f.dir.join("space"), &f.mnt] {
        fs::create_dir_all(d).expect("mkdir");
    }
    f
}

fn mount_union(f: &Fixture) -> UnionfsMount {
    fs::create_dir_all(&f.upper).expect("mkdir upper");
    fs::create_dir_all(&f.work).expect("mkdir work");
    let cmd = UnionfsCmd::locate().unwrap_or_else(|e| panic!("{e:#}"));
    cmd.mount(
        std::slice::from_ref(&f.lower),
        &f.upper,
        &f.work,
        &f.mnt,
        &f.dir.join("unionfs.log"),
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn cleanup(f: &Fixture) {
    let _ = fs::remove_dir_all(&f.dir);
}

/// Write `data` to `path` in chunks; the first error's errno, if any
/// (write, fsync or close).
fn write_all_report(path: &Path, total: usize) -> Option<i32> {
    let mut file = match File::create(path) {
        Ok(f) => f,
        Err(e) => return e.raw_os_error(),
    };
    let chunk = pattern(3, 64 * 1024);
    let mut written = 0;
    while written < total {
        if let Err(e) = file.write_all(&chunk) {
            return e.raw_os_error();
        }
        written += chunk.len();
    }
    file.sync_all().err().and_then(|e| e.raw_os_error())
}

fn read(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut v))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    v
}

/// No regular file anywhere below `dir` (partial copy-ups left in the work dir).
fn regular_files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => out.extend(regular_files_below(&p)),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

#[test]
fn filling_the_upper_gives_enospc_and_keeps_earlier_files() {
    let f = fixture("fill");
    fs::write(f.lower.join("lowerfile"), b"lower").expect("write lower");
    let tmpfs = mount_tmpfs(&f.dir.join("space"), "8m").unwrap_or_else(|e| panic!("{e:#}"));
    let um = mount_union(&f);
    let keep: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("keep{i}"), pattern(i as u8, 100_000)))
        .collect();
    for (name, data) in &keep {
        let mut file = File::create(f.mnt.join(name)).expect("create keep file");
        file.write_all(data).expect("write keep file");
        file.sync_all().expect("fsync keep file");
    }
    let err = write_all_report(&f.mnt.join("filler"), 16 * 1024 * 1024);
    assert_eq!(
        err,
        Some(libc::ENOSPC),
        "filling an 8 MiB upper must fail with ENOSPC, got {err:?}"
    );
    for (name, data) in &keep {
        assert!(
            read(&f.mnt.join(name)) == *data,
            "{name} changed through the mount after ENOSPC"
        );
        assert!(
            read(&f.upper.join(name)) == *data,
            "{name} changed in the upper dir after ENOSPC"
        );
    }
    assert_eq!(read(&f.mnt.join("lowerfile")), b"lower");
    // Free the space: the mount works again.
    fs::remove_file(f.mnt.join("filler")).expect("remove the filler");
    wait_for_free_space(&f.mnt, 2 * 1024 * 1024);
    fs::write(f.mnt.join("after"), pattern(9, 1_000_000)).expect("write after freeing space");
    assert!(read(&f.mnt.join("after")) == pattern(9, 1_000_000));
    fs::write(f.mnt.join("lowerfile"), b"changed").expect("copy-up after freeing space");
    assert_eq!(read(&f.mnt.join("lowerfile")), b"changed");
    um.unmount().expect("unmount unionfs");
    assert_eq!(read(&f.upper.join("lowerfile")), b"changed");
    tmpfs.unmount().expect("unmount tmpfs");
    cleanup(&f);
}

#[test]
fn copy_up_bigger_than_free_space_fails_cleanly() {
    let f = fixture("copyup");
    let big = pattern(5, 4 * 1024 * 1024);
    fs::write(f.lower.join("big"), &big).expect("write lower big");
    let tmpfs = mount_tmpfs(&f.dir.join("space"), "8m").unwrap_or_else(|e| panic!("{e:#}"));
    let um = mount_union(&f);
    // Leave less than 4 MiB free.
    let filler = pattern(1, 5 * 1024 * 1024);
    fs::write(f.mnt.join("filler"), &filler).expect("write filler");
    let r = OpenOptions::new()
        .append(true)
        .open(f.mnt.join("big"))
        .and_then(|mut h| {
            h.write_all(b"+")?;
            h.sync_all()
        });
    let errno = r.as_ref().err().and_then(|e| e.raw_os_error());
    assert_eq!(
        errno,
        Some(libc::ENOSPC),
        "copy-up of 4 MiB into ~3 MiB free must fail with ENOSPC: {r:?}"
    );
    assert!(
        read(&f.mnt.join("big")) == big,
        "a failed copy-up left a changed or partial file visible"
    );
    if let Ok(m) = fs::symlink_metadata(f.upper.join("big")) {
        panic!("a failed copy-up left big in the upper ({} bytes)", m.len());
    }
    let left = regular_files_below(&f.work);
    assert!(
        left.is_empty(),
        "a failed copy-up left files in the work dir: {left:?}"
    );
    assert!(
        read(&f.mnt.join("filler")) == filler,
        "the earlier file was damaged"
    );
    // Free space; the same copy-up now works.
    fs::remove_file(f.mnt.join("filler")).expect("remove filler");
    wait_for_free_space(&f.mnt, 64 * 1024);
    let mut h = OpenOptions::new()
        .append(true)
        .open(f.mnt.join("big"))
        .expect("open big after freeing space");
    h.write_all(b"+").expect("append after freeing space");
    h.sync_all().expect("fsync after freeing space");
    drop(h);
    let mut want = big.clone();
    want.push(b'+');
    assert!(
        read(&f.mnt.join("big")) == want,
        "copy-up after freeing space has wrong content"
    );
    um.unmount().expect("unmount unionfs");
    assert!(
        read(&f.upper.join("big")) == want,
        "upper copy has wrong content"
    );
    tmpfs.unmount().expect("unmount tmpfs");
    cleanup(&f);
}

#[test]
fn metadata_ops_on_a_full_upper_fail_or_succeed_without_damage() {
    let f = fixture("meta");
    fs::create_dir(f.lower.join("dir")).expect("mkdir lower dir");
    fs::write(f.lower.join("dir/file"), b"content").expect("write lower file");
    let tmpfs = mount_tmpfs(&f.dir.join("space"), "2m").unwrap_or_else(|e| panic!("{e:#}"));
    let um = mount_union(&f);
    let err = write_all_report(&f.mnt.join("filler"), 4 * 1024 * 1024);
    assert_eq!(
        err,
        Some(libc::ENOSPC),
        "filling a 2 MiB upper must fail with ENOSPC, got {err:?}"
    );
    // Whatever these return on a full disk, they must not break the tree.
    let _ = fs::create_dir(f.mnt.join("newdir"));
    let _ = fs::remove_file(f.mnt.join("dir/file"));
    let _ = std::os::unix::fs::chown(f.mnt.join("dir"), Some(1000), Some(1000));
    let file_visible = f.mnt.join("dir/file").exists();
    if file_visible {
        assert_eq!(read(&f.mnt.join("dir/file")), b"content");
    }
    fs::remove_file(f.mnt.join("filler")).expect("remove filler");
    wait_for_free_space(&f.mnt, 64 * 1024);
    fs::write(f.mnt.join("dir/again"), b"works").expect("write after freeing space");
    assert_eq!(read(&f.mnt.join("dir/again")), b"works");
    assert_eq!(
        f.mnt.join("dir/file").exists(),
        file_visible,
        "unlink result changed after freeing space"
    );
    um.unmount().expect("unmount unionfs");
    tmpfs.unmount().expect("unmount tmpfs");
    cleanup(&f);
}

/// FUSE sends RELEASE for a file's last close asynchronously, so tmpfs gets
/// the space of an unlinked file back only once the daemon has closed its
/// upper fd. Wait (up to 5 s) until the mount reports `bytes` free.
fn wait_for_free_space(mnt: &std::path::Path, bytes: u64) {
    for _ in 0..50 {
        let st = nix::sys::statvfs::statvfs(mnt).expect("statfs of the mount");
        if st.blocks_available() as u64 * st.fragment_size() as u64 >= bytes {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "{}: space was not given back after removing the filler",
        mnt.display()
    );
}
