//! `strata image` commands: import, ls, inspect, rm, tag, tree.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use layers_format::view::MergedView;
use layers_format::{FileKind, ImageRecord, Store};

use super::Globals;

/// `image` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import an image from an OCI layout (directory or archive), a
    /// docker-save tar, a layer tar (plain, gzip, zstd) or a directory.
    Import {
        /// What to import; the form is detected.
        path: PathBuf,
        /// Name the image (NAME[:TAG]); may be repeated.
        #[arg(long = "name", short = 't', value_name = "NAME:TAG")]
        names: Vec<String>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Print only image ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show an image's record.
    Inspect {
        /// Image name or id (prefix).
        image: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove image names, and images no name points at any more.
    #[command(alias = "remove")]
    Rm {
        /// Image names or ids.
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove the image even if a container uses it.
        #[arg(short, long)]
        force: bool,
    },
    /// Give an image another name.
    Tag {
        /// Existing image name or id.
        source: String,
        /// New NAME[:TAG].
        target: String,
    },
    /// Print the merged file tree of an image (whiteouts applied).
    Tree {
        /// Image name or id.
        image: String,
        /// Only show entries at most this deep (1 = top level).
        #[arg(long, value_name = "N")]
        max_depth: Option<usize>,
    },
}

/// Run one `image` command.
pub fn run(cmd: Command, globals: &Globals) -> anyhow::Result<ExitCode> {
    let store_dir = globals.store_dir();
    let store = Store::open(&store_dir)
        .with_context(|| format!("opening store {}", store_dir.display()))?;
    match cmd {
        Command::Import { path, names } => import(&store, &path, &names),
        Command::Ls { json, quiet } => ls(&store, json, quiet),
        Command::Inspect { image, json } => inspect(&store, &image, json),
        Command::Rm { images, force } => {
            for image in images {
                let removed = store.remove_image(&image, force)?;
                for n in &removed.untagged {
                    println!("untagged: {n}");
                }
                if removed.deleted {
                    println!("deleted: {}", removed.id);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tag { source, target } => {
            store.tag_image(&source, &target)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tree { image, max_depth } => tree(&store, &image, max_depth),
    }
}

fn import(store: &Store, path: &std::path::Path, names: &[String]) -> anyhow::Result<ExitCode> {
    let total = if path.is_dir() {
        0
    } else {
        std::fs::metadata(path)
            .with_context(|| format!("stat {}", path.display()))?
            .len()
    };
    let bar = if std::io::stderr().is_terminal() && total > 0 {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("importing {}", path.display()));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let tick = |n: u64| bar.inc(n);
    let images = store
        .import_path(path, names, Some(&tick))
        .with_context(|| format!("importing {}", path.display()))?;
    bar.finish_and_clear();
    for image in images {
        let names = if image.names.is_empty() {
            "<none>".to_string()
        } else {
            image.names.join(", ")
        };
        println!("{} {} ({} layers)", image.id, names, image.layers.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Human size, 1000-based like docker.
fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[u])
    }
}

fn image_size(store: &Store, image: &ImageRecord) -> u64 {
    image
        .layers
        .iter()
        .filter_map(|l| store.open_layer(l).ok())
        .map(|idx| {
            (1..=idx.inode_count())
                .filter(|&i| idx.kind(i) == Some(FileKind::Regular))
                .filter_map(|i| idx.attr(i))
                .map(|a| a.size)
                .sum::<u64>()
        })
        .sum()
}

fn ls(store: &Store, json: bool, quiet: bool) -> anyhow::Result<ExitCode> {
    let images = store.list_images()?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &images)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if quiet {
        for image in &images {
            writeln!(out, "{}", image.id)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<40} {:<14} {:>6} {:>10}",
        "NAME", "IMAGE ID", "LAYERS", "SIZE"
    )?;
    for image in &images {
        let size = human(image_size(store, image));
        let short = &image.id.to_hex()[..12];
        let names = if image.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            image.names.clone()
        };
        for name in names {
            writeln!(
                out,
                "{name:<40} {short:<14} {:>6} {size:>10}",
                image.layers.len()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(store: &Store, name: &str, json: bool) -> anyhow::Result<ExitCode> {
    let image = store.resolve_image(name)?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &image)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let c = &image.config;
    writeln!(out, "Id:           {}", image.id)?;
    writeln!(out, "Names:        {}", image.names.join(", "))?;
    if let (Some(os), Some(arch)) = (&image.os, &image.architecture) {
        writeln!(out, "Platform:     {os}/{arch}")?;
    }
    if let Some(created) = &image.created {
        writeln!(out, "Created:      {created}")?;
    }
    if let Some(d) = &image.config_digest {
        writeln!(out, "Config:       {d}")?;
    }
    writeln!(out, "Layers:")?;
    for (i, l) in image.layers.iter().enumerate() {
        match image.diff_ids.get(i) {
            Some(d) => writeln!(out, "  {l} ({d})")?,
            None => writeln!(out, "  {l}")?,
        }
    }
    let opt = |v: &Option<Vec<String>>| v.as_ref().map_or("-".to_string(), |v| format!("{v:?}"));
    writeln!(out, "Entrypoint:   {}", opt(&c.entrypoint))?;
    writeln!(out, "Cmd:          {}", opt(&c.cmd))?;
    writeln!(
        out,
        "WorkingDir:   {}",
        c.working_dir.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "User:         {}", c.user.as_deref().unwrap_or("-"))?;
    writeln!(
        out,
        "StopSignal:   {}",
        c.stop_signal.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "Env:")?;
    for e in &c.env {
        writeln!(out, "  {e}")?;
    }
    if !c.exposed_ports.is_empty() {
        writeln!(out, "ExposedPorts: {}", c.exposed_ports.join(" "))?;
    }
    if !c.volumes.is_empty() {
        writeln!(out, "Volumes:      {}", c.volumes.join(" "))?;
    }
    for (k, v) in &c.labels {
        writeln!(out, "Label:        {k}={v}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ls -l` style type and permission string.
fn mode_string(kind: FileKind, mode: u32) -> String {
    let t = match kind {
        FileKind::Regular => '-',
        FileKind::Directory => 'd',
        FileKind::Symlink => 'l',
        FileKind::CharDevice | FileKind::Whiteout => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
    };
    let mut s = String::with_capacity(10);
    s.push(t);
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: u32, sp: u32, lower: char, upper: char| match (mode & x != 0, mode & sp != 0)
    {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(0o001, 0o1000, 't', 'T'));
    s
}

fn tree(store: &Store, name: &str, max_depth: Option<usize>) -> anyhow::Result<ExitCode> {
    let image = store.resolve_image(name)?;
    let view = MergedView::open(store, &image.layers)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if let Some((_, a)) = view.root_attr() {
        writeln!(
            out,
            "{} {:>5}:{:<5} {:>10} /",
            mode_string(a.kind, a.mode),
            a.uid,
            a.gid,
            ""
        )?;
    }
    let mut result = Ok(());
    view.walk(|path, e| {
        if result.is_err() {
            return;
        }
        let depth = path.iter().filter(|&&c| c == b'/').count() + 1;
        if max_depth.is_some_and(|m| depth > m) {
            return;
        }
        let a = &e.attr;
        let size = match a.kind {
            FileKind::Regular | FileKind::Symlink => a.size.to_string(),
            FileKind::CharDevice | FileKind::BlockDevice => {
                format!(
                    "{},{}",
                    nix::sys::stat::major(a.rdev),
                    nix::sys::stat::minor(a.rdev)
                )
            }
            _ => String::new(),
        };
        let shown = String::from_utf8_lossy(path);
        let suffix = match a.kind {
            FileKind::Directory => "/".to_string(),
            FileKind::Symlink => {
                let target = view.layers()[e.layer].readlink(e.ino).unwrap_or_default();
                format!(" -> {}", String::from_utf8_lossy(target))
            }
            _ => String::new(),
        };
        result = writeln!(
            out,
            "{} {:>5}:{:<5} {:>10} /{shown}{suffix}",
            mode_string(a.kind, a.mode),
            a.uid,
            a.gid,
            size
        );
    });
    result?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_render_like_ls() {
        assert_eq!(mode_string(FileKind::Regular, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(FileKind::Directory, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(FileKind::Regular, 0o2644), "-rw-r-Sr--");
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.5MB");
    }
}
