//! Helpers for the networking tests: private network namespaces standing in
//! for hosts, and processes in their own network and mount namespaces
//! standing in for containers (with the hosts file bind-mounted over
//! /etc/hosts, as the runtime does).
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use launcher::net::{self, NetContext, NetworkRequest};
use nix::sched::{setns, CloneFlags};

/// Fail with a message naming the missing tool.
pub fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "this test needs `{tool}` (install the {package} package)"
    );
}

/// Check every tool the tests use.
pub fn need_tools() {
    need("ip", "iproute2");
    need("bridge", "iproute2");
    need("nft", "nftables");
    need("nsenter", "util-linux");
    need("unshare", "util-linux");
    need("socat", "socat");
}

fn thread_ns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A network namespace kept alive by a `sleep` process in it.
pub struct NetNs {
    keeper: Child,
    /// Pid of the keeper (usable as `netns PID` by iproute2).
    pub pid: i32,
}

impl NetNs {
    /// A fresh namespace with `lo` up.
    pub fn new() -> NetNs {
        need_tools();
        let keeper = Command::new("unshare")
            .args(["-n", "--", "sleep", "100000"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare -n sleep");
        let pid = keeper.id() as i32;
        let ns = NetNs { keeper, pid };
        let mine = thread_ns();
        for _ in 0..500 {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if !theirs.is_empty() && theirs != mine {
                let g = ns.enter();
                sh("ip link set lo up");
                drop(g);
                return ns;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("unshare -n did not create a network namespace");
    }

    /// Move the calling thread into the namespace until the guard drops.
    pub fn enter(&self) -> NsGuard {
        let orig = File::open("/proc/thread-self/ns/net").expect("open own netns");
        let target = File::open(format!("/proc/{}/ns/net", self.pid)).expect("open netns");
        setns(&target, CloneFlags::CLONE_NEWNET).expect("setns into test netns");
        NsGuard { orig }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        kill_child(&mut self.keeper);
    }
}

/// Returns the thread to its previous namespace on drop.
pub struct NsGuard {
    orig: File,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = setns(&self.orig, CloneFlags::CLONE_NEWNET);
    }
}

/// Run a shell command in the calling thread's namespace; panic on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a shell command; return stdout whether or not it succeeded.
pub fn sh_any(cmd: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("spawn sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique id for a test container.
pub fn unique_id(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let raw = format!("{tag}-{}-{n}", std::process::id());
    let mut hex = String::new();
    for b in raw.bytes() {
        hex.push_str(&format!("{b:02x}"));
    }
    while hex.len() < 64 {
        hex.push('0');
    }
    hex.truncate(64);
    hex
}

/// A process in its own network and mount namespaces, with `hosts`
/// bind-mounted over /etc/hosts and a resolver that fails fast.
pub struct Ctr {
    child: Child,
    servers: Vec<Child>,
    /// Pid of the namespace's init.
    pub pid: i32,
    /// Container name.
    pub name: String,
    /// Container id.
    pub id: String,
    /// Hosts file on the host side.
    pub hosts: PathBuf,
}

impl Ctr {
    /// Start one (own network namespace).
    pub fn new(dir: &Path, name: &str) -> Ctr {
        Self::spawn(dir, name, true)
    }

    /// Start one sharing the calling thread's network namespace (host mode).
    pub fn in_host_ns(dir: &Path, name: &str) -> Ctr {
        Self::spawn(dir, name, false)
    }

    /// Start one in the network namespace of `other` (container mode).
    pub fn joined(dir: &Path, name: &str, other: &Ctr) -> Ctr {
        Self::spawn_with(dir, name, Some(other.pid), false)
    }

    fn spawn(dir: &Path, name: &str, own_net: bool) -> Ctr {
        Self::spawn_with(dir, name, None, own_net)
    }

    fn spawn_with(dir: &Path, name: &str, join: Option<i32>, own_net: bool) -> Ctr {
        let id = unique_id(name);
        let hosts = dir.join(format!("{name}-{}.hosts", &id[..6]));
        let resolv = dir.join(format!("{name}-{}.resolv", &id[..6]));
        std::fs::write(&hosts, "").expect("write hosts");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("write resolv.conf");
        let script = format!(
            "mount --bind {} /etc/hosts && mount --bind {} /etc/resolv.conf && echo ready && exec sleep 100000",
            hosts.display(),
            resolv.display()
        );
        let join_pid = join.map(|p| p.to_string()).unwrap_or_default();
        let mut args: Vec<&str> = Vec::new();
        if join.is_some() {
            args.extend(["-t", &join_pid, "-n", "--", "unshare"]);
        }
        args.extend(["-m", "--propagation", "private"]);
        if own_net {
            args.push("-n");
        }
        args.extend(["--", "sh", "-c", &script]);
        let program = if join.is_some() { "nsenter" } else { "unshare" };
        let mut child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn unshare");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(
            line.trim(),
            "ready",
            "container stand-in {name} did not start"
        );
        Ctr {
            pid: child.id() as i32,
            child,
            servers: Vec::new(),
            name: name.to_string(),
            id,
            hosts,
        }
    }

    /// The context to attach this container with.
    pub fn ctx(&self, state: &Path) -> NetContext {
        NetContext::new(
            state,
            &self.id,
            &self.name,
            &self.name,
            Some(self.hosts.clone()),
        )
    }

    /// Attach it.
    pub fn attach(&self, state: &Path, req: &NetworkRequest) -> net::Attachment {
        net::attach(&self.ctx(state), self.pid, req)
            .unwrap_or_else(|e| panic!("attach {}: {e}", self.name))
    }

    fn nsenter(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-n", "-m", "--"]);
        c
    }

    /// Run a command inside.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.nsenter()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn nsenter")
    }

    /// Run a shell command inside and return its stdout (panics on failure).
    pub fn sh(&self, cmd: &str) -> String {
        let out = self.exec(&["sh", "-c", cmd]);
        assert!(
            out.status.success(),
            "`{cmd}` in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start a server answering `<tag> <peer address>` on `port`.
    pub fn serve(&mut self, proto: &str, port: u16, tag: &str) {
        let listen = match proto {
            "udp" => format!("UDP-RECVFROM:{port},fork"),
            _ => format!("TCP-LISTEN:{port},fork,reuseaddr"),
        };
        let child = self
            .nsenter()
            .args([
                "socat",
                &listen,
                &format!("SYSTEM:echo {tag} $SOCAT_PEERADDR"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat server");
        self.servers.push(child);
    }

    /// Start a TCP echo server on `port`.
    pub fn serve_echo(&mut self, port: u16) {
        let child = self
            .nsenter()
            .args([
                "socat",
                &format!("TCP-LISTEN:{port},fork,reuseaddr"),
                "EXEC:cat",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat echo server");
        self.servers.push(child);
    }

    /// Ask a server from inside this container.
    pub fn ask(&self, proto: &str, host: &str, port: u16, tries: u32) -> Option<String> {
        ask_with(|| self.nsenter(), proto, host, port, tries)
    }

    /// Stop the process (the namespace goes with it).
    pub fn stop(&mut self) {
        for s in &mut self.servers {
            kill_child(s);
        }
        self.servers.clear();
        kill_child(&mut self.child);
    }

    /// Current contents of its hosts file.
    pub fn hosts_text(&self) -> String {
        std::fs::read_to_string(&self.hosts).unwrap_or_default()
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ask a server from the calling thread's namespace.
pub fn ask(proto: &str, host: &str, port: u16, tries: u32) -> Option<String> {
    ask_with(|| Command::new("env"), proto, host, port, tries)
}

fn ask_with(
    base: impl Fn() -> Command,
    proto: &str,
    host: &str,
    port: u16,
    tries: u32,
) -> Option<String> {
    let target = match proto {
        "udp" => format!("UDP:{host}:{port}"),
        _ => format!("TCP:{host}:{port},connect-timeout=2"),
    };
    for attempt in 0..tries.max(1) {
        let mut c = base();
        c.args(["socat", "-T", "3", "-t", "3", "-", &target]);
        let out = c
            .stdin(if proto == "udp" {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                if let Some(mut i) = child.stdin.take() {
                    use std::io::Write;
                    let _ = i.write_all(b"hello\n");
                }
                child.wait_with_output()
            })
            .expect("spawn socat client");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !text.is_empty() {
            return Some(text);
        }
        if attempt + 1 < tries {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    None
}

/// A bridge-mode request for `network`.
pub fn on(network: &str) -> NetworkRequest {
    NetworkRequest {
        mode: net::NetworkMode::parse(network).expect("network mode"),
        ..Default::default()
    }
}

/// Interface names in the calling thread's namespace.
pub fn links() -> Vec<String> {
    sh("ip -o link show")
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Interfaces strata created (bridges, veths, vxlan) in the calling thread's namespace.
pub fn strata_links() -> Vec<String> {
    links()
        .into_iter()
        .filter(|n| {
            n == "strata0" || n.starts_with("st-") || n.starts_with("vs") || n.starts_with("sx-")
        })
        .collect()
}

/// The ip of `name` as a container.
pub fn ip_of(att: &net::Attachment) -> Ipv4Addr {
    att.ip.expect("attachment has an address")
}
