//! Redis Cluster as the PSOR (`redis+cluster://h1:p1,h2:p2`).
//!
//! Every key of a PAC carries the hash tag `{P}`, so the whole PAC lives in one slot:
//! commands, scripts (routed by their first key, the PAC's prefix) and pipelines of one
//! PAC all go to that slot's master, and a script's atomicity holds as on one server.
//! What a single server does with keyless commands is done here per node: `pac list`
//! scans every master, a PAC's key walks list the PAC's slot on its master
//! (`CLUSTER GETKEYSINSLOT`), and notifications use sharded pub/sub on the PAC's channel,
//! which lives on the PAC's slot too and so moves with it.

use super::{classify, PsorConn, PsorOptions};
use crate::error::{is_unreachable, Error, Result};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, PushKind};
use std::time::Duration;
use tokio::sync::mpsc;

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// How to reach a cluster: its seed nodes and credentials, from the URL and options.
#[derive(Clone)]
pub(super) struct Seeds {
    pub(super) nodes: Vec<(String, u16)>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) tls: bool,
}

/// The cluster side of a [`super::Psor`]: the shared routed connection and what is needed
/// to open further ones (dedicated, pub/sub).
#[derive(Clone)]
pub(super) struct Cluster {
    pub(super) conn: ClusterConnection,
    /// The durability critical writes get: chosen from a master's replicas (every master
    /// of a cluster built alike has as many), the wait sent to the write's own master in
    /// the write's pipeline.
    pub(super) durable: super::durability::Resolved,
    seeds: Seeds,
}

/// A client for the cluster. `command_timeout` bounds each answer (`None` for the
/// dedicated connection of blocking commands, whose caller bounds the block); `resp3`
/// is for pub/sub, whose messages arrive as RESP3 pushes.
fn client(
    seeds: &Seeds,
    opts: &PsorOptions,
    command_timeout: Option<Duration>,
    resp3: bool,
) -> Result<ClusterClient> {
    let scheme = if seeds.tls { "rediss" } else { "redis" };
    let urls: Vec<String> = seeds
        .nodes
        .iter()
        .map(|(h, p)| format!("{scheme}://{h}:{p}"))
        .collect();
    let mut b = ClusterClientBuilder::new(urls)
        .connection_timeout(opts.connect_timeout)
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(t) = command_timeout {
        b = b.response_timeout(t);
    }
    if let Some(u) = &seeds.username {
        b = b.username(u);
    }
    if let Some(p) = seeds.password.as_ref().or(opts.password.as_ref()) {
        b = b.password(p);
    }
    if seeds.tls {
        super::install_crypto_provider();
        b = b
            .tls(redis::TlsMode::Secure)
            .certs(super::tls_certificates(opts)?);
    }
    if resp3 {
        b = b.use_protocol(redis::ProtocolVersion::RESP3);
    }
    b.build()
        .map_err(|e| super::bad_url(&opts.url, &e.to_string()))
}

/// Connects and proves the connection with one PING (exit 5 when unreachable or refused).
async fn connect_with(
    client: &ClusterClient,
    config: Option<ClusterConfig>,
    opts: &PsorOptions,
    shown: &str,
) -> Result<ClusterConnection> {
    let open = async {
        match config {
            Some(c) => client.get_async_connection_with_config(c).await,
            None => client.get_async_connection().await,
        }
    };
    let mut conn = tokio::time::timeout(opts.connect_timeout, open)
        .await
        .map_err(|_| Error::Unreachable {
            target: shown.to_string(),
            reason: "timed out connecting to the cluster".into(),
        })?
        .map_err(|e| classify(shown, e))?;
    // To one node: a PING for every node (the client's default) would refuse a cluster
    // that still serves every slot while one replica is down.
    conn.route_command(
        redis::cmd("PING"),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
    )
    .await
    .map_err(|e| classify(shown, e))?;
    Ok(conn)
}

impl Cluster {
    /// Connects to the cluster the seeds belong to.
    pub(super) async fn connect(seeds: Seeds, opts: &PsorOptions, shown: &str) -> Result<Self> {
        let c = client(&seeds, opts, Some(opts.command_timeout), false)?;
        let mut conn = connect_with(&c, None, opts, shown).await?;
        let durable =
            super::durability::resolve(&mut OnePrimary(&mut conn), opts.durability, shown).await?;
        Ok(Cluster {
            conn,
            durable,
            seeds,
        })
    }

    /// `host:port` of the first seed node.
    pub(super) fn first_seed(&self) -> String {
        let (h, p) = &self.seeds.nodes[0];
        format!("{h}:{p}")
    }

    /// A connection of its own for blocking commands (each node connection in it is
    /// private, so a block stalls nobody else), routed like the shared one.
    pub(super) async fn dedicated(&self, opts: &PsorOptions, shown: &str) -> Result<PsorConn> {
        let c = client(&self.seeds, opts, None, false)?;
        Ok(PsorConn::Cluster(
            connect_with(&c, None, opts, shown).await?,
        ))
    }

    /// A sharded subscription to `channel` on the master of its slot.
    pub(super) async fn notifications(
        &self,
        channel: &str,
        opts: &PsorOptions,
        shown: &str,
    ) -> Result<Notifications> {
        let c = client(&self.seeds, opts, Some(opts.command_timeout), true)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let config = ClusterConfig::new().set_push_sender(tx);
        let mut conn = connect_with(&c, Some(config), opts, shown).await?;
        conn.ssubscribe(channel).await.map_err(|e| lost(shown, e))?;
        Ok(Notifications(Inner::Cluster { _conn: conn, rx }))
    }
}

/// Sends everything to one master: a server-wide question (`INFO`) that the cluster
/// client would otherwise ask every node and answer with all their replies.
struct OnePrimary<'a>(&'a mut ClusterConnection);

impl redis::aio::ConnectionLike for OnePrimary<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, redis::Value> {
        let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
        Box::pin(self.0.route_command(cmd.clone(), to))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        let to = SingleNodeRoutingInfo::RandomPrimary;
        Box::pin(self.0.route_pipeline(pipeline.clone(), offset, count, to))
    }

    fn get_db(&self) -> i64 {
        0
    }
}

fn lost(shown: &str, e: redis::RedisError) -> Error {
    if is_unreachable(&e) {
        Error::Unreachable {
            target: shown.to_string(),
            reason: e.to_string(),
        }
    } else {
        Error::from(e)
    }
}

/// A subscription to a PAC's notification channel: plain pub/sub on one server, sharded
/// pub/sub (`SSUBSCRIBE`) on a cluster.
pub struct Notifications(Inner);

enum Inner {
    Server(redis::aio::PubSub),
    Cluster {
        /// Kept open for the subscription's life; its pushes arrive on `rx`.
        _conn: ClusterConnection,
        rx: mpsc::UnboundedReceiver<redis::PushInfo>,
    },
}

impl Notifications {
    pub(super) fn server(ps: redis::aio::PubSub) -> Self {
        Notifications(Inner::Server(ps))
    }

    /// The next notification, with its payload when it is text; `None` once the
    /// subscription is gone, and the caller must subscribe again. On a cluster that is
    /// also when the channel's slot moved (a failover promoted another master: Redis ends
    /// the sharded subscription with `SUNSUBSCRIBE`), so subscribing again follows the
    /// slot to its new master.
    pub async fn next(&mut self) -> Option<Option<String>> {
        use futures_util::StreamExt;
        match &mut self.0 {
            Inner::Server(ps) => ps
                .on_message()
                .next()
                .await
                .map(|m| m.get_payload::<String>().ok()),
            Inner::Cluster { rx, .. } => loop {
                let info = rx.recv().await?;
                match info.kind {
                    // [channel, payload]
                    PushKind::SMessage => {
                        return Some(
                            info.data
                                .get(1)
                                .and_then(|v| redis::from_redis_value_ref::<String>(v).ok()),
                        )
                    }
                    PushKind::SUnsubscribe | PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}

/// The slot of a key, as Redis Cluster computes it: CRC16 (XMODEM) of the hash tag when
/// the key has a non-empty one, else of the whole key, modulo 16384.
pub fn slot_of(key: &str) -> u16 {
    let k = key.as_bytes();
    let tagged = k.iter().position(|&b| b == b'{').and_then(|open| {
        let close = k[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &k[open + 1..open + 1 + close])
    });
    crc16_xmodem(tagged.unwrap_or(k)) % SLOTS
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Whether `key` matches a Redis glob `pattern` of the forms pacup's key vocabulary makes
/// (`*` and `?`; the names in them never contain glob characters).
pub fn glob_match(pattern: &str, key: &str) -> bool {
    fn go(p: &[u8], k: &[u8]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((b'*', rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((b'?', rest)) => !k.is_empty() && go(rest, &k[1..]),
            Some((c, rest)) => k.first() == Some(c) && go(rest, &k[1..]),
        }
    }
    go(pattern.as_bytes(), key.as_bytes())
}

impl super::Psor {
    /// Whether the PSOR is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    fn cluster_conn(&self) -> Option<ClusterConnection> {
        self.cluster.as_ref().map(|c| c.conn.clone())
    }

    /// Cluster: the masters that serve slots, as `(host, port)` (from `CLUSTER NODES`).
    pub async fn masters(&self) -> Result<Vec<(String, u16)>> {
        let Some(mut c) = self.cluster_conn() else {
            return Ok(Vec::new());
        };
        let text: String = c
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await
            .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
            .map_err(|e| self.err(e))?;
        Ok(parse_masters(&text))
    }

    /// Cluster: every key matching `pattern` on every master, with SCAN in bounded steps
    /// per master (a cursor belongs to one node).
    pub async fn scan_masters(&self, pattern: &str) -> Result<Vec<String>> {
        let Some(mut c) = self.cluster_conn() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (host, port) in self.masters().await? {
            let mut cursor = 0u64;
            loop {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port,
                });
                let v = c
                    .route_command(scan_step(cursor, pattern), route)
                    .await
                    .map_err(|e| self.err(e))?;
                let (next, keys): (u64, Vec<String>) =
                    redis::from_redis_value(v).map_err(|e| self.err(e.into()))?;
                out.extend(keys);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Cluster: the keys of `tagged_key`'s slot that match `pattern`, listed on the slot's
    /// master with `CLUSTER COUNTKEYSINSLOT` and `GETKEYSINSLOT` in one round trip. The
    /// slot holds one PAC (and any PAC whose name hashes alike, which `pattern` leaves
    /// out), so this reads the PAC's keys and nothing of the rest of the cluster.
    pub async fn slot_keys(&self, tagged_key: &str, pattern: &str) -> Result<Vec<String>> {
        let Some(mut c) = self.cluster_conn() else {
            return Ok(Vec::new());
        };
        let slot = slot_of(tagged_key);
        let route = || {
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                slot,
                SlotAddr::Master,
            )))
        };
        let n: u64 = c
            .route_command(
                redis::cmd("CLUSTER")
                    .arg("COUNTKEYSINSLOT")
                    .arg(slot)
                    .clone(),
                route(),
            )
            .await
            .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Ok(Vec::new());
        }
        // Keys written between the two commands are not listed; callers that must see
        // every key (removal) re-list until nothing matches.
        let keys: Vec<String> = c
            .route_command(
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(n)
                    .clone(),
                route(),
            )
            .await
            .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
            .map_err(|e| self.err(e))?;
        Ok(keys
            .into_iter()
            .filter(|k| glob_match(pattern, k))
            .collect())
    }
}

/// One SCAN step; COUNT bounds the work of each step on the node.
fn scan_step(cursor: u64, pattern: &str) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(500);
    cmd
}

/// The slot-serving masters in `CLUSTER NODES` output (`<id> <ip:port@cport[,host]>
/// <flags> <master> <ping> <pong> <epoch> <link> <slot>...`), failed ones left out.
fn parse_masters(text: &str) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let flags: Vec<&str> = f.get(2)?.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|x| x.starts_with("fail")) {
                return None;
            }
            if f.len() < 9 {
                return None; // a master without slots holds no keys
            }
            let addr = f[1].split(['@', ',']).next()?;
            let (h, p) = addr.rsplit_once(':')?;
            Some((h.to_string(), p.parse().ok()?))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // The reference value of the cluster specification: CRC16("123456789") = 0x31C3.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(slot_of("123456789"), 12739);
        assert_eq!(slot_of("pac:{MyPAC}:meta"), slot_of("MyPAC"));
        assert_eq!(slot_of("pac:{MyPAC}:store:1.0.0:res"), slot_of("MyPAC"));
        assert_eq!(slot_of("a{}b"), crc16_xmodem(b"a{}b") % SLOTS);
    }

    #[test]
    fn globs_match_like_redis() {
        assert!(glob_match(
            "pac:{P}:store:1.0.0:*",
            "pac:{P}:store:1.0.0:res"
        ));
        assert!(!glob_match(
            "pac:{P}:store:1.0.0:*",
            "pac:{P}:store:2.0.0:res"
        ));
        assert!(glob_match("pac:{P}:host:*:ctl", "pac:{P}:host:h1:ctl"));
        assert!(!glob_match("pac:{P}:host:*:ctl", "pac:{P}:host:h1:done"));
        assert!(glob_match("pac:{*}:meta", "pac:{Q}:meta"));
        assert!(glob_match("a?c", "abc"));
    }

    #[test]
    fn masters_come_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002,h2 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master - 0 0 5 connected
";
        assert_eq!(
            parse_masters(text),
            vec![("127.0.0.1".into(), 7001), ("127.0.0.1".into(), 7002)]
        );
    }
}
