//! `strata push`: upload an image from the store to a registry.
//!
//! Each layer is written out by the store's exporter as an OCI layer tar,
//! gzip-compressed into a staging file while both the tar (diff id) and the
//! gzip stream (blob digest) are hashed. The output is deterministic, so pushing the same
//! image twice gives the same digests and the second push uploads nothing.
//! Blobs the registry already has (`HEAD`) are skipped; the manifest goes
//! last.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use layers_format::oci::{ConfigFile, RootFs, RunConfig};
use layers_format::{ImageRecord, LayerId, Store};
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
