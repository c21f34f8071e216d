//! `strata image` / `strata store` end to end: images built at test time by
//! umoci and skopeo from busybox-static, dedup in `store df`, `store verify`
//! on a damaged blob, hostile input through the CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/debug/strata`, next to this test's `deps/` directory.
fn strata_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("strata");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        bin.display()
    );
    bin
}

fn need(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("this test needs `{tool}`: install it (tests/setup does: apt-get install busybox-static umoci skopeo)");
}

fn strata(store: &Path, args: &[&str]) -> Output {
    Command::new(strata_bin())
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("STRATA_STORE")
        .output()
        .expect("run strata")
}

fn ok(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An OCI layout `dir/oci` with image `bb`: layer 1 has busybox and a file
/// `etc/motd`; layer 2 deletes `etc/motd` (umoci writes a whiteout) and adds
/// `etc/hostname`.
fn umoci_layout(dir: &Path) -> PathBuf {
    let umoci = need("umoci");
    let busybox = need("busybox");
    let layout = dir.join("oci");
    let bundle = dir.join("bundle");
    run(Command::new(&umoci).args(["init", "--layout"]).arg(&layout));
    run(Command::new(&umoci)
        .arg("new")
        .arg("--image")
        .arg(format!("{}:bb", layout.display())));
    let image = format!("{}:bb", layout.display());
    run(Command::new(&umoci)
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::fs::write(rootfs.join("etc/motd"), "welcome to the first layer\n").unwrap();
    run(Command::new(&umoci)
        .args(["repack", "--refresh-bundle", "--image", &image])
        .arg(&bundle));
    std::fs::remove_file(rootfs.join("etc/motd")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), "strata\n").unwrap();
    run(Command::new(&umoci)
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new(&umoci).args([
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/bin/sh",
        "--config.env",
        "GREETING=hello",
        "--config.exposedports",
        "8080/tcp",
        "--config.workingdir",
        "/etc",
    ]));
    layout
}

#[test]
fn images_from_umoci_and_skopeo_import_alike() {
    let skopeo = need("skopeo");
    let tmp = tempfile::tempdir().unwrap();
    let layout = umoci_layout(tmp.path());
    let docker_tar = tmp.path().join("bb-docker.tar");
    let oci_tar = tmp.path().join("bb-oci.tar");
    run(Command::new(&skopeo)
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:bb", layout.display()))
        .arg(format!(
            "docker-archive:{}:busybox:latest",
            docker_tar.display()
        )));
    run(Command::new(&skopeo)
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:bb", layout.display()))
        .arg(format!("oci-archive:{}:bb", oci_tar.display())));
    let store = tmp.path().join("store");

    ok(
        strata(
            &store,
            &[
                "image",
                "import",
                layout.to_str().unwrap(),
                "--name",
                "from-layout:1",
            ],
        ),
        "import layout",
    );
    ok(
        strata(&store, &["image", "import", docker_tar.to_str().unwrap()]),
        "import docker-archive",
    );
    ok(
        strata(
            &store,
            &[
                "image",
                "import",
                oci_tar.to_str().unwrap(),
                "-t",
                "from-oci-archive",
            ],
        ),
        "import oci-archive",
    );

    let ls: serde_json::Value =
        serde_json::from_str(&ok(strata(&store, &["image", "ls", "--json"]), "ls")).unwrap();
    let images = ls.as_array().unwrap();
    // The same image three ways: same layers, same config, one image id.
    assert_eq!(images.len(), 1, "{ls:#}");
    let names: Vec<&str> = images[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["busybox:latest", "from-layout:1", "from-oci-archive:latest"]
    );
    assert_eq!(images[0]["layers"].as_array().unwrap().len(), 2);

    let inspect: serde_json::Value = serde_json::from_str(&ok(
        strata(&store, &["image", "inspect", "busybox", "--json"]),
        "inspect",
    ))
    .unwrap();
    assert_eq!(inspect["config"]["cmd"][0], "/bin/sh");
    assert_eq!(inspect["config"]["working_dir"], "/etc");
    assert_eq!(inspect["config"]["exposed_ports"][0], "8080/tcp");
    assert!(inspect["config"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hello"));
    assert_eq!(inspect["diff_ids"].as_array().unwrap().len(), 2);

    // The merged tree: the whiteout from layer 2 hides etc/motd.
    let tree = ok(strata(&store, &["image", "tree", "busybox"]), "tree");
    assert!(tree.contains("/bin/busybox"), "{tree}");
    assert!(tree.contains("/bin/sh -> busybox"), "{tree}");
    assert!(tree.contains("/etc/hostname"), "{tree}");
    assert!(!tree.contains("motd"), "whiteout ignored:\n{tree}");

    // Layers were shared: one busybox blob, and a verify that passes.
    let df: serde_json::Value =
        serde_json::from_str(&ok(strata(&store, &["store", "df", "--json"]), "df")).unwrap();
    assert_eq!(df["layers"], 2, "{df:#}");
    let verify = ok(strata(&store, &["store", "verify"]), "verify");
    assert!(verify.contains("0 problem(s)"), "{verify}");
}

/// A directory with busybox and `extra` more bytes of unique content.
fn rootfs(dir: &Path, extra: &str) -> PathBuf {
    let busybox = need("busybox");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    std::fs::write(dir.join("extra"), extra.repeat(1000)).unwrap();
    dir.to_path_buf()
}

#[test]
fn dedup_shows_in_df_and_damage_in_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = rootfs(&tmp.path().join("a"), "a");
    let b = rootfs(&tmp.path().join("b"), "b");
    ok(
        strata(
            &store,
            &["image", "import", a.to_str().unwrap(), "--name", "a"],
        ),
        "import a",
    );
    ok(
        strata(
            &store,
            &["image", "import", b.to_str().unwrap(), "--name", "b"],
        ),
        "import b",
    );
    // The same directory as a gzip tar is a third image sharing the blobs.
    let tgz = tmp.path().join("a.tgz");
    run(Command::new("tar")
        .arg("-C")
        .arg(&a)
        .arg("-czf")
        .arg(&tgz)
        .arg("."));
    ok(
        strata(
            &store,
            &["image", "import", tgz.to_str().unwrap(), "--name", "a-tgz"],
        ),
        "import a.tgz",
    );
    let df: serde_json::Value =
        serde_json::from_str(&ok(strata(&store, &["store", "df", "--json"]), "df")).unwrap();
    let busybox_len = std::fs::metadata(need("busybox")).unwrap().len();
    assert_eq!(df["images"], 3, "{df:#}");
    assert_eq!(
        df["blobs"], 3,
        "busybox stored once, plus two extras: {df:#}"
    );
    assert!(
        df["blob_bytes"].as_u64().unwrap() < busybox_len + 10_000,
        "{df:#}"
    );
    assert!(
        df["logical_bytes"].as_u64().unwrap() > 3 * busybox_len,
        "{df:#}"
    );
    assert!(df["dedup_ratio"].as_f64().unwrap() > 2.5, "{df:#}");
    let human = ok(strata(&store, &["store", "df"]), "df");
    assert!(human.contains("dedup ratio"), "{human}");

    // Flip one byte of the busybox blob: verify names it and exits 1.
    let blobs: Vec<PathBuf> = walk_files(&store.join("blobs"));
    let victim = blobs
        .iter()
        .find(|p| std::fs::metadata(p).unwrap().len() == busybox_len)
        .expect("busybox blob")
        .clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[busybox_len as usize / 2] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let out = strata(&store, &["store", "verify"]);
    assert_eq!(out.status.code(), Some(1), "verify must fail");
    let text = String::from_utf8_lossy(&out.stdout);
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(name),
        "verify output must name the blob {name}:\n{text}"
    );
    assert!(text.contains("1 problem(s)"), "{text}");

    // rm + gc: removing two of three images frees nothing busybox needs.
    ok(strata(&store, &["image", "rm", "b", "a-tgz"]), "rm");
    let gc = ok(strata(&store, &["store", "gc", "--json"]), "gc");
    let gc: serde_json::Value = serde_json::from_str(&gc).unwrap();
    assert_eq!(gc["images_kept"], 1, "{gc:#}");
    assert_eq!(gc["layers_removed"], 2, "{gc:#}");
    assert_eq!(gc["blobs_removed"], 1, "only b's extra goes: {gc:#}");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn hostile_tar_is_refused_by_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // A tar whose second entry climbs out with `..`.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(4);
    h.set_mode(0o644);
    h.as_old_mut().name[..11].copy_from_slice(b"../../evil0");
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    let path = tmp.path().join("evil.tar");
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();
    let out = strata(
        &store,
        &["image", "import", path.to_str().unwrap(), "--name", "evil"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'..'") && err.contains("evil.tar"), "{err}");
    assert!(!tmp.path().join("evil0").exists());
    assert!(ok(strata(&store, &["image", "ls", "-q"]), "ls")
        .trim()
        .is_empty());
    ok(strata(&store, &["store", "verify"]), "verify");
    // A missing image is a clear error, not a panic.
    let out = strata(&store, &["image", "inspect", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
