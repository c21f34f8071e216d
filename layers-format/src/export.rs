//! Writing a layer back out as an OCI layer tar (for push and export):
//! PAX xattrs and nanosecond mtimes, hardlinks, devices, and whiteouts as
//! `.wh.NAME` / `.wh..wh..opq` files.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::LayerId;
use crate::index::{Attr, Content, FileKind, Index};
use crate::store::Store;

fn header_for(attr: &Attr, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(attr.mode);
    h.set_uid(u64::from(attr.uid));
    h.set_gid(u64::from(attr.gid));
    h.set_mtime(attr.mtime_sec.max(0) as u64);
    h.set_size(0);
    h
}

fn pax_for(index: &Index, attr: &Attr) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if attr.mtime_nsec != 0 || attr.mtime_sec < 0 {
        out.push((
            "mtime".to_string(),
            format!("{}.{:09}", attr.mtime_sec, attr.mtime_nsec).into_bytes(),
        ));
    }
    for (name, value) in index.xattrs(attr.ino) {
        let name = std::str::from_utf8(name).map_err(|_| {
            Error::bad_input(
                index.path().display().to_string(),
                "xattr name is not UTF-8; tar cannot carry it",
            )
        })?;
        out.push((format!("SCHILY.xattr.{name}"), value.to_vec()));
    }
    Ok(out)
}

/// Write the layer in `index` as a tar to `out`, reading file contents from
/// `store`.
pub fn write_layer_tar(store: &Store, index: &Index, out: &mut dyn Write) -> Result<()> {
    let io_err = |e: std::io::Error| Error::io("write tar", "<output>", e);
    let mut tar = tar::Builder::new(out);
    let mut first_path: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut stack: Vec<(u64, Vec<u8>)> = vec![(index.root_ino(), Vec::new())];
    while let Some((dir, dir_path)) = stack.pop() {
        let mut subdirs = Vec::new();
        if dir != index.root_ino() && index.is_opaque(dir) {
            let attr = index.attr(dir).ok_or_else(|| corrupt(index, dir))?;
            let mut h = header_for(
                &Attr {
                    mode: 0o644,
                    ..attr
                },
                tar::EntryType::Regular,
            );
            let p = join(&dir_path, b".wh..wh..opq");
            tar.append_data(&mut h, as_path(&p), std::io::empty())
                .map_err(io_err)?;
        }
        for (_, entry) in index.readdir(dir, 0) {
            let path = join(&dir_path, entry.name);
            let attr = index
                .attr(entry.ino)
                .ok_or_else(|| corrupt(index, entry.ino))?;
            if entry.kind == FileKind::Whiteout {
                let mut h = header_for(
                    &Attr {
                        mode: 0o644,
                        ..attr
                    },
                    tar::EntryType::Regular,
                );
                let wh = join(&dir_path, &[b".wh.", entry.name].concat());
                tar.append_data(&mut h, as_path(&wh), std::io::empty())
                    .map_err(io_err)?;
                continue;
            }
            if entry.kind != FileKind::Directory && attr.nlink > 1 {
                if let Some(first) = first_path.get(&entry.ino) {
                    let mut h = header_for(&attr, tar::EntryType::Link);
                    tar.append_link(&mut h, as_path(&path), as_path(first))
                        .map_err(io_err)?;
                    continue;
                }
                first_path.insert(entry.ino, path.clone());
            }
            let pax = pax_for(index, &attr)?;
            if !pax.is_empty() {
                tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                    .map_err(io_err)?;
            }
            match entry.kind {
                FileKind::Directory => {
                    let mut h = header_for(&attr, tar::EntryType::Directory);
                    tar.append_data(&mut h, as_path(&path), std::io::empty())
                        .map_err(io_err)?;
                    subdirs.push((entry.ino, path));
                }
                FileKind::Regular => {
                    let mut h = header_for(&attr, tar::EntryType::Regular);
                    h.set_size(attr.size);
                    match index.content(entry.ino) {
                        Content::Empty => tar.append_data(&mut h, as_path(&path), std::io::empty()),
                        Content::Inline(bytes) => tar.append_data(&mut h, as_path(&path), bytes),
                        Content::Blob(id) => {
                            let file = store.open_blob(&id)?;
                            let len = file
                                .metadata()
                                .map_err(|e| Error::io("stat", store.blob_path(&id), e))?
                                .len();
                            if len != attr.size {
                                return Err(Error::DigestMismatch {
                                    what: format!("blob {id}"),
                                    expected: format!("{} bytes", attr.size),
                                    actual: format!("{len} bytes"),
                                });
                            }
                            tar.append_data(&mut h, as_path(&path), file.take(attr.size))
                        }
                    }
                    .map_err(io_err)?;
                }
                FileKind::Symlink => {
                    let mut h = header_for(&attr, tar::EntryType::Symlink);
                    let target = index
                        .readlink(entry.ino)
                        .ok_or_else(|| corrupt(index, entry.ino))?;
                    tar.append_link(&mut h, as_path(&path), as_path(target))
                        .map_err(io_err)?;
                }
                FileKind::CharDevice | FileKind::BlockDevice | FileKind::Fifo => {
                    let kind = match entry.kind {
                        FileKind::CharDevice => tar::EntryType::Char,
                        FileKind::BlockDevice => tar::EntryType::Block,
                        _ => tar::EntryType::Fifo,
                    };
                    let mut h = header_for(&attr, kind);
                    if entry.kind != FileKind::Fifo {
                        h.set_device_major(libc::major(attr.rdev)).map_err(io_err)?;
                        h.set_device_minor(libc::minor(attr.rdev)).map_err(io_err)?;
                    }
                    tar.append_data(&mut h, as_path(&path), std::io::empty())
                        .map_err(io_err)?;
                }
                FileKind::Socket | FileKind::Whiteout => {} // tar has no sockets
            }
        }
        // Depth first, in name order: push in reverse.
        stack.extend(subdirs.into_iter().rev());
    }
    tar.finish().map_err(io_err)?;
    Ok(())
}

fn corrupt(index: &Index, ino: u64) -> Error {
    Error::CorruptIndex {
        path: index.path().to_path_buf(),
        problem: format!("inode {ino} vanished"),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

impl Store {
    /// Write layer `id` as an OCI layer tar (uncompressed) to `out`.
    pub fn export_layer_tar(&self, id: &LayerId, out: &mut dyn Write) -> Result<()> {
        let index = self.open_layer(id)?;
        write_layer_tar(self, &index, out)
    }
}
