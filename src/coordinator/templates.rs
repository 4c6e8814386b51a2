//! The command driver's templates: their names, which placeholders each may use, the
//! plan-time validation and the rendering (docs/plan.md#drivertemplates).

use crate::error::{Error, Result};
use crate::region::StartType;
use std::collections::BTreeMap;

/// What one template is for, and which placeholders get a value in it.
#[derive(Debug, Clone, Copy)]
pub struct TemplateSpec {
    /// Its name in `driver.templates`.
    pub name: &'static str,
    /// Whether every command-driver plan must have it.
    pub required: bool,
    /// Placeholders it may name besides the ones every template gets ([`COMMON`]).
    pub placeholders: &'static [&'static str],
}

const REGION: &[&str] = &["host", "region"];
const START: &[&str] = &[
    "host",
    "region",
    "version",
    "start_type",
    "start_letter",
    "min_comp_check",
];
const HOST_VERSION: &[&str] = &["host", "version"];
const VERSION: &[&str] = &["version"];
const HOST: &[&str] = &["host", "paths", "min_free"];

const fn spec(
    name: &'static str,
    required: bool,
    placeholders: &'static [&'static str],
) -> TemplateSpec {
    TemplateSpec {
        name,
        required,
        placeholders,
    }
}

/// Every template the command driver knows, in the order docs/plan.md lists them.
pub const TEMPLATES: [TemplateSpec; 13] = [
    spec("listener_off", true, REGION),
    spec("listener_on", true, REGION),
    spec("stop", true, REGION),
    spec("apply_update", true, HOST_VERSION),
    spec("start", true, START),
    spec("region_state", true, REGION),
    spec("check_compat", false, HOST_VERSION),
    spec("set_mode_running", false, VERSION),
    spec("set_mode_quiesce", false, VERSION),
    spec("remove_old", false, VERSION),
    spec("store_state", false, VERSION),
    spec("host_check", false, HOST),
    spec("backup", false, VERSION),
];

/// Placeholders every template gets.
pub const COMMON: [&str; 5] = ["pac", "psor", "psor_host", "psor_port", "psor_user"];

/// Template names the command driver knows.
pub const TEMPLATE_NAMES: [&str; 13] = {
    let mut out = [""; 13];
    let mut i = 0;
    while i < TEMPLATES.len() {
        out[i] = TEMPLATES[i].name;
        i += 1;
    }
    out
};

/// Templates every command-driven plan must have.
pub const REQUIRED_TEMPLATES: [&str; 6] = [
    "listener_off",
    "listener_on",
    "stop",
    "apply_update",
    "start",
    "region_state",
];

/// Every placeholder some template may use.
pub const PLACEHOLDERS: [&str; 13] = [
    "pac",
    "host",
    "region",
    "version",
    "start_type",
    "start_letter",
    "min_comp_check",
    "paths",
    "min_free",
    "psor",
    "psor_host",
    "psor_port",
    "psor_user",
];

/// The spec of template `name`.
pub fn spec_of(name: &str) -> Option<&'static TemplateSpec> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// The placeholders `{...}` a template names, in order (the shell's `${VAR}` skipped);
/// `Err` with the template when a brace is not closed.
fn placeholders_in(tpl: &str) -> std::result::Result<Vec<&str>, ()> {
    let mut out = Vec::new();
    let mut rest = tpl;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        // `${VAR}` is the shell's, not ours.
        if rest[..i].ends_with('$') {
            rest = after.find('}').map(|j| &after[j + 1..]).unwrap_or("");
            continue;
        }
        let j = after.find('}').ok_or(())?;
        out.push(&after[..j]);
        rest = &after[j + 1..];
    }
    Ok(out)
}

/// Checks template names and placeholders (exit 2 on anything unknown, missing or named
/// in a template whose action has no value for it).
pub fn validate_templates(t: &BTreeMap<String, String>) -> Result<()> {
    for name in t.keys() {
        if spec_of(name).is_none() {
            return Err(Error::invalid(
                "plan field driver.templates",
                name,
                format!("one of {}", TEMPLATE_NAMES.join(", ")),
            ));
        }
    }
    for need in REQUIRED_TEMPLATES {
        if !t.contains_key(need) {
            return Err(Error::invalid(
                "plan field driver.templates",
                format!("(missing {need})"),
                format!("templates for at least {}", REQUIRED_TEMPLATES.join(", ")),
            ));
        }
    }
    for (name, tpl) in t {
        let spec = spec_of(name).expect("checked above");
        let field = format!("plan field driver.templates.{name}");
        validate_one(&field, name, tpl, spec.placeholders)?;
    }
    Ok(())
}

/// Checks one template `tpl` (called `name` in messages, reported as `field`) whose
/// action has values for `own` and the [`COMMON`] placeholders.
pub fn validate_one(field: &str, name: &str, tpl: &str, own: &[&str]) -> Result<()> {
    {
        let phs = placeholders_in(tpl)
            .map_err(|()| Error::invalid(field, tpl, "balanced {placeholder} braces"))?;
        for ph in phs {
            if !PLACEHOLDERS.contains(&ph) {
                return Err(Error::invalid(
                    field,
                    format!("{{{ph}}}"),
                    format!(
                        "placeholders {}",
                        PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(" ")
                    ),
                ));
            }
            if !COMMON.contains(&ph) && !own.contains(&ph) {
                let allowed: Vec<String> = own
                    .iter()
                    .chain(COMMON.iter())
                    .map(|p| format!("{{{p}}}"))
                    .collect();
                return Err(Error::invalid(
                    field,
                    format!("{{{ph}}}"),
                    format!(
                        "a placeholder {name} has a value for: {}",
                        allowed.join(" ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Values substituted into templates.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// `{pac}`
    pub pac: String,
    /// `{host}`
    pub host: String,
    /// `{region}`
    pub region: String,
    /// `{version}`
    pub version: String,
    /// `{start_type}` (and `{start_letter}`)
    pub start_type: Option<StartType>,
    /// `{min_comp_check}`: `YES` for the compatible process's starts.
    pub min_comp_check: bool,
    /// `{psor}` (URL without credentials), `{psor_host}`, `{psor_port}`
    pub psor: String,
    /// `{psor_user}`: the ACL user of the `--psor` URL, if any.
    pub psor_user: String,
    /// `{paths}`: `host_checks.paths`, space-separated.
    pub paths: String,
    /// `{min_free}`: `host_checks.min_free` in bytes.
    pub min_free: String,
}

/// Renders a template.
pub fn render(tpl: &str, v: &Vars) -> String {
    let (ph, pp) = psor_host_port(&v.psor);
    tpl.replace("{pac}", &v.pac)
        .replace("{host}", &v.host)
        .replace("{region}", &v.region)
        .replace("{version}", &v.version)
        .replace(
            "{start_type}",
            v.start_type.map(|s| s.as_str()).unwrap_or(""),
        )
        .replace(
            "{start_letter}",
            &v.start_type
                .map(|s| s.letter().to_string())
                .unwrap_or_default(),
        )
        .replace(
            "{min_comp_check}",
            if v.min_comp_check { "YES" } else { "NO" },
        )
        .replace("{psor_host}", &ph)
        .replace("{psor_port}", &pp)
        .replace("{psor_user}", &v.psor_user)
        .replace("{paths}", &v.paths)
        .replace("{min_free}", &v.min_free)
        .replace("{psor}", &v.psor)
}

fn psor_host_port(url: &str) -> (String, String) {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    let first = rest.split([',', '/']).next().unwrap_or("");
    match first.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => (first.to_string(), "6379".to_string()),
    }
}

/// The PSOR's credentials split from its URL: (URL without them, user, password). The
/// URL is what `{psor}` renders; user and password reach children through the
/// environment only, never a command line (process lists, events).
pub fn split_credentials(url: &str) -> (String, String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), String::new(), None);
    };
    let Some((cred, host)) = rest.rsplit_once('@') else {
        return (url.to_string(), String::new(), None);
    };
    let (user, password) = match cred.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (cred.to_string(), None),
    };
    (format!("{scheme}://{host}"), user, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = REQUIRED_TEMPLATES
            .iter()
            .map(|n| (n.to_string(), "true".to_string()))
            .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn renders_placeholders() {
        let v = Vars {
            pac: "MyPAC".into(),
            host: "host1".into(),
            region: "REGION1".into(),
            version: "2.0.0".into(),
            start_type: Some(StartType::Upgrade),
            min_comp_check: false,
            psor: "redis://psor:6380".into(),
            psor_user: "pacup".into(),
            paths: "/var/mf /tmp".into(),
            min_free: "1024".into(),
        };
        assert_eq!(
            render(
                "ssh {host} casstart /r{region} /s:{start_letter} # {start_type} {pac} {version} {min_comp_check}",
                &v
            ),
            "ssh host1 casstart /rREGION1 /s:u # upgrade MyPAC 2.0.0 NO"
        );
        assert_eq!(
            render(
                "caspac -aSetMode=Running -sredis,{psor_host}:{psor_port} -u{psor_user}",
                &v
            ),
            "caspac -aSetMode=Running -sredis,psor:6380 -upacup"
        );
        assert_eq!(
            render("ssh {host} check-host {min_free} {paths}", &v),
            "ssh host1 check-host 1024 /var/mf /tmp"
        );
    }

    #[test]
    fn credentials_leave_the_url() {
        assert_eq!(
            split_credentials("redis://:pw@psor:6380/0"),
            (
                "redis://psor:6380/0".into(),
                String::new(),
                Some("pw".into())
            )
        );
        assert_eq!(
            split_credentials("redis://ops:pw@psor:6380"),
            ("redis://psor:6380".into(), "ops".into(), Some("pw".into()))
        );
        assert_eq!(
            split_credentials("redis://ops@psor"),
            ("redis://psor".into(), "ops".into(), None)
        );
        assert_eq!(
            split_credentials("redis://psor:1"),
            ("redis://psor:1".into(), String::new(), None)
        );
    }

    #[test]
    fn refuses_unknown_placeholders_names_and_missing_templates() {
        assert!(validate_templates(&t(&[])).is_ok());
        let e = validate_templates(&t(&[("stop", "casstop -r{regoin}")])).unwrap_err();
        assert!(e.to_string().contains("{regoin}"), "{e}");
        assert!(validate_templates(&t(&[("stop", "casstop -r{region} -h${HOME}")])).is_ok());
        let e = validate_templates(&t(&[("explode", "x")])).unwrap_err();
        assert!(e.to_string().contains("explode"), "{e}");
        let mut m = t(&[]);
        m.remove("region_state");
        let e = validate_templates(&m).unwrap_err();
        assert!(e.to_string().contains("missing region_state"), "{e}");
        assert_eq!(e.exit_code().code(), 2);
    }

    #[test]
    fn refuses_a_placeholder_the_action_has_no_value_for() {
        let e = validate_templates(&t(&[("stop", "casstop -r{region} {version}")])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("driver.templates.stop") && msg.contains("{version}"),
            "{msg}"
        );
        assert!(
            msg.contains("{region}") && msg.contains("{psor_user}"),
            "{msg}"
        );
        assert_eq!(e.exit_code().code(), 2);
        let e = validate_templates(&t(&[("remove_old", "x {host}")])).unwrap_err();
        assert!(e.to_string().contains("remove_old"), "{e}");
        assert!(validate_templates(&t(&[(
            "start",
            "ES_PAC_MIN_COMP_CHECK={min_comp_check} casstart /r{region} /s:{start_letter}"
        )]))
        .is_ok());
        assert!(validate_templates(&t(&[("check_compat", "ssh {host} caspac {version}")])).is_ok());
    }

    #[test]
    fn every_template_spec_names_known_placeholders() {
        for s in TEMPLATES {
            for p in s.placeholders {
                assert!(PLACEHOLDERS.contains(p), "{} names {p}", s.name);
            }
            assert_eq!(
                s.required,
                REQUIRED_TEMPLATES.contains(&s.name),
                "{}",
                s.name
            );
        }
    }
}
