//! What `inspect`, `top`, `stats` and the size columns of `ps -s` show.

use std::fs;

use anyhow::{bail, Result};
use serde_json::json;

use crate::cgroup;
use crate::container::{Container, Status};
use crate::lifecycle::{self, Dirs};
use crate::{netglue, timefmt};

/// Bytes in the rw layer and in rw + image layers. The rw size is cached
/// in the state and re-measured at most every 5 s, or when the container
/// stopped since the last measurement.
pub fn sizes(d: &Dirs, c: &Container) -> (u64, u64) {
    let stale = c.state.size_measured_nanos == 0
        || (c.is_live() && timefmt::since(c.state.size_measured_nanos).as_secs() >= 5)
        || c.state.size_measured_nanos < c.state.finished_nanos;
    let rw = if stale {
        let n = lifecycle::dir_size(&c.paths.upper());
        let mut c2 = c.clone();
        let now = timefmt::now_nanos();
        let _ = c2.update_state(|s| {
            s.size_rw = n;
            s.size_measured_nanos = now;
        });
        n
    } else {
        c.state.size_rw
    };
    (rw, rw + image_size(d, c))
}

/// Bytes of the image's layers (the rootfs directory for `--rootfs`).
fn image_size(d: &Dirs, c: &Container) -> u64 {
    if let Some(dir) = &c.config.rootfs_dir {
        return lifecycle::dir_size(dir);
    }
    let Ok(store) = layers_format::Store::open(&d.store) else {
        return 0;
    };
    let mut total = 0;
    for l in &c.config.layers {
        if let Ok(id) = layers_format::LayerId::from_hex(l) {
            if let Ok(idx) = store.open_layer(&id) {
                total += layer_bytes(&idx);
            }
        }
    }
    total
}

/// Sum of the regular file sizes in one layer index (read from the index
/// alone, no tree walk).
fn layer_bytes(idx: &layers_format::Index) -> u64 {
    (1..=idx.inode_count())
        .filter_map(|ino| idx.attr(ino))
        .filter(|a| a.kind == layers_format::FileKind::Regular)
        .map(|a| a.size)
        .sum()
}

/// `PORTS` column text.
pub fn ports_text(d: &Dirs, c: &Container) -> String {
    if !c.is_live() {
        return String::new();
    }
    crate::net::port_lines(&d.state, &c.config.id, None)
        .map(|l| l.join(", "))
        .unwrap_or_default()
}

/// docker-shaped inspect object.
pub fn inspect(d: &Dirs, c: &Container, with_size: bool) -> serde_json::Value {
    let cfg = &c.config;
    let s = &c.state;
    let mounts: Vec<serde_json::Value> = cfg
        .mounts
        .iter()
        .map(|m| {
            let source = match m.kind.as_str() {
                "volume" => crate::volumes::data_dir(&d.store, &m.source).to_string_lossy().into_owned(),
                _ => m.source.clone(),
            };
            json!({
                "Type": m.kind, "Name": if m.kind == "volume" { m.source.clone() } else { String::new() },
                "Source": source, "Destination": m.target, "Mode": if m.read_only { "ro" } else { "" },
                "RW": !m.read_only, "Driver": if m.kind == "volume" { "local" } else { "" },
            })
        })
        .collect();
    let stats = if c.is_live() && cgroup::available() {
        cgroup::for_container(&cfg.id).stats().ok()
    } else {
        None
    };
    let mut v = json!({
        "Id": cfg.id,
        "Created": timefmt::rfc3339(cfg.created_nanos),
        "Path": cfg.argv().first().cloned().unwrap_or_default(),
        "Args": cfg.argv().iter().skip(1).cloned().collect::<Vec<_>>(),
        "State": {
            "Status": s.status.as_str(),
            "Running": s.status == Status::Running && c.is_live(),
            "Paused": false,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": if c.is_live() { s.pid } else { 0 },
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": timefmt::rfc3339(s.started_nanos),
            "FinishedAt": timefmt::rfc3339(s.finished_nanos),
        },
        "Image": cfg.image_id.clone().unwrap_or_default(),
        "Name": format!("/{}", cfg.name),
        "RestartCount": s.restart_count,
        "Driver": "strata-unionfs",
        "HostnamePath": c.paths.dir.join("hostname"),
        "HostsPath": netglue::hosts_file(c),
        "ResolvConfPath": c.paths.dir.join("resolv.conf"),
        "LogPath": c.paths.log(),
        "GraphDriver": {
            "Name": "strata-unionfs",
            "Data": { "UpperDir": c.paths.upper(), "WorkDir": c.paths.work(), "MergedDir": c.paths.rootfs(),
                      "LowerLayers": cfg.layers, "RootfsDir": cfg.rootfs_dir },
        },
        "Config": {
            "Hostname": cfg.hostname,
            "User": cfg.user,
            "Tty": cfg.tty,
            "OpenStdin": cfg.interactive,
            "Env": cfg.env,
            "Cmd": cfg.cmd,
            "Entrypoint": cfg.entrypoint,
            "Image": cfg.image,
            "WorkingDir": cfg.working_dir,
            "StopSignal": if cfg.stop_signal.is_empty() { "SIGTERM" } else { cfg.stop_signal.as_str() },
            "StopTimeout": cfg.stop_timeout_secs,
            "Labels": cfg.labels,
            "ExposedPorts": cfg.network.exposed.iter().map(|p| (p.clone(), json!({}))).collect::<serde_json::Map<_, _>>(),
        },
        "HostConfig": {
            "NetworkMode": cfg.network.mode,
            "PortBindings": cfg.network.publish,
            "PublishAllPorts": cfg.network.publish_all,
            "Links": cfg.network.links,
            "RestartPolicy": { "Name": cfg.restart.name, "MaximumRetryCount": cfg.restart.maximum_retry_count },
            "AutoRemove": cfg.auto_remove,
            "Privileged": cfg.privileged,
            "ReadonlyRootfs": cfg.read_only,
            "Init": cfg.init,
            "CapAdd": cfg.cap_add,
            "CapDrop": cfg.cap_drop,
            "SecurityOpt": match &cfg.seccomp {
                crate::container::SeccompProfile::Default => vec![],
                crate::container::SeccompProfile::Unconfined => vec!["seccomp=unconfined".to_string()],
                crate::container::SeccompProfile::Custom(_) => vec!["seccomp=<custom profile>".to_string()],
            },
            "Memory": cfg.resources.memory_bytes,
            "MemorySwap": cfg.resources.memory_swap_bytes,
            "NanoCpus": cfg.resources.nano_cpus,
            "CpuShares": cfg.resources.cpu_shares,
            "CpusetCpus": cfg.resources.cpuset_cpus,
            "PidsLimit": cfg.resources.pids_limit,
            "BlkioWeight": cfg.resources.blkio_weight,
            "VolumesFrom": cfg.volumes_from,
            "LogConfig": { "Type": "json-file", "Config": {
                "max-size": cfg.log.max_size_bytes.to_string(), "max-file": cfg.log.max_files.to_string() } },
        },
        "Mounts": mounts,
        "NetworkSettings": netglue::settings(c, &d.state),
        "Stats": stats,
    });
    if with_size {
        let (rw, virt) = sizes(d, c);
        v["SizeRw"] = json!(rw);
        v["SizeRootFs"] = json!(virt);
    }
    v
}

/// Print the container's processes (`ps -ef` style, host pids).
pub fn top(c: &Container) -> Result<()> {
    if !c.is_live() {
        bail!("container {} is not running", c.config.name);
    }
    let pids = if cgroup::available() {
        cgroup::for_container(&c.config.id).pids()?
    } else {
        vec![c.state.pid]
    };
    println!("{:<8} {:<8} {:<8} {:<10} CMD", "UID", "PID", "PPID", "TIME");
    for pid in pids {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ppid = f.get(1).copied().unwrap_or("?");
        let ticks: u64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let secs = ticks / 100;
        let uid = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(String::from))
            })
            .unwrap_or_default();
        let cmd = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|x| *x == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        println!(
            "{uid:<8} {pid:<8} {ppid:<8} {:02}:{:02}:{:02}   {cmd}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        );
    }
    Ok(())
}

/// `stats`: usage of the named (or all running) containers.
pub fn stats(d: &Dirs, names: &[String], once: bool) -> Result<()> {
    loop {
        let list: Vec<Container> = if names.is_empty() {
            crate::container::list(&d.store, &d.state)?
                .into_iter()
                .filter(|c| c.is_live())
                .collect()
        } else {
            names
                .iter()
                .map(|n| crate::container::find(&d.store, &d.state, n))
                .collect::<Result<_>>()?
        };
        println!(
            "{:<14} {:<22} {:>10} {:>22} {:>6}",
            "CONTAINER ID", "NAME", "CPU TIME", "MEM USAGE / LIMIT", "PIDS"
        );
        for c in &list {
            let st = if c.is_live() && cgroup::available() {
                cgroup::for_container(&c.config.id)
                    .stats()
                    .unwrap_or_default()
            } else {
                Default::default()
            };
            let limit = if st.memory_limit_bytes == 0 {
                "-".to_string()
            } else {
                crate::cli::container::human_bytes(st.memory_limit_bytes)
            };
            println!(
                "{:<14} {:<22} {:>9.2}s {:>22} {:>6}",
                c.short_id(),
                c.config.name,
                st.cpu_usage_nanos as f64 / 1e9,
                format!(
                    "{} / {limit}",
                    crate::cli::container::human_bytes(st.memory_usage_bytes)
                ),
                st.pids_current
            );
        }
        if once {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
