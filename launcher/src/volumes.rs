//! Volumes: named and anonymous volumes under `<store>/volumes/<name>/`
//! (`_data` plus `volume.json`), and turning a container's mount list into
//! host paths the init can mount. Volume data bypasses the union (never
//! copied up, not counted in the rw layer) and outlives the container.

use std::fs;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::container::{self, Container, MountSpec};
use crate::rootfs::{self, PreparedMount};
use crate::timefmt;

/// A volume's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Volume {
    /// Name (64 hex digits for anonymous volumes).
    pub name: String,
    /// Always "local".
    pub driver: String,
    /// Creation time, epoch nanoseconds.
    pub created_nanos: u64,
    /// Created for an image VOLUME or `-v /path` (removed by `rm -v`).
    pub anonymous: bool,
    /// Labels, `KEY=VALUE`.
    pub labels: Vec<String>,
    /// Already filled from an image (fill happens once, when empty).
    pub filled: bool,
}

/// `<store>/volumes`.
pub fn root(store: &Path) -> PathBuf {
    store.join("volumes")
}

/// The data directory of volume `name`.
pub fn data_dir(store: &Path, name: &str) -> PathBuf {
    root(store).join(name).join("_data")
}

/// Check a volume name like docker does.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        bail!("invalid volume name {name:?}: use at least two of [a-zA-Z0-9][a-zA-Z0-9_.-]");
    }
    Ok(())
}

/// Load volume `name`.
pub fn load(store: &Path, name: &str) -> Result<Volume> {
    let p = root(store).join(name).join("volume.json");
    if !p.exists() {
        bail!("no such volume: {name}");
    }
    container::read_json(&p)
}

fn save(store: &Path, v: &Volume) -> Result<()> {
    container::write_atomic(
        &root(store).join(&v.name).join("volume.json"),
        &serde_json::to_vec_pretty(v)?,
    )
}

/// Create volume `name` if missing; returns it and whether it was new.
pub fn ensure(
    store: &Path,
    name: &str,
    anonymous: bool,
    labels: &[String],
) -> Result<(Volume, bool)> {
    validate_name(name)?;
    let _lock = container::lock_file(&lock_path(store)?)?;
    if let Ok(v) = load(store, name) {
        return Ok((v, false));
    }
    let data = data_dir(store, name);
    fs::create_dir_all(&data).with_context(|| format!("creating volume {}", data.display()))?;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755))?;
    let v = Volume {
        name: name.to_string(),
        driver: "local".into(),
        created_nanos: timefmt::now_nanos(),
        anonymous,
        labels: labels.to_vec(),
        filled: false,
    };
    save(store, &v)?;
    Ok((v, true))
}

fn lock_path(store: &Path) -> Result<PathBuf> {
    let r = root(store);
    fs::create_dir_all(&r).with_context(|| format!("creating {}", r.display()))?;
    Ok(r.join(".lock"))
}

/// All volumes.
pub fn list(store: &Path) -> Result<Vec<Volume>> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(root(store)) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(v) = load(store, &name) {
            out.push(v);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Names of containers (any state) using volume `name`.
pub fn users(store: &Path, state: &Path, name: &str) -> Result<Vec<String>> {
    Ok(container::list(store, state)?
        .into_iter()
        .filter(|c| {
            c.config
                .mounts
                .iter()
                .any(|m| m.kind == "volume" && m.source == name)
        })
        .map(|c| c.config.name)
        .collect())
}

/// Remove volume `name`, refused while a container uses it.
pub fn remove(store: &Path, state: &Path, name: &str, force: bool) -> Result<()> {
    load(store, name)?;
    let used = users(store, state, name)?;
    if !used.is_empty() && !force {
        bail!(
            "volume {name} is in use by container(s) {}: remove them first",
            used.join(", ")
        );
    }
    let dir = root(store).join(name);
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

/// Remove the anonymous volumes of `c` (used by `rm -v`).
pub fn remove_anonymous(c: &Container) -> Result<()> {
    let store = c
        .paths
        .dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let Some(store) = store else { return Ok(()) };
    for m in c
        .config
        .mounts
        .iter()
        .filter(|m| m.kind == "volume" && m.anonymous)
    {
        if let Ok(v) = load(&store, &m.source) {
            if v.anonymous {
                let _ = fs::remove_dir_all(root(&store).join(&v.name));
            }
        }
    }
    Ok(())
}

/// Host paths for every mount of `c`; named volumes are created on first
/// use and filled from the image content at their target while empty.
pub fn prepare(c: &Container, store: &Path, rootfs: &Path) -> Result<Vec<PreparedMount>> {
    let mut out = Vec::new();
    for m in &c.config.mounts {
        let source = match m.kind.as_str() {
            "bind" => {
                let src = Path::new(&m.source);
                if !src.exists() {
                    fs::create_dir_all(src)
                        .with_context(|| format!("creating bind source {}", src.display()))?;
                }
                fs::canonicalize(src)
                    .with_context(|| format!("resolving bind source {}", src.display()))?
            }
            "volume" => {
                let (v, _) = ensure(store, &m.source, m.anonymous, &[])?;
                let data = data_dir(store, &v.name);
                if !v.filled {
                    fill_from_image(rootfs, &m.target, &data)?;
                    let mut v = v;
                    v.filled = true;
                    save(store, &v)?;
                }
                data
            }
            "tmpfs" => PathBuf::new(),
            other => bail!("unknown mount type {other}"),
        };
        out.push(PreparedMount {
            kind: if m.kind == "tmpfs" {
                "tmpfs".into()
            } else {
                "bind".into()
            },
            source,
            target: m.target.clone(),
            read_only: m.read_only,
            options: m.options.clone(),
        });
    }
    Ok(out)
}

/// Copy the image's content at `target` into an empty volume, as docker
/// does on first use.
fn fill_from_image(rootfs: &Path, target: &str, data: &Path) -> Result<()> {
    if fs::read_dir(data)
        .map(|mut d| d.next().is_some())
        .unwrap_or(true)
    {
        return Ok(());
    }
    let src = rootfs::secure_join(rootfs, target)?;
    let Ok(md) = fs::metadata(&src) else {
        return Ok(());
    };
    if !md.is_dir() {
        return Ok(());
    }
    copy_tree(&src, data)?;
    fs::set_permissions(data, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    let _ = lchown(data, Some(md.uid()), Some(md.gid()));
    Ok(())
}

/// Copy a directory's contents (files, dirs, symlinks; modes and owners).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    for e in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let md = fs::symlink_metadata(&from)?;
        if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if md.is_dir() {
            fs::create_dir_all(&to)?;
            copy_tree(&from, &to)?;
            fs::set_permissions(&to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
        } else if md.is_file() {
            fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        } else {
            continue;
        }
        let _ = lchown(&to, Some(md.uid()), Some(md.gid()));
    }
    Ok(())
}

/// Parse `-v SPEC`: `HOST:CTR[:ro|rw]`, `NAME:CTR[:ro|rw]` or `CTR`.
pub fn parse_v(spec: &str) -> Result<MountSpec> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => bail!("invalid volume spec {spec:?}: use HOST_PATH:CONTAINER_PATH[:ro], NAME:CONTAINER_PATH or CONTAINER_PATH"),
    };
    if !dst.starts_with('/') {
        bail!("invalid volume spec {spec:?}: the container path must be absolute");
    }
    let mut read_only = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" | "nocopy" => {}
            other => bail!("invalid volume option {other:?} in {spec:?}"),
        }
    }
    let kind = if src.is_empty() {
        "volume"
    } else if src.starts_with('/') || src.starts_with('.') {
        "bind"
    } else {
        validate_name(src)?;
        "volume"
    };
    let source = if kind == "bind" {
        let p = PathBuf::from(src);
        let abs = if p.is_absolute() {
            p
        } else {
            std::env::current_dir()?.join(p)
        };
        abs.to_string_lossy().into_owned()
    } else {
        src.to_string()
    };
    Ok(MountSpec {
        kind: kind.into(),
        anonymous: src.is_empty(),
        source,
        target: clean_target(dst),
        read_only,
        options: String::new(),
    })
}

/// Parse `--mount type=...,source=...,target=...[,readonly]`.
pub fn parse_mount(spec: &str) -> Result<MountSpec> {
    let mut kind = "volume".to_string();
    let mut source = String::new();
    let mut target = String::new();
    let mut read_only = false;
    let mut opts = Vec::new();
    for kv in spec.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "type" => kind = v.to_string(),
            "source" | "src" => source = v.to_string(),
            "target" | "destination" | "dst" => target = v.to_string(),
            "readonly" | "ro" => read_only = v.is_empty() || v == "true" || v == "1",
            "tmpfs-size" => opts.push(format!("size={v}")),
            "tmpfs-mode" => opts.push(format!("mode={v}")),
            "bind-propagation" | "volume-nocopy" | "consistency" => {}
            _ => bail!("invalid --mount field {k:?} in {spec:?}"),
        }
    }
    if !target.starts_with('/') {
        bail!("--mount {spec:?}: target must be an absolute path");
    }
    match kind.as_str() {
        "bind" => {
            if source.is_empty() || !Path::new(&source).exists() {
                bail!("--mount {spec:?}: bind source path {source:?} does not exist");
            }
        }
        "volume" => {
            if !source.is_empty() {
                validate_name(&source)?;
            }
        }
        "tmpfs" => {
            if !source.is_empty() {
                bail!("--mount {spec:?}: tmpfs takes no source");
            }
        }
        other => bail!("--mount {spec:?}: unknown type {other:?} (bind, volume or tmpfs)"),
    }
    Ok(MountSpec {
        anonymous: kind == "volume" && source.is_empty(),
        kind,
        source,
        target: clean_target(&target),
        read_only,
        options: opts.join(","),
    })
}

/// Parse `--tmpfs PATH[:OPTIONS]`.
pub fn parse_tmpfs(spec: &str) -> Result<MountSpec> {
    let (path, opts) = spec.split_once(':').unwrap_or((spec, ""));
    if !path.starts_with('/') {
        bail!("--tmpfs {spec:?}: the path must be absolute");
    }
    let read_only = opts.split(',').any(|o| o == "ro");
    let options: Vec<&str> = opts
        .split(',')
        .filter(|o| !o.is_empty() && *o != "ro" && *o != "rw")
        .collect();
    Ok(MountSpec {
        kind: "tmpfs".into(),
        source: String::new(),
        target: clean_target(path),
        read_only,
        options: options.join(","),
        anonymous: false,
    })
}

fn clean_target(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs_parse_like_docker() {
        let b = parse_v("/data:/srv:ro").unwrap();
        assert_eq!(
            (
                b.kind.as_str(),
                b.source.as_str(),
                b.target.as_str(),
                b.read_only
            ),
            ("bind", "/data", "/srv", true)
        );
        let n = parse_v("cache:/var/cache").unwrap();
        assert_eq!((n.kind.as_str(), n.anonymous), ("volume", false));
        let a = parse_v("/scratch").unwrap();
        assert!(a.anonymous && a.kind == "volume");
        assert!(parse_v("rel/path").is_err());
        assert!(parse_v("/a:/b:bogus").is_err());
        let m = parse_mount("type=tmpfs,target=/run,tmpfs-size=1m").unwrap();
        assert_eq!(m.options, "size=1m");
        assert!(parse_mount("type=bind,source=/nonexistent-xyz,target=/x").is_err());
        let t = parse_tmpfs("/tmp:size=1m,ro").unwrap();
        assert!(t.read_only && t.options == "size=1m");
    }
}
