//! Shared helpers for the launcher tests (included with `#[path]`; as its
//! own test target it has no tests).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `strata` binary next to this test executable.
pub fn strata_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps layout");
    let bin = dir.join("strata");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p launcher --bin strata` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

/// A private store and state dir with the busybox image imported.
pub struct Env {
    /// The temporary directory holding both (removed on drop).
    pub dir: tempfile::TempDir,
    /// The store (`--store`).
    pub store: PathBuf,
    /// The state directory (`--state`).
    pub state: PathBuf,
}

impl Default for Env {
    fn default() -> Env {
        Env::new()
    }
}

impl Env {
    /// A fresh store with busybox:latest, used from a private network
    /// namespace.
    pub fn new() -> Env {
        private_netns();
        let dir = tempfile::Builder::new()
            .prefix("strata-lt-")
            .tempdir()
            .expect("temp dir");
        let store = dir.path().join("store");
        let state = dir.path().join("state");
        launcher::busybox_image::import(&store, "busybox:latest")
            .expect("importing busybox (needs the busybox-static package)");
        Env { dir, store, state }
    }

    /// A `strata` command on this store and state dir.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(strata_bin());
        c.arg("--store")
            .arg(&self.store)
            .arg("--state")
            .arg(&self.state)
            .args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Run `strata ARGS` and return its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running strata")
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "strata {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run and return the exit code (-1 when killed by a signal).
    pub fn code(&self, args: &[&str]) -> i32 {
        self.run(args).status.code().unwrap_or(-1)
    }

    /// `strata inspect NAME`, the first element.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.ok(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
        v[0].clone()
    }

    /// The container's directory in the store (upper, work, image-id).
    pub fn container_dir(&self, name: &str) -> PathBuf {
        let id = self.inspect(name)["Id"].as_str().expect("Id").to_string();
        self.store.join("containers").join(id)
    }

    /// Wait (up to 20 s) until `f` holds.
    pub fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..400 {
            if f() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let ids = self.run(&["ps", "-aq", "--no-trunc"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.run(&["rm", "-f", "-v", id]);
        }
    }
}

/// A unique container name for this process and test.
pub fn name(tag: &str) -> String {
    format!("lt-{tag}-{}", std::process::id())
}

/// Mount points under `dir` still present in our mount table.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.to_string_lossy().into_owned();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&d))
        .map(String::from)
        .collect()
}

/// Move the calling test thread into a network namespace of its own, so that
/// every `strata` process the test starts (and any bridge, veth or nft rule a
/// container on the default network makes) stays out of the host's
/// networking. Namespaces are per thread, and each test runs on its own
/// thread; the namespace goes away with the last process in it.
fn private_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET) for the test thread (needs root)");
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("running ip (package iproute2)");
    assert!(up.success(), "ip link set lo up failed in the test netns");
}
