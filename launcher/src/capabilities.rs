//! Linux capabilities: docker's default set, `--cap-add`/`--cap-drop`
//! (with `ALL`), `--privileged`, and applying a set to the calling process
//! before exec.

use std::collections::BTreeSet;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};

/// docker's default capabilities.
pub const DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Normalise "chown", "CHOWN" or "CAP_CHOWN" to "CAP_CHOWN", checking it
/// names a capability.
pub fn normalize(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    Capability::from_str(&full)
        .map_err(|_| anyhow::anyhow!("unknown capability {name:?} (see capabilities(7))"))?;
    Ok(full)
}

/// The capability names a container gets.
pub fn effective_set(privileged: bool, add: &[String], drop: &[String]) -> Result<Vec<String>> {
    let all: BTreeSet<String> = caps::all().iter().map(|c| c.to_string()).collect();
    if privileged {
        return Ok(all.into_iter().collect());
    }
    let mut set: BTreeSet<String> = DEFAULT.iter().map(|s| s.to_string()).collect();
    for d in drop {
        let d = normalize(d)?;
        if d == "ALL" {
            set.clear();
        } else {
            set.remove(&d);
        }
    }
    for a in add {
        let a = normalize(a)?;
        if a == "ALL" {
            set.extend(all.iter().cloned());
        } else {
            set.insert(a);
        }
    }
    Ok(set.into_iter().collect())
}

fn to_set(names: &[String]) -> Result<CapsHashSet> {
    names
        .iter()
        .map(|n| Capability::from_str(n).map_err(|_| anyhow::anyhow!("unknown capability {n}")))
        .collect()
}

/// Drop every capability not in `names` from the bounding set. Call while
/// still privileged (before changing uid).
pub fn limit_bounding(names: &[String]) -> Result<()> {
    let keep = to_set(names)?;
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    Ok(())
}

/// Set the permitted, effective and inheritable sets (and ambient for a
/// non-root user, as docker does not: non-root gets no effective caps).
pub fn apply(names: &[String], uid: u32) -> Result<()> {
    let set = to_set(names)?;
    let empty = CapsHashSet::new();
    let (eff, perm) = if uid == 0 {
        (&set, &set)
    } else {
        (&empty, &empty)
    };
    caps::set(None, CapSet::Inheritable, &empty).context("clearing inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &empty).context("clearing effective capabilities")?;
    caps::set(None, CapSet::Permitted, perm).context("setting permitted capabilities")?;
    caps::set(None, CapSet::Effective, eff).context("setting effective capabilities")?;
    if uid == 0 {
        caps::set(None, CapSet::Inheritable, &set).context("setting inheritable capabilities")?;
    }
    Ok(())
}

/// The five sets of an OCI `process.capabilities`, each applied exactly
/// (runc's model), as opposed to [`apply`]'s one list for all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sets {
    /// Bounding set (applied with [`limit_bounding`]).
    pub bounding: Vec<String>,
    /// Effective set.
    pub effective: Vec<String>,
    /// Inheritable set.
    pub inheritable: Vec<String>,
    /// Permitted set.
    pub permitted: Vec<String>,
    /// Ambient set: only capabilities also permitted and inheritable can
    /// be ambient (capabilities(7)); the others are left out, as runc does.
    pub ambient: Vec<String>,
}

/// Set the effective, inheritable, permitted and ambient sets to exactly
/// `sets`. Call after the uid change (with keep-caps set), like [`apply`].
pub fn apply_sets(sets: &Sets) -> Result<()> {
    let eff = to_set(&sets.effective)?;
    let inh = to_set(&sets.inheritable)?;
    let perm = to_set(&sets.permitted)?;
    let amb: CapsHashSet = to_set(&sets.ambient)?
        .into_iter()
        .filter(|c| inh.contains(c) && perm.contains(c))
        .collect();
    // Raise what is still permitted so that changing the inheritable set
    // (CAP_SETPCAP) and raising ambient capabilities are allowed.
    let now = caps::read(None, CapSet::Permitted).context("reading permitted capabilities")?;
    caps::set(None, CapSet::Effective, &now).context("raising effective capabilities")?;
    caps::set(None, CapSet::Inheritable, &inh).context("setting inheritable capabilities")?;
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    for c in &amb {
        caps::raise(None, CapSet::Ambient, *c)
            .with_context(|| format!("raising ambient capability {c}"))?;
    }
    caps::set(None, CapSet::Effective, &CapsHashSet::new())
        .context("clearing effective capabilities")?;
    caps::set(None, CapSet::Permitted, &perm).context("setting permitted capabilities")?;
    let eff: CapsHashSet = eff.intersection(&perm).copied().collect();
    caps::set(None, CapSet::Effective, &eff).context("setting effective capabilities")?;
    Ok(())
}

/// Refuse sets that name nothing real.
pub fn validate(names: &[String]) -> Result<()> {
    for n in names {
        if Capability::from_str(n).is_err() {
            bail!("unknown capability {n}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_drop_work_on_the_default_set() {
        let s = effective_set(false, &["sys_admin".into()], &["CHOWN".into()]).unwrap();
        assert!(s.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!s.contains(&"CAP_CHOWN".to_string()));
        assert!(s.contains(&"CAP_KILL".to_string()));
        let none = effective_set(false, &[], &["ALL".into()]).unwrap();
        assert!(none.is_empty());
        let some = effective_set(false, &["NET_ADMIN".into()], &["ALL".into()]).unwrap();
        assert_eq!(some, vec!["CAP_NET_ADMIN".to_string()]);
        assert!(effective_set(false, &["NOPE".into()], &[]).is_err());
    }
}
