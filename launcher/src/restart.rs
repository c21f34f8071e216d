//! Restart policies, as docker applies them: which exits restart, and the
//! delay between restarts (100 ms doubling to a 1 minute cap, back to
//! 100 ms after a run of at least 10 s).

use std::time::Duration;

use anyhow::{bail, Result};

use crate::container::RestartPolicy;

/// First delay.
pub const INITIAL_DELAY: Duration = Duration::from_millis(100);
/// Largest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run this long resets the delay.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// Parse `no|always|unless-stopped|on-failure[:N]`.
pub fn parse(s: &str) -> Result<RestartPolicy> {
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (n, Some(c)),
        None => (s, None),
    };
    let name = if name.is_empty() { "no" } else { name };
    match (name, count) {
        ("no" | "always" | "unless-stopped", None) => Ok(RestartPolicy {
            name: name.to_string(),
            maximum_retry_count: 0,
        }),
        ("on-failure", None) => Ok(RestartPolicy {
            name: name.to_string(),
            maximum_retry_count: 0,
        }),
        ("on-failure", Some(c)) => match c.parse::<u32>() {
            Ok(n) => Ok(RestartPolicy {
                name: name.to_string(),
                maximum_retry_count: n,
            }),
            Err(_) => {
                bail!("invalid restart policy {s:?}: the retry count must be a non-negative number")
            }
        },
        (_, Some(_)) => bail!("invalid restart policy {s:?}: only on-failure takes a retry count"),
        _ => {
            bail!("invalid restart policy {s:?}: use no, always, unless-stopped or on-failure[:N]")
        }
    }
}

/// Whether the policy restarts after an exit with `exit_code`, given the
/// restarts done so far and whether the user stopped the container.
pub fn should_restart(
    p: &RestartPolicy,
    exit_code: i32,
    restarts_done: u32,
    manually_stopped: bool,
) -> bool {
    if manually_stopped {
        return false;
    }
    match p.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            exit_code != 0 && (p.maximum_retry_count == 0 || restarts_done < p.maximum_retry_count)
        }
        _ => false,
    }
}

/// The delay before the next restart.
pub fn next_delay(previous: Option<Duration>, ran_for: Duration) -> Duration {
    match previous {
        _ if ran_for >= RESET_AFTER => INITIAL_DELAY,
        None => INITIAL_DELAY,
        Some(d) => (d * 2).min(MAX_DELAY),
    }
}

/// What `system boot` restarts, as docker does after a daemon restart:
/// always (even if stopped by hand), unless-stopped unless stopped by hand,
/// on-failure when the last exit was non-zero.
pub fn restart_at_boot(
    p: &RestartPolicy,
    exit_code: i32,
    manually_stopped: bool,
    stopped_by_shutdown: bool,
) -> bool {
    match p.name.as_str() {
        "always" => true,
        "unless-stopped" => !manually_stopped || stopped_by_shutdown,
        "on-failure" => exit_code != 0 && !manually_stopped,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_decisions() {
        let of3 = parse("on-failure:3").unwrap();
        assert_eq!(of3.maximum_retry_count, 3);
        assert!(parse("sometimes").is_err());
        assert!(parse("always:2").is_err());
        assert!(should_restart(&of3, 1, 2, false));
        assert!(!should_restart(&of3, 1, 3, false));
        assert!(!should_restart(&of3, 0, 0, false));
        let always = parse("always").unwrap();
        assert!(should_restart(&always, 0, 100, false));
        assert!(!should_restart(&always, 0, 0, true));
        assert!(!should_restart(&parse("no").unwrap(), 1, 0, false));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..12 {
            let n = next_delay(d, Duration::from_millis(5));
            seen.push(n);
            d = Some(n);
        }
        assert_eq!(seen[0], Duration::from_millis(100));
        assert_eq!(seen[3], Duration::from_millis(800));
        assert_eq!(*seen.last().unwrap(), MAX_DELAY);
        assert_eq!(
            next_delay(Some(MAX_DELAY), Duration::from_secs(11)),
            INITIAL_DELAY
        );
    }

    #[test]
    fn boot_rules_follow_docker() {
        let p = |s| parse(s).unwrap();
        assert!(restart_at_boot(&p("always"), 0, true, false));
        assert!(!restart_at_boot(&p("unless-stopped"), 0, true, false));
        assert!(restart_at_boot(&p("unless-stopped"), 0, true, true));
        assert!(restart_at_boot(&p("on-failure"), 1, false, false));
        assert!(!restart_at_boot(&p("on-failure"), 0, false, false));
        assert!(!restart_at_boot(&p("no"), 1, false, false));
    }
}
