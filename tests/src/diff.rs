//! The differential runner: one scenario on kernel overlayfs and on unionfs
//! over identical copies of the same trees, compared op by op; delta
//! debugging to minimise a divergence; reproducers as Rust and shell.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::mount::{self, is_mounted, KernelMount, UnionfsCmd, KERNEL_METACOPY_OPTS, KERNEL_OPTS};
use crate::ops::result_name;
use crate::snapshot::{compare, compare_with, snapshot, Snapshot, SnapshotKind};
use crate::spec::LayerSpec;
use crate::Scenario;

/// What to compare.
#[derive(Clone, Debug)]
pub struct Config {
    /// How to run unionfs.
    pub unionfs: UnionfsCmd,
    /// Compare the visible trees after every op (else only at the end).
    pub compare_each_op: bool,
    /// Compare the upper directories after unmount.
    pub compare_upper: bool,
    /// Cross-remount: kernel overlayfs over unionfs's upper, unionfs over the
    /// kernel's upper; both must show the reference view.
    pub cross_remount: bool,
    /// Maximum runs spent minimising a divergence.
    pub minimise_budget: usize,
    /// Ignore unionfs's `trusted.unionfs.*` bookkeeping xattrs in the upper
    /// and remount comparisons (see `snapshot::compare_with`).
    pub ignore_private_xattrs: bool,
    /// Run the reference kernel mount with metacopy=on (its upper then holds
    /// metacopy files with redirects, which unionfs must read in the
    /// unionfs-over-kernel-upper check).
    pub kernel_metacopy: bool,
}

impl Config {
    /// Everything on, unionfs from [`mount::unionfs_bin`].
    pub fn full() -> Result<Config> {
        Ok(Config {
            unionfs: UnionfsCmd::locate()?,
            compare_each_op: true,
            compare_upper: true,
            cross_remount: true,
            minimise_budget: 400,
            ignore_private_xattrs: true,
            kernel_metacopy: false,
        })
    }
}

/// Which comparison failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// unionfs could not mount the trees at all.
    Mount,
    /// An op returned a different errno.
    Errno,
    /// The visible trees differ.
    Tree,
    /// The unionfs daemon died.
    DaemonDied,
    /// An operation on unionfs did not return within [`HANG_SECS`].
    Hang,
    /// The upper directories differ in format.
    Upper,
    /// Kernel overlayfs over unionfs's upper shows a different view.
    KernelOverUnionfsUpper,
    /// unionfs over the kernel's upper shows a different view.
    UnionfsOverKernelUpper,
}

/// Seconds an operation or a tree walk on unionfs may take before the
/// daemon is killed and the scenario reported as hanging.
pub const HANG_SECS: u64 = 30;

/// Run `f` on its own thread; `None` if it has not finished after `secs`
/// (the thread is left behind, blocked, until the daemon is killed).
fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs)).ok()
}

/// A divergence between kernel overlayfs and unionfs.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// Which comparison.
    pub kind: Kind,
    /// Index of the op after which it showed, if any.
    pub op_index: Option<usize>,
    /// What differed.
    pub details: Vec<String>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} divergence", self.kind)?;
        if let Some(i) = self.op_index {
            write!(f, " at op #{i}")?;
        }
        for d in self.details.iter().take(25) {
            write!(f, "\n    {d}")?;
        }
        if self.details.len() > 25 {
            write!(f, "\n    ... {} more", self.details.len() - 25)?;
        }
        Ok(())
    }
}

/// A scratch directory with both sides' trees; detaches any mount left
/// below it and removes it on drop.
struct Workspace {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Workspace {
    fn new() -> Result<Workspace> {
        let dir = tempfile::Builder::new()
            .prefix("strata-fsdiff-")
            .tempdir_in(std::env::temp_dir())
            .context("create a scratch dir under the temp dir")?
            .keep();
        Ok(Workspace {
            dir,
            mounts: Vec::new(),
        })
    }
    fn side(&self, s: &str) -> PathBuf {
        self.dir.join(s)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        for m in &self.mounts {
            if is_mounted(m) {
                let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if self.mounts.iter().all(|m| !is_mounted(m)) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

struct Side {
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    mnt: PathBuf,
}

fn prepare(root: &Path, sc: &Scenario) -> Result<Side> {
    let mut lowers = Vec::new();
    for (i, l) in sc.lowers.iter().enumerate() {
        let p = root.join(format!("lower{i}"));
        std::fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
        l.build(&p)?;
        lowers.push(p);
    }
    let upper = root.join("upper");
    let work = root.join("work");
    let mnt = root.join("mnt");
    for d in [&upper, &work, &mnt] {
        std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
    }
    sc.upper.build(&upper)?;
    Ok(Side {
        lowers,
        upper,
        work,
        mnt,
    })
}

/// Run `sc` on both filesystems. `Ok(None)`: no divergence. `Err`: the
/// harness itself failed (kernel mount, disk).
pub fn run(sc: &Scenario, cfg: &Config) -> Result<Option<Divergence>> {
    let mut ws = Workspace::new()?;
    let k = prepare(&ws.side("k"), sc)?;
    let u = prepare(&ws.side("u"), sc)?;
    ws.mounts
        .extend([k.mnt.clone(), u.mnt.clone(), ws.side("x").join("mnt")]);
    let kopts = if cfg.kernel_metacopy {
        KERNEL_METACOPY_OPTS
    } else {
        KERNEL_OPTS
    };
    mount::mount_kernel(&k.lowers, &k.upper, &k.work, &k.mnt, kopts)?;
    let kmount = KernelMount::guard(&k.mnt);
    let log = ws.dir.join("unionfs.log");
    let mut um = match cfg
        .unionfs
        .mount(&u.lowers, &u.upper, &u.work, &u.mnt, &log)
    {
        Ok(m) => m,
        Err(e) => {
            return Ok(Some(Divergence {
                kind: Kind::Mount,
                op_index: None,
                details: vec![format!("{e:#}")],
            }))
        }
    };
    let mut last_ref: Option<Snapshot> = None;
    for (i, op) in sc.ops.iter().enumerate() {
        let rk = op.apply(&k.mnt);
        let (op2, umnt) = (op.clone(), u.mnt.clone());
        let Some(ru) = with_timeout(HANG_SECS, move || op2.apply(&umnt)) else {
            um.kill9();
            return Ok(Some(Divergence {
                kind: Kind::Hang,
                op_index: Some(i),
                details: vec![format!(
                    "{op}: no reply from unionfs within {HANG_SECS} s; daemon killed"
                )],
            }));
        };
        if !um.alive() {
            return Ok(Some(Divergence {
                kind: Kind::DaemonDied,
                op_index: Some(i),
                details: vec![format!(
                    "after {op}: unionfs exited; stderr: {}",
                    um.stderr_tail()
                )],
            }));
        }
        if rk != ru {
            return Ok(Some(Divergence {
                kind: Kind::Errno,
                op_index: Some(i),
                details: vec![format!(
                    "{op}: overlayfs {} vs unionfs {}",
                    result_name(&rk),
                    result_name(&ru)
                )],
            }));
        }
        if cfg.compare_each_op || i + 1 == sc.ops.len() {
            let a = snapshot(&k.mnt, SnapshotKind::Visible);
            let umnt = u.mnt.clone();
            let Some(b) = with_timeout(HANG_SECS, move || snapshot(&umnt, SnapshotKind::Visible))
            else {
                um.kill9();
                return Ok(Some(Divergence {
                    kind: Kind::Hang,
                    op_index: Some(i),
                    details: vec![format!(
                        "walking the tree after {op}: no reply within {HANG_SECS} s; daemon killed"
                    )],
                }));
            };
            let d = compare(&a, &b, SnapshotKind::Visible);
            if !d.is_empty() {
                return Ok(Some(Divergence {
                    kind: Kind::Tree,
                    op_index: Some(i),
                    details: d,
                }));
            }
            last_ref = Some(a);
        }
    }
    let reference = match last_ref {
        Some(s) => s,
        None => {
            let (a, b) = (
                snapshot(&k.mnt, SnapshotKind::Visible),
                snapshot(&u.mnt, SnapshotKind::Visible),
            );
            let d = compare(&a, &b, SnapshotKind::Visible);
            if !d.is_empty() {
                return Ok(Some(Divergence {
                    kind: Kind::Tree,
                    op_index: None,
                    details: d,
                }));
            }
            a
        }
    };
    kmount.unmount()?;
    if let Err(e) = um.unmount() {
        return Ok(Some(Divergence {
            kind: Kind::DaemonDied,
            op_index: None,
            details: vec![format!("unmount: {e:#}")],
        }));
    }
    if cfg.compare_upper {
        let d = compare_with(
            &snapshot(&k.upper, SnapshotKind::Upper),
            &snapshot(&u.upper, SnapshotKind::Upper),
            SnapshotKind::Upper,
            cfg.ignore_private_xattrs,
        );
        if !d.is_empty() {
            return Ok(Some(Divergence {
                kind: Kind::Upper,
                op_index: None,
                details: d,
            }));
        }
    }
    if cfg.cross_remount {
        // Kernel overlayfs over the upper unionfs wrote.
        let x = ws.side("x");
        let (xwork, xmnt) = (x.join("work"), x.join("mnt"));
        for d in [&xwork, &xmnt] {
            std::fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
        }
        let view =
            match mount::mount_kernel(&u.lowers, &u.upper, &xwork, &xmnt, KERNEL_METACOPY_OPTS) {
                Ok(()) => {
                    let g = KernelMount::guard(&xmnt);
                    let s = snapshot(&xmnt, SnapshotKind::Visible);
                    g.unmount()?;
                    Ok(s)
                }
                Err(e) => Err(format!("{e:#}")),
            };
        match view {
            Ok(s) => {
                let d = compare_with(
                    &reference,
                    &s,
                    SnapshotKind::Remounted,
                    cfg.ignore_private_xattrs,
                );
                if !d.is_empty() {
                    return Ok(Some(Divergence {
                        kind: Kind::KernelOverUnionfsUpper,
                        op_index: None,
                        details: d,
                    }));
                }
            }
            Err(e) => {
                return Ok(Some(Divergence {
                    kind: Kind::KernelOverUnionfsUpper,
                    op_index: None,
                    details: vec![format!("kernel overlayfs refused unionfs's upper: {e}")],
                }))
            }
        }
        // unionfs over the upper the kernel wrote.
        let ywork = x.join("ywork");
        std::fs::create_dir_all(&ywork).with_context(|| format!("mkdir {}", ywork.display()))?;
        let ylog = ws.dir.join("unionfs-y.log");
        match cfg.unionfs.mount(&k.lowers, &k.upper, &ywork, &xmnt, &ylog) {
            Ok(m) => {
                let s = snapshot(&xmnt, SnapshotKind::Visible);
                let _ = m.unmount();
                let d = compare_with(
                    &reference,
                    &s,
                    SnapshotKind::Remounted,
                    cfg.ignore_private_xattrs,
                );
                if !d.is_empty() {
                    return Ok(Some(Divergence {
                        kind: Kind::UnionfsOverKernelUpper,
                        op_index: None,
                        details: d,
                    }));
                }
            }
            Err(e) => {
                return Ok(Some(Divergence {
                    kind: Kind::UnionfsOverKernelUpper,
                    op_index: None,
                    details: vec![format!("unionfs refused the kernel's upper: {e:#}")],
                }))
            }
        }
    }
    drop(ws);
    Ok(None)
}

/// Run and turn any divergence or harness error into a message holding a
/// minimised reproducer (for `#[test]`s).
pub fn check(sc: &Scenario, cfg: &Config) -> std::result::Result<(), String> {
    match run(sc, cfg) {
        Ok(None) => Ok(()),
        Ok(Some(d)) if d.kind == Kind::Hang => {
            // Each re-run would wait HANG_SECS again: report unminimised.
            Err(format!(
                "{d}\n\nreproducer (not minimised):\n{}",
                Reproducer::new(sc, &d)
            ))
        }
        Ok(Some(d)) => {
            let (min, md) = minimise(sc, cfg, &d);
            Err(format!(
                "{md}\n\nminimised reproducer:\n{}",
                Reproducer::new(&min, &md)
            ))
        }
        Err(e) => Err(format!("harness error: {e:#}")),
    }
}

/// Delta debugging (ddmin) over `items`: the smallest subsequence for which
/// `fails` still holds (1-minimal when the budget allows).
pub fn ddmin<T: Clone>(
    items: Vec<T>,
    budget: &mut usize,
    mut fails: impl FnMut(&[T]) -> bool,
) -> Vec<T> {
    let mut cur = items;
    let mut n = 2usize;
    while cur.len() >= 2 && *budget > 0 {
        let chunk = cur.len().div_ceil(n);
        let mut reduced = false;
        let mut start = 0;
        while start < cur.len() && *budget > 0 {
            let end = (start + chunk).min(cur.len());
            let mut cand = cur[..start].to_vec();
            cand.extend_from_slice(&cur[end..]);
            *budget -= 1;
            if fails(&cand) {
                cur = cand;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
            start = end;
        }
        if !reduced {
            if n >= cur.len() {
                break;
            }
            n = (n * 2).min(cur.len());
        }
    }
    if cur.len() == 1 && *budget > 0 {
        *budget -= 1;
        if fails(&[]) {
            cur.clear();
        }
    }
    cur
}

/// Minimise a diverging scenario: drop ops, then layer entries, while the
/// same kind of divergence persists. Returns the smaller scenario and its
/// divergence.
pub fn minimise(sc: &Scenario, cfg: &Config, first: &Divergence) -> (Scenario, Divergence) {
    let mut best = (sc.clone(), first.clone());
    let mut budget = cfg.minimise_budget;
    let kind = first.kind;
    let try_run = |cand: &Scenario, best: &mut (Scenario, Divergence)| -> bool {
        match run(cand, cfg) {
            Ok(Some(d)) if d.kind == kind => {
                *best = (cand.clone(), d);
                true
            }
            _ => false,
        }
    };
    // Ops after the diverging one are irrelevant.
    if let Some(i) = first.op_index {
        let mut cand = sc.clone();
        cand.ops.truncate(i + 1);
        try_run(&cand, &mut best);
    }
    let base = best.0.clone();
    let ops = ddmin(base.ops.clone(), &mut budget, |ops| {
        let cand = Scenario {
            ops: ops.to_vec(),
            ..base.clone()
        };
        try_run(&cand, &mut best)
    });
    let base = Scenario {
        ops,
        ..best.0.clone()
    };
    // Layer entries, flattened as (layer index, node); index lowers.len() is the upper.
    let mut flat = Vec::new();
    for (li, l) in base
        .lowers
        .iter()
        .chain(std::iter::once(&base.upper))
        .enumerate()
    {
        for n in &l.nodes {
            flat.push((li, n.clone()));
        }
    }
    let nlayers = base.lowers.len();
    let rebuild = |flat: &[(usize, crate::spec::Node)]| -> Scenario {
        let mut lowers = vec![LayerSpec::default(); nlayers];
        let mut upper = LayerSpec::default();
        for (li, n) in flat {
            if *li == nlayers {
                upper.nodes.push(n.clone());
            } else {
                lowers[*li].nodes.push(n.clone());
            }
        }
        Scenario {
            lowers,
            upper,
            ops: base.ops.clone(),
        }
    };
    let _ = ddmin(flat, &mut budget, |f| try_run(&rebuild(f), &mut best));
    best
}

/// A reproducer: a Rust test and a shell script.
pub struct Reproducer {
    /// `#[test]` source using this crate.
    pub rust: String,
    /// Self-contained shell script (needs root, setfattr, python3).
    pub shell: String,
}

impl Reproducer {
    /// Render both forms for `sc`.
    pub fn new(sc: &Scenario, d: &Divergence) -> Reproducer {
        Reproducer {
            rust: rust_snippet(sc, d),
            shell: shell_script(sc),
        }
    }
}

impl fmt::Display for Reproducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "---- rust ----\n{}\n---- shell ----\n{}",
            self.rust, self.shell
        )
    }
}

fn rust_snippet(sc: &Scenario, d: &Divergence) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/// {:?} divergence: {}",
        d.kind,
        d.details.first().map(String::as_str).unwrap_or("")
    );
    s.push_str("#[test]\nfn regression() {\n    let sc = Scenario {\n        lowers: vec![");
    for l in &sc.lowers {
        let _ = write!(s, "\n        {},", l.to_rust());
    }
    let _ = write!(
        s,
        "\n        ],\n        upper: {},\n        ops: vec![",
        sc.upper.to_rust()
    );
    for op in &sc.ops {
        let _ = write!(s, "\n            {},", op.to_rust());
    }
    s.push_str("\n        ],\n    };\n    assert_same(&sc);\n}\n");
    s
}

fn shell_script(sc: &Scenario) -> String {
    let mut s = String::from(
        "#!/bin/bash\n# strata-fsfuzz reproducer: same ops on kernel overlayfs ($T/k) and unionfs ($T/u)\nset -u\nUNIONFS=${UNIONFS:-unionfs}\nT=$(mktemp -d)\nfor side in k u; do\n  S=$T/$side; mkdir -p $S/upper $S/work $S/mnt\n",
    );
    for (i, l) in sc.lowers.iter().enumerate() {
        let _ = writeln!(s, "  mkdir -p $S/lower{i}");
        for line in l.to_shell(&format!("$S/lower{i}")).lines() {
            let _ = writeln!(s, "  {line}");
        }
    }
    for line in sc.upper.to_shell("$S/upper").lines() {
        let _ = writeln!(s, "  {line}");
    }
    s.push_str("done\n");
    let lowers = |side: &str| {
        (0..sc.lowers.len())
            .map(|i| format!("$T/{side}/lower{i}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let _ = writeln!(
        s,
        "mount -t overlay overlay -o lowerdir={},upperdir=$T/k/upper,workdir=$T/k/work,{KERNEL_OPTS} $T/k/mnt",
        lowers("k")
    );
    let _ = writeln!(
        s,
        "$UNIONFS -o lowerdir={},upperdir=$T/u/upper,workdir=$T/u/work $T/u/mnt",
        lowers("u")
    );
    s.push_str("ops() {\n");
    for (i, op) in sc.ops.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {} 2>&1; echo \"op {i} ({}): rc=$?\"",
            op.to_shell(),
            op.kind()
        );
    }
    s.push_str("}\nfor side in k u; do M=$T/$side/mnt; echo \"== $side\"; ops > $T/$side.ops; cat $T/$side.ops; done\n");
    s.push_str("diff $T/k.ops $T/u.ops | sed 's|/u/|/k/|g' >/dev/null\n");
    s.push_str("for side in k u; do (cd $T/$side/mnt && find . -mindepth 1 | sort | while read -r p; do stat -c '%n %F %f %u:%g %s %h %Y' \"$p\"; getfattr -h -d -m - \"$p\" 2>/dev/null | grep -v '^#'; [ -f \"$p\" ] && md5sum < \"$p\"; [ -L \"$p\" ] && readlink \"$p\"; done) > $T/$side.tree; done\n");
    s.push_str("diff -u $T/k.tree $T/u.tree && echo SAME || echo DIFFERENT\n");
    s.push_str("umount $T/k/mnt; umount $T/u/mnt\necho \"trees in $T\"\n");
    s
}
