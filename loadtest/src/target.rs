//! Where the load goes and where it comes from.
//!
//! Owns two rules that keep every run on this machine and past the
//! ephemeral-port limit:
//! - a target is accepted only when it is a loopback address (127.0.0.0/8 or
//!   `::1`, or `localhost`, which is taken as 127.0.0.1); anything else is
//!   refused before a single socket is opened;
//! - connection number `i` (a run-wide index, unique across worker
//!   processes) binds its source address to `127.0.0.(2 + (i / per_addr) % 253)`
//!   before connecting. Blocks of `per_addr` consecutive connections share an
//!   address, so address `k` carries at most `per_addr` live sockets and each
//!   address keeps its own ~28,000 ephemeral ports. Source spreading is IPv4
//!   only; an IPv6 target (`::1`) connects from `::1`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use thiserror::Error;

/// First loopback source address handed out (127.0.0.1 is left to others).
const FIRST_SOURCE_OCTET: u32 = 2;
/// Number of usable source addresses: 127.0.0.2 ..= 127.0.0.254.
const SOURCE_ADDRS: u64 = 253;

/// Errors from parsing a target; all are fatal for the run.
#[derive(Debug, Error)]
pub enum TargetError {
    #[error("could not parse target {0:?}: expected HOST:PORT, ws://HOST:PORT or wss://HOST:PORT")]
    Syntax(String),
    #[error("could not resolve target {0:?}")]
    Resolve(String),
    #[error(
        "refusing target {0}: only loopback addresses (127.0.0.0/8, ::1, localhost) may be loaded"
    )]
    NotLoopback(SocketAddr),
}

/// A validated loopback target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// Value of the HTTP `Host` header (`ip:port`, IPv6 bracketed).
    pub host_header: String,
    /// The host as written (`localhost`, `127.0.0.1`, `::1`): the name a
    /// TLS certificate is verified against.
    pub host: String,
    /// Written as `wss://` or `https://`: the run speaks TLS.
    pub tls: bool,
}

/// True when `ip` is a loopback address.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// Parses `HOST:PORT`, `ws://HOST:PORT[/path]` or `http://HOST:PORT[/path]`
/// (`wss://` and `https://` too, which also ask for TLS) and checks that it
/// is loopback.
///
/// # Errors
/// Syntax errors, names that do not resolve, and any non-loopback address.
pub fn parse_target(text: &str) -> Result<Target, TargetError> {
    let trimmed = text.trim();
    let tls = ["wss://", "https://"]
        .iter()
        .any(|p| trimmed.starts_with(p));
    let without_scheme = ["ws://", "http://", "wss://", "https://"]
        .iter()
        .find_map(|p| trimmed.strip_prefix(p))
        .unwrap_or(trimmed);
    let authority = without_scheme.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(TargetError::Syntax(text.to_string()));
    }
    let mut host = String::new();
    let addr: SocketAddr = if let Ok(a) = authority.parse::<SocketAddr>() {
        a
    } else {
        let (name, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| TargetError::Syntax(text.to_string()))?;
        let port: u16 = port
            .parse()
            .map_err(|_| TargetError::Syntax(text.to_string()))?;
        host = host_name(name);
        if name.eq_ignore_ascii_case("localhost") {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        } else {
            // Resolve, but judge every answer: a name must not smuggle in a
            // remote address.
            let all: Vec<SocketAddr> = (name, port)
                .to_socket_addrs()
                .map_err(|_| TargetError::Resolve(text.to_string()))?
                .collect();
            let first = *all
                .first()
                .ok_or_else(|| TargetError::Resolve(text.to_string()))?;
            if let Some(bad) = all.iter().find(|a| !is_loopback(a.ip())) {
                return Err(TargetError::NotLoopback(*bad));
            }
            first
        }
    };
    if !is_loopback(addr.ip()) {
        return Err(TargetError::NotLoopback(addr));
    }
    if addr.port() == 0 {
        return Err(TargetError::Syntax(text.to_string()));
    }
    if host.is_empty() {
        host = addr.ip().to_string();
    }
    Ok(Target {
        addr,
        host_header: addr.to_string(),
        host,
        tls,
    })
}

fn host_name(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// How source addresses are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceSpread {
    /// Connections per source address; 0 disables binding (kernel picks 127.0.0.1).
    pub per_addr: u64,
}

impl SourceSpread {
    /// Source IP for the run-wide connection index `i`, or `None` when the
    /// kernel should choose (spreading disabled or an IPv6 target).
    pub fn source_for(&self, i: u64, target: &SocketAddr) -> Option<Ipv4Addr> {
        if self.per_addr == 0 || !target.is_ipv4() {
            return None;
        }
        let block = (i / self.per_addr) % SOURCE_ADDRS;
        let last = FIRST_SOURCE_OCTET + block as u32;
        Some(Ipv4Addr::new(127, 0, 0, last as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        let t = parse_target("127.0.0.1:7575").unwrap();
        assert_eq!(t.addr, "127.0.0.1:7575".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:7575");
        let t = parse_target("ws://127.0.0.9:80/api/v1/ws").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.addr.ip(), "127.0.0.9".parse::<IpAddr>().unwrap());
        let t = parse_target("localhost:9000").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        let t = parse_target("[::1]:7000").unwrap();
        assert_eq!(t.host_header, "[::1]:7000");
        assert_eq!(t.host, "::1");
        assert!(!t.tls);
    }

    #[test]
    fn keeps_the_host_name_for_tls() {
        let t = parse_target("wss://localhost:7443/api/v1/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:7443".parse().unwrap());
        assert_eq!(t.host, "localhost");
        assert!(t.tls);
        let t = parse_target("127.0.0.1:7443").unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert!(!t.tls);
        assert!(parse_target("https://127.0.0.1:7443").unwrap().tls);
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "10.0.0.1:80",
            "192.168.1.5:7575",
            "8.8.8.8:53",
            "ws://172.16.0.1:80",
            "[2001:db8::1]:80",
            "0.0.0.0:7575",
        ] {
            match parse_target(bad) {
                Err(TargetError::NotLoopback(_)) => {}
                other => panic!("{bad} should be refused as not loopback, got {other:?}"),
            }
        }
        assert!(matches!(
            parse_target("nonsense"),
            Err(TargetError::Syntax(_))
        ));
        assert!(matches!(
            parse_target("127.0.0.1:0"),
            Err(TargetError::Syntax(_))
        ));
        assert!(matches!(parse_target(""), Err(TargetError::Syntax(_))));
    }

    #[test]
    fn source_addresses_are_spread_in_blocks() {
        let target: SocketAddr = "127.0.0.1:7575".parse().unwrap();
        let s = SourceSpread { per_addr: 1000 };
        assert_eq!(s.source_for(0, &target), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(
            s.source_for(999, &target),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(
            s.source_for(1000, &target),
            Some(Ipv4Addr::new(127, 0, 0, 3))
        );
        assert_eq!(
            s.source_for(25_999, &target),
            Some(Ipv4Addr::new(127, 0, 0, 27))
        );
        // Wraps after 127.0.0.254 back to 127.0.0.2.
        assert_eq!(
            s.source_for(252_999, &target),
            Some(Ipv4Addr::new(127, 0, 0, 254))
        );
        assert_eq!(
            s.source_for(253_000, &target),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        // Disabled, and IPv6 targets, leave the choice to the kernel.
        assert_eq!(SourceSpread { per_addr: 0 }.source_for(5, &target), None);
        let v6: SocketAddr = "[::1]:7575".parse().unwrap();
        assert_eq!(s.source_for(5, &v6), None);
    }
}
