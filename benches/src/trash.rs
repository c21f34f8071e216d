//! Scratch trees are set aside during a run and removed at its end.
//!
//! Removing an upper layer of 5,000 files between two measurements slows the
//! next one down. On ext4 without a journal (this machine's root file
//! system), the inode allocator skips every inode freed in the last 60
//! seconds (360 while its inode table block is dirty), and it checks each one
//! it passes: `recently_deleted` in `fs/ext4/ialloc.c`. A backend measured
//! after another backend's untar then scans thousands of freed inodes for
//! every file it creates, and the later a backend runs in a repetition the
//! more it pays. Moving the tree aside is one rename and frees nothing.
//!
//! Big files are removed at once: they are few inodes, and keeping every
//! copied-up or written 1 GiB file until the end would fill the disk.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::progress;

/// Files at least this big are removed at once instead of kept.
const BIG_FILE: u64 = 1 << 20;

/// A directory where discarded scratch trees wait until [`Trash::empty`].
pub struct Trash {
    dir: PathBuf,
    next: AtomicU64,
}

impl Trash {
    /// A trash directory at `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Trash {
        Trash {
            dir,
            next: AtomicU64::new(0),
        }
    }

    /// Removes the big files below `tree` and moves the rest into the trash.
    /// `tree` no longer exists afterwards. A missing `tree` is not an error.
    pub fn discard(&self, tree: &Path) -> Result<()> {
        let meta = match fs::symlink_metadata(tree) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("checking {}", tree.display())),
        };
        if !meta.is_dir() {
            return fs::remove_file(tree).with_context(|| format!("removing {}", tree.display()));
        }
        remove_big_files(tree)?;
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating the trash directory {}", self.dir.display()))?;
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let dest = self.dir.join(format!("t{n}"));
            match fs::rename(tree, &dest) {
                // A name an earlier, interrupted run left: take the next one.
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => continue,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => {
                    return other.with_context(|| {
                        format!("moving {} into {}", tree.display(), self.dir.display())
                    })
                }
            }
        }
    }

    /// Removes everything in the trash, and notes when (see
    /// [`Trash::since_emptied`]).
    pub fn empty(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        progress!("removing scratch trees in {}", self.dir.display());
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))?;
        // Best effort: only a warning of a later run depends on it.
        let _ = fs::write(self.marker(), b"");
        Ok(())
    }

    /// How long ago a run (this one or an earlier one) last emptied this
    /// trash, if it ever did and the clock allows telling.
    pub fn since_emptied(&self) -> Option<Duration> {
        let at = fs::metadata(self.marker()).ok()?.modified().ok()?;
        SystemTime::now().duration_since(at).ok()
    }

    fn marker(&self) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_os_string();
        name.push(".emptied");
        self.dir.with_file_name(name)
    }
}

/// How long creates stay slow after a mass delete on ext4 without a
/// journal (60 s, 360 s while an inode table block is dirty).
pub const SETTLE: Duration = Duration::from_secs(360);

/// What is left of [`SETTLE`] after `since`: zero once it has passed.
pub fn settle_left(since: Option<Duration>) -> Duration {
    since.map_or(Duration::ZERO, |s| SETTLE.saturating_sub(s))
}

fn remove_big_files(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            // overlayfs leaves `work/work` with mode 000; as root it is still
            // readable, and anything else unreadable is simply kept whole.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let meta = entry
                .metadata()
                .with_context(|| format!("checking {}", entry.path().display()))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.len() >= BIG_FILE {
                fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_keeps_small_files_aside_and_drops_big_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("upper");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        fs::write(tree.join("a/b/small"), b"x").unwrap();
        let big = fs::File::create(tree.join("a/big")).unwrap();
        big.set_len(BIG_FILE).unwrap();
        drop(big);
        let trash = Trash::new(tmp.path().join("trash"));
        trash.discard(&tree).unwrap();
        assert!(!tree.exists());
        let kept = tmp.path().join("trash/t0");
        assert_eq!(fs::read(kept.join("a/b/small")).unwrap(), b"x");
        assert!(!kept.join("a/big").exists());
        // The same name is free again: a second tree gets the next slot.
        fs::create_dir_all(&tree).unwrap();
        trash.discard(&tree).unwrap();
        assert!(tmp.path().join("trash/t1").is_dir());
        trash.discard(&tmp.path().join("missing")).unwrap();
        assert!(trash.since_emptied().is_none(), "never emptied yet");
        trash.empty().unwrap();
        let since = trash.since_emptied().expect("emptying leaves a time mark");
        assert!(since < Duration::from_secs(60), "marked {since:?} ago");
        assert!(settle_left(Some(since)) > Duration::from_secs(290));
        assert!(!tmp.path().join("trash").exists());
    }

    #[test]
    fn settling_counts_down_from_six_minutes() {
        assert_eq!(settle_left(None), Duration::ZERO);
        assert_eq!(settle_left(Some(Duration::from_secs(400))), Duration::ZERO);
        assert_eq!(
            settle_left(Some(Duration::from_secs(60))),
            Duration::from_secs(300)
        );
    }
}
