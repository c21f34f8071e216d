//! Manifests, image indexes and descriptors as registries serve them (OCI
//! image-spec and docker schema 2), and the choice of one platform from an
//! index.

use serde::{Deserialize, Serialize};

use super::{Digest, Error};

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker manifest list (the docker name for an index).
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A pointer to content: media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the content is.
    pub media_type: String,
    /// Its sha256.
    pub digest: Digest,
    /// Its length in bytes.
    pub size: u64,
    /// For index entries: the platform the manifest is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// An image platform (`os/architecture[/variant]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `v8` for arm64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The platform of this machine, in OCI's names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            architecture: architecture.to_string(),
            os: std::env::consts::OS.to_string(),
            variant: None,
        }
    }

    /// Parse `os/arch[/variant]` as given to `--platform`.
    pub fn parse(s: &str) -> Result<Platform, Error> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            Error::Manifest(format!(
                "bad platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64"
            ))
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(bad()),
        }
    }

    /// Whether an index entry for `other` can serve a request for `self`: OS
    /// and architecture must agree; a variant only matters when asked for.
    pub fn accepts(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (Some(want), Some(have)) => want == have,
                (Some(want), None) => self.architecture == "arm64" && want == "v8",
                (None, _) => true,
            }
    }
}

/// An image index / manifest list.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// The per-platform manifests.
    pub manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type (may be absent in OCI manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config blob.
    pub config: Descriptor,
    /// Layer blobs, base first.
    pub layers: Vec<Descriptor>,
}

/// A manifest document after its kind was worked out.
#[derive(Debug, Clone)]
pub enum Document {
    /// An index to pick a platform from.
    Index(Index),
    /// An image manifest, with its media type.
    Manifest(Manifest, String),
}

/// Parse a manifest document. The media type comes from the JSON's
/// `mediaType` when present, else from the `Content-Type` header, else from
/// the document's shape.
pub fn parse_document(bytes: &[u8], content_type: Option<&str>) -> Result<Document, Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| Error::Manifest(format!("manifest is not valid JSON: {e}")))?;
    if probe.schema_version == Some(1) {
        return Err(Error::Manifest(
            "docker schema 1 manifests are not supported: push the image again with a \
             current client"
                .to_string(),
        ));
    }
    let media_type = probe
        .media_type
        .clone()
        .or_else(|| content_type.map(str::to_string))
        .filter(|m| !m.is_empty() && m != "application/json" && m != "text/plain");
    let kind = match media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => "index",
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => "manifest",
        Some(other) => {
            return Err(Error::Manifest(format!(
                "unsupported manifest media type {other:?}"
            )))
        }
        None if probe.manifests.is_some() => "index",
        None if probe.layers.is_some() => "manifest",
        None => {
            return Err(Error::Manifest(
                "document is neither an image index nor a manifest".to_string(),
            ))
        }
    };
    let bad = |e: serde_json::Error| Error::Manifest(format!("malformed {kind}: {e}"));
    if kind == "index" {
        Ok(Document::Index(serde_json::from_slice(bytes).map_err(bad)?))
    } else {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(bad)?;
        let mt = media_type.unwrap_or_else(|| OCI_MANIFEST.to_string());
        for layer in &manifest.layers {
            LayerCompression::of(&layer.media_type)?;
        }
        Ok(Document::Manifest(manifest, mt))
    }
}

/// Pick the manifest for `want` from an index.
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Result<&'a Descriptor, Error> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| want.accepts(p)))
        .ok_or_else(|| {
            let available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(Platform::to_string)
                .collect();
            Error::NoPlatform {
                wanted: want.to_string(),
                available: available.join(", "),
            }
        })
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl LayerCompression {
    /// From a layer media type; unknown types are an error.
    pub fn of(media_type: &str) -> Result<LayerCompression, Error> {
        let base = media_type
            .strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.")
            .map(|rest| format!("application/vnd.oci.image.layer.v1.{rest}"));
        match base.as_deref().unwrap_or(media_type) {
            OCI_LAYER_TAR | "application/vnd.docker.image.rootfs.diff.tar" => {
                Ok(LayerCompression::None)
            }
            OCI_LAYER_GZIP
            | DOCKER_LAYER_GZIP
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Ok(LayerCompression::Gzip)
            }
            OCI_LAYER_ZSTD | "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
                Ok(LayerCompression::Zstd)
            }
            other => Err(Error::Manifest(format!(
                "unsupported layer media type {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    #[test]
    fn media_type_from_content_type_when_json_lacks_it() {
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":3}},
            "layers":[{{"mediaType":"{OCI_LAYER_GZIP}","digest":"{}","size":5}}]}}"#,
            d(1),
            d(2)
        );
        match parse_document(doc.as_bytes(), Some(DOCKER_MANIFEST)).unwrap() {
            Document::Manifest(m, mt) => {
                assert_eq!(mt, DOCKER_MANIFEST);
                assert_eq!(m.layers.len(), 1);
                assert_eq!(m.layers[0].size, 5);
            }
            other => panic!("not a manifest: {other:?}"),
        }
    }

    #[test]
    fn index_picks_host_platform_and_skips_attestations() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            d(1),
            d(2),
            d(3)
        );
        let Document::Index(index) = parse_document(doc.as_bytes(), None).unwrap() else {
            panic!("not an index");
        };
        let amd = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            select_platform(&index, &amd).unwrap().digest.to_string(),
            d(3)
        );
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(
            select_platform(&index, &arm).unwrap().digest.to_string(),
            d(1)
        );
        let err = select_platform(&index, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("linux/amd64") && !text.contains("unknown/"),
            "{text}"
        );
    }

    #[test]
    fn rejects_schema1_and_unknown_layers() {
        assert!(parse_document(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).is_err());
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":3}},
            "layers":[{{"mediaType":"application/x-weird","digest":"{}","size":5}}]}}"#,
            d(1),
            d(2)
        );
        assert!(parse_document(doc.as_bytes(), Some(OCI_MANIFEST)).is_err());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//x").is_err());
    }

    #[test]
    fn compression_from_media_type() {
        assert_eq!(
            LayerCompression::of(OCI_LAYER_ZSTD).unwrap(),
            LayerCompression::Zstd
        );
        assert_eq!(
            LayerCompression::of(DOCKER_LAYER_GZIP).unwrap(),
            LayerCompression::Gzip
        );
        assert_eq!(
            LayerCompression::of(OCI_LAYER_TAR).unwrap(),
            LayerCompression::None
        );
        assert_eq!(
            LayerCompression::of("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
                .unwrap(),
            LayerCompression::Gzip
        );
    }
}
