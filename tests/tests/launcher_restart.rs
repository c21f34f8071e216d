//! Restart policies (issue 6): counts, backoff, manual stop, update,
//! system shutdown / boot.

#[path = "launcher_support.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{name, Env};

const IMG: &str = "busybox:latest";

fn status(env: &Env, n: &str) -> (String, u64) {
    let st = env.inspect(n);
    (
        st["State"]["Status"].as_str().unwrap().to_string(),
        st["RestartCount"].as_u64().unwrap(),
    )
}

#[test]
fn on_failure_stops_after_n_with_backoff() {
    let env = Env::new();
    let n = name("onf");
    let t0 = Instant::now();
    env.ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        "--restart",
        "on-failure:3",
        IMG,
        "sh",
        "-c",
        "exit 1",
    ]);
    env.wait_for("three restarts then exit", || {
        status(&env, &n) == ("exited".into(), 3)
    });
    // Delays 100 + 200 + 400 ms at least.
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(status(&env, &n), ("exited".into(), 3));
    assert_eq!(env.inspect(&n)["State"]["ExitCode"], 1);
    // on-failure does not restart a clean exit.
    let ok = name("onf0");
    env.ok(&[
        "run",
        "-d",
        "--name",
        &ok,
        "--network",
        "none",
        "--restart",
        "on-failure",
        IMG,
        "true",
    ]);
    env.wait_for("exit", || status(&env, &ok).0 == "exited");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(&env, &ok), ("exited".into(), 0));
}

#[test]
fn always_restarts_until_stopped_even_during_backoff() {
    let env = Env::new();
    let n = name("always");
    env.ok(&[
        "run",
        "-d",
        "--name",
        &n,
        "--network",
        "none",
        "--restart",
        "always",
        IMG,
        "true",
    ]);
    env.wait_for("four restarts", || status(&env, &n).1 >= 4);
    assert!(env.ok(&["ps"]).contains(&n) || env.ok(&["ps", "-a"]).contains("Restarting"));
    env.ok(&["stop", "-t", "1", &n]);
    let (st, count) = status(&env, &n);
    assert_eq!(st, "exited");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        status(&env, &n),
        ("exited".into(), count),
        "no restart after a manual stop"
    );
    // A manual start resets the count.
    env.ok(&["update", "--restart", "no", &n]);
    env.ok(&["start", &n]);
    env.wait_for("exit", || status(&env, &n).0 == "exited");
    assert_eq!(status(&env, &n).1, 0);
    assert_eq!(env.inspect(&n)["HostConfig"]["RestartPolicy"]["Name"], "no");
}

#[test]
fn no_policy_and_killed_containers_stay_down() {
    let env = Env::new();
    let n = name("nopol");
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
        "exit 1",
    ]);
    env.wait_for("exit", || status(&env, &n).0 == "exited");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(status(&env, &n), ("exited".into(), 0));
    let k = name("killed");
    env.ok(&[
        "run",
        "-d",
        "--name",
        &k,
        "--network",
        "none",
        "--restart",
        "unless-stopped",
        IMG,
        "sleep",
        "100",
    ]);
    env.ok(&["kill", &k]);
    env.wait_for("exit", || status(&env, &k).0 == "exited");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        status(&env, &k),
        ("exited".into(), 0),
        "kill cancels restarts"
    );
    assert_eq!(env.inspect(&k)["State"]["ExitCode"], 137);
}

#[test]
fn shutdown_then_boot_restarts_what_docker_would() {
    let env = Env::new();
    let always = name("b-always");
    let unless = name("b-unless");
    let unless_stopped = name("b-unless-stopped");
    let onfail = name("b-onfail");
    let none = name("b-none");
    for (n, policy) in [
        (&always, "always"),
        (&unless, "unless-stopped"),
        (&unless_stopped, "unless-stopped"),
        (&none, "no"),
    ] {
        env.ok(&[
            "run",
            "-d",
            "--name",
            n,
            "--network",
            "none",
            "--restart",
            policy,
            IMG,
            "sleep",
            "100",
        ]);
    }
    env.ok(&[
        "run",
        "-d",
        "--name",
        &onfail,
        "--network",
        "none",
        "--restart",
        "on-failure:1",
        IMG,
        "sh",
        "-c",
        "exit 2",
    ]);
    env.wait_for("on-failure gives up", || {
        status(&env, &onfail) == ("exited".into(), 1)
    });
    env.ok(&["stop", "-t", "1", &unless_stopped]);
    env.ok(&["system", "shutdown"]);
    for n in [&always, &unless, &none] {
        assert_eq!(status(&env, n).0, "exited", "{n} stopped by shutdown");
    }
    env.ok(&["system", "boot"]);
    let running = env.ok(&["ps", "--format", "json"]);
    let names: Vec<String> = running
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["Names"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(names.contains(&always), "{names:?}");
    assert!(names.contains(&unless), "{names:?}");
    assert!(
        !names.contains(&unless_stopped),
        "stopped by hand before shutdown: {names:?}"
    );
    assert!(!names.contains(&none), "{names:?}");
    // on-failure comes back (last exit non-zero) and runs its course again.
    let (st, _) = status(&env, &onfail);
    assert!(
        st == "running" || st == "restarting" || st == "exited",
        "{st}"
    );
    assert!(env.inspect(&onfail)["State"]["StartedAt"].as_str().unwrap() != "0001-01-01T00:00:00Z");
}
