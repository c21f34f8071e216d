//! Quick speed numbers for the layer store (not a test; the criterion
//! benches live in `benches/`): index open and lookup, index bytes per
//! entry, and tar import throughput next to `tar -x` and `tar -x` + `b3sum`.
//!
//! `cargo run --release -p layers-format --example store_speed -- [MiB] [files]`

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use layers_format::index::{FileData, Index, IndexBuilder, Meta};
use layers_format::{BlobId, Compression, Store};

fn index_numbers(dir: &Path) {
    // 30,000 entries: a 10,000-entry directory plus 200 directories of 100.
    let mut b = IndexBuilder::new();
    let root = b.root();
    let big = b.insert_dir(root, b"big", Meta::default()).unwrap();
    for i in 0..10_000u32 {
        let data = FileData::Blob(BlobId(*blake3::hash(&i.to_le_bytes()).as_bytes()));
        b.insert_file(
            big,
            format!("file-{i:06}.so").as_bytes(),
            Meta::default(),
            4096,
            data,
        )
        .unwrap();
    }
    for d in 0..200 {
        let dir = b
            .insert_dir(root, format!("dir{d}").as_bytes(), Meta::default())
            .unwrap();
        for i in 0..99 {
            b.insert_file(
                dir,
                format!("entry-{i}.txt").as_bytes(),
                Meta::default(),
                10,
                FileData::Inline(b"0123456789".to_vec()),
            )
            .unwrap();
        }
    }
    let bytes = b.build().unwrap();
    let path = dir.join("bench.idx");
    std::fs::write(&path, &bytes).unwrap();
    let idx = Index::open(&path).unwrap();
    let entries = idx.dirent_count();
    println!(
        "index: {entries} entries, {} bytes, {:.1} bytes/entry",
        bytes.len(),
        bytes.len() as f64 / entries as f64
    );
    for (label, verify) in [
        ("open (structure + checksum)", true),
        ("open_unverified (structure)", false),
    ] {
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            let i = if verify {
                Index::open(&path)
            } else {
                Index::open_unverified(&path)
            };
            std::hint::black_box(i.unwrap());
        }
        println!(
            "{label}: {:.3} ms",
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    }
    let big = idx.lookup(1, b"big").unwrap();
    let names: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| format!("file-{i:06}.so").into_bytes())
        .collect();
    let n = 2_000_000;
    let t = Instant::now();
    let mut found = 0u64;
    for k in 0..n {
        let name = &names[(k * 7919) % names.len()];
        found += std::hint::black_box(idx.lookup(big, name)).map_or(0, |_| 1);
    }
    assert_eq!(found, n as u64);
    println!(
        "lookup in a 10,000-entry dir: {:.0} ns",
        t.elapsed().as_secs_f64() * 1e9 / n as f64
    );
}

fn import_numbers(dir: &Path, mib: u64, files: u64) {
    let tar_path = dir.join("tree.tar");
    {
        let f = std::fs::File::create(&tar_path).unwrap();
        let mut b = tar::Builder::new(std::io::BufWriter::new(f));
        let per = mib * 1024 * 1024 / files;
        let mut data = vec![0u8; per as usize];
        for i in 0..files {
            for (j, c) in data.chunks_mut(8).enumerate() {
                let v = ((i << 32) | j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                c.copy_from_slice(&v.to_le_bytes()[..c.len()]);
            }
            let mut h = tar::Header::new_gnu();
            h.set_size(per);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, format!("d{}/e{}/f{i}", i % 64, i % 7), &data[..])
                .unwrap();
        }
        b.into_inner().unwrap();
    }
    let size = std::fs::metadata(&tar_path).unwrap().len() as f64 / 1e6;
    // Warm the page cache for all contenders alike.
    std::fs::read(&tar_path).unwrap();
    let store = Store::open(&dir.join("store")).unwrap();
    let t = Instant::now();
    store
        .import_layer_tar(std::fs::File::open(&tar_path).unwrap(), Compression::None)
        .unwrap();
    let ours = t.elapsed().as_secs_f64();
    let out = dir.join("x");
    std::fs::create_dir_all(&out).unwrap();
    let t = Instant::now();
    let ok = Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    Command::new("sync").status().unwrap();
    let tar_x = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let b3 = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find {} -type f -print0 | xargs -0 b3sum > /dev/null",
            out.display()
        ))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let b3_time = t.elapsed().as_secs_f64();
    println!(
        "import {size:.0} MB / {files} files: strata {:.0} MB/s ({ours:.2} s, includes syncfs)",
        size / ours
    );
    println!("tar -x + sync: {:.0} MB/s ({tar_x:.2} s)", size / tar_x);
    if b3 {
        println!(
            "tar -x + sync + b3sum: {:.0} MB/s ({:.2} s)",
            size / (tar_x + b3_time),
            tar_x + b3_time
        );
    } else {
        println!("b3sum not installed: apt-get install b3sum");
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(1024);
    let files = args.get(1).copied().unwrap_or(30_000);
    let dir =
        tempfile::tempdir_in(std::env::var("STRATA_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
            .unwrap();
    index_numbers(dir.path());
    import_numbers(dir.path(), mib, files);
}
