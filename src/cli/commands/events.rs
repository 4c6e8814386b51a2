//! `pacup events P [--follow]`: the PAC's audit events, for a person or as JSON.

use super::print_json;
use crate::cli::output::{self, outln};
use crate::cli::GlobalArgs;
use crate::error::ExitCode;
use crate::names::PacName;
use crate::psor;
use serde_json::json;
use std::time::Duration;

/// Renders a stored event as the documented JSON object (numbers as numbers, empty host and
/// region as null; admin events carry `by`).
fn event_json(id: &str, fields: &[(String, String)]) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    for (k, v) in fields {
        let val = match k.as_str() {
            "ts_ms" => {
                o.insert("ts".into(), json!(psor::rfc3339(v.parse().unwrap_or(0))));
                continue;
            }
            "seq" | "step" | "elapsed_ms" => json!(v.parse::<u64>().unwrap_or(0)),
            "host" | "region" if v.is_empty() => serde_json::Value::Null,
            _ => json!(v),
        };
        o.insert(k.clone(), val);
    }
    o.insert("id".into(), json!(id));
    serde_json::Value::Object(o)
}

pub(super) async fn events(g: &GlobalArgs, pac: PacName, follow: bool) -> anyhow::Result<ExitCode> {
    let p = super::connect_pac(g, pac.clone()).await?;
    p.require().await?;
    let home = p.holding(&psor::keys::EVENTS);
    let mut conn = home.dedicated().await?;
    let mut generation = home.generation();
    let mut after = "0".to_string();
    let mut all = Vec::new();
    loop {
        // A follow blocks a second at a time on its own connection: reopen it on the new
        // master when the PSOR's master moved.
        if home.generation() != generation {
            generation = home.generation();
            conn = home.dedicated().await?;
        }
        let block = if follow {
            Some(Duration::from_secs(1))
        } else {
            None
        };
        let batch = p.read_events(&mut conn, &after, 500, block).await?;
        if batch.is_empty() && !follow || output::stdout_closed() {
            break;
        }
        for (id, fields) in batch {
            let v = event_json(&id, &fields);
            if follow && g.json {
                print_json(&v);
            } else if follow {
                outln!("{}", human_event(&v));
            } else {
                all.push(v);
            }
            after = id;
        }
    }
    if g.json {
        print_json(&json!({"pac": pac, "events": all}));
    } else {
        for v in &all {
            outln!("{}", human_event(v));
        }
    }
    Ok(ExitCode::Ok)
}

fn human_event(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut line = format!("{} {} {}", s("ts"), s("action"), s("status"));
    if let Some(n) = v["step"].as_u64() {
        line = format!("{} step {n} {} {}", s("ts"), s("action"), s("status"));
    }
    for k in ["region", "host"] {
        if let Some(x) = v[k].as_str() {
            line.push_str(&format!(" {k}={x}"));
        }
    }
    if !s("detail").is_empty() {
        line.push_str(&format!(": {}", s("detail")));
    }
    if !s("by").is_empty() {
        line.push_str(&format!(" [{}]", s("by")));
    }
    line
}
