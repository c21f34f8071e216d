//! A blocking client for one registry (the OCI distribution API): scheme
//! selection, anonymous/basic/bearer auth from `WWW-Authenticate`, and
//! retries with backoff on transient failures.
//!
//! Built on `ureq` (blocking HTTP/1.1, rustls on the `ring` provider): the
//! distribution API is a handful of plain requests, so a small synchronous
//! client shared by a few download threads is all that is needed.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use ureq::http::{self, Method, StatusCode};

use super::auth::{self, Challenge, Credentials};
use super::reference::api_host;
use super::{Digest, Error};

/// How many times a request is tried before a transient failure is final.
const ATTEMPTS: u32 = 4;
/// First retry delay; doubled each time.
const BACKOFF_START_MS: u64 = 250;
/// Longest delay honoured from a `Retry-After` header.
const RETRY_AFTER_MAX_S: u64 = 10;
/// Largest manifest or token answer read into memory.
const MAX_DOCUMENT_BYTES: u64 = 8 << 20;

/// Manifest media types a pull accepts, in order of preference.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `Some(false)`: allow plain HTTP and unverified TLS; `Some(true)`:
    /// verified HTTPS only, even for localhost; `None`: verified HTTPS, with
    /// plain HTTP allowed for localhost and 127.0.0.1 (as podman does).
    pub tls_verify: Option<bool>,
    /// Credentials given on the command line; else the auth files are read.
    pub creds: Option<Credentials>,
    /// An explicit auth file (`--authfile`).
    pub auth_file: Option<PathBuf>,
}

/// What a request sends.
pub enum Body<'a> {
    /// Nothing.
    Empty,
    /// Bytes in memory (a manifest), with a content type.
    Bytes(&'a [u8], &'a str),
    /// A file (a blob), sent with its length.
    File(&'a Path),
}

/// What a request is for, so auth can ask for the right token scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Registry-wide (the `/v2/` ping).
    None,
    /// Read a repository.
    Pull,
    /// Write a repository.
    Push,
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by scope string.
    tokens: HashMap<String, String>,
}

/// A connection to one registry, shared by the threads of one pull or push.
pub struct Client {
    agent: ureq::Agent,
    /// `https://host[:port]` or `http://host[:port]`.
    base: String,
    /// The registry's name as written in references (`docker.io`).
    registry: String,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
}

/// A response whose status was checked to be a success.
pub struct Reply {
    /// The response.
    pub response: http::Response<ureq::Body>,
}

impl Reply {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// Read a small body (a manifest or JSON answer) into memory.
    pub fn read_document(mut self, url: &str) -> Result<Vec<u8>, Error> {
        self.response
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|e| transport(url, e))
    }

    /// The body as a reader.
    pub fn into_reader(self) -> impl Read {
        self.response.into_body().into_reader()
    }
}

fn transport(url: &str, source: ureq::Error) -> Error {
    Error::Transport {
        url: url.to_string(),
        source: Box::new(source),
    }
}

/// Turn a transport failure of the first request into an error with a hint.
fn connect_error(e: Error, hint: &str) -> Error {
    match e {
        Error::Transport { url, source } => Error::Connect {
            url,
            hint: hint.to_string(),
            source,
        },
        e => e,
    }
}

fn is_local(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => registry,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1")
}

fn make_agent(verify_tls: bool) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(!verify_tls)
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

fn transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn transient_error(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed
    )
}

fn backoff(attempt: u32, retry_after: Option<&str>) {
    let from_header = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(RETRY_AFTER_MAX_S)));
    let delay = from_header.unwrap_or(Duration::from_millis(BACKOFF_START_MS << attempt));
    std::thread::sleep(delay);
}

impl Client {
    /// Connect to `registry` (as written in a reference): pick HTTPS or, where
    /// allowed, plain HTTP, and learn how the registry wants to authenticate.
    pub fn connect(registry: &str, opts: &ClientOptions) -> Result<Client, Error> {
        let creds = match &opts.creds {
            Some(c) => Some(c.clone()),
            None => auth::lookup(opts.auth_file.as_deref(), registry)?,
        };
        let host = api_host(registry);
        let allow_http = match opts.tls_verify {
            Some(verify) => !verify,
            None => is_local(registry),
        };
        let verify_tls = opts.tls_verify.unwrap_or(true);
        let mut client = Client {
            agent: make_agent(verify_tls),
            base: format!("https://{host}"),
            registry: registry.to_string(),
            creds,
            auth: Mutex::new(AuthState::default()),
        };
        match client.ping() {
            Ok(()) => Ok(client),
            Err(Error::Transport { url, source }) if allow_http => {
                tracing::debug!("{url}: {source}; trying plain http");
                client.base = format!("http://{host}");
                client
                    .ping()
                    .map_err(|e| connect_error(e, "is the registry running?"))?;
                Ok(client)
            }
            Err(e) => Err(connect_error(
                e,
                "is the registry running? if it speaks plain HTTP or has a self-signed \
                 certificate, pass --tls-verify=false",
            )),
        }
    }

    /// The registry name this client talks to.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The base URL in use (`http://...` or `https://...`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Whether credentials were given or found.
    pub fn has_credentials(&self) -> bool {
        self.creds.is_some()
    }

    /// `GET /v2/`: check the registry speaks the API and note its challenge.
    fn ping(&self) -> Result<(), Error> {
        let url = format!("{}/v2/", self.base);
        let response = self.send_with_retries(&url, Method::GET, None, &Body::Empty, None)?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge);
            self.auth.lock().challenge = challenge;
            return Ok(());
        }
        if status.is_success() {
            return Ok(());
        }
        Err(Error::Http {
            url,
            status: status.as_u16(),
            message: "the server does not answer like an OCI registry (GET /v2/)".to_string(),
        })
    }

    /// Check that the registry accepts our credentials (for `login`).
    pub fn check_login(&self) -> Result<(), Error> {
        let url = format!("{}/v2/", self.base);
        self.request(Method::GET, &url, None, &Body::Empty, "", Access::None)
            .map(|_| ())
    }

    /// Resolve a `Location` header against the registry's base URL.
    pub fn absolute_url(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    /// One request with auth and retries; a non-success status becomes an
    /// error naming the URL, except those listed in `accept_status`.
    pub fn request(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
        body: &Body<'_>,
        repository: &str,
        access: Access,
    ) -> Result<Reply, Error> {
        self.request_allowing(method, url, accept, body, repository, access, &[])
    }

    /// Like [`Client::request`], but the statuses in `allowed` are returned
    /// as replies instead of errors (e.g. 404 for a HEAD probe).
    #[allow(clippy::too_many_arguments)]
    pub fn request_allowing(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
        body: &Body<'_>,
        repository: &str,
        access: Access,
        allowed: &[u16],
    ) -> Result<Reply, Error> {
        let scope = match access {
            Access::None => None,
            Access::Pull => Some(format!("repository:{repository}:pull")),
            Access::Push => Some(format!("repository:{repository}:pull,push")),
        };
        let mut authorization = self.authorization(scope.as_deref(), None)?;
        let mut renewed = false;
        loop {
            let response = self.send_with_retries(
                url,
                method.clone(),
                accept,
                body,
                authorization.as_deref(),
            )?;
            let status = response.status();
            if status.is_success() || allowed.contains(&status.as_u16()) {
                return Ok(Reply { response });
            }
            if status == StatusCode::UNAUTHORIZED && !renewed {
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .and_then(auth::parse_challenge);
                if let Some(c) = challenge {
                    self.auth.lock().challenge = Some(c.clone());
                    let fresh = self.authorization(scope.as_deref(), Some(&c))?;
                    if fresh.is_some() {
                        authorization = fresh;
                        renewed = true;
                        continue;
                    }
                }
            }
            return Err(self.status_error(url, response));
        }
    }

    fn status_error(&self, url: &str, mut response: http::Response<ureq::Body>) -> Error {
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        let message = registry_error_message(&text);
        match status {
            401 | 403 => Error::Unauthorized {
                registry: self.registry.clone(),
                message,
                hint: if self.creds.is_some() {
                    "the stored credentials were refused: run `strata login` again"
                } else {
                    "the registry needs credentials: run `strata login`"
                }
                .to_string(),
            },
            404 => Error::NotFound {
                url: url.to_string(),
                message,
            },
            _ => Error::Http {
                url: url.to_string(),
                status,
                message,
            },
        }
    }

    /// The `Authorization` header to send for `scope`, fetching a bearer
    /// token when the registry asked for one. `challenge` overrides the
    /// remembered one (after a 401).
    fn authorization(
        &self,
        scope: Option<&str>,
        challenge: Option<&Challenge>,
    ) -> Result<Option<String>, Error> {
        let remembered = self.auth.lock().challenge.clone();
        let Some(challenge) = challenge.cloned().or(remembered) else {
            return Ok(None);
        };
        match challenge {
            Challenge::Basic => Ok(self.creds.as_ref().map(Credentials::basic_header)),
            Challenge::Bearer {
                realm,
                service,
                scope: asked,
            } => {
                let mut scopes: Vec<String> = Vec::new();
                if let Some(s) = scope {
                    scopes.push(s.to_string());
                }
                if let Some(a) = asked {
                    if !scopes.contains(&a) {
                        scopes.push(a);
                    }
                }
                let key = scopes.join(" ");
                if let Some(token) = self.auth.lock().tokens.get(&key) {
                    return Ok(Some(format!("Bearer {token}")));
                }
                let token = self.fetch_token(&realm, service.as_deref(), &scopes)?;
                self.auth.lock().tokens.insert(key, token.clone());
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<String, Error> {
        let mut query: Vec<String> = Vec::new();
        if let Some(s) = service {
            query.push(format!("service={}", url_escape(s)));
        }
        for s in scopes {
            query.push(format!("scope={}", url_escape(s)));
        }
        let url = if query.is_empty() {
            realm.to_string()
        } else {
            let sep = if realm.contains('?') { '&' } else { '?' };
            format!("{realm}{sep}{}", query.join("&"))
        };
        let basic = self.creds.as_ref().map(Credentials::basic_header);
        let response =
            self.send_with_retries(&url, Method::GET, None, &Body::Empty, basic.as_deref())?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(match status {
                401 | 403 => Error::Unauthorized {
                    registry: self.registry.clone(),
                    message: format!("token server {realm} refused (HTTP {status})"),
                    hint: if self.creds.is_some() {
                        "check the user name and password, then run `strata login` again"
                    } else {
                        "the registry needs credentials: run `strata login`"
                    }
                    .to_string(),
                },
                _ => self.status_error(&url, response),
            });
        }
        let bytes = Reply { response }.read_document(&url)?;
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
        }
        let reply: TokenReply = serde_json::from_slice(&bytes).map_err(|e| Error::Http {
            url: url.clone(),
            status: 200,
            message: format!("token answer is not JSON: {e}"),
        })?;
        reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Http {
                url,
                status: 200,
                message: "token answer has no token".to_string(),
            })
    }

    /// Send one request, retrying transport errors and transient statuses.
    fn send_with_retries(
        &self,
        url: &str,
        method: Method,
        accept: Option<&str>,
        body: &Body<'_>,
        authorization: Option<&str>,
    ) -> Result<http::Response<ureq::Body>, Error> {
        let mut attempt = 0;
        loop {
            let result = self.send_once(url, method.clone(), accept, body, authorization);
            attempt += 1;
            match result {
                Ok(r) if transient_status(r.status()) && attempt < ATTEMPTS => {
                    tracing::debug!("{method} {url}: HTTP {}, retrying", r.status());
                    let after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    backoff(attempt - 1, after.as_deref());
                }
                Ok(r) => return Ok(r),
                Err(Error::Transport { url: u, source }) => {
                    if transient_error(&source) && attempt < ATTEMPTS {
                        tracing::debug!("{method} {url}: {source}, retrying");
                        backoff(attempt - 1, None);
                    } else {
                        return Err(Error::Transport { url: u, source });
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn send_once(
        &self,
        url: &str,
        method: Method,
        accept: Option<&str>,
        body: &Body<'_>,
        authorization: Option<&str>,
    ) -> Result<http::Response<ureq::Body>, Error> {
        let mut builder = http::Request::builder().method(method).uri(url);
        if let Some(a) = accept {
            builder = builder.header("accept", a);
        }
        if let Some(a) = authorization {
            builder = builder.header("authorization", a);
        }
        let bad_request = |e: http::Error| Error::Http {
            url: url.to_string(),
            status: 0,
            message: format!("cannot build request: {e}"),
        };
        let result = match body {
            Body::Empty => self.agent.run(builder.body(()).map_err(bad_request)?),
            Body::Bytes(bytes, content_type) => self.agent.run(
                builder
                    .header("content-type", *content_type)
                    .body(*bytes)
                    .map_err(bad_request)?,
            ),
            Body::File(path) => {
                let file = File::open(path).map_err(|source| Error::Io {
                    op: "open",
                    path: path.to_path_buf(),
                    source,
                })?;
                self.agent.run(
                    builder
                        .header("content-type", "application/octet-stream")
                        .body(file)
                        .map_err(bad_request)?,
                )
            }
        };
        result.map_err(|e| transport(url, e))
    }

    /// `GET` a blob: the body as a reader (redirects to blob storage are
    /// followed, without our credentials).
    pub fn open_blob(&self, repository: &str, digest: &Digest) -> Result<impl Read, Error> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let reply = self.request(
            Method::GET,
            &url,
            None,
            &Body::Empty,
            repository,
            Access::Pull,
        )?;
        Ok(reply.into_reader())
    }

    /// Whether the registry already has a blob in `repository` (`HEAD`).
    pub fn blob_exists(&self, repository: &str, digest: &Digest) -> Result<bool, Error> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let reply = self.request_allowing(
            Method::HEAD,
            &url,
            None,
            &Body::Empty,
            repository,
            Access::Push,
            &[404],
        )?;
        Ok(reply.response.status().is_success())
    }

    /// Upload a blob from a file: start an upload session, then finish it
    /// with one `PUT ...?digest=` carrying the whole file. With
    /// `mount_from` (another repository of this registry that has the
    /// blob), first ask the registry to mount it from there; a registry
    /// that cannot opens an ordinary upload session instead. Returns whether
    /// the blob was mounted (nothing sent).
    pub fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        file: &Path,
        mount_from: Option<&str>,
    ) -> Result<bool, Error> {
        let mut start = format!("{}/v2/{repository}/blobs/uploads/", self.base);
        if let Some(from) = mount_from {
            start.push_str(&format!(
                "?mount={}&from={}",
                url_escape(&digest.to_string()),
                url_escape(from)
            ));
        }
        let reply = self.request(
            Method::POST,
            &start,
            None,
            &Body::Bytes(&[], "application/octet-stream"),
            repository,
            Access::Push,
        )?;
        if mount_from.is_some() && reply.response.status() == StatusCode::CREATED {
            return Ok(true);
        }
        let location = reply.header("location").ok_or_else(|| Error::Http {
            url: start.clone(),
            status: reply.response.status().as_u16(),
            message: "upload session answer has no Location header".to_string(),
        })?;
        let mut url = self.absolute_url(location);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", url_escape(&digest.to_string())));
        self.request(
            Method::PUT,
            &url,
            None,
            &Body::File(file),
            repository,
            Access::Push,
        )?;
        Ok(false)
    }

    /// `PUT` a manifest under a tag or digest. Returns the registry's
    /// `Docker-Content-Digest`, if it sent one.
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, Error> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let reply = self.request(
            Method::PUT,
            &url,
            None,
            &Body::Bytes(bytes, media_type),
            repository,
            Access::Push,
        )?;
        Ok(reply.header("docker-content-digest").map(str::to_string))
    }

    /// `GET` a manifest by tag or digest: its bytes, its media type from the
    /// `Content-Type` header, and the `Docker-Content-Digest` header.
    pub fn fetch_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<FetchedManifest, Error> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let reply = self.request(
            Method::GET,
            &url,
            Some(MANIFEST_ACCEPT),
            &Body::Empty,
            repository,
            Access::Pull,
        )?;
        let content_type = reply
            .header("content-type")
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let digest_header = reply.header("docker-content-digest").map(str::to_string);
        let bytes = reply.read_document(&url)?;
        Ok(FetchedManifest {
            url,
            bytes,
            content_type,
            digest_header,
        })
    }
}

/// A manifest as the registry sent it.
pub struct FetchedManifest {
    /// Where it came from.
    pub url: String,
    /// The exact bytes (their sha256 is the manifest digest).
    pub bytes: Vec<u8>,
    /// Media type from `Content-Type`, parameters stripped.
    pub content_type: Option<String>,
    /// `Docker-Content-Digest`, if sent.
    pub digest_header: Option<String>,
}

/// The first message of a registry's JSON error body, or the text itself.
fn registry_error_message(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_str::<Errors>(text) {
        if let Some(first) = e.errors.first() {
            let code = first.code.clone().unwrap_or_default();
            let message = first.message.clone().unwrap_or_default();
            return format!("{code}: {message}")
                .trim_matches([':', ' '])
                .to_string();
        }
    }
    text.trim().chars().take(200).collect()
}

/// Percent-encode a query value.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_registries() {
        assert!(is_local("localhost:5000"));
        assert!(is_local("127.0.0.1"));
        assert!(is_local("127.0.0.1:41234"));
        assert!(!is_local("registry.example:5000"));
        assert!(!is_local("docker.io"));
    }

    #[test]
    fn escapes_query_values() {
        assert_eq!(
            url_escape("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
    }

    #[test]
    fn error_bodies_are_summarised() {
        let body =
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_error_message(body),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(registry_error_message("  plain  "), "plain");
    }
}
