//! Open arbitrary bytes as a layer index (structure checks only: a fuzzer
//! cannot forge the checksum, and the structure checks are what keep reads
//! in bounds), then walk everything it offers and check its invariants.
#![no_main]

use layers_format::index::{Content, FileKind, Index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = Index::from_bytes_unverified(data.to_vec(), "fuzz") else {
        return;
    };
    let _ = index.verify();
    // Every inode, including numbers just outside the table.
    for ino in 0..=index.inode_count() + 1 {
        let attr = index.attr(ino);
        let _ = index.readlink(ino);
        let _ = index.is_opaque(ino);
        let _ = index.parent(ino);
        for (name, value) in index.xattrs(ino) {
            assert_eq!(index.getxattr(ino, name), Some(value));
        }
        match index.content(ino) {
            Content::Inline(bytes) => assert_eq!(Some(bytes.len() as u64), attr.map(|a| a.size)),
            Content::Blob(_) | Content::Empty => {}
        }
    }
    // Walk the tree from the root; validation guarantees it is a tree, so
    // the walk ends. Bound it anyway so a bug shows as a failure, not a hang.
    let mut stack = vec![index.root_ino()];
    let mut steps = 0u64;
    while let Some(dir) = stack.pop() {
        for (next, entry) in index.readdir(dir, 0) {
            steps += 1;
            assert!(steps <= index.dirent_count(), "walk visits an entry twice");
            assert_eq!(index.lookup(dir, entry.name), Some(entry.ino));
            assert_eq!(index.kind(entry.ino), Some(entry.kind));
            assert!(index
                .readdir(dir, next)
                .next()
                .is_none_or(|(_, e)| e.name > entry.name));
            if entry.kind == FileKind::Directory {
                assert_eq!(index.parent(entry.ino), Some(dir));
                stack.push(entry.ino);
            }
        }
    }
});
