//! `strata pull`: fetch an image from a registry into the store.
//!
//! Order of work, so that a failure leaves the store untouched:
//! 1. the manifest (through an index to the wanted platform), verified
//!    against the digest asked for or the registry's `Docker-Content-Digest`;
//! 2. the config blob, verified;
//! 3. every layer the store lacks, downloaded in parallel into a staging
//!    directory inside the store, each checked for size and sha256;
//! 4. only then: layers handed to the store's importer (which also keeps
//!    the blobs as served, for `strata push`), and the image saved.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::client::Client;
use super::digest::HashingWriter;
use super::manifest::{self, Descriptor, Document, Manifest, Platform};
use super::progress::Progress;
use super::{Digest, Error, Reference};

/// Layers downloaded at the same time.
pub const PARALLEL_DOWNLOADS: usize = 3;
/// Tries per blob download (a broken connection restarts the blob).
const BLOB_ATTEMPTS: u32 = 3;
/// Largest config blob read into memory.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// What a pull needs from the layer store.
pub trait PullStore: Sync {
    /// A directory inside the store (same filesystem) for downloads in
    /// progress; created if missing.
    fn staging_dir(&self) -> Result<PathBuf, Error>;
    /// Whether the store already holds the layer blob with this sha256 (the
    /// layer and the blob as served), so it need not be fetched.
    fn has_layer(&self, digest: &Digest) -> bool;
    /// Import a verified layer blob (a tar, possibly compressed as its media
    /// type says) unless its layer is there already, and keep the blob. The
    /// file must stay until [`PullStore::save_image`] returns; the store may
    /// move it.
    fn import_layer(&self, file: &Path, layer: &Descriptor) -> Result<(), Error>;
    /// Record the pulled image under `image.name`, with the blobs as served
    /// (the layer files given to `import_layer`, config, manifest). Returns
    /// the image id to print.
    fn save_image(&self, image: &PulledImage<'_>) -> Result<String, Error>;
}

/// A fully verified image, ready to be recorded.
#[derive(Debug)]
pub struct PulledImage<'a> {
    /// `registry/repository:tag` (or `@digest`).
    pub name: String,
    /// The image manifest's digest.
    pub manifest_digest: &'a Digest,
    /// The manifest bytes as served.
    pub manifest: &'a [u8],
    /// The manifest's media type.
    pub manifest_media_type: &'a str,
    /// The parsed manifest.
    pub parsed: &'a Manifest,
    /// The config bytes as served.
    pub config: &'a [u8],
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The image id the store gave.
    pub image_id: String,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// Layers downloaded.
    pub downloaded_layers: usize,
    /// Layers already present.
    pub skipped_layers: usize,
    /// Bytes downloaded for layers.
    pub downloaded_bytes: u64,
}

/// A staging directory for one pull or push, removed on every exit path.
pub(crate) struct Staging {
    /// The directory.
    pub(crate) dir: PathBuf,
}

impl Staging {
    /// Create `parent/WHAT-PID-NANOS`.
    pub(crate) fn create(parent: &Path, what: &str) -> Result<Staging, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!("{what}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            op: "create staging directory",
            path: dir.clone(),
            source,
        })?;
        Ok(Staging { dir })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Pull `reference` for `platform` into `store`.
pub fn pull(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
    store: &dyn PullStore,
    progress: &Progress,
) -> Result<PullOutcome, Error> {
    let repo = &reference.repository;
    let (manifest_digest, manifest_bytes, media_type, parsed) =
        resolve_manifest(client, reference, platform)?;
    progress.message(&format!(
        "Pulling {reference} ({}, manifest {manifest_digest})",
        platform
    ));

    let config = fetch_config(client, repo, &parsed.config)?;

    let mut wanted: Vec<&Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut skipped = 0;
    for layer in &parsed.layers {
        if !seen.insert(layer.digest.clone()) {
            continue;
        }
        if store.has_layer(&layer.digest) {
            progress
                .blob("Copying", &layer.digest, layer.size)
                .finish("skipped: already exists");
            skipped += 1;
        } else {
            wanted.push(layer);
        }
    }

    let staging = Staging::create(&store.staging_dir()?, "pull")?;
    let files = download_all(client, repo, &wanted, &staging.dir, progress)?;

    for (layer, file) in wanted.iter().zip(&files) {
        store.import_layer(file, layer)?;
    }
    let image_id = store.save_image(&PulledImage {
        name: reference.to_string(),
        manifest_digest: &manifest_digest,
        manifest: &manifest_bytes,
        manifest_media_type: &media_type,
        parsed: &parsed,
        config: &config,
    })?;
    Ok(PullOutcome {
        image_id,
        manifest_digest,
        downloaded_layers: wanted.len(),
        skipped_layers: skipped,
        downloaded_bytes: wanted.iter().map(|l| l.size).sum(),
    })
}

/// Fetch the manifest for `reference`, going through an index if needed.
/// Returns its digest, bytes, media type and parsed form.
fn resolve_manifest(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
) -> Result<(Digest, Vec<u8>, String, Manifest), Error> {
    let repo = &reference.repository;
    let fetched = client.fetch_manifest(repo, &reference.manifest_ref())?;
    let what = format!("manifest {reference}");
    let digest = match (&reference.digest, &fetched.digest_header) {
        (Some(d), _) => {
            d.verify(&what, &fetched.bytes)?;
            d.clone()
        }
        (None, Some(header)) => {
            let d: Digest = header.parse()?;
            d.verify(&what, &fetched.bytes)?;
            d
        }
        (None, None) => Digest::of(&fetched.bytes),
    };
    match manifest::parse_document(&fetched.bytes, fetched.content_type.as_deref())? {
        Document::Manifest(m, mt) => Ok((digest, fetched.bytes, mt, m)),
        Document::Index(index) => {
            let chosen = manifest::select_platform(&index, platform)?;
            let inner = client.fetch_manifest(repo, &chosen.digest.to_string())?;
            let what = format!("manifest {}@{} for {platform}", reference, chosen.digest);
            check_size(&what, chosen.size, inner.bytes.len() as u64)?;
            chosen.digest.verify(&what, &inner.bytes)?;
            let content_type = inner
                .content_type
                .clone()
                .or_else(|| Some(chosen.media_type.clone()));
            match manifest::parse_document(&inner.bytes, content_type.as_deref())? {
                Document::Manifest(m, mt) => Ok((chosen.digest.clone(), inner.bytes, mt, m)),
                Document::Index(_) => Err(Error::Manifest(format!(
                    "{what}: an index inside an index is not supported"
                ))),
            }
        }
    }
}

fn check_size(what: &str, expected: u64, actual: u64) -> Result<(), Error> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::SizeMismatch {
            what: what.to_string(),
            expected,
            actual,
        })
    }
}

fn fetch_config(client: &Client, repo: &str, desc: &Descriptor) -> Result<Vec<u8>, Error> {
    let what = format!("config blob {}", desc.digest);
    if desc.size > MAX_CONFIG_BYTES {
        return Err(Error::Manifest(format!(
            "{what}: {} bytes is too large for an image config",
            desc.size
        )));
    }
    let mut buf = Vec::new();
    let mut reader = client.open_blob(repo, &desc.digest)?;
    let url = format!("{}/v2/{repo}/blobs/{}", client.base_url(), desc.digest);
    (&mut reader)
        .take(desc.size + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Transport {
            url,
            source: Box::new(ureq::Error::Io(e)),
        })?;
    check_size(&what, desc.size, buf.len() as u64)?;
    desc.digest.verify(&what, &buf)?;
    Ok(buf)
}

/// Download `layers` into `dir` with a few threads. Returns the files in the
/// same order. On the first failure the other threads stop taking work and
/// the error is returned.
fn download_all(
    client: &Client,
    repo: &str,
    layers: &[&Descriptor],
    dir: &Path,
    progress: &Progress,
) -> Result<Vec<PathBuf>, Error> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let workers = PARALLEL_DOWNLOADS.min(layers.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(layer) = layers.get(i) else {
                    return;
                };
                let path = dir.join(layer.digest.hex());
                if let Err(e) = download_blob(client, repo, layer, &path, progress) {
                    failed.store(true, Ordering::SeqCst);
                    first_error.lock().get_or_insert(e);
                    return;
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner() {
        return Err(e);
    }
    Ok(layers.iter().map(|l| dir.join(l.digest.hex())).collect())
}

/// Download one blob to `path`, verifying size and digest; a broken
/// connection restarts the download.
fn download_blob(
    client: &Client,
    repo: &str,
    layer: &Descriptor,
    path: &Path,
    progress: &Progress,
) -> Result<(), Error> {
    let bar = progress.blob("Copying", &layer.digest, layer.size);
    let what = format!("layer blob {}", layer.digest);
    let mut attempt = 0;
    loop {
        attempt += 1;
        bar.reset();
        match download_once(client, repo, layer, path, &bar, &what) {
            Ok(()) => {
                bar.finish("done");
                return Ok(());
            }
            Err(e @ Error::Transport { .. }) if attempt < BLOB_ATTEMPTS => {
                tracing::debug!("{what}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
            Err(e) => {
                bar.abandon();
                let _ = fs::remove_file(path);
                return Err(e);
            }
        }
    }
}

fn download_once(
    client: &Client,
    repo: &str,
    layer: &Descriptor,
    path: &Path,
    bar: &super::progress::BlobProgress,
    what: &str,
) -> Result<(), Error> {
    let io = |op: &'static str| {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = File::create(path).map_err(io("create"))?;
    let mut out = HashingWriter::new(BufWriter::new(file));
    let mut reader = client.open_blob(repo, &layer.digest)?;
    let url = format!("{}/v2/{repo}/blobs/{}", client.base_url(), layer.digest);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Transport {
                    url,
                    source: Box::new(ureq::Error::Io(e)),
                })
            }
        };
        if out.written_bytes() + n as u64 > layer.size {
            return Err(Error::SizeMismatch {
                what: what.to_string(),
                expected: layer.size,
                actual: out.written_bytes() + n as u64,
            });
        }
        out.write_all(&buf[..n]).map_err(io("write"))?;
        bar.bar().inc(n as u64);
    }
    check_size(what, layer.size, out.written_bytes())?;
    let (writer, digest) = out.finish();
    let file = writer.into_inner().map_err(|e| Error::Io {
        op: "write",
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io("fsync"))?;
    if digest != layer.digest {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: layer.digest.to_string(),
            actual: digest.to_string(),
        });
    }
    Ok(())
}
