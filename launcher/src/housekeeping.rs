//! `strata system check` and `strata system prune`: find, and remove, what
//! containers whose supervisor was killed left behind.
//!
//! A supervisor killed with SIGKILL takes its container's processes with it
//! (the init has SIGKILL as its parent-death signal), but not the kernel
//! objects it set up: the FUSE mount of the rootfs (now "transport endpoint
//! is not connected"), the cgroups, the veth pair, address lease, published
//! port rules and hosts entries. `rm` releases all of them; `prune` does the
//! same for containers one wants to keep (their rw layer stays), plus state
//! that belongs to no container at all (a half-created container's
//! directory, a run directory without a container).
//!
//! Only what this store and state directory own is considered: the cgroups
//! of containers recorded here, mounts below the store's container
//! directory or the state directory, this state directory's network
//! records. Another store's containers on the same host are never touched.
//! Whatever has a live supervisor is never a leftover.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use crate::cgroup;
use crate::container::{self, Container};
use crate::lifecycle::Dirs;

/// What kind of thing was left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Processes still in a dead container's cgroup.
    Processes,
    /// A mount (the FUSE rootfs or one below it).
    Mount,
    /// A cgroup directory.
    Cgroup,
    /// veth, lease, port rules, hosts entries.
    Network,
    /// Files: a half-created container, a run directory without container.
    State,
}

impl Kind {
    /// Lower-case name for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Processes => "processes",
            Kind::Mount => "mount",
            Kind::Cgroup => "cgroup",
            Kind::Network => "network",
            Kind::State => "state",
        }
    }
}

/// One leftover.
#[derive(Debug, Clone)]
pub struct Leftover {
    /// What it is.
    pub kind: Kind,
    /// The container it belonged to (name, or short id when unknown).
    pub container: String,
    /// Human-readable detail (path, pids, addresses).
    pub detail: String,
    fix: Fix,
}

#[derive(Debug, Clone)]
enum Fix {
    KillCgroup(String),
    Unmount(PathBuf),
    RemoveCgroup(String),
    Network,
    RemoveDir(PathBuf),
}

/// A half-created container directory younger than this may still be
/// being created by a concurrent `strata create`.
const CREATE_GRACE: Duration = Duration::from_secs(60);

/// Mount points (unescaped) from /proc/self/mountinfo.
fn mount_points() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| {
            PathBuf::from(
                m.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .collect()
}

/// Find every leftover of this store and state directory. Changes nothing
/// except what every command does (a state that claims a dead supervisor's
/// container runs is corrected to exited).
pub fn find(dirs: &Dirs) -> Result<Vec<Leftover>> {
    let all = container::list(&dirs.store, &dirs.state)?;
    let by_id16: HashMap<String, &Container> = all
        .iter()
        .map(|c| (c.config.id[..16.min(c.config.id.len())].to_string(), c))
        .collect();
    let alive = |id16: &str| by_id16.get(id16).is_some_and(|c| c.supervisor_alive());
    let label = |id16: &str| {
        by_id16
            .get(id16)
            .map_or_else(|| id16.to_string(), |c| c.config.name.clone())
    };
    let mut out = Vec::new();

    // Processes and cgroups of containers recorded here.
    if cgroup::available() {
        for c in &all {
            if c.supervisor_alive() {
                continue;
            }
            let cg = cgroup::for_container(&c.config.id);
            let dirs_left = cgroup_dirs(&c.config.id);
            if dirs_left.is_empty() {
                continue;
            }
            let pids = cg.pids().unwrap_or_default();
            if !pids.is_empty() {
                out.push(Leftover {
                    kind: Kind::Processes,
                    container: c.config.name.clone(),
                    detail: format!("pids {pids:?} in its cgroup"),
                    fix: Fix::KillCgroup(c.config.id.clone()),
                });
            }
            out.push(Leftover {
                kind: Kind::Cgroup,
                container: c.config.name.clone(),
                detail: dirs_left
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                fix: Fix::RemoveCgroup(c.config.id.clone()),
            });
        }
    }

    // Mounts below the state dir or the store's containers.
    let croot = container::containers_root(&dirs.store);
    let mut mounts: Vec<(PathBuf, String)> = Vec::new();
    for mp in mount_points() {
        let id16 = if let Ok(rest) = mp.strip_prefix(&dirs.state) {
            first_component(rest)
        } else if let Ok(rest) = mp.strip_prefix(&croot) {
            first_component(rest).map(|id| id[..16.min(id.len())].to_string())
        } else {
            None
        };
        if let Some(id16) = id16 {
            if !alive(&id16) && !mounts.iter().any(|(p, _)| *p == mp) {
                mounts.push((mp, id16));
            }
        }
    }
    // Deepest first, so removal order is the listing order.
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (mp, id16) in mounts {
        out.push(Leftover {
            kind: Kind::Mount,
            container: label(&id16),
            detail: mp.display().to_string(),
            fix: Fix::Unmount(mp),
        });
    }

    // Networking records of dead supervisors.
    if dirs.state.join("net").join("state.json").exists() {
        for (id, name, held) in crate::net::stale_containers(&dirs.state)? {
            out.push(Leftover {
                kind: Kind::Network,
                container: if name.is_empty() {
                    id[..12.min(id.len())].to_string()
                } else {
                    name
                },
                detail: held,
                fix: Fix::Network,
            });
        }
    }

    // Run directories that belong to no container.
    if let Ok(entries) = fs::read_dir(&dirs.state) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_run_dir = name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if is_run_dir && !by_id16.contains_key(&name) && old_enough(&e.path()) {
                out.push(Leftover {
                    kind: Kind::State,
                    container: name.clone(),
                    detail: format!("run directory {} without a container", e.path().display()),
                    fix: Fix::RemoveDir(e.path()),
                });
            }
        }
    }
    // Container directories without a config (a create that died).
    if let Ok(entries) = fs::read_dir(&croot) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_id = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if is_id && !e.path().join("config.json").exists() && old_enough(&e.path()) {
                out.push(Leftover {
                    kind: Kind::State,
                    container: name[..12].to_string(),
                    detail: format!("half-created container {}", e.path().display()),
                    fix: Fix::RemoveDir(e.path()),
                });
            }
        }
    }
    Ok(out)
}

fn first_component(rest: &Path) -> Option<String> {
    rest.components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
}

fn old_enough(p: &Path) -> bool {
    fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= CREATE_GRACE)
}

/// The cgroup directories of container `id` that exist.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found = Vec::new();
    let v2 = root.join("strata").join(id);
    if v2.is_dir() {
        found.push(v2);
    }
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path().join("strata").join(id);
            if p.is_dir() && !found.contains(&p) {
                found.push(p);
            }
        }
    }
    found
}

/// Remove `items` (from [`find`]), in order; returns each one's outcome.
pub fn remove(dirs: &Dirs, items: &[Leftover]) -> Vec<(Leftover, Result<()>)> {
    let mut done = Vec::new();
    let mut network_done = false;
    for it in items {
        let r = match &it.fix {
            Fix::KillCgroup(id) => kill_cgroup(id),
            Fix::Unmount(mp) => unmount(mp),
            Fix::RemoveCgroup(id) => cgroup::for_container(id)
                .destroy()
                .with_context(|| format!("removing the cgroups of {id}")),
            Fix::Network if network_done => Ok(()),
            Fix::Network => {
                network_done = true;
                crate::net::cleanup_stale(&dirs.state)
                    .map(|_| ())
                    .context("releasing the networking of dead containers")
            }
            Fix::RemoveDir(p) => remove_dir(p),
        };
        done.push((it.clone(), r));
    }
    done
}

fn kill_cgroup(id: &str) -> Result<()> {
    let cg = cgroup::for_container(id);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = cg.pids()?;
        if pids.is_empty() {
            return Ok(());
        }
        for p in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!("processes of {id} survive SIGKILL (stuck in the kernel?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unmount(mp: &Path) -> Result<()> {
    if nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH).is_ok() {
        return Ok(());
    }
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg("--")
        .arg(mp)
        .output()
        .context("running fusermount3 (package fuse3)")?;
    if out.status.success() {
        Ok(())
    } else {
        anyhow::bail!(
            "unmounting {}: {}",
            mp.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

fn remove_dir(p: &Path) -> Result<()> {
    // Anything still mounted below goes first, or remove_dir_all would
    // descend into it.
    let mut below: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(p))
        .collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in below {
        unmount(&m)?;
    }
    fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
}
