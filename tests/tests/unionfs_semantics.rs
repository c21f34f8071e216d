//! unionfs overlay semantics, one named test per point of issue 3's
//! "Must show" list. Root, real mounts of the built `unionfs` binary
//! (`cargo build -p unionfs` first when running this crate alone).

mod unionfs_common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirEntryExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use unionfs_common::*;

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .ino()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dirent").file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

fn is_char00(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::symlink_metadata(p)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

#[test]
fn whiteout_forms_are_all_honoured() {
    let s = Scratch::new(2);
    for n in ["chr", "wh", "xat", "keep"] {
        write(&s.lower(1, n), b"bottom");
    }
    // char 0/0, `.wh.` file, and xattr whiteout (in a dir marked overlay.whiteouts).
    mknod_char(&s.lower(0, "chr"), 0, 0);
    write(&s.lower(0, ".wh.wh"), b"");
    write(&s.lower(0, "xat"), b"");
    set_xattr(&s.lower(0, "xat"), "trusted.overlay.whiteout", b"");
    set_xattr(&s.lowers[0], "trusted.overlay.whiteouts", b"");
    let _m = s.mount("");
    assert_eq!(names(&s.mnt), vec!["keep"]);
    for n in ["chr", "wh", "xat", ".wh.wh"] {
        assert!(fs::symlink_metadata(s.m(n)).is_err(), "{n} must be hidden");
    }
    // Deleting a lower name writes a char 0/0 whiteout (root form).
    fs::remove_file(s.m("keep")).expect("unlink through the mount");
    assert!(
        is_char00(&s.u("keep")),
        "upper must hold a char 0/0 whiteout"
    );
    assert!(names(&s.mnt).is_empty());
    // User names starting with .wh. are refused.
    assert!(fs::write(s.m(".wh.evil"), b"x").is_err());
    assert!(fs::create_dir(s.m(".wh..wh..opq")).is_err());
}

#[test]
fn opaque_dirs_hide_lower_content() {
    let s = Scratch::new(3);
    write(&s.lower(2, "x/old"), b"old");
    write(&s.lower(2, "y/old"), b"old");
    write(&s.lower(2, "z/old"), b"old");
    write(&s.lower(1, "x/new"), b"new");
    set_xattr(&s.lower(1, "x"), "trusted.overlay.opaque", b"y");
    write(&s.lower(1, "y/new"), b"new");
    write(&s.lower(1, "y/.wh..wh..opq"), b"");
    let _m = s.mount("");
    assert_eq!(names(&s.m("x")), vec!["new"]);
    assert_eq!(names(&s.m("y")), vec!["new"]);
    assert_eq!(names(&s.m("z")), vec!["old"]);
    // rmdir of a merged dir then mkdir: the new dir is opaque and empty.
    fs::remove_file(s.m("z/old")).expect("rm z/old");
    fs::remove_dir(s.m("z")).expect("rmdir z");
    fs::create_dir(s.m("z")).expect("mkdir z");
    assert!(names(&s.m("z")).is_empty());
    assert_eq!(
        get_xattr(&s.u("z"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

#[test]
fn copy_up_preserves_metadata() {
    let s = Scratch::new(1);
    let f = s.lower(0, "dir/file");
    write(&f, b"hello");
    chmod(&f, 0o741);
    chown(&f, 1234, 5678);
    set_xattr(&f, "user.colour", b"blue");
    chmod(&s.lower(0, "dir"), 0o750);
    chown(&s.lower(0, "dir"), 42, 43);
    sh(&format!(
        "touch -d '2001-02-03 04:05:06' {} {}",
        f.display(),
        s.lower(0, "dir").display()
    ));
    let lower_dir_mtime = fs::metadata(s.lower(0, "dir")).expect("stat").mtime();
    let _m = s.mount("");
    let mut fh = fs::OpenOptions::new()
        .append(true)
        .open(s.m("dir/file"))
        .expect("open for append");
    fh.write_all(b" world").expect("append");
    drop(fh);
    let md = fs::metadata(s.u("dir/file")).expect("copied up");
    assert_eq!(md.mode() & 0o7777, 0o741);
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(
        get_xattr(&s.u("dir/file"), "user.colour").as_deref(),
        Some(&b"blue"[..])
    );
    assert_eq!(fs::read(s.m("dir/file")).expect("read"), b"hello world");
    assert_eq!(fs::read(&f).expect("lower untouched"), b"hello");
    let dmd = fs::metadata(s.u("dir")).expect("parent copied up");
    assert_eq!(dmd.mode() & 0o7777, 0o750);
    assert_eq!((dmd.uid(), dmd.gid()), (42, 43));
    assert_eq!(
        fs::metadata(s.m("dir")).expect("stat").mtime(),
        lower_dir_mtime,
        "parent mtime kept"
    );
    // chmod-only copy-up keeps mtime.
    write(&s.lower(0, "t"), b"t");
    sh(&format!(
        "touch -d '2001-02-03 04:05:06' {}",
        s.lower(0, "t").display()
    ));
    let before = fs::metadata(s.m("t")).expect("stat").mtime();
    chmod(&s.m("t"), 0o600);
    assert_eq!(fs::metadata(s.m("t")).expect("stat").mtime(), before);
    assert_eq!(
        fs::metadata(s.u("t")).expect("upper").mode() & 0o7777,
        0o600
    );
}

#[test]
fn atomic_copy_up_survives_kill_9() {
    let s = Scratch::new(1);
    // 1 GiB of real (non-sparse) data.
    let big = s.lower(0, "big");
    {
        let mut f = fs::File::create(&big).expect("create big");
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..1024 {
            f.write_all(&chunk).expect("fill big");
        }
    }
    let m = s.mount("");
    let pid = daemon_pid(&s.mnt);
    let target = s.m("big");
    let writer = std::thread::spawn(move || {
        // Open for write starts the data copy-up.
        let _ = fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .map(|mut f| f.write_all(b"!"));
    });
    // Wait until the copy is under way in the work dir, then kill the daemon.
    let deadline = Instant::now() + Duration::from_secs(20);
    let workdir = s.work.join("work");
    while Instant::now() < deadline {
        if fs::read_dir(&workdir)
            .map(|d| d.count() > 0)
            .unwrap_or(false)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: plain kill(2) of the daemon we started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let _ = writer.join();
    drop(m);
    unmount(&s.mnt);
    assert!(!is_mounted(&s.mnt));
    let _m2 = s.mount("");
    let md = fs::metadata(s.m("big")).expect("big still visible");
    // Either the copy never became visible (lower file) or it is complete.
    assert!(
        md.len() == 1 << 30 || md.len() == (1 << 30) + 1,
        "partial copy-up visible: size {}",
        md.len()
    );
    if let Ok(um) = fs::metadata(s.u("big")) {
        assert!(
            um.len() >= 1 << 30,
            "partial file in the upper: {} bytes",
            um.len()
        );
    }
    assert_eq!(
        fs::read_dir(&workdir).expect("work dir").count(),
        0,
        "work dir cleaned at mount"
    );
    let mut f = fs::File::open(s.m("big")).expect("open");
    let mut buf = vec![0u8; 4096];
    f.seek(SeekFrom::Start((1 << 30) - 4096)).expect("seek");
    f.read_exact(&mut buf).expect("read tail");
    assert!(buf.iter().all(|&b| b == 0x5a), "data intact");
}

#[test]
fn metacopy_chown_copies_no_data() {
    let s = Scratch::new(1);
    let data: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
    for i in 0..4 {
        write(&s.lower(0, &format!("tree/sub{}/f{i}", i % 2)), &data);
    }
    let _m = s.mount("");
    sh(&format!("chown -R 4321:4321 {}", s.m("tree").display()));
    let used = disk_usage(&s.upper);
    assert!(
        used < 1 << 20,
        "upper holds {used} bytes after chown -R: data was copied"
    );
    for i in 0..4 {
        let p = s.m(&format!("tree/sub{}/f{i}", i % 2));
        let md = fs::metadata(&p).expect("stat");
        assert_eq!((md.uid(), md.gid()), (4321, 4321));
        assert_eq!(fs::read(&p).expect("read through metacopy"), data);
    }
    // First data write completes the copy.
    let p = s.m("tree/sub0/f0");
    fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .expect("open")
        .write_all(b"+")
        .expect("append");
    let got = fs::read(&p).expect("read");
    assert_eq!(&got[..data.len()], &data[..]);
    assert_eq!(got.len(), data.len() + 1);
    assert_eq!(fs::metadata(&p).expect("stat").uid(), 4321);
}

#[test]
fn directory_rename_keeps_lower_content() {
    let s = Scratch::new(2);
    write(&s.lower(1, "a/b/deep"), b"deep");
    write(&s.lower(0, "a/top"), b"top");
    write(&s.lower(1, "a/b/c/deeper"), b"deeper");
    {
        let _m = s.mount("");
        fs::rename(s.m("a"), s.m("moved")).expect("rename merged lower dir (no EXDEV)");
        assert!(fs::symlink_metadata(s.m("a")).is_err());
        assert_eq!(names(&s.m("moved")), vec!["b", "top"]);
        assert_eq!(fs::read(s.m("moved/b/deep")).expect("read"), b"deep");
        fs::create_dir(s.m("x")).expect("mkdir");
        fs::rename(s.m("moved/b"), s.m("x/bb")).expect("rename nested lower dir");
        assert_eq!(fs::read(s.m("x/bb/c/deeper")).expect("read"), b"deeper");
        // The old name is free again and new content there does not merge.
        fs::create_dir(s.m("a")).expect("mkdir a");
        assert!(names(&s.m("a")).is_empty());
    }
    let _m = s.mount("");
    assert_eq!(names(&s.m("moved")), vec!["top"]);
    assert_eq!(fs::read(s.m("x/bb/deep")).expect("after remount"), b"deep");
    assert_eq!(
        fs::read(s.m("x/bb/c/deeper")).expect("after remount"),
        b"deeper"
    );
    assert!(names(&s.m("a")).is_empty());
}

#[test]
fn hardlinks_stay_linked_across_copy_up() {
    let s = Scratch::new(1);
    write(&s.lower(0, "one"), b"old");
    fs::create_dir(s.lower(0, "d")).expect("mkdir");
    fs::hard_link(s.lower(0, "one"), s.lower(0, "d/two")).expect("link");
    let _m = s.mount("");
    let i1 = ino(&s.m("one"));
    assert_eq!(i1, ino(&s.m("d/two")));
    fs::write(s.m("one"), b"new content").expect("write via one");
    assert_eq!(fs::read(s.m("d/two")).expect("read two"), b"new content");
    assert_eq!(ino(&s.m("one")), i1);
    assert_eq!(ino(&s.m("d/two")), i1);
    assert_eq!(fs::metadata(s.m("one")).expect("stat").nlink(), 2);
    // A new hard link made through the mount shares the inode too.
    fs::hard_link(s.m("one"), s.m("three")).expect("link through mount");
    assert_eq!(ino(&s.m("three")), i1);
}

/// Names of a lower hard-link group stay lower-only until their own first
/// copy-up trigger and reach the copied-up inode through the work dir's
/// index (overlayfs `index=on`), which also carries the group's link count
/// across remounts; an xattr change does not link a name up, chmod does;
/// removing the last name removes the index entry.
#[test]
fn hardlink_index_keeps_other_names_lower_only_and_survives_remount() {
    let s = Scratch::new(1);
    fs::create_dir_all(s.lower(0, "a/b")).expect("mkdir");
    fs::create_dir(s.lower(0, "c")).expect("mkdir");
    write(&s.lower(0, "a/b/one"), b"old");
    fs::hard_link(s.lower(0, "a/b/one"), s.lower(0, "c/two")).expect("link");
    fs::hard_link(s.lower(0, "a/b/one"), s.lower(0, "three")).expect("link");
    let index = s.work.join("unionfs-index");
    let index_entries = || -> Vec<String> {
        match fs::read_dir(&index) {
            Ok(rd) => rd
                .map(|e| e.expect("dirent").file_name().to_string_lossy().to_string())
                .collect(),
            Err(_) => Vec::new(),
        }
    };

    let m = s.mount("");
    let i1 = ino(&s.m("a/b/one"));
    // Nothing copied up yet: the mount has not made the index, nor
    // written anything in the work dir.
    assert!(!index.exists(), "index made before any hard-link copy-up");
    assert_eq!(
        fs::read_dir(s.work.join("work")).expect("work dir").count(),
        0,
        "the work dir holds leftovers"
    );
    fs::write(s.m("c/two"), b"new content").expect("write via two");
    // The other names show the new data, the same inode and the group's count...
    for name in ["a/b/one", "three"] {
        assert_eq!(fs::read(s.m(name)).expect("read"), b"new content", "{name}");
        assert_eq!(ino(&s.m(name)), i1, "{name}");
        assert_eq!(fs::metadata(s.m(name)).expect("stat").nlink(), 3, "{name}");
    }
    // ...but only the written name is in the upper; the copy lives in the index.
    assert!(s.u("c/two").exists(), "written name not in the upper");
    assert!(
        !s.u("a").exists(),
        "a/ linked up before any change through it"
    );
    assert!(
        !s.u("three").exists(),
        "three linked up before any change through it"
    );
    assert_eq!(index_entries().len(), 1, "index: {:?}", index_entries());
    assert_eq!(
        fs::metadata(s.u("c/two")).expect("stat upper").ino(),
        fs::metadata(index.join(&index_entries()[0]))
            .expect("stat index")
            .ino(),
        "the upper name is a link of the index entry"
    );
    // An xattr change goes to the shared inode without linking the name up.
    set_xattr(&s.m("three"), "user.tag", b"x");
    assert!(!s.u("three").exists(), "setxattr linked the name up");
    assert_eq!(
        get_xattr(&s.m("c/two"), "user.tag").as_deref(),
        Some(&b"x"[..])
    );
    m.unmount();

    // After a remount the lower-only names still reach the copy.
    let m = s.mount("");
    for name in ["a/b/one", "c/two", "three"] {
        assert_eq!(fs::read(s.m(name)).expect("read"), b"new content", "{name}");
        assert_eq!(ino(&s.m(name)), i1, "{name}");
        assert_eq!(fs::metadata(s.m(name)).expect("stat").nlink(), 3, "{name}");
    }
    // chmod is a copy-up trigger: the name is linked up, parents first.
    chmod(&s.m("a/b/one"), 0o600);
    assert!(s.u("a/b/one").exists(), "chmod did not link the name up");
    assert_eq!(
        fs::metadata(s.u("a/b/one")).expect("stat").ino(),
        fs::metadata(s.u("c/two")).expect("stat").ino()
    );
    assert_eq!(
        fs::metadata(s.m("three")).expect("stat").mode() & 0o777,
        0o600
    );
    // Removing names counts down, across a remount too.
    fs::remove_file(s.m("c/two")).expect("unlink two");
    assert_eq!(fs::metadata(s.m("three")).expect("stat").nlink(), 2);
    m.unmount();
    let m = s.mount("");
    assert_eq!(fs::metadata(s.m("three")).expect("stat").nlink(), 2);
    assert_eq!(fs::read(s.m("three")).expect("read"), b"new content");
    fs::remove_file(s.m("three")).expect("unlink three");
    assert_eq!(fs::metadata(s.m("a/b/one")).expect("stat").nlink(), 1);
    fs::remove_file(s.m("a/b/one")).expect("unlink one");
    assert!(
        index_entries().is_empty(),
        "index entry left after the last name went: {:?}",
        index_entries()
    );
    m.unmount();
}

/// An index entry whose lower file changed since (a lower replaced between
/// mounts) is stale: it is dropped and the names show the lower file.
#[test]
fn stale_hardlink_index_entry_is_dropped() {
    let s = Scratch::new(1);
    write(&s.lower(0, "one"), b"old");
    fs::hard_link(s.lower(0, "one"), s.lower(0, "two")).expect("link");
    let m = s.mount("");
    fs::write(s.m("one"), b"copied").expect("write");
    m.unmount();
    // The lower file changes under the stopped mount; the upper name goes.
    write(&s.lower(0, "one"), b"replaced lower data");
    fs::remove_file(s.u("one")).expect("rm upper name");
    let m = s.mount("");
    assert_eq!(
        fs::read(s.m("two")).expect("read"),
        b"replaced lower data",
        "a stale index entry was used"
    );
    m.unmount();
}

fn readdir_inos(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("dirent");
            (e.file_name().to_string_lossy().to_string(), e.ino())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn inode_numbers_are_stable_and_consistent() {
    let s = Scratch::new(2);
    write(&s.lower(1, "lowfile"), b"x");
    write(&s.lower(0, "d/f"), b"y");
    let before;
    {
        let _m = s.mount("");
        write(&s.m("upperfile"), b"z");
        before = [ino(&s.m("lowfile")), ino(&s.m("d")), ino(&s.m("d/f"))];
        chmod(&s.m("lowfile"), 0o600); // copy-up
        assert_eq!(ino(&s.m("lowfile")), before[0], "copy-up keeps st_ino");
        fs::write(s.m("d/f"), b"yy").expect("write");
        assert_eq!(ino(&s.m("d/f")), before[2]);
        for (name, i) in readdir_inos(&s.mnt) {
            assert_eq!(i, ino(&s.m(&name)), "readdir d_ino == st_ino for {name}");
        }
        let dev = fs::metadata(&s.mnt).expect("stat").dev();
        assert_eq!(
            fs::metadata(s.m("d/f")).expect("stat").dev(),
            dev,
            "one st_dev for the mount"
        );
    }
    let _m = s.mount("");
    assert_eq!(
        [ino(&s.m("lowfile")), ino(&s.m("d")), ino(&s.m("d/f"))],
        before,
        "stable across remount"
    );
}

#[test]
fn readdir_offsets_are_stable_and_rm_rf_of_10k_merged_dir_works() {
    let s = Scratch::new(2);
    for i in 0..6000 {
        write(&s.lower(1, &format!("big/n{i:05}")), b"");
    }
    for i in 4000..9000 {
        write(&s.lower(0, &format!("big/n{i:05}")), b"");
    }
    let _m = s.mount("");
    for i in 9000..10000 {
        write(&s.m(&format!("big/n{i:05}")), b"");
    }
    assert_eq!(names(&s.m("big")).len(), 10000);
    // telldir/seekdir: reading from a saved position gives the same entries.
    let c = std::ffi::CString::new(s.m("big").as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: opendir/readdir/telldir/seekdir on a valid path; entries are
    // copied out before the next readdir call; the stream is closed at the end.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        let mut all = Vec::new();
        let mut pos_at_5000 = 0;
        loop {
            if all.len() == 5000 {
                pos_at_5000 = libc::telldir(d);
            }
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                .to_bytes()
                .to_vec();
            all.push(name);
        }
        libc::seekdir(d, pos_at_5000);
        let mut again = Vec::new();
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            again.push(
                std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                    .to_bytes()
                    .to_vec(),
            );
        }
        libc::closedir(d);
        assert_eq!(all.len(), 10002, "10000 entries plus . and ..");
        assert_eq!(again, all[5000..].to_vec());
    }
    sh(&format!("rm -rf {}", s.m("big").display()));
    assert!(fs::symlink_metadata(s.m("big")).is_err());
    assert!(is_char00(&s.u("big")));
}

#[test]
fn kernel_overlayfs_sees_the_same_upper() {
    let s = Scratch::new(2);
    write(&s.lower(1, "d/a"), b"a");
    write(&s.lower(1, "d/b"), b"b");
    write(&s.lower(1, "gone"), b"gone");
    write(&s.lower(0, "d/c"), b"c");
    write(&s.lower(0, "e/x"), b"x");
    write(&s.lower(0, "f"), b"f");
    let view = {
        let _m = s.mount("");
        fs::remove_file(s.m("gone")).expect("rm");
        fs::remove_file(s.m("d/a")).expect("rm");
        fs::write(s.m("d/b"), b"changed").expect("write");
        fs::remove_file(s.m("e/x")).expect("rm");
        fs::remove_dir(s.m("e")).expect("rmdir");
        fs::create_dir(s.m("e")).expect("mkdir");
        write(&s.m("e/new"), b"new");
        fs::rename(s.m("d"), s.m("d2")).expect("rename dir");
        chmod(&s.m("f"), 0o600);
        write(&s.m("n/new"), b"n");
        snapshot(&s.mnt)
    };
    let k = s.dir.path().join("kmnt");
    fs::create_dir(&k).expect("mkdir");
    let km = s.mount_kernel_overlay(&k, "redirect_dir=on,metacopy=on");
    let kview = snapshot(&k);
    drop(km);
    assert_eq!(
        view, kview,
        "kernel overlayfs view differs from unionfs view"
    );
}

/// Runs `cmd` then `path` as user and group `uid`, without supplementary groups.
fn as_user(uid: u32, cmd: &[&str], path: &Path) -> std::process::Output {
    let id = uid.to_string();
    Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups"])
        .args(cmd)
        .arg(path)
        .output()
        .expect("run setpriv")
}

#[test]
fn posix_details() {
    let s = Scratch::new(1);
    write(&s.lower(0, "f"), b"data");
    write(&s.lower(0, "suid"), b"#!/bin/sh\n");
    chmod(&s.lower(0, "suid"), 0o6755);
    let _m = s.mount("");
    // ENAMETOOLONG
    let long = "x".repeat(256);
    let err = fs::write(s.m(&long), b"").expect_err("256-byte name");
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
    // st_nlink of an open, unlinked file is 0; data still readable.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(s.m("f"))
        .expect("open");
    fs::remove_file(s.m("f")).expect("unlink");
    assert_eq!(f.metadata().expect("fstat").nlink(), 0);
    let mut buf = String::new();
    f.read_to_string(&mut buf).expect("read");
    assert_eq!(buf, "data");
    // Unknown ioctl: ENOTTY.
    let g = fs::File::open(s.m("suid")).expect("open");
    // SAFETY: an ioctl with a bogus command and no argument pointer.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&g), 0x1234_5678 as _, 0) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
    // suid/sgid are cleared by chown.
    chown(&s.m("suid"), 1, 1);
    assert_eq!(fs::metadata(s.m("suid")).expect("stat").mode() & 0o6000, 0);
    // Deep paths near PATH_MAX work (fd-relative layer access).
    let mut p = s.mnt.clone();
    let comp = "d".repeat(200);
    for _ in 0..18 {
        p.push(&comp);
    }
    fs::create_dir_all(&p).expect("deep mkdir");
    fs::write(p.join("leaf"), b"deep").expect("deep write");
    assert_eq!(fs::read(p.join("leaf")).expect("deep read"), b"deep");
    // Sticky directories: another user cannot delete root's file.
    fs::create_dir(s.m("tmp")).expect("mkdir");
    chmod(&s.m("tmp"), 0o1777);
    write(&s.m("tmp/rootfile"), b"r");
    let (uid, _) = ensure_test_user();
    let out = as_user(uid, &["rm", "-f"], &s.m("tmp/rootfile"));
    assert!(!out.status.success(), "sticky dir must refuse the delete");
    assert!(s.m("tmp/rootfile").exists());
    // O_CREAT|O_EXCL on an existing lower name gives EEXIST.
    let err = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(s.m("suid"))
        .expect_err("exists");
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
}

/// Writes, truncates and fallocate by an ordinary user clear set-id bits
/// as the kernel does for any filesystem (and overlayfs shows): set-user-ID
/// always, set-group-ID with group execute or when the writer is not in the
/// file's group; a root writer (CAP_FSETID) keeps them. unionfs does this
/// itself (FUSE_HANDLE_KILLPRIV_V2) and gives set-id files no passthrough.
#[test]
fn data_changes_by_a_user_clear_set_id_bits_like_the_kernel() {
    let s = Scratch::new(1);
    let (uid, _) = ensure_test_user();
    for (name, mode) in [
        ("append", 0o4777),
        ("trunc", 0o4777),
        ("overwrite", 0o4777),
        ("fallocate", 0o6777),
        ("root", 0o4777),
        ("sgid_nox", 0o2767),
        ("sgid_nox_ingroup", 0o2767),
        ("sgid_x", 0o2777),
    ] {
        write(&s.lower(0, name), b"lower data\n");
        chmod(&s.lower(0, name), mode);
    }
    chown(&s.lower(0, "sgid_nox_ingroup"), 0, uid);
    // The user must reach the mount point (temp dirs are 0700).
    if let Some(dir) = s.mnt.parent() {
        chmod(dir, 0o755);
    }
    let _m = s.mount("allow_other");
    // A file the mount made set-user-ID itself (no passthrough for it).
    write(&s.m("made"), b"new\n");
    chmod(&s.m("made"), 0o4777);
    let script = "set -e; cd \"$1\"; echo x >> append; truncate -s 1 trunc; \
                  echo x > overwrite; fallocate -l 65536 fallocate; echo x >> sgid_nox; \
                  echo x >> sgid_nox_ingroup; echo x >> sgid_x; echo x >> made";
    let out = as_user(uid, &["sh", "-c", script, "sh"], &s.mnt);
    assert!(
        out.status.success(),
        "writes as uid {uid} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::OpenOptions::new()
        .append(true)
        .open(s.m("root"))
        .and_then(|mut f| f.write_all(b"x"))
        .expect("append as root");
    let mode = |n: &str| fs::metadata(s.m(n)).expect("stat").mode() & 0o7777;
    for (name, want) in [
        ("append", 0o777),
        ("trunc", 0o777),
        ("overwrite", 0o777),
        ("fallocate", 0o777),
        ("root", 0o4777),
        ("sgid_nox", 0o767),
        ("sgid_nox_ingroup", 0o2767),
        ("sgid_x", 0o777),
        ("made", 0o777),
    ] {
        assert_eq!(
            mode(name),
            want,
            "{name}: mode {:o}, want {want:o}",
            mode(name)
        );
    }
    assert_eq!(fs::read(s.m("append")).expect("read"), b"lower data\nx\n");
    assert_eq!(fs::metadata(s.m("trunc")).expect("stat").len(), 1);
}

#[test]
fn read_only_mount_without_upper() {
    let s = Scratch::new(2);
    write(&s.lower(1, "a"), b"a");
    write(&s.lower(0, "b"), b"b");
    let m = Mount::unionfs(&["-o", &format!("lowerdir={}", s.lowerdir())], &s.mnt);
    assert_eq!(names(&s.mnt), vec!["a", "b"]);
    let err = fs::write(s.m("c"), b"c").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    drop(m);
}

#[test]
fn mount_helper_form_and_unknown_options() {
    let s = Scratch::new(1);
    write(&s.lower(0, "a"), b"a");
    // As `mount -t fuse.unionfs` calls it, with options podman passes.
    let opts = format!(
        "rw,{},dev,suid,noatime,context=\"system_u:object_r:container_file_t:s0:c1,c2\",fsync=0,unknownopt",
        s.rw_options()
    );
    let _m = Mount::unionfs(&["overlay", "-o", &opts], &s.mnt);
    assert_eq!(fs::read(s.m("a")).expect("read"), b"a");
    // SIGTERM exits cleanly and unmounts.
    let pid = daemon_pid(&s.mnt);
    // SAFETY: kill(2) of the daemon we started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(&s.mnt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&s.mnt), "SIGTERM must unmount");
}

#[test]
fn dot_entries_and_shared_whiteouts() {
    let s = Scratch::new(1);
    write(&s.lower(0, "d/a"), b"a");
    write(&s.lower(0, "d/b"), b"b");
    write(&s.lower(0, "d/sub/c"), b"c");
    chown(&s.lower(0, "d"), 0, 4321);
    chmod(&s.lower(0, "d"), 0o2775);
    let _m = s.mount("");

    // "." and ".." in a listing carry the inode numbers stat reports.
    for rel in ["d", "d/sub"] {
        let dir = s.m(rel);
        let parent = dir.parent().expect("a parent").to_path_buf();
        let mut listed = std::collections::BTreeMap::new();
        let mut d = nix::dir::Dir::open(
            &dir,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("opendir {}: {e}", dir.display()));
        for ent in d.iter() {
            let ent = ent.expect("dirent");
            let name = ent.file_name().to_string_lossy().to_string();
            if name == "." || name == ".." {
                assert_eq!(
                    ent.file_type(),
                    Some(nix::dir::Type::Directory),
                    "type of {rel}/{name}"
                );
                listed.insert(name, ent.ino());
            }
        }
        assert_eq!(listed.get("."), Some(&ino(&dir)), "ino of {rel}/.");
        assert_eq!(listed.get(".."), Some(&ino(&parent)), "ino of {rel}/..");
    }

    // Whiteouts are links to one shared inode, owned by the mounter even in
    // a set-group-ID directory.
    fs::remove_file(s.m("d/a")).expect("unlink d/a");
    fs::remove_file(s.m("d/b")).expect("unlink d/b");
    fs::remove_dir_all(s.m("d/sub")).expect("rm -r d/sub");
    let mut inos = Vec::new();
    for n in ["d/a", "d/b", "d/sub"] {
        assert!(is_char00(&s.u(n)), "{n} must be a char 0/0 whiteout");
        let m = fs::symlink_metadata(s.u(n)).expect("lstat whiteout");
        assert_eq!(m.gid(), 0, "group of the whiteout {n}");
        assert!(
            m.nlink() >= 3,
            "{n}: whiteouts share an inode (nlink {})",
            m.nlink()
        );
        inos.push(m.ino());
        assert!(fs::symlink_metadata(s.m(n)).is_err(), "{n} must be gone");
    }
    assert!(
        inos.windows(2).all(|w| w[0] == w[1]),
        "whiteout inodes {inos:?}"
    );
    assert_eq!(names(&s.m("d")), Vec::<String>::new());
}

/// A name the union does not hold is answered as a negative entry the
/// kernel keeps (as overlayfs and fuse-overlayfs do), so looking it up
/// again costs no request; a change through the mount shows at once.
#[test]
fn missing_names_are_looked_up_once_until_made() {
    let s = Scratch::new(2);
    fs::create_dir(s.lower(1, "bin")).expect("mkdir lower bin");
    fs::write(s.lower(1, "bin/sh"), b"sh").expect("write lower bin/sh");
    let counts = s.dir.path().join("opstats");
    mount_counting(&s.rw_options(), &s.mnt, &counts);
    let m = Mount {
        path: s.mnt.clone(),
    };
    let gone = |rel: &str| match fs::symlink_metadata(s.m(rel)) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        Ok(_) => false,
    };
    // `bin` comes only from a lower; the root has an upper directory.
    for _ in 0..50 {
        assert!(gone("bin/missing"), "bin/missing exists");
        assert!(gone("missing"), "missing exists");
    }
    fs::write(s.m("bin/missing"), b"made").expect("create bin/missing");
    assert_eq!(
        fs::read(s.m("bin/missing")).expect("read bin/missing"),
        b"made"
    );
    fs::create_dir(s.m("missing")).expect("mkdir missing");
    assert!(
        s.m("missing").is_dir(),
        "missing is not a directory after mkdir"
    );
    assert!(gone("bin/renamed"), "bin/renamed exists");
    fs::rename(s.m("bin/missing"), s.m("bin/renamed")).expect("rename");
    assert!(
        gone("bin/missing"),
        "bin/missing still there after the rename"
    );
    assert_eq!(
        fs::read(s.m("bin/renamed")).expect("read bin/renamed"),
        b"made"
    );
    fs::remove_file(s.m("bin/renamed")).expect("unlink bin/renamed");
    assert!(gone("bin/renamed"), "bin/renamed still there after unlink");
    assert_eq!(fs::read(s.m("bin/sh")).expect("read bin/sh"), b"sh");
    drop(m);

    let text = request_counts(&counts);
    let lookups: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("lookup "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        lookups < 20,
        "{lookups} LOOKUP requests for 100 lookups of two missing names and a few \
         changes: the kernel did not keep the negative entries ({text})"
    );
}
