//! Shared fixtures of the micro-benchmarks: a layer index shaped like the
//! cowbench dataset (20,000 entries in nested directories plus one
//! 10,000-entry directory), built with layers-format's `IndexBuilder`.

use layers_format::index::{FileData, IndexBuilder, Meta};

/// Entries of the big directory.
pub const BIG_DIR_ENTRIES: usize = 10_000;
/// Directory holding the big directory, relative to the root.
pub const BIG_DIR: &[u8] = b"usr/share/bigdir";

/// Name of entry `i` of the big directory.
pub fn big_name(i: usize) -> Vec<u8> {
    format!("entry{i:05}").into_bytes()
}

fn file_meta() -> Meta {
    Meta {
        mode: 0o644,
        ..Meta::default()
    }
}

/// Index bytes of a 30,000-entry layer: 200 package directories with 100
/// files each spread over a few levels, and the 10,000-entry directory.
pub fn dataset_index() -> Vec<u8> {
    let mut b = IndexBuilder::new();
    let root = b.root();
    let usr = b
        .insert_dir(root, b"usr", Meta::default())
        .expect("fresh name");
    let lib = b
        .insert_dir(usr, b"lib", Meta::default())
        .expect("fresh name");
    for p in 0..200 {
        let pkg = b
            .insert_dir(lib, format!("pkg{p}").as_bytes(), Meta::default())
            .expect("fresh name");
        let sub = b
            .insert_dir(pkg, b"sub", Meta::default())
            .expect("fresh name");
        for f in 0..100 {
            let dir = if f % 2 == 0 { pkg } else { sub };
            let body = vec![b'x'; 16 + f % 32];
            let len = body.len() as u64;
            b.insert_file(
                dir,
                format!("mod{f}.py").as_bytes(),
                file_meta(),
                len,
                FileData::Inline(body),
            )
            .expect("fresh name");
        }
    }
    let share = b
        .insert_dir(usr, b"share", Meta::default())
        .expect("fresh name");
    let big = b
        .insert_dir(share, b"bigdir", Meta::default())
        .expect("fresh name");
    for i in 0..BIG_DIR_ENTRIES {
        b.insert_file(big, &big_name(i), file_meta(), 0, FileData::Empty)
            .expect("fresh name");
    }
    b.build().expect("a 30,000-entry tree fits the format")
}
