//! Seccomp filters (compiled with seccompiler).
//!
//! The default filter follows docker's default profile in effect: every
//! syscall docker's profile refuses to an unprivileged container returns
//! EPERM (kernel keyrings, module loading, mount/namespace calls, clock
//! setting, ptrace, bpf, perf...), unless the container holds the capability
//! docker lets unlock it (e.g. CAP_SYS_ADMIN for mount). It is written as a
//! deny list over the x86-64/aarch64 tables rather than docker's allow list.
//! `clone` with namespace flags is refused and `clone3` answers ENOSYS so
//! libcs fall back to `clone`, as docker does.
//!
//! Custom profiles use docker's JSON format (`defaultAction`, `syscalls`
//! with `names`, `action`, `args`), compiled to a small stack of
//! seccompiler filters whose combined verdict is the profile's (see
//! [`from_docker_json`]).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// (syscall, capability that unlocks it in docker's profile).
fn denied() -> Vec<(i64, Option<&'static str>)> {
    use libc::*;
    let mut v: Vec<(i64, Option<&'static str>)> = vec![
        (SYS_add_key, None),
        (SYS_keyctl, None),
        (SYS_request_key, None),
        (SYS_kexec_load, Some("CAP_SYS_BOOT")),
        (SYS_kexec_file_load, Some("CAP_SYS_BOOT")),
        (SYS_reboot, Some("CAP_SYS_BOOT")),
        (SYS_init_module, Some("CAP_SYS_MODULE")),
        (SYS_finit_module, Some("CAP_SYS_MODULE")),
        (SYS_delete_module, Some("CAP_SYS_MODULE")),
        (SYS_mount, Some("CAP_SYS_ADMIN")),
        (SYS_umount2, Some("CAP_SYS_ADMIN")),
        (SYS_pivot_root, Some("CAP_SYS_ADMIN")),
        (SYS_unshare, Some("CAP_SYS_ADMIN")),
        (SYS_setns, Some("CAP_SYS_ADMIN")),
        (SYS_fsopen, Some("CAP_SYS_ADMIN")),
        (SYS_fsconfig, Some("CAP_SYS_ADMIN")),
        (SYS_fsmount, Some("CAP_SYS_ADMIN")),
        (SYS_fspick, Some("CAP_SYS_ADMIN")),
        (SYS_move_mount, Some("CAP_SYS_ADMIN")),
        (SYS_open_tree, Some("CAP_SYS_ADMIN")),
        (SYS_quotactl, Some("CAP_SYS_ADMIN")),
        (SYS_swapon, Some("CAP_SYS_ADMIN")),
        (SYS_swapoff, Some("CAP_SYS_ADMIN")),
        (SYS_lookup_dcookie, Some("CAP_SYS_ADMIN")),
        (SYS_bpf, Some("CAP_SYS_ADMIN")),
        (SYS_perf_event_open, Some("CAP_SYS_ADMIN")),
        (SYS_fanotify_init, Some("CAP_SYS_ADMIN")),
        (SYS_name_to_handle_at, Some("CAP_SYS_ADMIN")),
        (SYS_open_by_handle_at, Some("CAP_DAC_READ_SEARCH")),
        (SYS_acct, Some("CAP_SYS_PACCT")),
        (SYS_ptrace, Some("CAP_SYS_PTRACE")),
        (SYS_process_vm_readv, Some("CAP_SYS_PTRACE")),
        (SYS_process_vm_writev, Some("CAP_SYS_PTRACE")),
        (SYS_kcmp, Some("CAP_SYS_PTRACE")),
        (SYS_settimeofday, Some("CAP_SYS_TIME")),
        (SYS_clock_settime, Some("CAP_SYS_TIME")),
        (SYS_clock_adjtime, Some("CAP_SYS_TIME")),
        (SYS_adjtimex, Some("CAP_SYS_TIME")),
        (SYS_syslog, Some("CAP_SYSLOG")),
        (SYS_mbind, Some("CAP_SYS_NICE")),
        (SYS_set_mempolicy, Some("CAP_SYS_NICE")),
        (SYS_get_mempolicy, Some("CAP_SYS_NICE")),
        (SYS_move_pages, Some("CAP_SYS_NICE")),
        (SYS_userfaultfd, None),
        (SYS_personality, None),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (SYS_iopl, Some("CAP_SYS_RAWIO")),
        (SYS_ioperm, Some("CAP_SYS_RAWIO")),
        (SYS_nfsservctl, Some("CAP_SYS_ADMIN")),
        (SYS_sysfs, None),
        (SYS__sysctl, None),
        (SYS_uselib, None),
        (SYS_ustat, None),
    ]);
    v
}

/// Namespace flags `clone` may not carry without CAP_SYS_ADMIN.
const NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The default filter for a container holding `caps` (names like
/// "CAP_SYS_ADMIN"). Returns the programs to apply, in order.
pub fn default_filter(caps: &[String]) -> Result<Vec<BpfProgram>> {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, cap) in denied() {
        if cap.is_some_and(has) {
            continue;
        }
        if nr == libc::SYS_personality {
            // docker allows the harmless personalities only: a call is
            // denied when its argument equals none of them (AND of Ne).
            let ne: Vec<SeccompCondition> = [0u64, 8, 0x20000, 0x20008, 0xffff_ffff]
                .iter()
                .map(|v| cond(0, SeccompCmpOp::Ne, *v))
                .collect::<Result<_>>()?;
            rules.insert(nr, vec![SeccompRule::new(ne)?]);
            continue;
        }
        rules.insert(nr, vec![]);
    }
    if !has("CAP_SYS_ADMIN") {
        let mut clone_rules = Vec::new();
        for flag in NS_FLAGS {
            clone_rules.push(SeccompRule::new(vec![cond(
                0,
                SeccompCmpOp::MaskedEq(*flag),
                *flag,
            )?])?);
        }
        rules.insert(libc::SYS_clone, clone_rules);
    }
    let main = compile(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
    )?;
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, vec![]);
    let c3 = compile(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?;
    Ok(vec![main, c3])
}

fn cond(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .context("building a seccomp condition")
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram> {
    let filter =
        SeccompFilter::new(rules, mismatch, matched, ARCH).context("building a seccomp filter")?;
    filter.try_into().context("compiling a seccomp filter")
}

/// A docker-format seccomp profile.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<DockerRule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerRule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<DockerArg>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerArg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

fn action_json(action: &str, errno: Option<u32>) -> Result<serde_json::Value> {
    Ok(match action {
        "SCMP_ACT_ALLOW" => "allow".into(),
        "SCMP_ACT_ERRNO" => serde_json::json!({ "errno": errno.unwrap_or(libc::EPERM as u32) }),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => "kill_thread".into(),
        "SCMP_ACT_KILL_PROCESS" => "kill_process".into(),
        "SCMP_ACT_TRAP" => "trap".into(),
        "SCMP_ACT_LOG" => "log".into(),
        other => bail!("seccomp profile: unsupported action {other}"),
    })
}

fn arg_json(a: &DockerArg) -> Result<serde_json::Value> {
    let op: serde_json::Value = match a.op.as_str() {
        "SCMP_CMP_EQ" => "eq".into(),
        "SCMP_CMP_NE" => "ne".into(),
        "SCMP_CMP_LT" => "lt".into(),
        "SCMP_CMP_LE" => "le".into(),
        "SCMP_CMP_GT" => "gt".into(),
        "SCMP_CMP_GE" => "ge".into(),
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(serde_json::json!({
                "index": a.index, "type": "qword", "op": { "masked_eq": a.value }, "val": a.value_two
            }))
        }
        other => bail!("seccomp profile: unsupported comparison {other}"),
    };
    Ok(serde_json::json!({ "index": a.index, "type": "qword", "op": op, "val": a.value }))
}

/// Whether seccompiler knows syscall `name` on this architecture.
fn known_syscall(name: &str) -> bool {
    let probe = serde_json::json!({ "p": {
        "mismatch_action": "allow", "match_action": { "errno": 1 }, "filter": [{ "syscall": name }]
    }});
    seccompiler::compile_from_json(probe.to_string().as_bytes(), ARCH).is_ok()
}

/// Compile a docker-format JSON profile. Syscalls unknown on this
/// architecture are skipped, as docker does.
///
/// seccompiler gives each filter one match action, so a profile becomes a
/// stack of filters whose combined verdict (the kernel takes the strictest
/// one) is the profile's: one filter per non-allow action, each answering
/// allow for everything it does not name, and last a filter that allows
/// every rule the profile names and answers the default action for the
/// rest. A syscall no rule names thus gets the default action; one that a
/// rule names gets that rule's action. The default filter goes last so the
/// earlier ones can still be installed under a strict default.
pub fn from_docker_json(text: &str) -> Result<Vec<BpfProgram>> {
    let p: DockerProfile =
        serde_json::from_str(text).context("parsing the seccomp profile (docker JSON format)")?;
    let default = action_json(&p.default_action, p.default_errno_ret)?;
    let allow = serde_json::Value::from("allow");
    // Keyed by the action's JSON text so the order is stable.
    let mut groups: BTreeMap<String, (serde_json::Value, Vec<serde_json::Value>)> = BTreeMap::new();
    let mut named: Vec<serde_json::Value> = Vec::new();
    for r in &p.syscalls {
        let action = action_json(&r.action, r.errno_ret)?;
        if action == default {
            continue;
        }
        let args = r.args.iter().map(arg_json).collect::<Result<Vec<_>>>()?;
        for name in r.names.iter().chain(r.name.iter()) {
            if !known_syscall(name) {
                continue;
            }
            let mut rule = serde_json::json!({ "syscall": name });
            if !args.is_empty() {
                rule["args"] = serde_json::Value::Array(args.clone());
            }
            named.push(rule.clone());
            if action != allow {
                groups
                    .entry(action.to_string())
                    .or_insert_with(|| (action.clone(), Vec::new()))
                    .1
                    .push(rule);
            }
        }
    }
    let mut out = Vec::new();
    for (action, rules) in groups.into_values() {
        out.push(compile_json(&allow, &action, &merge_rules(rules))?);
    }
    if default != allow {
        out.push(compile_json(&default, &allow, &merge_rules(named))?);
    }
    Ok(out)
}

/// seccompiler wants one entry per syscall: rules for the same syscall are
/// merged (an entry without arguments matches every call and wins).
fn merge_rules(rules: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let mut by_name: BTreeMap<String, Option<Vec<serde_json::Value>>> = BTreeMap::new();
    for r in rules {
        let name = r["syscall"].as_str().unwrap_or_default().to_string();
        let slot = by_name.entry(name).or_insert_with(|| Some(Vec::new()));
        match (r.get("args"), slot.as_mut()) {
            (Some(a), Some(list)) => list.push(a.clone()),
            (None, _) => *slot = None,
            (Some(_), None) => {}
        }
    }
    let mut out = Vec::new();
    for (name, conds) in by_name {
        match conds {
            None => out.push(serde_json::json!({ "syscall": name })),
            // One entry per argument set: seccompiler ORs the entries of a
            // syscall and ANDs the conditions inside each.
            Some(list) => {
                for args in list {
                    out.push(serde_json::json!({ "syscall": name, "args": args }));
                }
            }
        }
    }
    out
}

fn compile_json(
    mismatch: &serde_json::Value,
    matched: &serde_json::Value,
    rules: &[serde_json::Value],
) -> Result<BpfProgram> {
    let json = serde_json::json!({ "f": {
        "mismatch_action": mismatch, "match_action": matched, "filter": rules
    }});
    let mut map = seccompiler::compile_from_json(json.to_string().as_bytes(), ARCH)
        .context("compiling the seccomp profile")?;
    map.remove("f")
        .context("compiling the seccomp profile: the compiler returned no filter")
}

/// Load the filters without setting no_new_privs (needs CAP_SYS_ADMIN):
/// for processes whose spec leaves no_new_privs off, as runc does.
pub fn apply_keeping_privileges(programs: &[BpfProgram]) -> Result<()> {
    for p in programs {
        crate::sys::install_seccomp(p).context("installing the seccomp filter")?;
    }
    Ok(())
}

/// Load the filter into the calling thread (the last step before exec).
pub fn apply(programs: &[BpfProgram]) -> Result<()> {
    for p in programs {
        seccompiler::apply_filter(p).context("installing the seccomp filter")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_compiles_with_and_without_sys_admin() {
        assert_eq!(default_filter(&[]).unwrap().len(), 2);
        assert_eq!(default_filter(&["CAP_SYS_ADMIN".into()]).unwrap().len(), 2);
    }

    #[test]
    fn docker_profiles_compile_and_bad_ones_are_refused() {
        let p = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read","write","no_such_call"],"action":"SCMP_ACT_ALLOW"},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#;
        assert_eq!(from_docker_json(p).unwrap().len(), 1);
        // One default filter plus one per non-allow action.
        let mixed = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW"},
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"names":["keyctl"],"action":"SCMP_ACT_KILL"}]}"#;
        assert_eq!(from_docker_json(mixed).unwrap().len(), 3);
        assert!(from_docker_json(r#"{"defaultAction":"SCMP_ACT_WAT"}"#).is_err());
        assert!(from_docker_json("not json").is_err());
    }

    /// Runs `probe` in a forked child under `programs`; returns its exit code.
    fn in_child_under(programs: &[BpfProgram], probe: fn() -> i32) -> i32 {
        // SAFETY: the child only makes raw syscalls (prctl, seccomp, the
        // probe's calls, exit_group); the programs were built before fork.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let mut code = 100;
                if apply(programs).is_ok() {
                    code = probe();
                }
                libc::syscall(libc::SYS_exit_group, code);
                libc::_exit(code);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFEXITED(status), "child died: {status:#x}");
            libc::WEXITSTATUS(status)
        }
    }

    /// errno of a raw syscall without arguments (0 when it succeeded).
    fn errno_of(nr: libc::c_long) -> i32 {
        // SAFETY: getpid/getppid/getuid take no arguments.
        let r = unsafe { libc::syscall(nr) };
        if r < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    #[test]
    fn profile_with_several_actions_gives_each_syscall_its_own_action() {
        // Default ENOSYS; getpid allowed; getppid answers EACCES; getuid
        // is named nowhere, so it gets the default.
        let p = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
            {"names":["getpid","exit_group","exit"],"action":"SCMP_ACT_ALLOW"},
            {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
        let progs = from_docker_json(p).unwrap();
        fn probe() -> i32 {
            let a = errno_of(libc::SYS_getpid) == 0;
            let b = errno_of(libc::SYS_getppid) == libc::EACCES;
            let c = errno_of(libc::SYS_getuid) == libc::ENOSYS;
            i32::from(a) | i32::from(b) << 1 | i32::from(c) << 2
        }
        assert_eq!(in_child_under(&progs, probe), 0b111);
    }
}
