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
