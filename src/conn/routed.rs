//! [`PsorConn`]: the one connection type every command goes through, over one server or
//! a cluster, with the cluster's failover answers retried where the command did not run.

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// The connection every command of a [`super::Psor`] goes through: one server (behind a
/// reconnecting manager, or a dedicated connection for blocking commands) or a cluster
/// (routed by key to the slot's master).
#[derive(Clone)]
pub enum PsorConn {
    /// One server's shared, reconnecting connection.
    Manager(ConnectionManager),
    /// One server's dedicated connection (blocking commands).
    Dedicated(MultiplexedConnection),
    /// A cluster; each command goes to the master of its key's slot.
    Cluster(ClusterConnection),
}

impl PsorConn {
    /// Sends a durability confirmation (`WAIT`, `WAITAOF`) again, after one that came
    /// back short in `write`'s pipeline. On a cluster it must reach the master of the
    /// write's slot (the client would ask every master): the slot of the first PAC key
    /// in `write`, every key of a write being of one PAC.
    pub(crate) async fn confirm_again(
        &mut self,
        wait: &Cmd,
        write: &Pipeline,
    ) -> redis::RedisResult<Value> {
        let PsorConn::Cluster(c) = self else {
            return wait.query_async(self).await;
        };
        let key = write
            .cmd_iter()
            .flat_map(|cmd| cmd.args_iter())
            .find_map(|a| match a {
                redis::Arg::Simple(b) => std::str::from_utf8(b)
                    .ok()
                    .filter(|s| crate::psor::keys::is_pac_key(s)),
                _ => None,
            });
        let Some(key) = key else {
            return wait.query_async(self).await;
        };
        let slot = super::cluster::slot_of(key);
        let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
            slot,
            SlotAddr::Master,
        )));
        let v = c.route_command(wait.clone(), to).await?;
        v.extract_error()
    }
}

impl ConnectionLike for PsorConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            PsorConn::Manager(c) => c.req_packed_command(cmd),
            PsorConn::Dedicated(c) => c.req_packed_command(cmd),
            PsorConn::Cluster(c) => Box::pin(async move {
                let mut backoff = Backoff::default();
                loop {
                    let r = c.req_packed_command(cmd).await;
                    // A server's error answer comes back as a value (the caller's
                    // `query_async` makes it an error), the client's own as an error.
                    let again = match &r {
                        Ok(v) => released(Some(v)),
                        Err(e) => after_failover(e).is_some(),
                    };
                    if !again || !backoff.wait().await {
                        return r;
                    }
                    tracing::debug!("retrying after a cluster failover: {r:?}");
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            PsorConn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            PsorConn::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            PsorConn::Cluster(c) => Box::pin(async move {
                let mut backoff = Backoff::default();
                let mut redirect = None;
                loop {
                    let r = match redirect.take() {
                        Some((host, port)) => {
                            let to = SingleNodeRoutingInfo::ByAddress { host, port };
                            c.route_pipeline(pipeline.clone(), offset, count, to).await
                        }
                        None => c.req_packed_commands(pipeline, offset, count).await,
                    };
                    match r {
                        // Only a transaction is refused whole: of a plain pipeline, the
                        // commands before a refused one may have run.
                        Err(e) if pipeline.is_transaction() => match after_failover(&e) {
                            Some(next) if backoff.wait().await => {
                                tracing::debug!("retrying after a cluster failover: {e}");
                                if let Retry::Redirect(host, port) = next {
                                    redirect = Some((host, port));
                                }
                            }
                            _ => return Err(e),
                        },
                        // A blocking command released alone took nothing.
                        Err(e) if count == 1 && unblocked(&e) && backoff.wait().await => {}
                        Ok(v) if count == 1 && released(v.first()) && backoff.wait().await => {}
                        r => return r,
                    }
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            PsorConn::Manager(c) => c.get_db(),
            PsorConn::Dedicated(c) => c.get_db(),
            PsorConn::Cluster(c) => c.get_db(),
        }
    }
}

/// What to do about an error that a failover of a slot answers with, for a command that
/// therefore did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Retry {
    /// Again, once the cluster settled (the client follows the slot's new master).
    Wait,
    /// Again, on this node: a transaction the old master refused with `MOVED` (the client
    /// does not redirect a transaction by itself).
    Redirect(String, u16),
}

/// Whether `e` is a failover's answer to a command that did not run, so running it again
/// is safe: a blocking command the demoted master released (`UNBLOCKED`: nothing was
/// taken), or a transaction refused whole (`EXECABORT`) because its slot moved or the
/// cluster was settling.
fn after_failover(e: &redis::RedisError) -> Option<Retry> {
    if unblocked(e) {
        return Some(Retry::Wait);
    }
    if e.kind() != redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort) {
        return None;
    }
    let errs = e.clone().into_server_errors()?;
    let mut retry = None;
    for (_, se) in errs.iter() {
        match se.kind() {
            Some(redis::ServerErrorKind::Moved) => {
                let (_, addr) = se.details()?.split_once(' ')?;
                let (h, p) = addr.rsplit_once(':')?;
                retry = Some(Retry::Redirect(h.to_string(), p.parse().ok()?));
            }
            Some(
                redis::ServerErrorKind::TryAgain
                | redis::ServerErrorKind::ClusterDown
                | redis::ServerErrorKind::ReadOnly
                | redis::ServerErrorKind::MasterDown,
            ) => {
                retry.get_or_insert(Retry::Wait);
            }
            _ => return None,
        }
    }
    retry
}

/// Whether `e` is a blocking command released by a master demoted to replica. The code
/// may come bare or wrapped as the one error of a pipeline, depending on the path the
/// cluster client took.
fn unblocked(e: &redis::RedisError) -> bool {
    e.code() == Some("UNBLOCKED")
        || e.clone()
            .into_server_errors()
            .is_some_and(|errs| errs.iter().any(|(_, se)| se.code() == "UNBLOCKED"))
}

/// Whether a reply is a blocking command's release by a master demoted to replica.
fn released(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::ServerError(se)) if se.code() == "UNBLOCKED")
}

/// Bounded retries while a failover settles (a manual failover takes well under a
/// second; an automatic one about the node timeout): 50 ms doubling to 400 ms, about 7 s
/// in all.
#[derive(Default)]
struct Backoff {
    tries: u32,
}

impl Backoff {
    const TRIES: u32 = 20;

    /// Waits before the next try; `false` when the tries are used up.
    async fn wait(&mut self) -> bool {
        if self.tries >= Self::TRIES {
            return false;
        }
        self.tries += 1;
        let ms = (25u64 << self.tries.min(4)).min(500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_block_is_retried_and_other_errors_are_not() {
        let e = redis::make_extension_error(
            "UNBLOCKED".into(),
            Some("force unblock from blocking operation".into()),
        );
        assert_eq!(after_failover(&e), Some(Retry::Wait));
        let e = redis::make_extension_error("WRONGTYPE".into(), None);
        assert_eq!(after_failover(&e), None);
        assert!(!released(Some(&Value::Okay)));
        assert!(!released(None));
    }
}
