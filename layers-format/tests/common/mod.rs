//! Helpers shared by the integration tests: hand-made tars (including
//! hostile ones the tar crate's safe API refuses to write).

#![allow(dead_code)]

use std::path::Path;

use layers_format::Store;

/// A tar being written entry by entry with raw paths.
pub struct RawTar {
    builder: tar::Builder<Vec<u8>>,
}

impl RawTar {
    pub fn new() -> Self {
        RawTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(&mut self, path: &[u8], kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        if path.len() <= 100 {
            h.as_old_mut().name[..path.len()].copy_from_slice(path);
        } else {
            self.builder
                .append_pax_extensions([("path", path)])
                .unwrap();
            h.as_old_mut().name[..4].copy_from_slice(b"long");
        }
        h
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.file_bytes(path.as_bytes(), data)
    }

    pub fn file_bytes(&mut self, path: &[u8], data: &[u8]) -> &mut Self {
        let mut h = self.header(path, tar::EntryType::Regular, data.len() as u64, 0o644);
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        let mut h = self.header(path.as_bytes(), tar::EntryType::Directory, 0, 0o755);
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn link(&mut self, kind: tar::EntryType, path: &str, target: &str) -> &mut Self {
        let mut h = self.header(path.as_bytes(), kind, 0, 0o777);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.builder.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// Every file under `dir` (relative paths), sorted, for before/after checks.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Assert the store is intact: verifies clean, no layer, no temp file.
pub fn assert_untouched(store: &Store, before: &[String]) {
    let report = store.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(listing(store.root()), before, "store contents changed");
}
