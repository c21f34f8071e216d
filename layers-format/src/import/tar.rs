//! Importing a layer from a tar stream (plain, gzip, zstd), with OCI
//! whiteouts, PAX xattrs and times, hardlinks, devices and long names.
//!
//! File contents are hashed (BLAKE3 for the store, and the whole stream with
//! sha256 for the OCI diff id) while they are read: one pass, no extraction.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::INLINE_MAX;
use crate::ids::LayerId;
use crate::import::{parent_dir, sanitize_path, Progress};
use crate::index::{FileData, FileKind, IndexBuilder, Meta};
use crate::staging::Staging;
use crate::store::Store;

/// Compression of a tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Detect from the first bytes (gzip `1f 8b`, zstd `28 b5 2f fd`).
    Auto,
    /// Plain tar.
    None,
    /// gzip (also multi-member).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Detect the compression from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Options for [`Store::import_layer_tar_with`].
#[derive(Default)]
pub struct TarOptions<'a> {
    /// Name of the source in error messages (default "tar").
    pub source_name: Option<String>,
    /// If set, the sha256 of the stream as given (compressed) must match
    /// (`sha256:...`); otherwise the import fails and nothing is kept.
    pub expect_digest: Option<String>,
    /// If set, the sha256 of the uncompressed tar must match.
    pub expect_diff_id: Option<String>,
    /// Called with source bytes consumed.
    pub progress: Option<Progress<'a>>,
}

/// The result of importing one layer tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerImport {
    /// The layer.
    pub layer: LayerId,
    /// sha256 of the uncompressed tar (`sha256:...`), the OCI diff id.
    pub diff_id: String,
    /// sha256 of the stream as given (`sha256:...`).
    pub digest: String,
    /// Bytes of the stream as given.
    pub compressed_size: u64,
    /// Bytes of the uncompressed tar.
    pub size: u64,
}

/// A reader that feeds everything it reads to a sha256 and counts it.
struct HashingReader<'p, R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    progress: Option<Progress<'p>>,
    /// When false, only count (the digest is known to equal another one).
    enabled: bool,
}

impl<'p, R: Read> HashingReader<'p, R> {
    fn new(inner: R, progress: Option<Progress<'p>>) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            progress,
            enabled: true,
        }
    }

    fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.enabled {
            self.hasher.update(&buf[..n]);
        }
        self.count += n as u64;
        if let Some(p) = self.progress {
            p(n as u64);
        }
        Ok(n)
    }
}

fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let sec: i64 = sec.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nsec = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    // "-1.5" means -1 s and -0.5 s: normalise to a positive nanosecond part.
    if sec < 0 && nsec > 0 && s.starts_with('-') {
        return Some((sec - 1, 1_000_000_000 - nsec));
    }
    Some((sec, nsec))
}

pub(crate) fn import<R: Read>(
    store: &Store,
    reader: R,
    compression: Compression,
    opts: &TarOptions<'_>,
) -> Result<LayerImport> {
    let source = opts
        .source_name
        .clone()
        .unwrap_or_else(|| "tar".to_string());
    let mut outer = BufReader::with_capacity(256 * 1024, HashingReader::new(reader, opts.progress));
    let compression = match compression {
        Compression::Auto => {
            let head = outer
                .fill_buf()
                .map_err(|e| Error::bad_input(&source, format!("read failed: {e}")))?;
            Compression::detect(head)
        }
        c => c,
    };
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut outer)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(&mut outer)
                .map_err(|e| Error::bad_input(&source, format!("zstd: {e}")))?,
        ),
        Compression::None | Compression::Auto => Box::new(&mut outer),
    };
    // An uncompressed stream's diff id is its digest: hash it once.
    let plain = matches!(compression, Compression::None | Compression::Auto);
    let mut inner = HashingReader::new(decoded, None);
    inner.enabled = !plain;
    let mut staging = Staging::new(store);
    let builder = read_entries(&mut inner, &mut staging, &source)?;
    // Drain trailing padding so that both digests cover the whole stream.
    std::io::copy(&mut inner, &mut std::io::sink())
        .map_err(|e| Error::bad_input(&source, format!("reading the end of the stream: {e}")))?;
    let (inner_digest, inner_size) = inner.finish();
    std::io::copy(&mut outer, &mut std::io::sink())
        .map_err(|e| Error::bad_input(&source, format!("reading the end of the stream: {e}")))?;
    let (digest, compressed_size) = outer.into_inner().finish();
    let (diff_id, size) = if plain {
        (digest.clone(), compressed_size)
    } else {
        (inner_digest, inner_size)
    };
    for (want, got, what) in [
        (&opts.expect_digest, &digest, "blob"),
        (&opts.expect_diff_id, &diff_id, "uncompressed layer"),
    ] {
        if let Some(want) = want {
            if !want.eq_ignore_ascii_case(got) {
                return Err(Error::DigestMismatch {
                    what: format!("{source} ({what})"),
                    expected: want.clone(),
                    actual: got.clone(),
                });
            }
        }
    }
    let bytes = builder.build()?;
    let layer = staging.stage_index(&bytes)?;
    staging.commit()?;
    Ok(LayerImport {
        layer,
        diff_id,
        digest,
        compressed_size,
        size,
    })
}

/// Read every entry of the tar into a builder, staging file contents.
fn read_entries(
    reader: &mut dyn Read,
    staging: &mut Staging<'_>,
    source: &str,
) -> Result<IndexBuilder> {
    let mut archive = tar::Archive::new(reader);
    let mut b = IndexBuilder::new();
    let tar_err =
        |e: std::io::Error| Error::bad_input(source, format!("bad or truncated tar: {e}"));
    let entries = archive.entries().map_err(tar_err)?;
    for entry in entries {
        let mut entry = entry.map_err(tar_err)?;
        let entry_type = entry.header().entry_type();
        if matches!(
            entry_type,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&path).into_owned();
        let at = |problem: String| Error::bad_input(format!("{source}: entry {shown:?}"), problem);
        let comps = sanitize_path(source, &path)?;
        let header = entry.header();
        let old = header.as_old();
        let mut meta = Meta {
            mode: numeric(header.mode().map(u64::from), &old.mode).map_err(|e| at(e.to_string()))?
                as u32
                & 0o7777,
            uid: numeric(header.uid(), &old.uid).map_err(|e| at(e.to_string()))? as u32,
            gid: numeric(header.gid(), &old.gid).map_err(|e| at(e.to_string()))? as u32,
            mtime_sec: numeric(header.mtime(), &old.mtime).map_err(|e| at(e.to_string()))? as i64,
            ..Meta::default()
        };
        meta.ctime_sec = meta.mtime_sec;
        if matches!(entry_type, tar::EntryType::Char | tar::EntryType::Block) {
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            meta.rdev = libc::makedev(major, minor);
        }
        let link_name = entry.link_name_bytes().map(|l| l.into_owned());
        let mut ctime_seen = false;
        if let Some(pax) = entry.pax_extensions().map_err(tar_err)? {
            let mut xattrs = BTreeMap::new();
            for ext in pax {
                let ext = ext.map_err(tar_err)?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.insert(name.to_vec(), value.to_vec());
                    continue;
                }
                let num = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse::<u32>().ok())
                };
                match key {
                    b"mtime" => {
                        if let Some((s, ns)) = parse_pax_time(value) {
                            meta.mtime_sec = s;
                            meta.mtime_nsec = ns;
                        }
                    }
                    b"ctime" => {
                        if let Some((s, ns)) = parse_pax_time(value) {
                            meta.ctime_sec = s;
                            meta.ctime_nsec = ns;
                            ctime_seen = true;
                        }
                    }
                    b"uid" => meta.uid = num().unwrap_or(meta.uid),
                    b"gid" => meta.gid = num().unwrap_or(meta.gid),
                    _ => {}
                }
            }
            meta.xattrs = xattrs;
        }
        if !ctime_seen {
            meta.ctime_nsec = meta.mtime_nsec;
            meta.ctime_sec = meta.mtime_sec;
        }
        // OCI whiteouts.
        let Some((&base, _)) = comps.split_last() else {
            // The root directory itself ("./").
            if entry_type == tar::EntryType::Directory {
                *b.meta_mut(b.root()) = meta;
            }
            continue;
        };
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            let dir = parent_dir(&mut b, source, &comps)?;
            if hidden == b".wh..opq" {
                b.set_opaque(dir);
            } else if !hidden.starts_with(b".wh.") {
                b.insert_whiteout(dir, hidden)
                    .map_err(|e| at(e.to_string()))?;
            }
            // Other `.wh..wh.` names are aufs bookkeeping: ignored.
            continue;
        }
        let dir = parent_dir(&mut b, source, &comps)?;
        match entry_type {
            tar::EntryType::Directory => {
                b.insert_dir(dir, base, meta)
                    .map_err(|e| at(e.to_string()))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                let data = if size == 0 {
                    FileData::Empty
                } else if size <= INLINE_MAX {
                    let mut buf = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut buf).map_err(tar_err)?;
                    if buf.len() as u64 != size {
                        return Err(at(format!(
                            "content truncated: {} of {size} bytes",
                            buf.len()
                        )));
                    }
                    FileData::Inline(buf)
                } else {
                    let (id, n) = staging.add_blob(&mut entry, source)?;
                    if n != size {
                        return Err(at(format!("content truncated: {n} of {size} bytes")));
                    }
                    FileData::Blob(id)
                };
                let real_size = match &data {
                    FileData::Empty => 0,
                    FileData::Inline(v) => v.len() as u64,
                    FileData::Blob(_) => size,
                };
                b.insert_file(dir, base, meta, real_size, data)
                    .map_err(|e| at(e.to_string()))?;
            }
            tar::EntryType::Symlink => {
                let target = link_name.ok_or_else(|| at("symlink without a target".into()))?;
                b.insert_symlink(dir, base, meta, &target)
                    .map_err(|e| at(e.to_string()))?;
            }
            tar::EntryType::Link => {
                let target = link_name.ok_or_else(|| at("hardlink without a target".into()))?;
                let tcomps = sanitize_path(source, &target)?;
                let node = resolve_existing(&b, &tcomps).ok_or_else(|| {
                    at(format!(
                        "hardlink target {:?} is not an earlier file of this layer",
                        String::from_utf8_lossy(&target)
                    ))
                })?;
                b.link(dir, base, node).map_err(|e| at(e.to_string()))?;
            }
            tar::EntryType::Char => {
                b.insert_special(dir, base, meta, FileKind::CharDevice)
                    .map_err(|e| at(e.to_string()))?;
            }
            tar::EntryType::Block => {
                b.insert_special(dir, base, meta, FileKind::BlockDevice)
                    .map_err(|e| at(e.to_string()))?;
            }
            tar::EntryType::Fifo => {
                b.insert_special(dir, base, meta, FileKind::Fifo)
                    .map_err(|e| at(e.to_string()))?;
            }
            other => {
                return Err(at(format!(
                    "unsupported tar entry type {:?}",
                    other.as_byte() as char
                )));
            }
        }
    }
    Ok(b)
}

/// A numeric header field; a field left blank (all NUL or spaces, as some
/// writers do) reads as 0, anything else malformed is an error.
fn numeric(parsed: std::io::Result<u64>, raw: &[u8]) -> std::io::Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&c| c == 0 || c == b' ') => Ok(0),
        Err(e) => Err(e),
    }
}

/// Find an existing node by path without following symlinks.
fn resolve_existing(b: &IndexBuilder, comps: &[&[u8]]) -> Option<crate::index::NodeId> {
    let mut node = b.root();
    for comp in comps {
        if b.kind(node) != FileKind::Directory {
            return None;
        }
        node = b.child(node, comp)?;
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::parse_pax_time;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(
            parse_pax_time(b"1700000000.123456789123"),
            Some((1_700_000_000, 123_456_789))
        );
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
