//! OCI registries: `strata pull`, `push`, `login`, `logout`.
//!
//! - [`reference`]: `[REGISTRY/]NAME[:TAG|@DIGEST]` with docker's defaults.
//! - [`auth`]: the podman/docker auth file and `WWW-Authenticate` challenges.
//! - [`client`]: one registry over HTTP(S): auth, retries, blobs, manifests.
//! - [`manifest`]: manifests, indexes, platform choice, layer media types.
//! - [`pull`] and [`push`]: moving images between a registry and the store.
//!
//! Every manifest and blob is checked against its sha256 digest before it
//! reaches the store; a pull that fails leaves the store as it was.

use std::path::PathBuf;

pub mod auth;
pub mod client;
pub mod digest;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod store;

pub use digest::Digest;
pub use reference::Reference;

/// What can go wrong talking to a registry. Messages are lower-case, name
/// the URL, image or file, and say what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image reference could not be parsed.
    #[error("invalid image reference {value:?}: {problem}")]
    InvalidReference {
        /// The text given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A digest is not `sha256:` and 64 hex digits.
    #[error("invalid digest {value:?}: {problem}")]
    InvalidDigest {
        /// The text given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Content did not hash to the digest that names it.
    #[error(
        "{what}: digest mismatch, expected {expected}, received content hashes to {actual}; \
         the registry served corrupt or truncated data, nothing was stored"
    )]
    DigestMismatch {
        /// The manifest or blob.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// Content had another size than its descriptor says.
    #[error(
        "{what}: size mismatch, expected {expected} bytes, received {actual}; \
         the registry served corrupt or truncated data, nothing was stored"
    )]
    SizeMismatch {
        /// The blob.
        what: String,
        /// Size in the descriptor.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// Credentials or an auth file are unusable.
    #[error("{0}")]
    Auth(String),
    /// The registry refused our (lack of) credentials.
    #[error("{registry}: authentication failed ({message}); {hint}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// What the registry said.
        message: String,
        /// What to do.
        hint: String,
    },
    /// The registry has no such manifest or blob.
    #[error("not found: {url} ({message}); check the image name and tag")]
    NotFound {
        /// The URL asked for.
        url: String,
        /// What the registry said.
        message: String,
    },
    /// Any other unexpected HTTP answer.
    #[error("{url}: HTTP {status}: {message}")]
    Http {
        /// The URL asked for.
        url: String,
        /// The status code (0 if no request was sent).
        status: u16,
        /// What the registry said.
        message: String,
    },
    /// The registry could not be reached at all.
    #[error("cannot reach {url}: {source}; {hint}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What to check.
        hint: String,
        /// The transport error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A connection failed or broke (after retries).
    #[error("{url}: {source}")]
    Transport {
        /// The URL.
        url: String,
        /// The transport error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A manifest or index is malformed or of an unsupported kind.
    #[error("{0}")]
    Manifest(String),
    /// An index has no manifest for the wanted platform.
    #[error("no image for platform {wanted} (available: {available}); pass --platform")]
    NoPlatform {
        /// The platform asked for.
        wanted: String,
        /// What the index offers.
        available: String,
    },
    /// A local file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The layer store refused an import or lookup.
    #[error("store: {0}")]
    Store(String),
}
