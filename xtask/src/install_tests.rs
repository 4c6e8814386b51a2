use super::*;

const DEBIAN: &str =
    "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
const MINT: &str = "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
const FEDORA: &str = "NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=40\n";
const ROCKY: &str = "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n";
const ALPINE: &str = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\n";
const ARCH: &str = "NAME=\"Arch Linux\"\nID=arch\n";

fn lines(steps: &[Step]) -> Vec<String> {
    steps.iter().map(Step::to_string).collect()
}

fn plan(platform: Platform<'_>, root: bool, sudo: bool, missing: &[Tool]) -> Vec<String> {
    lines(&plan_install(platform, root, sudo, missing).expect("a plan"))
}

#[test]
fn debian_as_root_updates_installs_all_three_packages_and_stops_the_services() {
    let steps = plan_install(Platform::Linux(Some(DEBIAN)), true, true, &Tool::ALL).unwrap();
    assert_eq!(
        lines(&steps),
        [
            "apt-get update",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
             redis-server redis-sentinel redis-tools",
            "service redis-server stop",
            "service redis-sentinel stop",
        ]
    );
    let may_fail: Vec<bool> = steps.iter().map(|s| s.may_fail).collect();
    assert_eq!(may_fail, [false, false, true, true]);
    assert_eq!(
        steps[1].env,
        [("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string())]
    );
    assert_eq!(steps[1].argv[0], "apt-get");
}

#[test]
fn debian_without_root_uses_sudo_with_the_environment_on_its_command_line() {
    let steps = plan_install(Platform::Linux(Some(DEBIAN)), false, true, &Tool::ALL).unwrap();
    assert_eq!(
        lines(&steps),
        [
            "sudo apt-get update",
            "sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
             redis-server redis-sentinel redis-tools",
            "sudo service redis-server stop",
            "sudo service redis-sentinel stop",
        ]
    );
    assert!(steps
        .iter()
        .all(|s| s.env.is_empty() && s.argv[0] == "sudo"));
}

#[test]
fn only_the_missing_packages_are_installed_and_only_their_services_stopped() {
    assert_eq!(
        plan(Platform::Linux(Some(DEBIAN)), true, false, &[Tool::Cli]),
        [
            "apt-get update",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-tools",
        ]
    );
    assert_eq!(
        plan(
            Platform::Linux(Some(DEBIAN)),
            true,
            false,
            &[Tool::Sentinel]
        ),
        [
            "apt-get update",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
             redis-sentinel",
            "service redis-sentinel stop",
        ]
    );
}

#[test]
fn debian_derivatives_are_recognised_by_id_like() {
    assert_eq!(
        plan(Platform::Linux(Some(MINT)), true, false, &[Tool::Server])[1],
        "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server"
    );
}

#[test]
fn fedora_and_rhel_likes_use_dnf_with_one_redis_package() {
    assert_eq!(
        plan(Platform::Linux(Some(FEDORA)), true, false, &Tool::ALL),
        ["dnf install -y redis"]
    );
    assert_eq!(
        plan(Platform::Linux(Some(ROCKY)), false, true, &[Tool::Sentinel]),
        ["sudo dnf install -y redis"]
    );
}

#[test]
fn alpine_uses_apk_without_a_separate_update() {
    assert_eq!(
        plan(Platform::Linux(Some(ALPINE)), true, false, &Tool::ALL),
        ["apk add --no-cache redis"]
    );
}

#[test]
fn macos_uses_brew_and_never_sudo() {
    let platform = Platform::new("macos", None);
    assert_eq!(platform, Platform::MacOs);
    assert_eq!(
        plan(platform, false, true, &Tool::ALL),
        ["brew install redis"]
    );
    assert_eq!(
        plan(platform, false, false, &Tool::ALL),
        ["brew install redis"]
    );
}

#[test]
fn not_root_and_no_sudo_names_the_packages_and_the_root_commands() {
    let err = plan_install(Platform::Linux(Some(DEBIAN)), false, false, &Tool::ALL).unwrap_err();
    assert_eq!(
        err.to_string(),
        "redis-server, redis-sentinel and redis-cli are not on PATH; installing redis-server, \
         redis-sentinel and redis-tools needs root and there is no sudo here: as root run \
         `apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
         --no-install-recommends redis-server redis-sentinel redis-tools`, then run this again"
    );
    let err = plan_install(Platform::Linux(Some(FEDORA)), false, false, &[Tool::Cli])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("redis-cli is not on PATH;"), "{err}");
    assert!(err.contains("`dnf install -y redis`"), "{err}");
}

#[test]
fn unknown_systems_get_one_message_with_each_known_command() {
    for (platform, named) in [
        (Platform::Linux(Some(ARCH)), "Linux (os-release ID=arch)"),
        (Platform::Linux(None), "Linux (no /etc/os-release)"),
        (Platform::new("freebsd", None), "freebsd"),
    ] {
        let err = plan_install(platform, true, false, &[Tool::Server])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("redis-server is not on PATH"), "{err}");
        assert!(err.contains(named), "{err}");
        for cmd in [
            "apt-get install redis-server redis-sentinel redis-tools",
            "dnf install redis",
            "apk add redis",
            "brew install redis",
        ] {
            assert!(err.contains(cmd), "{err}");
        }
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn os_release_values_are_unquoted_and_keys_matched_exactly() {
    assert_eq!(os_ids(ROCKY), ["rocky", "rhel", "centos", "fedora"]);
    // VERSION_ID and ID_LIKE start with "ID"-ish text but are other keys.
    assert_eq!(os_ids("VERSION_ID=1\nID='Ubuntu'\n"), ["ubuntu"]);
    assert!(os_ids("NAME=x\n").is_empty());
}

#[test]
fn shell_words_are_quoted_only_when_needed() {
    assert_eq!(shell_word("redis-server"), "redis-server");
    assert_eq!(shell_word("a b"), "'a b'");
    assert_eq!(shell_word("it's"), r"'it'\''s'");
    assert_eq!(shell_word(""), "''");
}

#[test]
fn missing_tools_looks_for_executables_in_each_path_directory() {
    use std::os::unix::fs::PermissionsExt;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let exe = |dir: &Path, name: &str, mode: u32| {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    exe(a.path(), "redis-server", 0o755);
    exe(b.path(), "redis-cli", 0o755);
    // Present but not executable: the tests could not start it either.
    exe(b.path(), "redis-sentinel", 0o644);
    let path = std::env::join_paths([a.path(), b.path()]).unwrap();
    assert_eq!(missing_tools(Some(&path), &Tool::ALL), [Tool::Sentinel]);
    assert_eq!(missing_tools(None, &Tool::ALL), Tool::ALL);
    assert!(on_path(Some(&path), "redis-cli"));
    assert!(!on_path(Some(&path), "sudo"));
}

#[test]
fn names_are_joined_as_a_sentence() {
    assert_eq!(join_names(["a"].into_iter()), "a");
    assert_eq!(join_names(["a", "b"].into_iter()), "a and b");
    assert_eq!(join_names(["a", "b", "c"].into_iter()), "a, b and c");
}

#[test]
fn the_tests_browser_is_debians_chromium_and_cannot_come_from_homebrew() {
    let steps = plan_install(Platform::Linux(Some(DEBIAN)), true, false, &[Tool::Browser]).unwrap();
    assert_eq!(
        steps[1].argv,
        [
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "chromium"
        ]
    );
    // No redis service to stop when only the browser was installed.
    assert_eq!(steps.len(), 2);
    let err = plan_install(Platform::MacOs, false, true, &[Tool::Browser]).unwrap_err();
    assert!(err.0.contains("PACUP_SKIP_BROWSER_TESTS=1"), "{err}");
}
