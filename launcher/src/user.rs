//! `-u user[:group]` resolution against the container's own /etc/passwd
//! and /etc/group.

use std::fs;
use std::path::Path;

use anyhow::{bail, Result};

/// Who a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory ("/" when unknown).
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd(root: &Path) -> Vec<PasswdEntry> {
    let text = fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"/").to_string(),
            })
        })
        .collect()
}

/// (name, gid, members) of each /etc/group line.
fn groups(root: &Path) -> Vec<(String, u32, Vec<String>)> {
    let text = fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f.get(3).map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            });
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                members.unwrap_or_default(),
            ))
        })
        .collect()
}

/// Resolve `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) with the
/// files under `root`.
pub fn resolve(spec: &str, root: &Path) -> Result<Identity> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users = passwd(root);
    let grps = groups(root);
    let (uid, mut gid, home, name) = if user.is_empty() {
        let root_entry = users.iter().find(|e| e.uid == 0);
        (
            0,
            0,
            root_entry.map_or("/root".to_string(), |e| e.home.clone()),
            "root".to_string(),
        )
    } else if let Ok(uid) = user.parse::<u32>() {
        match users.iter().find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, e.home.clone(), e.name.clone()),
            None => (uid, 0, "/".to_string(), String::new()),
        }
    } else {
        match users.iter().find(|e| e.name == user) {
            Some(e) => (e.uid, e.gid, e.home.clone(), e.name.clone()),
            None => bail!(
                "unable to find user {user}: no matching entries in the container's /etc/passwd"
            ),
        }
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match grps.iter().find(|(n, _, _)| n == g) {
                Some((_, id, _)) => *id,
                None => bail!(
                    "unable to find group {g}: no matching entries in the container's /etc/group"
                ),
            },
        };
    }
    let mut extra: Vec<u32> = if name.is_empty() {
        Vec::new()
    } else {
        grps.iter()
            .filter(|(_, _, m)| m.contains(&name))
            .map(|(_, id, _)| *id)
            .collect()
    };
    extra.retain(|g| *g != gid);
    extra.sort_unstable();
    extra.dedup();
    Ok(Identity {
        uid,
        gid,
        groups: extra,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:100:Bob:/home/bob:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nusers:x:100:\nwheel:x:10:bob\n",
        )
        .unwrap();
        let bob = resolve("bob", d.path()).unwrap();
        assert_eq!(
            (bob.uid, bob.gid, bob.groups.clone(), bob.home.as_str()),
            (1000, 100, vec![10], "/home/bob")
        );
        assert_eq!(resolve("1000:wheel", d.path()).unwrap().gid, 10);
        assert_eq!(resolve("", d.path()).unwrap().uid, 0);
        assert_eq!(resolve("4242:4242", d.path()).unwrap().gid, 4242);
        assert!(resolve("alice", d.path()).is_err());
    }
}
