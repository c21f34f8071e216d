//! Registry credentials: the podman/docker auth file
//! (`{"auths": {"HOST": {"auth": base64(user:pass)}}}`) and the
//! `WWW-Authenticate` challenges registries answer with.
//!
//! Files read, first match wins: `--authfile`, `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json` (`/run/containers/UID/auth.json`
//! for root without it), `~/.config/containers/auth.json`,
//! `~/.docker/config.json`. `login` writes the first of these (mode 0600).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::Error;

/// A user name and password (or identity token as password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// Parse `USER:PASSWORD` as given to `--creds`.
    pub fn parse_pair(s: &str) -> Result<Self, Error> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err(Error::Auth(
                "credentials must be USER:PASSWORD with a non-empty user".to_string(),
            )),
        }
    }

    /// The `auth` field of an auth file entry: base64 of `user:password`.
    pub fn to_auth_field(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password))
    }

    /// Decode an `auth` field.
    pub fn from_auth_field(field: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(field.trim())
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        Self::parse_pair(&text).ok()
    }

    /// The value of an `Authorization: Basic ...` header.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", self.to_auth_field())
    }
}

/// Where auth files are looked for, in order.
pub fn auth_file_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut out = Vec::new();
    if let Some(p) = env("REGISTRY_AUTH_FILE") {
        out.push(p);
    }
    if let Some(dir) = env("XDG_RUNTIME_DIR") {
        out.push(dir.join("containers/auth.json"));
    } else if nix::unistd::geteuid().is_root() {
        out.push(PathBuf::from("/run/containers/0/auth.json"));
    }
    if let Some(home) = env("HOME") {
        out.push(home.join(".config/containers/auth.json"));
        out.push(home.join(".docker/config.json"));
    }
    out
}

/// The file `login` writes and `logout` edits.
pub fn auth_file_for_writing(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    auth_file_candidates(explicit)
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::Auth(
                "no place for the auth file: set REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR or HOME, \
             or pass --authfile"
                    .to_string(),
            )
        })
}

/// The keys an auth file may use for `registry`: podman writes the bare
/// host, docker the index URL for docker.io and sometimes `https://HOST`.
fn keys_for(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == super::reference::DEFAULT_REGISTRY {
        keys.push("https://index.docker.io/v1/".to_string());
        keys.push("index.docker.io".to_string());
        keys.push("registry-1.docker.io".to_string());
    }
    keys
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, Error> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Auth(format!(
                "auth file {}: {e}; fix or remove it",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Look up credentials for `registry` in the auth files.
pub fn lookup(explicit: Option<&Path>, registry: &str) -> Result<Option<Credentials>, Error> {
    for path in auth_file_candidates(explicit) {
        let Some(doc) = read_json(&path)? else {
            continue;
        };
        let Some(auths) = doc.get("auths").and_then(|a| a.as_object()) else {
            continue;
        };
        for key in keys_for(registry) {
            let Some(entry) = auths.get(&key) else {
                continue;
            };
            if let Some(field) = entry.get("auth").and_then(|a| a.as_str()) {
                if let Some(c) = Credentials::from_auth_field(field) {
                    return Ok(Some(c));
                }
            }
            if let (Some(u), Some(p)) = (
                entry.get("username").and_then(|v| v.as_str()),
                entry.get("password").and_then(|v| v.as_str()),
            ) {
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }));
            }
        }
    }
    Ok(None)
}

/// Store credentials for `registry` in `path`, keeping any other content of
/// the file; the file is replaced atomically and has mode 0600.
pub fn store(path: &Path, registry: &str, creds: &Credentials) -> Result<(), Error> {
    let mut doc = read_json(path)?.unwrap_or_else(|| serde_json::json!({}));
    let obj = doc.as_object_mut().ok_or_else(|| {
        Error::Auth(format!(
            "auth file {}: not a JSON object; fix or remove it",
            path.display()
        ))
    })?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let auths = auths.as_object_mut().ok_or_else(|| {
        Error::Auth(format!(
            "auth file {}: \"auths\" is not an object",
            path.display()
        ))
    })?;
    auths.insert(
        registry.to_string(),
        serde_json::json!({ "auth": creds.to_auth_field() }),
    );
    write_atomic(path, &doc)
}

/// Remove credentials for `registry` (or all with `None`) from `path`.
/// Returns whether anything was removed.
pub fn remove(path: &Path, registry: Option<&str>) -> Result<bool, Error> {
    let Some(mut doc) = read_json(path)? else {
        return Ok(false);
    };
    let Some(auths) = doc.get_mut("auths").and_then(|a| a.as_object_mut()) else {
        return Ok(false);
    };
    let removed = match registry {
        Some(r) => {
            let mut any = false;
            for key in keys_for(r) {
                any |= auths.remove(&key).is_some();
            }
            any
        }
        None => {
            let any = !auths.is_empty();
            auths.clear();
            any
        }
    };
    if removed {
        write_atomic(path, &doc)?;
    }
    Ok(removed)
}

fn write_atomic(path: &Path, doc: &serde_json::Value) -> Result<(), Error> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            op,
            path: p,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.exists() {
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("chmod", dir))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auth.json".to_string());
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut text = serde_json::to_vec_pretty(doc).map_err(|e| Error::Auth(e.to_string()))?;
    text.push(b'\n');
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        // An existing temp file keeps its old mode through open(): force 0600.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io("chmod", &tmp))?;
        f.write_all(&text).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Ask for a password on the terminal (standard input) without echoing it.
pub fn read_password_from_terminal(question: &str) -> Result<String, Error> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    use std::io::BufRead;
    let stdin = std::io::stdin();
    let old = termios::tcgetattr(&stdin)
        .map_err(|e| Error::Auth(format!("cannot read terminal settings: {e}")))?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    eprint!("{question}");
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &quiet)
        .map_err(|e| Error::Auth(format!("cannot turn off terminal echo: {e}")))?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    // Restore echo whatever happened to the read.
    let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &old);
    read.map_err(|source| Error::Io {
        op: "read password from",
        path: PathBuf::from("/dev/stdin"),
        source,
    })?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`: send the user name and password.
    Basic,
    /// `Bearer realm=...,service=...,scope=...`: get a token from `realm`.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// `service` parameter to pass on, if any.
        service: Option<String>,
        /// `scope` parameter the registry asked for, if any.
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` header value. Unknown schemes give `None`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(params);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `key="value", key=value` pairs; quoted values may contain commas.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_field_round_trip() {
        let c = Credentials {
            username: "alice".into(),
            password: "p:ss".into(),
        };
        assert_eq!(c.to_auth_field(), "YWxpY2U6cDpzcw==");
        assert_eq!(Credentials::from_auth_field("YWxpY2U6cDpzcw=="), Some(c));
        assert_eq!(Credentials::from_auth_field("!!"), None);
    }

    #[test]
    fn bearer_challenge_with_commas_in_scope() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn store_lookup_remove_keeps_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/auth.json");
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        fs::write(
            &path,
            r#"{"auths":{"other.example":{"auth":"dTpw"}},"credHelpers":{}}"#,
        )
        .unwrap();
        let c = Credentials {
            username: "u".into(),
            password: "secret".into(),
        };
        store(&path, "127.0.0.1:5000", &c).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(lookup(Some(&path), "127.0.0.1:5000").unwrap(), Some(c));
        let doc: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert!(doc["credHelpers"].is_object());
        assert_eq!(doc["auths"]["other.example"]["auth"], "dTpw");
        assert!(remove(&path, Some("127.0.0.1:5000")).unwrap());
        assert!(!remove(&path, Some("127.0.0.1:5000")).unwrap());
        assert_eq!(lookup(Some(&path), "127.0.0.1:5000").unwrap(), None);
        assert!(lookup(Some(&path), "other.example").unwrap().is_some());
    }
}
