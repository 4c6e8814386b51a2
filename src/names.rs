//! Validated names and values (the forms are in docs/reference.md#conventions).
//!
//! Every input is parsed into one of these types at the edge (CLI, plan file, caspac
//! argv) so that code past the edge cannot hold an invalid name, and every refusal
//! names the field and the accepted form before anything is written.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

fn valid_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $field:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Parses and validates the name.
            pub fn new(s: &str) -> Result<Self> {
                if s.is_empty() || s.len() > $max || !valid_chars(s) {
                    return Err(Error::invalid(
                        $field,
                        s,
                        concat!("1 to ", $max, " characters of A-Z, a-z, 0-9, '_' or '-'"),
                    ));
                }
                Ok(Self(s.to_string()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A PAC name: 1-8 characters of `[A-Za-z0-9_-]` (the vendor's limit).
    PacName,
    "PAC name",
    8
);
name_type!(
    /// A region name: 1-32 characters of `[A-Za-z0-9_-]`.
    RegionName,
    "region name",
    32
);
name_type!(
    /// A host name as pacup knows it: 1-32 characters of `[A-Za-z0-9_-]`.
    HostName,
    "host name",
    32
);

/// Parses a product version (semantic version such as `2.0.0` or `9.0.3-rc.1`).
pub fn parse_version(field: &str, s: &str) -> Result<semver::Version> {
    semver::Version::parse(s.trim()).map_err(|e| {
        Error::invalid(
            field,
            s,
            format!("a semantic version such as 2.0.0 or 9.0.3-rc.1 ({e})"),
        )
    })
}

/// Parses a bitness: 32 or 64.
pub fn parse_bitness(field: &str, s: &str) -> Result<u8> {
    match s.trim() {
        "32" => Ok(32),
        "64" => Ok(64),
        _ => Err(Error::invalid(field, s, "32 or 64")),
    }
}

/// Parses an OS string: free text compared exactly, but not empty and without spaces so
/// it survives every output format unchanged.
pub fn parse_os(field: &str, s: &str) -> Result<String> {
    if s.is_empty() || s.len() > 64 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            field,
            s,
            "1 to 64 characters without spaces, e.g. linux-6",
        ));
    }
    Ok(s.to_string())
}

/// Parses a duration written `500ms`, `5s`, `2m` (anything humantime accepts); zero is refused.
pub fn parse_duration(field: &str, s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        Error::invalid(
            field,
            s,
            format!("a duration such as 500ms, 5s or 2m ({e})"),
        )
    })?;
    if d.is_zero() {
        return Err(Error::invalid(field, s, "a duration greater than zero"));
    }
    Ok(d)
}

/// Writes a duration the way the docs show them (`500ms`, `5s`, `2m`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The default OS string: the running kernel's name and major version, e.g. `linux-6`.
pub fn default_os() -> String {
    let name = std::env::consts::OS;
    let major = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| r.split('.').next().map(|m| m.trim().to_string()))
        .filter(|m| !m.is_empty());
    match major {
        Some(m) => format!("{name}-{m}"),
        None => name.to_string(),
    }
}

/// Who is acting, for the audit fields (`by`): `user@host` from the operating system (the
/// effective user's login name and the machine's host name), not from `$USER`, which a
/// shell or a pipeline may not set or may set to anything.
pub fn default_actor() -> String {
    let user = os_user_name()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("uid{}", euid()));
    let host = os_host_name().unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn os_user_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to memory owned by this frame for the whole call, and
    // buf's length is passed; getpwuid_r writes only into pw and buf.
    let rc = unsafe { libc::getpwuid_r(euid(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

fn os_host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned()).filter(|h| !h.is_empty())
}

/// The names among `candidates` close enough to `name` to be what was meant (a case
/// slip or a typo or two), closest first; `name` itself is never offered.
pub fn close_names(name: &str, candidates: &[String]) -> Vec<String> {
    let lower = name.to_lowercase();
    let mut scored: Vec<(usize, &String)> = candidates
        .iter()
        .filter(|c| c.as_str() != name)
        .filter_map(|c| {
            let d = strsim::damerau_levenshtein(&lower, &c.to_lowercase());
            // One edit for short names, a third of the length for longer ones.
            let limit = (name.chars().count().max(c.chars().count()) / 3).max(1);
            (d <= limit).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.into_iter().map(|(_, c)| c.clone()).collect()
}

/// Checks a `--by` value: printable, 1-128 characters.
pub fn parse_actor(field: &str, s: &str) -> Result<String> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > 128 || t.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            s,
            "1-128 printable characters, e.g. alice@host1",
        ));
    }
    Ok(t.to_string())
}

/// The default bitness: the build's pointer width.
pub fn default_bitness() -> u8 {
    (std::mem::size_of::<usize>() * 8) as u8
}

/// A product installation as the compatibility rules see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Product version.
    pub version: semver::Version,
    /// Operating system, compared exactly.
    pub os: String,
    /// 32 or 64.
    pub bitness: u8,
}

impl Product {
    /// Builds a product from raw text inputs, validating each and naming the field.
    pub fn parse(version: &str, os: Option<&str>, bitness: Option<&str>) -> Result<Self> {
        Ok(Product {
            version: parse_version("product version", version)?,
            os: match os {
                Some(o) => parse_os("OS", o)?,
                None => default_os(),
            },
            bitness: match bitness {
                Some(b) => parse_bitness("bitness", b)?,
                None => default_bitness(),
            },
        })
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {}-bit)", self.version, self.os, self.bitness)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_catch_case_slips_and_typos_only() {
        let known: Vec<String> = ["MyPAC", "MyPAC2", "Other", "PROD"]
            .map(String::from)
            .to_vec();
        assert_eq!(close_names("MyPAc", &known), ["MyPAC", "MyPAC2"]);
        assert_eq!(close_names("MyPCA", &known), ["MyPAC", "MyPAC2"]);
        assert_eq!(close_names("prod", &known), ["PROD"]);
        assert!(close_names("Zebra", &known).is_empty());
        assert!(close_names("MyPAC", &["MyPAC".to_string()]).is_empty());
    }

    #[test]
    fn the_default_actor_is_user_at_host() {
        let a = default_actor();
        let (user, host) = a.split_once('@').expect("user@host");
        assert!(!user.is_empty() && !host.is_empty(), "{a}");
        assert!(parse_actor("--by", "").is_err());
        assert!(parse_actor("--by", "a\nb").is_err());
        assert_eq!(parse_actor("--by", " ci-bot ").unwrap(), "ci-bot");
    }

    #[test]
    fn pac_names() {
        for ok in ["MyPAC", "P", "A_b-9", "12345678"] {
            assert!(PacName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "123456789", "my pac", "a:b", "a{b}", "é"] {
            let e = PacName::new(bad).unwrap_err();
            assert_eq!(e.exit_code().code(), 2, "{bad}");
            assert!(e.to_string().contains("PAC name"), "{e}");
        }
    }

    #[test]
    fn region_names_allow_32() {
        assert!(RegionName::new(&"R".repeat(32)).is_ok());
        assert!(RegionName::new(&"R".repeat(33)).is_err());
    }

    #[test]
    fn versions_and_durations() {
        assert!(parse_version("v", "9.0.3-rc.1").is_ok());
        assert!(parse_version("v", "2.0").is_err());
        assert_eq!(
            parse_duration("d", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("d", "2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("d", "0s").is_err());
        assert!(parse_duration("d", "-1s").is_err());
        assert!(parse_duration("d", "soon").is_err());
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn bitness() {
        assert_eq!(parse_bitness("b", "64").unwrap(), 64);
        assert!(parse_bitness("b", "16").is_err());
    }
}
