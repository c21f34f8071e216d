//! The core unionfs behaviours again as the ordinary user `stratatest`,
//! mounting through fusermount3 (needs `/dev/fuse` mode 0666, as CI sets
//! it; the test sets it too). Whiteouts are written in the unprivileged
//! form (`.wh.NAME` files), private xattrs in the `user.` namespace.

mod unionfs_common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use unionfs_common::*;

fn prepare() -> (Scratch, u32, u32) {
    let (uid, gid) = ensure_test_user();
    assert!(
        Path::new("/usr/bin/fusermount3").exists() || Path::new("/bin/fusermount3").exists(),
        "fusermount3 is missing: install the fuse3 package"
    );
    sh("chmod 666 /dev/fuse");
    let s = Scratch::new(2);
    chmod(s.dir.path(), 0o755);
    write(&s.lower(1, "d/low"), b"low");
    write(&s.lower(1, "gone"), b"gone");
    write(&s.lower(0, "d/top"), b"top");
    write(&s.lower(0, "hl"), b"linked");
    fs::hard_link(s.lower(0, "hl"), s.lower(0, "hl2")).expect("link");
    write(&s.lower(1, "mv/inner"), b"inner");
    sh(&format!("chown -R {uid}:{gid} {}", s.dir.path().display()));
    (s, uid, gid)
}

#[test]
fn rootless_core_semantics_through_fusermount3() {
    let (s, uid, gid) = prepare();
    let bin = unionfs_bin();
    let m = s.mnt.display();
    let script = format!(
        "set -ex
        {bin} -o {opts} {m}
        test \"$(cat {m}/d/low {m}/d/top)\" = lowtop
        rm {m}/gone
        test ! -e {m}/gone
        echo more >> {m}/d/low
        test \"$(cat {m}/d/low)\" = lowmore
        mkdir {m}/new && echo n > {m}/new/f
        mv {m}/mv {m}/moved
        test \"$(cat {m}/moved/inner)\" = inner
        echo changed > {m}/hl
        test \"$(cat {m}/hl2)\" = changed
        test \"$(stat -c %i {m}/hl)\" = \"$(stat -c %i {m}/hl2)\"
        if touch {m}/.wh.bad 2>/dev/null; then echo 'created .wh. name'; exit 1; fi
        rm -rf {m}/d
        test ! -e {m}/d
        fusermount3 -u {m}",
        bin = bin.display(),
        opts = s.rw_options(),
    );
    let (ok, out) = as_user(uid, gid, &script);
    unmount(&s.mnt);
    assert!(ok, "rootless script failed:\n{out}");
    // Whiteouts: char 0/0 where the kernel lets users make them (Linux >= 5.8),
    // else `.wh.NAME` files.
    for n in ["gone", "d", "mv"] {
        let chr = fs::symlink_metadata(s.u(n))
            .map(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_char_device() && m.rdev() == 0
            })
            .unwrap_or(false);
        assert!(
            chr || s.u(&format!(".wh.{n}")).exists(),
            "upper has a whiteout for {n}"
        );
    }
    assert_eq!(fs::metadata(s.u("new/f")).expect("stat").uid(), uid);
    // Remount as the user: the same view.
    let script = format!(
        "set -ex
        {bin} -o {opts} {m}
        test ! -e {m}/gone && test ! -e {m}/d
        test \"$(cat {m}/moved/inner)\" = inner
        test \"$(cat {m}/new/f)\" = n
        test \"$(ls {m} | tr '\\n' ' ')\" = 'hl hl2 moved new '
        fusermount3 -u {m}",
        bin = bin.display(),
        opts = s.rw_options(),
    );
    let (ok, out) = as_user(uid, gid, &script);
    unmount(&s.mnt);
    assert!(ok, "rootless remount failed:\n{out}");
}

#[test]
fn rootless_squash_to_root_and_id_mapping() {
    let (s, uid, gid) = prepare();
    let bin = unionfs_bin();
    let m = s.mnt.display();
    let script = format!(
        "set -ex
        {bin} -o {opts},squash_to_root {m}
        test \"$(stat -c %u:%g {m}/d/low)\" = 0:0
        fusermount3 -u {m}
        {bin} -o {opts},uidmapping=0:{uid}:1,gidmapping=0:{gid}:1 {m}
        # the first daemon exits after this mount exists: it must not take it down
        sleep 0.5
        grep -q \" {m} fuse.unionfs \" /proc/self/mounts
        test \"$(stat -c %u:%g {m}/d/top)\" = 0:0
        fusermount3 -u {m}",
        bin = bin.display(),
        opts = s.rw_options(),
    );
    let (ok, out) = as_user(uid, gid, &script);
    unmount(&s.mnt);
    assert!(ok, "rootless mapping script failed:\n{out}");
}
