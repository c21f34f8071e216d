//! Rootless mode: what changes when an ordinary user runs containers.
//!
//! The container gets a user namespace of its own, cloned together with its
//! other namespaces, in which the user's own uid is root. With the setuid
//! helpers `newuidmap`/`newgidmap` (package uidmap) and a range for the user
//! in /etc/subuid and /etc/subgid, ids 1..=65536 map to that range as well;
//! without them the namespace holds the single id (setgroups denied) and a
//! warning says so. The supervisor writes the maps ([`UserNs::write`])
//! before it hands the init its config; the init then re-executes itself so
//! that it holds capabilities in the new namespace (an exec before the map
//! existed dropped them).
//!
//! The union rootfs is mounted by the supervisor as the user through
//! fusermount3, in the initial user namespace. The FUSE server reports host
//! ids, so [`UserNs::union_maps`] turns the image's ids into the host ids
//! the container's namespace shows as the same ids: files owned by 0 in the
//! image show as owned by the user (root inside), image id N by the N-th
//! subordinate id. Files the server creates are owned by the user on disk,
//! i.e. by root inside.
//!
//! What rootless containers cannot have here, refused up front with a
//! reason ([`check_config`]): bridge networks, published ports and joining
//! another container's network (no slirp4netns/pasta: `--network none` and
//! `host` work, and `host` is the default as podman's own default needs a
//! user-mode network stack), and resource limits (cgroup v1 cannot be
//! delegated to an ordinary user; podman 4 warns and drops them there, we
//! refuse rather than drop a requested limit silently).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::container::ContainerConfig;

/// The network a rootless container gets when none was asked for.
pub const DEFAULT_NETWORK: &str = "host";

/// How many subordinate ids a container maps (ids 1..=65536 inside).
pub const SUBORDINATE_IDS: u32 = 65536;

/// Whether strata runs without root, so containers get a user namespace.
pub fn active() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// The network mode used when the user gave no `--network`: docker's
/// default bridge as root, [`DEFAULT_NETWORK`] without root.
pub fn default_network() -> &'static str {
    if active() {
        DEFAULT_NETWORK
    } else {
        crate::net::DEFAULT_NETWORK
    }
}

/// Whether this process runs in a user namespace other than the initial
/// one (its uid map is not the identity of all ids).
pub fn in_user_namespace() -> bool {
    let map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields != ["0", "0", "4294967295"]
}

/// One line of an id map: `count` ids from `inside` (in the container)
/// map to ids from `outside` (on the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapEntry {
    /// First id in the container.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

/// The id maps of a rootless container's user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNs {
    /// uid map lines.
    pub uid: Vec<IdMapEntry>,
    /// gid map lines.
    pub gid: Vec<IdMapEntry>,
    /// `newuidmap` to write a uid map with more than the user's own id.
    pub newuidmap: Option<PathBuf>,
    /// `newgidmap` likewise for gids.
    pub newgidmap: Option<PathBuf>,
    /// Why the maps hold only the user's own ids (`None` with ranges).
    pub single_reason: Option<String>,
}

impl UserNs {
    /// The maps for the calling user: its own id as root, plus its first
    /// subordinate range (at most [`SUBORDINATE_IDS`] ids) when the uidmap
    /// helpers and /etc/subuid, /etc/subgid allow it.
    pub fn detect() -> UserNs {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let name = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        let group = nix::unistd::Group::from_gid(nix::unistd::getgid())
            .ok()
            .flatten()
            .map(|g| g.name)
            .unwrap_or_default();
        let sub_u = fs::read_to_string("/etc/subuid")
            .ok()
            .and_then(|t| subordinate_range(&t, &name, uid));
        // newgidmap checks /etc/subgid against the user's name too.
        let sub_g = fs::read_to_string("/etc/subgid").ok().and_then(|t| {
            subordinate_range(&t, &name, uid).or_else(|| subordinate_range(&t, &group, gid))
        });
        Self::plan(
            uid,
            gid,
            sub_u,
            sub_g,
            find_program("newuidmap"),
            find_program("newgidmap"),
        )
    }

    /// The maps from what [`UserNs::detect`] found (kept apart to be
    /// testable).
    fn plan(
        uid: u32,
        gid: u32,
        sub_u: Option<(u32, u32)>,
        sub_g: Option<(u32, u32)>,
        newuidmap: Option<PathBuf>,
        newgidmap: Option<PathBuf>,
    ) -> UserNs {
        let own = |id| IdMapEntry {
            inside: 0,
            outside: id,
            count: 1,
        };
        let single = |reason: String| UserNs {
            uid: vec![own(uid)],
            gid: vec![own(gid)],
            newuidmap: None,
            newgidmap: None,
            single_reason: Some(reason),
        };
        let (Some(nu), Some(ng)) = (newuidmap, newgidmap) else {
            return single("newuidmap/newgidmap are missing (install the uidmap package)".into());
        };
        let Some((us, uc)) = sub_u else {
            return single(format!("/etc/subuid has no range for uid {uid}"));
        };
        let Some((gs, gc)) = sub_g else {
            return single(format!("/etc/subgid has no range for uid {uid}"));
        };
        let range = |start, count: u32| IdMapEntry {
            inside: 1,
            outside: start,
            count: count.min(SUBORDINATE_IDS),
        };
        UserNs {
            uid: vec![own(uid), range(us, uc)],
            gid: vec![own(gid), range(gs, gc)],
            newuidmap: Some(nu),
            newgidmap: Some(ng),
            single_reason: None,
        }
    }

    /// The warning to show when only the user's own ids are mapped.
    pub fn warning(&self) -> Option<String> {
        self.single_reason
            .as_ref()
            .map(|r| format!("rootless: {r}; the container maps only your own uid and gid to root"))
    }

    /// Write the maps of the user namespace of process `pid` (a fresh
    /// child that waits for them). A helper that fails falls back to the
    /// single-id map, with a warning in the supervisor's log.
    pub fn write(&self, pid: i32) -> Result<()> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let uid_done = match &self.newuidmap {
            Some(helper) => run_helper(helper, pid, &self.uid)
                .map_err(|e| tracing::warn!("{e:#}; mapping only your own uid"))
                .is_ok(),
            None => false,
        };
        if !uid_done {
            write_map_file(&proc_dir.join("uid_map"), &self.uid[..1])?;
        }
        let gid_done = match &self.newgidmap {
            Some(helper) => run_helper(helper, pid, &self.gid)
                .map_err(|e| tracing::warn!("{e:#}; mapping only your own gid"))
                .is_ok(),
            None => false,
        };
        if !gid_done {
            // An unprivileged writer of gid_map must give up setgroups first.
            let p = proc_dir.join("setgroups");
            fs::write(&p, "deny").with_context(|| format!("writing deny to {}", p.display()))?;
            write_map_file(&proc_dir.join("gid_map"), &self.gid[..1])?;
        }
        Ok(())
    }

    /// The unionfs id mappings (shown id → on-disk id) that make the
    /// image's ids appear in the container as themselves: the FUSE server
    /// reports host ids, the namespace turns them back. Files owned by the
    /// user on disk (everything the server creates) show as root.
    pub fn union_maps(&self) -> (Vec<unionfs::IdRange>, Vec<unionfs::IdRange>) {
        (union_ranges(&self.uid), union_ranges(&self.gid))
    }
}

fn union_ranges(map: &[IdMapEntry]) -> Vec<unionfs::IdRange> {
    let mut out = Vec::new();
    // First match wins: the user's own files stay the user's (root inside)
    // even where the image's id range would claim that number.
    if let Some(own) = map.iter().find(|e| e.inside == 0) {
        out.push(unionfs::IdRange {
            inside: own.outside,
            outside: own.outside,
            count: 1,
        });
    }
    for e in map {
        out.push(unionfs::IdRange {
            inside: e.outside,
            outside: e.inside,
            count: e.count,
        });
    }
    out
}

/// The first `start:count` of `name` (or the numeric `id`) in an
/// /etc/subuid-style text.
fn subordinate_range(text: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let id = id.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let owner = f.next()?;
        if owner.is_empty() || (owner != name && owner != id) {
            return None;
        }
        let start = f.next()?.trim().parse().ok()?;
        let count: u32 = f.next()?.trim().parse().ok()?;
        (count > 0).then_some((start, count))
    })
}

/// `name` on PATH or in the usual directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run_helper(helper: &Path, pid: i32, map: &[IdMapEntry]) -> Result<()> {
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for e in map {
        cmd.args([
            e.inside.to_string(),
            e.outside.to_string(),
            e.count.to_string(),
        ]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", helper.display()))?;
    if !out.status.success() {
        bail!(
            "{} {pid} failed: {}",
            helper.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn write_map_file(path: &Path, map: &[IdMapEntry]) -> Result<()> {
    let text: String = map
        .iter()
        .map(|e| format!("{} {} {}\n", e.inside, e.outside, e.count))
        .collect();
    fs::write(path, &text).with_context(|| format!("writing {:?} to {}", text, path.display()))
}

/// Refuse what a rootless container cannot have, saying why and what works.
pub fn check_config(cfg: &ContainerConfig) -> Result<()> {
    let mode = cfg.network.mode.as_str();
    let simple = matches!(mode, "none" | "host");
    if !simple {
        bail!(
            "--network {mode} is not available without root: rootless containers have no \
             user-mode network stack here (slirp4netns/pasta); use --network none or --network host"
        );
    }
    if !cfg.network.publish.is_empty() || cfg.network.publish_all {
        bail!(
            "publishing ports needs a container network, which rootless containers do not have: \
             use --network host and let the service listen on the host's port"
        );
    }
    if cfg.network.ip.is_some() || !cfg.network.aliases.is_empty() || !cfg.network.links.is_empty()
    {
        bail!("--ip, --network-alias and --link need a bridge network: not available without root");
    }
    let r = &cfg.resources;
    let limited = r.memory_bytes > 0
        || r.memory_swap_bytes != 0
        || r.nano_cpus > 0
        || r.cpu_shares > 0
        || !r.cpuset_cpus.is_empty()
        || r.pids_limit > 0
        || r.blkio_weight > 0
        || !r.device_read_bps.is_empty();
    if limited && !crate::cgroup::available() {
        bail!(
            "resource limits (--memory, --cpus, --pids-limit...) need cgroups, and this host's \
             cgroups ({}) are not delegated to your user: run as root, or without the limits",
            cgroup_kind()
        );
    }
    Ok(())
}

fn cgroup_kind() -> &'static str {
    match crate::cgroup::detect() {
        crate::cgroup::Mode::Unified => "cgroup v2",
        crate::cgroup::Mode::Hybrid => "cgroup v1 in hybrid mode",
        crate::cgroup::Mode::Legacy => "cgroup v1",
    }
}

/// Warnings for a rootless start: the single-id fallback and the missing
/// cgroup.
pub fn warnings() -> Vec<String> {
    let mut out = Vec::new();
    if let Some(w) = UserNs::detect().warning() {
        out.push(w);
    }
    if !crate::cgroup::available() {
        out.push(format!(
            "rootless: {} is not delegated to your user: the container runs without a cgroup \
             (no limits or stats)",
            cgroup_kind()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_name_or_uid() {
        let text = "alice:100000:65536\n1001:300000:1000\nbob:0:0\n";
        assert_eq!(subordinate_range(text, "alice", 5), Some((100000, 65536)));
        assert_eq!(subordinate_range(text, "carol", 1001), Some((300000, 1000)));
        assert_eq!(subordinate_range(text, "bob", 7), None);
        assert_eq!(subordinate_range(text, "", 9), None);
    }

    #[test]
    fn ranges_need_both_helpers_and_both_files() {
        let h = || Some(PathBuf::from("/usr/bin/x"));
        let full = UserNs::plan(
            1001,
            1002,
            Some((100000, 70000)),
            Some((200000, 10)),
            h(),
            h(),
        );
        assert_eq!(full.single_reason, None);
        assert_eq!(
            full.uid,
            vec![
                IdMapEntry {
                    inside: 0,
                    outside: 1001,
                    count: 1
                },
                IdMapEntry {
                    inside: 1,
                    outside: 100000,
                    count: SUBORDINATE_IDS
                },
            ]
        );
        assert_eq!(full.gid[1].count, 10);
        let no_helper = UserNs::plan(1001, 1002, Some((1, 1)), Some((1, 1)), None, h());
        assert_eq!(no_helper.uid.len(), 1);
        assert!(no_helper.warning().unwrap().contains("uidmap"));
        let no_range = UserNs::plan(1001, 1002, None, Some((1, 1)), h(), h());
        assert!(no_range.warning().unwrap().contains("/etc/subuid"));
    }

    #[test]
    fn union_maps_show_image_root_as_the_user() {
        let h = || Some(PathBuf::from("/usr/bin/x"));
        let ns = UserNs::plan(
            1001,
            1001,
            Some((100000, 65536)),
            Some((100000, 65536)),
            h(),
            h(),
        );
        let (uids, _) = ns.union_maps();
        // unionfs shows an on-disk id through the first range holding it.
        let m = |disk: u32| {
            uids.iter()
                .find(|r| disk >= r.outside && disk - r.outside < r.count)
                .map_or(65534, |r| r.inside + (disk - r.outside))
        };
        assert_eq!(m(0), 1001);
        assert_eq!(m(1001), 1001);
        assert_eq!(m(5), 100004);
        assert_eq!(m(70000), 65534);
    }
}
