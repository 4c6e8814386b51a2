//! docs/plan.md and the parser must not drift apart: [`FIELDS`] is checked against what
//! serde accepts, and the doc against [`FIELDS`], the driver's template names and
//! placeholders, and the enumerated values. Every `json` block of the doc must parse.

use super::{Plan, FIELDS};
use crate::coordinator::driver::{PLACEHOLDERS, REQUIRED_TEMPLATES, TEMPLATE_NAMES};
use std::collections::BTreeSet;

const DOC: &str = include_str!("../../../docs/plan.md");

/// The backticked names serde lists after "expected" in an unknown-field or
/// unknown-variant error for `text`.
fn serde_expects(text: &str) -> Vec<String> {
    let e = serde_json::from_str::<Plan>(text)
        .expect_err(text)
        .to_string();
    let (_, list) = e
        .split_once("expected ")
        .unwrap_or_else(|| panic!("no list of expected names in: {e}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// The accepted field paths as serde's derive sees them.
fn serde_fields() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (prefix, probe) in [
        ("", r#"{"zzz": 1}"#),
        ("target.", r#"{"target": {"zzz": 1}}"#),
        ("hosts[].", r#"{"hosts": [{"zzz": 1}]}"#),
        ("health.", r#"{"health": {"zzz": 1}}"#),
        ("monitor.", r#"{"monitor": {"zzz": 1}}"#),
        ("backup.", r#"{"backup": {"dir": "/b", "zzz": 1}}"#),
        ("host_checks.", r#"{"host_checks": {"zzz": 1}}"#),
        ("driver.", r#"{"driver": {"kind": "command", "zzz": 1}}"#),
    ] {
        out.extend(
            serde_expects(probe)
                .into_iter()
                .map(|f| format!("{prefix}{f}")),
        );
    }
    // The enum tag is not in serde's field lists; a driver without it is refused.
    let e = serde_json::from_str::<Plan>(r#"{"driver": {}}"#).unwrap_err();
    assert!(e.to_string().contains("missing field `kind`"), "{e}");
    out.insert("driver.kind".into());
    out
}

/// `### \`name\`` headings of the doc, in order.
fn headings() -> Vec<String> {
    DOC.lines()
        .filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`'))
        .map(String::from)
        .collect()
}

/// The text under the heading of `field`, up to the next heading (a `####` subsection
/// is not the field's own text).
fn section(field: &str) -> String {
    let head = format!("### `{field}`");
    let mut lines = DOC.lines().skip_while(|l| *l != head);
    assert!(lines.next().is_some(), "no heading {head} in docs/plan.md");
    lines
        .take_while(|l| !l.starts_with("## ") && !l.starts_with("### ") && !l.starts_with("#### "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// First cells (backticks removed) of the table rows under `field`, and the rows.
fn table_rows(field: &str) -> Vec<(String, String)> {
    section(field)
        .lines()
        .filter_map(|l| {
            let cell = l.strip_prefix("| `")?.split_once("` |")?.0;
            Some((cell.to_string(), l.to_string()))
        })
        .collect()
}

#[test]
fn fields_const_is_what_serde_accepts() {
    let listed: BTreeSet<String> = FIELDS.iter().map(|f| f.to_string()).collect();
    assert_eq!(listed.len(), FIELDS.len(), "FIELDS has duplicates");
    assert_eq!(listed, serde_fields());
}

#[test]
fn doc_documents_exactly_the_accepted_fields() {
    let h = headings();
    let documented: BTreeSet<String> = h.iter().cloned().collect();
    assert_eq!(documented.len(), h.len(), "a field is documented twice");
    let accepted: BTreeSet<String> = FIELDS.iter().map(|f| f.to_string()).collect();
    let missing: Vec<_> = accepted.difference(&documented).collect();
    let refused: Vec<_> = documented.difference(&accepted).collect();
    assert!(missing.is_empty(), "docs/plan.md lacks fields {missing:?}");
    assert!(
        refused.is_empty(),
        "docs/plan.md documents fields the parser refuses: {refused:?}"
    );
}

#[test]
fn doc_names_every_value_of_the_enumerated_fields() {
    for (field, probe) in [
        ("strategy", r#"{"strategy": "zzz"}"#),
        ("mode_flip", r#"{"mode_flip": "zzz"}"#),
        ("on_failure", r#"{"on_failure": "zzz"}"#),
        ("driver.kind", r#"{"driver": {"kind": "zzz"}}"#),
    ] {
        let text = section(field);
        for v in serde_expects(probe) {
            assert!(
                text.contains(&format!("`{v}`")),
                "docs/plan.md: {field} does not mention `{v}`"
            );
        }
    }
}

#[test]
fn doc_lists_exactly_the_templates_and_placeholders() {
    let rows = table_rows("driver.templates");
    let (phs, names): (Vec<_>, Vec<_>) = rows.iter().partition(|(c, _)| c.starts_with('{'));
    let names: BTreeSet<&str> = names.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, TEMPLATE_NAMES.into_iter().collect::<BTreeSet<_>>());
    for (name, row) in &rows {
        if TEMPLATE_NAMES.contains(&name.as_str()) {
            let required = REQUIRED_TEMPLATES.contains(&name.as_str());
            let cell = if required { "| yes |" } else { "| no |" };
            assert!(row.contains(cell), "{name} should say {cell}: {row}");
        }
    }
    let phs: BTreeSet<String> = phs.iter().map(|(c, _)| c.clone()).collect();
    let want: BTreeSet<String> = PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
    assert_eq!(phs, want);
}

#[test]
fn every_json_example_in_the_doc_is_a_valid_plan() {
    let mut blocks = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for l in DOC.lines() {
        match (&mut cur, l) {
            (None, "```json") => cur = Some(Vec::new()),
            (Some(b), "```") => {
                blocks.push(b.join("\n"));
                cur = None;
            }
            (Some(b), _) => b.push(l),
            _ => {}
        }
    }
    assert!(blocks.len() >= 5, "expected the doc's example plans");
    for b in &blocks {
        Plan::parse(b).unwrap_or_else(|e| panic!("docs/plan.md example does not parse: {e}\n{b}"));
    }
    // The "Defaults" section: the minimal plan equals the one with every default written.
    let defaults = DOC.split("## Defaults").nth(1).expect("a Defaults section");
    let (minimal, spelled) = (&blocks[1], &blocks[2]);
    assert!(defaults.contains(minimal.as_str()) && defaults.contains(spelled.as_str()));
    assert_eq!(Plan::parse(minimal).unwrap(), Plan::parse(spelled).unwrap());
}
