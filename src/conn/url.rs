//! PSOR URLs: the accepted forms, their validation (without connecting) and the
//! redaction every message uses, so a password never reaches output.

use crate::error::{Error, Result};
use redis::IntoConnectionInfo;

/// A parsed PSOR address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PsorTarget {
    /// One Redis server (TCP, TLS or unix socket).
    Direct {
        /// The URL as given.
        url: String,
        /// Whether the scheme asks for TLS.
        tls: bool,
    },
    /// A master found through Redis Sentinel.
    Sentinel {
        /// `host:port` of each sentinel.
        sentinels: Vec<(String, u16)>,
        /// The monitored master's name.
        master: String,
        /// Username from the URL, if any.
        username: Option<String>,
        /// Password from the URL, if any.
        password: Option<String>,
        /// TLS to sentinels and master.
        tls: bool,
    },
    /// A Redis Cluster, reached through any of its nodes (the client learns the rest).
    Cluster {
        /// `host:port` of each seed node.
        nodes: Vec<(String, u16)>,
        /// Username from the URL, if any.
        username: Option<String>,
        /// Password from the URL, if any.
        password: Option<String>,
        /// TLS to every node.
        tls: bool,
    },
}

pub(super) fn bad_url(url: &str, why: &str) -> Error {
    Error::invalid(
        "--psor",
        redact_url(url),
        format!(
            "{why}; accepted: redis://[user:password@]host:port, rediss://host:port (TLS), \
             redis+sentinel://h1:p1,h2:p2/<master>, redis+cluster://h1:p1,h2:p2, unix:///path"
        ),
    )
}

/// Removes a password from a URL for display: the userinfo's password (whatever the
/// scheme separator looks like, so a mistyped `redis//u:p@h` or `redis:/u:p@h` is
/// redacted too) and `pass=`/`password=` parameters (which `unix://` URLs use), wherever
/// they appear. Anything that could be a password is hidden: a malformed URL may show
/// less than it could, never more.
pub fn redact_url(url: &str) -> String {
    let url = redact_params(url);
    // The userinfo ends at the last `@` (a password may itself contain `@`, `/` or `?`).
    let Some(at) = url.rfind('@') else {
        return url;
    };
    let (prefix, host) = url.split_at(at);
    // The scheme (possibly empty) and the run of `:` and `/` after it, however mistyped.
    let scheme = prefix
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(prefix.len());
    let sep = prefix[scheme..]
        .find(|c: char| c != ':' && c != '/')
        .map_or(prefix.len(), |i| scheme + i);
    let (head, cred) = prefix.split_at(sep);
    let run = &head[scheme..];
    // The user name is shown only after a `//`-like separator (`redis://user:pw@h`).
    // After anything else (`user:pw@h` has no scheme, `redis:u:pw@h` may have none, and
    // `redis:/:pw@h` swallowed the user's `:`) all of it may be the password.
    let clean = ["://", ":///", "//", ":/", "/"].contains(&run);
    let shown = match cred.split_once(':') {
        Some((user, _)) if clean => format!("{user}:***"),
        None if clean => cred.to_string(),
        _ => "***".to_string(),
    };
    format!("{head}{shown}{host}")
}

/// Replaces the value of every `pass=`/`password=` parameter (after `?` or `&`) by `***`.
fn redact_params(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find(['?', '&']) {
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        let end = rest.find('&').unwrap_or(rest.len());
        match rest[..end].split_once('=') {
            Some((k, _))
                if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
            {
                out.push_str(k);
                out.push_str("=***");
                rest = &rest[end..];
            }
            _ => {}
        }
    }
    out.push_str(rest);
    out
}

impl PsorTarget {
    /// Parses and validates a PSOR URL without connecting.
    pub fn parse(url: &str) -> Result<Self> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad_url(url, "no scheme"));
        };
        match scheme {
            "redis" | "rediss" | "unix" | "redis+unix" => {
                url.into_connection_info()
                    .map_err(|e| bad_url(url, &e.to_string()))?;
                if rest.is_empty() {
                    return Err(bad_url(url, "no host"));
                }
                Ok(PsorTarget::Direct {
                    url: url.to_string(),
                    tls: scheme == "rediss",
                })
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let (cred, hosts_master) = match rest.rsplit_once('@') {
                    Some((c, h)) => (Some(c), h),
                    None => (None, rest),
                };
                let Some((hosts, master)) = hosts_master.split_once('/') else {
                    return Err(bad_url(url, "no /<master> name after the sentinel list"));
                };
                let master = master.trim_end_matches('/');
                if master.is_empty() || master.contains('/') {
                    return Err(bad_url(url, "no /<master> name after the sentinel list"));
                }
                let mut sentinels = Vec::new();
                for hp in hosts.split(',') {
                    // The message shows the (redacted) URL, never a fragment of it: a
                    // fragment of a mistyped URL may be part of a password.
                    let (h, p) = hp
                        .rsplit_once(':')
                        .ok_or_else(|| bad_url(url, "a sentinel is not host:port"))?;
                    let port: u16 = p
                        .parse()
                        .map_err(|_| bad_url(url, "a sentinel port is not a number"))?;
                    if h.is_empty() {
                        return Err(bad_url(url, "empty sentinel host"));
                    }
                    sentinels.push((h.to_string(), port));
                }
                let (username, password) = match cred {
                    None => (None, None),
                    Some(c) => match c.split_once(':') {
                        Some((u, p)) => {
                            ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string()))
                        }
                        None => (Some(c.to_string()), None),
                    },
                };
                Ok(PsorTarget::Sentinel {
                    sentinels,
                    master: master.to_string(),
                    username,
                    password,
                    tls: scheme == "rediss+sentinel",
                })
            }
            "redis+cluster" | "rediss+cluster" => {
                let (cred, hosts) = match rest.rsplit_once('@') {
                    Some((c, h)) => (Some(c), h),
                    None => (None, rest),
                };
                // A cluster has one database: a path (`/1`) would be silently ignored.
                let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
                if hosts.contains('/') || hosts.contains('?') {
                    return Err(bad_url(
                        url,
                        "a cluster URL is only the node list (a cluster has no database number)",
                    ));
                }
                let nodes = host_ports(url, hosts, "cluster node")?;
                let (username, password) = credentials(cred);
                Ok(PsorTarget::Cluster {
                    nodes,
                    username,
                    password,
                    tls: scheme == "rediss+cluster",
                })
            }
            _ => {
                // Only what can be a scheme is echoed: the rest may be credentials.
                let end = scheme
                    .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
                    .unwrap_or(scheme.len());
                Err(bad_url(
                    url,
                    &format!("unknown scheme {:?}", &scheme[..end]),
                ))
            }
        }
    }
}

/// `h1:p1,h2:p2,...` as (host, port) pairs; `what` names an entry in messages.
fn host_ports(url: &str, hosts: &str, what: &str) -> Result<Vec<(String, u16)>> {
    let mut out = Vec::new();
    for hp in hosts.split(',') {
        let (h, p) = hp
            .rsplit_once(':')
            .ok_or_else(|| bad_url(url, &format!("{what} {hp:?} is not host:port")))?;
        let port: u16 = p
            .parse()
            .map_err(|_| bad_url(url, &format!("{what} port {p:?} is not a number")))?;
        if h.is_empty() {
            return Err(bad_url(url, &format!("empty {what} host")));
        }
        out.push((h.to_string(), port));
    }
    Ok(out)
}

/// `user[:password]` (either may be empty) as its parts.
fn credentials(cred: Option<&str>) -> (Option<String>, Option<String>) {
    match cred {
        None => (None, None),
        Some(c) => match c.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
            None => (Some(c.to_string()), None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert!(matches!(
            PsorTarget::parse("redis://127.0.0.1:6379").unwrap(),
            PsorTarget::Direct { tls: false, .. }
        ));
        assert!(matches!(
            PsorTarget::parse("rediss://u:p@host:6380").unwrap(),
            PsorTarget::Direct { tls: true, .. }
        ));
        let s = PsorTarget::parse("redis+sentinel://a:1,b:2/mymaster").unwrap();
        assert_eq!(
            s,
            PsorTarget::Sentinel {
                sentinels: vec![("a".into(), 1), ("b".into(), 2)],
                master: "mymaster".into(),
                username: None,
                password: None,
                tls: false
            }
        );
    }

    #[test]
    fn parses_cluster_urls() {
        assert_eq!(
            PsorTarget::parse("redis+cluster://a:1,b:2").unwrap(),
            PsorTarget::Cluster {
                nodes: vec![("a".into(), 1), ("b".into(), 2)],
                username: None,
                password: None,
                tls: false
            }
        );
        assert_eq!(
            PsorTarget::parse("rediss+cluster://u:pw@a:1/").unwrap(),
            PsorTarget::Cluster {
                nodes: vec![("a".into(), 1)],
                username: Some("u".into()),
                password: Some("pw".into()),
                tls: true
            }
        );
        for bad in [
            "redis+cluster://",
            "redis+cluster://a",
            "redis+cluster://a:1,b",
            "redis+cluster://a:1,:2",
            "redis+cluster://a:x",
            "redis+cluster://a:1/0",
            "redis+cluster://u:secret@a:1,b:99999",
        ] {
            let e = PsorTarget::parse(bad).unwrap_err();
            assert_eq!(e.exit_code().code(), 2, "{bad}: {e}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
    }

    #[test]
    fn refuses_bad_urls_with_exit_2() {
        for bad in [
            "http://x:1",
            "127.0.0.1:6379",
            "redis+sentinel://a:1",
            "redis+sentinel://a/m",
            "redis+sentinel://a:x/m",
        ] {
            let e = PsorTarget::parse(bad).unwrap_err();
            assert_eq!(e.exit_code().code(), 2, "{bad}: {e}");
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://u:secret@h:1"), "redis://u:***@h:1");
        assert_eq!(redact_url("redis://:secret@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(
            redact_url("unix:///tmp/r.sock?user=u&pass=secret&db=1"),
            "unix:///tmp/r.sock?user=u&pass=***&db=1"
        );
        assert!(!redact_url("redis+unix:///s?password=secret").contains("secret"));
        let e = PsorTarget::parse("http://u:secret@h:1").unwrap_err();
        assert!(!e.to_string().contains("secret"));
        for bad in [
            "redis//user:secret@127.0.0.1:1",
            "redis:/user:secret@127.0.0.1:1",
            "redis:user:secret@127.0.0.1:1",
            "user:secret@127.0.0.1:1",
            "redis://user:sec?ret@h:1",
            "redis://user:sec@ret@h:1",
            "redis://u:p@h:1?password=secret&db=0",
        ] {
            let r = redact_url(bad);
            assert!(!r.contains("secret") && !r.contains("ret@"), "{bad} -> {r}");
        }
        assert_eq!(
            redact_url("redis//user:secret@127.0.0.1:1"),
            "redis//user:***@127.0.0.1:1"
        );
    }

    proptest::proptest! {
        /// Whatever surrounds it, a password in a URL's userinfo or in a `pass=` /
        /// `password=` parameter never survives redaction, nor the parse error's message.
        #[test]
        fn no_password_survives(
            scheme in "(redis|rediss|unix|redis\\+sentinel|http|)",
            sep in "(://|//|:/|:|/|)",
            user in "[a-z]{0,5}",
            // (Not beginning with `/`: `redis:` + `:` + `//pw@h` is `redis:://pw@h`,
            // fine, but `redis` + `:` + `//pw@h` is a well-formed URL whose user is `pw`.)
            pass in "([A-Za-z0-9!*%?#:@][A-Za-z0-9!*%/?#:@]{0,5})?Pw9[A-Za-z0-9!*%/?#:@]{0,6}",
            host in "(127\\.0\\.0\\.1:1|h|a:1,b:2/m|/tmp/s|)",
            in_query in proptest::bool::ANY,
        ) {
            let url = if in_query {
                format!("{scheme}{sep}{host}?db=0&password={}", pass.replace('&', ""))
            } else {
                format!("{scheme}{sep}{user}:{pass}@{host}")
            };
            let r = redact_url(&url);
            proptest::prop_assert!(!r.contains("Pw9"), "{} -> {}", url, r);
            if let Err(e) = PsorTarget::parse(&url) {
                proptest::prop_assert!(!e.to_string().contains("Pw9"), "{}: {}", url, e);
            }
        }
    }
}
