//! unionfs lower-layer hot paths through its public API: lookup and listing
//! of a 10,000-entry directory in a store layer and in a plain directory
//! layer, and the whiteout checks done on every upper lookup and listing.

use std::fs::File;
use std::hint::black_box;
use std::os::fd::AsFd;
use std::sync::Arc;

use criterion::Criterion;
use layers_format::Store;
use unionfs::{DirLayer, Layer, StoreLayer};

#[allow(dead_code)]
mod common;

fn bench_store_layer(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(Store::open(dir.path()).expect("new store"));
    let id = store
        .add_layer_index(&common::dataset_index())
        .expect("index without blobs is accepted");
    let layer = StoreLayer::open(store, &id.to_hex()).expect("layer just added");
    let mut node = layer.root();
    for part in common::BIG_DIR.split(|c| *c == b'/') {
        node = layer
            .lookup(node, part)
            .expect("lookup")
            .expect("present")
            .0;
    }
    let big = node;
    let names: Vec<Vec<u8>> = (0..1024)
        .map(|i| common::big_name(i * 7919 % common::BIG_DIR_ENTRIES))
        .collect();
    let mut next = 0usize;
    let mut group = c.benchmark_group("store_layer");
    group.bench_function("lookup_10k_dir", |b| {
        b.iter(|| {
            next = (next + 1) % names.len();
            layer.lookup(big, black_box(&names[next])).expect("lookup")
        })
    });
    group.bench_function("read_dir_10k", |b| {
        b.iter(|| layer.read_dir(big).expect("listing").len())
    });
    group.finish();
}

fn bench_dir_layer(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("big");
    std::fs::create_dir(&big).expect("mkdir");
    for i in 0..common::BIG_DIR_ENTRIES {
        File::create(big.join(String::from_utf8_lossy(&common::big_name(i)).as_ref()))
            .expect("create");
    }
    let layer = DirLayer::open(dir.path()).expect("open dir layer");
    let node = layer
        .lookup(layer.root(), b"big")
        .expect("lookup")
        .expect("present")
        .0;
    let names: Vec<Vec<u8>> = (0..1024)
        .map(|i| common::big_name(i * 7919 % common::BIG_DIR_ENTRIES))
        .collect();
    let mut next = 0usize;
    let mut group = c.benchmark_group("dir_layer");
    group.bench_function("lookup_10k_dir", |b| {
        b.iter(|| {
            next = (next + 1) % names.len();
            layer.lookup(node, black_box(&names[next])).expect("lookup")
        })
    });
    group.bench_function("read_dir_10k", |b| {
        b.iter(|| layer.read_dir(node).expect("listing").len())
    });
    group.finish();
}

fn bench_whiteouts(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let upper = dir.path();
    std::fs::write(upper.join("present"), b"data").expect("write");
    std::fs::write(upper.join(".wh.gone"), b"").expect("write");
    for i in 0..1000 {
        std::fs::write(upper.join(format!("f{i}")), b"").expect("write");
        if i % 10 == 0 {
            std::fs::write(upper.join(format!(".wh.w{i}")), b"").expect("write");
        }
    }
    let handle = File::open(upper).expect("open upper");
    let fd = handle.as_fd();
    let mut group = c.benchmark_group("whiteout");
    group.bench_function("classify_present", |b| {
        b.iter(|| unionfs::whiteout::classify_at(fd, black_box(b"present")).expect("classify"))
    });
    group.bench_function("classify_aufs_whiteout", |b| {
        b.iter(|| unionfs::whiteout::classify_at(fd, black_box(b"gone")).expect("classify"))
    });
    group.bench_function("classify_missing", |b| {
        b.iter(|| unionfs::whiteout::classify_at(fd, black_box(b"absent")).expect("classify"))
    });
    group.bench_function("dir_is_opaque", |b| {
        b.iter(|| unionfs::whiteout::dir_is_opaque(black_box(fd)))
    });
    group.bench_function("read_dir_classified_1100", |b| {
        b.iter(|| {
            unionfs::whiteout::read_dir_classified(fd)
                .expect("listing")
                .len()
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_store_layer(&mut c);
    bench_dir_layer(&mut c);
    bench_whiteouts(&mut c);
    c.final_summary();
}
