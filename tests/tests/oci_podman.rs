//! podman drives `strata oci` as its OCI runtime (`podman --runtime`):
//! run, run -d, exec, rm -f, on an image imported at test time from a
//! busybox rootfs. Needs root, podman and busybox-static.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn strata_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir of the test executable");
    let bin = dir.join("strata");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p launcher --bin strata`",
        bin.display()
    );
    bin
}

/// The imported image, removed on drop.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
    }
}

/// A podman container, force-removed on drop.
struct Ctr(PathBuf, String);

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = podman(&self.0, &["rm", "-f", "-t", "0", &self.1]);
    }
}

fn podman(runtime: &Path, args: &[&str]) -> Output {
    Command::new("podman")
        .arg("--runtime")
        .arg(runtime)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running podman (needs the podman package)")
}

fn ok(runtime: &Path, args: &[&str]) -> String {
    let out = podman(runtime, args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn podman_runs_execs_and_removes_with_strata_as_runtime() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("strata-runc");
    fs::write(
        &runtime,
        format!("#!/bin/sh\nexec {} oci \"$@\"\n", strata_bin().display()),
    )
    .unwrap();
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o755)).unwrap();

    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    launcher::busybox_image::build(&rootfs).expect("busybox rootfs (needs busybox-static)");
    let tag = format!(
        "localhost/strata-oci-test-{}-{}:latest",
        std::process::id(),
        rand::random::<u32>()
    );
    let tarball = tmp.path().join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    let imp = Command::new("podman")
        .arg("import")
        .arg(&tarball)
        .arg(&tag)
        .output()
        .expect("running podman (needs the podman package)");
    assert!(imp.status.success(), "podman import: {imp:?}");
    let _image = Image(tag.clone());
    // This machine's bounding set cannot raise podman's default rlimits.
    let base = [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--network",
        "none",
    ];

    let mut args = vec!["run", "--rm"];
    args.extend(base);
    args.extend([
        tag.as_str(),
        "sh",
        "-c",
        "echo pid1-is-$(cat /proc/1/comm) $(grep ^Seccomp: /proc/self/status | tr -d '\t')",
    ]);
    // podman's default seccomp profile (many actions) is in force: mode 2.
    assert_eq!(ok(&runtime, &args).trim(), "pid1-is-sh Seccomp:2");

    let name = format!("strata-oci-p{}", rand::random::<u32>());
    let mut args = vec!["run", "-d", "--name", name.as_str()];
    args.extend(base);
    args.extend([tag.as_str(), "sleep", "1000"]);
    ok(&runtime, &args);
    let guard = Ctr(runtime.clone(), name.clone());
    let seen = ok(&runtime, &["exec", &name, "cat", "/proc/1/comm"]);
    let removed = podman(&runtime, &["rm", "-f", "-t", "0", &name]);
    assert_eq!(seen.trim(), "sleep");
    assert!(
        removed.status.success(),
        "podman rm -f: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    drop(guard);
}
