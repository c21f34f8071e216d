//! The store directory: blobs, layer indexes, images, names, and the lock.
//!
//! ```text
//! <store>/
//!   blobs/<2 hex>/<64 hex>   file contents, named by BLAKE3
//!   layers/<64 hex>.idx      layer indexes, named by the BLAKE3 of the file
//!   layers/<64 hex>.checked  identity of the index file at its last full check
//!   images/<64 hex>.json     image records (JSON, see `image::ImageRecord`;
//!                            `sources` lists blobs kept as a registry served them)
//!   refs.json                name:tag -> image id
//!   sha256/<64 hex>          OCI digest side map: "layer <id>" or "blob <id>"
//!   tmp/                     files being written (removed by gc)
//!   containers/<id>/image-id written by the launcher: gc roots
//!   lock, refs.lock          flock(2) files
//! ```
//!
//! Every file appears by `rename` of a complete, synced temp file, so a
//! crash leaves at most unreferenced files that `gc` removes. Writers
//! (imports) hold the store lock shared; `gc` holds it exclusively.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::ids::{BlobId, ImageId, LayerId};
use crate::image::{self, ImageRecord, ImageSource, KeptBlob, NewImage};
use crate::index::{Checks, Index};

/// A layer store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A held store lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

const SUBDIRS: [&str; 6] = ["blobs", "layers", "images", "sha256", "tmp", "containers"];

impl Store {
    /// Open the store at `dir`, creating its layout if missing.
    pub fn open(dir: &Path) -> Result<Store> {
        for sub in SUBDIRS {
            let p = dir.join(sub);
            fs::create_dir_all(&p).ctx("create store directory", &p)?;
        }
        let root = dir.canonicalize().ctx("resolve store directory", dir)?;
        let store = Store { root };
        store.lock_file("lock")?;
        store.lock_file("refs.lock")?;
        Ok(store)
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    // ---- locks ----------------------------------------------------------------

    fn lock_file(&self, name: &str) -> Result<File> {
        let p = self.root.join(name);
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .ctx("open lock file", &p)
    }

    /// Take the store lock shared: imports hold it so that `gc` does not
    /// remove their not-yet-referenced layers and blobs. Hold it across a
    /// multi-step import (layers, then [`Store::add_image`]).
    pub fn lock_shared(&self) -> Result<StoreLock> {
        let f = self.lock_file("lock")?;
        f.lock_shared()
            .ctx("lock (shared)", &self.root.join("lock"))?;
        Ok(StoreLock { _file: f })
    }

    /// Take the store lock exclusively (what `gc` does); waits for imports.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        let f = self.lock_file("lock")?;
        f.lock().ctx("lock (exclusive)", &self.root.join("lock"))?;
        Ok(StoreLock { _file: f })
    }

    fn lock_refs(&self) -> Result<StoreLock> {
        let f = self.lock_file("refs.lock")?;
        f.lock().ctx("lock", &self.root.join("refs.lock"))?;
        Ok(StoreLock { _file: f })
    }

    // ---- paths ------------------------------------------------------------

    /// Where blob `id` lives.
    pub fn blob_path(&self, id: &BlobId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("blobs").join(&hex[..2]).join(hex)
    }

    /// Where the index of layer `id` lives.
    pub fn layer_path(&self, id: &LayerId) -> PathBuf {
        self.root.join("layers").join(format!("{id}.idx"))
    }

    fn image_path(&self, id: &ImageId) -> PathBuf {
        self.root.join("images").join(format!("{id}.json"))
    }

    fn digest_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Invalid {
                kind: "digest",
                value: digest.to_string(),
                problem: "expected sha256:<64 hex digits>".into(),
            });
        }
        Ok(self.root.join("sha256").join(hex.to_ascii_lowercase()))
    }

    /// A fresh temp path in the store's `tmp/` (same filesystem as the
    /// final places, so rename is atomic).
    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}-{nanos}", std::process::id()))
    }

    // ---- blobs ------------------------------------------------------------

    /// Open blob `id` for reading.
    pub fn open_blob(&self, id: &BlobId) -> Result<File> {
        let p = self.blob_path(id);
        File::open(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                kind: "blob",
                name: id.to_hex(),
                store: self.root.clone(),
            },
            _ => Error::io("open blob", p, e),
        })
    }

    /// Whether blob `id` is present.
    pub fn has_blob(&self, id: &BlobId) -> bool {
        self.blob_path(id).exists()
    }

    /// Store the bytes of `reader` as a blob, durably. Returns its id and size.
    pub fn write_blob(&self, reader: &mut dyn Read) -> Result<(BlobId, u64)> {
        let _lock = self.lock_shared()?;
        let mut staging = crate::staging::Staging::new(self);
        let (id, size) = staging.add_blob(reader, "blob")?;
        staging.commit()?;
        Ok((id, size))
    }

    /// Move the complete file at `path` into the store as a blob, durably,
    /// without copying when it is on the store's filesystem (e.g. a download
    /// staged under the store). The file is gone afterwards. Returns the
    /// blob's id and size. Callers hold [`Store::lock_shared`] until
    /// something (an image record) refers to the blob, or `gc` may take it.
    pub fn add_blob_file(&self, path: &Path) -> Result<(BlobId, u64)> {
        let _lock = self.lock_shared()?;
        let mut hasher = blake3::Hasher::new();
        hasher.update_mmap(path).ctx("read blob file", path)?;
        let size = hasher.count();
        let id = BlobId::from(hasher.finalize());
        let dest = self.blob_path(&id);
        if dest.exists() {
            fs::remove_file(path).ctx("remove", path)?;
            return Ok((id, size));
        }
        File::open(path)
            .and_then(|f| f.sync_all())
            .ctx("fsync", path)?;
        let parent = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&parent).ctx("create blob directory", &parent)?;
        match fs::rename(path, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                // Another filesystem: copy through a temp file instead.
                let mut f = File::open(path).ctx("open", path)?;
                let (copied, _) = self.write_blob(&mut f)?;
                if copied != id {
                    return Err(Error::Conflict(format!(
                        "{} changed while it was added to the store; try again",
                        path.display()
                    )));
                }
                fs::remove_file(path).ctx("remove", path)?;
                return Ok((id, size));
            }
            Err(e) => return Err(Error::io("rename blob into place", dest, e)),
        }
        sync_dir(&parent)?;
        Ok((id, size))
    }

    /// A blob some image keeps as received (see [`ImageSource`]) whose
    /// sha256 is `digest`, if one is in the store.
    pub fn find_kept_blob(&self, digest: &str) -> Result<Option<KeptBlob>> {
        for image in self.list_images()? {
            for source in &image.sources {
                if let Some(kept) = source
                    .blobs()
                    .find(|b| b.digest == digest && self.has_blob(&b.blob))
                {
                    return Ok(Some(kept.clone()));
                }
            }
        }
        Ok(None)
    }

    // ---- layers -----------------------------------------------------------

    /// Open the index of layer `id`.
    ///
    /// The first open checks its structure and checksum (reading the whole
    /// file, several milliseconds for a large image) and then records the
    /// file's identity (device, inode, size, modification and change times)
    /// in `layers/<id>.checked`. Later opens of the same, unchanged file
    /// check only the header. Any write to the index, a copy or a
    /// replacement changes its change time, so it is checked in full again.
    /// Damage that bypasses the file system (a failing disk) is what
    /// `strata store verify` finds. The record is written only where the
    /// caller may write to the store; elsewhere every open is a full check.
    pub fn open_layer(&self, id: &LayerId) -> Result<Index> {
        let p = self.layer_path(id);
        let file = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    kind: "layer",
                    name: id.to_hex(),
                    store: self.root.clone(),
                })
            }
            Err(e) => return Err(e).ctx("open layer index", &p),
        };
        let meta = file.metadata().ctx("stat layer index", &p)?;
        let stamp = checked_stamp(&meta);
        let stamp_path = self.checked_path(id);
        if fs::read(&stamp_path).is_ok_and(|s| s == stamp.as_bytes()) {
            return Index::from_file(&file, meta.len(), &p, Checks::Header);
        }
        let index = Index::from_file(&file, meta.len(), &p, Checks::Full)?;
        // Best effort: a read-only store just checks in full every time. A
        // torn write cannot match a later stamp, so no temp file is needed.
        let _ = fs::write(&stamp_path, stamp);
        Ok(index)
    }

    /// Drops the record of layer `id`'s last full check (its index is gone).
    pub(crate) fn forget_checked(&self, id: &LayerId) {
        let _ = fs::remove_file(self.checked_path(id));
    }

    /// Removes check records whose layer index is gone (a crash between
    /// removing a layer and its record). Returns how many.
    pub(crate) fn sweep_checked(&self) -> Result<u64> {
        let dir = self.root.join("layers");
        let mut removed = 0;
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".checked"))
                .and_then(|hex| LayerId::from_hex(hex).ok())
            else {
                continue;
            };
            if !self.layer_path(&id).exists() && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Where the record of layer `id`'s last full check lives.
    fn checked_path(&self, id: &LayerId) -> PathBuf {
        self.root.join("layers").join(format!("{id}.checked"))
    }

    /// Whether layer `id` is present.
    pub fn has_layer(&self, id: &LayerId) -> bool {
        self.layer_path(id).exists()
    }

    /// All layers in the store.
    pub fn list_layers(&self) -> Result<Vec<LayerId>> {
        let dir = self.root.join("layers");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".idx")) else {
                continue;
            };
            if let Ok(id) = LayerId::from_hex(hex) {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Add a layer from index bytes made by [`crate::index::IndexBuilder`]
    /// whose blobs are all in the store already. Returns its id.
    pub fn add_layer_index(&self, bytes: &[u8]) -> Result<LayerId> {
        let _lock = self.lock_shared()?;
        let mut staging = crate::staging::Staging::new(self);
        let id = staging.stage_index(bytes)?;
        staging.commit()?;
        Ok(id)
    }

    /// Remember that OCI `digest` (`sha256:...`) names layer `layer` (a
    /// compressed blob digest or a diff id), so a later import or pull of the
    /// same digest can reuse the layer.
    pub fn record_layer_digest(&self, digest: &str, layer: &LayerId) -> Result<()> {
        let p = self.digest_path(digest)?;
        write_atomic(self, &p, format!("layer {layer}\n").as_bytes())
    }

    /// The layer recorded for OCI `digest`, if it is still in the store.
    pub fn layer_for_digest(&self, digest: &str) -> Result<Option<LayerId>> {
        let p = self.digest_path(digest)?;
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", p, e)),
        };
        let id = text
            .trim()
            .strip_prefix("layer ")
            .and_then(|h| LayerId::from_hex(h).ok());
        Ok(id.filter(|l| self.has_layer(l)))
    }

    // ---- images -----------------------------------------------------------

    fn read_refs(&self) -> Result<BTreeMap<String, ImageId>> {
        let p = self.root.join("refs.json");
        match fs::read(&p) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| Error::Json { path: p, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io("read", p, e)),
        }
    }

    fn write_refs(&self, refs: &BTreeMap<String, ImageId>) -> Result<()> {
        let p = self.root.join("refs.json");
        let json = serde_json::to_vec_pretty(refs).map_err(|source| Error::Json {
            path: p.clone(),
            source,
        })?;
        write_atomic(self, &p, &json)
    }

    fn read_image(&self, id: &ImageId) -> Result<ImageRecord> {
        let p = self.image_path(id);
        let bytes = fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                kind: "image",
                name: id.to_hex(),
                store: self.root.clone(),
            },
            _ => Error::io("read image record", p.clone(), e),
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json { path: p, source })
    }

    fn image_ids(&self) -> Result<Vec<ImageId>> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|h| ImageId::from_hex(h).ok())
            {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    fn with_names(&self, mut rec: ImageRecord, refs: &BTreeMap<String, ImageId>) -> ImageRecord {
        rec.names = refs
            .iter()
            .filter(|(_, id)| **id == rec.id)
            .map(|(n, _)| n.clone())
            .collect();
        rec
    }

    /// All images, with their names, oldest first.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let refs = self.read_refs()?;
        let mut out = Vec::new();
        for id in self.image_ids()? {
            match self.read_image(&id) {
                Ok(rec) => out.push(self.with_names(rec, &refs)),
                Err(Error::NotFound { .. }) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.added_unix.cmp(&b.added_unix).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Find an image by `name[:tag]`, full id or unique id prefix (at least
    /// 4 hex digits).
    pub fn resolve_image(&self, name_or_id: &str) -> Result<ImageRecord> {
        let refs = self.read_refs()?;
        let id = self.resolve_id(name_or_id, &refs)?;
        let rec = self.read_image(&id)?;
        Ok(self.with_names(rec, &refs))
    }

    fn resolve_id(&self, name_or_id: &str, refs: &BTreeMap<String, ImageId>) -> Result<ImageId> {
        if let Ok(name) = image::normalize_name(name_or_id) {
            if let Some(id) = refs.get(&name) {
                return Ok(*id);
            }
        }
        let hex = name_or_id.strip_prefix("blake3:").unwrap_or(name_or_id);
        if hex.len() >= 4 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let matches: Vec<ImageId> = self
                .image_ids()?
                .into_iter()
                .filter(|id| id.to_hex().starts_with(&hex))
                .collect();
            match matches.len() {
                1 => return Ok(matches[0]),
                0 => {}
                n => {
                    return Err(Error::Conflict(format!(
                        "image id prefix {name_or_id:?} matches {n} images; give more digits"
                    )))
                }
            }
        }
        Err(Error::NotFound {
            kind: "image",
            name: name_or_id.to_string(),
            store: self.root.clone(),
        })
    }

    /// Add an image made of layers already in the store, under `names`
    /// (`name[:tag]`; an existing name moves to this image). Adding the same
    /// image twice only adds names.
    pub fn add_image(&self, new: &NewImage, names: &[String]) -> Result<ImageRecord> {
        let _lock = self.lock_shared()?;
        let names = names
            .iter()
            .map(|n| image::normalize_name(n))
            .collect::<Result<Vec<_>>>()?;
        for layer in &new.layers {
            if !self.has_layer(layer) {
                return Err(Error::NotFound {
                    kind: "layer",
                    name: layer.to_hex(),
                    store: self.root.clone(),
                });
            }
        }
        let id = new.id();
        let path = self.image_path(&id);
        if !path.exists() {
            let added = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let rec = image::record_for(new, Vec::new(), added);
            let json = serde_json::to_vec_pretty(&rec).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })?;
            write_atomic(self, &path, &json)?;
        }
        if !names.is_empty() {
            let _refs_lock = self.lock_refs()?;
            let mut refs = self.read_refs()?;
            for n in names {
                refs.insert(n, id);
            }
            self.write_refs(&refs)?;
        }
        self.resolve_image(&id.to_hex())
    }

    /// Record that image `id` was received as `source` (blobs already in
    /// the store, one layer blob per image layer). A source with the same
    /// manifest digest is merged with it; a source whose names all move to
    /// `source` is dropped; at most [`image::MAX_SOURCES`] are kept, newest
    /// last. Returns the updated record.
    pub fn add_image_source(&self, id: &ImageId, source: &ImageSource) -> Result<ImageRecord> {
        let _lock = self.lock_shared()?;
        let mut source = source.clone();
        source.names = source
            .names
            .iter()
            .map(|n| image::normalize_name(n))
            .collect::<Result<Vec<_>>>()?;
        for kept in source.blobs() {
            if !self.has_blob(&kept.blob) {
                return Err(Error::NotFound {
                    kind: "blob",
                    name: format!("{} ({})", kept.blob, kept.digest),
                    store: self.root.clone(),
                });
            }
        }
        // The refs lock serialises read-modify-write of records.
        let _refs_lock = self.lock_refs()?;
        let mut rec = self.read_image(id)?;
        if source.layers.len() != rec.layers.len() {
            return Err(Error::Conflict(format!(
                "image {id} has {} layers but its source {} lists {}",
                rec.layers.len(),
                source.manifest.digest,
                source.layers.len()
            )));
        }
        let mut sources = std::mem::take(&mut rec.sources);
        for old in &mut sources {
            if old.manifest == source.manifest {
                for n in &old.names {
                    if !source.names.contains(n) {
                        source.names.push(n.clone());
                    }
                }
            }
        }
        sources.retain_mut(|old| {
            if old.manifest == source.manifest {
                return false;
            }
            let had_names = !old.names.is_empty();
            old.names.retain(|n| !source.names.contains(n));
            !had_names || !old.names.is_empty()
        });
        sources.push(source);
        let excess = sources.len().saturating_sub(image::MAX_SOURCES);
        sources.drain(..excess);
        rec.sources = sources;
        rec.names = Vec::new();
        let path = self.image_path(id);
        let json = serde_json::to_vec_pretty(&rec).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(self, &path, &json)?;
        let refs = self.read_refs()?;
        Ok(self.with_names(rec, &refs))
    }

    /// Give image `name_or_id` the additional name `new_name`.
    pub fn tag_image(&self, name_or_id: &str, new_name: &str) -> Result<()> {
        let new_name = image::normalize_name(new_name)?;
        let _refs_lock = self.lock_refs()?;
        let mut refs = self.read_refs()?;
        let id = self.resolve_id(name_or_id, &refs)?;
        refs.insert(new_name, id);
        self.write_refs(&refs)
    }

    /// Image ids that containers (`<store>/containers/*/image-id`) use.
    pub fn container_image_ids(&self) -> Result<Vec<ImageId>> {
        let dir = self.root.join("containers");
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.ctx("list", &dir)?;
            let p = entry.path().join("image-id");
            if let Ok(text) = fs::read_to_string(&p) {
                let t = text.trim();
                match ImageId::from_hex(t.strip_prefix("blake3:").unwrap_or(t)) {
                    Ok(id) => out.push(id),
                    Err(_) => tracing::warn!("ignoring {}: not an image id", p.display()),
                }
            }
        }
        Ok(out)
    }

    /// Remove a name, or an image. Given a name, the name is removed, and
    /// the image too when no name is left. Given an id, all its names and
    /// the image are removed. An image a container uses keeps its record
    /// (only names go) unless `force`. Layers and blobs go at the next `gc`.
    pub fn remove_image(&self, name_or_id: &str, force: bool) -> Result<RemovedImage> {
        let _refs_lock = self.lock_refs()?;
        let mut refs = self.read_refs()?;
        let id = self.resolve_id(name_or_id, &refs)?;
        let by_name = image::normalize_name(name_or_id)
            .ok()
            .filter(|n| refs.get(n) == Some(&id));
        let mut untagged = Vec::new();
        match &by_name {
            Some(n) => {
                refs.remove(n);
                untagged.push(n.clone());
            }
            None => refs.retain(|n, i| {
                if *i == id {
                    untagged.push(n.clone());
                    false
                } else {
                    true
                }
            }),
        }
        let remaining = refs.values().any(|i| *i == id);
        let in_use = self.container_image_ids()?.contains(&id);
        if in_use && by_name.is_none() && !force {
            return Err(Error::Conflict(format!(
                "image {id} is used by a container; remove the container first or force"
            )));
        }
        self.write_refs(&refs)?;
        let deleted = !remaining && (!in_use || force);
        if deleted {
            let p = self.image_path(&id);
            fs::remove_file(&p).ctx("remove image record", &p)?;
        }
        Ok(RemovedImage {
            id,
            untagged,
            deleted,
        })
    }
}

/// What [`Store::remove_image`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedImage {
    /// The image.
    pub id: ImageId,
    /// Names removed.
    pub untagged: Vec<String>,
    /// Whether the image record itself was removed.
    pub deleted: bool,
}

/// Write `bytes` to `path` atomically and durably (temp file in the store,
/// fsync, rename, fsync directory).
pub(crate) fn write_atomic(store: &Store, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = store.tmp_path("meta");
    let result = (|| {
        let mut f = File::create(&tmp).ctx("create", &tmp)?;
        f.write_all(bytes).ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
        fs::rename(&tmp, path).ctx("rename into place", path)?;
        sync_dir(path.parent().unwrap_or(Path::new("/")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// fsync a directory so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// Every blob file in the store, by id (for df, verify and gc).
pub(crate) fn list_blobs(store: &Store) -> Result<HashMap<BlobId, PathBuf>> {
    let dir = store.root.join("blobs");
    let mut out = HashMap::new();
    for sub in fs::read_dir(&dir).ctx("list", &dir)? {
        let sub = sub.ctx("list", &dir)?.path();
        if !sub.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&sub).ctx("list", &sub)? {
            let entry = entry.ctx("list", &sub)?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| BlobId::from_hex(n).ok())
            {
                out.insert(id, entry.path());
            }
        }
    }
    Ok(out)
}

/// What identifies one version of an index file: its device, inode, size,
/// and modification and change times to the nanosecond.
fn checked_stamp(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "strata-index-checked 1 dev={} ino={} size={} mtime={}.{:09} ctime={}.{:09}\n",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}
