//! Helpers shared by the unionfs integration tests: find the built
//! `unionfs` binary, mount/unmount it, build lower trees, snapshot views.
//!
//! The binary is `target/<profile>/unionfs`, next to the test executable's
//! `deps/` directory; `cargo test --workspace` builds it. When running only
//! this crate, build it first: `cargo build -p unionfs` (same profile and
//! target dir), or point `STRATA_UNIONFS` at it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Path of the built `unionfs` binary.
pub fn unionfs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STRATA_UNIONFS") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/unionfs
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("unionfs");
    assert!(
        bin.exists(),
        "unionfs binary not found at {}: run `cargo build -p unionfs` first (or set STRATA_UNIONFS)",
        bin.display()
    );
    bin
}

/// Whether `path` is a mount point (listed in /proc/self/mounts).
pub fn is_mounted(path: &Path) -> bool {
    let want = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|m| Path::new(&m.replace("\\040", " ")) == want)
    })
}

/// Unmounts `path` (fusermount3 -u, then umount, then lazy umount).
pub fn unmount(path: &Path) {
    if !is_mounted(path) {
        return;
    }
    let _ = Command::new("fusermount3").arg("-u").arg(path).output();
    if is_mounted(path) {
        let _ = Command::new("umount").arg(path).output();
    }
    if is_mounted(path) {
        let _ = Command::new("umount").arg("-l").arg(path).output();
    }
}

/// A scratch area: lowers `l0..lN` (l0 is the top), `upper`, `work`, `mnt`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

impl Scratch {
    /// A scratch area with `n` lower directories.
    pub fn new(n: usize) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("unionfs-test-")
            .tempdir_in(std::env::temp_dir())
            .expect("tempdir");
        let lowers: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("l{i}"))).collect();
        for l in &lowers {
            fs::create_dir(l).expect("mkdir lower");
        }
        let upper = dir.path().join("upper");
        let work = dir.path().join("work");
        let mnt = dir.path().join("mnt");
        for d in [&upper, &work, &mnt] {
            fs::create_dir(d).expect("mkdir");
        }
        Scratch {
            dir,
            lowers,
            upper,
            work,
            mnt,
        }
    }

    /// `lowerdir=l0:l1:...` value.
    pub fn lowerdir(&self) -> String {
        self.lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The `-o` option string for a read-write mount.
    pub fn rw_options(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lowerdir(),
            self.upper.display(),
            self.work.display()
        )
    }

    /// Mounts unionfs (daemonised) with the rw options plus `extra`.
    pub fn mount(&self, extra: &str) -> Mount {
        let mut opts = self.rw_options();
        if !extra.is_empty() {
            opts.push(',');
            opts.push_str(extra);
        }
        Mount::unionfs(&["-o", &opts], &self.mnt)
    }

    /// Mounts kernel overlayfs on the same dirs at `at`.
    pub fn mount_kernel_overlay(&self, at: &Path, extra: &str) -> Mount {
        let mut opts = self.rw_options();
        if !extra.is_empty() {
            opts.push(',');
            opts.push_str(extra);
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "kernel overlayfs mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount {
            path: at.to_path_buf(),
        }
    }

    /// Path in lower `i`.
    pub fn lower(&self, i: usize, rel: &str) -> PathBuf {
        self.lowers[i].join(rel)
    }

    /// Path in the mount.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Path in the upper dir.
    pub fn u(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }
}

/// A live mount; unmounted on drop.
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    /// Runs the unionfs binary with `args` then the mount point; it
    /// daemonises and returns once the mount is live.
    pub fn unionfs(args: &[&str], mnt: &Path) -> Mount {
        run_unionfs(args, mnt, None);
        assert!(
            is_mounted(mnt),
            "unionfs returned but {} is not mounted",
            mnt.display()
        );
        Mount {
            path: mnt.to_path_buf(),
        }
    }

    /// Unmounts now.
    pub fn unmount(self) {
        drop(self)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        unmount(&self.path);
        // Give the daemon a moment to exit after the unmount.
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_mounted(&self.path) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Writes a file, creating parents.
pub fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir parents");
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// chmod.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// lchown.
pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// mknod of a char device.
pub fn mknod_char(path: &Path, major: u32, minor: u32) {
    let c = cpath(path);
    // SAFETY: c is a valid NUL-terminated path.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// lsetxattr.
pub fn set_xattr(path: &Path, key: &str, value: &[u8]) {
    let c = cpath(path);
    let k = CString::new(key).expect("key");
    // SAFETY: valid strings and a readable value buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {key} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// lgetxattr; `None` when absent.
pub fn get_xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let c = cpath(path);
    let k = CString::new(key).expect("key");
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid strings and a writable buffer of buf.len() bytes.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// User-visible xattrs (`user.*`) of `path`.
pub fn user_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cpath(path);
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid string and a writable buffer.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let mut out = BTreeMap::new();
    if r <= 0 {
        return out;
    }
    for name in buf[..r as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let n = String::from_utf8_lossy(name).to_string();
        if n.starts_with("user.") {
            if let Some(v) = get_xattr(path, &n) {
                out.insert(n, v);
            }
        }
    }
    out
}

/// What a snapshot records for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: Vec<u8>,
    pub nlink: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Snapshot of a visible tree: path → entry (directories' nlink and sizes ignored).
pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("dirent").file_name())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let ft = md.file_type();
        let (kind, content, size, nlink) = if ft.is_dir() {
            ("dir", Vec::new(), 0, 0)
        } else if ft.is_symlink() {
            let t = fs::read_link(&p).expect("readlink");
            (
                "symlink",
                t.as_os_str().as_bytes().to_vec(),
                md.size(),
                md.nlink(),
            )
        } else if ft.is_file() {
            ("file", fs::read(&p).expect("read"), md.size(), md.nlink())
        } else {
            (
                "special",
                format!("{}", md.rdev()).into_bytes(),
                0,
                md.nlink(),
            )
        };
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        out.insert(
            rel,
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size,
                content,
                nlink,
                xattrs: if ft.is_symlink() {
                    BTreeMap::new()
                } else {
                    user_xattrs(&p)
                },
            },
        );
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

/// Runs a shell command, asserting success; returns stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Makes sure the test user `stratatest` exists (CI creates it; tests may too).
pub fn ensure_test_user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .arg(flag)
            .arg("stratatest")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let _ = Command::new("useradd").args(["-m", "stratatest"]).output();
    }
    let uid = id("-u").expect("test user stratatest exists (useradd stratatest)");
    let gid = id("-g").expect("test user stratatest has a group");
    (uid, gid)
}

/// Size in bytes of the blocks a tree uses on disk (`du`-like, no dedup of hard links).
pub fn disk_usage(root: &Path) -> u64 {
    let mut total = 0;
    let md = fs::symlink_metadata(root).expect("lstat");
    total += md.blocks() * 512;
    if md.is_dir() {
        for e in fs::read_dir(root).expect("read_dir") {
            total += disk_usage(&e.expect("dirent").path());
        }
    }
    total
}

/// Pid of the unionfs daemon serving `mnt` (argv[0] ends in `unionfs`, last argument is `mnt`).
pub fn daemon_pid(mnt: &Path) -> i32 {
    let want = mnt.as_os_str().as_bytes();
    for e in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).filter(|a| !a.is_empty()).collect();
        if args.first().is_some_and(|a| a.ends_with(b"unionfs")) && args.last() == Some(&want) {
            return pid;
        }
    }
    panic!("no unionfs daemon found for {}", mnt.display());
}

/// Runs `script` with `sh -c` as the test user; returns (success, stdout+stderr).
pub fn as_user(uid: u32, gid: u32, script: &str) -> (bool, String) {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &gid.to_string(),
            "--clear-groups",
            "--reset-env",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux) must be installed");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Mounts unionfs with `-o opts` at `mnt`, counting requests per operation
/// into `counts` (`UNIONFS_OPSTATS`, written when the daemon ends). No
/// check of the mount that would itself be a request.
pub fn mount_counting(opts: &str, mnt: &Path, counts: &Path) {
    run_unionfs(&["-o", opts], mnt, Some(counts));
}

/// Runs the unionfs binary with `args` then `mnt` (it daemonises once the
/// mount is live), with `UNIONFS_OPSTATS=counts` if given; asserts success.
fn run_unionfs(args: &[&str], mnt: &Path, counts: Option<&Path>) {
    let mut cmd = Command::new(unionfs_bin());
    if let Some(c) = counts {
        cmd.env("UNIONFS_OPSTATS", c);
    }
    let out = cmd.args(args).arg(mnt).output().expect("run unionfs");
    assert!(
        out.status.success(),
        "unionfs {args:?} {} failed: {}",
        mnt.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The request counts a daemon mounted by [`mount_counting`] wrote as it
/// ended (after its unmount): waits up to 10 s for them.
pub fn request_counts(counts: &Path) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(t) = fs::read_to_string(counts) {
            return t;
        }
        assert!(
            Instant::now() < until,
            "the daemon wrote no request counts to {}",
            counts.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
