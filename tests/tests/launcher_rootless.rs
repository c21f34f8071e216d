//! Rootless containers for real: the `strata` binary run as the ordinary
//! user `stratatest` (made by tests/setup, with ranges in /etc/subuid and
//! /etc/subgid), its union rootfs mounted through fusermount3 (needs
//! /dev/fuse mode 0666 and `user_allow_other` in /etc/fuse.conf, as
//! tests/setup makes them), the container in a user namespace of its own.

#[path = "launcher_support.rs"]
mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use support::{mounts_under, strata_bin};

const IMG: &str = "busybox:latest";

/// uid and gid of the test user.
fn test_user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .arg(flag)
            .arg("stratatest")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    let uid = id("-u").expect("the test user stratatest is missing: run tests/setup as root");
    let gid = id("-g").expect("the test user stratatest has no group: run tests/setup");
    (uid, gid)
}

fn check_machine() {
    assert!(
        Path::new("/usr/bin/fusermount3").exists() || Path::new("/bin/fusermount3").exists(),
        "fusermount3 is missing: install the fuse3 package (tests/setup does)"
    );
    let fuse = fs::metadata("/dev/fuse").expect("/dev/fuse is missing: load the fuse module");
    assert_eq!(
        fuse.mode() & 0o006,
        0o006,
        "/dev/fuse is not open to ordinary users: chmod 666 /dev/fuse (tests/setup does)"
    );
    let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    assert!(
        conf.lines().any(|l| l.trim() == "user_allow_other"),
        "/etc/fuse.conf lacks user_allow_other (tests/setup adds it)"
    );
}

/// The first /etc/subuid-style range of `name` (start, count).
fn sub_range(file: &str, name: &str) -> Option<(u32, u32)> {
    fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() != 3 || f[0] != name {
            return None;
        }
        Some((f[1].parse().ok()?, f[2].parse().ok()?))
    })
}

fn have_uidmap_helpers() -> bool {
    ["/usr/bin/newuidmap", "/usr/bin/newgidmap"]
        .iter()
        .all(|p| Path::new(p).exists())
}

/// The strata binary at a path the test user may execute (a copy in a
/// world-readable temp dir when the build dir is private).
fn user_binary(uid: u32, gid: u32) -> PathBuf {
    static BIN: OnceLock<(Option<tempfile::TempDir>, PathBuf)> = OnceLock::new();
    let (_, path) = BIN.get_or_init(|| {
        let bin = strata_bin();
        let runs = Command::new("setpriv")
            .args(setpriv_args(uid, gid))
            .arg(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("setpriv (util-linux) must be installed");
        if runs.success() {
            return (None, bin);
        }
        let dir = tempfile::Builder::new()
            .prefix("strata-rl-bin-")
            .tempdir()
            .expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let copy = dir.path().join("strata");
        fs::copy(&bin, &copy).expect("copying the strata binary for the test user");
        (Some(dir), copy)
    });
    path.clone()
}

fn setpriv_args(uid: u32, gid: u32) -> Vec<String> {
    vec![
        "--reuid".into(),
        uid.to_string(),
        "--regid".into(),
        gid.to_string(),
        "--clear-groups".into(),
        "--reset-env".into(),
    ]
}

/// A private store and state dir owned by the test user, with the
/// busybox image imported by that user.
struct UserEnv {
    dir: tempfile::TempDir,
    store: PathBuf,
    state: PathBuf,
    runtime: PathBuf,
    uid: u32,
    gid: u32,
    bin: PathBuf,
}

impl UserEnv {
    fn new() -> UserEnv {
        check_machine();
        let (uid, gid) = test_user();
        let bin = user_binary(uid, gid);
        let dir = tempfile::Builder::new()
            .prefix("strata-rl-")
            .tempdir()
            .expect("temp dir");
        let store = dir.path().join("store");
        let state = dir.path().join("state");
        let runtime = dir.path().join("runtime");
        let image = dir.path().join("busybox-root");
        fs::create_dir(&image).expect("mkdir");
        launcher::busybox_image::build(&image)
            .expect("building the busybox tree (needs the busybox-static package)");
        fs::create_dir(&runtime).expect("mkdir");
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).expect("chmod");
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(dir.path())
            .status()
            .expect("running chown");
        assert!(chown.success(), "chown of the test dir failed");
        let env = UserEnv {
            dir,
            store,
            state,
            runtime,
            uid,
            gid,
            bin,
        };
        // The user imports the image: the store is the user's.
        let img = image.to_string_lossy().into_owned();
        env.ok(&["image", "import", "-t", IMG, &img]);
        let _ = fs::remove_dir_all(&image);
        env
    }

    /// `strata ARGS` as the test user, with XDG_RUNTIME_DIR set to a
    /// private dir and, with `dirs`, explicit --store and --state.
    fn cmd_with(&self, dirs: bool, args: &[&str]) -> Command {
        let mut c = Command::new("setpriv");
        c.args(setpriv_args(self.uid, self.gid))
            .arg("env")
            .arg(format!("XDG_RUNTIME_DIR={}", self.runtime.display()))
            .arg(format!("HOME={}", self.dir.path().display()))
            .arg(&self.bin);
        if dirs {
            c.arg("--store")
                .arg(&self.store)
                .arg("--state")
                .arg(&self.state);
        }
        c.args(args).stdin(Stdio::null());
        c
    }

    /// Like [`UserEnv::run`] in a private mount namespace where
    /// newuidmap and newgidmap are hidden (bound over by /dev/null).
    fn run_without_uidmap_helpers(&self, args: &[&str]) -> Output {
        let inner = self.cmd_with(true, args);
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "for h in /usr/bin/newuidmap /usr/bin/newgidmap; do \
               if [ -e $h ]; then mount --bind /dev/null $h || exit 99; fi; done; exec \"$@\"",
            "sh",
        ])
        .arg(inner.get_program())
        .args(inner.get_args())
        .stdin(Stdio::null());
        c.output().expect("unshare (util-linux) must be installed")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd_with(true, args).output().expect("running setpriv")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "strata {args:?} as stratatest failed ({:?}):\nstdout: {}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `run --rm ... busybox sh -c SCRIPT` with `extra` flags; stdout.
    fn sh(&self, extra: &[&str], script: &str) -> String {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMG, "sh", "-c", script]);
        self.ok(&args)
    }

    fn container_ids(&self) -> Vec<String> {
        self.ok(&["ps", "-aq", "--no-trunc"])
            .lines()
            .map(String::from)
            .collect()
    }

    /// What a test must leave: no containers, no mounts, no state.
    fn assert_clean(&self) {
        assert!(self.container_ids().is_empty(), "containers are left");
        assert!(
            mounts_under(self.dir.path()).is_empty(),
            "mounts are left: {:?}",
            mounts_under(self.dir.path())
        );
        let left: Vec<_> = fs::read_dir(&self.state)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "net")
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "state is left: {left:?}");
        let containers = self.store.join("containers");
        let left: Vec<_> = fs::read_dir(&containers)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "container dirs are left: {left:?}");
    }
}

impl Drop for UserEnv {
    fn drop(&mut self) {
        for id in self.container_ids() {
            let _ = self.run(&["rm", "-f", "-v", &id]);
        }
        // Never delete through a live mount.
        for m in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(|l| l.trim().to_string()).collect()
}

#[test]
fn rootless_container_is_root_in_its_own_user_namespace() {
    let env = UserEnv::new();
    let out = env.sh(
        &["--hostname", "rl-box"],
        "id; cat /proc/self/uid_map; cat /proc/self/gid_map; echo --; \
         ls -ln /bin/busybox; hostname; echo pid=$$; echo hi > /f; cat /f",
    );
    let l = lines(&out);
    assert!(l[0].starts_with("uid=0(root) gid=0(root)"), "{out}");
    let map: Vec<Vec<String>> = l[1..l.iter().position(|x| x == "--").expect("marker")]
        .iter()
        .map(|x| x.split_whitespace().map(String::from).collect())
        .collect();
    let uid = env.uid.to_string();
    let gid = env.gid.to_string();
    let ranges = have_uidmap_helpers()
        && sub_range("/etc/subuid", "stratatest").is_some()
        && sub_range("/etc/subgid", "stratatest").is_some();
    if ranges {
        let (us, uc) = sub_range("/etc/subuid", "stratatest").expect("range");
        let (gs, gc) = sub_range("/etc/subgid", "stratatest").expect("range");
        let want = |own: &str, start: u32, count: u32| {
            vec![
                vec!["0".to_string(), own.to_string(), "1".to_string()],
                vec![
                    "1".to_string(),
                    start.to_string(),
                    count.min(65536).to_string(),
                ],
            ]
        };
        assert_eq!(map[..2], want(&uid, us, uc)[..], "uid_map: {out}");
        assert_eq!(map[2..], want(&gid, gs, gc)[..], "gid_map: {out}");
    } else {
        assert_eq!(map[0], ["0", uid.as_str(), "1"], "uid_map: {out}");
        assert_eq!(map[1], ["0", gid.as_str(), "1"], "gid_map: {out}");
    }
    // The image's files (the user's on disk) belong to root inside.
    let ls = l.iter().find(|x| x.ends_with("/bin/busybox")).expect("ls");
    let f: Vec<&str> = ls.split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("0", "0"), "{ls}");
    assert!(l.contains(&"rl-box".to_string()), "{out}");
    assert!(l.contains(&"pid=1".to_string()), "{out}");
    assert_eq!(l.last().map(String::as_str), Some("hi"), "{out}");
    env.assert_clean();
}

#[test]
fn rootless_writes_land_in_the_upper_dir_owned_by_the_user() {
    let env = UserEnv::new();
    let name = format!("rl-up-{}", std::process::id());
    env.ok(&[
        "run",
        "--name",
        &name,
        IMG,
        "sh",
        "-c",
        "echo data > /root/written; mkdir /newdir",
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", &name])).expect("inspect prints JSON");
    let id = inspect[0]["Id"].as_str().expect("Id").to_string();
    let upper = env.store.join("containers").join(&id).join("upper");
    let f = upper.join("root/written");
    assert_eq!(
        fs::read_to_string(&f).expect("file in the upper dir"),
        "data\n"
    );
    let md = fs::metadata(&f).expect("stat");
    assert_eq!((md.uid(), md.gid()), (env.uid, env.gid));
    assert_eq!(
        fs::metadata(upper.join("newdir")).expect("dir").uid(),
        env.uid
    );
    assert!(
        mounts_under(env.dir.path()).is_empty(),
        "an exited container keeps no mount"
    );
    env.ok(&["rm", &name]);
    env.assert_clean();
}

#[test]
fn rootless_networks_none_and_host() {
    let env = UserEnv::new();
    let none = env.sh(
        &["--network", "none"],
        "ls /sys/class/net; readlink /proc/self/ns/net",
    );
    let l = lines(&none);
    assert_eq!(l[0], "lo", "only lo with --network none: {none}");
    assert!(l[1].starts_with("net:"), "{none}");
    // The default without root is the host's network (no user-mode stack).
    let host_ns = Command::new("setpriv")
        .args(setpriv_args(env.uid, env.gid))
        .args(["readlink", "/proc/self/ns/net"])
        .output()
        .expect("setpriv");
    let host_ns = String::from_utf8_lossy(&host_ns.stdout).trim().to_string();
    let default = env.sh(&[], "readlink /proc/self/ns/net");
    assert_eq!(default.trim(), host_ns, "the default network is the host's");
    assert_ne!(l[1], host_ns, "--network none has its own namespace");
    let explicit = env.sh(&["--network", "host"], "readlink /proc/self/ns/net");
    assert_eq!(explicit.trim(), host_ns);
    env.assert_clean();
}

#[test]
fn rootless_detached_lifecycle_leaves_nothing() {
    let env = UserEnv::new();
    let name = format!("rl-d-{}", std::process::id());
    env.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "trap 'exit 3' TERM; echo up; sleep 1000 & wait",
    ]);
    let ps = env.ok(&["ps"]);
    assert!(ps.contains(&name) && ps.contains("Up "), "{ps}");
    assert_eq!(
        mounts_under(env.dir.path()).len(),
        1,
        "the union rootfs is mounted while it runs"
    );
    let exec = env.ok(&["exec", &name, "sh", "-c", "id -u; cat /proc/1/cmdline"]);
    assert!(exec.starts_with("0\n"), "exec runs as root inside: {exec}");
    assert!(
        exec.contains("sleep 1000"),
        "exec sees the container's pid 1: {exec}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", &name])).expect("inspect prints JSON");
    assert_eq!(inspect[0]["State"]["Status"], "running");
    for _ in 0..100 {
        if env.ok(&["logs", &name]).contains("up") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(env.ok(&["logs", &name]).trim(), "up");
    env.ok(&["stop", "-t", "5", &name]);
    let ps = env.ok(&["ps", "-a"]);
    assert!(
        ps.contains("Exited (3)"),
        "the stop signal reached it: {ps}"
    );
    assert!(
        mounts_under(env.dir.path()).is_empty(),
        "stop unmounts the rootfs"
    );
    env.ok(&["rm", &name]);
    env.assert_clean();
    // The default state dir is under $XDG_RUNTIME_DIR and private.
    let o = env
        .cmd_with(
            false,
            &["--store", &env.store.to_string_lossy(), "ps", "-a"],
        )
        .output()
        .expect("setpriv");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = fs::metadata(env.runtime.join("strata")).expect("state dir under XDG_RUNTIME_DIR");
    assert_eq!(md.mode() & 0o777, 0o700);
    assert_eq!(md.uid(), env.uid);
}

#[test]
fn rootless_limits_and_bridge_networks_are_refused_clearly() {
    let env = UserEnv::new();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--memory", "64m"], &["cgroups", "not delegated"]),
        (&["--pids-limit", "10"], &["cgroups"]),
        (
            &["--network", "bridge"],
            &["--network none", "--network host"],
        ),
        (&["-p", "8080:80"], &["publishing ports", "--network host"]),
    ];
    for (flags, words) in cases {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMG, "true"]);
        let o = env.run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{flags:?}: {err}");
        for w in *words {
            assert!(err.contains(w), "{flags:?}: the error names {w:?}: {err}");
        }
    }
    env.assert_clean();
}

#[test]
fn rootless_without_uidmap_helpers_falls_back_to_a_single_id() {
    let env = UserEnv::new();
    let o = env.run_without_uidmap_helpers(&[
        "run",
        "--rm",
        IMG,
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; \
         ls -ln /bin/busybox; echo ok > /x; cat /x",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    let l = lines(&out);
    assert_eq!(l[0], "0", "{out}");
    let uid = env.uid.to_string();
    let gid = env.gid.to_string();
    let split = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(split(&l[1]), ["0", uid.as_str(), "1"], "{out}");
    assert_eq!(split(&l[2]), ["0", gid.as_str(), "1"], "{out}");
    assert_eq!(
        l[3], "deny",
        "setgroups is denied with a single-id map: {out}"
    );
    assert!(
        l[4].contains(" 0 ") && l[4].ends_with("/bin/busybox"),
        "{out}"
    );
    assert_eq!(l[5], "ok");
    let warning: Vec<&str> = err
        .lines()
        .filter(|x| x.contains("maps only your own uid"))
        .collect();
    assert_eq!(warning.len(), 1, "one warning line: {err}");
    assert!(warning[0].contains("uidmap"), "it names the package: {err}");
    // Only root exists in such a namespace: another user is refused clearly.
    let o = env.run_without_uidmap_helpers(&["run", "--rm", "-u", "5", IMG, "id"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("is not mapped"), "{err}");
    env.assert_clean();
}

/// Whether process `pid` is gone (or only a zombie nobody reaped yet).
fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn rootless_killed_supervisor_takes_the_container_along_and_rm_cleans_up() {
    let env = UserEnv::new();
    let name = format!("rl-k9-{}", std::process::id());
    env.ok(&["run", "-d", "--name", &name, IMG, "sleep", "1000"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", &name])).expect("inspect prints JSON");
    let id = inspect[0]["Id"].as_str().expect("Id").to_string();
    let state: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(env.store.join("containers").join(&id).join("state.json"))
            .expect("state.json"),
    )
    .expect("state JSON");
    let sup = state["supervisor_pid"].as_i64().expect("supervisor_pid") as i32;
    let init = state["pid"].as_i64().expect("pid") as i32;
    assert!(sup > 0 && init > 0, "{state}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the supervisor");
    for _ in 0..200 {
        if process_gone(init) && env.ok(&["ps", "-a"]).contains("Exited") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(
        process_gone(init),
        "the container's init outlived its supervisor"
    );
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited"), "{ps}");
    // The dead server's mount is the user's: rm takes it away through fusermount3.
    env.ok(&["rm", &name]);
    env.assert_clean();
}

#[test]
fn rootless_keeps_the_security_defaults() {
    let env = UserEnv::new();
    let out = env.sh(
        &["--network", "none"],
        "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t'; \
         echo keys=$(wc -c < /proc/keys); \
         if echo x > /proc/sys/kernel/hostname 2>/dev/null; then echo sys=writable; else echo sys=ro; fi; \
         unshare -U true 2>/dev/null; echo unshare=$?",
    );
    let l = lines(&out);
    assert!(l.contains(&"NoNewPrivs:1".to_string()), "{out}");
    assert!(
        l.contains(&"Seccomp:2".to_string()),
        "the default filter: {out}"
    );
    assert!(
        l.contains(&"keys=0".to_string()),
        "masked /proc/keys: {out}"
    );
    assert!(
        l.contains(&"sys=ro".to_string()),
        "read-only /proc/sys: {out}"
    );
    assert!(
        l.iter()
            .any(|x| x.starts_with("unshare=") && x != "unshare=0"),
        "the filter denies unshare: {out}"
    );
    let o = env.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        IMG,
        "chown",
        "1",
        "/tmp",
    ]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "--cap-drop ALL removes chown rights"
    );
    env.assert_clean();
}
