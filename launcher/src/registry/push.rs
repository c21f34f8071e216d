//! `strata push`: upload an image from the store to a registry.
//!
//! Each layer index is written out as a tar (OCI whiteouts and opaque
//! markers, hard links, xattrs as PAX records), gzip-compressed into a
//! staging file while both the tar (diff id) and the gzip stream (blob
//! digest) are hashed. The output is deterministic, so pushing the same
//! image twice gives the same digests and the second push uploads nothing.
//! Blobs the registry already has (`HEAD`) are skipped; the manifest goes
//! last.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use layers_format::{Content, FileKind, ImageRecord, Index, Store};
use serde_json::json;

use super::client::Client;
use super::digest::HashingWriter;
use super::manifest::{self, Descriptor};
use super::progress::Progress;
use super::pull::Staging;
use super::{Digest, Error, Reference};

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// Digest of the manifest pushed.
    pub manifest_digest: Digest,
    /// Blobs uploaded.
    pub uploaded_blobs: usize,
    /// Blobs the registry already had.
    pub existing_blobs: usize,
    /// Layer descriptors in the pushed manifest.
    pub layers: Vec<Descriptor>,
}

fn store_err(e: layers_format::Error) -> Error {
    Error::Store(e.to_string())
}

/// Push image `name_or_id` from `store` to `dest`.
pub fn push(
    client: &Client,
    store: &Store,
    name_or_id: &str,
    dest: &Reference,
    progress: &Progress,
) -> Result<PushOutcome, Error> {
    let _lock = store.lock_shared().map_err(store_err)?;
    let image = store.resolve_image(name_or_id).map_err(store_err)?;
    let staging = Staging::create(&store.root().join("tmp"), "push")?;
    let repo = &dest.repository;

    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut files = Vec::new();
    for (i, layer_id) in image.layers.iter().enumerate() {
        let index = store.open_layer(layer_id).map_err(store_err)?;
        let path = staging.dir.join(format!("layer-{i}"));
        let (desc, diff_id) = write_layer_blob(store, &index, &path)?;
        layers.push(desc);
        diff_ids.push(diff_id);
        files.push(path);
    }
    let config = config_json(&image, &diff_ids);
    let config_desc = Descriptor {
        media_type: manifest::OCI_CONFIG.to_string(),
        digest: Digest::of(&config),
        size: config.len() as u64,
        platform: None,
    };
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": config_desc,
        "layers": layers,
    }))
    .map_err(|e| Error::Manifest(format!("cannot encode manifest: {e}")))?;
    let manifest_digest = Digest::of(&manifest);

    let mut uploaded = 0;
    let mut existing = 0;
    for (desc, file) in layers.iter().zip(&files) {
        if upload_if_missing(client, repo, desc, file, progress)? {
            uploaded += 1;
        } else {
            existing += 1;
        }
    }
    let config_path = staging.dir.join("config.json");
    std::fs::write(&config_path, &config).map_err(|source| Error::Io {
        op: "write",
        path: config_path.clone(),
        source,
    })?;
    if upload_if_missing(client, repo, &config_desc, &config_path, progress)? {
        uploaded += 1;
    } else {
        existing += 1;
    }
    let tag = dest.tag.clone().unwrap_or_else(|| "latest".to_string());
    let answered = client.put_manifest(repo, &tag, manifest::OCI_MANIFEST, &manifest)?;
    if let Some(d) = answered {
        if d != manifest_digest.to_string() {
            return Err(Error::DigestMismatch {
                what: format!("manifest pushed to {dest}"),
                expected: manifest_digest.to_string(),
                actual: d,
            });
        }
    }
    Ok(PushOutcome {
        manifest_digest,
        uploaded_blobs: uploaded,
        existing_blobs: existing,
        layers,
    })
}

/// Upload one blob unless the registry has it. Returns whether it uploaded.
fn upload_if_missing(
    client: &Client,
    repo: &str,
    desc: &Descriptor,
    file: &Path,
    progress: &Progress,
) -> Result<bool, Error> {
    let bar = progress.blob("Writing", &desc.digest, desc.size);
    if client.blob_exists(repo, &desc.digest)? {
        bar.finish("skipped: already exists");
        return Ok(false);
    }
    match client.upload_blob(repo, &desc.digest, file) {
        Ok(()) => {
            bar.bar().set_position(desc.size);
            bar.finish("done");
            Ok(true)
        }
        Err(e) => {
            bar.abandon();
            Err(e)
        }
    }
}

/// The OCI image config for `image` with the given diff ids.
fn config_json(image: &ImageRecord, diff_ids: &[Digest]) -> Vec<u8> {
    let c = &image.config;
    let mut run = serde_json::Map::new();
    if !c.env.is_empty() {
        run.insert("Env".into(), json!(c.env));
    }
    if let Some(v) = &c.cmd {
        run.insert("Cmd".into(), json!(v));
    }
    if let Some(v) = &c.entrypoint {
        run.insert("Entrypoint".into(), json!(v));
    }
    if let Some(v) = &c.working_dir {
        run.insert("WorkingDir".into(), json!(v));
    }
    if let Some(v) = &c.user {
        run.insert("User".into(), json!(v));
    }
    let set = |items: &[String]| {
        serde_json::Value::Object(items.iter().map(|p| (p.clone(), json!({}))).collect())
    };
    if !c.exposed_ports.is_empty() {
        run.insert("ExposedPorts".into(), set(&c.exposed_ports));
    }
    if !c.volumes.is_empty() {
        run.insert("Volumes".into(), set(&c.volumes));
    }
    if let Some(v) = &c.stop_signal {
        run.insert("StopSignal".into(), json!(v));
    }
    if !c.labels.is_empty() {
        run.insert("Labels".into(), json!(c.labels));
    }
    if let Some(v) = &c.shell {
        run.insert("Shell".into(), json!(v));
    }
    let host = manifest::Platform::host();
    let mut doc = json!({
        "architecture": image.architecture.clone().unwrap_or(host.architecture),
        "os": image.os.clone().unwrap_or(host.os),
        "config": run,
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
    });
    if let Some(created) = &image.created {
        doc["created"] = json!(created);
    }
    // Encoding a tree of strings and maps cannot fail.
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Write layer `index` as a gzip tar to `path`. Returns its descriptor and
/// diff id.
fn write_layer_blob(
    store: &Store,
    index: &Index,
    path: &Path,
) -> Result<(Descriptor, Digest), Error> {
    let io = |op: &'static str| {
        let p = path.to_path_buf();
        move |source| Error::Io {
            op,
            path: p,
            source,
        }
    };
    let file = File::create(path).map_err(io("create"))?;
    let compressed = HashingWriter::new(BufWriter::new(file));
    let gz = flate2::GzBuilder::new().write(compressed, flate2::Compression::default());
    let mut tar = tar::Builder::new(HashingWriter::new(gz));
    tar.mode(tar::HeaderMode::Complete);
    let mut writer = TarWriter {
        store,
        index,
        tar: &mut tar,
        links: HashMap::new(),
        path: path.to_path_buf(),
    };
    writer.dir(index.root_ino(), "")?;
    let inner = tar.into_inner().map_err(io("write tar"))?;
    let (gz, diff_id) = inner.finish();
    let compressed = gz.finish().map_err(io("compress"))?;
    let size = compressed.written_bytes();
    let (buf, digest) = compressed.finish();
    let file = buf.into_inner().map_err(|e| Error::Io {
        op: "write",
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io("fsync"))?;
    Ok((
        Descriptor {
            media_type: manifest::OCI_LAYER_GZIP.to_string(),
            digest,
            size,
            platform: None,
        },
        diff_id,
    ))
}

type TarOut<'a> =
    tar::Builder<HashingWriter<flate2::write::GzEncoder<HashingWriter<BufWriter<File>>>>>;

/// Walks one layer index and writes its entries.
struct TarWriter<'a, 'b> {
    store: &'a Store,
    index: &'a Index,
    tar: &'b mut TarOut<'a>,
    /// First path written for each multiply-linked inode.
    links: HashMap<u64, String>,
    /// The staging file, for messages.
    path: PathBuf,
}

impl TarWriter<'_, '_> {
    fn err(&self, e: std::io::Error) -> Error {
        Error::Io {
            op: "write layer tar",
            path: self.path.clone(),
            source: e,
        }
    }

    fn dir(&mut self, dir_ino: u64, prefix: &str) -> Result<(), Error> {
        if self.index.is_opaque(dir_ino) && !prefix.is_empty() {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            self.tar
                .append_data(&mut h, format!("{prefix}.wh..wh..opq"), std::io::empty())
                .map_err(|e| self.err(e))?;
        }
        let entries: Vec<(Vec<u8>, u64, FileKind)> = self
            .index
            .readdir(dir_ino, 0)
            .map(|(_, e)| (e.name.to_vec(), e.ino, e.kind))
            .collect();
        for (name, ino, kind) in entries {
            let name = String::from_utf8_lossy(&name).into_owned();
            let path = format!("{prefix}{name}");
            self.entry(ino, kind, &path, prefix, &name)?;
            if kind == FileKind::Directory {
                self.dir(ino, &format!("{path}/"))?;
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        ino: u64,
        kind: FileKind,
        path: &str,
        prefix: &str,
        name: &str,
    ) -> Result<(), Error> {
        let Some(attr) = self.index.attr(ino) else {
            return Err(Error::Store(format!(
                "layer index: no inode {ino} for {path}"
            )));
        };
        let xattrs: Vec<(String, Vec<u8>)> = self
            .index
            .xattrs(ino)
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
            .collect();
        if !xattrs.is_empty() {
            let records: Vec<(String, Vec<u8>)> = xattrs
                .into_iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v))
                .collect();
            self.tar
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| self.err(e))?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(attr.mode & 0o7777);
        h.set_uid(u64::from(attr.uid));
        h.set_gid(u64::from(attr.gid));
        h.set_mtime(attr.mtime_sec.max(0) as u64);
        h.set_size(0);
        if kind != FileKind::Directory && kind != FileKind::Whiteout && attr.nlink > 1 {
            if let Some(first) = self.links.get(&ino) {
                h.set_entry_type(tar::EntryType::Link);
                let first = first.clone();
                return self
                    .tar
                    .append_link(&mut h, path, first)
                    .map_err(|e| self.err(e));
            }
            self.links.insert(ino, path.to_string());
        }
        match kind {
            FileKind::Directory => {
                h.set_entry_type(tar::EntryType::Directory);
                self.tar
                    .append_data(&mut h, format!("{path}/"), std::io::empty())
                    .map_err(|e| self.err(e))
            }
            FileKind::Whiteout => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                self.tar
                    .append_data(&mut h, format!("{prefix}.wh.{name}"), std::io::empty())
                    .map_err(|e| self.err(e))
            }
            FileKind::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                let target = self.index.readlink(ino).unwrap_or_default();
                let target = String::from_utf8_lossy(target).into_owned();
                self.tar
                    .append_link(&mut h, path, target)
                    .map_err(|e| self.err(e))
            }
            FileKind::Regular => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(attr.size);
                match self.index.content(ino) {
                    Content::Empty => self.tar.append_data(&mut h, path, std::io::empty()),
                    Content::Inline(bytes) => self.tar.append_data(&mut h, path, bytes),
                    Content::Blob(id) => {
                        let f = self.store.open_blob(&id).map_err(store_err)?;
                        self.tar.append_data(&mut h, path, f)
                    }
                }
                .map_err(|e| self.err(e))
            }
            FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => {
                h.set_entry_type(match kind {
                    FileKind::CharDevice => tar::EntryType::Char,
                    FileKind::BlockDevice => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                let major = ((attr.rdev >> 8) & 0xfff) | ((attr.rdev >> 32) & !0xfff);
                let minor = (attr.rdev & 0xff) | ((attr.rdev >> 12) & !0xff);
                h.set_device_major(major as u32).map_err(|e| self.err(e))?;
                h.set_device_minor(minor as u32).map_err(|e| self.err(e))?;
                self.tar
                    .append_data(&mut h, path, std::io::empty())
                    .map_err(|e| self.err(e))
            }
            // Sockets cannot be stored in a tar; docker skips them too.
            FileKind::Socket => Ok(()),
        }
    }
}
