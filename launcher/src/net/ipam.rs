//! IPv4 subnets and address allocation.
//!
//! Leases live in the network's record (see `state`); allocation walks
//! forward from the last address handed out, so an address freed a moment
//! ago is the last to be reused.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{NetError, Result};

/// An IPv4 prefix `A.B.C.D/N` (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Subnet {
    /// Parse `A.B.C.D/N`; host bits must be zero.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| NetError::BadSubnet {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let (a, p) = spec
            .split_once('/')
            .ok_or_else(|| bad("expected A.B.C.D/N"))?;
        let addr = Ipv4Addr::from_str(a).map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("prefix is not a number"))?;
        if prefix > 32 {
            return Err(bad("prefix longer than 32"));
        }
        let s = Subnet { addr, prefix };
        if s.network() != addr {
            return Err(bad(&format!(
                "host bits set; did you mean {}?",
                s.normalized()
            )));
        }
        Ok(s)
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Same prefix with host bits cleared.
    pub fn normalized(&self) -> Subnet {
        Subnet {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// Does the subnet contain `ip`?
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Do two subnets share an address?
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// First and last host address (network and broadcast excluded for
    /// prefixes shorter than 31).
    pub fn host_range(&self) -> (u32, u32) {
        let (n, b) = (u32::from(self.network()), u32::from(self.broadcast()));
        if self.prefix >= 31 {
            (n, b)
        } else {
            (n + 1, b - 1)
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for Subnet {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self> {
        Subnet::parse(&s)
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// Address pool of one network: the usable range and the leases.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Pool {
    /// Leased address → container id.
    pub leases: BTreeMap<Ipv4Addr, String>,
    /// Last address handed out (allocation continues after it).
    pub last: Option<Ipv4Addr>,
}

impl Pool {
    /// Lease the next free address in `[first, last]` (skipping `reserved`).
    pub fn allocate(
        &mut self,
        range: (u32, u32),
        reserved: Ipv4Addr,
        owner: &str,
    ) -> Option<Ipv4Addr> {
        let (first, last) = range;
        if first > last {
            return None;
        }
        let size = u64::from(last - first) + 1;
        let start = match self.last {
            Some(prev) if (first..=last).contains(&u32::from(prev)) => {
                u64::from(u32::from(prev) - first) + 1
            }
            _ => 0,
        };
        for step in 0..size {
            // (start + step) % size < size <= 2^32, so the sum fits in u32.
            let candidate = Ipv4Addr::from(first + ((start + step) % size) as u32);
            if candidate == reserved || self.leases.contains_key(&candidate) {
                continue;
            }
            self.leases.insert(candidate, owner.to_string());
            self.last = Some(candidate);
            return Some(candidate);
        }
        None
    }

    /// Release every lease held by `owner`.
    pub fn release_owner(&mut self, owner: &str) {
        self.leases.retain(|_, o| o != owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_ranges() {
        let s = Subnet::parse("10.1.2.0/24").unwrap();
        assert_eq!(
            s.host_range(),
            (
                u32::from(Ipv4Addr::new(10, 1, 2, 1)),
                u32::from(Ipv4Addr::new(10, 1, 2, 254))
            )
        );
        assert!(s.contains("10.1.2.9".parse().unwrap()));
        assert!(!s.contains("10.1.3.9".parse().unwrap()));
        assert!(Subnet::parse("10.1.2.1/24").is_err());
        assert!(Subnet::parse("10.1.2.0").is_err());
        assert!(Subnet::parse("10.1.2.0/33").is_err());
        assert!(s.overlaps(&Subnet::parse("10.0.0.0/8").unwrap()));
        assert!(!s.overlaps(&Subnet::parse("10.1.3.0/24").unwrap()));
    }

    #[test]
    fn allocation_moves_forward_and_never_doubles() {
        let s = Subnet::parse("10.9.0.0/29").unwrap(); // hosts .1-.6
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let mut p = Pool::default();
        let a = p.allocate(s.host_range(), gw, "a").unwrap();
        let b = p.allocate(s.host_range(), gw, "b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        p.release_owner("a");
        // .2 is free but the cursor moves on.
        assert_eq!(
            p.allocate(s.host_range(), gw, "c"),
            Some(Ipv4Addr::new(10, 9, 0, 4))
        );
        for o in ["d", "e", "f"] {
            assert!(p.allocate(s.host_range(), gw, o).is_some());
        }
        assert_eq!(p.leases.len(), 5);
        assert_eq!(p.allocate(s.host_range(), gw, "g"), None);
    }
}
