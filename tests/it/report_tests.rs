//! `pacup rollout report` end to end (issue 13 item 6): a real rollout under job and
//! client load on a private redis-server, the report written from the PSOR, checked as
//! text and rendered by a real headless Chromium (Debian's `chromium` package).
//!
//! Without Chromium the test fails with one line saying how to install it, unless
//! `PACUP_SKIP_BROWSER_TESTS=1` is set (then only the browser check is skipped).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::rollout_tests::{stdout_events, Env, Load, ALL_REGIONS, PAC};
use crate::support::Cmd;

/// The browser executable, or `None` when the browser check is to be skipped.
fn chromium() -> Option<PathBuf> {
    if std::env::var("PACUP_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
        return None;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None => panic!(
            "chromium is not installed: run `apt-get install -y --no-install-recommends chromium` \
             (or set PACUP_SKIP_BROWSER_TESTS=1 to skip the browser check)"
        ),
    }
}

/// Renders `html` to a PNG with headless Chromium: local file only, no network, no
/// profile outside `dir`.
fn screenshot(chromium: &Path, html: &Path, dir: &Path) -> PathBuf {
    let png = dir.join("report.png");
    let out = Cmd::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--window-size=1280,1700",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .env("HOME", dir)
        .timeout(Duration::from_secs(120))
        .run();
    if !png.is_file() {
        out.fail("chromium wrote no screenshot");
    }
    png
}

/// The screenshot's pixels as RGB triples, with its width and height.
fn pixels(png_path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let mut decoder = png::Decoder::new(std::fs::File::open(png_path).expect("open screenshot"));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let samples = info.color_type.samples();
    assert!(
        samples >= 3,
        "screenshot is not in colour: {:?}",
        info.color_type
    );
    let px = buf[..info.buffer_size()]
        .chunks(samples)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).expect("hex colour");
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn near(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 8)
}

#[test]
fn report_of_a_live_rollout_names_every_region_and_step_and_renders() {
    let browser = chromium();
    let env = Env::start();
    let plan = env.plan("p.json", "two-host-incompatible.json", json!({}));
    let load = Load::start(&env, "6s", true);
    let out = env.run(&plan, &["--reason", "report end-to-end"]);
    out.success();
    load.finish(&env);
    let id = stdout_events(&out.stdout)[0]["rollout"]
        .as_str()
        .expect("rollout id")
        .to_string();

    // The latest rollout, with the machine summary of what was written.
    let path = env.dir.path().join("report.html");
    let w = env
        .pacup()
        .args(["rollout", "report", PAC, "--json", "--out"])
        .arg(&path)
        .run()
        .success()
        .json();
    assert_eq!(w["rollout"], id.as_str(), "{w:#}");
    assert_eq!(w["pac"], PAC, "{w:#}");
    assert_eq!(w["result"], "done", "{w:#}");
    assert_eq!(w["regions"], 3, "{w:#}");
    assert_eq!(w["steps"]["failed"], 0, "{w:#}");
    assert!(w["steps"]["done"].as_u64().unwrap() >= 20, "{w:#}");
    assert!(
        w["jobs_completed"].as_u64().unwrap() > 0,
        "no job series: {w:#}"
    );
    assert!(
        w["client_requests_ok"].as_u64().unwrap() > 0,
        "no client series: {w:#}"
    );
    assert_eq!(w["client_requests_failed"], 0, "{w:#}");
    assert_eq!(
        Path::new(w["path"].as_str().unwrap()),
        path.canonicalize().unwrap()
    );
    let html = std::fs::read_to_string(&path).expect("the report");
    assert_eq!(w["bytes"].as_u64().unwrap() as usize, html.len());

    // Every region has a lane carrying each of its step kinds; the PAC's own steps too.
    for r in ALL_REGIONS {
        for k in [
            "listener_off",
            "drain",
            "stop",
            "apply_update",
            "health_gate",
            "listener_on",
        ] {
            let bar = format!(r#"data-kind="{k}" data-lane="{r}""#);
            assert!(html.contains(&bar), "no {k} bar on {r}'s lane");
        }
        assert!(
            html.contains(&format!(r#"data-kind="start_upgrade" data-lane="{r}""#))
                || html.contains(&format!(r#"data-kind="start_warm" data-lane="{r}""#)),
            "no start bar on {r}'s lane"
        );
    }
    let pac_lane = format!("PAC {PAC}");
    for k in [
        "preflight",
        "check_compat",
        "set_mode_running",
        "set_mode_quiesce",
        "verify",
        "remove_old",
    ] {
        let bar = format!(r#"data-kind="{k}" data-lane="{pac_lane}""#);
        assert!(html.contains(&bar), "no {k} bar on the PAC lane");
    }
    assert!(html.contains(r#"class="mark" data-kind="done""#));
    assert!(
        !html.contains(r#"data-status="failed""#),
        "a step is drawn failed"
    );
    // The stores' modes: the old store running then quiesced, the new one upgrade then running.
    for (v, m) in [
        ("1.0.0", "running"),
        ("1.0.0", "quiesce"),
        ("2.0.0", "upgrade"),
        ("2.0.0", "running"),
    ] {
        let seg = format!(r#"data-store="{v}" data-mode="{m}""#);
        assert!(html.contains(&seg), "no {m} segment for store {v}");
    }
    // Jobs completed per second by both stores (the flip is after wave 1), clients served.
    let labels: BTreeSet<&str> = html
        .match_indices(r#"class="sec" data-label=""#)
        .filter_map(|(i, m)| html[i + m.len()..].split('"').next())
        .collect();
    assert_eq!(
        labels,
        BTreeSet::from(["1.0.0", "2.0.0", "ok"]),
        "per-second series"
    );
    for s in [id.as_str(), "report end-to-end", "1.0.0 → 2.0.0", "done"] {
        assert!(html.contains(s), "the summary lacks {s}");
    }
    let lower = html.to_lowercase();
    for banned in ["<script", "src=", "href=", "@import"] {
        assert!(
            !lower.contains(banned),
            "the page is not self-contained: {banned}"
        );
    }

    // The same rollout by id gives the same picture (but for the time it was made).
    let by_id = env.dir.path().join("by-id.html");
    env.pacup()
        .args(["rollout", "report", PAC, &id, "--out"])
        .arg(&by_id)
        .run()
        .success()
        .stdout_contains(&id);
    let strip = |s: &str| s.split("<footer>").next().unwrap().to_string();
    assert_eq!(
        strip(&std::fs::read_to_string(&by_id).unwrap()),
        strip(&html)
    );

    // Bad input: a malformed id exits 2, an absent one 1; neither writes a file.
    let none = env.dir.path().join("none.html");
    env.pacup()
        .args(["rollout", "report", PAC, "yesterday", "--out"])
        .arg(&none)
        .run()
        .code(2)
        .stderr_contains("invalid rollout id")
        .stderr_contains("MyPAC-<hex digits>");
    env.pacup()
        .args(["rollout", "report", PAC, "MyPAC-ffff", "--out"])
        .arg(&none)
        .run()
        .code(1)
        .stderr_contains("has no rollout MyPAC-ffff")
        .stderr_contains(&id);
    env.pacup()
        .args(["rollout", "report", "NoPAC", "--out"])
        .arg(&none)
        .run()
        .code(1)
        .stderr_contains("NoPAC does not exist");
    assert!(!none.exists(), "a refused report wrote a file");

    // A real browser draws it: not blank, in the step kinds' colours.
    let Some(chromium) = browser else {
        eprintln!("PACUP_SKIP_BROWSER_TESTS=1: the browser check is skipped");
        return;
    };
    let png = screenshot(&chromium, &path, env.dir.path());
    let (width, height, px) = pixels(&png);
    assert!(
        width >= 1200 && height >= 1000,
        "screenshot {width}x{height}"
    );
    let white = hex("#ffffff");
    let inked = px.iter().filter(|p| !near(**p, white)).count();
    assert!(
        inked * 100 >= px.len() * 5,
        "the screenshot is almost blank: {inked} of {} pixels are not white",
        px.len()
    );
    let distinct: BTreeSet<[u8; 3]> = px.iter().copied().collect();
    assert!(
        distinct.len() >= 20,
        "only {} distinct colours",
        distinct.len()
    );
    for (what, c) in [
        ("health gate", "#2e9e44"),
        ("update", "#7b4fc9"),
        ("drain", "#f2c14e"),
        ("upgrade mode", "#1d5fa8"),
    ] {
        let n = px.iter().filter(|p| near(**p, hex(c))).count();
        assert!(
            n >= 50,
            "the {what} colour {c} is (nearly) absent: {n} pixels"
        );
    }
}
