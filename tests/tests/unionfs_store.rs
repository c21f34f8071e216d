//! Store-layer lowers (`layers-format` index + blobs) give the same union
//! as directory lowers holding the same trees, and their inode numbers are
//! the same on every mount.

mod unionfs_common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use layers_format::import::DirFormat;
use layers_format::{NewImage, Store};
use unionfs::{mount_background, LowerSpec, MountConfig};
use unionfs_common::*;

fn build_layers(s: &Scratch) {
    write(&s.lower(1, "etc/conf"), b"base config\n");
    write(&s.lower(1, "bin/tool"), &vec![7u8; 300_000]);
    chmod(&s.lower(1, "bin/tool"), 0o755);
    write(&s.lower(1, "gone"), b"removed by the top layer");
    write(&s.lower(1, "opq/old"), b"old");
    write(&s.lower(1, "hl"), b"linked");
    fs::hard_link(s.lower(1, "hl"), s.lower(1, "hl2")).expect("link");
    std::os::unix::fs::symlink("etc/conf", s.lower(1, "link")).expect("symlink");
    write(&s.lower(0, "etc/conf"), b"top config\n");
    write(&s.lower(0, "etc/extra"), b"extra\n");
    set_xattr(&s.lower(0, "etc/extra"), "user.k", b"v");
    mknod_char(&s.lower(0, "gone"), 0, 0);
    write(&s.lower(0, "opq/new"), b"new");
    set_xattr(&s.lower(0, "opq"), "trusted.overlay.opaque", b"y");
}

fn store_config(store: &Path, s: &Scratch, upper: &Path, work: &Path) -> MountConfig {
    let st = Store::open(store).expect("open store");
    let base = st
        .import_layer_from_dir(&s.lowers[1], DirFormat::OverlayUpper)
        .expect("import base layer");
    let top = st
        .import_layer_from_dir(&s.lowers[0], DirFormat::OverlayUpper)
        .expect("import top layer");
    let img = NewImage {
        layers: vec![base, top],
        config: Default::default(),
        created: None,
        architecture: None,
        os: None,
        diff_ids: Vec::new(),
        config_digest: None,
        manifest_digest: None,
    };
    st.add_image(&img, &["unionfs-test:latest".to_string()])
        .expect("add image");
    let lowers =
        unionfs::store_layer::image_lowers(store, "unionfs-test:latest").expect("image lowers");
    assert_eq!(lowers.len(), 2);
    MountConfig {
        lowers,
        upper: Some(upper.to_path_buf()),
        work: Some(work.to_path_buf()),
        ..MountConfig::default()
    }
}

#[test]
fn store_lowers_match_directory_lowers() {
    let s = Scratch::new(2);
    build_layers(&s);
    let store = s.dir.path().join("store");
    let up2 = s.dir.path().join("upper2");
    let wk2 = s.dir.path().join("work2");
    let mnt2 = s.dir.path().join("mnt2");
    for d in [&up2, &wk2, &mnt2] {
        fs::create_dir(d).expect("mkdir");
    }
    let cfg = store_config(&store, &s, &up2, &wk2);

    let dir_cfg = MountConfig {
        lowers: s.lowers.iter().map(|p| LowerSpec::Dir(p.clone())).collect(),
        upper: Some(s.upper.clone()),
        work: Some(s.work.clone()),
        ..MountConfig::default()
    };
    let dm = mount_background(dir_cfg, &s.mnt).expect("mount dir lowers");
    let sm = mount_background(cfg.clone(), &mnt2).expect("mount store lowers");
    let a = snapshot(&s.mnt);
    let b = snapshot(&mnt2);
    assert_eq!(
        a, b,
        "store lowers and directory lowers differ (read-only view)"
    );
    assert!(a.contains_key("etc/extra") && !a.contains_key("gone") && !a.contains_key("opq/old"));
    // The same writes on both.
    for root in [&s.mnt, &mnt2] {
        fs::write(root.join("etc/conf"), b"changed\n").expect("write");
        fs::remove_file(root.join("etc/extra")).expect("rm");
        fs::rename(root.join("etc"), root.join("etc2")).expect("rename dir");
        fs::write(root.join("hl"), b"new link content").expect("write hl");
        sh(&format!("chown -R 1:1 {}", root.join("bin").display()));
    }
    let a = snapshot(&s.mnt);
    let b = snapshot(&mnt2);
    assert_eq!(
        a, b,
        "store lowers and directory lowers differ after writes"
    );
    assert_eq!(
        fs::read(mnt2.join("hl2")).expect("read"),
        b"new link content"
    );
    let ino_before = fs::metadata(mnt2.join("bin/tool")).expect("stat").ino();
    dm.unmount().expect("unmount");
    sm.unmount().expect("unmount");
    // Store inode numbers are the same on the next mount.
    let sm = mount_background(
        MountConfig {
            lowers: unionfs::store_layer::image_lowers(&store, "unionfs-test:latest")
                .expect("lowers"),
            ..cfg
        },
        &mnt2,
    )
    .expect("remount");
    assert_eq!(
        fs::metadata(mnt2.join("bin/tool")).expect("stat").ino(),
        ino_before
    );
    assert_eq!(
        fs::read(mnt2.join("bin/tool")).expect("read"),
        vec![7u8; 300_000]
    );
    sm.unmount().expect("unmount");
}

#[test]
fn store_image_mount_through_the_binary() {
    let s = Scratch::new(2);
    build_layers(&s);
    let store = s.dir.path().join("store");
    let _ = store_config(&store, &s, &s.upper, &s.work);
    let _m = Mount::unionfs(
        &[
            "--store",
            &store.display().to_string(),
            "--image",
            "unionfs-test:latest",
            "--upper",
            &s.upper.display().to_string(),
            "--work",
            &s.work.display().to_string(),
        ],
        &s.mnt,
    );
    assert_eq!(fs::read(s.m("etc/conf")).expect("read"), b"top config\n");
    assert!(!s.m("gone").exists());
    fs::write(s.m("new"), b"n").expect("write into the upper");
    assert_eq!(fs::read(s.u("new")).expect("upper"), b"n");
}
