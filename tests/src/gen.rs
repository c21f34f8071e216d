//! Structure-aware generation of scenarios from bytes (seeded or fuzzer
//! input): random lower trees with whiteouts and opaque dirs, an optional
//! pre-populated upper, and an op sequence over a small name pool so that
//! names collide across layers often.

use arbitrary::{Result as AResult, Unstructured};

use crate::ops::{Op, RenameMode};
use crate::spec::{LayerSpec, Node, NodeKind};
use crate::Scenario;

/// The name pool: short so that paths collide across layers and ops.
pub const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
const XATTR_NAMES: [&str; 3] = ["user.x", "user.y", "user.long.name"];
const FILE_MODES: [u32; 6] = [0o644, 0o600, 0o755, 0o4755, 0o2644, 0o444];
const DIR_MODES: [u32; 5] = [0o755, 0o700, 0o1777, 0o2775, 0o555];
const IDS: [u32; 3] = [0, 1000, 1001];

/// Bytes from a seed (splitmix64), to feed [`scenario_from_bytes`].
pub fn seed_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The scenario a seed stands for, with at most `max_ops` operations.
pub fn scenario_from_seed(seed: u64, max_ops: usize) -> Scenario {
    scenario_from_bytes(&seed_bytes(seed, 16 * 1024 + max_ops * 64), max_ops)
}

/// Decode any byte string into a valid scenario (the cargo-fuzz entry's
/// decoder): 2–3 lowers, an optional upper, up to `max_ops` ops; generation
/// stops early when the bytes run out.
pub fn scenario_from_bytes(data: &[u8], max_ops: usize) -> Scenario {
    let mut u = Unstructured::new(data);
    let mut g = Gen { known: Vec::new() };
    // Decoding never fails with these calls except on exhausted input, where
    // the arbitrary crate returns defaults; fall back to empty parts then.
    // Layers are generated bottom first so a whiteout can name something
    // below it (a whiteout over nothing in a non-merged directory is listed
    // by kernel overlayfs's readdir but not found by lookup, a kernel quirk
    // not worth imitating).
    let nlowers = u.int_in_range(2..=3usize).unwrap_or(2);
    let mut lowers = Vec::new();
    for _ in 0..nlowers {
        lowers.push(g.layer(&mut u, 12).unwrap_or_default());
    }
    let upper = if u.ratio(1, 3).unwrap_or(false) {
        g.layer(&mut u, 5).unwrap_or_default()
    } else {
        LayerSpec::default()
    };
    lowers.reverse();
    let mut ops = Vec::new();
    while ops.len() < max_ops && !u.is_empty() {
        match g.op(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Scenario { lowers, upper, ops }
}

struct Gen {
    known: Vec<String>,
}

impl Gen {
    fn name(&self, u: &mut Unstructured<'_>) -> AResult<&'static str> {
        u.choose(&NAMES).copied()
    }

    fn fresh_path(&self, u: &mut Unstructured<'_>) -> AResult<String> {
        let depth = match u.int_in_range(0..=9u8)? {
            0..=3 => 1,
            4..=7 => 2,
            _ => 3,
        };
        let mut parts = Vec::new();
        for _ in 0..depth {
            parts.push(self.name(u)?);
        }
        Ok(parts.join("/"))
    }

    fn path(&mut self, u: &mut Unstructured<'_>) -> AResult<String> {
        if !self.known.is_empty() && u.ratio(7, 10)? {
            return u.choose(&self.known).cloned();
        }
        // A child of a known path, or a fresh path.
        if !self.known.is_empty() && u.ratio(1, 2)? {
            let parent = u.choose(&self.known)?.clone();
            if parent.matches('/').count() < 3 {
                let p = format!("{parent}/{}", self.name(u)?);
                return Ok(p);
            }
        }
        self.fresh_path(u)
    }

    fn remember(&mut self, p: &str) {
        if !self.known.iter().any(|k| k == p) {
            self.known.push(p.to_string());
        }
    }

    fn ids(&self, u: &mut Unstructured<'_>) -> AResult<(u32, u32)> {
        Ok((*u.choose(&IDS)?, *u.choose(&IDS)?))
    }

    fn data(&self, u: &mut Unstructured<'_>) -> AResult<Vec<u8>> {
        let len = match u.int_in_range(0..=9u8)? {
            0 => 0,
            1..=6 => u.int_in_range(1..=40usize)?,
            _ => u.int_in_range(41..=9000usize)?,
        };
        let b: u8 = u.arbitrary()?;
        Ok(crate::ops::pattern(b, len as u32))
    }

    fn symlink_target(&self, u: &mut Unstructured<'_>) -> AResult<String> {
        // Relative, without "..": resolution stays inside the mount.
        let n = u.int_in_range(1..=2u8)?;
        let mut parts = Vec::new();
        for _ in 0..n {
            parts.push(self.name(u)?);
        }
        Ok(parts.join("/"))
    }

    fn layer(&mut self, u: &mut Unstructured<'_>, max_nodes: usize) -> AResult<LayerSpec> {
        let n = u.int_in_range(0..=max_nodes)?;
        let mut nodes: Vec<Node> = Vec::new();
        let below = self.known.clone();
        for _ in 0..n {
            let mut path = self.fresh_path(u)?;
            let kind = match u.int_in_range(0..=99u8)? {
                0..=24 => NodeKind::Dir { opaque: false },
                25..=54 => NodeKind::File {
                    data: self.data(u)?,
                },
                55..=62 => NodeKind::Symlink {
                    target: self.symlink_target(u)?,
                },
                63..=67 => NodeKind::Fifo,
                68..=81 if !below.is_empty() => {
                    path = u.choose(&below)?.clone();
                    NodeKind::Whiteout
                }
                68..=81 => NodeKind::Dir { opaque: false },
                82..=91 => NodeKind::Dir { opaque: true },
                _ => {
                    let files: Vec<&Node> = nodes
                        .iter()
                        .filter(|n| matches!(n.kind, NodeKind::File { .. }))
                        .collect();
                    if files.is_empty() {
                        NodeKind::File {
                            data: self.data(u)?,
                        }
                    } else {
                        NodeKind::HardLink {
                            to: u.choose(&files)?.path.clone(),
                        }
                    }
                }
            };
            let mode = match kind {
                NodeKind::Dir { .. } => *u.choose(&DIR_MODES)?,
                NodeKind::Symlink { .. } => 0o777,
                _ => *u.choose(&FILE_MODES)?,
            };
            let mut node = Node::new(&path, kind, mode);
            let (uid, gid) = if u.ratio(1, 3)? { self.ids(u)? } else { (0, 0) };
            node = node
                .owner(uid, gid)
                .mtime(1_000_000_000 + i64::from(u.int_in_range(0..=99_999u32)?));
            if matches!(node.kind, NodeKind::File { .. } | NodeKind::Dir { .. }) && u.ratio(1, 4)? {
                node = node.xattr(u.choose(&XATTR_NAMES)?, &self.data(u)?[..]);
                node.xattrs.iter_mut().for_each(|(_, v)| v.truncate(32));
            }
            self.remember(&path);
            nodes.push(node);
        }
        Ok(LayerSpec::new(nodes))
    }

    fn op(&mut self, u: &mut Unstructured<'_>) -> AResult<Op> {
        let op = match u.int_in_range(0..=99u8)? {
            0..=8 => Op::Create {
                path: self.path(u)?,
                mode: *u.choose(&FILE_MODES)?,
                excl: u.ratio(1, 3)?,
            },
            9..=18 => {
                let offset = if u.ratio(1, 5)? {
                    u.int_in_range(0..=70_000u64)?
                } else {
                    u.int_in_range(0..=200u64)?
                };
                Op::Write {
                    path: self.path(u)?,
                    offset,
                    len: u.int_in_range(0..=5000u32)?,
                    byte: u.arbitrary()?,
                }
            }
            19..=24 => Op::Append {
                path: self.path(u)?,
                len: u.int_in_range(1..=300u32)?,
                byte: u.arbitrary()?,
            },
            25..=30 => Op::Truncate {
                path: self.path(u)?,
                len: u.int_in_range(0..=12_000u64)?,
            },
            31..=43 => {
                let mode = match u.int_in_range(0..=9u8)? {
                    0..=5 => RenameMode::Plain,
                    6..=7 => RenameMode::NoReplace,
                    _ => RenameMode::Exchange,
                };
                Op::Rename {
                    from: self.path(u)?,
                    to: self.path(u)?,
                    mode,
                }
            }
            44..=48 => Op::Link {
                from: self.path(u)?,
                to: self.path(u)?,
            },
            49..=51 => Op::Symlink {
                target: self.symlink_target(u)?,
                path: self.path(u)?,
            },
            52..=60 => Op::Unlink {
                path: self.path(u)?,
            },
            61..=66 => Op::Rmdir {
                path: self.path(u)?,
            },
            67..=74 => Op::Mkdir {
                path: self.path(u)?,
                mode: *u.choose(&DIR_MODES)?,
            },
            75..=79 => {
                let modes = [FILE_MODES.as_slice(), DIR_MODES.as_slice()].concat();
                Op::Chmod {
                    path: self.path(u)?,
                    mode: *u.choose(&modes)?,
                }
            }
            80..=84 => {
                let (uid, gid) = self.ids(u)?;
                Op::Chown {
                    path: self.path(u)?,
                    uid,
                    gid,
                }
            }
            85..=88 => Op::Utimes {
                path: self.path(u)?,
                atime: 1_100_000_000 + i64::from(u.int_in_range(0..=99_999u32)?),
                mtime: 1_100_000_000 + i64::from(u.int_in_range(0..=99_999u32)?),
            },
            89..=94 => {
                let mut value = self.data(u)?;
                value.truncate(64);
                Op::SetXattr {
                    path: self.path(u)?,
                    name: u.choose(&XATTR_NAMES)?.to_string(),
                    value,
                }
            }
            95..=97 => Op::RemoveXattr {
                path: self.path(u)?,
                name: u.choose(&XATTR_NAMES)?.to_string(),
            },
            _ => Op::Mkfifo {
                path: self.path(u)?,
                mode: *u.choose(&FILE_MODES)? & 0o777,
            },
        };
        for p in op_paths(&op) {
            self.remember(p);
        }
        Ok(op)
    }
}

/// The paths an op names (so later ops reuse them).
fn op_paths(op: &Op) -> Vec<&str> {
    match op {
        Op::Rename { from, to, .. } | Op::Link { from, to } => vec![from, to],
        Op::Create { path, .. }
        | Op::Write { path, .. }
        | Op::Append { path, .. }
        | Op::Truncate { path, .. }
        | Op::Symlink { path, .. }
        | Op::Unlink { path }
        | Op::Rmdir { path }
        | Op::Mkdir { path, .. }
        | Op::Chmod { path, .. }
        | Op::Chown { path, .. }
        | Op::Utimes { path, .. }
        | Op::SetXattr { path, .. }
        | Op::RemoveXattr { path, .. }
        | Op::Mkfifo { path, .. } => vec![path],
    }
}

/// A tiny deterministic random source (splitmix64) for tests that need
/// random delays or choices without a generator crate's API churn.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Seeded from the clock (printed by callers so a run can be repeated).
    pub fn from_clock() -> SplitMix {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(42);
        SplitMix(t)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}
