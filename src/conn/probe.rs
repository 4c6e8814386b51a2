//! What kind of Redis a node is (`INFO server`, `redis_mode`), for `caspac -s` node lists,
//! which do not say whether they are Sentinels or Cluster nodes.

use super::{Psor, PsorOptions};
use crate::error::{Error, Result};

/// A node's `redis_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMode {
    /// One server (or a replica of one).
    Standalone,
    /// A Redis Sentinel.
    Sentinel,
    /// A Redis Cluster node.
    Cluster,
}

impl ServerMode {
    /// From the `redis_mode:` line of `INFO server` (a server too old to have it is
    /// standalone).
    pub fn from_info(info: &str) -> ServerMode {
        match info
            .lines()
            .find_map(|l| l.strip_prefix("redis_mode:"))
            .map(str::trim)
        {
            Some("sentinel") => ServerMode::Sentinel,
            Some("cluster") => ServerMode::Cluster,
            _ => ServerMode::Standalone,
        }
    }
}

/// Asks the nodes `hosts` (`host:port`) in order and answers for the first that replies.
/// A sentinel usually has no password while the servers behind it do, so a node that
/// refuses the password is asked again without it. When none replies, the last node's
/// error is returned (exit 5).
pub async fn server_mode(opts: &PsorOptions, hosts: &[String], tls: bool) -> Result<ServerMode> {
    let scheme = if tls { "rediss" } else { "redis" };
    let mut last = None;
    for h in hosts {
        let mut o = opts.clone();
        o.url = format!("{scheme}://{h}");
        loop {
            match ask(&o).await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    let retry = o.password.is_some()
                        && !matches!(e, Error::Unreachable { .. } | Error::NotRedis { .. });
                    tracing::debug!("asking {h} what it is: {e}");
                    last = Some(e);
                    if !retry {
                        break;
                    }
                    o.password = None;
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::invalid("-s", "", "at least one <host>:<port>")))
}

async fn ask(opts: &PsorOptions) -> Result<ServerMode> {
    let psor = Psor::connect(opts).await?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut psor.conn())
        .await
        .map_err(|e| psor.err(e))?;
    Ok(ServerMode::from_info(&info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\nos:Linux\r\n";
        assert_eq!(ServerMode::from_info(info), ServerMode::Cluster);
        assert_eq!(
            ServerMode::from_info("redis_mode:sentinel\r\n"),
            ServerMode::Sentinel
        );
        assert_eq!(
            ServerMode::from_info("redis_mode:standalone\r\n"),
            ServerMode::Standalone
        );
        assert_eq!(ServerMode::from_info(""), ServerMode::Standalone);
    }
}
