//! No password is ever printed: a generated set of malformed and well-formed PSOR
//! addresses carrying a password, given to `pacup` (`--psor`, `PACUP_PSOR`) and to
//! `caspac` (`-s`), and every byte of their stdout and stderr searched for it.

use crate::support::{caspac, pacup, Output, RedisServer, Rng};

/// The password every generated address carries (letters no message uses otherwise).
const PW: &str = "Zq7Secret";

/// Addresses with [`PW`] in their userinfo or in a `password=` parameter, around every
/// mistake the parser refuses (no scheme, one slash, no port, an unknown scheme, ...),
/// and a few it accepts (pointing at a live server that refuses the password, or at
/// nothing).
fn addresses(seed: u64, live: &str, n: usize) -> Vec<String> {
    let mut g = Rng::new(seed);
    let schemes = [
        "redis",
        "rediss",
        "redis+sentinel",
        "unix",
        "http",
        "redis+cluster",
        "",
    ];
    let seps = ["://", "//", ":/", ":", "/", "", ":///"];
    let users = ["", "user", "default", "u:v"];
    // Not beginning with `/`: `redis:` + `/pw@h` would be a well-formed URL whose user
    // name (not password) is `pw`, shown as such.
    let pw_before = ["", "?", "#", "@", "%40", ":", "!*"];
    let pw_after = ["", "/", "?", "#", "@", "%40", ":", "!*"];
    let hosts = [
        live,
        "127.0.0.1:1",
        "127.0.0.1",
        "127.0.0.1:x",
        "a:1,b:2/m",
        "/tmp/no.sock",
        "",
        "[::1",
    ];
    let tails = ["", "/0", "/", "?db=0", "/m/x"];
    (0..n)
        .map(|_| {
            let (s, sep, u) = (g.pick(&schemes), g.pick(&seps), g.pick(&users));
            let pw = format!("{}{PW}{}", g.pick(&pw_before), g.pick(&pw_after));
            let (h, t) = (g.pick(&hosts), g.pick(&tails));
            if g.pick(&["userinfo", "userinfo", "query"]) == "query" {
                format!("{s}{sep}{h}{t}?db=0&password={}", pw.replace('&', ""))
            } else {
                format!("{s}{sep}{u}:{pw}@{h}{t}")
            }
        })
        .collect()
}

#[track_caller]
fn never_printed(out: &Output, what: &str) {
    assert!(
        !out.stdout.contains(PW) && !out.stderr.contains(PW),
        "{what}: the password was printed\n{out}"
    );
}

#[test]
fn no_output_of_either_binary_contains_a_password_of_any_address() {
    let live = RedisServer::builder()
        .with_acl_user("user", "right-password")
        .start();
    let live_addr = format!("127.0.0.1:{}", live.port());
    let seed = crate::support::seed("redaction");
    let mut urls = addresses(seed, &live_addr, 40);
    urls.extend([
        format!("redis//user:{PW}@127.0.0.1:1"),
        format!("redis://user:{PW}@{live_addr}"),
        format!("redis:user:{PW}@127.0.0.1:1"),
        format!("user:{PW}@127.0.0.1:1"),
    ]);
    for url in &urls {
        let out = pacup()
            .args(["--psor", url, "pac", "status", "MyPAC"])
            .run();
        assert_ne!(out.code, 0, "{url} was accepted\n{out}");
        never_printed(&out, &format!("pacup --psor {url}"));
        let out = pacup()
            .env("PACUP_PSOR", url)
            .args(["pac", "status", "MyPAC", "--json"])
            .run();
        never_printed(&out, &format!("PACUP_PSOR={url} pacup"));
        // caspac's `-s<type>,<host:port>` with the credentials in the address, or as the
        // whole option.
        let addr = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        for s in [format!("-sredis,{addr}"), format!("-s{url}")] {
            let out = caspac().args(["-aInitPac=MyPAC", &s]).run();
            assert_ne!(out.code, 0, "caspac {s} succeeded\n{out}");
            never_printed(&out, &format!("caspac {s}"));
        }
    }
}
