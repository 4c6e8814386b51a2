//! Human rendering of command results (stdout). With `--json` commands print exactly one
//! JSON document instead (documented in docs/reference.md, "JSON output").

use crate::psor::{PacSummary, Snapshot};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout found the reader gone (`pacup pac list | head -1`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout without ever panicking: `println!` panics when the reader of a pipe
/// has gone, which would turn `| head` into exit 101. A closed stdout is remembered and
/// later output dropped, so a command still finishes its work (a rollout does not stop
/// because its log reader went away) and exits with its own code. Other write errors are
/// reported once on stderr.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if !STDOUT_CLOSED.swap(true, Ordering::Relaxed)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            eprintln!("warning: cannot write to stdout: {e}; further output is dropped");
        }
    }
}

/// Whether stdout's reader has gone; loops that only exist to print (`events --follow`,
/// `rollout status --watch`) stop then.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// `println!` that survives a closed pipe (see [`write_stdout`]).
macro_rules! outln {
    () => { $crate::cli::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that survives a closed pipe (see [`write_stdout`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::write_stdout(format_args!($($arg)*)) };
}

pub(crate) use {out, outln};

fn age(ms: Option<u64>) -> String {
    match ms {
        Some(m) if m < 1000 => format!("{m}ms"),
        Some(m) => format!("{:.1}s", m as f64 / 1000.0),
        None => "-".into(),
    }
}

pub use crate::psor::rfc3339;

/// `pac status` for a person.
pub fn status_text(s: &Snapshot) -> String {
    let mut out = format!("PAC {}", s.pac);
    if !s.exists {
        out.push_str(" does not exist in the PSOR\n");
        return out;
    }
    out.push_str(&format!(
        " (initialised {}, fencing epoch {})\n",
        rfc3339(s.created_at_ms),
        s.epoch
    ));
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header([
        "STORE",
        "MODE",
        "OS",
        "BITS",
        "MEMBERS",
        "LIVE",
        "CREATED BY",
    ]);
    for st in &s.stores {
        t.add_row([
            st.version.clone(),
            st.mode.to_string(),
            st.os.clone(),
            st.bitness.to_string(),
            st.members.join(","),
            st.live_members.len().to_string(),
            st.created_by.clone(),
        ]);
    }
    if s.stores.is_empty() {
        out.push_str("no stores\n");
    } else {
        out.push_str(&format!("{t}\n"));
    }
    if !s.removing.is_empty() {
        out.push_str(&format!(
            "stores still being deleted: {} (re-run `pacup pac remove-old {}`)\n",
            s.removing.join(", "),
            s.pac
        ));
    }
    if !s.regions.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header([
            "REGION",
            "HOST",
            "VERSION",
            "OS",
            "BITS",
            "STORE",
            "STATE",
            "START",
            "LISTENER",
            "HEARTBEAT",
        ]);
        for r in &s.regions {
            t.add_row([
                r.name.clone(),
                r.host.clone(),
                r.product_version.clone(),
                r.os.clone(),
                r.bitness.to_string(),
                if r.store.is_empty() {
                    "-".into()
                } else {
                    r.store.clone()
                },
                r.effective_state().to_string(),
                r.start_type.clone(),
                r.listener.clone(),
                age(r.heartbeat_age_ms),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if !s.hosts.is_empty() {
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header(["HOST", "PRODUCT", "OS", "BITS", "REGIONS", "ALIVE"]);
        for h in &s.hosts {
            t.add_row([
                h.name.clone(),
                h.product_version.clone(),
                h.os.clone(),
                h.bitness.to_string(),
                h.regions.join(","),
                if h.alive { "yes" } else { "no" }.to_string(),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out
}

/// `pac list` for a person.
pub fn list_text(pacs: &[PacSummary]) -> String {
    if pacs.is_empty() {
        return "no PACs in this PSOR\n".into();
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(["PAC", "STORES", "LIVE REGIONS"]);
    for p in pacs {
        t.add_row([
            p.pac.clone(),
            p.stores
                .iter()
                .map(|s| format!("{} ({})", s.version, s.mode))
                .collect::<Vec<_>>()
                .join(", "),
            p.live_regions.to_string(),
        ]);
    }
    format!("{t}\n")
}
