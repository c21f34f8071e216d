//! The few `unsafe` operations of this crate, each with its reasoning.

use std::fs::File;

/// Map `file` read-only.
///
/// Safety argument: the map is only ever read through `&[u8]` slices whose
/// bounds are checked. Index files in the store are immutable (written to a
/// temp file, then renamed into place, never modified), so the usual hazard
/// of a mapped file changing underneath is limited to someone outside strata
/// writing into the store; such a change can make reads return wrong bytes
/// (caught by `verify`), and truncation could raise SIGBUS, which is the same
/// contract every mmap-based reader (git, composefs, nydus) accepts.
pub(crate) fn map_readonly(file: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: see above; the file is opened read-only and mapped privately.
    unsafe { memmap2::MmapOptions::new().map(file) }
}

fn cpath(path: &std::path::Path) -> std::io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn not_supported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENODATA))
}

/// The xattr names of `path` (not following a final symlink). A filesystem
/// without xattr support gives an empty list.
pub(crate) fn list_xattrs(path: &std::path::Path) -> std::io::Result<Vec<Vec<u8>>> {
    let c = cpath(path)?;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // SAFETY: `c` is a valid NUL-terminated string; with a null buffer
        // and size 0 llistxattr only returns the needed size.
        let need = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            let e = std::io::Error::last_os_error();
            return if not_supported(&e) {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        if need == 0 {
            return Ok(Vec::new());
        }
        buf.resize(need as usize, 0);
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew meanwhile
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|&c| c == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}

/// The value of xattr `name` of `path` (not following a final symlink);
/// `None` if it vanished meanwhile.
pub(crate) fn get_xattr(path: &std::path::Path, name: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let c = cpath(path)?;
    let n = std::ffi::CString::new(name).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "xattr name contains NUL")
    })?;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // SAFETY: valid C strings; null buffer with size 0 asks for the size.
        let need = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if need < 0 {
            let e = std::io::Error::last_os_error();
            return if not_supported(&e) { Ok(None) } else { Err(e) };
        }
        buf.resize(need as usize, 0);
        if need == 0 {
            return Ok(Some(buf));
        }
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let got =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return if not_supported(&e) { Ok(None) } else { Err(e) };
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}
