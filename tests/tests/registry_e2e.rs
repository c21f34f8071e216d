//! `strata pull`/`push`/`login`/`logout` against registries on 127.0.0.1:
//! the Debian `docker-registry` (distribution) started per test, with and
//! without htpasswd auth, and small fake registries that serve corrupt or
//! truncated blobs and bearer-token auth.
//!
//! Needs: docker-registry, skopeo, htpasswd (apache2-utils), busybox-static,
//! sha256sum, and `cargo build --workspace --bins` (for target/debug/strata).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use layers_format::Store;

// ---- helpers ------------------------------------------------------------------

/// A tar header owned by root with a fixed time, so layers are reproducible.
fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// `target/debug/strata`, next to this test's `deps/` directory.
fn strata_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("strata");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        bin.display()
    );
    bin
}

fn need(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("this test needs `{tool}`: install it (tests/setup does)");
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Run strata with its own store and auth file; never the user's.
fn strata(store: &Path, auth: &Path, args: &[&str]) -> Output {
    strata_stdin(store, auth, args, None)
}

fn strata_stdin(store: &Path, auth: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(strata_bin());
    cmd.arg("--store")
        .arg(store)
        .args(args)
        .env("REGISTRY_AUTH_FILE", auth)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn strata");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait strata")
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new(need("sha256sum"))
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    text(&out.stdout)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// A docker-registry process serving a temp dir on 127.0.0.1; killed on drop.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Registry {
        let bin = need("docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some(line) = htpasswd {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, line).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                file.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).expect("write registry config");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                reg.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OCI image layout with one busybox layer (bin/busybox, bin/sh link,
/// etc/greeting), tag `v1`, built by hand.
fn busybox_layout(dir: &Path) -> PathBuf {
    let busybox = need("busybox");
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir layout");
    let layer = dir.join("layer.tar");
    {
        let f = std::fs::File::create(&layer).expect("create layer tar");
        let mut tar = tar::Builder::new(f);
        let dir_header = |name: &str, tar: &mut tar::Builder<std::fs::File>| {
            let mut h = header();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, name, std::io::empty())
                .expect("dir entry");
        };
        dir_header("bin/", &mut tar);
        dir_header("etc/", &mut tar);
        let data = std::fs::read(&busybox).expect("read busybox");
        let mut h = header();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, "bin/busybox", data.as_slice())
            .expect("busybox entry");
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, "bin/sh", "busybox")
            .expect("sh link");
        let greeting = b"hello from the registry test\n";
        let mut h = header();
        h.set_mode(0o644);
        h.set_size(greeting.len() as u64);
        tar.append_data(&mut h, "etc/greeting", &greeting[..])
            .expect("greeting");
        tar.finish().expect("finish tar");
    }
    let layer_hex = sha256_file(&layer);
    let layer_size = std::fs::metadata(&layer).expect("stat layer").len();
    std::fs::copy(&layer, blobs.join(&layer_hex)).expect("copy layer");
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["/bin/sh","-c","cat /etc/greeting"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_hex}"]}}}}"#
    );
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, &config).expect("write config");
    let config_hex = sha256_file(&config_path);
    std::fs::write(blobs.join(&config_hex), &config).expect("config blob");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{config_hex}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{layer_hex}","size":{layer_size}}}]}}"#,
        config.len()
    );
    let manifest_path = dir.join("manifest.json");
    std::fs::write(&manifest_path, &manifest).expect("write manifest");
    let manifest_hex = sha256_file(&manifest_path);
    std::fs::write(blobs.join(&manifest_hex), &manifest).expect("manifest blob");
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    std::fs::write(
        layout.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{manifest_hex}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .expect("index.json");
    layout
}

fn skopeo_push(layout: &Path, dest: &str, extra: &[&str]) {
    let out = Command::new(need("skopeo"))
        .args(["copy", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy to {dest} failed: {}",
        text(&out.stderr)
    );
}

fn skopeo_inspect(reference: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(need("skopeo"))
        .args(["inspect", "--tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference} failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo inspect json")
}

/// The file at `path` in the top layer of image `name`, read from the store.
fn read_image_file(store: &Path, name: &str, path: &str) -> Vec<u8> {
    let store = Store::open(store).expect("open store");
    let image = store.resolve_image(name).expect("image in store");
    for layer in image.layers.iter().rev() {
        let index = store.open_layer(layer).expect("open layer");
        if let Some(ino) = index.lookup_path(path.as_bytes()) {
            return match index.content(ino) {
                layers_format::Content::Empty => Vec::new(),
                layers_format::Content::Inline(b) => b.to_vec(),
                layers_format::Content::Blob(id) => {
                    let mut buf = Vec::new();
                    store
                        .open_blob(&id)
                        .expect("open blob")
                        .read_to_end(&mut buf)
                        .expect("read blob");
                    buf
                }
            };
        }
    }
    panic!("{path} not found in image {name}");
}

/// Every file under `<store>/blobs`.
fn blob_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(store.join("blobs")) else {
        return out;
    };
    for dir in dirs {
        let dir = dir.expect("read blobs dir").path();
        for f in std::fs::read_dir(&dir).expect("read blob prefix dir") {
            out.push(f.expect("blob entry").path());
        }
    }
    out
}

fn assert_store_empty(store: &Path) {
    let s = Store::open(store).expect("open store");
    assert!(
        s.list_images().expect("list images").is_empty(),
        "an image was stored"
    );
    assert!(
        s.list_layers().expect("list layers").is_empty(),
        "a layer was stored"
    );
    assert!(
        blob_files(store).is_empty(),
        "a blob was stored: {:?}",
        blob_files(store)
    );
    let tmp: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .expect("read tmp")
        .collect();
    assert!(
        tmp.is_empty(),
        "staging files left in {}/tmp",
        store.display()
    );
}

// ---- tests against docker-registry --------------------------------------------

#[test]
fn pull_then_push_round_trip_through_docker_registry() {
    let reg = Registry::start(None);
    let work = tempfile::tempdir().expect("tempdir");
    let layout = busybox_layout(work.path());
    let source = format!("{}/strata-test/busybox:v1", reg.addr);
    skopeo_push(&layout, &source, &[]);
    let zstd_source = format!("{}/strata-test/busybox:zstd", reg.addr);
    skopeo_push(
        &layout,
        &zstd_source,
        &["--dest-compress-format", "zstd", "--dest-compress"],
    );

    let store = work.path().join("store");
    let auth = work.path().join("auth.json");
    let out = strata(&store, &auth, &["pull", &source]);
    assert!(out.status.success(), "pull failed: {}", text(&out.stderr));
    let image_id = text(&out.stdout).trim().to_string();
    assert_eq!(image_id.len(), 64, "pull prints the image id: {image_id:?}");

    let busybox = std::fs::read(need("busybox")).expect("read busybox");
    assert_eq!(read_image_file(&store, &source, "bin/busybox"), busybox);
    assert_eq!(
        read_image_file(&store, &source, "etc/greeting"),
        b"hello from the registry test\n"
    );
    {
        let s = Store::open(&store).expect("open store");
        let image = s.resolve_image(&source).expect("image by name");
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.config.env, vec!["PATH=/bin"]);
        assert_eq!(
            image.config.cmd.as_deref(),
            Some(
                &[
                    "/bin/sh".to_string(),
                    "-c".into(),
                    "cat /etc/greeting".into()
                ][..]
            )
        );
        let remote = skopeo_inspect(&source, &[]);
        assert_eq!(image.manifest_digest.as_deref(), remote["Digest"].as_str());
    }

    // The same layer again (same tag, and the zstd copy has another blob).
    let again = strata(&store, &auth, &["pull", &source]);
    assert!(
        again.status.success(),
        "second pull: {}",
        text(&again.stderr)
    );
    assert!(
        text(&again.stderr).contains("already exists"),
        "second pull downloads again: {}",
        text(&again.stderr)
    );
    let z = strata(&store, &auth, &["pull", "-q", &zstd_source]);
    assert!(z.status.success(), "zstd pull: {}", text(&z.stderr));
    assert_eq!(
        read_image_file(&store, &zstd_source, "bin/busybox"),
        busybox
    );

    // Push under a new name; skopeo sees exactly what strata pushed, and
    // that is what was pulled: the same layer blobs, config and manifest.
    let dest = format!("{}/strata-test/copy:v2", reg.addr);
    let pushed = strata(&store, &auth, &["push", &source, &dest]);
    assert!(
        pushed.status.success(),
        "push failed: {}",
        text(&pushed.stderr)
    );
    let manifest_digest = text(&pushed.stdout).trim().to_string();
    // Same registry, another repository: the blobs are mounted, not sent.
    assert!(
        text(&pushed.stderr).contains("mounted from strata-test/busybox")
            && text(&pushed.stderr).contains("0 blob(s) uploaded"),
        "{}",
        text(&pushed.stderr)
    );
    let remote = skopeo_inspect(&dest, &[]);
    assert_eq!(remote["Digest"].as_str(), Some(manifest_digest.as_str()));
    let original = skopeo_inspect(&source, &[]);
    assert_eq!(
        remote["Layers"], original["Layers"],
        "pushed layer digests differ from the pulled image's"
    );
    assert_eq!(
        remote["Digest"], original["Digest"],
        "pushed manifest digest differs from the pulled image's"
    );
    // The same image pulled under another name pushes that name's blobs
    // and manifest (skopeo may have reused the gzip blob for the zstd tag).
    let zstd_dest = format!("{}/strata-test/copy:zstd", reg.addr);
    let pushed_z = strata(&store, &auth, &["push", &zstd_source, &zstd_dest]);
    assert!(
        pushed_z.status.success(),
        "push zstd: {}",
        text(&pushed_z.stderr)
    );
    let original_z = skopeo_inspect(&zstd_source, &[]);
    let remote_z = skopeo_inspect(&zstd_dest, &[]);
    assert_eq!(remote_z["Layers"], original_z["Layers"]);
    assert_eq!(remote_z["Digest"], original_z["Digest"]);
    let raw = Command::new(need("skopeo"))
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo inspect --raw");
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("raw manifest");
    let manifest_layers: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["digest"].as_str())
        .collect();
    let skopeo_layers: Vec<&str> = remote["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert_eq!(skopeo_layers, manifest_layers);
    assert_eq!(skopeo_layers.len(), 1);
    // The diff id (uncompressed tar) is kept by the pushed config.
    let config = skopeo_inspect(&dest, &["--config"]);
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(config["config"]["Env"][0], "PATH=/bin");

    // Pushing again is deterministic and uploads nothing.
    let again = strata(&store, &auth, &["push", &source, &dest]);
    assert!(
        again.status.success(),
        "second push: {}",
        text(&again.stderr)
    );
    assert_eq!(text(&again.stdout).trim(), manifest_digest);
    assert!(
        text(&again.stderr).contains("0 blob(s) uploaded"),
        "{}",
        text(&again.stderr)
    );

    // What was pushed pulls back into a fresh store with the same content.
    let store2 = work.path().join("store2");
    let back = strata(&store2, &auth, &["pull", &dest]);
    assert!(back.status.success(), "pull back: {}", text(&back.stderr));
    assert_eq!(read_image_file(&store2, &dest, "bin/busybox"), busybox);
    assert_eq!(
        read_image_file(&store2, &dest, "bin/sh").len(),
        0,
        "bin/sh is a symlink"
    );

    // A missing tag is a clear error.
    let missing = strata(
        &store2,
        &auth,
        &["pull", &format!("{}/strata-test/busybox:nope", reg.addr)],
    );
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("not found"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn kept_blobs_go_with_the_image_and_local_images_push_rebuilt() {
    let reg = Registry::start(None);
    let work = tempfile::tempdir().expect("tempdir");
    let layout = busybox_layout(work.path());
    let source = format!("{}/strata-test/kept:v1", reg.addr);
    skopeo_push(&layout, &source, &[]);
    let store = work.path().join("store");
    let auth = work.path().join("auth.json");
    let pull = strata(&store, &auth, &["pull", "-q", &source]);
    assert!(pull.status.success(), "pull: {}", text(&pull.stderr));

    // The pulled image keeps the blobs the registry served.
    let remote = skopeo_inspect(&source, &[]);
    let kept: Vec<layers_format::KeptBlob> = {
        let s = Store::open(&store).expect("open store");
        let image = s.resolve_image(&source).expect("pulled image");
        assert_eq!(image.sources.len(), 1, "{:?}", image.sources);
        let src = &image.sources[0];
        let layer_digests: Vec<&str> = src.layers.iter().map(|l| l.digest.as_str()).collect();
        let remote_layers: Vec<&str> = remote["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .filter_map(|l| l.as_str())
            .collect();
        assert_eq!(layer_digests, remote_layers);
        assert_eq!(
            Some(src.manifest.digest.as_str()),
            remote["Digest"].as_str()
        );
        for b in src.blobs() {
            let path = s.blob_path(&b.blob);
            assert!(path.exists(), "kept blob {} missing", b.digest);
            assert_eq!(format!("sha256:{}", sha256_file(&path)), b.digest);
        }
        src.blobs().cloned().collect()
    };
    let verify = strata(&store, &auth, &["store", "verify"]);
    assert!(verify.status.success(), "verify: {}", text(&verify.stderr));
    let gc = strata(&store, &auth, &["store", "gc"]);
    assert!(gc.status.success(), "gc: {}", text(&gc.stderr));
    {
        let s = Store::open(&store).expect("open store");
        assert!(
            kept.iter().all(|b| s.has_blob(&b.blob)),
            "gc removed blobs a live image keeps"
        );
    }

    // An image imported from a plain tar has no kept blobs: push builds
    // its layer, deterministically, and it pulls back the same.
    let local = "local/app:1";
    let import = strata(
        &store,
        &auth,
        &[
            "image",
            "import",
            work.path().join("layer.tar").to_str().expect("utf-8 path"),
            "--name",
            local,
        ],
    );
    assert!(import.status.success(), "import: {}", text(&import.stderr));
    let dest = format!("{}/strata-test/local:1", reg.addr);
    let pushed = strata(&store, &auth, &["push", local, &dest]);
    assert!(pushed.status.success(), "push: {}", text(&pushed.stderr));
    let digest = text(&pushed.stdout).trim().to_string();
    let remote_local = skopeo_inspect(&dest, &[]);
    assert_eq!(remote_local["Digest"].as_str(), Some(digest.as_str()));
    assert_eq!(remote_local["Layers"].as_array().map(Vec::len), Some(1));
    let again = strata(&store, &auth, &["push", local, &dest]);
    assert!(
        again.status.success(),
        "push again: {}",
        text(&again.stderr)
    );
    assert_eq!(
        text(&again.stdout).trim(),
        digest,
        "rebuilt push is deterministic"
    );
    assert!(
        text(&again.stderr).contains("0 blob(s) uploaded"),
        "{}",
        text(&again.stderr)
    );
    let store2 = work.path().join("store2");
    let back = strata(&store2, &auth, &["pull", "-q", &dest]);
    assert!(back.status.success(), "pull back: {}", text(&back.stderr));
    let busybox = std::fs::read(need("busybox")).expect("read busybox");
    assert_eq!(read_image_file(&store2, &dest, "bin/busybox"), busybox);

    // A kept blob that went missing is a problem for verify, and push
    // falls back to building the layer (the same bytes as for the local
    // image, which has the same layer).
    let layer_blob = {
        let s = Store::open(&store).expect("open store");
        s.blob_path(&kept.last().expect("a kept layer blob").blob)
    };
    std::fs::remove_file(&layer_blob).expect("remove kept layer blob");
    let damaged = strata(&store, &auth, &["store", "verify"]);
    assert!(!damaged.status.success(), "verify missed a lost kept blob");
    assert!(
        text(&damaged.stdout).contains("is missing; pull the image again"),
        "{}",
        text(&damaged.stdout)
    );
    let rebuilt_dest = format!("{}/strata-test/rebuilt:1", reg.addr);
    let rebuilt = strata(&store, &auth, &["push", &source, &rebuilt_dest]);
    assert!(
        rebuilt.status.success(),
        "push without kept blobs: {}",
        text(&rebuilt.stderr)
    );
    let remote_rebuilt = skopeo_inspect(&rebuilt_dest, &[]);
    assert_eq!(remote_rebuilt["Layers"], remote_local["Layers"]);
    assert_ne!(remote_rebuilt["Layers"], remote["Layers"]);

    // Removing the pulled image drops its kept blobs at the next gc; the
    // local image (same layer) is untouched and the store verifies clean.
    let rm = strata(&store, &auth, &["image", "rm", &source]);
    assert!(rm.status.success(), "image rm: {}", text(&rm.stderr));
    let gc = strata(&store, &auth, &["store", "gc"]);
    assert!(gc.status.success(), "gc: {}", text(&gc.stderr));
    {
        let s = Store::open(&store).expect("open store");
        for b in &kept {
            assert!(
                !s.blob_path(&b.blob).exists(),
                "kept blob {} ({}) survived gc after image rm",
                b.blob,
                b.digest
            );
        }
        assert!(s.resolve_image(local).is_ok(), "gc took the local image");
    }
    assert_eq!(read_image_file(&store, local, "bin/busybox"), busybox);
    let verify = strata(&store, &auth, &["store", "verify"]);
    assert!(
        verify.status.success(),
        "verify after gc: {}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
}

#[test]
fn htpasswd_registry_needs_login() {
    let htpasswd = Command::new(need("htpasswd"))
        .args(["-Bbn", "tester", "s3cret"])
        .output()
        .expect("run htpasswd");
    assert!(htpasswd.status.success(), "htpasswd failed");
    let reg = Registry::start(Some(&text(&htpasswd.stdout)));
    let work = tempfile::tempdir().expect("tempdir");
    let layout = busybox_layout(work.path());
    let image = format!("{}/private/busybox:v1", reg.addr);
    skopeo_push(&layout, &image, &["--dest-creds", "tester:s3cret"]);

    let store = work.path().join("store");
    let auth = work.path().join("auth/auth.json");

    let anon = strata(&store, &auth, &["pull", &image]);
    assert!(!anon.status.success(), "anonymous pull worked");
    assert!(
        text(&anon.stderr).contains("authentication failed"),
        "{}",
        text(&anon.stderr)
    );
    assert_store_empty(&store);

    let wrong = strata(
        &store,
        &auth,
        &["login", "-u", "tester", "-p", "nope", &reg.addr],
    );
    assert!(
        !wrong.status.success(),
        "login with a wrong password worked"
    );
    assert!(!auth.exists(), "a refused login wrote the auth file");

    let login = strata_stdin(
        &store,
        &auth,
        &["login", "-u", "tester", "--password-stdin", &reg.addr],
        Some("s3cret\n"),
    );
    assert!(
        login.status.success(),
        "login failed: {}",
        text(&login.stderr)
    );
    let mode = std::fs::metadata(&auth)
        .expect("auth file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&auth).expect("read auth")).expect("auth json");
    assert_eq!(
        doc["auths"][reg.addr.as_str()]["auth"],
        "dGVzdGVyOnMzY3JldA=="
    );

    let pull = strata(&store, &auth, &["pull", &image]);
    assert!(
        pull.status.success(),
        "pull after login: {}",
        text(&pull.stderr)
    );

    let dest = format!("{}/private/copy:v1", reg.addr);
    let push = strata(&store, &auth, &["push", &image, &dest]);
    assert!(
        push.status.success(),
        "push after login: {}",
        text(&push.stderr)
    );

    let logout = strata(&store, &auth, &["logout", &reg.addr]);
    assert!(logout.status.success(), "logout: {}", text(&logout.stderr));
    let store2 = work.path().join("store2");
    let after = strata(&store2, &auth, &["pull", &image]);
    assert!(!after.status.success(), "pull after logout worked");
    let twice = strata(&store, &auth, &["logout", &reg.addr]);
    assert!(!twice.status.success(), "second logout claims success");

    // --creds works without any auth file.
    let creds = strata(
        &store2,
        &auth,
        &["pull", "--creds", "tester:s3cret", &image],
    );
    assert!(
        creds.status.success(),
        "pull --creds: {}",
        text(&creds.stderr)
    );
}

// ---- a fake registry ---------------------------------------------------------

/// How the fake registry misbehaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Serve the layer with one byte changed.
    WrongDigest,
    /// Announce the full length, send half, close.
    Truncated,
    /// Serve correctly, behind bearer-token auth (anonymous tokens).
    TokenAuth,
    /// Bearer-token auth whose token server wants tester:s3cret.
    TokenAuthCreds,
    /// Tag `v1` is an image index (arm64 and amd64 entries).
    Index,
    /// Send half the layer, then hold the connection open (a pull to kill).
    Stall,
}

/// base64 of `tester:s3cret`.
const TESTER_BASIC: &str = "Basic dGVzdGVyOnMzY3JldA==";

struct FakeImage {
    manifest: Vec<u8>,
    manifest_digest: String,
    config: Vec<u8>,
    config_digest: String,
    layer: Vec<u8>,
    layer_digest: String,
}

fn fake_image(work: &Path) -> FakeImage {
    let layer_path = work.join("fake-layer.tar");
    {
        let f = std::fs::File::create(&layer_path).expect("create");
        let mut tar = tar::Builder::new(f);
        let body = vec![b'x'; 100_000];
        let mut h = header();
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        tar.append_data(&mut h, "data", body.as_slice())
            .expect("entry");
        tar.finish().expect("finish");
    }
    let layer = std::fs::read(&layer_path).expect("read layer");
    let layer_digest = format!("sha256:{}", sha256_file(&layer_path));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    )
    .into_bytes();
    let config_path = work.join("fake-config.json");
    std::fs::write(&config_path, &config).expect("write");
    let config_digest = format!("sha256:{}", sha256_file(&config_path));
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    )
    .into_bytes();
    let manifest_path = work.join("fake-manifest.json");
    std::fs::write(&manifest_path, &manifest).expect("write");
    let manifest_digest = format!("sha256:{}", sha256_file(&manifest_path));
    FakeImage {
        manifest,
        manifest_digest,
        config,
        config_digest,
        layer,
        layer_digest,
    }
}

const FAKE_TOKEN: &str = "fake-token-1234";

/// Serve `image` on 127.0.0.1 in a thread until `requests` answers were
/// given or the test ends. Returns the address and a request counter.
fn fake_registry(image: FakeImage, fault: Fault) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let realm = format!("http://{addr}/token");
    std::thread::spawn(move || {
        // Bounded: a test makes a few dozen requests at most.
        for stream in listener.incoming().take(200) {
            let Ok(stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = serve_one(stream, &image, fault, &realm);
        }
    });
    (addr, count)
}

fn serve_one(
    mut stream: TcpStream,
    image: &FakeImage,
    fault: Fault,
    realm: &str,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if line.to_ascii_lowercase().starts_with("authorization:") {
            authorization = line["authorization:".len()..].trim().to_string();
        }
    }
    let authorized = authorization == format!("Bearer {FAKE_TOKEN}");
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        // Not HTTP (e.g. a TLS hello): hang up.
        return Ok(());
    };
    let respond =
        |stream: &mut TcpStream, status: &str, headers: &str, body: &[u8], send: usize| {
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            if method != "HEAD" {
                stream.write_all(&body[..send.min(body.len())])?;
            }
            stream.flush()
        };
    if path.starts_with("/token") {
        if fault == Fault::TokenAuthCreds && authorization != TESTER_BASIC {
            return respond(&mut stream, "401 Unauthorized", "", b"{}", usize::MAX);
        }
        let body = format!(r#"{{"token":"{FAKE_TOKEN}"}}"#);
        return respond(
            &mut stream,
            "200 OK",
            "Content-Type: application/json\r\n",
            body.as_bytes(),
            usize::MAX,
        );
    }
    if matches!(fault, Fault::TokenAuth | Fault::TokenAuthCreds) && !authorized {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:fake/img:pull\"\r\n"
        );
        return respond(
            &mut stream,
            "401 Unauthorized",
            &challenge,
            b"{}",
            usize::MAX,
        );
    }
    if path == "/v2/" {
        return respond(&mut stream, "200 OK", "", b"{}", usize::MAX);
    }
    if fault == Fault::Index && path == "/v2/fake/img/manifests/v1" {
        // An index without mediaType: Content-Type says what it is. The
        // arm64 entry points at nothing this registry serves.
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":7,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            image.layer_digest,
            image.manifest_digest,
            image.manifest.len()
        );
        return respond(
            &mut stream,
            "200 OK",
            "Content-Type: application/vnd.oci.image.index.v1+json\r\n",
            index.as_bytes(),
            usize::MAX,
        );
    }
    if path == "/v2/fake/img/manifests/v1"
        || path == format!("/v2/fake/img/manifests/{}", image.manifest_digest)
    {
        // No mediaType in the JSON: the Content-Type header tells.
        let headers = format!(
            "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {}\r\n",
            image.manifest_digest
        );
        return respond(&mut stream, "200 OK", &headers, &image.manifest, usize::MAX);
    }
    if path == format!("/v2/fake/img/blobs/{}", image.config_digest) {
        return respond(&mut stream, "200 OK", "", &image.config, usize::MAX);
    }
    if path == format!("/v2/fake/img/blobs/{}", image.layer_digest) {
        return match fault {
            Fault::WrongDigest => {
                let mut bad = image.layer.clone();
                bad[600] ^= 0xff;
                respond(&mut stream, "200 OK", "", &bad, usize::MAX)
            }
            Fault::Truncated => respond(
                &mut stream,
                "200 OK",
                "",
                &image.layer,
                image.layer.len() / 2,
            ),
            Fault::Stall => {
                respond(
                    &mut stream,
                    "200 OK",
                    "",
                    &image.layer,
                    image.layer.len() / 2,
                )?;
                std::thread::sleep(Duration::from_secs(30));
                Ok(())
            }
            Fault::TokenAuth | Fault::TokenAuthCreds | Fault::Index => {
                respond(&mut stream, "200 OK", "", &image.layer, usize::MAX)
            }
        };
    }
    respond(
        &mut stream,
        "404 Not Found",
        "Content-Type: application/json\r\n",
        br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#,
        usize::MAX,
    )
}

#[test]
fn corrupt_blob_leaves_nothing_in_the_store() {
    let work = tempfile::tempdir().expect("tempdir");
    let (addr, _) = fake_registry(fake_image(work.path()), Fault::WrongDigest);
    let store = work.path().join("store");
    let auth = work.path().join("auth.json");
    let out = strata(&store, &auth, &["pull", &format!("{addr}/fake/img:v1")]);
    assert!(!out.status.success(), "pull of a corrupt blob succeeded");
    let err = text(&out.stderr);
    assert!(err.contains("digest mismatch"), "{err}");
    assert_store_empty(&store);
}

#[test]
fn truncated_blob_leaves_nothing_in_the_store() {
    let work = tempfile::tempdir().expect("tempdir");
    let (addr, count) = fake_registry(fake_image(work.path()), Fault::Truncated);
    let store = work.path().join("store");
    let auth = work.path().join("auth.json");
    let out = strata(&store, &auth, &["pull", &format!("{addr}/fake/img:v1")]);
    assert!(!out.status.success(), "pull of a truncated blob succeeded");
    assert_store_empty(&store);
    // The broken download was retried before giving up.
    assert!(count.load(Ordering::SeqCst) >= 6, "no retries");
}

#[test]
fn kill_9_mid_pull_leaves_a_consistent_store() {
    let work = tempfile::tempdir().expect("tempdir");
    let image = fake_image(work.path());
    let layer_digest = image.layer_digest.clone();
    let (addr, count) = fake_registry(image, Fault::Stall);
    let store = work.path().join("store");
    let auth = work.path().join("auth.json");
    let mut child = Command::new(strata_bin())
        .arg("--store")
        .arg(&store)
        .args(["pull", &format!("{addr}/fake/img:v1")])
        .env("REGISTRY_AUTH_FILE", &auth)
        .env_remove("XDG_RUNTIME_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning strata pull");
    // /v2/, manifest, config, layer: the layer download is then stalled
    // half-way (the registry holds the connection).
    let t0 = Instant::now();
    while count.load(Ordering::SeqCst) < 4 {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "pull ended before it could be killed"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "pull made no requests"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "pull ended before it could be killed"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the pull");
    child.wait().expect("wait");

    let ls = strata(&store, &auth, &["image", "ls", "-q"]);
    assert!(
        text(&ls.stdout).trim().is_empty(),
        "a partial image is listed"
    );
    let verify = strata(&store, &auth, &["store", "verify"]);
    assert!(verify.status.success(), "verify: {}", text(&verify.stderr));
    assert!(
        text(&verify.stdout).contains("0 problem(s)"),
        "{}",
        text(&verify.stdout)
    );
    let gc = strata(&store, &auth, &["store", "gc"]);
    assert!(gc.status.success(), "gc: {}", text(&gc.stderr));
    assert_store_empty(&store);

    // The store works: the same image pulls whole from a healthy registry.
    let (addr2, _) = fake_registry(fake_image(work.path()), Fault::TokenAuth);
    let name = format!("{addr2}/fake/img:v1");
    let out = strata(&store, &auth, &["pull", &name]);
    assert!(
        out.status.success(),
        "pull after kill: {}",
        text(&out.stderr)
    );
    let s = Store::open(&store).expect("store");
    assert!(s
        .layer_for_digest(&layer_digest)
        .expect("side map")
        .is_some());
    let verify = strata(&store, &auth, &["store", "verify"]);
    assert!(
        text(&verify.stdout).contains("0 problem(s)"),
        "{}",
        text(&verify.stdout)
    );
}

#[test]
fn bearer_token_auth_from_challenge() {
    let work = tempfile::tempdir().expect("tempdir");
    let image = fake_image(work.path());
    let layer_digest = image.layer_digest.clone();
    let (addr, _) = fake_registry(image, Fault::TokenAuth);
    let store = work.path().join("store");
    let auth = work.path().join("auth.json");
    let name = format!("{addr}/fake/img:v1");
    let out = strata(&store, &auth, &["pull", &name]);
    assert!(out.status.success(), "token pull: {}", text(&out.stderr));
    let s = Store::open(&store).expect("store");
    let image = s.resolve_image(&name).expect("image");
    assert_eq!(image.layers.len(), 1);
    assert!(s
        .layer_for_digest(&layer_digest)
        .expect("side map")
        .is_some());
}

#[test]
fn bearer_token_server_needs_credentials() {
    let work = tempfile::tempdir().expect("tempdir");
    let (addr, _) = fake_registry(fake_image(work.path()), Fault::TokenAuthCreds);
    let store = work.path().join("store");
    let auth = work.path().join("auth.json");
    let name = format!("{addr}/fake/img:v1");
    let anon = strata(&store, &auth, &["pull", &name]);
    assert!(!anon.status.success(), "anonymous pull worked");
    assert!(
        text(&anon.stderr).contains("authentication failed"),
        "{}",
        text(&anon.stderr)
    );
    assert_store_empty(&store);
    let wrong = strata(&store, &auth, &["pull", "--creds", "tester:wrong", &name]);
    assert!(!wrong.status.success(), "pull with a wrong password worked");
    assert_store_empty(&store);
    let login = strata_stdin(
        &store,
        &auth,
        &["login", "-u", "tester", "--password-stdin", &addr],
        Some("s3cret\n"),
    );
    assert!(login.status.success(), "login: {}", text(&login.stderr));
    let pull = strata(&store, &auth, &["pull", &name]);
    assert!(
        pull.status.success(),
        "pull after login: {}",
        text(&pull.stderr)
    );
}

#[test]
fn image_index_resolves_to_the_platform() {
    let work = tempfile::tempdir().expect("tempdir");
    let (addr, _) = fake_registry(fake_image(work.path()), Fault::Index);
    let store = work.path().join("store");
    let auth = work.path().join("auth.json");
    let name = format!("{addr}/fake/img:v1");
    let other = strata(&store, &auth, &["pull", "--platform", "linux/s390x", &name]);
    assert!(
        !other.status.success(),
        "pull for a missing platform worked"
    );
    let err = text(&other.stderr);
    assert!(
        err.contains("no image for platform linux/s390x") && err.contains("linux/amd64"),
        "{err}"
    );
    assert_store_empty(&store);
    let out = strata(&store, &auth, &["pull", "--platform", "linux/amd64", &name]);
    assert!(
        out.status.success(),
        "pull through the index: {}",
        text(&out.stderr)
    );
    let s = Store::open(&store).expect("store");
    let image = s.resolve_image(&name).expect("image");
    assert_eq!(image.architecture.as_deref(), Some("amd64"));
}

#[test]
fn missing_registry_and_bad_reference_are_clear_errors() {
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let auth = work.path().join("auth.json");
    let port = free_port();
    let out = strata(&store, &auth, &["pull", &format!("127.0.0.1:{port}/x/y:z")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
    let bad = strata(&store, &auth, &["pull", "Not/Valid"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("invalid image reference"),
        "{}",
        text(&bad.stderr)
    );
}

// ---- an ordinary user ----------------------------------------------------------

fn user_ids(name: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new(need("id"))
            .args([flag, name])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "user {name} is missing: tests/setup creates it"
        );
        text(&out.stdout).trim().parse().expect("numeric id")
    };
    (id("-u"), id("-g"))
}

#[test]
fn ordinary_user_pulls_into_own_store() {
    use std::os::unix::process::CommandExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches to the user stratatest: run the suite as root"
    );
    let (uid, gid) = user_ids("stratatest");
    let reg = Registry::start(None);
    let work = tempfile::tempdir().expect("tempdir");
    let layout = busybox_layout(work.path());
    let image = format!("{}/user/busybox:v1", reg.addr);
    skopeo_push(&layout, &image, &[]);

    // A home the user owns, with a copy of strata it can run whatever the
    // permissions of the build directory.
    let home = work.path().join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    let bin = home.join("strata");
    std::fs::copy(strata_bin(), &bin).expect("copy strata");
    for p in [work.path(), home.as_path(), bin.as_path()] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
    }
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod work dir");
    let out = Command::new(&bin)
        .args(["pull", &image])
        .env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .current_dir(&home)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .output()
        .expect("run strata as stratatest");
    assert!(
        out.status.success(),
        "pull as stratatest: {}",
        text(&out.stderr)
    );
    let store = home.join(".local/share/strata");
    let busybox = std::fs::read(need("busybox")).expect("read busybox");
    assert_eq!(read_image_file(&store, &image, "bin/busybox"), busybox);
    let meta = std::fs::metadata(store.join("refs.json")).expect("refs.json in the user's store");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
}
