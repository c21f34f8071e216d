//! kill -9 during an import: the store still verifies, the partial image is
//! not listed, `gc` removes the leftovers, and the import then succeeds.
//! Also: two imports of the same archive at once both succeed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn strata_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("strata");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

fn strata(store: &Path, args: &[&str]) -> Output {
    Command::new(strata_bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run strata")
}

fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A tar of `files` files of 256 KiB of distinct content each.
fn big_tar(path: &Path, files: u32) {
    let f = std::fs::File::create(path).unwrap();
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    let mut data = vec![0u8; 256 * 1024];
    for i in 0..files {
        for (j, chunk) in data.chunks_mut(8).enumerate() {
            let v = (u64::from(i) << 32 | j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("d{}/f{i}", i % 16), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap();
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

#[test]
fn kill_9_mid_import_leaves_a_consistent_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let tar = tmp.path().join("big.tar");
    big_tar(&tar, 1200); // 300 MiB
    ok(strata(&store, &["store", "df"]), "create store");
    let mut child = Command::new(strata_bin())
        .arg("--store")
        .arg(&store)
        .args([
            "image",
            "import",
            tar.to_str().unwrap(),
            "--name",
            "partial",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the import is well under way (blobs being staged).
    let start = Instant::now();
    while count_files(&store.join("tmp")) < 50 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "import finished before it could be killed; make the tar bigger"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "import made no progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "import finished before it could be killed"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();

    assert!(
        ok(strata(&store, &["image", "ls", "-q"]), "ls")
            .trim()
            .is_empty(),
        "partial image listed"
    );
    let verify = ok(strata(&store, &["store", "verify"]), "verify after kill");
    assert!(verify.contains("0 problem(s)"), "{verify}");
    let df: serde_json::Value =
        serde_json::from_str(&ok(strata(&store, &["store", "df", "--json"]), "df")).unwrap();
    assert!(
        df["temp_bytes"].as_u64().unwrap() > 0,
        "leftovers expected: {df:#}"
    );
    let gc: serde_json::Value =
        serde_json::from_str(&ok(strata(&store, &["store", "gc", "--json"]), "gc")).unwrap();
    assert!(gc["temp_removed"].as_u64().unwrap() >= 50, "{gc:#}");
    assert_eq!(count_files(&store.join("tmp")), 0);
    assert_eq!(count_files(&store.join("layers")), 0);
    // The store works: the same import now completes.
    ok(
        strata(
            &store,
            &["image", "import", tar.to_str().unwrap(), "--name", "whole"],
        ),
        "import again",
    );
    let ls = ok(strata(&store, &["image", "ls"]), "ls");
    assert!(ls.contains("whole:latest"), "{ls}");
    ok(strata(&store, &["store", "verify"]), "verify");
}

#[test]
fn concurrent_imports_of_the_same_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let tar = tmp.path().join("small.tar");
    big_tar(&tar, 40);
    ok(strata(&store, &["store", "df"]), "create store");
    let spawn = |name: &str| {
        Command::new(strata_bin())
            .arg("--store")
            .arg(&store)
            .args(["image", "import", tar.to_str().unwrap(), "--name", name])
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("one"));
        let b = s.spawn(|| spawn("two"));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    ok(a, "import one");
    ok(b, "import two");
    let ls: serde_json::Value =
        serde_json::from_str(&ok(strata(&store, &["image", "ls", "--json"]), "ls")).unwrap();
    assert_eq!(
        ls.as_array().unwrap().len(),
        1,
        "same content, one image: {ls:#}"
    );
    assert_eq!(ls[0]["names"].as_array().unwrap().len(), 2);
    let df: serde_json::Value =
        serde_json::from_str(&ok(strata(&store, &["store", "df", "--json"]), "df")).unwrap();
    assert_eq!(df["blobs"], 40);
    ok(strata(&store, &["store", "verify"]), "verify");
}
