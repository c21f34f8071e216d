//! Load and leaks: many containers in sequence and at once leave nothing
//! behind (mounts, FUSE connections, cgroups, veths, nft rules, leases,
//! state files, processes), supervisors' memory stays bounded, and
//! `system check`/`system prune` find and remove what a killed supervisor
//! leaves. Needs root, busybox-static, iproute2 and nftables; everything
//! runs in a network namespace of the test's own.

#[path = "launcher_support.rs"]
mod launcher_support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use launcher_support::{mounts_under, name, Env};

const SEQUENTIAL: usize = 100;
const CONCURRENT: usize = 20;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Container cgroup directories (`<controller>/strata/<id>`) on the host.
fn strata_cgroups() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = Path::new("/sys/fs/cgroup");
    let Ok(ctrls) = fs::read_dir(root) else {
        return out;
    };
    for c in ctrls.flatten() {
        if let Ok(ids) = fs::read_dir(c.path().join("strata")) {
            for id in ids.flatten() {
                if id.path().is_dir() {
                    out.insert(id.path().display().to_string());
                }
            }
        }
    }
    out
}

fn fuse_connections() -> usize {
    fs::read_dir("/sys/fs/fuse/connections").map_or(0, |d| d.count())
}

/// Interfaces of kind veth in this (the test's) network namespace.
fn veths() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .expect("running ip (package iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// nft rules that translate addresses (published ports) in this namespace.
fn nat_rules() -> Vec<String> {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .expect("running nft (package nftables)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("dnat to"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Processes whose command line mentions `needle` (our store's path).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{name}: {cmd}"));
            }
        }
    }
    out
}

/// Peak resident memory (VmHWM) of `pid` in KiB.
fn peak_rss_kib(pid: i64) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn supervisor_pid(env: &Env, name: &str) -> i64 {
    let state = env.container_dir(name).join("state.json");
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(&state).expect("state.json")).expect("state JSON");
    v["supervisor_pid"].as_i64().expect("supervisor_pid")
}

/// What the state dir holds besides the network records.
fn state_entries(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&env.state)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "net" && !n.ends_with(".lock") && n != "lock")
        .collect();
    v.sort();
    v
}

#[test]
fn hundred_in_sequence_and_twenty_at_once_leave_nothing_behind() {
    assert!(is_root(), "this test needs root (cgroups, mounts, netns)");
    let env = Env::new();
    let store = env.store.display().to_string();
    let cgroups_before = strata_cgroups();
    let fuse_before = fuse_connections();

    // 100 in sequence, each on the default bridge, removed on exit.
    for i in 0..SEQUENTIAL {
        let out = env.ok(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            &format!("echo run-{i}"),
        ]);
        assert_eq!(out.trim(), format!("run-{i}"));
    }
    assert_eq!(env.ok(&["ps", "-aq"]).trim(), "", "--rm left containers");

    // 20 at once, each publishing a port (nft rules, veth, lease).
    let names: Vec<String> = (0..CONCURRENT).map(|i| name(&format!("load{i}"))).collect();
    let starters: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut c = env.cmd(&[
                "run",
                "-d",
                "--name",
                n,
                "-p",
                &format!("127.0.0.1:{}:80", 21000 + i),
                "busybox",
                "sleep",
                "1000",
            ]);
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().expect("spawning strata run -d")
        })
        .collect();
    for (s, n) in starters.into_iter().zip(&names) {
        let out = s.wait_with_output().expect("strata run -d");
        assert!(
            out.status.success(),
            "run -d {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let running = env.ok(&["ps", "-q"]);
    assert_eq!(running.lines().count(), CONCURRENT, "{running}");
    assert_eq!(veths().len(), CONCURRENT, "one veth pair per container");
    assert!(nat_rules().len() >= CONCURRENT, "{:?}", nat_rules());
    let peaks: Vec<u64> = names
        .iter()
        .filter_map(|n| peak_rss_kib(supervisor_pid(&env, n)))
        .collect();
    assert_eq!(peaks.len(), CONCURRENT, "every supervisor is alive");
    let max = peaks.iter().copied().max().unwrap_or(0);
    let sum: u64 = peaks.iter().sum();
    eprintln!(
        "supervisor peak RSS with {CONCURRENT} containers: max {max} KiB, mean {} KiB, total {} MiB",
        sum / CONCURRENT as u64,
        sum / 1024
    );
    // A supervisor (FUSE server + log pump) is small; a leak of the
    // image's data into memory would show as hundreds of MiB.
    assert!(max < 128 * 1024, "a supervisor peaked at {max} KiB");

    // Remove them, half stopped first, half with rm -f.
    let (first, second) = names.split_at(CONCURRENT / 2);
    let mut args = vec!["stop", "-t", "1"];
    args.extend(first.iter().map(String::as_str));
    env.ok(&args);
    let mut args = vec!["rm"];
    args.extend(first.iter().map(String::as_str));
    env.ok(&args);
    let mut args = vec!["rm", "-f"];
    args.extend(second.iter().map(String::as_str));
    env.ok(&args);

    assert_eq!(env.ok(&["ps", "-aq"]).trim(), "");
    let mounts = mounts_under(env.dir.path());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    assert_eq!(fuse_connections(), fuse_before, "FUSE connections leaked");
    let leaked: Vec<_> = strata_cgroups()
        .difference(&cgroups_before)
        .cloned()
        .collect();
    assert!(leaked.is_empty(), "cgroups left: {leaked:?}");
    assert!(veths().is_empty(), "veths left: {:?}", veths());
    assert!(nat_rules().is_empty(), "nft rules left: {:?}", nat_rules());
    let bridge: serde_json::Value =
        serde_json::from_str(&env.ok(&["network", "inspect", "bridge"])).expect("JSON");
    let attached = &bridge[0]["Containers"];
    assert!(
        attached.as_object().is_none_or(|o| o.is_empty()),
        "leases left on the bridge: {attached}"
    );
    assert!(
        state_entries(&env).is_empty(),
        "state left: {:?}",
        state_entries(&env)
    );
    let left: Vec<String> = fs::read_dir(env.store.join("containers"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let inside: Vec<String> = fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|x| x.file_name().to_string_lossy().into_owned())
                .collect();
            format!("{} {inside:?}", e.path().display())
        })
        .collect();
    assert!(
        left.is_empty(),
        "container directories left in the store: {left:?}"
    );
    let procs = processes_mentioning(&store);
    assert!(procs.is_empty(), "processes left: {procs:?}");
    assert_eq!(env.ok(&["system", "check"]).trim(), "no leftovers");
}

#[test]
fn killed_supervisor_leftovers_are_found_and_pruned() {
    assert!(is_root(), "this test needs root (cgroups, mounts, netns)");
    let env = Env::new();
    let n = name("killed");
    env.ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "-p",
        "127.0.0.1:21999:80",
        "busybox",
        "sleep",
        "1000",
    ]);
    let dir = env.container_dir(&n);
    let id = dir
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .expect("id");
    let sup = supervisor_pid(&env, &n);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the supervisor");
    env.wait_for("the supervisor to go", || {
        !Path::new(&format!("/proc/{sup}")).exists()
            || fs::read_to_string(format!("/proc/{sup}/stat")).is_ok_and(|s| s.contains(") Z"))
    });
    // Before any other command (they tidy networking on their own).
    let check = env.run(&["system", "check"]);
    let text = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(1), "check must fail: {text}");
    let mut kinds = vec!["cgroup", "network"];
    // The rootfs mount lives in the supervisor's mount namespace and goes
    // with it; one that is visible here must be listed too.
    if !mounts_under(env.dir.path()).is_empty() {
        kinds.push("mount");
    }
    for kind in kinds {
        assert!(
            text.lines().any(|l| l.starts_with(kind) && l.contains(&n)),
            "check does not list the {kind} of {n}:\n{text}"
        );
    }
    assert!(
        strata_cgroups().iter().any(|c| c.ends_with(&id)),
        "the cgroups"
    );
    // The veth went with the container's namespace; its port rule stays
    // until someone releases it.
    assert!(!nat_rules().is_empty(), "the published port's rule");
    // ps sees it exited, not stuck running.
    assert_eq!(env.inspect(&n)["State"]["Status"], "exited");

    let prune = env.ok(&["system", "prune"]);
    assert!(prune.contains("removed cgroup"), "{prune}");
    assert_eq!(env.ok(&["system", "check"]).trim(), "no leftovers");
    assert!(mounts_under(env.dir.path()).is_empty());
    assert!(!strata_cgroups().iter().any(|c| c.ends_with(&id)));
    assert!(veths().is_empty(), "{:?}", veths());
    assert!(nat_rules().is_empty(), "{:?}", nat_rules());

    // The container itself is kept, with its rw layer, and starts again.
    assert!(dir.join("upper").is_dir());
    env.ok(&["start", &n]);
    assert_eq!(env.inspect(&n)["State"]["Status"], "running");
    env.ok(&["rm", "-f", &n]);
    assert!(mounts_under(env.dir.path()).is_empty());
}
