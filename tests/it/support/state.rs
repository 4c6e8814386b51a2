//! A comparable picture of a PAC's persistent state, for "a refused command changes
//! nothing" checks.

use std::collections::BTreeMap;

use redis::Commands;

use super::pac::key;

/// A comparable picture of the PAC's persistent state: every key except heartbeats and the
/// control plumbing (command streams, taken ids, replies), with heartbeat timestamps left
/// out of the records. Two pictures are equal when nothing a user cares about changed.
pub(crate) fn psor_state(conn: &mut redis::Connection) -> BTreeMap<String, String> {
    let keys: Vec<String> = conn
        .scan_match(key("*"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        if k.ends_with(":alive")
            || k.ends_with(":ctl")
            || k.ends_with(":done")
            || k.contains(":reply:")
        {
            continue;
        }
        let t: String = redis::cmd("TYPE").arg(&k).query(conn).unwrap();
        let v = match t.as_str() {
            "hash" => {
                let h: BTreeMap<String, String> = conn.hgetall(&k).unwrap();
                let h: BTreeMap<_, _> = h
                    .into_iter()
                    .filter(|(f, _)| f != "heartbeat_at" && f != "beats")
                    .collect();
                format!("{h:?}")
            }
            "set" => {
                let mut s: Vec<String> = conn.smembers(&k).unwrap();
                s.sort();
                format!("{s:?}")
            }
            "zset" => {
                let z: Vec<(String, f64)> = conn.zrange_withscores(&k, 0, -1).unwrap();
                format!("{z:?}")
            }
            "string" => {
                let s: String = conn.get(&k).unwrap();
                s
            }
            "list" => {
                let l: Vec<String> = conn.lrange(&k, 0, -1).unwrap();
                format!("{l:?}")
            }
            "stream" => {
                let len: u64 = redis::cmd("XLEN").arg(&k).query(conn).unwrap();
                let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(&k)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query(conn)
                    .unwrap();
                format!(
                    "len {len}, last {:?}",
                    last.ids.first().map(|e| e.id.clone())
                )
            }
            "none" => continue,
            other => format!("<{other}>"),
        };
        out.insert(k, v);
    }
    out
}

/// Asserts the PSOR looks as it did in `before`, naming the keys that differ.
#[track_caller]
pub(crate) fn assert_psor_unchanged(
    conn: &mut redis::Connection,
    before: &BTreeMap<String, String>,
    what: &str,
) {
    let after = psor_state(conn);
    if &after != before {
        let mut diff = Vec::new();
        for k in before.keys().chain(after.keys()) {
            if before.get(k) != after.get(k) && !diff.contains(k) {
                diff.push(k.clone());
            }
        }
        let lines: Vec<String> = diff
            .iter()
            .map(|k| format!("  {k}: {:?} -> {:?}", before.get(k), after.get(k)))
            .collect();
        panic!("{what} changed the PSOR:\n{}", lines.join("\n"));
    }
}
