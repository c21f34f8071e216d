//! The launcher for real: containers on the union rootfs, as root, with
//! namespaces, cgroups v1, seccomp and capabilities.

#[path = "launcher_support.rs"]
mod support;

use std::fs;

use support::{mounts_under, name, Env};

const IMG: &str = "busybox:latest";

fn sh(env: &Env, extra: &[&str], script: &str) -> std::process::Output {
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMG, "sh", "-c", script]);
    env.run(&args)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn exit_codes_follow_docker() {
    let env = Env::new();
    assert_eq!(sh(&env, &[], "exit 0").status.code(), Some(0));
    assert_eq!(sh(&env, &[], "exit 1").status.code(), Some(1));
    // pid 1 ignores signals from inside; behind --init the shell is not pid 1.
    assert_eq!(sh(&env, &["--init"], "kill -9 $$").status.code(), Some(137));
    let missing = env.run(&["run", "--rm", "--network", "none", IMG, "no-such-command"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no-such-command"));
    assert_eq!(
        env.code(&["run", "--rm", "--network", "none", IMG, "/etc"]),
        126
    );
    let unknown = env.run(&["run", "--rm", "--network", "none", "nosuchimage:1", "true"]);
    assert_eq!(unknown.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nosuchimage"));
    assert_eq!(
        env.code(&["run", "--rm", "--memory", "lots", IMG, "true"]),
        125
    );
    assert_eq!(
        env.code(&["run", "--rm", "--restart", "sometimes", IMG, "true"]),
        125
    );
    // --rm and failed runs leave nothing behind.
    assert_eq!(env.ok(&["ps", "-aq"]).trim(), "");
    assert!(mounts_under(&env.state).is_empty());
}

#[test]
fn name_clash_is_refused_and_leaves_nothing() {
    let env = Env::new();
    let n = name("clash");
    env.ok(&["create", "--name", &n, "--network", "none", IMG, "true"]);
    let o = env.run(&["create", "--name", &n, "--network", "none", IMG, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already in use"));
    assert_eq!(env.ok(&["ps", "-aq"]).lines().count(), 1);
    assert_eq!(
        env.ok(&["ps", "-a"])
            .lines()
            .nth(1)
            .map(|l| l.contains("Created")),
        Some(true)
    );
}

#[test]
fn namespaces_isolate_the_container() {
    let env = Env::new();
    let o = sh(
        &env,
        &["--hostname", "boxy"],
        "hostname; echo pid=$$; ps -o pid | tail -n +2 | wc -l; grep ' / ' /proc/mounts | cut -d' ' -f3; \
         cat /etc/hostname; grep boxy /etc/hosts | wc -l; cat /proc/self/cgroup | grep memory; readlink /proc/self/ns/net",
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "boxy", "{out}");
    assert_eq!(lines[1], "pid=1");
    let procs: u32 = lines[2].trim().parse().unwrap();
    assert!(procs <= 4, "only the shell's pipeline is visible: {out}");
    assert_eq!(lines[3], "fuse.unionfs", "root is the union mount: {out}");
    assert_eq!(lines[4], "boxy");
    assert_eq!(lines[5].trim(), "1", "hosts names the container");
    assert!(lines[6].ends_with(":/"), "cgroup namespace root: {out}");
    let host_net = fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        lines[7],
        host_net.to_string_lossy(),
        "own network namespace"
    );
    // Host paths are not visible.
    let o = sh(&env, &[], "cat /proc/mounts");
    assert!(
        !stdout(&o).contains(env.dir.path().to_str().unwrap()),
        "{}",
        stdout(&o)
    );
}

#[test]
fn init_layer_files_do_not_touch_the_image() {
    let env = Env::new();
    let n = name("init");
    env.ok(&[
        "run",
        "--name",
        &n,
        "--network",
        "none",
        "--hostname",
        "h1",
        IMG,
        "sh",
        "-c",
        "cat /etc/hostname",
    ]);
    let dir = env.container_dir(&n);
    assert!(
        !dir.join("upper/etc/hostname").exists(),
        "the image's /etc/hostname stays untouched"
    );
    assert_eq!(
        fs::read_to_string(dir.join("hostname")).unwrap().trim(),
        "h1"
    );
    let logs = env.ok(&["logs", &n]);
    assert_eq!(logs.trim(), "h1");
}

#[test]
fn detached_lifecycle_stop_start_exec_logs_rm() {
    let env = Env::new();
    let n = name("life");
    let id = env.ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "echo started; echo data > /kept; while true; do sleep 0.2; done",
    ]);
    assert_eq!(id.trim().len(), 64);
    let st = env.inspect(&n);
    assert_eq!(st["State"]["Status"], "running");
    assert!(st["State"]["Pid"].as_i64().unwrap() > 0);
    assert!(env.ok(&["ps"]).contains("Up "));
    env.wait_for("the first log line", || {
        env.ok(&["logs", &n]).contains("started")
    });
    assert_eq!(env.ok(&["exec", &n, "cat", "/kept"]).trim(), "data");
    assert_eq!(env.code(&["exec", &n, "sh", "-c", "exit 7"]), 7);
    assert_eq!(env.code(&["exec", &n, "nope"]), 127);
    assert!(env.ok(&["top", &n]).contains("sleep") || env.ok(&["top", &n]).contains("sh"));
    // A process that ignores SIGTERM is killed after the timeout.
    let t0 = std::time::Instant::now();
    env.ok(&["stop", "-t", "1", &n]);
    assert!(t0.elapsed().as_secs_f64() >= 0.9);
    let st = env.inspect(&n);
    assert_eq!(st["State"]["Status"], "exited");
    assert_eq!(st["State"]["ExitCode"], 137);
    assert!(env.ok(&["ps", "-a"]).contains("Exited (137)"));
    assert!(
        mounts_under(&env.state).is_empty(),
        "rootfs unmounted when stopped"
    );
    // The rw layer survives stop/start.
    env.ok(&["start", &n]);
    assert_eq!(env.ok(&["exec", &n, "cat", "/kept"]).trim(), "data");
    assert_eq!(
        env.code(&["rm", &n]),
        125,
        "rm of a running container needs -f"
    );
    env.ok(&["rm", "-f", &n]);
    assert_eq!(env.ok(&["ps", "-aq"]).trim(), "");
    assert!(!env.store.join("containers").join(id.trim()).exists());
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/memory/strata/{}", id.trim())).exists());
    assert!(mounts_under(&env.state).is_empty());
}

#[test]
fn init_forwards_sigterm_for_exit_143() {
    let env = Env::new();
    let n = name("init143");
    env.ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        &n,
        "--network",
        "none",
        IMG,
        "sleep",
        "100",
    ]);
    env.ok(&["stop", "-t", "20", &n]);
    assert_eq!(env.inspect(&n)["State"]["ExitCode"], 143);
}

#[test]
fn memory_limit_oom_kills() {
    let env = Env::new();
    let n = name("oom");
    let o = env.run(&[
        "run",
        "--name",
        &n,
        "--network",
        "none",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        IMG,
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(
        o.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let st = env.inspect(&n);
    assert_eq!(st["State"]["OOMKilled"], true);
    assert_eq!(st["HostConfig"]["Memory"], 16 << 20);
}

#[test]
fn limits_are_visible_inside_and_pids_limit_stops_forks() {
    let env = Env::new();
    let o = sh(
        &env,
        &["--memory", "32m", "--pids-limit", "10", "--cpus", "0.5"],
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us; \
         for i in $(seq 1 20); do sleep 3 & done 2>&1; echo done",
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], (32u64 << 20).to_string());
    assert_eq!(lines[1], "10");
    assert_eq!(lines[2], "50000");
    let all = format!("{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        all.contains("fork") || all.contains("Resource temporarily unavailable"),
        "{all}"
    );
}

#[test]
fn cpus_limit_throttles_a_busy_loop() {
    let env = Env::new();
    // A busy loop for about a second and a half under a fifth of a CPU:
    // the CFS quota must throttle it in most 100 ms periods.
    let o = sh(
        &env,
        &["--cpus", "0.2"],
        "end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done; \
         cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us; \
         cat /sys/fs/cgroup/cpu/cpu.stat",
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("20000"), "{out}");
    assert_eq!(lines.get(1).copied(), Some("100000"), "{out}");
    let stat = |key: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} missing from cpu.stat: {out}"))
    };
    let periods = stat("nr_periods ");
    let throttled = stat("nr_throttled ");
    let throttled_ns = stat("throttled_time ");
    assert!(periods >= 5, "the loop ran in {periods} periods: {out}");
    assert!(
        throttled * 2 >= periods,
        "throttled in only {throttled} of {periods} periods: {out}"
    );
    assert!(throttled_ns > 0, "{out}");
}

#[test]
fn security_defaults_mask_drop_and_filter() {
    let env = Env::new();
    let o = sh(
        &env,
        &[],
        "wc -c < /proc/timer_list; echo x > /proc/sys/kernel/domainname && echo wrote-proc-sys; \
         unshare -U true && echo unshared; grep CapEff /proc/self/status",
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim(),
        "0",
        "masked /proc/timer_list reads empty: {out}"
    );
    assert!(!out.contains("wrote-proc-sys"));
    assert!(!out.contains("unshared"), "seccomp refuses unshare: {out}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"));
    assert!(
        lines.last().unwrap().ends_with("a80425fb"),
        "docker's default set: {out}"
    );
    let o = sh(
        &env,
        &["--cap-drop", "ALL"],
        "touch /f; chown 1 /f && echo chowned; grep CapEff /proc/self/status",
    );
    assert!(!stdout(&o).contains("chowned"));
    assert!(stdout(&o).contains("0000000000000000"));
    let o = sh(&env, &["--read-only"], "touch /f && echo wrote; echo x");
    assert!(!stdout(&o).contains("wrote"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Read-only"));
    let o = sh(
        &env,
        &[
            "--security-opt",
            "seccomp=unconfined",
            "--cap-add",
            "SYS_ADMIN",
        ],
        "unshare -U true && echo unshared",
    );
    assert!(stdout(&o).contains("unshared"));
}

#[test]
fn pty_is_a_terminal() {
    let env = Env::new();
    let o = env.run(&[
        "run",
        "--rm",
        "-t",
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "[ -t 0 ] && [ -t 1 ] && echo is-a-tty",
    ]);
    assert!(stdout(&o).contains("is-a-tty"), "{}", stdout(&o));
    let o = env.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "[ -t 1 ] || echo not-a-tty",
    ]);
    assert!(stdout(&o).contains("not-a-tty"));
}

#[test]
fn killed_supervisor_shows_exited_and_rm_cleans_up() {
    let env = Env::new();
    let n = name("sup");
    env.ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        IMG,
        "sleep",
        "100",
    ]);
    let dir = env.container_dir(&n);
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("state.json")).unwrap()).unwrap();
    let sup = state["supervisor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.wait_for("the supervisor to die", || {
        fs::metadata(format!("/proc/{sup}")).is_err() || {
            fs::read_to_string(format!("/proc/{sup}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)
        }
    });
    let st = env.inspect(&n);
    assert_eq!(st["State"]["Status"], "exited");
    assert!(st["State"]["Error"]
        .as_str()
        .unwrap()
        .contains("supervisor"));
    env.ok(&["rm", &n]);
    assert!(
        mounts_under(&env.state).is_empty(),
        "stale union mount removed"
    );
    assert!(!dir.exists());
}

#[test]
fn commit_export_and_cp_round_trip() {
    let env = Env::new();
    let n = name("commit");
    env.ok(&[
        "run",
        "--name",
        &n,
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "echo committed > /hello; rm /etc/os-release",
    ]);
    let image = format!("{n}-img:v1");
    env.ok(&["commit", &n, &image]);
    let o = env.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "cat /hello; ls /etc/os-release 2>&1 || true",
    ]);
    assert!(o.contains("committed"), "{o}");
    assert!(
        o.contains("No such file"),
        "the deletion is committed too: {o}"
    );
    let tar_path = env.dir.path().join("export.tar");
    env.ok(&["export", "-o", tar_path.to_str().unwrap(), &n]);
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(fs::File::open(&tar_path).unwrap());
    for e in ar.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert!(names.iter().any(|p| p == "hello"), "{names:?}");
    assert!(names.iter().any(|p| p == "bin/busybox"));
    assert!(!names.iter().any(|p| p == "etc/os-release"));
    let out = env.dir.path().join("hello.out");
    env.ok(&["cp", &format!("{n}:/hello"), out.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(&out).unwrap(), "committed\n");
    let src = env.dir.path().join("in.txt");
    fs::write(&src, "from host\n").unwrap();
    env.ok(&["cp", src.to_str().unwrap(), &format!("{n}:/root/")]);
    assert_eq!(
        fs::read_to_string(env.container_dir(&n).join("upper/root/in.txt")).unwrap(),
        "from host\n"
    );
}

#[test]
fn logs_follow_and_rotation_cap() {
    let env = Env::new();
    let n = name("logs");
    env.ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.3; done",
    ]);
    let o = env.run(&["logs", "-f", &n]);
    assert_eq!(stdout(&o), "line1\nline2\nline3\n");
    assert_eq!(env.ok(&["logs", "--tail", "1", &n]), "line3\n");
    assert!(env.ok(&["logs", "-t", &n]).starts_with("20"));
    let chatty = name("chatty");
    env.ok(&[
        "run",
        "--name",
        &chatty,
        "--network",
        "none",
        "--log-opt",
        "max-size=4k",
        "--log-opt",
        "max-file=2",
        IMG,
        "sh",
        "-c",
        "seq 1 3000",
    ]);
    let dir = env.container_dir(&chatty);
    let total: u64 = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("container.log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(total <= 8 * 1024, "log kept under its cap: {total}");
    assert!(dir.join("container.log.1").exists(), "rotated");
    assert!(env.ok(&["logs", &chatty]).ends_with("3000\n"));
}

#[test]
fn ps_size_matches_du_of_the_upper_dir() {
    let env = Env::new();
    let n = name("size");
    env.ok(&[
        "run",
        "--name",
        &n,
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "head -c 300000 /dev/zero > /blob",
    ]);
    let line = env.ok(&["ps", "-a", "-s", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let upper = env.container_dir(&n).join("upper");
    let du = std::process::Command::new("du")
        .arg("-sB1")
        .arg(&upper)
        .output()
        .expect("du (coreutils)");
    let du_bytes: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(v["Size"].as_u64().unwrap(), du_bytes);
    assert!(
        v["SizeRootFs"].as_u64().unwrap() > du_bytes + 500_000,
        "virtual size includes busybox"
    );
}
