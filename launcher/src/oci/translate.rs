//! From a bundle's `config.json` to what `create` and the init need: clone
//! flags, namespaces to join, id maps, the mount plan and the process.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use super::init::OciInit;
use crate::container::SeccompProfile;
use crate::process::ProcessSpec;
use crate::rootfs::{Plan, PreparedMount};

/// Mount points the init always sets up itself ([`crate::rootfs::setup`]).
const BUILTIN_MOUNTS: &[&str] = &[
    "/proc",
    "/sys",
    "/sys/fs/cgroup",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
];

/// Everything `create` derives from the spec.
#[derive(Debug)]
pub struct Translated {
    /// Namespaces to create with clone(2).
    pub clone_flags: CloneFlags,
    /// A pid namespace to join (setns by `create` before cloning).
    pub join_pid: Option<PathBuf>,
    /// The init's instructions.
    pub init: OciInit,
    /// uid_map lines.
    pub uid_map: String,
    /// gid_map lines.
    pub gid_map: String,
    /// The user wants a terminal.
    pub terminal: bool,
}

fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

fn map_lines(maps: Option<&Vec<LinuxIdMapping>>) -> String {
    maps.map(|m| {
        m.iter()
            .map(|e| format!("{} {} {}\n", e.container_id(), e.host_id(), e.size()))
            .collect()
    })
    .unwrap_or_default()
}

/// Translate `spec` of the bundle at `bundle` (absolute) for a container
/// whose exec fifo is `fifo`.
pub fn translate(spec: &Spec, bundle: &Path, fifo: &Path) -> Result<Translated> {
    let linux = spec
        .linux()
        .as_ref()
        .context("config.json has no \"linux\" section: only Linux containers are supported")?;
    let mut flags = CloneFlags::empty();
    let mut join = Vec::new();
    let mut join_pid = None;
    let mut cgroupns = false;
    let mut own = Vec::new();
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        let name = ns_name(ns.typ());
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::Time, _) => {
                bail!("the time namespace is not supported by strata oci")
            }
            (LinuxNamespaceType::Mount, Some(p)) => bail!(
                "joining the mount namespace {} is not supported: strata oci needs its own mount namespace",
                p.display()
            ),
            (LinuxNamespaceType::Pid, Some(p)) => join_pid = Some(p.clone()),
            (_, Some(p)) => join.push((name.to_string(), p.clone())),
            (LinuxNamespaceType::Cgroup, None) => cgroupns = true,
            (t, None) => {
                own.push(t);
                flags |= CloneFlags::from_bits_truncate(t as i32);
            }
        }
    }
    if !own.contains(&LinuxNamespaceType::Mount) {
        bail!("config.json must ask for a mount namespace: strata oci always pivots into the root");
    }
    let userns = own.contains(&LinuxNamespaceType::User);
    let uid_map = map_lines(linux.uid_mappings().as_ref());
    let gid_map = map_lines(linux.gid_mappings().as_ref());
    if userns && (uid_map.is_empty() || gid_map.is_empty()) {
        bail!("a user namespace needs uidMappings and gidMappings in config.json");
    }
    // The user namespace is joined first: it grants the rights for the rest.
    join.sort_by_key(|(n, _)| n != "user");

    let root = spec
        .root()
        .as_ref()
        .context("config.json has no \"root\"")?;
    let root_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !root_path.is_dir() {
        bail!("the root {} is not a directory", root_path.display());
    }

    let mut mounts = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let dest = m.destination().to_string_lossy().to_string();
        let dest_norm = dest.trim_end_matches('/');
        if BUILTIN_MOUNTS.contains(&dest_norm) {
            continue;
        }
        let opts = m.options().clone().unwrap_or_default();
        let typ = m.typ().clone().unwrap_or_default();
        let read_only = opts.iter().any(|o| o == "ro");
        let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        if is_bind {
            let src = m
                .source()
                .as_ref()
                .with_context(|| format!("bind mount at {dest} has no source"))?;
            let src = if src.is_absolute() {
                src.clone()
            } else {
                bundle.join(src)
            };
            if !src.exists() {
                bail!(
                    "bind mount source {} for {dest} does not exist",
                    src.display()
                );
            }
            mounts.push(PreparedMount {
                kind: "bind".into(),
                source: src,
                target: dest,
                read_only,
                options: String::new(),
            });
        } else if typ == "tmpfs" {
            let data: Vec<&str> = opts
                .iter()
                .map(String::as_str)
                .filter(|o| o.contains('='))
                .collect();
            mounts.push(PreparedMount {
                kind: "tmpfs".into(),
                source: PathBuf::new(),
                target: dest,
                read_only,
                options: data.join(","),
            });
        } else {
            bail!(
                "mount type {typ:?} at {dest} is not supported by strata oci (bind and tmpfs are)"
            );
        }
    }

    let process = spec
        .process()
        .as_ref()
        .context("config.json has no \"process\"")?;
    let argv = process.args().clone().unwrap_or_default();
    if argv.is_empty() {
        bail!("process.args in config.json is empty");
    }
    let caps = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().clone().or_else(|| c.effective().clone()))
        .map(|set| {
            let mut v: Vec<String> = set.iter().map(|c| format!("CAP_{c}")).collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    let user = process.user();
    let rlimits = process
        .rlimits()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|r| (r.typ().to_string(), r.soft(), r.hard()))
        .collect();
    let own_netns = own.contains(&LinuxNamespaceType::Network);
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if hostname.is_some() && !own.contains(&LinuxNamespaceType::Uts) {
        bail!("config.json sets a hostname without a new uts namespace");
    }
    let seccomp = seccomp_profile(Some(linux))?;
    let init = OciInit {
        plan: Plan {
            root: root_path,
            read_only: root.readonly().unwrap_or(false),
            privileged: true,
            mounts,
            etc_files: Vec::new(),
            mknod: !userns,
            own_netns,
        },
        hostname,
        own_netns,
        cgroupns,
        join,
        masked: linux.masked_paths().clone().unwrap_or_default(),
        readonly: linux.readonly_paths().clone().unwrap_or_default(),
        rlimits,
        fifo: fifo.to_path_buf(),
        terminal: process.terminal().unwrap_or(false),
        process: ProcessSpec {
            argv,
            env: process.env().clone().unwrap_or_default(),
            cwd: process.cwd().to_string_lossy().to_string(),
            user: format!("{}:{}", user.uid(), user.gid()),
            caps,
            seccomp,
            no_new_privs: process.no_new_privileges().unwrap_or(false),
            tty: process.terminal().unwrap_or(false),
            groups_add: user.additional_gids().clone().unwrap_or_default(),
            oci_caps: cap_sets(process),
        },
    };
    Ok(Translated {
        clone_flags: flags,
        join_pid,
        terminal: init.terminal,
        init,
        uid_map,
        gid_map,
    })
}

/// `process.capabilities` as strata's five sets (`CAP_` names); a set the
/// config leaves out is empty, as runc has it.
pub fn cap_sets(process: &oci_spec::runtime::Process) -> Option<crate::capabilities::Sets> {
    let c = process.capabilities().as_ref()?;
    let names = |set: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
        let mut v: Vec<String> = set.iter().flatten().map(|c| format!("CAP_{c}")).collect();
        v.sort();
        v
    };
    Some(crate::capabilities::Sets {
        bounding: names(c.bounding()),
        effective: names(c.effective()),
        inheritable: names(c.inheritable()),
        permitted: names(c.permitted()),
        ambient: names(c.ambient()),
    })
}

/// `linux.seccomp` as a profile: the runtime spec's seccomp object has the
/// field names and action spellings of docker's profile format, so it is
/// compiled by the same code (checked here, at create time).
pub fn seccomp_profile(linux: Option<&oci_spec::runtime::Linux>) -> Result<SeccompProfile> {
    let Some(sc) = linux.and_then(|l| l.seccomp().as_ref()) else {
        return Ok(SeccompProfile::Unconfined);
    };
    if sc.listener_path().is_some() {
        bail!("linux.seccomp.listenerPath (SCMP_ACT_NOTIFY) is not supported by strata oci");
    }
    let text = serde_json::to_string(sc).context("encoding linux.seccomp")?;
    crate::seccomp::from_docker_json(&text).context("linux.seccomp in config.json")?;
    Ok(SeccompProfile::Custom(text))
}
