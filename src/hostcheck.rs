//! Host checks (plan field `host_checks`): free disk space on the paths an upgrade needs
//! and a writable temp directory, since a peer state transfer fails on a full or
//! unwritable temp dir. A host agent measures them itself ([`measure`]) and publishes
//! them in its host record (field `checks`); the coordinator judges them against the plan
//! at preflight and before each wave ([`problems`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a host agent measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// Free bytes (for an unprivileged user) on each measured path; a path that cannot be
    /// measured (missing, unreadable) is left out.
    pub free: BTreeMap<String, u64>,
    /// The agent's temp directory.
    pub tmp_dir: String,
    /// Whether a file could be created (and removed) there.
    pub tmp_writable: bool,
}

/// Free bytes available to an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs(3) fills it only on success, checked before it is read.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether a file can be created and removed in `dir`.
fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".pacup-check-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Measures `paths` and the temp directory.
pub fn measure(paths: &[PathBuf]) -> Measured {
    let tmp = std::env::temp_dir();
    Measured {
        free: paths
            .iter()
            .filter_map(|p| Some((p.display().to_string(), free_bytes(p)?)))
            .collect(),
        tmp_writable: writable(&tmp),
        tmp_dir: tmp.display().to_string(),
    }
}

/// `1.5 GiB`, `20 MiB`, `512 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses `20GiB`, `500MiB`, `10GB`, `4096` (bytes) into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

/// Why `host`, as its agent measured it (`None`: no measurement published), fails the
/// plan's checks: every path at least `min_free` free, a writable temp directory. Each
/// problem names the host, the path and the numbers.
pub fn problems(
    host: &str,
    measured: Option<&Measured>,
    paths: &[PathBuf],
    min_free: u64,
) -> Vec<String> {
    let Some(m) = measured else {
        return vec![format!(
            "host {host}: its agent publishes no host checks (an agent of an earlier \
             version?); start it with --check-path for {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )];
    };
    let mut out = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        match m.free.get(&name) {
            None => out.push(format!(
                "host {host}: {name} is not measured by its agent (missing there, or the \
                 agent runs without --check-path {name})"
            )),
            Some(&free) if free < min_free => out.push(format!(
                "host {host}: {name} has {} free, {} needed (host_checks.min_free)",
                human(free),
                human(min_free)
            )),
            Some(_) => {}
        }
    }
    if !m.tmp_writable {
        out.push(format!(
            "host {host}: temp directory {} is not writable",
            m.tmp_dir
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("20GiB"), Some(20 << 30));
        assert_eq!(parse_size("500 MiB"), Some(500 << 20));
        assert_eq!(parse_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5 parsecs"), None);
        assert_eq!(human(512), "512 B");
        assert_eq!(human(20 << 30), "20.0 GiB");
    }

    #[test]
    fn measures_this_host_and_judges_it() {
        let tmp = std::env::temp_dir();
        let m = measure(&[tmp.clone(), PathBuf::from("/no/such/path/here")]);
        assert!(m.tmp_writable);
        let t = tmp.display().to_string();
        assert!(m.free.contains_key(&t), "{m:?}");
        assert!(!m.free.contains_key("/no/such/path/here"));
        assert!(problems("h1", Some(&m), std::slice::from_ref(&tmp), 1).is_empty());
        let p = problems("h1", Some(&m), std::slice::from_ref(&tmp), u64::MAX);
        assert!(
            p[0].starts_with(&format!("host h1: {t} has ")) && p[0].contains("needed"),
            "{p:?}"
        );
        let p = problems("h1", Some(&m), &[PathBuf::from("/no/such/path/here")], 1);
        assert!(p[0].contains("/no/such/path/here is not measured"), "{p:?}");
        let bad = Measured {
            tmp_writable: false,
            tmp_dir: "/ro".into(),
            ..m
        };
        let p = problems("h2", Some(&bad), &[], 1);
        assert_eq!(p, ["host h2: temp directory /ro is not writable"]);
        assert!(problems("h3", None, &[tmp], 1)[0].contains("publishes no host checks"));
    }
}
