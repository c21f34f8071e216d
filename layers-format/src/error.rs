//! The one error type of this crate.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store, the index reader and the
/// importers. Messages are lower-case, name the file or thing they are about
/// and, where useful, what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "read", "rename"...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An index file is corrupt, truncated or hostile.
    #[error("corrupt layer index {}: {problem}", path.display())]
    CorruptIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// An index was written by a newer strata, or needs features this build lacks.
    #[error("layer index {}: {problem}; upgrade strata or re-import the layer", path.display())]
    UnsupportedIndex {
        /// The index file.
        path: PathBuf,
        /// Which version or feature is unknown.
        problem: String,
    },
    /// A tar, directory or OCI image being imported is malformed or hostile.
    #[error("{source_name}: {problem}")]
    BadInput {
        /// The file, directory or entry the problem was found in.
        source_name: String,
        /// What is wrong.
        problem: String,
    },
    /// A digest did not match the content it names.
    #[error("{what}: digest mismatch, expected {expected}, content hashes to {actual}")]
    DigestMismatch {
        /// The blob, layer or file.
        what: String,
        /// The digest that was claimed.
        expected: String,
        /// The digest of the bytes actually read.
        actual: String,
    },
    /// No image, layer or blob by that name or id.
    #[error("{kind} {name:?} not found in store {}", store.display())]
    NotFound {
        /// "image", "layer", "blob".
        kind: &'static str,
        /// The name or id that was asked for.
        name: String,
        /// The store root.
        store: PathBuf,
    },
    /// A name, tag or id is not well formed.
    #[error("invalid {kind} {value:?}: {problem}")]
    Invalid {
        /// What kind of value ("image name", "layer id"...).
        kind: &'static str,
        /// The value given.
        value: String,
        /// Why it is rejected.
        problem: String,
    },
    /// An operation conflicts with the store's state (image in use, ambiguous prefix...).
    #[error("{0}")]
    Conflict(String),
    /// A JSON document in the store could not be read or written.
    #[error("json {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Wrap an I/O error with the operation and path it happened on.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A malformed-input error about `source_name`.
    pub fn bad_input(source_name: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::BadInput {
            source_name: source_name.into(),
            problem: problem.into(),
        }
    }
}

/// Extension to attach a path and operation to `std::io::Result`.
pub(crate) trait IoContext<T> {
    /// Turn an I/O error into [`Error::Io`] naming `op` and `path`.
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
