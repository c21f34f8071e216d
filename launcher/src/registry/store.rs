//! The layer store (`layers_format::Store`) as the target of a pull.
//!
//! Layers are imported through the store's tar importer with the expected
//! digest, and the OCI digest → layer mapping is recorded so the next pull
//! of the same blob is skipped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use layers_format::import::tar::TarOptions;
use layers_format::import::Compression;
use layers_format::{ImageConfig, LayerId, NewImage, Store};

use super::manifest::{Descriptor, LayerCompression};
use super::pull::{PullStore, PulledImage};
use super::{Digest, Error};

/// A pull target over an open store.
pub struct StoreTarget<'a> {
    store: &'a Store,
}

impl<'a> StoreTarget<'a> {
    /// Pull into `store`.
    pub fn new(store: &'a Store) -> Self {
        StoreTarget { store }
    }
}

fn store_err(e: layers_format::Error) -> Error {
    Error::Store(e.to_string())
}

impl PullStore for StoreTarget<'_> {
    fn staging_dir(&self) -> Result<PathBuf, Error> {
        Ok(self.store.root().join("tmp"))
    }

    fn has_layer(&self, digest: &Digest) -> bool {
        matches!(
            self.store.layer_for_digest(&digest.to_string()),
            Ok(Some(_))
        )
    }

    fn import_layer(&self, file: &Path, layer: &Descriptor) -> Result<(), Error> {
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

    fn save_image(&self, image: &PulledImage<'_>) -> Result<String, Error> {
        let config = OciConfig::parse(image.config)?;
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
            config: config.run_config(),
            created: config.created.clone(),
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            diff_ids: config.rootfs.diff_ids.clone(),
            config_digest: Some(image.parsed.config.digest.to_string()),
            manifest_digest: Some(image.manifest_digest.to_string()),
        };
        let names: Vec<String> = image.name.split_once('@').map_or_else(
            || vec![image.name.clone()],
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
        );
        let record = self.store.add_image(&new, &names).map_err(store_err)?;
        Ok(record.id.to_hex())
    }
}

/// The parts of an OCI image config (`application/vnd.oci.image.config.v1+json`)
/// strata keeps.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct OciConfig {
    /// Creation time.
    pub created: Option<String>,
    /// CPU architecture.
    pub architecture: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Run configuration.
    pub config: OciRunConfig,
    /// Layer diff ids.
    pub rootfs: OciRootfs,
}

/// `config` inside an OCI image config.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct OciRunConfig {
    /// `KEY=value`.
    pub env: Option<Vec<String>>,
    /// Default arguments.
    pub cmd: Option<Vec<String>>,
    /// Program.
    pub entrypoint: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// User.
    pub user: Option<String>,
    /// `{"80/tcp": {}}`.
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// `{"/data": {}}`.
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Stop signal.
    pub stop_signal: Option<String>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Shell.
    pub shell: Option<Vec<String>>,
}

/// `rootfs` inside an OCI image config.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct OciRootfs {
    /// Uncompressed layer digests.
    pub diff_ids: Vec<String>,
}

impl OciConfig {
    /// Parse config bytes.
    pub fn parse(bytes: &[u8]) -> Result<OciConfig, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Manifest(format!("image config is not valid: {e}")))
    }

    /// The store's run configuration.
    pub fn run_config(&self) -> ImageConfig {
        let c = &self.config;
        ImageConfig {
            env: c.env.clone().unwrap_or_default(),
            cmd: c.cmd.clone(),
            entrypoint: c.entrypoint.clone(),
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            user: c.user.clone().filter(|u| !u.is_empty()),
            exposed_ports: c
                .exposed_ports
                .as_ref()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            volumes: c
                .volumes
                .as_ref()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            stop_signal: c.stop_signal.clone(),
            labels: c.labels.clone().unwrap_or_default(),
            shell: c.shell.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_config_to_run_config() {
        let c = OciConfig::parse(
            br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"","ExposedPorts":{"80/tcp":{}},
            "Volumes":{"/data":{}},"Labels":{"a":"b"}},
            "rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#,
        )
        .unwrap();
        let r = c.run_config();
        assert_eq!(r.env, vec!["PATH=/bin"]);
        assert_eq!(r.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(r.working_dir, None);
        assert_eq!(r.exposed_ports, vec!["80/tcp"]);
        assert_eq!(r.volumes, vec!["/data"]);
        assert_eq!(c.rootfs.diff_ids, vec!["sha256:00"]);
        assert_eq!(c.architecture.as_deref(), Some("amd64"));
        assert!(OciConfig::parse(b"[1]").is_err());
    }
}
