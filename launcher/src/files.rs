//! Files in and out of containers: `cp`, `export` (the merged rootfs as a
//! tar) and `commit` (the rw layer becomes a store layer of a new image).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::container::{self, Container};
use crate::lifecycle::Dirs;
use crate::rootfs;
use crate::rootmount::RootMount;

/// The merged rootfs of `c`: the live mount while it runs, else a fresh
/// read-only view (or the `--rootfs` directory).
pub fn view(d: &Dirs, c: &Container, writable: bool) -> Result<RootView> {
    if let Some(dir) = &c.config.rootfs_dir {
        return Ok(RootView {
            path: dir.clone(),
            _mount: None,
        });
    }
    let live = c.paths.rootfs();
    if c.is_live() && rootfs::is_mountpoint(&live) {
        return Ok(RootView {
            path: live,
            _mount: None,
        });
    }
    let m = RootMount::mount_view(c, &d.store, writable)?;
    Ok(RootView {
        path: m.path().to_path_buf(),
        _mount: Some(m),
    })
}

/// A rootfs path, unmounted on drop when it was mounted for us.
pub struct RootView {
    path: PathBuf,
    _mount: Option<RootMount>,
}

impl RootView {
    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn split_ref(s: &str) -> Option<(&str, &str)> {
    // "name:/path" — a host path never has a colon before its first slash.
    let (a, b) = s.split_once(':')?;
    if a.is_empty() || a.contains('/') {
        return None;
    }
    Some((a, b))
}

/// `strata cp SRC DST` where one side is `CONTAINER:PATH`.
pub fn cp(d: &Dirs, src: &str, dst: &str) -> Result<()> {
    match (split_ref(src), split_ref(dst)) {
        (Some((name, path)), None) => {
            let c = container::find(&d.store, &d.state, name)?;
            let v = view(d, &c, false)?;
            let from = rootfs::secure_join(v.path(), path)?;
            if fs::symlink_metadata(&from).is_err() {
                bail!("no such file or directory in container {name}: {path}");
            }
            copy_any(&from, &target_for(&from, Path::new(dst)))
        }
        (None, Some((name, path))) => {
            let c = container::find(&d.store, &d.state, name)?;
            let from = PathBuf::from(src);
            if fs::symlink_metadata(&from).is_err() {
                bail!("no such file or directory on the host: {src}");
            }
            let v = view(d, &c, true)?;
            let to = rootfs::secure_join(v.path(), path)?;
            copy_any(&from, &target_for(&from, &to))
        }
        (Some(_), Some(_)) => {
            bail!("copying between containers is not supported: copy to the host first")
        }
        (None, None) => bail!("one of source and destination must be CONTAINER:PATH"),
    }
}

/// docker's rule: into an existing directory keeps the source's name.
fn target_for(src: &Path, dst: &Path) -> PathBuf {
    if dst.is_dir() {
        if let Some(name) = src.file_name() {
            return dst.join(name);
        }
    }
    dst.to_path_buf()
}

fn copy_any(from: &Path, to: &Path) -> Result<()> {
    let md = fs::symlink_metadata(from)?;
    if md.is_dir() {
        fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        crate::volumes::copy_tree(from, to)
    } else if md.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)
            .with_context(|| format!("creating {}", to.display()))
    } else {
        fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    }
}

/// Write the merged rootfs as a tar to `out` (stdout when None).
pub fn export(d: &Dirs, c: &Container, out: Option<&Path>) -> Result<()> {
    let v = view(d, c, false)?;
    let sink: Box<dyn Write> = match out {
        Some(p) => Box::new(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut b = tar::Builder::new(sink);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    append_tree(&mut b, v.path(), Path::new(""))?;
    b.into_inner().context("finishing the tar")?.flush()?;
    Ok(())
}

fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        let full = root.join(&r);
        let md = fs::symlink_metadata(&full)?;
        b.append_path_with_name(&full, &r)
            .with_context(|| format!("adding {} to the tar", r.display()))?;
        if md.is_dir() {
            append_tree(b, root, &r)?;
        }
    }
    Ok(())
}

/// Turn the rw layer of `c` into a new image; returns the image id.
pub fn commit(
    d: &Dirs,
    c: &Container,
    name: Option<&str>,
    message: Option<&str>,
) -> Result<String> {
    if c.config.rootfs_dir.is_some() {
        bail!("container {} runs on a plain directory (--rootfs), not an image: nothing to commit onto", c.config.name);
    }
    let store = layers_format::Store::open(&d.store)
        .with_context(|| format!("opening the store {}", d.store.display()))?;
    let base_id = c.config.image_id.clone().unwrap_or_default();
    let base = store
        .resolve_image(&base_id)
        .with_context(|| format!("the image of {} is gone from the store", c.config.name))?;
    let layer = store
        .import_layer_from_dir(
            &c.paths.upper(),
            layers_format::import::DirFormat::OverlayUpper,
        )
        .with_context(|| format!("importing the rw layer {}", c.paths.upper().display()))?;
    let mut layers = base.layers.clone();
    layers.push(layer);
    let mut config = base.config.clone();
    config.env = c.config.env.clone();
    config.cmd = if c.config.cmd.is_empty() {
        None
    } else {
        Some(c.config.cmd.clone())
    };
    config.entrypoint = if c.config.entrypoint.is_empty() {
        None
    } else {
        Some(c.config.entrypoint.clone())
    };
    if !c.config.working_dir.is_empty() {
        config.working_dir = Some(c.config.working_dir.clone());
    }
    if let Some(m) = message {
        config
            .labels
            .insert("org.strata.commit.message".into(), m.to_string());
    }
    let new = layers_format::NewImage {
        layers,
        config,
        created: Some(crate::timefmt::rfc3339(crate::timefmt::now_nanos())),
        architecture: base.architecture.clone(),
        os: base.os.clone(),
        ..Default::default()
    };
    let names: Vec<String> = name.map(|n| vec![n.to_string()]).unwrap_or_default();
    let rec = store
        .add_image(&new, &names)
        .context("adding the committed image")?;
    Ok(rec.id.to_string())
}
