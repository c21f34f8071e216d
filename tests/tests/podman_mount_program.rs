//! podman (Debian 4.3) with `unionfs` as the overlay driver's
//! `mount_program`, in place of fuse-overlayfs: load an OCI archive built
//! here from busybox-static, run a container that creates, changes and
//! deletes files, commit it, and run the committed image.
//!
//! Runs as root. Needs podman, runc, conmon, busybox-static, sha256sum and
//! `cargo build --workspace --bins` (for target/debug/unionfs). Everything
//! podman keeps (graph root, run root, tmp dir) lives in a temp dir that is
//! unmounted and removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn need(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("this test needs `{tool}`: install it (tests/setup does)");
}

/// `target/debug/unionfs`, next to this test's `deps/` directory.
fn unionfs_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("unionfs");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        bin.display()
    );
    bin
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new(need("sha256sum"))
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    text(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// An OCI archive (a tar of an OCI layout) named `name`, one busybox layer
/// with bin/sh, etc/greeting and etc/removeme.
fn oci_archive(dir: &Path, name: &str) -> PathBuf {
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir layout");
    let layer = dir.join("layer.tar");
    {
        let f = std::fs::File::create(&layer).expect("create layer");
        let mut tar = tar::Builder::new(f);
        for d in ["bin/", "etc/", "tmp/"] {
            let mut h = header();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(if d == "tmp/" { 0o1777 } else { 0o755 });
            h.set_size(0);
            tar.append_data(&mut h, d, std::io::empty()).expect("dir");
        }
        let busybox = std::fs::read(need("busybox")).expect("read busybox");
        let mut h = header();
        h.set_mode(0o755);
        h.set_size(busybox.len() as u64);
        tar.append_data(&mut h, "bin/busybox", busybox.as_slice())
            .expect("busybox");
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, "bin/sh", "busybox").expect("sh");
        for (path, body) in [
            ("etc/greeting", &b"hello\n"[..]),
            ("etc/removeme", &b"delete me\n"[..]),
        ] {
            let mut h = header();
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            tar.append_data(&mut h, path, body).expect("file");
        }
        tar.finish().expect("finish layer");
    }
    let blob = |path: &Path| -> (String, u64) {
        let hex = sha256_file(path);
        std::fs::copy(path, blobs.join(&hex)).expect("copy blob");
        (hex, std::fs::metadata(path).expect("stat").len())
    };
    let (layer_hex, layer_size) = blob(&layer);
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_hex}"]}}}}"#
        ),
    )
    .expect("config");
    let (config_hex, config_size) = blob(&config);
    let manifest = dir.join("manifest.json");
    std::fs::write(
        &manifest,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_hex}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_hex}","size":{layer_size}}}]}}"#
        ),
    )
    .expect("manifest");
    let (manifest_hex, manifest_size) = blob(&manifest);
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_hex}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"{name}"}}}}]}}"#
        ),
    )
    .expect("index.json");
    let archive = dir.join("image.tar");
    let f = std::fs::File::create(&archive).expect("create archive");
    let mut tar = tar::Builder::new(f);
    tar.append_dir_all(".", &layout).expect("archive layout");
    tar.finish().expect("finish archive");
    archive
}

/// podman confined to one temp dir, with unionfs as the mount program.
struct Podman {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Podman {
    fn new() -> Podman {
        need("podman");
        need("runc");
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n\
                 [storage.options.overlay]\nmount_program = \"{}\"\n",
                dir.path().join("graph").display(),
                dir.path().join("run").display(),
                unionfs_bin().display()
            ),
        )
        .expect("write storage.conf");
        Podman { dir, conf }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(need("podman"))
            .env("CONTAINERS_STORAGE_CONF", &self.conf)
            .args(["--cgroup-manager", "cgroupfs", "--runtime", "runc"])
            .args(["--events-backend", "file", "--tmpdir"])
            .arg(self.dir.path().join("tmp"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
        // Anything podman left mounted under our dir: deepest first.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

const LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

#[test]
fn podman_runs_and_commits_on_unionfs_mount_program() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test drives podman as root: run the suite as root"
    );
    let podman = Podman::new();
    let archive = oci_archive(podman.dir.path(), "localhost/strata-podman:v1");
    let loaded = podman.ok(&["load", "-i", &archive.to_string_lossy()]);
    assert!(loaded.contains("localhost/strata-podman:v1"), "{loaded}");

    let name = format!("strata-podman-{}", std::process::id());
    let mut args = vec![
        "run",
        "--name",
        &name,
        "--pull",
        "never",
        "--network",
        "none",
    ];
    args.extend(LIMITS);
    args.extend([
        "localhost/strata-podman:v1",
        "sh",
        "-c",
        "echo created > /new.txt && echo appended >> /etc/greeting && rm /etc/removeme \
         && mkdir -p /data/sub && echo deep > /data/sub/file && grep ' / / ' /proc/self/mountinfo",
    ]);
    let out = podman.ok(&args);
    // The container's root is the FUSE mount of the mount program, not
    // kernel overlayfs.
    let root_line = out.lines().next().unwrap_or_default();
    assert!(
        root_line.contains(" - fuse"),
        "root is not a FUSE mount: {out}"
    );

    podman.ok(&["commit", &name, "localhost/strata-podman:committed"]);

    let mut args = vec!["run", "--rm", "--pull", "never", "--network", "none"];
    args.extend(LIMITS);
    args.extend([
        "localhost/strata-podman:committed",
        "sh",
        "-c",
        "cat /new.txt /etc/greeting /data/sub/file; \
         if [ -e /etc/removeme ]; then echo removeme-still-there; else echo removeme-gone; fi",
    ]);
    let out = podman.ok(&args);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["created", "hello", "appended", "deep", "removeme-gone"],
        "committed image does not show the container's changes"
    );

    // The original image is unchanged.
    let mut args = vec!["run", "--rm", "--pull", "never", "--network", "none"];
    args.extend(LIMITS);
    args.extend([
        "localhost/strata-podman:v1",
        "sh",
        "-c",
        "cat /etc/greeting /etc/removeme; [ ! -e /new.txt ] && echo clean",
    ]);
    let out = podman.ok(&args);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["hello", "delete me", "clean"]
    );
}
