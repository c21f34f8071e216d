//! Store operations: dedup and df, verify, corrupt indexes, images and
//! names, gc roots.

mod common;

use std::fs;

use common::RawTar;
use layers_format::{Compression, Error, NewImage, Store};

fn blob_content(seed: u8) -> Vec<u8> {
    (0..500_000u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn two_layer_tars() -> (Vec<u8>, Vec<u8>) {
    let shared = blob_content(1);
    let mut a = RawTar::new();
    a.file("bin/tool", &shared).file("etc/a", &blob_content(2));
    let mut b = RawTar::new();
    b.file("usr/bin/same-tool", &shared)
        .file("etc/b", &blob_content(3));
    (a.finish(), b.finish())
}

/// A store in `dir` with the first layer of [`two_layer_tars`]: the store,
/// the layer and its index file.
fn store_with_one_layer(
    dir: &std::path::Path,
) -> (Store, layers_format::LayerId, std::path::PathBuf) {
    let store = Store::open(&dir.join("store")).unwrap();
    let (a, _) = two_layer_tars();
    let layer = store
        .import_layer_tar(&a[..], Compression::None)
        .unwrap()
        .layer;
    let path = store.layer_path(&layer);
    (store, layer, path)
}

#[test]
fn same_content_is_stored_once_and_df_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (a, b) = two_layer_tars();
    let la = store
        .import_layer_tar(&a[..], Compression::None)
        .unwrap()
        .layer;
    let lb = store
        .import_layer_tar(&b[..], Compression::None)
        .unwrap()
        .layer;
    let img1 = store
        .add_image(
            &NewImage {
                layers: vec![la],
                ..Default::default()
            },
            &["one".into()],
        )
        .unwrap();
    store
        .add_image(
            &NewImage {
                layers: vec![la, lb],
                ..Default::default()
            },
            &["two".into()],
        )
        .unwrap();
    let du = store.df().unwrap();
    assert_eq!(du.blobs, 3, "shared content must be one blob");
    assert_eq!(du.layers, 2);
    assert_eq!(du.images, 2);
    assert_eq!(du.blob_bytes, 3 * 500_000);
    // Image one: 2 files; image two: 4 files = 6 x 500 kB logical.
    assert!(
        du.logical_bytes >= 6 * 500_000 && du.logical_bytes < 6 * 500_000 + 10_000,
        "{du:?}"
    );
    assert!(du.dedup_ratio > 1.9, "{du:?}");
    // Removing an image by name, then gc, frees only what nothing else uses.
    let removed = store.remove_image("two", false).unwrap();
    assert!(removed.deleted);
    let gc = store.gc().unwrap();
    assert_eq!((gc.layers_removed, gc.blobs_removed), (1, 1), "{gc:?}");
    assert_eq!(store.resolve_image("one").unwrap().id, img1.id);
    assert!(store.verify().unwrap().problems.is_empty());
}

#[test]
fn verify_names_a_damaged_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (a, _) = two_layer_tars();
    let layer = store
        .import_layer_tar(&a[..], Compression::None)
        .unwrap()
        .layer;
    let idx = store.open_layer(&layer).unwrap();
    let blob = idx.blobs().next().unwrap();
    let path = store.blob_path(&blob);
    let mut bytes = fs::read(&path).unwrap();
    bytes[1234] ^= 1;
    fs::write(&path, bytes).unwrap();
    let report = store.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].path, path);
    assert!(report.problems[0].problem.contains(&blob.to_hex()));
}

#[test]
fn damaged_index_fails_to_open_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, layer, path) = store_with_one_layer(tmp.path());
    let good = fs::read(&path).unwrap();
    for at in [0, 9, 200, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        fs::write(&path, &bad).unwrap();
        let err = store.open_layer(&layer).unwrap_err();
        assert!(
            matches!(
                err,
                Error::CorruptIndex { .. } | Error::UnsupportedIndex { .. }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!store.verify().unwrap().problems.is_empty());
    }
    fs::write(&path, &good[..good.len() - 3]).unwrap();
    assert!(store
        .open_layer(&layer)
        .unwrap_err()
        .to_string()
        .contains("truncated"));
}

#[test]
fn a_checked_index_is_checked_again_once_it_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, layer, path) = store_with_one_layer(tmp.path());
    let record = path.with_extension("checked");
    store.open_layer(&layer).unwrap();
    assert!(record.exists(), "no check record after a full open");
    // The second open takes the record and finds the same tree.
    let idx = store.open_layer(&layer).unwrap();
    assert!(idx.lookup_path(b"bin/tool").is_some());

    // Damage the body in place and put the modification time back: the
    // change time still moves, so the record no longer matches.
    let good = fs::read(&path).unwrap();
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let mut bad = good.clone();
    let at = good.len() - 1;
    bad[at] ^= 0x10;
    fs::write(&path, &bad).unwrap();
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let err = store.open_layer(&layer).unwrap_err();
    assert!(matches!(err, Error::CorruptIndex { .. }), "{err}");

    // Repaired, it opens again; gc of the unused layer drops its record.
    fs::write(&path, &good).unwrap();
    store.open_layer(&layer).unwrap();
    assert!(record.exists());
    let gc = store.gc().unwrap();
    assert_eq!(gc.layers_removed, 1);
    assert!(!path.exists() && !record.exists());
}

#[test]
fn names_tags_and_prefixes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let mut t = RawTar::new();
    t.file("x", b"x");
    let layer = store
        .import_layer_tar(&t.finish()[..], Compression::None)
        .unwrap()
        .layer;
    let img = store
        .add_image(
            &NewImage {
                layers: vec![layer],
                ..Default::default()
            },
            &["app".into()],
        )
        .unwrap();
    assert_eq!(img.names, vec!["app:latest".to_string()]);
    store.tag_image("app", "app:v1").unwrap();
    store
        .tag_image(&img.id.to_hex()[..8], "other/app:v2")
        .unwrap();
    let rec = store.resolve_image("app:v1").unwrap();
    assert_eq!(rec.names.len(), 3);
    assert!(matches!(
        store.resolve_image("nope"),
        Err(Error::NotFound { .. })
    ));
    // Removing one name keeps the image; removing by id removes all.
    let r = store.remove_image("app:v1", false).unwrap();
    assert!(!r.deleted);
    let r = store.remove_image(&img.id.to_hex(), false).unwrap();
    assert!(r.deleted);
    assert_eq!(r.untagged.len(), 2);
    assert!(store.list_images().unwrap().is_empty());
}

#[test]
fn containers_are_gc_roots() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let (a, _) = two_layer_tars();
    let layer = store
        .import_layer_tar(&a[..], Compression::None)
        .unwrap()
        .layer;
    let img = store
        .add_image(
            &NewImage {
                layers: vec![layer],
                ..Default::default()
            },
            &["c".into()],
        )
        .unwrap();
    let cdir = store.root().join("containers/abc123");
    fs::create_dir_all(&cdir).unwrap();
    fs::write(cdir.join("image-id"), format!("{}\n", img.id)).unwrap();
    // By id, in use: refused without force.
    assert!(matches!(
        store.remove_image(&img.id.to_hex(), false),
        Err(Error::Conflict(_))
    ));
    // By name: the name goes, the record stays for the container.
    let r = store.remove_image("c", false).unwrap();
    assert!(!r.deleted);
    let gc = store.gc().unwrap();
    assert_eq!(gc.layers_removed, 0);
    assert!(store.has_layer(&layer));
    fs::remove_dir_all(&cdir).unwrap();
    store.remove_image(&img.id.to_hex(), false).unwrap();
    let gc = store.gc().unwrap();
    assert_eq!(gc.layers_removed, 1);
    assert!(!store.has_layer(&layer));
}

#[test]
fn gc_waits_for_a_running_import() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    // An importer holds the shared lock between its layer and image steps.
    let guard = store.lock_shared().unwrap();
    let (a, _) = two_layer_tars();
    let layer = store
        .import_layer_tar(&a[..], Compression::None)
        .unwrap()
        .layer;
    let s2 = store.clone();
    let gc = std::thread::spawn(move || s2.gc().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!gc.is_finished(), "gc must wait for the import's lock");
    store
        .add_image(
            &NewImage {
                layers: vec![layer],
                ..Default::default()
            },
            &["kept".into()],
        )
        .unwrap();
    drop(guard);
    let report = gc.join().unwrap();
    assert_eq!(report.layers_removed, 0);
    assert!(store.has_layer(&layer));
}
