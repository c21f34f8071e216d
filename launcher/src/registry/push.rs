//! `strata push`: upload an image from the store to a registry.
//!
//! An image that was pulled keeps the blobs as the registry served them
//! (the record's `sources`): those bytes are sent again, the compressed
//! layers, the config and the manifest, so the pushed image has the same
//! layer and manifest digests as the one pulled.
//!
//! Other images (imported, committed, or whose kept blobs are gone) are
//! rebuilt: each layer is written out by the store's exporter as an OCI
//! layer tar, gzip-compressed into a staging file while both the tar (diff
//! id) and the gzip stream (blob digest) are hashed. That output is
//! deterministic, so pushing the same image twice gives the same digests.
//!
//! Either way, blobs the registry already has (`HEAD`) are skipped, so a
//! second push uploads nothing, and kept blobs pulled from another
//! repository of the same registry are mounted from there rather than
//! uploaded; the manifest goes last.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use layers_format::oci::{ConfigFile, RootFs, RunConfig};
use layers_format::{ImageRecord, ImageSource, KeptBlob, LayerId, Store};
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
    // The source pulled under this name, else any other whose blobs are all
    // still there (same image, so the same content).
    let complete = |s: &&ImageSource| s.blobs().all(|b| store.has_blob(&b.blob));
    let kept = image
        .source_for(name_or_id)
        .filter(complete)
        .or_else(|| image.sources.iter().rev().find(complete));
    if let Some(source) = kept {
        return push_source(client, store, source, dest, progress);
    }
    let staging = Staging::create(&store.root().join("tmp"), "push")?;
    let repo = &dest.repository;

    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut files = Vec::new();
    for (i, layer_id) in image.layers.iter().enumerate() {
        let path = staging.dir.join(format!("layer-{i}"));
        let (desc, diff_id) = write_layer_blob(store, layer_id, &path)?;
        layers.push(desc);
        diff_ids.push(diff_id);
        files.push(path);
    }
    let config = config_json(&image, &diff_ids)?;
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
        if upload_if_missing(client, repo, desc, file, None, progress)? {
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
    if upload_if_missing(client, repo, &config_desc, &config_path, None, progress)? {
        uploaded += 1;
    } else {
        existing += 1;
    }
    let tag = dest.tag.clone().unwrap_or_else(|| "latest".to_string());
    let answered = client.put_manifest(repo, &tag, manifest::OCI_MANIFEST, &manifest)?;
    check_answered(answered, &manifest_digest, dest)?;
    Ok(PushOutcome {
        manifest_digest,
        uploaded_blobs: uploaded,
        existing_blobs: existing,
        layers,
    })
}

/// Push `source`, blobs kept as they were pulled, byte for byte.
fn push_source(
    client: &Client,
    store: &Store,
    source: &ImageSource,
    dest: &Reference,
    progress: &Progress,
) -> Result<PushOutcome, Error> {
    let repo = &dest.repository;
    let mount_from = mount_source(source, dest);
    let descriptor = |kept: &KeptBlob| -> Result<Descriptor, Error> {
        Ok(Descriptor {
            media_type: kept.media_type.clone(),
            digest: kept.digest.parse()?,
            size: kept.size,
            platform: None,
        })
    };
    let manifest_path = store.blob_path(&source.manifest.blob);
    let manifest = std::fs::read(&manifest_path).map_err(|source| Error::Io {
        op: "read kept manifest",
        path: manifest_path.clone(),
        source,
    })?;
    let manifest_desc = descriptor(&source.manifest)?;
    manifest_desc.digest.verify(
        &format!(
            "kept manifest {} (run `strata store verify`, pull the image again)",
            manifest_path.display()
        ),
        &manifest,
    )?;

    let mut uploaded = 0;
    let mut existing = 0;
    let mut sent = std::collections::BTreeSet::new();
    // Layers, then the config; a blob listed twice is sent once.
    let mut send = |kept: &KeptBlob| -> Result<Descriptor, Error> {
        let desc = descriptor(kept)?;
        if sent.insert(desc.digest.clone()) {
            let file = store.blob_path(&kept.blob);
            if upload_if_missing(client, repo, &desc, &file, mount_from.as_deref(), progress)? {
                uploaded += 1;
            } else {
                existing += 1;
            }
        }
        Ok(desc)
    };
    let layers = source
        .layers
        .iter()
        .map(&mut send)
        .collect::<Result<Vec<_>, Error>>()?;
    send(&source.config)?;
    let tag = dest.tag.clone().unwrap_or_else(|| "latest".to_string());
    let answered = client.put_manifest(repo, &tag, &source.manifest.media_type, &manifest)?;
    check_answered(answered, &manifest_desc.digest, dest)?;
    Ok(PushOutcome {
        manifest_digest: manifest_desc.digest,
        uploaded_blobs: uploaded,
        existing_blobs: existing,
        layers,
    })
}

/// A repository of `dest`'s registry that `source` was pulled from, other
/// than `dest`'s own: the registry may mount its blobs instead of an upload.
fn mount_source(source: &ImageSource, dest: &Reference) -> Option<String> {
    source
        .names
        .iter()
        .filter_map(|n| n.parse::<Reference>().ok())
        .find(|r| r.registry == dest.registry && r.repository != dest.repository)
        .map(|r| r.repository)
}

/// Check the registry's `Docker-Content-Digest` for a pushed manifest.
fn check_answered(
    answered: Option<String>,
    expected: &Digest,
    dest: &Reference,
) -> Result<(), Error> {
    match answered {
        Some(d) if d != expected.to_string() => Err(Error::DigestMismatch {
            what: format!("manifest pushed to {dest}"),
            expected: expected.to_string(),
            actual: d,
        }),
        _ => Ok(()),
    }
}

/// Upload one blob unless the registry has it, or can mount it from
/// repository `mount_from`. Returns whether it uploaded.
fn upload_if_missing(
    client: &Client,
    repo: &str,
    desc: &Descriptor,
    file: &Path,
    mount_from: Option<&str>,
    progress: &Progress,
) -> Result<bool, Error> {
    let bar = progress.blob("Writing", &desc.digest, desc.size);
    if client.blob_exists(repo, &desc.digest)? {
        bar.finish("skipped: already exists");
        return Ok(false);
    }
    match client.upload_blob(repo, &desc.digest, file, mount_from) {
        Ok(true) => {
            bar.finish(&format!(
                "skipped: mounted from {}",
                mount_from.unwrap_or("?")
            ));
            Ok(false)
        }
        Ok(false) => {
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
fn config_json(image: &ImageRecord, diff_ids: &[Digest]) -> Result<Vec<u8>, Error> {
    let host = manifest::Platform::host();
    let doc = ConfigFile {
        created: image.created.clone(),
        architecture: image.architecture.clone().unwrap_or(host.architecture),
        os: image.os.clone().unwrap_or(host.os),
        config: Some(RunConfig::from_image_config(&image.config)),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: diff_ids.iter().map(ToString::to_string).collect(),
        },
    };
    serde_json::to_vec(&doc)
        .map_err(|e| Error::Manifest(format!("cannot encode image config: {e}")))
}

/// Write layer `layer` as a gzip tar to `path` (the store writes the tar;
/// both streams are hashed on the way). Returns its descriptor and diff id.
fn write_layer_blob(
    store: &Store,
    layer: &LayerId,
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
    // No name or time in the gzip header: the same layer always compresses
    // to the same bytes.
    let gz = flate2::GzBuilder::new().write(compressed, flate2::Compression::default());
    let mut tar = HashingWriter::new(gz);
    store.export_layer_tar(layer, &mut tar).map_err(store_err)?;
    let (gz, diff_id) = tar.finish();
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
