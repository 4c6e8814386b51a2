//! Value parsers of the command line: every argument is validated by the library's own
//! rules (`names`), so bad input is exit 2 before anything connects.

use crate::names::{self, HostName, PacName, RegionName};
use std::time::Duration;

pub(crate) fn pac_name(s: &str) -> Result<PacName, String> {
    PacName::new(s).map_err(|e| e.to_string())
}
pub(crate) fn region_name(s: &str) -> Result<RegionName, String> {
    RegionName::new(s).map_err(|e| e.to_string())
}
pub(crate) fn host_name(s: &str) -> Result<HostName, String> {
    HostName::new(s).map_err(|e| e.to_string())
}
pub(crate) fn version(s: &str) -> Result<semver::Version, String> {
    names::parse_version("product version", s).map_err(|e| e.to_string())
}
pub(crate) fn os(s: &str) -> Result<String, String> {
    names::parse_os("OS", s).map_err(|e| e.to_string())
}
pub(crate) fn bitness(s: &str) -> Result<u8, String> {
    names::parse_bitness("bitness", s).map_err(|e| e.to_string())
}
pub(crate) fn actor(s: &str) -> Result<String, String> {
    names::parse_actor("--by", s).map_err(|e| e.to_string())
}
pub(crate) fn durability_arg(s: &str) -> Result<crate::conn::Durability, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    names::parse_duration("duration", s).map_err(|e| e.to_string())
}
pub(crate) fn metrics_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(format!(
            "invalid metrics address {s:?}: expected IP:PORT with a port from 1 to 65535, \
             such as 127.0.0.1:9187 or [::1]:9187"
        )),
    }
}

pub(crate) fn region_spec(s: &str) -> Result<(RegionName, Option<std::net::SocketAddr>), String> {
    match s.split_once('=') {
        Some((r, a)) => Ok((
            region_name(r)?,
            Some(a.parse().map_err(|_| {
                format!("invalid listener address {a:?} for region {r}: expected IP:PORT such as 127.0.0.1:7001")
            })?),
        )),
        None => Ok((region_name(s)?, None)),
    }
}

pub(crate) fn advertise(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("invalid host {s:?}: a DNS name or IP address"))
    }
}

pub(crate) fn count(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid count {s:?}: a whole number greater than zero"
        )),
    }
}

/// Parses a rate `R/s`, `R/m` or a bare number per second; zero or negative is refused.
pub fn rate(s: &str) -> Result<f64, String> {
    let (num, per) = match s.split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some(_) => {
            return Err(format!(
                "invalid rate {s:?}: expected R/s or R/m, e.g. 50/s"
            ))
        }
        None => (s, 1.0),
    };
    match num.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r / per),
        _ => Err(format!(
            "invalid rate {s:?}: a number greater than zero, e.g. 50/s"
        )),
    }
}
