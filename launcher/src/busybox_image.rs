//! The built-in image: a minimal root filesystem made from the host's
//! static busybox (package busybox-static), with one symlink per applet,
//! /etc/passwd, /etc/group and the usual empty directories.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Where the busybox binary is looked for.
pub const BUSYBOX_PATHS: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Find a static busybox on the host.
pub fn find_busybox() -> Result<&'static Path> {
    for p in BUSYBOX_PATHS {
        let path = Path::new(p);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!("busybox not found in /bin or /usr/bin: install the busybox-static package")
}

/// Build the busybox root filesystem into the empty directory `dir`.
pub fn build(dir: &Path) -> Result<()> {
    let bb = find_busybox()?;
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "tmp", "root", "home",
        "var/log", "run",
    ] {
        fs::create_dir_all(dir.join(d))
            .with_context(|| format!("creating {}", dir.join(d).display()))?;
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o700))?;
    fs::copy(bb, dir.join("bin/busybox")).with_context(|| format!("copying {}", bb.display()))?;
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755))?;
    let out = Command::new(bb)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {} --list-full", bb.display()))?;
    if !out.status.success() {
        bail!(
            "{} --list-full failed: is it a full busybox build?",
            bb.display()
        );
    }
    for applet in String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if applet.contains("..") || applet.starts_with('/') || applet == "bin/busybox" {
            continue;
        }
        let link = dir.join(applet);
        if link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink("/bin/busybox", &link).with_context(|| format!("linking {}", link.display()))?;
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\ntty:x:5:\nusers:x:100:\nnogroup:x:65534:\n",
    )?;
    fs::write(dir.join("etc/hostname"), "busybox\n")?;
    fs::write(dir.join("etc/hosts"), "127.0.0.1\tlocalhost\n")?;
    fs::write(dir.join("etc/resolv.conf"), "")?;
    fs::write(
        dir.join("etc/os-release"),
        "NAME=\"strata busybox\"\nID=busybox\n",
    )?;
    Ok(())
}

/// Build the image and import it into the store as `name`; returns the
/// image id.
pub fn import(store_dir: &Path, name: &str) -> Result<String> {
    let tmp = tempdir_in(store_dir)?;
    let result = (|| -> Result<String> {
        build(&tmp)?;
        let store = layers_format::Store::open(store_dir)
            .with_context(|| format!("opening the store {}", store_dir.display()))?;
        let layer = store
            .import_layer_from_dir(&tmp, layers_format::import::DirFormat::Plain)
            .context("importing the busybox directory")?;
        let config = layers_format::ImageConfig {
            env: vec![format!("PATH={}", crate::process::DEFAULT_PATH)],
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        let new = layers_format::NewImage {
            layers: vec![layer],
            config,
            architecture: Some(
                std::env::consts::ARCH
                    .replace("x86_64", "amd64")
                    .replace("aarch64", "arm64"),
            ),
            os: Some("linux".into()),
            ..Default::default()
        };
        let rec = store
            .add_image(&new, &[name.to_string()])
            .context("adding the busybox image")?;
        Ok(rec.id.to_string())
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn tempdir_in(store: &Path) -> Result<std::path::PathBuf> {
    fs::create_dir_all(store).with_context(|| format!("creating {}", store.display()))?;
    let p = store.join(format!(".busybox-build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}
