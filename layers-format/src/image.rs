//! Images: an ordered list of layers plus the run configuration, and the
//! names (`NAME:TAG` refs) that point at them.
//!
//! An image pulled from a registry also keeps what the registry served, byte
//! for byte, in [`ImageRecord::sources`]: the manifest, the config blob and
//! every compressed layer blob, as store blobs. A push sends those bytes
//! again, so the pushed image has the same layer and manifest digests as the
//! pulled one. They are roots of the image: `gc` keeps them while the record
//! exists and drops them with it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{BlobId, ImageId, LayerId};

/// How to run an image: the parts of the OCI image config strata uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// Environment, `KEY=value`.
    pub env: Vec<String>,
    /// Default arguments (after the entrypoint).
    pub cmd: Option<Vec<String>>,
    /// Program and leading arguments.
    pub entrypoint: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// `user[:group]`, names or ids.
    pub user: Option<String>,
    /// Ports as `PORT/PROTO`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// Volume mount points.
    pub volumes: Vec<String>,
    /// Signal that stops the container, e.g. `SIGTERM`.
    pub stop_signal: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Shell for the shell form of commands.
    pub shell: Option<Vec<String>>,
}

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id (hash of layers, config and platform).
    pub id: ImageId,
    /// Names (`name:tag`) pointing at it; filled in from the refs when read.
    #[serde(default)]
    pub names: Vec<String>,
    /// Layers, base layer first (as in an OCI manifest).
    pub layers: Vec<LayerId>,
    /// How to run it.
    pub config: ImageConfig,
    /// Creation time from the image config (RFC 3339), if known.
    #[serde(default)]
    pub created: Option<String>,
    /// CPU architecture (`amd64`...), if known.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Operating system (`linux`), if known.
    #[serde(default)]
    pub os: Option<String>,
    /// sha256 digests (`sha256:...`) of each layer's uncompressed tar, when
    /// imported from tars (OCI `rootfs.diff_ids`).
    #[serde(default)]
    pub diff_ids: Vec<String>,
    /// Digest of the OCI config blob it came from, if any.
    #[serde(default)]
    pub config_digest: Option<String>,
    /// Digest of the OCI manifest it came from, if any.
    #[serde(default)]
    pub manifest_digest: Option<String>,
    /// When it was added to this store (seconds since the epoch).
    #[serde(default)]
    pub added_unix: i64,
    /// The OCI images this image was received as, with their blobs kept as
    /// received (see [`ImageSource`]); newest last. Empty for images built
    /// or imported locally, and in records written before this field existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<ImageSource>,
}

/// Most [`ImageSource`]s one image record keeps; older ones are dropped.
pub const MAX_SOURCES: usize = 8;

/// A blob kept in the store exactly as it was received, with the OCI
/// descriptor that names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBlob {
    /// OCI media type, e.g. `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// sha256 of the bytes, `sha256:<64 hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The store blob holding the bytes.
    pub blob: BlobId,
}

/// One OCI image (manifest, config, layer blobs) an image record was
/// received as, every part kept as a store blob. Record field `sources`:
///
/// ```json
/// {"names": ["127.0.0.1:5000/app:1"],
///  "manifest": {"media_type": "...manifest.v1+json", "digest": "sha256:...", "size": 402, "blob": "<blake3>"},
///  "config":   {"media_type": "...config.v1+json",   "digest": "sha256:...", "size": 611, "blob": "<blake3>"},
///  "layers":  [{"media_type": "...tar+gzip",        "digest": "sha256:...", "size": 912, "blob": "<blake3>"}]}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSource {
    /// Names (`name:tag`, normalised) it was received under; empty when it
    /// was received by digest only.
    #[serde(default)]
    pub names: Vec<String>,
    /// The image manifest.
    pub manifest: KeptBlob,
    /// The config blob.
    pub config: KeptBlob,
    /// The layer blobs, one per entry of [`ImageRecord::layers`], in order.
    pub layers: Vec<KeptBlob>,
}

impl ImageSource {
    /// Every blob of this source: manifest, config, then layers.
    pub fn blobs(&self) -> impl Iterator<Item = &KeptBlob> {
        [&self.manifest, &self.config]
            .into_iter()
            .chain(self.layers.iter())
    }
}

impl ImageRecord {
    /// The source to send when pushing this image as `name_or_id`: the one
    /// received under that name, else the newest.
    pub fn source_for(&self, name_or_id: &str) -> Option<&ImageSource> {
        let by_name = normalize_name(name_or_id)
            .ok()
            .and_then(|n| self.sources.iter().rev().find(|s| s.names.contains(&n)));
        by_name.or(self.sources.last())
    }
}

/// What identifies an image: the id is the BLAKE3 of this, as JSON.
#[derive(Serialize)]
struct IdentityFields<'a> {
    layers: &'a [LayerId],
    config: &'a ImageConfig,
    created: &'a Option<String>,
    architecture: &'a Option<String>,
    os: &'a Option<String>,
}

/// Everything needed to add an image (see [`crate::Store::add_image`]).
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    /// Layers, base first; all must be in the store.
    pub layers: Vec<LayerId>,
    /// Run configuration.
    pub config: ImageConfig,
    /// Creation time (RFC 3339).
    pub created: Option<String>,
    /// Architecture.
    pub architecture: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Layer diff ids (`sha256:...`), if known.
    pub diff_ids: Vec<String>,
    /// Config blob digest, if any.
    pub config_digest: Option<String>,
    /// Manifest digest, if any.
    pub manifest_digest: Option<String>,
}

impl NewImage {
    /// The id this image will have.
    pub fn id(&self) -> ImageId {
        let fields = IdentityFields {
            layers: &self.layers,
            config: &self.config,
            created: &self.created,
            architecture: &self.architecture,
            os: &self.os,
        };
        // Serialising plain strings, vectors and BTreeMaps cannot fail.
        let json = serde_json::to_vec(&fields).unwrap_or_default();
        ImageId::of(&json)
    }
}

/// Normalise an image name: add `:latest` when no tag is given, drop the
/// `docker.io/library/` (or `docker.io/`) prefix as docker shows names, and
/// check the characters (lower-case repository `[a-z0-9._/-]` with an
/// optional `host:port/` prefix; tag `[A-Za-z0-9_.-]`, at most 128).
pub fn normalize_name(name: &str) -> Result<String> {
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    let invalid = |problem: &str| Error::Invalid {
        kind: "image name",
        value: name.to_string(),
        problem: problem.to_string(),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => (name, "latest"),
    };
    if repo.is_empty() || repo.len() > 255 {
        return Err(invalid("the repository part must be 1 to 255 characters"));
    }
    if tag.is_empty()
        || tag.len() > 128
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(invalid("the tag must be 1 to 128 of [A-Za-z0-9_.-]"));
    }
    let mut comps = repo.split('/').peekable();
    let mut first = true;
    while let Some(comp) = comps.next() {
        let is_host = first
            && comps.peek().is_some()
            && (comp.contains(':') || comp.contains('.') || comp == "localhost");
        let ok_char = |c: char| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || "._-".contains(c)
                || (is_host && c == ':')
        };
        if comp.is_empty() || !comp.chars().all(ok_char) {
            return Err(invalid(
                "use lower-case letters, digits, '.', '_', '-' and '/' in the repository",
            ));
        }
        first = false;
    }
    Ok(format!("{repo}:{tag}"))
}

pub(crate) fn record_for(new: &NewImage, names: Vec<String>, added_unix: i64) -> ImageRecord {
    ImageRecord {
        id: new.id(),
        names,
        layers: new.layers.clone(),
        config: new.config.clone(),
        created: new.created.clone(),
        architecture: new.architecture.clone(),
        os: new.os.clone(),
        diff_ids: new.diff_ids.clone(),
        config_digest: new.config_digest.clone(),
        manifest_digest: new.manifest_digest.clone(),
        added_unix,
        sources: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(normalize_name("busybox").unwrap(), "busybox:latest");
        assert_eq!(normalize_name("a/b:1.0").unwrap(), "a/b:1.0");
        assert_eq!(
            normalize_name("localhost:5000/x").unwrap(),
            "localhost:5000/x:latest"
        );
        assert_eq!(
            normalize_name("localhost:5000/x:v2").unwrap(),
            "localhost:5000/x:v2"
        );
        assert!(normalize_name("Busybox").is_err());
        assert!(normalize_name("a b").is_err());
        assert!(normalize_name("x:").is_err());
        assert!(normalize_name("").is_err());
    }
}
