//! Hostile and broken tars: each is refused with a clear error (or, for a
//! duplicate entry, normalised as tar -x does), nothing lands outside the
//! store, and the store is left as it was.

mod common;

use common::{assert_untouched, gzip, listing, RawTar};
use layers_format::{Compression, Store};

fn refused(tar: &[u8], expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let before = listing(store.root());
    let err = store
        .import_layer_tar(tar, Compression::Auto)
        .expect_err("hostile tar was accepted")
        .to_string();
    assert!(
        err.contains(expect),
        "error {err:?} should mention {expect:?}"
    );
    assert_untouched(&store, &before);
    assert!(store.list_layers().unwrap().is_empty());
}

#[test]
fn dotdot_path_is_refused() {
    let mut t = RawTar::new();
    t.file("ok", b"fine")
        .file("../../etc/strata-hostile-x", b"escaped!");
    refused(&t.finish(), "'..'");
    assert!(!std::path::Path::new("/etc/strata-hostile-x").exists());
}

#[test]
fn absolute_path_is_refused() {
    let mut t = RawTar::new();
    t.file("/etc/strata-hostile-abs", b"escaped!");
    refused(&t.finish(), "absolute path");
    assert!(!std::path::Path::new("/etc/strata-hostile-abs").exists());
}

#[test]
fn file_through_symlink_is_refused() {
    let mut t = RawTar::new();
    t.link(tar::EntryType::Symlink, "evil", "/etc")
        .file("evil/strata-hostile-sym", b"escaped!");
    refused(&t.finish(), "goes through a symlink");
    assert!(!std::path::Path::new("/etc/strata-hostile-sym").exists());
}

#[test]
fn hardlink_out_of_layer_is_refused() {
    let mut t = RawTar::new();
    t.link(tar::EntryType::Link, "shadow", "../../etc/shadow");
    refused(&t.finish(), "'..'");
    let mut t = RawTar::new();
    t.link(tar::EntryType::Link, "passwd", "etc/passwd");
    refused(&t.finish(), "not an earlier file");
}

#[test]
fn truncated_gzip_is_refused() {
    let mut t = RawTar::new();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    t.file("a", &big).file("b", &big);
    let gz = gzip(&t.finish());
    refused(&gz[..gz.len() / 2], "");
}

#[test]
fn truncated_plain_tar_is_refused() {
    let mut t = RawTar::new();
    let big = vec![7u8; 100_000];
    t.file("a", &big);
    let tar = t.finish();
    refused(&tar[..50_000], "truncated");
}

#[test]
fn ten_thousand_deep_path_is_refused() {
    let deep = "d/".repeat(10_000) + "f";
    let mut t = RawTar::new();
    t.file(&deep, b"deep");
    refused(&t.finish(), "longer than 4096");
}

#[test]
fn garbage_is_refused() {
    refused(&[0x42u8; 1000], "tar");
}

#[test]
fn duplicate_entry_last_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let mut t = RawTar::new();
    t.file("dup", b"first version of the file")
        .file("dup", b"second");
    let imported = store
        .import_layer_tar(&t.finish()[..], Compression::None)
        .unwrap();
    let idx = store.open_layer(&imported.layer).unwrap();
    let ino = idx.lookup_path(b"dup").unwrap();
    assert_eq!(idx.content(ino), layers_format::Content::Inline(b"second"));
    assert_eq!(idx.readdir(1, 0).count(), 1);
    assert!(store.verify().unwrap().problems.is_empty());
}

#[test]
fn name_too_long_is_refused() {
    let mut t = RawTar::new();
    t.file(&"n".repeat(300), b"x");
    refused(&t.finish(), "longer than 255");
}
