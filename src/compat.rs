//! Compatibility rules: may a product join a store (CheckCompat, docs/PSOR.md section 5)?
//!
//! Default rule: compatible iff same major and minor version, same OS and same bitness.
//! A compatibility matrix (JSON list of `{from, to, compatible, note}` with semver
//! requirements, `from` matching the store's version and `to` the product's) overrides
//! the version part: the first matching rule wins, no match falls back to the default.
//! OS and bitness are never overridable: a region of another OS or bitness cannot share
//! a store's binary formats. Every verdict lists every reason, good and bad.

use crate::error::{Error, Result};
use crate::names::Product;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One matrix rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Requirement on the store's (running) version.
    pub from: semver::VersionReq,
    /// Requirement on the product's (new) version.
    pub to: semver::VersionReq,
    /// Verdict for the version part when both match.
    pub compatible: bool,
    /// Why (shown in the verdict).
    #[serde(default)]
    pub note: Option<String>,
}

/// A compatibility matrix: ordered rules, first match wins.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Matrix {
    /// Rules in file order.
    pub rules: Vec<Rule>,
}

impl Matrix {
    /// Reads and validates a matrix file; any problem is exit 2 naming the file.
    pub fn load(path: &Path) -> Result<Matrix> {
        let bad = |reason: String| Error::BadFile {
            what: "compatibility matrix".into(),
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "{e}; expected a JSON list of {{\"from\": \"<semver req>\", \"to\": \"<semver req>\", \
                 \"compatible\": true|false, \"note\": \"...\"}}"
            ))
        })
    }
}

/// The outcome of a compatibility check.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Whether the product may join the store.
    pub compatible: bool,
    /// Every reason considered, each prefixed with `ok:` or `incompatible:`.
    pub reasons: Vec<String>,
    /// The product checked.
    pub product: Product,
    /// The store's product it was checked against.
    pub store: Product,
}

/// Checks `product` against a store created by `store`.
pub fn check(product: &Product, store: &Product, matrix: Option<&Matrix>) -> Verdict {
    let mut reasons = Vec::new();
    let mut ok = true;
    let (pv, sv) = (&product.version, &store.version);
    let rule = matrix.and_then(|m| {
        m.rules
            .iter()
            .find(|r| r.from.matches(sv) && r.to.matches(pv))
    });
    match rule {
        Some(r) => {
            let note = r
                .note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default();
            if r.compatible {
                reasons.push(format!(
                    "ok: matrix rule from {} to {} says {sv} -> {pv} is compatible{note}",
                    r.from, r.to
                ));
            } else {
                ok = false;
                reasons.push(format!(
                    "incompatible: matrix rule from {} to {} says {sv} -> {pv} is incompatible{note}",
                    r.from, r.to
                ));
            }
        }
        None if pv.major == sv.major && pv.minor == sv.minor => {
            reasons.push(format!(
                "ok: version {pv} has the same major and minor as store version {sv}"
            ));
        }
        None => {
            ok = false;
            reasons.push(format!(
                "incompatible: version {pv} differs from store version {sv} in major or minor \
                 ({}.{} vs {}.{})",
                pv.major, pv.minor, sv.major, sv.minor
            ));
        }
    }
    if product.os == store.os {
        reasons.push(format!("ok: same OS {}", product.os));
    } else {
        ok = false;
        reasons.push(format!(
            "incompatible: OS {} differs from the store's OS {}",
            product.os, store.os
        ));
    }
    if product.bitness == store.bitness {
        reasons.push(format!("ok: same bitness ({}-bit)", product.bitness));
    } else {
        ok = false;
        reasons.push(format!(
            "incompatible: {}-bit differs from the store's {}-bit",
            product.bitness, store.bitness
        ));
    }
    Verdict {
        compatible: ok,
        reasons,
        product: product.clone(),
        store: store.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str, os: &str, b: u8) -> Product {
        Product {
            version: semver::Version::parse(v).unwrap(),
            os: os.into(),
            bitness: b,
        }
    }

    #[test]
    fn default_rule_table() {
        let cases = [
            ("1.0.0", "1.0.5", true),
            ("1.0.0", "1.1.0", false),
            ("1.0.0", "2.0.0", false),
            ("9.0.3", "9.0.3-rc.1", true),
        ];
        for (store, prod, want) in cases {
            let v = check(&p(prod, "linux-6", 64), &p(store, "linux-6", 64), None);
            assert_eq!(v.compatible, want, "{store} -> {prod}: {:?}", v.reasons);
            assert_eq!(v.reasons.len(), 3);
        }
    }

    #[test]
    fn os_and_bitness_each_give_a_reason() {
        let v = check(&p("1.0.1", "aix-7", 32), &p("1.0.0", "linux-6", 64), None);
        assert!(!v.compatible);
        let bad: Vec<_> = v
            .reasons
            .iter()
            .filter(|r| r.starts_with("incompatible"))
            .collect();
        assert_eq!(bad.len(), 2, "{:?}", v.reasons);
    }

    #[test]
    fn matrix_first_match_wins_and_falls_back() {
        let m: Matrix = serde_json::from_str(
            r#"[{"from": ">=1.0.0, <1.1.0", "to": "~1.1", "compatible": true, "note": "hotfix"},
                {"from": "*", "to": "~1.1", "compatible": false},
                {"from": "^1", "to": "^1", "compatible": false}]"#,
        )
        .unwrap();
        assert!(check(&p("1.1.2", "l", 64), &p("1.0.0", "l", 64), Some(&m)).compatible);
        assert!(!check(&p("1.1.2", "l", 64), &p("1.2.0", "l", 64), Some(&m)).compatible);
        // Same major/minor would be compatible by default, but the third rule says no.
        assert!(!check(&p("1.0.1", "l", 64), &p("1.0.0", "l", 64), Some(&m)).compatible);
        // No rule matches: default rule.
        assert!(check(&p("3.0.1", "l", 64), &p("3.0.0", "l", 64), Some(&m)).compatible);
    }

    #[test]
    fn matrix_cannot_override_os() {
        let m: Matrix =
            serde_json::from_str(r#"[{"from": "*", "to": "*", "compatible": true}]"#).unwrap();
        assert!(!check(&p("2.0.0", "a", 64), &p("1.0.0", "b", 64), Some(&m)).compatible);
    }
}
