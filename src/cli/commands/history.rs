//! `pacup rollout history`: finished rollouts for the person reviewing them afterwards.
//!
//! The records are the JSON summaries the coordinator writes when a rollout ends. Records
//! written before a field existed lack it: the JSON says `null`, the table `-`.

use super::print_json;
use crate::cli::GlobalArgs;
use crate::error::ExitCode;
use crate::names::PacName;
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde_json::{json, Value};

/// The keys of one `--json` history entry, in order (docs/rollout.md, "History").
pub(crate) const ENTRY_KEYS: [&str; 13] = [
    "id",
    "from_version",
    "target",
    "process",
    "result",
    "detail",
    "started_at",
    "finished_at",
    "duration_ms",
    "reason",
    "by",
    "plan",
    "amendments",
];

/// A stored record in the documented shape: every key present, `null` where it lacks one.
fn entry(record: &Value) -> Value {
    let mut o = serde_json::Map::new();
    for k in ENTRY_KEYS {
        o.insert(k.into(), record.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(o)
}

/// `1.2s`, `3m05s`, `1h02m`.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

fn table(entries: &[Value]) -> String {
    let text = |v: &Value| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("-")
            .to_string()
    };
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header([
        "ROLLOUT", "FROM", "TO", "STARTED", "DURATION", "RESULT", "BY", "REASON",
    ]);
    for e in entries {
        let result = match (e["result"].as_str(), e["detail"].as_str()) {
            (Some(r), Some(d)) if r != "done" && !d.is_empty() => format!("{r}: {d}"),
            _ => text(&e["result"]),
        };
        t.add_row([
            text(&e["id"]),
            text(&e["from_version"]),
            text(&e["target"]),
            text(&e["started_at"]),
            e["duration_ms"].as_u64().map_or("-".into(), span),
            result,
            text(&e["by"]),
            text(&e["reason"]),
        ]);
    }
    format!("{t}\n")
}

/// Lists the PAC's finished rollouts, newest first.
pub(super) async fn history(g: &GlobalArgs, pac: PacName) -> anyhow::Result<ExitCode> {
    let p = super::connect_pac(g, pac.clone()).await?;
    let entries: Vec<Value> = p
        .rollout_history()
        .await?
        .iter()
        .filter_map(|s| serde_json::from_str::<Value>(s).ok())
        .filter(Value::is_object)
        .map(|r| entry(&r))
        .collect();
    if g.json {
        print_json(&json!({"pac": pac, "rollouts": entries}));
    } else if entries.is_empty() {
        println!("PAC {pac} has no finished rollout");
    } else {
        print!("{}", table(&entries));
    }
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_at_a_glance() {
        assert_eq!(span(1234), "1.2s");
        assert_eq!(span(185_000), "3m05s");
        assert_eq!(span(3_725_000), "1h02m");
    }

    #[test]
    fn an_older_record_shows_dashes_for_what_it_lacks() {
        let old = json!({"id": "P-1", "target": "2.0.0", "result": "done", "by": "operator (pacup 0.1.0)"});
        let e = entry(&old);
        assert_eq!(e.as_object().unwrap().len(), ENTRY_KEYS.len());
        assert!(e["from_version"].is_null() && e["duration_ms"].is_null());
        let t = table(&[e]);
        let row = t.lines().find(|l| l.contains("P-1")).unwrap();
        assert!(row.contains("2.0.0") && row.contains(" - "), "{t}");
    }
}
