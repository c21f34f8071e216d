//! The OCI documents strata reads: image index, image manifest and image
//! config (also the docker-save `manifest.json`). Parsing is strict about
//! the fields strata needs and ignores the rest; sizes are capped before
//! parsing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::ImageConfig;

/// Largest JSON document (index, manifest, config) accepted.
pub const MAX_JSON: u64 = 16 * 1024 * 1024;

/// Media type of an OCI image index.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of a docker manifest list.
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of a docker image manifest.
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Annotation naming an image in an OCI layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (in an index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A platform in an image index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`...).
    pub architecture: String,
    /// OS (`linux`).
    pub os: String,
    /// CPU variant (`v8`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image index (also a layout's `index.json`, a docker manifest list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Must be 2.
    pub schema_version: u32,
    /// Media type, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes).
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Must be 2.
    pub schema_version: u32,
    /// Media type, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

/// The image config document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// OS.
    #[serde(default)]
    pub os: String,
    /// How to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// The layers' uncompressed digests.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// sha256 of each uncompressed layer tar, base first.
    pub diff_ids: Vec<String>,
}

/// The `config` member of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Exposed ports, as keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volumes, as keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stop signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

impl RunConfig {
    /// The strata view of this config.
    pub fn to_image_config(&self) -> ImageConfig {
        ImageConfig {
            env: self.env.clone().unwrap_or_default(),
            cmd: self.cmd.clone(),
            entrypoint: self.entrypoint.clone(),
            working_dir: self.working_dir.clone().filter(|w| !w.is_empty()),
            user: self.user.clone().filter(|u| !u.is_empty()),
            exposed_ports: self
                .exposed_ports
                .as_ref()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            volumes: self
                .volumes
                .as_ref()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            stop_signal: self.stop_signal.clone().filter(|s| !s.is_empty()),
            labels: self.labels.clone().unwrap_or_default(),
            shell: self.shell.clone(),
        }
    }

    /// The OCI form of a strata config.
    pub fn from_image_config(c: &ImageConfig) -> RunConfig {
        let keys = |v: &[String]| -> Option<BTreeMap<String, serde_json::Value>> {
            (!v.is_empty()).then(|| {
                v.iter()
                    .map(|k| (k.clone(), serde_json::json!({})))
                    .collect()
            })
        };
        RunConfig {
            user: c.user.clone(),
            exposed_ports: keys(&c.exposed_ports),
            env: (!c.env.is_empty()).then(|| c.env.clone()),
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            volumes: keys(&c.volumes),
            working_dir: c.working_dir.clone(),
            labels: (!c.labels.is_empty()).then(|| c.labels.clone()),
            stop_signal: c.stop_signal.clone(),
            shell: c.shell.clone(),
        }
    }
}

/// One image of a docker-save `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerSaveEntry {
    /// Path of the config file in the archive.
    pub config: String,
    /// Names.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Paths of the layer tars, base first.
    pub layers: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    if bytes.len() as u64 > MAX_JSON {
        return Err(Error::bad_input(
            what,
            format!(
                "{} bytes, larger than the {MAX_JSON}-byte limit",
                bytes.len()
            ),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| Error::bad_input(what, format!("invalid JSON: {e}")))
}

/// Check a `sha256:<64 hex>` digest string.
pub fn check_digest(what: &str, digest: &str) -> Result<()> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) =>
        {
            Ok(())
        }
        Some((alg, _)) if alg != "sha256" => Err(Error::bad_input(
            what,
            format!("digest algorithm {alg:?} is not supported (only sha256)"),
        )),
        _ => Err(Error::bad_input(
            what,
            format!("malformed digest {digest:?}"),
        )),
    }
}

fn check_descriptor(what: &str, d: &Descriptor) -> Result<()> {
    check_digest(what, &d.digest)
}

/// Parse an image index.
pub fn parse_index(what: &str, bytes: &[u8]) -> Result<ImageIndex> {
    let index: ImageIndex = parse(what, bytes)?;
    if index.schema_version != 2 {
        return Err(Error::bad_input(
            what,
            format!("schemaVersion {}, expected 2", index.schema_version),
        ));
    }
    for d in &index.manifests {
        check_descriptor(what, d)?;
    }
    Ok(index)
}

/// Parse an image manifest.
pub fn parse_manifest(what: &str, bytes: &[u8]) -> Result<Manifest> {
    let m: Manifest = parse(what, bytes)?;
    if m.schema_version != 2 {
        return Err(Error::bad_input(
            what,
            format!("schemaVersion {}, expected 2", m.schema_version),
        ));
    }
    check_descriptor(what, &m.config)?;
    for d in &m.layers {
        check_descriptor(what, d)?;
    }
    Ok(m)
}

/// Parse an image config.
pub fn parse_config(what: &str, bytes: &[u8]) -> Result<ConfigFile> {
    let c: ConfigFile = parse(what, bytes)?;
    for d in &c.rootfs.diff_ids {
        check_digest(what, d)?;
    }
    Ok(c)
}

/// Parse a docker-save `manifest.json`.
pub fn parse_docker_save_manifest(what: &str, bytes: &[u8]) -> Result<Vec<DockerSaveEntry>> {
    parse(what, bytes)
}

/// sha256 of `bytes` as `sha256:<hex>`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_documents() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{d}","size":3}},"layers":[{{"mediaType":"y","digest":"{d}","size":4}}]}}"#
        );
        let m = parse_manifest("m", m.as_bytes()).unwrap();
        assert_eq!(m.layers.len(), 1);
        let c = r#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Cmd":["sh"],"ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = parse_config("c", c.as_bytes()).unwrap();
        let ic = c.config.unwrap().to_image_config();
        assert_eq!(ic.exposed_ports, vec!["80/tcp".to_string()]);
        assert_eq!(ic.cmd, Some(vec!["sh".to_string()]));
        assert!(parse_manifest("m", b"{}").is_err());
        assert!(parse_index(
            "i",
            br#"{"schemaVersion":2,"manifests":[{"digest":"md5:x","size":1}]}"#
        )
        .is_err());
    }
}
