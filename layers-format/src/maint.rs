//! Store maintenance: garbage collection, verification, disk usage.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::ids::{BlobId, ImageId, LayerId};
use crate::index::{Content, FileKind, Index};
use crate::store::{list_blobs, Store};

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Layers removed.
    pub layers_removed: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Temp files of interrupted writes removed.
    pub temp_removed: u64,
    /// Digest side-map entries removed.
    pub digests_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Images kept (roots).
    pub images_kept: u64,
}

/// One problem [`Store::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file concerned.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
}

/// What [`Store::verify`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub blobs_checked: u64,
    /// Layer indexes checked.
    pub layers_checked: u64,
    /// Images checked.
    pub images_checked: u64,
    /// Blobs kept as a registry served them (image sources) whose sha256
    /// and size were checked against their descriptors.
    pub kept_blobs_checked: u64,
    /// Bytes hashed.
    pub bytes_hashed: u64,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

/// Disk usage of the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiskUsage {
    /// Images.
    pub images: u64,
    /// Layers.
    pub layers: u64,
    /// Blobs.
    pub blobs: u64,
    /// Bytes of blob files.
    pub blob_bytes: u64,
    /// Bytes of index files.
    pub index_bytes: u64,
    /// Bytes really used: blobs plus indexes, each stored once.
    pub real_bytes: u64,
    /// Bytes the images would take without sharing: for each image, the
    /// sum over its layers of file contents and index size.
    pub logical_bytes: u64,
    /// `logical_bytes / (real_bytes - kept_blob_bytes)`: how much sharing
    /// saves on the unpacked layers (1.0 for an empty store). Kept registry
    /// blobs are left out, as they have no logical counterpart.
    pub dedup_ratio: f64,
    /// Bytes of temp files left by interrupted writes.
    pub temp_bytes: u64,
    /// Bytes of blobs kept as a registry served them (compressed layers,
    /// configs, manifests of pulled images, see `ImageRecord::sources`);
    /// part of `blob_bytes` and `real_bytes`.
    pub kept_blob_bytes: u64,
}

impl Store {
    /// Remove layers no image uses, blobs no layer or image source uses,
    /// digest entries of removed layers and temp files of interrupted
    /// writes. Roots are all image records (their layers and the blobs of
    /// their `sources`) and the images of `containers/*/image-id`. Waits for
    /// running imports (exclusive store lock).
    pub fn gc(&self) -> Result<GcReport> {
        let _lock = self.lock_exclusive()?;
        let mut report = GcReport::default();
        // Mark.
        let mut live_layers: HashSet<LayerId> = HashSet::new();
        let images = self.list_images()?;
        report.images_kept = images.len() as u64;
        let known: HashSet<ImageId> = images.iter().map(|i| i.id).collect();
        for id in self.container_image_ids()? {
            if !known.contains(&id) {
                tracing::warn!("a container uses image {id}, which is not in the store");
            }
        }
        for image in &images {
            live_layers.extend(image.layers.iter().copied());
        }
        let mut live_blobs: HashSet<BlobId> = HashSet::new();
        for layer in &live_layers {
            let p = self.layer_path(layer);
            let index = Index::open_unverified(&p).map_err(|e| {
                Error::Conflict(format!(
                    "gc stopped: cannot read live layer {layer} ({e}); run `strata store verify` and re-import the image"
                ))
            })?;
            live_blobs.extend(index.blobs());
        }
        for image in &images {
            for source in &image.sources {
                live_blobs.extend(source.blobs().map(|b| b.blob));
            }
        }
        // Sweep.
        for layer in self.list_layers()? {
            if !live_layers.contains(&layer) {
                let p = self.layer_path(&layer);
                report.bytes_freed += fs::metadata(&p).map_or(0, |m| m.len());
                fs::remove_file(&p).ctx("remove layer", &p)?;
                self.forget_checked(&layer);
                report.layers_removed += 1;
            }
        }
        self.sweep_checked()?;
        for (id, path) in list_blobs(self)? {
            if !live_blobs.contains(&id) {
                report.bytes_freed += fs::metadata(&path).map_or(0, |m| m.len());
                fs::remove_file(&path).ctx("remove blob", &path)?;
                report.blobs_removed += 1;
            }
        }
        let tmp = self.root().join("tmp");
        for entry in fs::read_dir(&tmp).ctx("list", &tmp)? {
            let p = entry.ctx("list", &tmp)?.path();
            report.bytes_freed += fs::symlink_metadata(&p).map_or(0, |m| m.len());
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.ctx("remove temp file", &p)?;
            report.temp_removed += 1;
        }
        let digests = self.root().join("sha256");
        for entry in fs::read_dir(&digests).ctx("list", &digests)? {
            let p = entry.ctx("list", &digests)?.path();
            let keep = fs::read_to_string(&p).ok().is_some_and(|t| {
                t.trim()
                    .strip_prefix("layer ")
                    .and_then(|h| LayerId::from_hex(h).ok())
                    .is_some_and(|l| live_layers.contains(&l))
            });
            if !keep {
                fs::remove_file(&p).ctx("remove digest entry", &p)?;
                report.digests_removed += 1;
            }
        }
        let d = fs::File::open(self.root()).ctx("open", self.root())?;
        nix::unistd::syncfs(&d).map_err(|e| Error::io("syncfs", self.root(), e.into()))?;
        Ok(report)
    }

    /// Re-hash every blob and index, check every image's layers and every
    /// layer's blobs are present. Problems are collected, not fatal.
    pub fn verify(&self) -> Result<VerifyReport> {
        let _lock = self.lock_shared()?;
        let mut report = VerifyReport::default();
        let blobs = list_blobs(self)?;
        let mut ids: Vec<_> = blobs.iter().collect();
        ids.sort();
        for (id, path) in ids {
            report.blobs_checked += 1;
            let mut hasher = blake3::Hasher::new();
            match hasher.update_mmap(path) {
                Ok(_) => {
                    report.bytes_hashed += hasher.count();
                    let got = BlobId::from(hasher.finalize());
                    if got != *id {
                        report.problems.push(Problem {
                            path: path.clone(),
                            problem: format!("blob {id} is damaged: content hashes to {got}"),
                        });
                    }
                }
                Err(e) => report.problems.push(Problem {
                    path: path.clone(),
                    problem: format!("cannot read blob: {e}"),
                }),
            }
        }
        for layer in self.list_layers()? {
            report.layers_checked += 1;
            let p = self.layer_path(&layer);
            let index = match Index::open(&p) {
                Ok(i) => i,
                Err(e) => {
                    report.problems.push(Problem {
                        path: p,
                        problem: e.to_string(),
                    });
                    continue;
                }
            };
            report.bytes_hashed += index.as_bytes().len() as u64;
            if LayerId::of(index.as_bytes()) != layer {
                report.problems.push(Problem {
                    path: p.clone(),
                    problem: format!("layer {layer}: index file does not hash to its name"),
                });
            }
            for blob in index.blobs() {
                if !blobs.contains_key(&blob) {
                    report.problems.push(Problem {
                        path: self.blob_path(&blob),
                        problem: format!("blob {blob} of layer {layer} is missing"),
                    });
                }
            }
        }
        let mut kept_checked: HashSet<(BlobId, String, u64)> = HashSet::new();
        for image in self.list_images()? {
            report.images_checked += 1;
            for layer in &image.layers {
                if !self.has_layer(layer) {
                    report.problems.push(Problem {
                        path: self.layer_path(layer),
                        problem: format!("layer {layer} of image {} is missing", image.id),
                    });
                }
            }
            for kept in image.sources.iter().flat_map(|s| s.blobs()) {
                if !kept_checked.insert((kept.blob, kept.digest.clone(), kept.size)) {
                    continue;
                }
                report.kept_blobs_checked += 1;
                let path = self.blob_path(&kept.blob);
                if !blobs.contains_key(&kept.blob) {
                    report.problems.push(Problem {
                        path,
                        problem: format!(
                            "blob {} ({}) kept for image {} is missing; pull the image again",
                            kept.blob, kept.digest, image.id
                        ),
                    });
                    continue;
                }
                match sha256_file(&path) {
                    Ok((digest, size)) => {
                        report.bytes_hashed += size;
                        if digest != kept.digest || size != kept.size {
                            report.problems.push(Problem {
                                path,
                                problem: format!(
                                    "blob {} kept for image {} should be {} ({} bytes) \
                                     but is {digest} ({size} bytes)",
                                    kept.blob, image.id, kept.digest, kept.size
                                ),
                            });
                        }
                    }
                    Err(e) => report.problems.push(Problem {
                        path,
                        problem: format!("cannot read kept blob: {e}"),
                    }),
                }
            }
        }
        Ok(report)
    }

    /// Real against logical bytes, and the dedup ratio.
    pub fn df(&self) -> Result<DiskUsage> {
        let mut du = DiskUsage::default();
        let blobs = list_blobs(self)?;
        du.blobs = blobs.len() as u64;
        let blob_sizes: HashMap<BlobId, u64> = blobs
            .iter()
            .map(|(id, p)| (*id, fs::metadata(p).map_or(0, |m| m.len())))
            .collect();
        du.blob_bytes = blob_sizes.values().sum();
        let mut layer_logical: HashMap<LayerId, u64> = HashMap::new();
        for layer in self.list_layers()? {
            du.layers += 1;
            let p = self.layer_path(&layer);
            let Ok(index) = Index::open_unverified(&p) else {
                continue;
            };
            let index_len = index.as_bytes().len() as u64;
            du.index_bytes += index_len;
            let mut logical = index_len;
            for ino in 1..=index.inode_count() {
                if index.kind(ino) == Some(FileKind::Regular) {
                    if let Content::Blob(_) = index.content(ino) {
                        logical += index.attr(ino).map_or(0, |a| a.size);
                    }
                }
            }
            layer_logical.insert(layer, logical);
        }
        du.real_bytes = du.blob_bytes + du.index_bytes;
        let mut kept: HashSet<BlobId> = HashSet::new();
        for image in self.list_images()? {
            for b in image.sources.iter().flat_map(|s| s.blobs()) {
                if kept.insert(b.blob) {
                    du.kept_blob_bytes += blob_sizes.get(&b.blob).copied().unwrap_or(0);
                }
            }
            du.images += 1;
            du.logical_bytes += image
                .layers
                .iter()
                .filter_map(|l| layer_logical.get(l))
                .sum::<u64>();
        }
        let tmp = self.root().join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            du.temp_bytes = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum();
        }
        let unpacked = du.real_bytes.saturating_sub(du.kept_blob_bytes);
        du.dedup_ratio = if unpacked == 0 {
            1.0
        } else {
            du.logical_bytes as f64 / unpacked as f64
        };
        Ok(du)
    }
}

/// The sha256 (`sha256:<hex>`) and size of the file at `path`.
fn sha256_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageSource, KeptBlob};
    use crate::{Compression, NewImage};

    fn layer_tar(content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        b.append_data(&mut h, "etc/file", content).unwrap();
        b.into_inner().unwrap()
    }

    /// Keep `bytes` as a blob the way a pull does (a file moved in).
    fn keep(store: &Store, bytes: &[u8], media_type: &str) -> KeptBlob {
        let p = store.tmp_path("test-download");
        fs::write(&p, bytes).unwrap();
        let (blob, size) = store.add_blob_file(&p).unwrap();
        assert!(!p.exists(), "the file is moved into the store");
        KeptBlob {
            media_type: media_type.into(),
            digest: crate::oci::sha256_digest(bytes),
            size,
            blob,
        }
    }

    fn source(store: &Store, seed: &str, names: &[&str]) -> ImageSource {
        ImageSource {
            names: names.iter().map(|n| n.to_string()).collect(),
            manifest: keep(store, format!("manifest {seed}").as_bytes(), "m"),
            config: keep(store, format!("config {seed}").as_bytes(), "c"),
            layers: vec![keep(store, format!("layer {seed}").as_bytes(), "l")],
        }
    }

    #[test]
    fn kept_blobs_are_roots_verified_and_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let layer = store
            .import_layer_tar(&layer_tar(b"hello")[..], Compression::None)
            .unwrap()
            .layer;
        let new = NewImage {
            layers: vec![layer],
            ..Default::default()
        };
        let rec = store
            .add_image(&new, &["app:1".into(), "app:2".into()])
            .unwrap();
        assert!(rec.sources.is_empty());
        let ratio_before = store.df().unwrap().dedup_ratio;

        let one = source(&store, "one", &["app:1"]);
        let rec = store.add_image_source(&rec.id, &one).unwrap();
        assert_eq!(rec.sources, vec![one.clone()]);
        let two = source(&store, "two", &["app:2"]);
        store.add_image_source(&rec.id, &two).unwrap();
        // The same manifest again merges names instead of adding a source.
        let mut one_again = one.clone();
        one_again.names = vec!["app:3".into()];
        let rec = store.add_image_source(&rec.id, &one_again).unwrap();
        assert_eq!(rec.sources.len(), 2);
        assert_eq!(rec.source_for("app:1").unwrap().manifest, one.manifest);
        assert_eq!(rec.source_for("app:3").unwrap().manifest, one.manifest);
        assert_eq!(rec.source_for("app:2").unwrap().manifest, two.manifest);
        assert_eq!(
            rec.source_for(&rec.id.to_hex()).unwrap().manifest,
            one.manifest,
            "by id: the newest"
        );
        let found = store.find_kept_blob(&two.layers[0].digest).unwrap();
        assert_eq!(found.as_ref(), Some(&two.layers[0]));

        // Kept blobs survive gc, are verified and counted.
        let gc = store.gc().unwrap();
        assert_eq!(gc.blobs_removed, 0, "{gc:?}");
        let report = store.verify().unwrap();
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(report.kept_blobs_checked, 6);
        let du = store.df().unwrap();
        let kept: u64 = one.blobs().chain(two.blobs()).map(|b| b.size).sum();
        assert_eq!(du.kept_blob_bytes, kept);
        assert_eq!(
            du.dedup_ratio, ratio_before,
            "kept blobs are not unpacked data"
        );

        // A source taking over every name of another replaces it.
        let three = source(&store, "three", &["app:2"]);
        let rec = store.add_image_source(&rec.id, &three).unwrap();
        assert_eq!(rec.sources.len(), 2);
        assert!(rec.sources.iter().all(|s| s.manifest != two.manifest));
        let gc = store.gc().unwrap();
        assert_eq!(gc.blobs_removed, 3, "the replaced source's blobs go");

        // A layer count that does not match is refused.
        let mut bad = source(&store, "bad", &[]);
        bad.layers.clear();
        assert!(store.add_image_source(&rec.id, &bad).is_err());

        // A kept blob whose bytes do not match its digest is reported.
        let mut wrong = source(&store, "wrong", &["app:9"]);
        wrong.layers[0].digest = crate::oci::sha256_digest(b"something else");
        store.add_image_source(&rec.id, &wrong).unwrap();
        let report = store.verify().unwrap();
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(report.problems[0].problem.contains("should be"));

        // Removing the image drops its kept blobs at the next gc.
        store.remove_image(&rec.id.to_hex(), false).unwrap();
        let gc = store.gc().unwrap();
        assert_eq!(gc.layers_removed, 1);
        assert!(list_blobs(&store).unwrap().is_empty(), "{gc:?}");
        assert!(store.verify().unwrap().problems.is_empty());
    }

    #[test]
    fn records_without_sources_still_load() {
        let json = r#"{"id":"0000000000000000000000000000000000000000000000000000000000000000",
            "layers":[],"config":{"env":[]}}"#;
        let rec: crate::ImageRecord = serde_json::from_str(json).unwrap();
        assert!(rec.sources.is_empty());
        let out = serde_json::to_string(&rec).unwrap();
        assert!(
            !out.contains("sources"),
            "no new field for images without one"
        );
    }
}
