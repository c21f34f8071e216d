//! Networking through the `strata` binary: `strata network`, `strata run
//! --network/-p`, `strata port`, `strata restart`, `strata rm`, inside a
//! network namespace the test creates (the host's networking is never
//! touched). Needs busybox-static (the built-in image), iproute2, nftables,
//! socat and `cargo build --workspace --bins` (for target/debug/strata).

mod net_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use net_support::*;

/// `target/debug/strata`, next to this test's `deps/` directory.
fn strata_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("strata"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        bin.display()
    );
    bin
}

struct Strata {
    bin: PathBuf,
    store: PathBuf,
    state: PathBuf,
}

impl Strata {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(args)
            .env("STRATA_STORE", &self.store)
            .env("STRATA_STATE", &self.state)
            .output()
            .expect("spawn strata")
    }

    /// Run and require success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nc HOST 80` inside container `ctr`, retried while the server starts.
    fn nc(&self, ctr: &str, host: &str) -> Option<String> {
        for _ in 0..25 {
            let out = self.cmd(&["exec", ctr, "sh", "-c", &format!("nc {host} 80 </dev/null")]);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !text.is_empty() {
                return Some(text);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        None
    }

    fn ip(&self, ctr: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["inspect", ctr])).expect("inspect json");
        let first = if v.is_array() { &v[0] } else { &v };
        first["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

const SERVER: &str = "while true; do echo hi-from-$(hostname) | nc -l -p 80; done";

#[test]
fn strata_run_networks_names_ports_restart_cleanup() {
    need("busybox", "busybox-static");
    let host = NetNs::new();
    let _g = host.enter();
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Strata {
        bin: strata_bin(),
        store: tmp.path().join("store"),
        state: tmp.path().join("state"),
    };
    s.ok(&["demo"]); // imports the built-in busybox image

    // network create / ls / inspect.
    s.ok(&["network", "create", "--subnet", "10.88.0.0/24", "webnet"]);
    let ls = s.ok(&["network", "ls"]);
    for name in ["bridge", "host", "none", "webnet"] {
        assert!(
            ls.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "{ls}"
        );
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["network", "inspect", "webnet"])).expect("json");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.88.0.0/24");
    let dup = s.cmd(&["network", "create", "webnet"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    // Two containers reach each other by name, both ways.
    for (name, port) in [("aa", None), ("bb", Some("127.0.0.1:18180:80"))] {
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            name,
            "--network",
            "webnet",
        ];
        if let Some(p) = port {
            args.extend(["-p", p]);
        }
        args.extend(["busybox", "sh", "-c", SERVER]);
        s.ok(&args);
    }
    assert_eq!(s.nc("bb", "aa").as_deref(), Some("hi-from-aa"));
    assert_eq!(s.nc("aa", "bb").as_deref(), Some("hi-from-bb"));

    // Published port from the (test namespace's) host, and `strata port`.
    assert_eq!(
        ask("tcp", "127.0.0.1", 18180, 25).as_deref(),
        Some("hi-from-bb")
    );
    assert_eq!(s.ok(&["port", "bb"]).trim(), "80/tcp -> 127.0.0.1:18180");
    // The port is held while bb runs.
    assert!(std::net::TcpListener::bind("127.0.0.1:18180").is_err());

    // Restart: new address, the name follows.
    let before = s.ip("aa");
    s.ok(&["restart", "aa"]);
    let after = s.ip("aa");
    assert!(
        after.starts_with("10.88.0.") && after != before,
        "{before} -> {after}"
    );
    assert_eq!(s.nc("bb", "aa").as_deref(), Some("hi-from-aa"));

    // Default bridge: no names.
    let out = s.cmd(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "nc -w 1 aa 80 </dev/null",
    ]);
    assert!(!out.status.success(), "name resolved on the default bridge");

    // Removal frees ports, leases, interfaces and rules.
    s.ok(&["rm", "-f", "aa", "bb"]);
    std::net::TcpListener::bind("127.0.0.1:18180").expect("port 18180 freed after rm");
    s.ok(&["network", "rm", "webnet"]);
    let left: Vec<String> = strata_links()
        .into_iter()
        .filter(|l| l != "strata0")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let table = sh_any("nft list table ip strata 2>/dev/null");
    assert!(!table.contains("dnat to"), "{table}");
}
