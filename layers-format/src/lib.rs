//! Content-addressed layer store: blobs addressed by BLAKE3, one mmap-able
//! index per layer, and importers from tar, directories and OCI images.
