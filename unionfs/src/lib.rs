//! Union filesystem over FUSE: N read-only lowers plus one writable upper.
