//! Running iproute2, nftables and util-linux programs.
//!
//! Every program runs in the network namespace of the calling thread, or,
//! through `nsenter --net=/proc/PID/ns/net`, in a container's.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{NetError, Result};

fn package_of(program: &str) -> &'static str {
    match program {
        "nft" => "nftables",
        "nsenter" => "util-linux",
        _ => "iproute2",
    }
}

/// Run `program args...` with `stdin` fed in; error with its stderr on failure.
pub(crate) fn run_input(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| NetError::MissingTool {
        program: program.to_string(),
        package: package_of(program),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the program's own error below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| NetError::MissingTool {
            program: program.to_string(),
            package: package_of(program),
            source,
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut command_line = program.to_string();
    for a in args {
        command_line.push(' ');
        command_line.push_str(a);
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.is_empty() {
        stderr = format!("exit status {}", out.status);
    }
    if let Some(input) = stdin {
        let first = input.lines().take(3).collect::<Vec<_>>().join("; ");
        stderr = format!("{stderr} (input: {first}...)");
    }
    Err(NetError::Command {
        command: command_line,
        stderr,
    })
}

/// Run `program args...`.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    run_input(program, args, None)
}

/// Run `ip args...`.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Does an interface of that name exist in the calling thread's namespace?
pub(crate) fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", "dev", name]).is_ok()
}

/// Delete an interface; a missing one is not an error.
pub(crate) fn delete_link(name: &str) -> Result<()> {
    if !link_exists(name) {
        return Ok(());
    }
    match ip(&["link", "del", "dev", name]) {
        Ok(_) => Ok(()),
        Err(_) if !link_exists(name) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Run an `ip -batch` script inside the network namespace of process `pid`.
pub(crate) fn ip_batch_in(pid: i32, script: &str) -> Result<()> {
    let net = format!("--net=/proc/{pid}/ns/net");
    run_input("nsenter", &[&net, "--", "ip", "-batch", "-"], Some(script)).map(|_| ())
}

/// Apply an nftables script atomically.
pub(crate) fn nft_apply(script: &str) -> Result<()> {
    run_input("nft", &["-f", "-"], Some(script)).map(|_| ())
}

/// Write a sysctl under `/proc/sys/net` of the calling thread's namespace.
pub(crate) fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = std::path::PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|source| NetError::Io { path, source })
}

/// Addresses routed on the host (destination prefixes of every route).
pub(crate) fn host_routes() -> Result<Vec<String>> {
    let out = ip(&["-4", "route", "show", "table", "all"])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let mut first = words.next()?;
            if matches!(
                first,
                "local"
                    | "broadcast"
                    | "unicast"
                    | "multicast"
                    | "anycast"
                    | "throw"
                    | "unreachable"
                    | "prohibit"
                    | "blackhole"
            ) {
                first = words.next()?;
            }
            Some(first.to_string())
        })
        .filter(|d| d != "default")
        .collect())
}
