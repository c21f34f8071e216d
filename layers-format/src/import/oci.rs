//! Importing images from an OCI image layout (a directory, or a tar of one
//! such as skopeo's `oci-archive:`) and from docker-save archives (the old
//! `manifest.json` form and the newer OCI-layout form).
//!
//! Every manifest, config and layer blob read is checked against its sha256
//! digest and size; layer diff ids are checked against the config's
//! `rootfs.diff_ids`. A layer already imported under the same digest is
//! reused without being read again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::ids::LayerId;
use crate::image::{ImageRecord, NewImage};
use crate::import::tar::{Compression, TarOptions};
use crate::import::Progress;
use crate::oci::{self, Descriptor};
use crate::store::Store;

/// Where the files of a layout or archive come from.
pub(crate) trait Source {
    /// A reader for `path` (relative, `/`-separated) and its size.
    fn open(&self, path: &str) -> Result<(Box<dyn Read + '_>, u64)>;
    /// Whether `path` exists.
    fn exists(&self, path: &str) -> bool;
    /// Name for messages.
    fn name(&self) -> String;
}

/// A directory.
pub(crate) struct DirSource(pub PathBuf);

impl Source for DirSource {
    fn open(&self, path: &str) -> Result<(Box<dyn Read + '_>, u64)> {
        let p = self.0.join(path);
        let f = File::open(&p).ctx("open", &p)?;
        let len = f.metadata().ctx("stat", &p)?.len();
        Ok((Box::new(f), len))
    }
    fn exists(&self, path: &str) -> bool {
        self.0.join(path).exists()
    }
    fn name(&self) -> String {
        self.0.display().to_string()
    }
}

/// A tar file, its members found by one scan of the headers.
pub(crate) struct TarSource {
    path: PathBuf,
    members: HashMap<String, (u64, u64)>,
}

impl TarSource {
    /// Scan the headers of the tar at `path` (data is skipped by seeking).
    pub(crate) fn scan(path: &Path) -> Result<TarSource> {
        let file = File::open(path).ctx("open", path)?;
        let mut archive = tar::Archive::new(file);
        let bad = |e: std::io::Error| {
            Error::bad_input(
                path.display().to_string(),
                format!("bad or truncated tar: {e}"),
            )
        };
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            if !matches!(
                entry.header().entry_type(),
                tar::EntryType::Regular | tar::EntryType::Continuous
            ) {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = name.trim_start_matches("./").to_string();
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(TarSource {
            path: path.to_path_buf(),
            members,
        })
    }

    /// Member names.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }
}

impl Source for TarSource {
    fn open(&self, path: &str) -> Result<(Box<dyn Read + '_>, u64)> {
        let &(off, size) = self
            .members
            .get(path.trim_start_matches("./"))
            .ok_or_else(|| Error::bad_input(self.name(), format!("member {path:?} is missing")))?;
        let mut f = File::open(&self.path).ctx("open", &self.path)?;
        f.seek(SeekFrom::Start(off)).ctx("seek", &self.path)?;
        Ok((Box::new(f.take(size)), size))
    }
    fn exists(&self, path: &str) -> bool {
        self.members.contains_key(path.trim_start_matches("./"))
    }
    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// Read a small document whole and check its digest and size.
fn read_verified(
    src: &dyn Source,
    path: &str,
    digest: Option<&str>,
    size: Option<u64>,
) -> Result<Vec<u8>> {
    let (reader, len) = src.open(path)?;
    let what = format!("{}: {path}", src.name());
    if len > oci::MAX_JSON {
        return Err(Error::bad_input(
            what,
            format!("{len} bytes, larger than the {}-byte limit", oci::MAX_JSON),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    reader
        .take(oci::MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::bad_input(&what, format!("read failed: {e}")))?;
    if let Some(size) = size {
        if bytes.len() as u64 != size {
            return Err(Error::bad_input(
                what,
                format!("{} bytes, descriptor says {size}", bytes.len()),
            ));
        }
    }
    if let Some(digest) = digest {
        let got = oci::sha256_digest(&bytes);
        if got != digest {
            return Err(Error::DigestMismatch {
                what,
                expected: digest.to_string(),
                actual: got,
            });
        }
    }
    Ok(bytes)
}

fn blob_path(d: &Descriptor) -> Result<String> {
    oci::check_digest("descriptor", &d.digest)?;
    Ok(format!("blobs/{}", d.digest.replacen(':', "/", 1)))
}

/// Import one layer, reusing a layer already known under its digest.
fn import_layer(
    store: &Store,
    src: &dyn Source,
    path: &str,
    digest: Option<&str>,
    diff_id: Option<&str>,
    progress: Option<Progress<'_>>,
) -> Result<(LayerId, String)> {
    for known in [digest, diff_id].into_iter().flatten() {
        if let Some(layer) = store.layer_for_digest(known)? {
            if let Some(diff_id) = diff_id {
                return Ok((layer, diff_id.to_string()));
            }
        }
    }
    let (reader, _) = src.open(path)?;
    let opts = TarOptions {
        source_name: Some(format!("{}: {path}", src.name())),
        expect_digest: digest.map(str::to_string),
        expect_diff_id: diff_id.map(str::to_string),
        progress,
    };
    let imported = crate::import::tar::import(store, reader, Compression::Auto, &opts)?;
    store.record_layer_digest(&imported.digest, &imported.layer)?;
    store.record_layer_digest(&imported.diff_id, &imported.layer)?;
    Ok((imported.layer, imported.diff_id))
}

/// The platform this process runs on, in OCI terms.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Import the image a manifest descriptor names.
fn import_manifest(
    store: &Store,
    src: &dyn Source,
    desc: &Descriptor,
    names: &[String],
    progress: Option<Progress<'_>>,
) -> Result<ImageRecord> {
    let what = format!("{}: manifest {}", src.name(), desc.digest);
    let bytes = read_verified(src, &blob_path(desc)?, Some(&desc.digest), Some(desc.size))?;
    let manifest = oci::parse_manifest(&what, &bytes)?;
    let config_bytes = read_verified(
        src,
        &blob_path(&manifest.config)?,
        Some(&manifest.config.digest),
        Some(manifest.config.size),
    )?;
    let config = oci::parse_config(
        &format!("{}: config {}", src.name(), manifest.config.digest),
        &config_bytes,
    )?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::bad_input(
            what,
            format!(
                "{} layers but the config lists {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        let (id, diff) = import_layer(
            store,
            src,
            &blob_path(layer)?,
            Some(&layer.digest),
            Some(diff_id),
            progress,
        )?;
        layers.push(id);
        diff_ids.push(diff);
    }
    let new = NewImage {
        layers,
        config: config
            .config
            .as_ref()
            .map(|c| c.to_image_config())
            .unwrap_or_default(),
        created: config.created.clone(),
        architecture: Some(config.architecture.clone()).filter(|a| !a.is_empty()),
        os: Some(config.os.clone()).filter(|o| !o.is_empty()),
        diff_ids,
        config_digest: Some(manifest.config.digest.clone()),
        manifest_digest: Some(desc.digest.clone()),
    };
    store.add_image(&new, names)
}

/// Is this descriptor an index (rather than a manifest)?
fn is_index(d: &Descriptor) -> bool {
    d.media_type == oci::MEDIA_INDEX || d.media_type == oci::MEDIA_DOCKER_LIST
}

/// Choose among the platform manifests of an index: the host's
/// architecture on linux, else the only one.
fn pick_platform<'a>(what: &str, manifests: &'a [Descriptor]) -> Result<&'a Descriptor> {
    let arch = host_architecture();
    if let Some(d) = manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    }) {
        return Ok(d);
    }
    match manifests {
        [one] => Ok(one),
        _ => Err(Error::bad_input(
            what,
            format!(
                "no manifest for linux/{arch} among {} platforms",
                manifests.len()
            ),
        )),
    }
}

/// Import every image of an OCI layout (directory or archive). `names`
/// overrides the layout's own ref names (applies when it holds one image).
pub(crate) fn import_layout(
    store: &Store,
    src: &dyn Source,
    names: &[String],
    progress: Option<Progress<'_>>,
) -> Result<Vec<ImageRecord>> {
    if src.exists("oci-layout") {
        let bytes = read_verified(src, "oci-layout", None, None)?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_input(
                format!("{}: oci-layout", src.name()),
                format!("invalid JSON: {e}"),
            )
        })?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(Error::bad_input(
                format!("{}: oci-layout", src.name()),
                "imageLayoutVersion is not 1.0.0",
            ));
        }
    }
    let what = format!("{}: index.json", src.name());
    let index = oci::parse_index(&what, &read_verified(src, "index.json", None, None)?)?;
    if index.manifests.is_empty() {
        return Err(Error::bad_input(what, "the layout holds no image"));
    }
    let mut out = Vec::new();
    for desc in &index.manifests {
        let mut image_names: Vec<String> = names.to_vec();
        if image_names.is_empty() {
            if let Some(name) = layout_ref_name(desc) {
                image_names.push(name);
            }
        }
        let manifest_desc = if is_index(desc) {
            let nested_what = format!("{}: index {}", src.name(), desc.digest);
            let bytes = read_verified(src, &blob_path(desc)?, Some(&desc.digest), Some(desc.size))?;
            let nested = oci::parse_index(&nested_what, &bytes)?;
            pick_platform(&nested_what, &nested.manifests)?.clone()
        } else {
            desc.clone()
        };
        out.push(import_manifest(
            store,
            src,
            &manifest_desc,
            &image_names,
            progress,
        )?);
    }
    Ok(out)
}

/// The image name a layout gives a manifest: containerd's full name, else
/// the OCI ref name (umoci and skopeo put the name given to them there).
fn layout_ref_name(desc: &Descriptor) -> Option<String> {
    let a = desc.annotations.as_ref()?;
    if let Some(n) = a.get("io.containerd.image.name") {
        return crate::image::normalize_name(n).ok();
    }
    crate::image::normalize_name(a.get(oci::ANNOTATION_REF_NAME)?).ok()
}

/// If `path` is `blobs/sha256/<hex>` or `<hex>.json`/`<hex>.tar`, the digest it claims.
fn digest_from_path(path: &str) -> Option<String> {
    let hex = path
        .strip_prefix("blobs/sha256/")
        .or_else(|| path.strip_suffix(".json"))
        .or_else(|| path.strip_suffix(".tar"))?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    .then(|| format!("sha256:{hex}"))
}

/// Import every image of a docker-save archive's `manifest.json`.
pub(crate) fn import_docker_save(
    store: &Store,
    src: &dyn Source,
    names: &[String],
    progress: Option<Progress<'_>>,
) -> Result<Vec<ImageRecord>> {
    let what = format!("{}: manifest.json", src.name());
    let entries =
        oci::parse_docker_save_manifest(&what, &read_verified(src, "manifest.json", None, None)?)?;
    if entries.is_empty() {
        return Err(Error::bad_input(what, "the archive holds no image"));
    }
    let mut out = Vec::new();
    for entry in &entries {
        let config_digest = digest_from_path(&entry.config);
        let config_bytes = read_verified(src, &entry.config, config_digest.as_deref(), None)?;
        let config =
            oci::parse_config(&format!("{}: {}", src.name(), entry.config), &config_bytes)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(Error::bad_input(
                &what,
                format!(
                    "{} layers but the config lists {} diff ids",
                    entry.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let digest = path
                .strip_prefix("blobs/sha256/")
                .map(|h| format!("sha256:{h}"));
            let (id, diff) =
                import_layer(store, src, path, digest.as_deref(), Some(diff_id), progress)?;
            layers.push(id);
            diff_ids.push(diff);
        }
        let image_names = if names.is_empty() {
            entry.repo_tags.clone().unwrap_or_default()
        } else {
            names.to_vec()
        };
        let new = NewImage {
            layers,
            config: config
                .config
                .as_ref()
                .map(|c| c.to_image_config())
                .unwrap_or_default(),
            created: config.created.clone(),
            architecture: Some(config.architecture.clone()).filter(|a| !a.is_empty()),
            os: Some(config.os.clone()).filter(|o| !o.is_empty()),
            diff_ids,
            config_digest: Some(oci::sha256_digest(&config_bytes)),
            manifest_digest: None,
        };
        out.push(store.add_image(&new, &image_names)?);
    }
    Ok(out)
}
