//! Layer index hot paths (layers-format): opening a 30,000-entry index,
//! name lookup in a 10,000-entry directory, path resolution and listing.

use std::hint::black_box;

use criterion::Criterion;
use layers_format::Index;

#[allow(dead_code)]
mod common;

fn bench_index(c: &mut Criterion) {
    let bytes = common::dataset_index();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("layer.idx");
    std::fs::write(&path, &bytes).expect("write index");

    let mut group = c.benchmark_group("index");
    group.bench_function("build_30k", |b| b.iter(common::dataset_index));
    group.bench_function("open_30k_verified", |b| {
        b.iter(|| Index::open(black_box(&path)).expect("valid index"))
    });
    group.bench_function("open_30k_unverified", |b| {
        b.iter(|| Index::open_unverified(black_box(&path)).expect("valid index"))
    });

    let index = Index::open(&path).expect("valid index");
    let big = index.lookup_path(common::BIG_DIR).expect("big dir exists");
    let names: Vec<Vec<u8>> = (0..1024)
        .map(|i| common::big_name(i * 7919 % common::BIG_DIR_ENTRIES))
        .collect();
    let mut next = 0usize;
    group.bench_function("lookup_hit_10k_dir", |b| {
        b.iter(|| {
            next = (next + 1) % names.len();
            index.lookup(big, black_box(&names[next])).expect("present")
        })
    });
    group.bench_function("lookup_miss_10k_dir", |b| {
        b.iter(|| index.lookup(big, black_box(b"entry99999x")))
    });
    group.bench_function("lookup_path_depth5", |b| {
        b.iter(|| {
            index
                .lookup_path(black_box(b"usr/lib/pkg137/sub/mod51.py"))
                .expect("present")
        })
    });
    group.bench_function("attr", |b| {
        b.iter(|| index.attr(black_box(big)).expect("present"))
    });
    group.bench_function("readdir_10k_dir", |b| {
        // Touch every name so the listing cannot be optimised into a length.
        b.iter(|| {
            index
                .readdir(big, 0)
                .map(|(_, entry)| black_box(entry.name).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_index(&mut c);
    c.final_summary();
}
