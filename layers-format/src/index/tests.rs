//! Unit tests of the index writer and reader.

use super::*;
use crate::format::{self, hdr};

fn sample() -> Vec<u8> {
    let mut b = IndexBuilder::new();
    let root = b.root();
    let etc = b.insert_dir(root, b"etc", Meta::default()).unwrap();
    let meta = Meta {
        mode: 0o4755,
        uid: 1000,
        gid: 100,
        mtime_sec: 1_700_000_000,
        mtime_nsec: 123_456_789,
        ..Meta::default()
    };
    let f = b
        .insert_file(
            etc,
            b"passwd",
            meta.clone(),
            5,
            FileData::Inline(b"hello".to_vec()),
        )
        .unwrap();
    b.link(root, b"hard", f).unwrap();
    b.insert_file(etc, b"big", meta, 1000, FileData::Blob(BlobId([7; 32])))
        .unwrap();
    b.insert_symlink(root, b"link", Meta::default(), b"etc/passwd")
        .unwrap();
    b.insert_whiteout(root, b"gone").unwrap();
    let mut xm = Meta::default();
    xm.xattrs.insert(b"user.b".to_vec(), b"2".to_vec());
    xm.xattrs.insert(b"user.a".to_vec(), b"1".to_vec());
    b.insert_special(root, b"null", xm, FileKind::CharDevice)
        .unwrap();
    let opq = b.insert_dir(root, b"opq", Meta::default()).unwrap();
    b.set_opaque(opq);
    b.build().unwrap()
}

#[test]
fn round_trip() {
    let idx = Index::from_bytes(sample(), "sample").unwrap();
    let root = idx.root_ino();
    let names: Vec<_> = idx.readdir(root, 0).map(|(_, e)| e.name.to_vec()).collect();
    assert_eq!(
        names,
        vec![
            b"etc".to_vec(),
            b"gone".to_vec(),
            b"hard".to_vec(),
            b"link".to_vec(),
            b"null".to_vec(),
            b"opq".to_vec()
        ]
    );
    let etc = idx.lookup(root, b"etc").unwrap();
    let passwd = idx.lookup(etc, b"passwd").unwrap();
    assert_eq!(idx.lookup(root, b"hard"), Some(passwd));
    let a = idx.attr(passwd).unwrap();
    assert_eq!(
        (a.mode, a.uid, a.gid, a.nlink, a.size),
        (0o4755, 1000, 100, 2, 5)
    );
    assert_eq!((a.mtime_sec, a.mtime_nsec), (1_700_000_000, 123_456_789));
    assert_eq!(idx.content(passwd), Content::Inline(b"hello"));
    let big = idx.lookup_path(b"etc/big").unwrap();
    assert_eq!(idx.content(big), Content::Blob(BlobId([7; 32])));
    assert_eq!(
        idx.readlink(idx.lookup(root, b"link").unwrap()),
        Some(&b"etc/passwd"[..])
    );
    assert_eq!(
        idx.kind(idx.lookup(root, b"gone").unwrap()),
        Some(FileKind::Whiteout)
    );
    let null = idx.lookup(root, b"null").unwrap();
    assert_eq!(idx.getxattr(null, b"user.a"), Some(&b"1"[..]));
    assert_eq!(idx.xattrs(null).count(), 2);
    assert!(idx.is_opaque(idx.lookup(root, b"opq").unwrap()));
    assert!(!idx.is_opaque(etc));
    assert_eq!(idx.parent(etc), Some(root));
    assert_eq!(idx.attr(root).unwrap().nlink, 4);
    // Offsets continue a listing.
    let (off, _) = idx.readdir(root, 0).nth(2).unwrap();
    assert_eq!(idx.readdir(root, off).next().unwrap().1.name, b"link");
    assert!(idx.readdir(root, 999).next().is_none());
    assert!(idx.attr(0).is_none() && idx.attr(999).is_none());
    assert_eq!(idx.blobs().count(), 1);
}

#[test]
fn same_tree_same_bytes() {
    assert_eq!(sample(), sample());
}

#[test]
fn every_flipped_byte_is_caught() {
    let good = sample();
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        let err = Index::from_bytes(bad, "flipped").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("flipped"), "{msg}");
    }
}

#[test]
fn structure_checked_without_checksum() {
    let good = sample();
    // Any truncation is refused.
    for len in [0, 10, format::HEADER_LEN, good.len() - 1] {
        assert!(Index::from_bytes_unverified(good[..len].to_vec(), "t").is_err());
    }
    // A dirent pointing past the inode table is refused even with a fixed checksum.
    let mut bad = good.clone();
    let dirent_off = u64::from_le_bytes(
        bad[hdr::DIRENT_OFF..hdr::DIRENT_OFF + 8]
            .try_into()
            .unwrap(),
    ) as usize;
    bad[dirent_off + 8..dirent_off + 16].copy_from_slice(&9999u64.to_le_bytes());
    let err = Index::from_bytes_unverified(bad, "t")
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn whiteout_rules() {
    let mut b = IndexBuilder::new();
    let root = b.root();
    // file then its whiteout: the file stays
    b.insert_file(root, b"a", Meta::default(), 0, FileData::Empty)
        .unwrap();
    b.insert_whiteout(root, b"a").unwrap();
    // whiteout then a dir: dir stays and is opaque
    b.insert_whiteout(root, b"d").unwrap();
    b.insert_dir(root, b"d", Meta::default()).unwrap();
    // dir then whiteout: opaque too
    b.insert_dir(root, b"e", Meta::default()).unwrap();
    b.insert_whiteout(root, b"e").unwrap();
    let idx = Index::from_bytes(b.build().unwrap(), "w").unwrap();
    assert_eq!(
        idx.kind(idx.lookup(1, b"a").unwrap()),
        Some(FileKind::Regular)
    );
    assert!(idx.is_opaque(idx.lookup(1, b"d").unwrap()));
    assert!(idx.is_opaque(idx.lookup(1, b"e").unwrap()));
}

#[test]
fn big_directory_lookup() {
    let mut b = IndexBuilder::new();
    let root = b.root();
    for i in 0..10_000 {
        b.insert_file(
            root,
            format!("f{i:05}").as_bytes(),
            Meta::default(),
            0,
            FileData::Empty,
        )
        .unwrap();
    }
    let idx = Index::from_bytes(b.build().unwrap(), "big").unwrap();
    for i in (0..10_000).step_by(37) {
        assert!(idx.lookup(1, format!("f{i:05}").as_bytes()).is_some());
    }
    assert!(idx.lookup(1, b"nope").is_none());
    assert_eq!(idx.readdir(1, 0).count(), 10_000);
}

#[test]
fn index_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Index>();
}
