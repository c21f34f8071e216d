//! Importers: turn a tar stream, a directory, an OCI image layout or a
//! docker-save archive into layers and images in a [`Store`].
//!
//! Every importer builds the layer in memory ([`IndexBuilder`]) while its
//! file contents are streamed into staged blobs (hashed as they are read),
//! and only on success makes them visible. A failed import leaves the store
//! as it was (apart from temp files a crash may leave, which `gc` removes).

pub mod dir;
pub mod oci;
pub mod tar;

use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::LayerId;
use crate::index::{IndexBuilder, NodeId};
use crate::store::Store;

pub use dir::DirFormat;
pub use tar::{Compression, LayerImport};

/// Longest path accepted in a layer (Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// Called with the number of source bytes consumed since the last call.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Split a path from an archive into safe components: leading `./` and
/// empty or `.` components are dropped; `..` and absolute paths are
/// rejected. An empty result means the root.
pub(crate) fn sanitize_path<'a>(source: &str, path: &'a [u8]) -> Result<Vec<&'a [u8]>> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    if path.len() > PATH_MAX {
        return Err(Error::bad_input(
            source,
            format!(
                "entry path of {} bytes is longer than {PATH_MAX} (starts {:?}); refusing it",
                path.len(),
                String::from_utf8_lossy(&path[..60.min(path.len())])
            ),
        ));
    }
    if path.first() == Some(&b'/') {
        return Err(Error::bad_input(
            source,
            format!(
                "entry {:?} has an absolute path; refusing to import it",
                shown()
            ),
        ));
    }
    let mut out = Vec::new();
    for comp in path.split(|&c| c == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(Error::bad_input(
                    source,
                    format!("entry {:?} contains '..'; refusing to import it", shown()),
                ))
            }
            c if c.contains(&0) => {
                return Err(Error::bad_input(
                    source,
                    format!("entry {:?} contains NUL", shown()),
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Find or create (as plain 0755 directories) the parents of `comps`'s last
/// component, refusing to go through a symlink or a non-directory.
pub(crate) fn parent_dir(b: &mut IndexBuilder, source: &str, comps: &[&[u8]]) -> Result<NodeId> {
    let mut dir = b.root();
    let Some((_, parents)) = comps.split_last() else {
        return Ok(dir);
    };
    for (i, comp) in parents.iter().enumerate() {
        dir = match b.child(dir, comp) {
            Some(c) => match b.kind(c) {
                crate::FileKind::Directory => c,
                crate::FileKind::Whiteout => b.insert_dir(dir, comp, Default::default())?,
                kind => {
                    let so_far = comps[..=i].join(&b'/');
                    let what = if kind == crate::FileKind::Symlink {
                        "a symlink"
                    } else {
                        "a non-directory"
                    };
                    return Err(Error::bad_input(
                        source,
                        format!(
                            "entry {:?} goes through {what} ({:?}); refusing it",
                            String::from_utf8_lossy(&comps.join(&b'/')),
                            String::from_utf8_lossy(&so_far)
                        ),
                    ));
                }
            },
            None => b
                .insert_dir(dir, comp, Default::default())
                .map_err(|e| Error::bad_input(source, e.to_string()))?,
        };
    }
    Ok(dir)
}

impl Store {
    /// Import one layer from a tar stream (plain, gzip or zstd; `Auto`
    /// detects by magic). OCI whiteouts become index markers.
    pub fn import_layer_tar(
        &self,
        reader: impl std::io::Read,
        compression: Compression,
    ) -> Result<LayerImport> {
        let _lock = self.lock_shared()?;
        tar::import(self, reader, compression, &tar::TarOptions::default())
    }

    /// Import one layer from a tar stream with options (expected digests,
    /// progress, name for messages).
    pub fn import_layer_tar_with(
        &self,
        reader: impl std::io::Read,
        compression: Compression,
        options: &tar::TarOptions<'_>,
    ) -> Result<LayerImport> {
        let _lock = self.lock_shared()?;
        tar::import(self, reader, compression, options)
    }

    /// Import a directory tree as one layer. With
    /// [`DirFormat::OverlayUpper`], overlayfs whiteouts and opaque markers in
    /// it become index markers (what `strata commit` needs).
    pub fn import_layer_from_dir(&self, dir: &Path, format: DirFormat) -> Result<LayerId> {
        let _lock = self.lock_shared()?;
        dir::import(self, dir, format)
    }
}

/// What a path given to [`Store::import_path`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory with `oci-layout` / `index.json`.
    OciLayoutDir,
    /// Any other directory: one layer.
    PlainDir,
    /// A tar of an OCI layout (e.g. skopeo `oci-archive:`).
    OciArchive,
    /// A `docker save` / skopeo `docker-archive:` tar with `manifest.json`.
    DockerSave,
    /// A layer tar (plain, gzip or zstd).
    LayerTar(Compression),
}

/// Detect what `path` holds (reads the first bytes, and the tar headers of
/// an uncompressed tar).
pub fn detect(path: &Path) -> Result<SourceKind> {
    let md = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if md.is_dir() {
        let layout = path.join("oci-layout").exists() || path.join("index.json").exists();
        return Ok(if layout {
            SourceKind::OciLayoutDir
        } else {
            SourceKind::PlainDir
        });
    }
    let mut head = [0u8; 8];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(Error::io("read", path, e)),
            }
        }
        n
    };
    match Compression::detect(&head[..n]) {
        Compression::None => {}
        c => return Ok(SourceKind::LayerTar(c)),
    }
    let scan = oci::TarSource::scan(path)?;
    let names: std::collections::HashSet<&str> = scan.names().collect();
    Ok(if names.contains("manifest.json") {
        SourceKind::DockerSave
    } else if names.contains("index.json") && names.contains("oci-layout") {
        SourceKind::OciArchive
    } else {
        SourceKind::LayerTar(Compression::None)
    })
}

/// The config given to images imported from a bare tar or directory.
pub fn default_config() -> crate::ImageConfig {
    crate::ImageConfig {
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        ..Default::default()
    }
}

impl Store {
    /// Import whatever `path` holds (see [`detect`]) as one or more images,
    /// named `names` (or by the names the archive carries).
    pub fn import_path(
        &self,
        path: &Path,
        names: &[String],
        progress: Option<Progress<'_>>,
    ) -> Result<Vec<crate::ImageRecord>> {
        let _lock = self.lock_shared()?;
        let single = |layer: LayerId, diff_id: Option<String>| -> Result<Vec<crate::ImageRecord>> {
            let new = crate::NewImage {
                layers: vec![layer],
                config: default_config(),
                architecture: Some(oci::host_architecture().to_string()),
                os: Some("linux".into()),
                diff_ids: diff_id.into_iter().collect(),
                ..Default::default()
            };
            Ok(vec![self.add_image(&new, names)?])
        };
        match detect(path)? {
            SourceKind::OciLayoutDir => {
                oci::import_layout(self, &oci::DirSource(path.to_path_buf()), names, progress)
            }
            SourceKind::OciArchive => {
                oci::import_layout(self, &oci::TarSource::scan(path)?, names, progress)
            }
            SourceKind::DockerSave => {
                // Newer docker writes an OCI layout plus manifest.json; the
                // latter carries the names, so it is preferred.
                oci::import_docker_save(self, &oci::TarSource::scan(path)?, names, progress)
            }
            SourceKind::PlainDir => single(dir::import(self, path, DirFormat::Plain)?, None),
            SourceKind::LayerTar(c) => {
                let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
                let opts = tar::TarOptions {
                    source_name: Some(path.display().to_string()),
                    progress,
                    ..Default::default()
                };
                let imported = tar::import(self, f, c, &opts)?;
                single(imported.layer, Some(imported.diff_id))
            }
        }
    }
}
