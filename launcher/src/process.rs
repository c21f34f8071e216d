//! The last steps before a container process executes its command, shared
//! by the container's init and `strata exec`: identity, capabilities,
//! no_new_privs, seccomp, environment, working directory, exec.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::container::SeccompProfile;
use crate::{capabilities, seccomp, user};

/// What to execute and under which restrictions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Command and arguments.
    pub argv: Vec<String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory (created if missing).
    pub cwd: String,
    /// `user[:group]`.
    pub user: String,
    /// Capability names kept.
    pub caps: Vec<String>,
    /// Seccomp profile.
    pub seccomp: SeccompProfile,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// A terminal is attached (adds TERM).
    pub tty: bool,
    /// Supplementary groups added to the user's own (OCI
    /// `process.user.additionalGids`).
    #[serde(default)]
    pub groups_add: Vec<u32>,
    /// OCI's five capability sets; when given they replace `caps`.
    #[serde(default)]
    pub oci_caps: Option<capabilities::Sets>,
}

/// Why exec failed: docker's exit code and a message.
#[derive(Debug)]
pub struct ExecFailure {
    /// 125 (setup), 126 (cannot invoke) or 127 (not found).
    pub code: i32,
    /// What went wrong.
    pub message: String,
}

impl ExecFailure {
    fn setup(e: anyhow::Error) -> Self {
        Self {
            code: 125,
            message: format!("{e:#}"),
        }
    }
}

/// Docker's default PATH.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Fill in PATH, HOME, HOSTNAME and TERM like docker does.
pub fn complete_env(env: &[String], home: &str, hostname: Option<&str>, tty: bool) -> Vec<String> {
    let mut out: Vec<String> = env.to_vec();
    let has = |out: &Vec<String>, k: &str| {
        out.iter()
            .any(|e| e.split_once('=').map(|(a, _)| a) == Some(k))
    };
    if !has(&out, "PATH") {
        out.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if let Some(h) = hostname {
        if !has(&out, "HOSTNAME") {
            out.push(format!("HOSTNAME={h}"));
        }
    }
    if tty && !has(&out, "TERM") {
        out.push("TERM=xterm".into());
    }
    if !has(&out, "HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// Find `cmd` on `PATH` from `env`, or the error docker reports.
pub fn find_executable(cmd: &str, env: &[String]) -> Result<PathBuf, ExecFailure> {
    let check = |p: &Path| -> Result<PathBuf, ExecFailure> {
        match std::fs::metadata(p) {
            Err(_) => Err(ExecFailure {
                code: 127,
                message: format!(
                    "exec: {:?}: stat {}: no such file or directory",
                    cmd,
                    p.display()
                ),
            }),
            Ok(md) if md.is_dir() => Err(ExecFailure {
                code: 126,
                message: format!("exec: {:?}: is a directory", cmd),
            }),
            Ok(md) if md.permissions().mode() & 0o111 == 0 => Err(ExecFailure {
                code: 126,
                message: format!("exec: {:?}: permission denied", cmd),
            }),
            Ok(_) => Ok(p.to_path_buf()),
        }
    };
    if cmd.is_empty() {
        return Err(ExecFailure {
            code: 127,
            message: "no command given and the image has none".into(),
        });
    }
    if cmd.contains('/') {
        return check(Path::new(cmd));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let mut last = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        match check(&Path::new(dir).join(cmd)) {
            Ok(p) => return Ok(p),
            Err(e) if e.code == 126 => last = Some(e),
            Err(_) => {}
        }
    }
    Err(last.unwrap_or(ExecFailure {
        code: 127,
        message: format!("exec: {:?}: executable file not found in $PATH", cmd),
    }))
}

/// Compile the seccomp programs for `spec` (before giving up privileges).
pub fn seccomp_programs(spec: &ProcessSpec) -> Result<Vec<seccompiler::BpfProgram>> {
    match &spec.seccomp {
        SeccompProfile::Unconfined => Ok(Vec::new()),
        SeccompProfile::Default => seccomp::default_filter(&spec.caps),
        SeccompProfile::Custom(text) => seccomp::from_docker_json(text),
    }
}

/// Become the configured user with the configured restrictions and exec.
/// Runs inside the container (root and mounts already final). Returns only
/// on failure.
pub fn finalize_and_exec(spec: &ProcessSpec, hostname: Option<&str>) -> ExecFailure {
    match prepare(spec, hostname) {
        Ok((path, argv, env)) => {
            let err = nix::unistd::execve(&path, &argv, &env).unwrap_err();
            let code = if err == nix::errno::Errno::ENOENT {
                127
            } else {
                126
            };
            ExecFailure {
                code,
                message: format!("exec {}: {err}", path.to_string_lossy()),
            }
        }
        Err(e) => e,
    }
}

type Prepared = (CString, Vec<CString>, Vec<CString>);

/// Whether setgroups(2) is disabled in this user namespace.
fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

fn prepare(spec: &ProcessSpec, hostname: Option<&str>) -> Result<Prepared, ExecFailure> {
    let id = user::resolve(&spec.user, Path::new("/")).map_err(ExecFailure::setup)?;
    let env = complete_env(&spec.env, &id.home, hostname, spec.tty);
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    if std::fs::metadata(cwd).is_err() {
        std::fs::create_dir_all(cwd)
            .with_context(|| format!("creating working directory {cwd}"))
            .map_err(ExecFailure::setup)?;
        let _ = nix::unistd::chown(
            cwd,
            Some(Uid::from_raw(id.uid)),
            Some(Gid::from_raw(id.gid)),
        );
    }
    let programs = seccomp_programs(spec).map_err(ExecFailure::setup)?;
    let bounding = spec.oci_caps.as_ref().map_or(&spec.caps, |s| &s.bounding);
    capabilities::limit_bounding(bounding).map_err(ExecFailure::setup)?;
    nix::sys::prctl::set_keepcaps(true).map_err(|e| ExecFailure::setup(e.into()))?;
    let mut groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    for g in &spec.groups_add {
        if !groups.contains(&Gid::from_raw(*g)) {
            groups.push(Gid::from_raw(*g));
        }
    }
    // Without no_new_privs the filter must go in while we still hold
    // CAP_SYS_ADMIN (as runc does); the steps below then run under it.
    let early = !spec.no_new_privs && !programs.is_empty();
    if early {
        seccomp::apply_keeping_privileges(&programs).map_err(ExecFailure::setup)?;
    }
    let step = |r: nix::Result<()>, what: &str| {
        if r == Err(nix::errno::Errno::EINVAL) && crate::rootless::in_user_namespace() {
            // The id has no host id behind it in this user namespace.
            return Err(ExecFailure::setup(anyhow::anyhow!(
                "{what}: user {}:{} is not mapped in the container's user namespace \
                 (rootless maps only ids that /etc/subuid and /etc/subgid give you, \
                 through newuidmap/newgidmap from the uidmap package)",
                id.uid,
                id.gid
            )));
        }
        r.with_context(|| what.to_string())
            .map_err(ExecFailure::setup)
    };
    // A user namespace with a single-id map denies setgroups; nothing is
    // lost when there are no groups to set.
    if !(groups.is_empty() && setgroups_denied()) {
        step(
            nix::unistd::setgroups(&groups),
            "setting supplementary groups",
        )?;
    }
    step(
        nix::unistd::setresgid(
            Gid::from_raw(id.gid),
            Gid::from_raw(id.gid),
            Gid::from_raw(id.gid),
        ),
        "setting the group id",
    )?;
    step(
        nix::unistd::setresuid(
            Uid::from_raw(id.uid),
            Uid::from_raw(id.uid),
            Uid::from_raw(id.uid),
        ),
        "setting the user id",
    )?;
    match &spec.oci_caps {
        Some(sets) => capabilities::apply_sets(sets),
        None => capabilities::apply(&spec.caps, id.uid),
    }
    .map_err(ExecFailure::setup)?;
    nix::unistd::chdir(cwd)
        .with_context(|| format!("entering working directory {cwd}"))
        .map_err(|e| ExecFailure {
            code: 126,
            message: format!("{e:#}"),
        })?;
    let program = spec.argv.first().cloned().unwrap_or_default();
    let path = find_executable(&program, &env)?;
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| ExecFailure::setup(anyhow::anyhow!("NUL byte in {s:?}")))
    };
    let argv = spec
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env.iter().map(|a| cstr(a)).collect::<Result<Vec<_>, _>>()?;
    let path = cstr(&path.to_string_lossy())?;
    if spec.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(|e| ExecFailure::setup(e.into()))?;
    }
    // Last: after this only the exec itself runs under the filter.
    if !early {
        seccomp::apply(&programs).map_err(ExecFailure::setup)?;
    }
    Ok((path, argv, envp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_is_completed_like_docker() {
        let e = complete_env(&["A=1".into()], "/root", Some("box"), true);
        assert!(e.contains(&format!("PATH={DEFAULT_PATH}")));
        assert!(e.contains(&"HOSTNAME=box".to_string()));
        assert!(e.contains(&"TERM=xterm".to_string()));
        assert!(e.contains(&"HOME=/root".to_string()));
        let e = complete_env(&["PATH=/x".into(), "HOME=/h".into()], "/root", None, false);
        assert_eq!(e, vec!["PATH=/x".to_string(), "HOME=/h".to_string()]);
    }

    #[test]
    fn lookup_errors_use_docker_codes() {
        let env = vec!["PATH=/nonexistent:/bin".to_string()];
        assert_eq!(
            find_executable("definitely-not-here", &env)
                .unwrap_err()
                .code,
            127
        );
        assert_eq!(find_executable("/", &env).unwrap_err().code, 126);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "data").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let plain = plain.to_string_lossy().into_owned();
        assert_eq!(find_executable(&plain, &env).unwrap_err().code, 126);
        assert!(find_executable("sh", &env).is_ok());
    }
}
