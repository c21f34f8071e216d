//! Published and exposed ports: `-p` parsing, bindings, and host port
//! reservations.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::str::FromStr;

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use serde::{Deserialize, Serialize};

use super::{NetError, Result};

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(format!("unknown protocol {other:?} (tcp or udp)")),
        }
    }
}

/// An inclusive port range `A` or `A-B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (>= first).
    pub last: u16,
}

impl PortRange {
    fn parse(s: &str) -> std::result::Result<Self, String> {
        let port = |p: &str| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{p:?} is not a port number 1-65535")),
            Ok(n) => Ok(n),
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if last < first {
            return Err(format!("range {s:?} ends before it starts"));
        }
        Ok(PortRange { first, last })
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// One `-p [IP:][HOST_PORT[-END]:]CTR_PORT[-END][/tcp|/udp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Host address to listen on (`None`: every address).
    pub host_ip: Option<Ipv4Addr>,
    /// Host port(s); `None`: a free port from the pool for each.
    pub host_ports: Option<PortRange>,
    /// Container port(s).
    pub container_ports: PortRange,
    /// Protocol.
    pub proto: Proto,
}

impl PortSpec {
    /// Parse a `-p` value. A host range must have the container range's
    /// length, or the container side must be one port (then the first free
    /// port of the host range is used).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: String| NetError::BadPortSpec {
            spec: spec.to_string(),
            why,
        };
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, p)) => (r, p.parse::<Proto>().map_err(bad)?),
            None => (spec, Proto::Tcp),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, ctr) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [i, h, c] => (Some(*i), Some(*h), *c),
            _ => {
                return Err(bad(
                    "expected [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]".into()
                ))
            }
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(i) => {
                let i = i.trim_start_matches('[').trim_end_matches(']');
                let addr = Ipv4Addr::from_str(i)
                    .map_err(|_| bad(format!("{i:?} is not an IPv4 address")))?;
                (!addr.is_unspecified()).then_some(addr)
            }
        };
        let host_ports = match host {
            None | Some("") => None,
            Some(h) => Some(PortRange::parse(h).map_err(bad)?),
        };
        let container_ports = PortRange::parse(ctr).map_err(bad)?;
        if let Some(h) = host_ports {
            if h.len() != container_ports.len() && container_ports.len() != 1 {
                return Err(bad(format!(
                    "host range has {} ports but container range has {}",
                    h.len(),
                    container_ports.len()
                )));
            }
        }
        Ok(PortSpec {
            host_ip,
            host_ports,
            container_ports,
            proto,
        })
    }
}

/// A port from the image's EXPOSE or `--expose` (`80`, `80/udp`, `8000-8010`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExposedPort {
    /// Port number.
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl ExposedPort {
    /// Parse `PORT[-END][/proto]` into one entry per port.
    pub fn parse(spec: &str) -> Result<Vec<Self>> {
        let bad = |why: String| NetError::BadPortSpec {
            spec: spec.to_string(),
            why,
        };
        let (p, proto) = match spec.split_once('/') {
            Some((p, pr)) => (p, pr.parse::<Proto>().map_err(bad)?),
            None => (spec, Proto::Tcp),
        };
        let r = PortRange::parse(p).map_err(bad)?;
        Ok((r.first..=r.last)
            .map(|port| ExposedPort { port, proto })
            .collect())
    }
}

/// One published port as set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortBinding {
    /// Port in the container.
    pub container_port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Host address (`0.0.0.0`: every local address).
    pub host_ip: Ipv4Addr,
    /// Host port.
    pub host_port: u16,
}

impl PortBinding {
    /// Do two bindings claim the same host port?
    pub fn clashes(&self, other: &PortBinding) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }

    /// `80/tcp -> 0.0.0.0:32768`, as `docker port` prints it.
    pub fn line(&self) -> String {
        format!(
            "{}/{} -> {}:{}",
            self.container_port, self.proto, self.host_ip, self.host_port
        )
    }
}

/// A host port held bound (not listening) while the container runs, so no
/// other program can take a port whose traffic goes to the container.
/// Dropping it frees the port.
#[derive(Debug)]
pub struct PortGuard {
    _socket: OwnedFd,
}

/// Bind `addr` for `proto` to prove it is free and hold it.
pub(crate) fn reserve(addr: SocketAddrV4, proto: Proto) -> Result<PortGuard> {
    let taken = |why: String| NetError::PortTaken {
        addr,
        proto: proto.to_string(),
        why,
    };
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| taken(format!("cannot create a socket: {e}")))?;
    // No SO_REUSEADDR: with it, another program setting it too could bind
    // (and listen on) the port while it is only bound here.
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )
    .map_err(|e| {
        taken(match e {
            nix::errno::Errno::EADDRINUSE => "another program has it bound".to_string(),
            nix::errno::Errno::EADDRNOTAVAIL => "no such local address".to_string(),
            other => other.desc().to_string(),
        })
    })?;
    Ok(PortGuard { _socket: fd })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortSpec {
        PortSpec::parse(s).unwrap()
    }

    #[test]
    fn parses_docker_forms() {
        let s = p("127.0.0.1:18080:80");
        assert_eq!(s.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            s.host_ports,
            Some(PortRange {
                first: 18080,
                last: 18080
            })
        );
        assert_eq!(
            s.container_ports,
            PortRange {
                first: 80,
                last: 80
            }
        );
        assert_eq!(s.proto, Proto::Tcp);
        let s = p("18081:80/udp");
        assert_eq!((s.host_ip, s.proto), (None, Proto::Udp));
        let s = p("80");
        assert_eq!(s.host_ports, None);
        let s = p("127.0.0.1::80");
        assert_eq!((s.host_ip, s.host_ports), (Some(Ipv4Addr::LOCALHOST), None));
        let s = p("8000-8002:80-82/tcp");
        assert_eq!(s.host_ports.unwrap().len(), 3);
        let s = p("0.0.0.0:9000-9010:80");
        assert_eq!((s.host_ip, s.container_ports.len()), (None, 1));
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "",
            "0",
            "70000",
            "a:80",
            "1.2.3:80:80",
            "80/sctp",
            "8000-8001:80-82",
            "90-80",
            "1:2:3:4",
        ] {
            assert!(PortSpec::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn exposed_ranges() {
        assert_eq!(
            ExposedPort::parse("53/udp").unwrap(),
            vec![ExposedPort {
                port: 53,
                proto: Proto::Udp
            }]
        );
        assert_eq!(ExposedPort::parse("80-82").unwrap().len(), 3);
        assert!(ExposedPort::parse("x").is_err());
    }

    #[test]
    fn clash_rules() {
        let b = |ip: [u8; 4], port, proto| PortBinding {
            container_port: 1,
            proto,
            host_ip: Ipv4Addr::from(ip),
            host_port: port,
        };
        assert!(b([0, 0, 0, 0], 5, Proto::Tcp).clashes(&b([127, 0, 0, 1], 5, Proto::Tcp)));
        assert!(!b([0, 0, 0, 0], 5, Proto::Tcp).clashes(&b([127, 0, 0, 1], 5, Proto::Udp)));
        assert!(!b([127, 0, 0, 2], 5, Proto::Tcp).clashes(&b([127, 0, 0, 1], 5, Proto::Tcp)));
    }
}
