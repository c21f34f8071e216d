//! Content identifiers: BLAKE3 hashes shown as 64 lower-case hex digits.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 hash bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The id as 64 lower-case hex digits.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parse 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self, Error> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|e| Error::Invalid {
                    kind: $kind,
                    value: s.to_string(),
                    problem: format!("expected 64 hex digits ({e})"),
                })?;
                Ok(Self(out))
            }

            /// The id of `bytes` (their BLAKE3 hash).
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                Self(*h.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::from_hex(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

hash_id!(
    /// A blob: file content, named by the BLAKE3 hash of its bytes.
    BlobId,
    "blob id"
);
hash_id!(
    /// A layer: named by the BLAKE3 hash of its index file.
    LayerId,
    "layer id"
);
hash_id!(
    /// An image: named by the BLAKE3 hash of its canonical JSON record
    /// (layer list and config).
    ImageId,
    "image id"
);
