//! `strata oci` driven the way containerd drives runc: bundles made at
//! test time (busybox rootfs, config.json from `runc spec`, adjusted),
//! create → state → start → state → kill → delete, and runc's errors.
//! Needs root, busybox-static and runc (for `runc spec`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

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

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn unique(tag: &str) -> String {
    format!(
        "oci-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>() % 1_000_000
    )
}

/// A bundle plus a private state root; deletes the container on drop.
struct Bundle {
    dir: tempfile::TempDir,
    root: PathBuf,
    id: String,
}

impl Bundle {
    /// A busybox bundle whose process runs `args`; `edit` adjusts the
    /// config after the defaults of `runc spec`.
    fn new(tag: &str, args: &[&str], edit: impl FnOnce(&mut Value, &Path)) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("strata-oci-")
            .tempdir()
            .expect("temp dir");
        let rootfs = dir.path().join("rootfs");
        fs::create_dir(&rootfs).unwrap();
        launcher::busybox_image::build(&rootfs).expect("busybox rootfs (needs busybox-static)");
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .output()
            .expect("running `runc spec` (needs the runc package)");
        assert!(out.status.success(), "runc spec: {out:?}");
        let path = dir.path().join("config.json");
        let mut cfg: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        cfg["process"]["terminal"] = json!(false);
        cfg["process"]["args"] = json!(args);
        edit(&mut cfg, dir.path());
        fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        let root = dir.path().join("state");
        Bundle {
            dir,
            root,
            id: unique(tag),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(strata_bin());
        c.arg("oci").arg("--root").arg(&self.root).args(args);
        c
    }

    /// Run a command that does not leave a process behind.
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running strata oci")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata oci {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `create`: the container keeps our stdout, so nothing is piped.
    fn create(&self) {
        let err = self.dir.path().join("create.err");
        let status = self
            .cmd(&["create", "--bundle"])
            .arg(self.dir.path())
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err).unwrap())
            .status()
            .expect("running strata oci create");
        assert!(
            status.success(),
            "create failed: {}",
            fs::read_to_string(&err).unwrap_or_default()
        );
    }

    fn state(&self) -> Value {
        serde_json::from_str(&self.ok(&["state", &self.id])).expect("state is JSON")
    }

    fn status(&self) -> String {
        self.state()["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn wait_status(&self, want: &str) {
        let t0 = Instant::now();
        loop {
            let s = self.status();
            if s == want {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "container {} stayed {s}, wanted {want}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cgroup(&self, controller: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join("strata-oci")
            .join(&self.id)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.run(&["delete", "--force", &self.id]);
    }
}

fn wait_file(p: &Path) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = fs::read_to_string(p) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn create_start_state_delete_with_hostname_bind_mount_and_memory_limit() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_path_buf();
    let b = Bundle::new(
        "life",
        &["sh", "-c", "echo made-on-$(hostname) > /data/out"],
        |cfg, _| {
            cfg["hostname"] = json!("ocibox");
            cfg["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/data",
                "type": "bind",
                "source": data_path,
                "options": ["rbind", "rw"]
            }));
            cfg["linux"]["resources"]["memory"] = json!({"limit": 48 * 1024 * 1024});
        },
    );
    b.create();
    let st = b.state();
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], b.id.as_str());
    assert_eq!(
        st["ociVersion"].as_str().map(|v| v.starts_with("1.")),
        Some(true)
    );
    assert_eq!(st["bundle"].as_str(), b.dir.path().to_str());
    let pid = st["pid"].as_i64().expect("a created container has a pid");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} is gone"
    );
    // Nothing ran yet.
    assert!(!data.path().join("out").exists());
    let limit = fs::read_to_string(b.cgroup("memory").join("memory.limit_in_bytes"))
        .expect("the container's memory cgroup");
    assert_eq!(limit.trim(), (48 * 1024 * 1024).to_string());

    b.ok(&["start", &b.id]);
    assert_eq!(wait_file(&data.path().join("out")), "made-on-ocibox\n");
    b.wait_status("stopped");

    let again = b.run(&["start", &b.id]);
    assert!(
        !again.status.success(),
        "starting a stopped container must fail"
    );
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("stopped"), "{err}");

    b.ok(&["delete", &b.id]);
    assert!(!b.root.join(&b.id).exists(), "state dir left behind");
    assert!(!b.cgroup("memory").exists(), "cgroup left behind");
    let gone = b.run(&["state", &b.id]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains(&b.id),
        "the error names the id"
    );
}

#[test]
fn kill_a_long_running_container_then_errors_on_stopped() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let b = Bundle::new("kill", &["sleep", "1000"], |_, _| {});
    b.create();
    b.ok(&["start", &b.id]);
    b.wait_status("running");
    let pid = b.state()["pid"].as_i64().unwrap();
    let twice = b.run(&["start", &b.id]);
    assert!(!twice.status.success(), "start twice must fail");

    let ps = b.ok(&["ps", "--format", "json", &b.id]);
    let pids: Vec<i64> = serde_json::from_str(&ps).unwrap();
    assert_eq!(pids, vec![pid]);

    // sleep is pid 1 of its namespace: SIGTERM has no default action there.
    b.ok(&["kill", &b.id, "KILL"]);
    b.wait_status("stopped");
    let log = b.dir.path().join("log.json");
    let out = b
        .cmd(&["--log", log.to_str().unwrap(), "--log-format", "json"])
        .args(["kill", &b.id, "9"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "killing a stopped container must fail"
    );
    let line: Value = serde_json::from_str(fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("not running"),
        "{line}"
    );
    b.ok(&["delete", &b.id]);
}

#[test]
fn delete_running_needs_force() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let b = Bundle::new("force", &["sleep", "1000"], |_, _| {});
    b.create();
    b.ok(&["start", &b.id]);
    b.wait_status("running");
    let pid = b.state()["pid"].as_i64().unwrap();
    // exec joins the container: it sees the container's pid 1 and host name.
    let seen = b.ok(&[
        "exec",
        &b.id,
        "--",
        "sh",
        "-c",
        "echo $(hostname) $(cat /proc/1/comm)",
    ]);
    assert_eq!(
        seen.trim(),
        "runc sleep",
        "runc spec's hostname and the init"
    );
    let code = b
        .run(&["exec", &b.id, "--", "sh", "-c", "exit 3"])
        .status
        .code();
    assert_eq!(code, Some(3), "exec returns the process's exit code");
    let out = b.run(&["delete", &b.id]);
    assert!(
        !out.status.success(),
        "deleting a running container must fail"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"));
    assert_eq!(b.status(), "running");
    b.ok(&["delete", "--force", &b.id]);
    assert!(!b.root.join(&b.id).exists());
    assert!(!b.cgroup("memory").exists());
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "pid {pid} survived delete --force: {stat}"
    );
}

#[test]
fn features_and_unknown_ids() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(strata_bin())
        .args(["oci", "features"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["ociVersionMax"].as_str().unwrap().starts_with("1."));
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("pid")));
    for cmd in ["state", "start", "kill", "delete"] {
        let out = Command::new(strata_bin())
            .arg("oci")
            .arg("--root")
            .arg(root.path())
            .args([cmd, "no-such-box"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd} of an unknown id must fail");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no-such-box"),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn pause_and_resume_freeze_the_container() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let b = Bundle::new("pause", &["sleep", "1000"], |_, _| {});
    b.create();
    b.ok(&["start", &b.id]);
    b.wait_status("running");
    b.ok(&["pause", &b.id]);
    assert_eq!(b.status(), "paused");
    let frozen = fs::read_to_string(b.cgroup("freezer").join("freezer.state")).unwrap();
    assert_eq!(frozen.trim(), "FROZEN");
    b.ok(&["resume", &b.id]);
    assert_eq!(b.status(), "running");
    b.ok(&["delete", "--force", &b.id]);
}

#[test]
fn hooks_get_the_state_on_stdin() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_path_buf();
    let hook = |name: &str| {
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}/{name}.json", o.display())]
        })
    };
    let hooks = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")]
    });
    let b = Bundle::new("hooks", &["sleep", "1000"], |cfg, _| {
        cfg["hooks"] = hooks;
    });
    let read = |name: &str| -> Value {
        let p = out.path().join(format!("{name}.json"));
        serde_json::from_str(&fs::read_to_string(&p).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{name} hook wrote no state to {}: {e}", p.display()))
    };
    b.create();
    for name in ["prestart", "createRuntime"] {
        let st = read(name);
        assert_eq!(st["id"], b.id.as_str(), "{name}: {st}");
        assert_eq!(st["status"], "created", "{name}: {st}");
        assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{name}: {st}");
    }
    assert!(!out.path().join("poststart.json").exists());
    b.ok(&["start", &b.id]);
    assert_eq!(read("poststart")["status"], "running");
    b.ok(&["delete", "--force", &b.id]);
    let st = read("poststop");
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["id"], b.id.as_str());
}

#[test]
fn seccomp_profile_with_several_actions_and_additional_gids_apply() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_path_buf();
    // Each probe records its exit status; busybox prints the errno text.
    let script = "mkdir /tmp/m 2>/data/mkdir.err; echo mkdir=$? >> /data/out; \
                  chmod 600 /etc/passwd 2>/data/chmod.err; echo chmod=$? >> /data/out; \
                  echo groups=$(id -G) >> /data/out; echo done >> /data/out";
    let b = Bundle::new("seccomp", &["sh", "-c", script], |cfg, _| {
        cfg["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data",
            "type": "bind",
            "source": data_path,
            "options": ["rbind", "rw"]
        }));
        cfg["process"]["user"]["additionalGids"] = json!([4242, 4343]);
        // Default allow, and two different non-default actions: both
        // must apply to their own syscalls only.
        cfg["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO"}
            ]
        });
    });
    b.create();
    b.ok(&["start", &b.id]);
    let out = wait_file_with(&data.path().join("out"), "done\n");
    b.wait_status("stopped");
    assert!(out.contains("mkdir=1"), "{out}");
    assert!(out.contains("chmod=1"), "{out}");
    let mkdir_err = fs::read_to_string(data.path().join("mkdir.err")).unwrap();
    assert!(mkdir_err.contains("Permission denied"), "{mkdir_err}");
    let chmod_err = fs::read_to_string(data.path().join("chmod.err")).unwrap();
    assert!(chmod_err.contains("Operation not permitted"), "{chmod_err}");
    let groups = out
        .lines()
        .find_map(|l| l.strip_prefix("groups="))
        .unwrap_or_default();
    for g in ["4242", "4343"] {
        assert!(
            groups.split(' ').any(|x| x == g),
            "groups {groups:?} lack {g}"
        );
    }
}

/// Waits until `p` ends with `tail`.
fn wait_file_with(p: &Path, tail: &str) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = fs::read_to_string(p) {
            if s.ends_with(tail) {
                return s;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} never ended with {tail:?}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
