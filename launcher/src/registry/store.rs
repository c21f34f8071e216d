//! The layer store (`layers_format::Store`) as the target of a pull.
//!
//! Layers are imported through the store's tar importer with the expected
//! digest, and the OCI digest → layer mapping is recorded so the next pull
//! of the same blob is skipped. The compressed layer blobs, the config and
//! the manifest are also kept byte for byte as store blobs and listed in the
//! image record's `sources`, so `strata push` can send exactly what was
//! pulled (same layer and manifest digests).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use layers_format::import::tar::TarOptions;
use layers_format::import::Compression;
use layers_format::oci::ConfigFile;
use layers_format::{BlobId, ImageConfig, ImageSource, KeptBlob, LayerId, NewImage, Store};
use parking_lot::Mutex;

use super::manifest::{Descriptor, LayerCompression};
use super::pull::{PullStore, PulledImage};
use super::{Digest, Error};

/// A pull target over an open store. Hold the store lock shared while it
/// is used: blobs kept during the pull are referenced only at the end.
pub struct StoreTarget<'a> {
    store: &'a Store,
    /// Layer blobs kept as served, by sha256 digest: those some image of
    /// the store already keeps, then those downloaded by this pull.
    kept: Mutex<HashMap<String, (BlobId, u64)>>,
    /// Verified layer files of this pull, by sha256 digest, moved into the
    /// store as blobs once every layer is imported (a failed pull keeps none).
    downloaded: Mutex<Vec<(String, PathBuf)>>,
}

impl<'a> StoreTarget<'a> {
    /// Pull into `store`.
    pub fn new(store: &'a Store) -> Result<Self, Error> {
        let mut kept = HashMap::new();
        for image in store.list_images().map_err(store_err)? {
            for blob in image.sources.iter().flat_map(|s| s.layers.iter()) {
                kept.insert(blob.digest.clone(), (blob.blob, blob.size));
            }
        }
        Ok(StoreTarget {
            store,
            kept: Mutex::new(kept),
            downloaded: Mutex::new(Vec::new()),
        })
    }

    /// Move the files of [`PullStore::import_layer`] into the store as blobs.
    fn keep_downloaded(&self) -> Result<(), Error> {
        let files = std::mem::take(&mut *self.downloaded.lock());
        for (digest, file) in files {
            let kept = self.store.add_blob_file(&file).map_err(store_err)?;
            self.kept.lock().insert(digest, kept);
        }
        Ok(())
    }

    /// Keep `bytes` (a config or manifest as served) as a store blob.
    fn keep_bytes(
        &self,
        bytes: &[u8],
        media_type: &str,
        digest: &Digest,
    ) -> Result<KeptBlob, Error> {
        let (blob, size) = self.store.write_blob(&mut &bytes[..]).map_err(store_err)?;
        Ok(KeptBlob {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            blob,
        })
    }
}

fn store_err(e: layers_format::Error) -> Error {
    Error::Store(e.to_string())
}

/// The store's run configuration from an OCI image config.
fn run_config(config: &ConfigFile) -> ImageConfig {
    config
        .config
        .as_ref()
        .map(|c| c.to_image_config())
        .unwrap_or_default()
}

impl PullStore for StoreTarget<'_> {
    fn staging_dir(&self) -> Result<PathBuf, Error> {
        Ok(self.store.root().join("tmp"))
    }

    fn has_layer(&self, digest: &Digest) -> bool {
        let digest = digest.to_string();
        let blob_kept = self
            .kept
            .lock()
            .get(&digest)
            .is_some_and(|(blob, _)| self.store.has_blob(blob));
        blob_kept && matches!(self.store.layer_for_digest(&digest), Ok(Some(_)))
    }

    fn import_layer(&self, file: &Path, layer: &Descriptor) -> Result<(), Error> {
        let digest = layer.digest.to_string();
        if self
            .store
            .layer_for_digest(&digest)
            .map_err(store_err)?
            .is_none()
        {
            self.import_layer_tar(file, layer)?;
        }
        self.downloaded.lock().push((digest, file.to_path_buf()));
        Ok(())
    }

    fn save_image(&self, image: &PulledImage<'_>) -> Result<String, Error> {
        self.keep_downloaded()?;
        let record = self.save_record(image)?;
        let kept = self.kept.lock().clone();
        let mut layers = Vec::new();
        for l in &image.parsed.layers {
            let (blob, size) = kept.get(&l.digest.to_string()).copied().ok_or_else(|| {
                Error::Store(format!(
                    "layer blob {} vanished from the store during the pull",
                    l.digest
                ))
            })?;
            layers.push(KeptBlob {
                media_type: l.media_type.clone(),
                digest: l.digest.to_string(),
                size,
                blob,
            });
        }
        let config_desc = &image.parsed.config;
        let source = ImageSource {
            names: pulled_names(&image.name),
            manifest: self.keep_bytes(
                image.manifest,
                image.manifest_media_type,
                image.manifest_digest,
            )?,
            config: self.keep_bytes(image.config, &config_desc.media_type, &config_desc.digest)?,
            layers,
        };
        self.store
            .add_image_source(&record.id, &source)
            .map_err(store_err)?;
        Ok(record.id.to_hex())
    }
}

impl StoreTarget<'_> {
    /// Import a verified layer blob through the store's tar importer.
    fn import_layer_tar(&self, file: &Path, layer: &Descriptor) -> Result<(), Error> {
        let compression = match LayerCompression::of(&layer.media_type)? {
            LayerCompression::None => Compression::None,
            LayerCompression::Gzip => Compression::Gzip,
            LayerCompression::Zstd => Compression::Zstd,
        };
        let f = File::open(file).map_err(|source| Error::Io {
            op: "open",
            path: file.to_path_buf(),
            source,
        })?;
        let options = TarOptions {
            source_name: Some(format!("layer {}", layer.digest)),
            expect_digest: Some(layer.digest.to_string()),
            ..TarOptions::default()
        };
        let imported = self
            .store
            .import_layer_tar_with(BufReader::new(f), compression, &options)
            .map_err(store_err)?;
        self.store
            .record_layer_digest(&layer.digest.to_string(), &imported.layer)
            .map_err(store_err)?;
        self.store
            .record_layer_digest(&imported.diff_id, &imported.layer)
            .map_err(store_err)?;
        Ok(())
    }

    /// Record the image (layers, config) under the names it was pulled as.
    fn save_record(&self, image: &PulledImage<'_>) -> Result<layers_format::ImageRecord, Error> {
        let config = parse_config(image.config)?;
        let mut layers: Vec<LayerId> = Vec::new();
        for l in &image.parsed.layers {
            let id = self
                .store
                .layer_for_digest(&l.digest.to_string())
                .map_err(store_err)?
                .ok_or_else(|| {
                    Error::Store(format!(
                        "layer {} vanished from the store during the pull",
                        l.digest
                    ))
                })?;
            layers.push(id);
        }
        let new = NewImage {
            layers,
            config: run_config(&config),
            created: config.created.clone(),
            architecture: Some(config.architecture.clone()).filter(|a| !a.is_empty()),
            os: Some(config.os.clone()).filter(|o| !o.is_empty()),
            diff_ids: config.rootfs.diff_ids.clone(),
            config_digest: Some(image.parsed.config.digest.to_string()),
            manifest_digest: Some(image.manifest_digest.to_string()),
        };
        let names = pulled_names(&image.name);
        self.store.add_image(&new, &names).map_err(store_err)
    }
}

/// The names an image pulled as `reference` gets: the reference, or its
/// tagged part for `name:tag@digest`; none for `name@digest`.
fn pulled_names(reference: &str) -> Vec<String> {
    reference.split_once('@').map_or_else(
        || vec![reference.to_string()],
        |(tagged, _)| {
            if tagged
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'))
            {
                vec![tagged.to_string()]
            } else {
                Vec::new()
            }
        },
    )
}

fn parse_config(bytes: &[u8]) -> Result<ConfigFile, Error> {
    layers_format::oci::parse_config("image config", bytes).map_err(store_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_config_to_run_config() {
        let c = parse_config(
            br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"","ExposedPorts":{"80/tcp":{}},
            "Volumes":{"/data":{}},"Labels":{"a":"b"}},
            "rootfs":{"type":"layers","diff_ids":["sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"]}}"#,
        )
        .unwrap();
        let r = run_config(&c);
        assert_eq!(r.env, vec!["PATH=/bin"]);
        assert_eq!(r.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(r.working_dir, None);
        assert_eq!(r.exposed_ports, vec!["80/tcp"]);
        assert_eq!(r.volumes, vec!["/data"]);
        assert_eq!(
            c.rootfs.diff_ids,
            vec!["sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"]
        );
        assert!(parse_config(b"[1]").is_err());
    }
}
