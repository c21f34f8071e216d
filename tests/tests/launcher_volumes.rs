//! Volumes (issue 6): bind, named, anonymous, tmpfs, --volumes-from,
//! read-only, pre-fill from the image, rm -v, symlink-escape protection.

#[path = "launcher_support.rs"]
mod support;

use std::fs;

use support::{name, Env};

const IMG: &str = "busybox:latest";

fn run(env: &Env, extra: &[&str], script: &str) -> std::process::Output {
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMG, "sh", "-c", script]);
    env.run(&args)
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn bind_mounts_share_and_read_only_is_enforced() {
    let env = Env::new();
    let host = env.dir.path().join("bind-src");
    let spec = format!("{}:/data", host.display());
    let o = run(&env, &["-v", &spec], "echo from-ctr > /data/f; cat /data/f");
    assert!(out(&o).contains("from-ctr"), "{}", out(&o));
    assert_eq!(
        fs::read_to_string(host.join("f")).unwrap(),
        "from-ctr\n",
        "missing host dir created, data shared"
    );
    let ro = format!("{}:/data:ro", host.display());
    let o = run(
        &env,
        &["-v", &ro],
        "cat /data/f; echo x > /data/g && echo wrote",
    );
    assert!(out(&o).contains("from-ctr"));
    assert!(out(&o).contains("Read-only file system"), "{}", out(&o));
    assert!(!host.join("g").exists());
    // --read-only root with a writable volume.
    let o = run(
        &env,
        &["--read-only", "-v", &spec],
        "echo y > /data/h && echo ok-volume; touch /x || echo root-ro",
    );
    assert!(
        out(&o).contains("ok-volume") && out(&o).contains("root-ro"),
        "{}",
        out(&o)
    );
}

#[test]
fn named_volumes_persist_prefill_and_refuse_rm_in_use() {
    let env = Env::new();
    let seed = name("seed");
    env.ok(&[
        "run",
        "--name",
        &seed,
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "mkdir /appdata && echo seeded > /appdata/s",
    ]);
    let img = format!("{seed}-img");
    env.ok(&["commit", &seed, &img]);
    let user = name("user");
    let o = env.run(&[
        "run",
        "--name",
        &user,
        "--network",
        "none",
        "-v",
        "appvol:/appdata",
        &img,
        "sh",
        "-c",
        "cat /appdata/s; echo more > /appdata/m",
    ]);
    assert!(
        out(&o).contains("seeded"),
        "new volume pre-filled from the image: {}",
        out(&o)
    );
    let info: serde_json::Value =
        serde_json::from_str(&env.ok(&["volume", "inspect", "appvol"])).unwrap();
    let mp = info[0]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(fs::read_to_string(format!("{mp}/m")).unwrap(), "more\n");
    // Not in the rw layer.
    assert!(!env.container_dir(&user).join("upper/appdata/m").exists());
    assert_ne!(env.code(&["volume", "rm", "appvol"]), 0, "in use");
    env.ok(&["rm", "-v", &user]);
    assert!(
        env.ok(&["volume", "ls", "-q"])
            .lines()
            .any(|l| l == "appvol"),
        "named volumes survive rm -v"
    );
    let o = run(&env, &["-v", "appvol:/d"], "cat /d/m");
    assert!(out(&o).contains("more"));
    env.ok(&["volume", "rm", "appvol"]);
    assert!(!std::path::Path::new(&mp).exists());
}

#[test]
fn anonymous_volumes_go_with_rm_v_and_tmpfs_works() {
    let env = Env::new();
    let n = name("anon");
    env.ok(&[
        "run",
        "--name",
        &n,
        "--network",
        "none",
        "-v",
        "/scratch",
        "-v",
        "keepme:/keep",
        IMG,
        "sh",
        "-c",
        "echo a > /scratch/a",
    ]);
    let vols = env.ok(&["volume", "ls", "-q"]);
    assert_eq!(vols.lines().count(), 2, "{vols}");
    env.ok(&["rm", "-v", &n]);
    let vols = env.ok(&["volume", "ls", "-q"]);
    assert_eq!(vols.trim(), "keepme", "only the anonymous one is gone");
    let o = run(
        &env,
        &[
            "--tmpfs",
            "/run/t:size=1m",
            "--mount",
            "type=tmpfs,target=/m",
        ],
        "grep -c ' /run/t tmpfs ' /proc/mounts; grep -c ' /m tmpfs ' /proc/mounts",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1\n1\n", "{}", out(&o));
}

#[test]
fn volumes_from_a_data_container() {
    let env = Env::new();
    let data = name("data");
    env.ok(&[
        "create",
        "--name",
        &data,
        "--network",
        "none",
        "-v",
        "/webapps",
        IMG,
        "true",
    ]);
    let o = run(&env, &["--volumes-from", &data], "echo shared > /webapps/x");
    assert!(o.status.success(), "{}", out(&o));
    let o = run(
        &env,
        &["--volumes-from", &format!("{data}:ro")],
        "cat /webapps/x; echo y > /webapps/y && echo wrote",
    );
    assert!(out(&o).contains("shared"));
    assert!(out(&o).contains("Read-only file system"), "{}", out(&o));
    let st = env.inspect(&data);
    assert_eq!(
        st["State"]["Status"], "created",
        "the data container never ran"
    );
}

#[test]
fn symlinks_in_the_image_cannot_redirect_mounts_outside() {
    let env = Env::new();
    let base = name("links");
    env.ok(&[
        "run",
        "--name",
        &base,
        "--network",
        "none",
        IMG,
        "sh",
        "-c",
        "ln -s /etc /esc && ln -s ../../.. /up",
    ]);
    let img = format!("{base}-img");
    env.ok(&["commit", &base, &img]);
    let host = env.dir.path().join("payload");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("marker"), "m").unwrap();
    let before: Vec<_> = fs::read_dir("/etc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let v1 = format!("{}:/esc", host.display());
    let v2 = format!("{}:/up/landed", host.display());
    let o = env.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &v1,
        "-v",
        &v2,
        &img,
        "sh",
        "-c",
        "ls /etc/marker /landed/marker",
    ]);
    assert!(
        o.status.success(),
        "mounts land inside the container root: {}",
        out(&o)
    );
    let after: Vec<_> = fs::read_dir("/etc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "the host's /etc is untouched");
    assert!(!std::path::Path::new("/etc/marker").exists());
    assert!(!std::path::Path::new("/landed").exists());
}
