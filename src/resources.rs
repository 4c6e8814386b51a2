//! Region resource definitions (PCT, PPT, FCT, DCT, TST tables) loaded into a store
//! when a region creates it.
//!
//! File format: a JSON object keyed by table, each an object from resource name to its
//! attributes, e.g. `{"PCT": {"TX01": {"program": "ACCT01"}}}`. The default set ships in
//! `fixtures/resources.json` and is compiled in, so a region needs no file to start.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The tables a resource file may hold.
pub const KINDS: [&str; 5] = ["PCT", "PPT", "FCT", "DCT", "TST"];

const DEFAULT: &str = include_str!("../fixtures/resources.json");

/// Validated resource definitions: (table, name, attributes as JSON text).
#[derive(Debug, Clone, Default)]
pub struct Resources(pub Vec<(String, String, String)>);

impl Resources {
    /// The built-in default set.
    pub fn default_set() -> Resources {
        Self::parse(DEFAULT, "built-in fixtures/resources.json")
            .expect("default resources are valid")
    }

    /// Reads and validates a resource file.
    pub fn load(path: &Path) -> Result<Resources> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::BadFile {
            what: "resource definitions".into(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Validates resource definitions given as JSON text.
    pub fn parse(text: &str, origin: &str) -> Result<Resources> {
        let bad = |reason: String| Error::BadFile {
            what: "resource definitions".into(),
            path: origin.into(),
            reason,
        };
        let tables: BTreeMap<String, BTreeMap<String, serde_json::Value>> =
            serde_json::from_str(text).map_err(|e| {
                bad(format!(
                "{e}; expected {{\"PCT\": {{\"<name>\": {{...attributes}}}}, ...}} with tables {}",
                KINDS.join(", ")
            ))
            })?;
        let mut out = Vec::new();
        for (kind, entries) in tables {
            if !KINDS.contains(&kind.as_str()) {
                return Err(bad(format!(
                    "unknown table {kind:?}; accepted: {}",
                    KINDS.join(", ")
                )));
            }
            for (name, attrs) in entries {
                let ok = !name.is_empty()
                    && name.len() <= 8
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "$@#_-".contains(c));
                if !ok {
                    return Err(bad(format!(
                        "{kind} entry {name:?}: names are 1 to 8 letters, digits, $, @, #, _ or -"
                    )));
                }
                if !attrs.is_object() {
                    return Err(bad(format!(
                        "{kind} entry {name}: attributes must be a JSON object"
                    )));
                }
                out.push((kind.clone(), name, attrs.to_string()));
            }
        }
        Ok(Resources(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_has_every_table() {
        let r = Resources::default_set();
        for k in KINDS {
            assert!(r.0.iter().any(|(kind, _, _)| kind == k), "{k}");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        for (text, needle) in [
            ("[]", "expected"),
            (r#"{"XYZ": {}}"#, "unknown table"),
            (r#"{"PCT": {"TOOLONGNAME": {}}}"#, "1 to 8"),
            (r#"{"PCT": {"TX01": 3}}"#, "JSON object"),
        ] {
            let e = Resources::parse(text, "f.json").unwrap_err();
            assert_eq!(e.exit_code().code(), 2);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }
}
