//! The union's own hot paths, without a kernel mount (unionfs::probe): the
//! merge of a 10,000-entry directory spread over three lower layers (with
//! whiteouts and a shadowed copy of every tenth name), the listing cache,
//! and name resolution through the inode table (fresh lookups and hits).

use std::fs::File;
use std::hint::black_box;
use std::path::Path;

use criterion::Criterion;
use unionfs::probe::Probe;
use unionfs::{LowerSpec, MountConfig};

#[allow(dead_code)]
mod common;

/// Three lower dirs: `big/` holds a third of the 10,000 names in each;
/// every tenth name also sits in the layer above (shadowed) and every
/// hundredth has a whiteout in the top layer. `deep/a/b/c/d/e/f` is in the
/// bottom layer.
fn layered(root: &Path) -> Vec<LowerSpec> {
    let n = common::BIG_DIR_ENTRIES;
    let mut lowers = Vec::new();
    for l in 0..3usize {
        let dir = root.join(format!("l{l}"));
        let big = dir.join("big");
        std::fs::create_dir_all(&big).expect("mkdir");
        for i in (0..n).filter(|i| i % 3 == l || (i % 10 == 0 && l == 0)) {
            let name = String::from_utf8_lossy(&common::big_name(i)).into_owned();
            File::create(big.join(name)).expect("create");
        }
        if l == 0 {
            for i in (0..n).step_by(100) {
                let name = String::from_utf8_lossy(&common::big_name(i + 1)).into_owned();
                File::create(big.join(format!(".wh.{name}"))).expect("whiteout");
            }
        }
        if l == 2 {
            std::fs::create_dir_all(dir.join("deep/a/b/c/d/e")).expect("mkdir");
            File::create(dir.join("deep/a/b/c/d/e/f")).expect("create");
        }
        lowers.push(LowerSpec::Dir(dir));
    }
    lowers
}

fn bench_union(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = MountConfig {
        lowers: layered(dir.path()),
        ..MountConfig::default()
    };
    let probe = Probe::open(&cfg).expect("open the union");
    let listed = probe.list_uncached(b"big").expect("big is a directory");
    assert!(listed > 9_000, "merged listing has {listed} entries");
    let names: Vec<Vec<u8>> = (0..1024)
        .map(|i| {
            let mut p = b"big/".to_vec();
            p.extend(common::big_name(i * 7919 % common::BIG_DIR_ENTRIES));
            p
        })
        .collect();
    let mut group = c.benchmark_group("union");
    group.bench_function("merge_10k_dir_3_layers", |b| {
        b.iter(|| probe.list_uncached(black_box(b"big")).expect("listing"))
    });
    group.bench_function("list_10k_dir_cached", |b| {
        b.iter(|| probe.list(black_box(b"big")).expect("listing"))
    });
    // The first pass fills the inode table; later ones are table hits
    // plus a lower lookup per name (lookups are not cached by the union:
    // the kernel's dentry cache does that).
    let mut next = 0usize;
    group.bench_function("resolve_name_in_10k_dir", |b| {
        b.iter(|| {
            next = (next + 1) % names.len();
            probe.resolve(black_box(&names[next]))
        })
    });
    group.bench_function("resolve_depth7_path", |b| {
        b.iter(|| {
            probe
                .resolve(black_box(b"deep/a/b/c/d/e/f"))
                .expect("present")
        })
    });
    group.finish();
    eprintln!("inode table: {} nodes", probe.nodes());
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_union(&mut c);
    c.final_summary();
}
