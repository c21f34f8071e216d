//! Write seed inputs for the fuzz targets into `corpus/<target>/`:
//! `cargo run --bin gen-corpus` (from `fuzz/`).

use std::fs;
use std::io::Write;
use std::path::Path;

use layers_format::index::{FileData, FileKind, IndexBuilder, Meta};
use layers_format::BlobId;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn indexes(dir: &Path) {
    write(
        dir,
        "empty-root",
        &IndexBuilder::new().build().expect("build"),
    );
    let mut b = IndexBuilder::new();
    let root = b.root();
    let etc = b.insert_dir(root, b"etc", Meta::default()).expect("dir");
    let f = b
        .insert_file(
            etc,
            b"hostname",
            Meta::default(),
            7,
            FileData::Inline(b"strata\n".to_vec()),
        )
        .expect("file");
    b.link(root, b"hostname-link", f).expect("link");
    b.insert_file(
        root,
        b"big",
        Meta::default(),
        1 << 20,
        FileData::Blob(BlobId([9; 32])),
    )
    .expect("blob");
    b.insert_symlink(root, b"sh", Meta::default(), b"/bin/busybox")
        .expect("symlink");
    b.insert_whiteout(root, b"gone").expect("whiteout");
    let mut x = Meta::default();
    x.xattrs.insert(b"user.a".to_vec(), b"1".to_vec());
    x.xattrs
        .insert(b"security.capability".to_vec(), vec![1, 0, 0, 2]);
    b.insert_special(root, b"null", x, FileKind::CharDevice)
        .expect("dev");
    let o = b.insert_dir(root, b"opaque", Meta::default()).expect("dir");
    b.set_opaque(o);
    write(dir, "mixed", &b.build().expect("build"));
    let mut b = IndexBuilder::new();
    let root = b.root();
    for i in 0..200 {
        b.insert_file(
            root,
            format!("f{i}").as_bytes(),
            Meta::default(),
            0,
            FileData::Empty,
        )
        .expect("file");
    }
    write(dir, "wide", &b.build().expect("build"));
}

fn tars(dir: &Path) {
    let mut t = tar::Builder::new(Vec::new());
    let add = |t: &mut tar::Builder<Vec<u8>>,
               path: &str,
               kind: tar::EntryType,
               data: &[u8],
               link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match link {
            Some(l) => t.append_link(&mut h, path, l).expect("link"),
            None => t.append_data(&mut h, path, data).expect("entry"),
        }
    };
    add(&mut t, "etc", tar::EntryType::Directory, b"", None);
    add(
        &mut t,
        "etc/hostname",
        tar::EntryType::Regular,
        b"strata\n",
        None,
    );
    add(
        &mut t,
        "etc/big",
        tar::EntryType::Regular,
        &[7u8; 300],
        None,
    );
    add(
        &mut t,
        "etc/hard",
        tar::EntryType::Link,
        b"",
        Some("etc/big"),
    );
    add(
        &mut t,
        "bin/sh",
        tar::EntryType::Symlink,
        b"",
        Some("busybox"),
    );
    add(&mut t, "dev/fifo", tar::EntryType::Fifo, b"", None);
    add(&mut t, ".wh.gone", tar::EntryType::Regular, b"", None);
    add(
        &mut t,
        "etc/.wh..wh..opq",
        tar::EntryType::Regular,
        b"",
        None,
    );
    t.append_pax_extensions([
        ("SCHILY.xattr.user.x", &b"value"[..]),
        ("mtime", &b"1700000000.5"[..]),
    ])
    .expect("pax");
    add(&mut t, "etc/xattr", tar::EntryType::Regular, b"x", None);
    let plain = t.into_inner().expect("tar");
    write(dir, "layer.tar", &plain);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).expect("gzip");
    write(dir, "layer.tar.gz", &gz.finish().expect("gzip"));
}

fn oci_docs(dir: &Path) {
    let d = format!("sha256:{}", "ab".repeat(32));
    write(
        dir,
        "index.json",
        format!(r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":3,"platform":{{"architecture":"amd64","os":"linux"}},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#).as_bytes(),
    );
    write(
        dir,
        "manifest.json",
        format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":5}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":9}}]}}"#).as_bytes(),
    );
    write(
        dir,
        "config.json",
        format!(r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["sh"],"ExposedPorts":{{"80/tcp":{{}}}},"Volumes":{{"/data":{{}}}},"Labels":{{"a":"b"}},"StopSignal":"SIGINT"}},"rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#).as_bytes(),
    );
    write(
        dir,
        "docker-save.json",
        br#"[{"Config":"abc.json","RepoTags":["busybox:latest"],"Layers":["l1/layer.tar"]}]"#,
    );
}

/// Command lines of the mount program, NUL-separated as the target splits
/// them: the forms podman, `mount -t fuse.unionfs` and users write, plus
/// broken ones.
fn mount_command_lines(dir: &Path) {
    let opts = [
        "lowerdir=/l1:/l2,upperdir=/u,workdir=/w",
        "lowerdir=/l,upperdir=/u,workdir=/w,squash_to_root,allow_other,fsync=0",
        "lowerdir=/l,uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1",
        "ro,nodev,nosuid,lowerdir=\"/a,b\":/c,threads=4,passthrough=on,metacopy=off",
        "rw,fsname=overlay,default_permissions,writeback=1,context=\"system_u:x\"",
        "uidmapping=0:1:2:3,threads=99999999999,fsync=maybe",
    ];
    let mut n = 0;
    for o in opts {
        for shape in [
            vec!["-o", o, "/mnt"],
            vec!["overlay", "/mnt", "-o", o],
            vec!["-f", &format!("-o{o}"), "/mnt"],
            vec![
                "--store",
                "/s",
                "--image",
                "busybox:latest",
                "-o",
                o,
                "/mnt",
            ],
        ] {
            write(dir, &format!("cmd-{n}"), shape.join("\0").as_bytes());
            n += 1;
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    indexes(&root.join("index_open"));
    tars(&root.join("tar_import"));
    oci_docs(&root.join("oci_parse"));
    mount_command_lines(&root.join("mount_options"));
    println!("seeds written under {}", root.display());
}
