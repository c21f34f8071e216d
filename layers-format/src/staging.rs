//! Staging new blobs and layer indexes: written to `tmp/`, hashed while
//! written, made durable with one `syncfs`, then renamed into place. Until
//! [`Staging::commit`] nothing is visible; dropping a `Staging` removes its
//! temp files, so a failed import leaves the store as it was.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::ids::{BlobId, LayerId};
use crate::store::{sync_dir, Store};

/// Read/write chunk when copying content.
const CHUNK: usize = 256 * 1024;

/// Blobs and indexes written but not yet visible.
pub(crate) struct Staging<'s> {
    store: &'s Store,
    blobs: HashMap<BlobId, PathBuf>,
    indexes: Vec<(LayerId, PathBuf)>,
    buf: Vec<u8>,
    /// Bytes of new content written to temp files.
    pub(crate) bytes_written: u64,
}

impl<'s> Staging<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Staging {
            store,
            blobs: HashMap::new(),
            indexes: Vec::new(),
            buf: Vec::new(),
            bytes_written: 0,
        }
    }

    /// Copy `reader` to a temp file while hashing it. `what` names the
    /// source in errors.
    pub(crate) fn add_blob(&mut self, reader: &mut dyn Read, what: &str) -> Result<(BlobId, u64)> {
        let tmp = self.store.tmp_path("blob");
        let mut file = File::create(&tmp).ctx("create temp blob", &tmp)?;
        if self.buf.len() < CHUNK {
            self.buf.resize(CHUNK, 0);
        }
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let result: Result<()> = (|| loop {
            let n = match reader.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::bad_input(what, format!("read failed: {e}"))),
            };
            hasher.update(&self.buf[..n]);
            file.write_all(&self.buf[..n])
                .ctx("write temp blob", &tmp)?;
            size += n as u64;
        })();
        drop(file);
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let id = BlobId::from(hasher.finalize());
        self.bytes_written += size;
        if self.blobs.contains_key(&id) || self.store.has_blob(&id) {
            let _ = fs::remove_file(&tmp);
        } else {
            self.blobs.insert(id, tmp);
        }
        Ok((id, size))
    }

    /// Write index bytes to a temp file; the layer id is their hash.
    pub(crate) fn stage_index(&mut self, bytes: &[u8]) -> Result<LayerId> {
        let id = LayerId::of(bytes);
        if self.store.has_layer(&id) || self.indexes.iter().any(|(l, _)| *l == id) {
            return Ok(id);
        }
        let tmp = self.store.tmp_path("index");
        let result = File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .ctx("write temp index", &tmp);
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.indexes.push((id, tmp));
        Ok(id)
    }

    /// Make everything durable and visible: sync the data, rename the blobs,
    /// sync, rename the indexes (which refer to the blobs), sync.
    pub(crate) fn commit(mut self) -> Result<()> {
        if self.blobs.is_empty() && self.indexes.is_empty() {
            return Ok(());
        }
        let tmp_dir = self.store.root().join("tmp");
        let syncfs = || -> Result<()> {
            let d = File::open(&tmp_dir).ctx("open", &tmp_dir)?;
            nix::unistd::syncfs(&d).map_err(|e| Error::io("syncfs", &tmp_dir, e.into()))
        };
        syncfs()?;
        let blobs = std::mem::take(&mut self.blobs);
        let mut dirs_made = false;
        for (id, tmp) in blobs {
            let dest = self.store.blob_path(&id);
            if let Err(e) = fs::rename(&tmp, &dest) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    let _ = fs::remove_file(&tmp);
                    return Err(Error::io("rename blob into place", dest, e));
                }
                // The prefix directory is missing: make it and retry.
                let parent = dest.parent().unwrap_or(&tmp_dir).to_path_buf();
                fs::create_dir_all(&parent).ctx("create blob directory", &parent)?;
                dirs_made = true;
                if let Err(e) = fs::rename(&tmp, &dest) {
                    let _ = fs::remove_file(&tmp);
                    return Err(Error::io("rename blob into place", dest, e));
                }
            }
        }
        let indexes = std::mem::take(&mut self.indexes);
        if !indexes.is_empty() {
            syncfs()?;
            for (id, tmp) in indexes {
                let dest = self.store.layer_path(&id);
                if let Err(e) = fs::rename(&tmp, &dest) {
                    let _ = fs::remove_file(&tmp);
                    return Err(Error::io("rename layer index into place", dest, e));
                }
            }
            sync_dir(&self.store.root().join("layers"))?;
        }
        if dirs_made {
            sync_dir(&self.store.root().join("blobs"))?;
        }
        syncfs()
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        for tmp in self.blobs.values() {
            let _ = fs::remove_file(tmp);
        }
        for (_, tmp) in &self.indexes {
            let _ = fs::remove_file(tmp);
        }
    }
}
