//! The synthetic layered dataset: three lower directories shaped like a
//! distribution root filesystem, a 10,000-entry directory spread over the
//! layers, big files for streaming and copy-up, and a tarball for the untar
//! workload.
//!
//! The layout is generated from a fixed seed, so the plan (which file lives in
//! which layer, with which size) can be recomputed at any time without reading
//! the disk. The files are written once and reused between runs; a manifest
//! with a `complete` flag marks a finished build, and a few cheap checks on
//! every start catch a lower layer that a misbehaving union filesystem wrote
//! through to.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::progress;
use crate::rng::Rng;
use crate::trash::Trash;

/// Bump when the generator changes, so cached datasets are rebuilt.
const FORMAT_VERSION: u32 = 4;

/// Relative path of the 1 GiB file read sequentially and appended to (copy-up), in lower1.
pub const SEQ_REL: &str = "opt/bigdata/seq.bin";
/// Relative path of the file read at random 4 KiB offsets, in lower2.
pub const RAND_REL: &str = "opt/bigdata/rand.bin";
/// The directory whose entries are spread over all three layers.
pub const BIGDIR_REL: &str = "usr/share/bigdir";
/// The subtree removed by the `rm_rf` workload; present in all three layers.
pub const RM_REL: &str = "usr/share/doc";
/// The tree of large files changed by the `chown_r` workload, in lower2.
pub const CHOWN_REL: &str = "opt/media";

/// Dataset size presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// About 40,000 entries, 1 GiB big files: the published numbers.
    Full,
    /// About a tenth of everything: a smoke test that runs in a minute or two.
    Quick,
}

/// Sizes derived from a [`Scale`].
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Params {
    /// Number of synthetic packages spread over the layers.
    pub packages: usize,
    /// Entries in the merged big directory.
    pub bigdir_entries: usize,
    /// Size of the sequential-read / copy-up file.
    pub seq_bytes: u64,
    /// Size of the random-read file.
    pub rand_bytes: u64,
    /// Number of files in the chown tree and the size of each.
    pub chown_files: usize,
    /// Size of one file in the chown tree.
    pub chown_file_bytes: u64,
    /// Small lower files appended to by `copyup_small`.
    pub copyup_small_files: usize,
    /// Files in the untar tarball.
    pub tar_files: usize,
    /// Files written by `create_fsync`.
    pub fsync_files: usize,
    /// Size of the file written by `seqwrite_1g`.
    pub seqwrite_bytes: u64,
    /// Seconds of random reads.
    pub randread_secs: f64,
    /// Listings of the big directory per sample.
    pub readdir_iters: usize,
    /// Rounds of the PATH search (each looks for 50 commands).
    pub path_rounds: usize,
}

impl Scale {
    /// The sizes for this scale.
    pub fn params(self) -> Params {
        match self {
            Scale::Full => Params {
                packages: 760,
                bigdir_entries: 10_000,
                seq_bytes: 1 << 30,
                rand_bytes: 1 << 30,
                chown_files: 16,
                chown_file_bytes: 64 << 20,
                copyup_small_files: 1_000,
                tar_files: 5_000,
                fsync_files: 1_000,
                seqwrite_bytes: 1 << 30,
                randread_secs: 10.0,
                readdir_iters: 20,
                path_rounds: 200,
            },
            Scale::Quick => Params {
                packages: 76,
                bigdir_entries: 1_000,
                seq_bytes: 64 << 20,
                rand_bytes: 64 << 20,
                chown_files: 8,
                chown_file_bytes: 4 << 20,
                copyup_small_files: 100,
                tar_files: 500,
                fsync_files: 100,
                seqwrite_bytes: 64 << 20,
                randread_secs: 2.0,
                readdir_iters: 10,
                path_rounds: 50,
            },
        }
    }

    /// Lower-case name used in paths and reports.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Full => "full",
            Scale::Quick => "quick",
        }
    }
}

/// One planned entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A regular file of this many bytes.
    File(u64),
    /// A symbolic link with this target.
    Symlink(String),
}

/// The full plan: for each layer (bottom first), relative path → entry.
/// Directories are implied by the paths.
pub struct Plan {
    /// lower1 (bottom), lower2, lower3 (top).
    pub layers: [BTreeMap<String, Entry>; 3],
    /// Small lower files appended to by `copyup_small`.
    pub copyup_targets: Vec<String>,
}

impl Plan {
    /// The merged view: relative path → (layer index, entry), top layer wins.
    pub fn merged(&self) -> BTreeMap<&str, (usize, &Entry)> {
        let mut merged = BTreeMap::new();
        for (index, layer) in self.layers.iter().enumerate() {
            for (rel, entry) in layer {
                merged.insert(rel.as_str(), (index, entry));
            }
        }
        merged
    }
}

/// What the manifest records about a finished build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Generator version that wrote the dataset.
    pub version: u32,
    /// Scale of the dataset.
    pub scale: Scale,
    /// Whether every file was written (the cache marker).
    pub complete: bool,
    /// Non-directory entries in the merged view.
    pub merged_files: usize,
    /// Directories in the merged view.
    pub merged_dirs: usize,
    /// Entries of the merged big directory.
    pub bigdir_entries: usize,
    /// Non-directory entries below the rm_rf target in the merged view.
    pub rm_files: usize,
    /// Entries per layer (files and symlinks).
    pub layer_entries: [usize; 3],
    /// Bytes of small-file data.
    pub small_bytes: u64,
    /// Size of each copy-up target, to detect writes through to a lower.
    pub sizes: BTreeMap<String, u64>,
}

/// A built dataset on disk.
pub struct Dataset {
    /// Root of the dataset (`DIR/data-SCALE`).
    pub root: PathBuf,
    /// lower1 (bottom), lower2, lower3 (top).
    pub lowers: [PathBuf; 3],
    /// Hard-link farm of the merged tree, the `native` backend.
    pub flat: PathBuf,
    /// Tarball for `untar_5k`.
    pub tarball: PathBuf,
    /// Sizes for this scale.
    pub params: Params,
    /// The generated plan.
    pub plan: Plan,
    /// Facts about the build.
    pub manifest: Manifest,
}

impl Dataset {
    /// Lowers top first, the order overlayfs' `lowerdir=` wants.
    pub fn lowers_top_first(&self) -> Vec<&Path> {
        self.lowers.iter().rev().map(PathBuf::as_path).collect()
    }

    /// Makes the `native` tree equal to the merged view again after a
    /// workload wrote to it: re-creates removed entries, truncates appended
    /// copies, restores ownership and sets new files aside in `trash`.
    pub fn restore_flat(&self, trash: &Trash) -> Result<()> {
        trash.discard(&self.flat.join("bench-new"))?;
        populate_flat(self)?;
        for (rel, size) in &self.manifest.sizes {
            let path = self.flat.join(rel);
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("checking {}", path.display()))?;
            if meta.len() != *size {
                File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(*size))
                    .with_context(|| format!("truncating {} back to {size}", path.display()))?;
            }
        }
        let chown_root = self.flat.join(CHOWN_REL);
        for entry in walk_paths(&chown_root)? {
            std::os::unix::fs::lchown(&entry, Some(0), Some(0))
                .with_context(|| format!("restoring owner of {}", entry.display()))?;
        }
        Ok(())
    }
}

/// Loads the dataset under `dir`, building it first when it is missing,
/// incomplete, from another generator version, or damaged.
pub fn prepare(dir: &Path, scale: Scale) -> Result<Dataset> {
    let root = dir.join(format!("data-{}", scale.name()));
    let params = scale.params();
    let plan = generate_plan(&params);
    let lowers = [1, 2, 3].map(|i| root.join(format!("lower{i}")));
    let manifest_path = root.join("manifest.json");
    let mut dataset = Dataset {
        flat: root.join("flat"),
        tarball: root.join("small.tar"),
        lowers,
        root,
        params,
        plan,
        manifest: plan_manifest(scale),
    };
    if let Some(manifest) = load_manifest(&manifest_path, scale) {
        dataset.manifest = manifest;
        match check_intact(&dataset) {
            Ok(()) => {
                progress!("dataset present: {}", dataset.root.display());
                return Ok(dataset);
            }
            Err(problem) => progress!("dataset damaged ({problem:#}), rebuilding"),
        }
    }
    build(&mut dataset)?;
    Ok(dataset)
}

fn plan_manifest(scale: Scale) -> Manifest {
    Manifest {
        version: FORMAT_VERSION,
        scale,
        complete: false,
        merged_files: 0,
        merged_dirs: 0,
        bigdir_entries: 0,
        rm_files: 0,
        layer_entries: [0; 3],
        small_bytes: 0,
        sizes: BTreeMap::new(),
    }
}

fn load_manifest(path: &Path, scale: Scale) -> Option<Manifest> {
    let text = fs::read_to_string(path).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    (manifest.complete && manifest.version == FORMAT_VERSION && manifest.scale == scale)
        .then_some(manifest)
}

/// Cheap checks that the lowers still hold what was built: sizes of the files
/// workloads append to, the rm_rf subtree in every layer, the chown tree.
fn check_intact(dataset: &Dataset) -> Result<()> {
    let merged = dataset.plan.merged();
    for (rel, size) in &dataset.manifest.sizes {
        let (layer, _) = merged
            .get(rel.as_str())
            .copied()
            .with_context(|| format!("{rel} missing from the plan"))?;
        let path = dataset.lowers[layer].join(rel);
        let meta = fs::symlink_metadata(&path).with_context(|| format!("{}", path.display()))?;
        if meta.len() != *size {
            bail!(
                "{} has {} bytes, expected {size}",
                path.display(),
                meta.len()
            );
        }
    }
    for lower in &dataset.lowers {
        let rm = lower.join(RM_REL);
        if !rm.is_dir() {
            bail!("{} is missing", rm.display());
        }
    }
    let chown = dataset.lowers[1].join(CHOWN_REL);
    for path in walk_paths(&chown)? {
        let meta = fs::symlink_metadata(&path)?;
        if meta.uid() != 0 || meta.gid() != 0 {
            bail!("{} is no longer owned by root", path.display());
        }
    }
    for name in ["flat", "small.tar"] {
        if !dataset.root.join(name).exists() {
            bail!("{} is missing", dataset.root.join(name).display());
        }
    }
    Ok(())
}

const LANGS: [&str; 12] = [
    "de", "fr", "es", "it", "ja", "ko", "nl", "pl", "pt_BR", "ru", "sv", "zh_CN",
];
const STEMS: [&str; 24] = [
    "core", "net", "ssl", "xml", "z", "gtk", "font", "audio", "image", "db", "http", "crypt",
    "term", "fs", "dbus", "json", "py", "perl", "mail", "shell", "sys", "video", "input", "util",
];

/// Files as (path, size).
type Files = Vec<(String, u64)>;
/// Symlinks as (path, target).
type Links = Vec<(String, String)>;

/// Files and symlinks of one synthetic package.
fn package(rng: &mut Rng, name: &str) -> (Files, Links) {
    let mut files = Vec::new();
    let mut links = Vec::new();
    if rng.chance(0.7) {
        files.push((
            format!("usr/bin/{name}"),
            rng.lognormal(48_000.0, 1.1, 3 << 20),
        ));
    }
    if rng.chance(0.5) {
        let major = rng.below(8);
        let real = format!("lib{name}.so.{major}.{}.{}", rng.below(30), rng.below(9));
        files.push((
            format!("usr/lib/x86_64-linux-gnu/{real}"),
            rng.lognormal(180_000.0, 1.2, 6 << 20),
        ));
        links.push((
            format!("usr/lib/x86_64-linux-gnu/lib{name}.so.{major}"),
            real,
        ));
    }
    let doc = format!("{RM_REL}/{name}");
    files.push((
        format!("{doc}/copyright"),
        rng.lognormal(1_800.0, 0.8, 150_000),
    ));
    files.push((
        format!("{doc}/changelog.gz"),
        rng.lognormal(3_500.0, 1.0, 400_000),
    ));
    if rng.chance(0.35) {
        files.push((
            format!("{doc}/NEWS.gz"),
            rng.lognormal(2_500.0, 1.0, 200_000),
        ));
    }
    if rng.chance(0.6) {
        let section = [1, 1, 5, 8][rng.below(4) as usize];
        files.push((
            format!("usr/share/man/man{section}/{name}.{section}.gz"),
            rng.lognormal(2_800.0, 0.7, 150_000),
        ));
    }
    if rng.chance(0.2) {
        let count = 4 + rng.below(8) as usize;
        let start = rng.below(LANGS.len() as u64) as usize;
        for k in 0..count {
            let lang = LANGS[(start + k) % LANGS.len()];
            files.push((
                format!("usr/share/locale/{lang}/LC_MESSAGES/{name}.mo"),
                rng.lognormal(18_000.0, 0.9, 1 << 20),
            ));
        }
    }
    if rng.chance(0.15) {
        module_tree(rng, name, &mut files);
    }
    if rng.chance(0.2) {
        for k in 0..10 + rng.below(20) {
            files.push((
                format!("usr/include/{name}/part{k}.h"),
                rng.lognormal(5_000.0, 1.0, 250_000),
            ));
        }
    }
    if rng.chance(0.3) {
        for k in 0..8 + rng.below(40) {
            files.push((
                format!("usr/share/{name}/set{}/group{}/item{k}.dat", k % 5, k % 3),
                rng.lognormal(2_500.0, 1.4, 1 << 20),
            ));
        }
    }
    files.push((
        format!("var/lib/dpkg/info/{name}.list"),
        rng.lognormal(1_800.0, 1.0, 150_000),
    ));
    files.push((
        format!("var/lib/dpkg/info/{name}.md5sums"),
        rng.lognormal(2_800.0, 1.0, 150_000),
    ));
    if rng.chance(0.3) {
        files.push((
            format!("etc/{name}/{name}.conf"),
            rng.lognormal(900.0, 1.0, 80_000),
        ));
    }
    (files, links)
}

/// A nested source-module tree (think a Python package), up to five levels deep.
fn module_tree(rng: &mut Rng, name: &str, files: &mut Vec<(String, u64)>) {
    let base = format!("usr/lib/python3/dist-packages/{name}");
    let mut dirs = vec![(base, 0usize)];
    for k in 0..25 + rng.below(130) {
        if rng.chance(0.15) && dirs.len() < 32 {
            let (parent, depth) = dirs[rng.below(dirs.len() as u64) as usize].clone();
            if depth < 4 {
                dirs.push((format!("{parent}/pkg{}", dirs.len()), depth + 1));
            }
        }
        let dir = dirs[rng.below(dirs.len() as u64) as usize].0.clone();
        files.push((
            format!("{dir}/m{k}.py"),
            rng.lognormal(3_800.0, 1.2, 400_000),
        ));
        if rng.chance(0.5) {
            files.push((
                format!("{dir}/__pycache__/m{k}.cpython-312.pyc"),
                rng.lognormal(5_500.0, 1.1, 800_000),
            ));
        }
    }
    for (dir, _) in dirs {
        files.push((
            format!("{dir}/__init__.py"),
            rng.lognormal(250.0, 1.5, 50_000),
        ));
    }
}

/// Computes the plan from a fixed seed; no disk access.
pub fn generate_plan(params: &Params) -> Plan {
    let mut rng = Rng::new(0x5eed_c0b5);
    let mut layers: [BTreeMap<String, Entry>; 3] = Default::default();
    for i in 0..params.packages {
        let name = format!(
            "{}{}{i}",
            STEMS[rng.below(STEMS.len() as u64) as usize],
            STEMS[rng.below(STEMS.len() as u64) as usize]
        );
        let layer = match rng.below(100) {
            0..60 => 0,
            60..85 => 1,
            _ => 2,
        };
        let (files, links) = package(&mut rng, &name);
        // Some bottom-layer packages are upgraded by a higher layer: shadowing.
        let upgraded_in = (layer == 0 && rng.chance(0.06)).then(|| 1 + rng.below(2) as usize);
        for (rel, size) in &files {
            layers[layer].insert(rel.clone(), Entry::File(*size));
            if let Some(up) = upgraded_in {
                layers[up].insert(rel.clone(), Entry::File(size + rng.below(200)));
            }
        }
        for (rel, target) in links {
            layers[layer].insert(rel, Entry::Symlink(target));
        }
    }
    for (index, layer) in layers.iter_mut().enumerate() {
        let grow = index as u64;
        layer.insert("etc/passwd".into(), Entry::File(1_400 + grow * 40));
        layer.insert("etc/group".into(), Entry::File(700 + grow * 20));
        layer.insert("etc/ld.so.cache".into(), Entry::File(55_000 + grow * 900));
        layer.insert(
            "var/lib/dpkg/status".into(),
            Entry::File(400_000 * (grow + 1)),
        );
    }
    layers[0].insert("bin/busybox".into(), Entry::File(1_200_000));
    for k in 0..300 {
        layers[0].insert(format!("bin/applet{k}"), Entry::Symlink("busybox".into()));
    }
    let n = params.bigdir_entries;
    for i in 0..n {
        let rel = format!("{BIGDIR_REL}/entry{i:05}");
        let layer = if i < n / 2 {
            0
        } else if i < n * 3 / 4 {
            1
        } else {
            2
        };
        layers[layer].insert(rel.clone(), Entry::File(rng.below(256)));
        if i < n / 20 {
            layers[1].insert(rel, Entry::File(rng.below(256)));
        } else if i < n / 10 {
            layers[2].insert(rel, Entry::File(rng.below(256)));
        }
    }
    layers[0].insert(SEQ_REL.into(), Entry::File(params.seq_bytes));
    layers[1].insert(RAND_REL.into(), Entry::File(params.rand_bytes));
    for k in 0..params.chown_files {
        layers[1].insert(
            format!("{CHOWN_REL}/album{}/track{k:02}.flac", k % 4),
            Entry::File(params.chown_file_bytes),
        );
    }
    let copyup_targets = pick_copyup_targets(&layers, params.copyup_small_files);
    Plan {
        layers,
        copyup_targets,
    }
}

/// Small files from the merged view spread over all layers, chosen by a
/// separate seed so the choice does not depend on the package generator's
/// random stream.
fn pick_copyup_targets(layers: &[BTreeMap<String, Entry>; 3], count: usize) -> Vec<String> {
    let mut merged: BTreeMap<&str, &Entry> = BTreeMap::new();
    for layer in layers {
        for (rel, entry) in layer {
            merged.insert(rel, entry);
        }
    }
    let candidates: Vec<&str> = merged
        .iter()
        .filter(|(rel, entry)| {
            matches!(entry, Entry::File(size) if *size < 256 << 10)
                && (rel.starts_with("usr/lib/python3/")
                    || rel.starts_with("usr/include/")
                    || rel.starts_with("usr/share/locale/")
                    || rel.starts_with("etc/"))
        })
        .map(|(rel, _)| *rel)
        .collect();
    let mut rng = Rng::new(0xc0b1_u64);
    let mut chosen = BTreeSet::new();
    let want = count.min(candidates.len());
    while chosen.len() < want {
        chosen.insert(candidates[rng.below(candidates.len() as u64) as usize]);
    }
    chosen.into_iter().map(str::to_string).collect()
}

/// Random bytes to cut small files from, so small-file data costs no
/// generation time per file.
struct Pool(Vec<u8>);

impl Pool {
    fn new(rng: &mut Rng) -> Pool {
        let mut bytes = vec![0u8; 16 << 20];
        rng.fill(&mut bytes);
        Pool(bytes)
    }

    fn slice(&self, rng: &mut Rng, len: u64) -> &[u8] {
        let len = (len as usize).min(self.0.len());
        let start = rng.below((self.0.len() - len + 1) as u64) as usize;
        &self.0[start..start + len]
    }
}

fn build(dataset: &mut Dataset) -> Result<()> {
    let started = Instant::now();
    progress!(
        "building dataset in {} (scale {})",
        dataset.root.display(),
        dataset.manifest.scale.name()
    );
    if dataset.root.exists() {
        fs::remove_dir_all(&dataset.root)
            .with_context(|| format!("removing old dataset {}", dataset.root.display()))?;
    }
    let mut rng = Rng::new(0xda7a);
    let pool = Pool::new(&mut rng);
    let mut small_bytes = 0u64;
    let big: BTreeSet<&str> = [SEQ_REL, RAND_REL].into_iter().collect();
    for (index, layer) in dataset.plan.layers.iter().enumerate() {
        let lower = &dataset.lowers[index];
        for (rel, entry) in layer {
            let path = lower.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            match entry {
                Entry::Symlink(target) => symlink(target, &path)
                    .with_context(|| format!("creating symlink {}", path.display()))?,
                Entry::File(size) if big.contains(rel.as_str()) || rel.starts_with(CHOWN_REL) => {
                    write_big(&path, *size, &mut rng)?
                }
                Entry::File(size) => {
                    fs::write(&path, pool.slice(&mut rng, *size))
                        .with_context(|| format!("writing {}", path.display()))?;
                    small_bytes += size;
                }
            }
        }
    }
    write_tarball(&dataset.tarball, dataset.params.tar_files, &pool)?;
    let mut manifest = plan_manifest(dataset.manifest.scale);
    let merged = dataset.plan.merged();
    let mut dirs = BTreeSet::new();
    for rel in merged.keys() {
        let mut parent = Path::new(rel).parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(dir.to_path_buf());
            parent = dir.parent();
        }
    }
    manifest.merged_files = merged.len();
    manifest.merged_dirs = dirs.len();
    manifest.bigdir_entries = merged
        .keys()
        .filter(|rel| rel.starts_with(&format!("{BIGDIR_REL}/")))
        .count();
    manifest.rm_files = merged
        .keys()
        .filter(|rel| rel.starts_with(&format!("{RM_REL}/")))
        .count();
    manifest.layer_entries = [0, 1, 2].map(|i| dataset.plan.layers[i].len());
    manifest.small_bytes = small_bytes;
    for rel in dataset
        .plan
        .copyup_targets
        .iter()
        .map(String::as_str)
        .chain([SEQ_REL])
    {
        if let Some((_, Entry::File(size))) = merged.get(rel) {
            manifest.sizes.insert(rel.to_string(), *size);
        }
    }
    dataset.manifest = manifest;
    populate_flat(dataset)?;
    dataset.manifest.complete = true;
    let manifest_path = dataset.root.join("manifest.json");
    fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&dataset.manifest)?,
    )
    .with_context(|| format!("writing {}", manifest_path.display()))?;
    nix::unistd::sync();
    progress!(
        "built dataset in {:.1} s: {} merged files/symlinks in {} dirs, {} MiB small-file data, entries per layer {:?}, big dir {}, rm_rf target {} files",
        started.elapsed().as_secs_f64(),
        dataset.manifest.merged_files,
        dataset.manifest.merged_dirs,
        small_bytes >> 20,
        dataset.manifest.layer_entries,
        dataset.manifest.bigdir_entries,
        dataset.manifest.rm_files
    );
    Ok(())
}

fn write_big(path: &Path, size: u64, rng: &mut Rng) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        rng.fill(&mut chunk[..n]);
        out.write_all(&chunk[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A tarball of small files in nested directories, like a package payload.
fn write_tarball(path: &Path, files: usize, pool: &Pool) -> Result<()> {
    let mut rng = Rng::new(0x7a2b);
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut builder = tar::Builder::new(BufWriter::new(file));
    let mut dirs = vec![("payload".to_string(), 0usize)];
    for k in 0..files {
        if k % 25 == 0 {
            let (parent, depth) = dirs[rng.below(dirs.len() as u64) as usize].clone();
            if depth < 4 {
                dirs.push((format!("{parent}/dir{k}"), depth + 1));
            }
        }
        let dir = &dirs[rng.below(dirs.len() as u64) as usize].0;
        let len = rng.lognormal(1_400.0, 1.2, 200_000);
        let data = pool.slice(&mut rng, len);
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, format!("{dir}/file{k}"), data)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("finishing {}", path.display()))?;
    Ok(())
}

/// Creates the `native` tree: a copy of the winning lower file for every
/// merged entry. Copies, not hard links: a link into `native` would give
/// every lower file a link count of 2, which a layer unpacked from a tarball
/// never has, and a union that keeps hard links whole (an index, like
/// overlayfs `index=on`) would then treat each of them as a hard-link group.
fn populate_flat(dataset: &Dataset) -> Result<()> {
    for (rel, (layer, entry)) in dataset.plan.merged() {
        let dst = dataset.flat.join(rel);
        if fs::symlink_metadata(&dst).is_ok() {
            continue;
        }
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let src = dataset.lowers[layer].join(rel);
        match entry {
            Entry::Symlink(target) => symlink(target, &dst),
            Entry::File(_) => fs::copy(&src, &dst).map(|_| ()),
        }
        .with_context(|| format!("creating {} from {}", dst.display(), src.display()))?;
    }
    Ok(())
}

/// Every path below `root` (not `root` itself), parents before children.
pub fn walk_paths(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_shaped_as_promised() {
        let params = Scale::Full.params();
        let a = generate_plan(&params);
        let b = generate_plan(&params);
        assert_eq!(a.layers, b.layers);
        assert_eq!(a.copyup_targets, b.copyup_targets);
        let merged = a.merged();
        let bigdir = merged
            .keys()
            .filter(|rel| rel.starts_with(&format!("{BIGDIR_REL}/")))
            .count();
        assert_eq!(bigdir, 10_000);
        // ~30,000 small files besides the big directory.
        let small = merged.len() - bigdir;
        assert!((25_000..40_000).contains(&small), "{small} small files");
        assert_eq!(a.copyup_targets.len(), 1_000);
        for layer in &a.layers {
            assert!(layer
                .keys()
                .any(|rel| rel.starts_with(&format!("{RM_REL}/"))));
            assert!(layer
                .keys()
                .any(|rel| rel.starts_with(&format!("{BIGDIR_REL}/"))));
        }
    }
}
