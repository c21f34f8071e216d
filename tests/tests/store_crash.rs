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

/// Every blob file under `store/blobs`.
fn blob_count(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| count_files(&d.path()))
        .sum()
}

#[test]
fn kill_9_during_gc_at_many_points_keeps_the_store_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let garbage = tmp.path().join("garbage.tar");
    let kept = tmp.path().join("kept.tar");
    big_tar(&garbage, 600); // 150 MiB of distinct blobs to collect
    ok(
        strata(
            &store,
            &[
                "image",
                "import",
                garbage.to_str().unwrap(),
                "--name",
                "garbage",
            ],
        ),
        "import garbage",
    );
    // A second image sharing nothing with the first must survive intact.
    let f = std::fs::File::create(&kept).unwrap();
    let mut b = tar::Builder::new(f);
    let body = b"kept\n".repeat(40_000);
    let mut h = tar::Header::new_gnu();
    h.set_size(body.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "kept/file", &body[..]).unwrap();
    b.into_inner().unwrap();
    ok(
        strata(
            &store,
            &["image", "import", kept.to_str().unwrap(), "--name", "kept"],
        ),
        "import kept",
    );
    let before = blob_count(&store);
    ok(strata(&store, &["image", "rm", "garbage"]), "image rm");

    // Kill gc after 0, 1, 2... ms until one run completes on its own.
    let mut kills = 0;
    let mut mid_way = 0;
    let mut delay = 0u64;
    loop {
        let counted = blob_count(&store);
        let mut child = Command::new(strata_bin())
            .arg("--store")
            .arg(&store)
            .args(["store", "gc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let status = child.wait().unwrap();
        if status.success() {
            break; // it finished between the check and the kill
        }
        kills += 1;
        let now = blob_count(&store);
        if now < counted && now > 1 {
            mid_way += 1;
        }
        // After every kill: what is left is consistent and the kept image whole.
        let verify = ok(strata(&store, &["store", "verify"]), "verify after kill");
        assert!(verify.contains("0 problem(s)"), "{verify}");
        let ls = ok(strata(&store, &["image", "ls"]), "ls");
        assert!(ls.contains("kept:latest"), "{ls}");
        assert!(!ls.contains("garbage"), "{ls}");
        delay += 1 + delay / 2;
        assert!(kills < 200, "gc never completed");
    }
    eprintln!("gc killed {kills} times, {mid_way} of them mid-way through the blobs");
    assert!(
        mid_way > 0,
        "no kill landed while gc was deleting ({kills} kills): make the garbage bigger"
    );
    ok(strata(&store, &["store", "gc"]), "final gc");
    let after = blob_count(&store);
    assert!(
        after < before && after <= 2,
        "blobs left: {after} of {before}"
    );
    let verify = ok(strata(&store, &["store", "verify"]), "verify");
    assert!(verify.contains("0 problem(s)"), "{verify}");
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
