//! OCI layer semantics: whiteouts and opaque markers as the image-spec
//! states them, seen in one layer and merged over a lower layer.

mod common;

use common::RawTar;
use layers_format::view::MergedView;
use layers_format::{Compression, FileKind, Store};

#[test]
fn whiteouts_and_opaque_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();

    let mut lower = RawTar::new();
    lower
        .dir("a")
        .file("a/old", b"lower a/old")
        .file("a/x", b"lower a/x")
        .file("b", b"lower b")
        .file("c", b"lower c")
        .dir("d")
        .file("d/e", b"lower d/e")
        .file("d/f", b"lower d/f")
        .dir("g")
        .file("g/kept", b"lower g/kept");
    let lower = store
        .import_layer_tar(&lower.finish()[..], Compression::Auto)
        .unwrap();

    let mut upper = RawTar::new();
    upper
        .dir("a")
        .file("a/x", b"upper a/x")
        .file("a/y", b"upper a/y")
        // The opaque marker comes after its siblings: it still applies to
        // the whole directory, and the siblings stay.
        .file("a/.wh..wh..opq", b"")
        // A whiteout of a name present in this same layer: the entry of
        // this layer stays (the whiteout only hides lower layers).
        .file("b", b"upper b")
        .file(".wh.b", b"")
        .file(".wh.c", b"")
        .file("d/.wh.e", b"")
        // Whiteout first, then a directory of that name in the same layer:
        // the directory stays and the lower one's contents are hidden.
        .file(".wh.g", b"")
        .dir("g")
        .file("g/new", b"upper g/new");
    let upper = store
        .import_layer_tar(&upper.finish()[..], Compression::Auto)
        .unwrap();

    // The markers as recorded in the upper index.
    let idx = store.open_layer(&upper.layer).unwrap();
    let a = idx.lookup_path(b"a").unwrap();
    assert!(idx.is_opaque(a), "a/ must be opaque");
    assert!(
        idx.lookup(a, b".wh..wh..opq").is_none(),
        "marker file must not be an entry"
    );
    assert_eq!(idx.readdir(a, 0).count(), 2);
    assert_eq!(
        idx.kind(idx.lookup_path(b"b").unwrap()),
        Some(FileKind::Regular)
    );
    assert_eq!(
        idx.kind(idx.lookup_path(b"c").unwrap()),
        Some(FileKind::Whiteout)
    );
    assert_eq!(
        idx.kind(idx.lookup_path(b"d/e").unwrap()),
        Some(FileKind::Whiteout)
    );
    assert!(!idx.is_opaque(idx.lookup_path(b"d").unwrap()));
    assert!(idx.is_opaque(idx.lookup_path(b"g").unwrap()));
    assert!(idx.lookup_path(b".wh.c").is_none());

    // The merged view, as a union filesystem shows it.
    let view = MergedView::open(&store, &[lower.layer, upper.layer]).unwrap();
    let mut seen = Vec::new();
    view.walk(|p, e| seen.push((String::from_utf8_lossy(p).into_owned(), e.layer)));
    let want = [
        ("a", 1),
        ("a/x", 1),
        ("a/y", 1),
        ("b", 1),
        ("d", 1),
        ("d/f", 0),
        ("g", 1),
        ("g/new", 1),
    ];
    let want: Vec<(String, usize)> = want.iter().map(|(p, l)| (p.to_string(), *l)).collect();
    assert_eq!(seen, want);

    // Exporting the upper layer writes the markers back as OCI files, and
    // importing that gives the same layer.
    let mut tar = Vec::new();
    store.export_layer_tar(&upper.layer, &mut tar).unwrap();
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(&tar[..]);
    for e in ar.entries().unwrap() {
        names.push(String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned());
    }
    assert!(names.contains(&"a/.wh..wh..opq".to_string()), "{names:?}");
    assert!(names.contains(&".wh.c".to_string()), "{names:?}");
    let again = store.import_layer_tar(&tar[..], Compression::None).unwrap();
    let idx2 = store.open_layer(&again.layer).unwrap();
    assert!(idx2.is_opaque(idx2.lookup_path(b"a").unwrap()));
    assert_eq!(
        idx2.kind(idx2.lookup_path(b"d/e").unwrap()),
        Some(FileKind::Whiteout)
    );
}

#[test]
fn overlay_upper_dir_import() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (mknod, trusted xattrs)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("upper");
    std::fs::create_dir_all(up.join("opq")).unwrap();
    std::fs::create_dir_all(up.join("fo")).unwrap();
    std::fs::write(up.join("opq/kept"), b"kept").unwrap();
    std::fs::write(up.join("fo/.wh..wh..opq"), b"").unwrap();
    std::fs::write(up.join(".wh.gone2"), b"").unwrap();
    std::fs::write(up.join("file"), b"data").unwrap();
    nix::sys::stat::mknod(
        &up.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    let c = std::ffi::CString::new(up.join("opq").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(r, 0);
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let layer = store
        .import_layer_from_dir(&up, layers_format::DirFormat::OverlayUpper)
        .unwrap();
    let idx = store.open_layer(&layer).unwrap();
    assert_eq!(
        idx.kind(idx.lookup_path(b"gone").unwrap()),
        Some(FileKind::Whiteout)
    );
    assert_eq!(
        idx.kind(idx.lookup_path(b"gone2").unwrap()),
        Some(FileKind::Whiteout)
    );
    let opq = idx.lookup_path(b"opq").unwrap();
    assert!(idx.is_opaque(opq));
    assert!(
        idx.getxattr(opq, b"trusted.overlay.opaque").is_none(),
        "overlay xattrs are dropped"
    );
    assert!(idx.is_opaque(idx.lookup_path(b"fo").unwrap()));
    assert!(idx.lookup_path(b"fo/.wh..wh..opq").is_none());
    // Plain format keeps the char 0/0 device as it is.
    let plain = store
        .import_layer_from_dir(&up, layers_format::DirFormat::Plain)
        .unwrap();
    let idx = store.open_layer(&plain).unwrap();
    assert_eq!(
        idx.kind(idx.lookup_path(b"gone").unwrap()),
        Some(FileKind::CharDevice)
    );
}
