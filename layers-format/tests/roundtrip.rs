//! Import a directory holding every kind of file and attribute; the index
//! must reproduce each one. Then export the layer as a tar, import that,
//! and get the same tree back.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use layers_format::{Content, DirFormat, FileKind, Index, Store};

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a valid buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn set_times(path: &Path, sec: i64, nsec: i64) {
    let t = nix::sys::time::TimeSpec::new(sec, nsec);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Build the fixture tree. Needs root (mknod, chown).
fn make_tree(root: &Path) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (mknod, chown)"
    );
    fs::write(root.join("small.txt"), b"hello\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(root.join("big.bin"), &big).unwrap();
    fs::write(root.join("name with spaces"), b"spaced").unwrap();
    fs::write(
        root.join("ünïcödé-名前"),
        b"unicode name content, long enough to be a blob in the store",
    )
    .unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(
        root.join("sub/linked"),
        b"this content is shared by two names via a hardlink...........",
    )
    .unwrap();
    fs::hard_link(root.join("sub/linked"), root.join("hardlink")).unwrap();
    std::os::unix::fs::symlink("sub/linked", root.join("symlink")).unwrap();
    std::os::unix::fs::symlink("/absolute/target/elsewhere", root.join("abs-symlink")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &root.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("owned"), b"owned by someone else").unwrap();
    std::os::unix::fs::lchown(root.join("owned"), Some(1234), Some(5678)).unwrap();
    set_xattr(&root.join("small.txt"), "user.greeting", b"hi there");
    set_xattr(&root.join("small.txt"), "user.empty", b"");
    set_xattr(&root.join("sub"), "user.dir", b"on a directory");
    for name in [
        "small.txt",
        "big.bin",
        "owned",
        "symlink",
        "fifo",
        "sub",
        "setuid",
    ] {
        set_times(
            &root.join(name),
            1_600_000_000 + name.len() as i64,
            123_456_789,
        );
    }
    set_times(root, 1_650_000_000, 42);
}

fn host_xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: buffer valid for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0);
    let mut out = BTreeMap::new();
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: buffer valid for its length.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(m >= 0);
        v.truncate(m as usize);
        out.insert(name.to_vec(), v);
    }
    out
}

/// Compare every entry of `index` with the host tree at `root`.
fn compare(store: &Store, index: &Index, root: &Path, check_ctime: bool) -> usize {
    let mut checked = 0;
    let mut stack = vec![(index.root_ino(), root.to_path_buf())];
    while let Some((dir, dir_path)) = stack.pop() {
        let mut host_names: Vec<Vec<u8>> = fs::read_dir(&dir_path)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        host_names.sort();
        let names: Vec<Vec<u8>> = index
            .readdir(dir, 0)
            .map(|(_, e)| e.name.to_vec())
            .collect();
        assert_eq!(names, host_names, "entries of {}", dir_path.display());
        for (_, e) in index.readdir(dir, 0) {
            let path = dir_path.join(std::ffi::OsStr::from_bytes(e.name));
            let md = fs::symlink_metadata(&path).unwrap();
            let a = index.attr(e.ino).unwrap();
            let shown = path.display();
            assert_eq!(Some(a.kind), FileKind::from_mode(md.mode()), "{shown}");
            assert_eq!(e.kind, a.kind, "{shown}");
            assert_eq!(a.mode, md.mode() & 0o7777, "{shown} mode");
            assert_eq!((a.uid, a.gid), (md.uid(), md.gid()), "{shown} owner");
            assert_eq!(
                (a.mtime_sec, i64::from(a.mtime_nsec)),
                (md.mtime(), md.mtime_nsec()),
                "{shown} mtime"
            );
            if check_ctime {
                assert_eq!(
                    (a.ctime_sec, i64::from(a.ctime_nsec)),
                    (md.ctime(), md.ctime_nsec()),
                    "{shown} ctime"
                );
            }
            assert_eq!(
                index
                    .xattrs(e.ino)
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect::<BTreeMap<_, _>>(),
                host_xattrs(&path),
                "{shown} xattrs"
            );
            match a.kind {
                FileKind::Regular => {
                    assert_eq!(a.size, md.len(), "{shown} size");
                    assert_eq!(a.nlink as u64, md.nlink(), "{shown} nlink");
                    let want = fs::read(&path).unwrap();
                    let got = match index.content(e.ino) {
                        Content::Empty => Vec::new(),
                        Content::Inline(b) => b.to_vec(),
                        Content::Blob(id) => {
                            let mut v = Vec::new();
                            store.open_blob(&id).unwrap().read_to_end(&mut v).unwrap();
                            v
                        }
                    };
                    assert!(got == want, "{shown} content differs");
                }
                FileKind::Symlink => {
                    assert_eq!(
                        index.readlink(e.ino).unwrap(),
                        fs::read_link(&path).unwrap().as_os_str().as_bytes(),
                        "{shown}"
                    );
                    assert_eq!(a.size, md.len(), "{shown} size");
                }
                FileKind::CharDevice | FileKind::BlockDevice => {
                    assert_eq!(a.rdev, md.rdev(), "{shown} rdev")
                }
                FileKind::Directory => stack.push((e.ino, path.clone())),
                _ => {}
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn directory_round_trip_keeps_every_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let layer = store.import_layer_from_dir(&src, DirFormat::Plain).unwrap();
    let index = store.open_layer(&layer).unwrap();
    let checked = compare(&store, &index, &src, true);
    assert_eq!(checked, 15);
    // Hardlinked names share one inode.
    assert_eq!(
        index.lookup_path(b"hardlink"),
        index.lookup_path(b"sub/linked")
    );
    let root = index.attr(1).unwrap();
    assert_eq!((root.mtime_sec, root.mtime_nsec), (1_650_000_000, 42));
    // Importing again gives the same layer id (deterministic index bytes).
    assert_eq!(
        store.import_layer_from_dir(&src, DirFormat::Plain).unwrap(),
        layer
    );

    // Export as a tar, import that: the same tree, attribute for attribute.
    let mut tar = Vec::new();
    store.export_layer_tar(&layer, &mut tar).unwrap();
    let again = store
        .import_layer_tar(&tar[..], layers_format::Compression::Auto)
        .unwrap();
    let index2 = store.open_layer(&again.layer).unwrap();
    compare(&store, &index2, &src, false);
    // And a second export/import cycle is a fixed point.
    let mut tar2 = Vec::new();
    store.export_layer_tar(&again.layer, &mut tar2).unwrap();
    let third = store
        .import_layer_tar(&tar2[..], layers_format::Compression::None)
        .unwrap();
    assert_eq!(third.layer, again.layer);
    assert!(store.verify().unwrap().problems.is_empty());
}
