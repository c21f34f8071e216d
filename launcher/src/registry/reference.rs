//! Image references: `[REGISTRY[:PORT]/]NAME[:TAG][@DIGEST]`, with docker's
//! defaults (`nginx` means `docker.io/library/nginx:latest`).

use std::fmt;
use std::str::FromStr;

use super::{Digest, Error};

/// The registry a reference without a registry part points at.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host that actually serves the API for [`DEFAULT_REGISTRY`].
const DEFAULT_REGISTRY_API_HOST: &str = "registry-1.docker.io";
/// The tag used when a reference has neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if one was given (or defaulted to `latest` when no digest was given).
    pub tag: Option<String>,
    /// Digest, if one was given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// The host (and port) to open connections to: docker.io's API lives on
    /// another host than its name.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// What to ask the manifest endpoint for: the digest if there is one,
    /// else the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// This reference with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

/// The host that serves the registry API for a registry name.
pub fn api_host(registry: &str) -> &str {
    if registry == DEFAULT_REGISTRY || registry == "index.docker.io" {
        DEFAULT_REGISTRY_API_HOST
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        parse(s)
    }
}

fn invalid(value: &str, problem: impl Into<String>) -> Error {
    Error::InvalidReference {
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// Whether the first path component names a registry host rather than a
/// repository namespace (docker's rule: it has a dot or a port, or is
/// `localhost`).
fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn parse(input: &str) -> Result<Reference, Error> {
    let s = input.trim();
    if s.is_empty() {
        return Err(invalid(input, "empty image reference"));
    }
    let s = s.strip_prefix("docker://").unwrap_or(s);
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
        None => (s, None),
    };
    let (registry, path) = match rest.split_once('/') {
        Some((first, remainder)) if looks_like_host(first) => (first.to_string(), remainder),
        _ => (DEFAULT_REGISTRY.to_string(), rest),
    };
    validate_host(input, &registry)?;
    let (name, tag) = match path.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
        _ => (path, None),
    };
    if let Some(t) = &tag {
        validate_tag(input, t)?;
    }
    validate_name(input, name)?;
    let repository = if registry == DEFAULT_REGISTRY && !name.contains('/') {
        format!("library/{name}")
    } else {
        name.to_string()
    };
    let tag = match (&tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        _ => tag,
    };
    let registry = if registry == "index.docker.io" {
        DEFAULT_REGISTRY.to_string()
    } else {
        registry
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

fn validate_host(input: &str, host: &str) -> Result<(), Error> {
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(input, format!("bad registry host {host:?}")))
    }
}

fn validate_tag(input: &str, tag: &str) -> Result<(), Error> {
    let first_ok = tag
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    let rest_ok = tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(invalid(
            input,
            format!("bad tag {tag:?}: use letters, digits, '_', '.', '-' (at most 128)"),
        ))
    }
}

fn validate_name(input: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(invalid(input, "missing repository name"));
    }
    for component in name.split('/') {
        let chars_ok = component
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        let ends_ok = component
            .bytes()
            .next()
            .zip(component.bytes().last())
            .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
        if !chars_ok || !ends_ok {
            return Err(invalid(
                input,
                format!(
                    "bad repository name component {component:?}: use lower-case letters, \
                     digits and '.', '_', '-' between them"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn bare_name_is_docker_library() {
        let x = r("busybox");
        assert_eq!(x.registry, "docker.io");
        assert_eq!(x.repository, "library/busybox");
        assert_eq!(x.tag.as_deref(), Some("latest"));
        assert_eq!(x.api_host(), "registry-1.docker.io");
        assert_eq!(x.to_string(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn namespaced_docker_hub_name() {
        let x = r("someone/tool:1.2");
        assert_eq!(x.registry, "docker.io");
        assert_eq!(x.repository, "someone/tool");
        assert_eq!(x.tag.as_deref(), Some("1.2"));
    }

    #[test]
    fn registry_with_port_tag_and_digest() {
        let d = Digest::of(b"x");
        let x = r(&format!("127.0.0.1:5000/a/b:v1@{d}"));
        assert_eq!(x.registry, "127.0.0.1:5000");
        assert_eq!(x.repository, "a/b");
        assert_eq!(x.tag.as_deref(), Some("v1"));
        assert_eq!(x.digest.as_ref(), Some(&d));
        assert_eq!(x.manifest_ref(), d.to_string());
        let y = r(&format!("localhost/b@{d}"));
        assert_eq!(y.registry, "localhost");
        assert_eq!(y.tag, None);
    }

    #[test]
    fn port_is_not_a_tag() {
        let x = r("localhost:5000/busybox");
        assert_eq!(x.registry, "localhost:5000");
        assert_eq!(x.repository, "busybox");
        assert_eq!(x.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "a/-b",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:12",
            "host:5000/",
            "bad host/x",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
    }
}
