//! A loopback proxy in front of the PSOR for the coordinator alone: it counts the
//! coordinator's Redis commands and measures how long the coordinator waits for Redis on
//! them (blocking reply waits excluded), attributed to the rollout steps in hand (read
//! from the journal writes passing through). Works for any pacup version: the numbers of
//! an earlier coordinator are taken the same way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
pub struct Stats {
    pub commands: u64,
    /// Non-blocking requests outstanding on any connection.
    outstanding: usize,
    last: Option<Instant>,
    open: BTreeSet<u64>,
    /// Time with a request of the coordinator outstanding, per step in hand (split
    /// evenly between steps in hand at once).
    pub step_time: BTreeMap<u64, Duration>,
    /// The same while no step was in hand (preflight, markers, between steps).
    pub outside: Duration,
}

impl Stats {
    fn advance(&mut self, now: Instant) {
        if let Some(last) = self.last {
            if self.outstanding > 0 {
                let dt = now - last;
                if self.open.is_empty() {
                    self.outside += dt;
                } else {
                    let share = dt / self.open.len() as u32;
                    for s in &self.open {
                        *self.step_time.entry(*s).or_default() += share;
                    }
                }
            }
        }
        self.last = Some(now);
    }
}

pub struct Proxy {
    pub port: u16,
    pub stats: Arc<Mutex<Stats>>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
        let port = l.local_addr().unwrap().port();
        let stats = Arc::new(Mutex::new(Stats::default()));
        let st = stats.clone();
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    if let Ok(s) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = c.set_nodelay(true);
                        let _ = s.set_nodelay(true);
                        relay(c, s, st).await;
                    }
                });
            }
        });
        Proxy { port, stats }
    }

    pub fn reset(&self) {
        *self.stats.lock().unwrap() = Stats::default();
    }
}

/// What a request waits for, so its reply can be accounted.
struct Pending {
    blocking: bool,
    close_step: Option<u64>,
}

async fn relay(client: TcpStream, server: TcpStream, stats: Arc<Mutex<Stats>>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let queue: Arc<Mutex<VecDeque<Pending>>> = Arc::default();
    let (q1, st1) = (queue.clone(), stats.clone());
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut parser = Vec::new();
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            parser.extend_from_slice(&buf[..n]);
            let now = Instant::now();
            {
                let mut st = st1.lock().unwrap();
                let mut q = q1.lock().unwrap();
                while let Some((args, used)) = parse_command(&parser) {
                    parser.drain(..used);
                    st.advance(now);
                    st.commands += 1;
                    let name = args
                        .first()
                        .map(|a| a.to_ascii_uppercase())
                        .unwrap_or_default();
                    let blocking = matches!(name.as_slice(), b"BLPOP" | b"BRPOP" | b"BLMOVE");
                    let mut close_step = None;
                    if let Some((step, status)) = event_of(&args) {
                        if status == "started" {
                            st.open.insert(step);
                        } else {
                            close_step = Some(step);
                        }
                    }
                    if !blocking {
                        st.outstanding += 1;
                    }
                    q.push_back(Pending {
                        blocking,
                        close_step,
                    });
                }
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut parser = Vec::new();
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        parser.extend_from_slice(&buf[..n]);
        let now = Instant::now();
        {
            let mut st = stats.lock().unwrap();
            let mut q = queue.lock().unwrap();
            let mut at = 0;
            while let Some(used) = reply_len(&parser[at..]) {
                at += used;
                st.advance(now);
                if let Some(p) = q.pop_front() {
                    if !p.blocking {
                        st.outstanding = st.outstanding.saturating_sub(1);
                    }
                    if let Some(s) = p.close_step {
                        st.open.remove(&s);
                    }
                }
            }
            parser.drain(..at);
        }
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
    // A connection that closes with requests in flight leaves them unanswered.
    let mut st = stats.lock().unwrap();
    for p in queue.lock().unwrap().drain(..) {
        if !p.blocking {
            st.outstanding = st.outstanding.saturating_sub(1);
        }
    }
}

/// The step number and status of a journal write that carries a rollout event.
fn event_of(args: &[Vec<u8>]) -> Option<(u64, String)> {
    if !args.first()?.eq_ignore_ascii_case(b"EVALSHA") && !args[0].eq_ignore_ascii_case(b"EVAL") {
        return None;
    }
    let pos = |k: &[u8]| args.windows(2).rposition(|w| w[0] == k).map(|i| i + 1);
    let step = std::str::from_utf8(&args[pos(b"step")?])
        .ok()?
        .parse()
        .ok()?;
    let status = String::from_utf8(args[pos(b"status")?].clone()).ok()?;
    // The coordinator's events carry `rollout` and `seq`; admin events do not.
    pos(b"seq")?;
    Some((step, status))
}

fn line(b: &[u8]) -> Option<(&[u8], usize)> {
    let i = b.windows(2).position(|w| w == b"\r\n")?;
    Some((&b[..i], i + 2))
}

fn num(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// One complete command (an array of bulk strings) at the start of `b`, and its length.
fn parse_command(b: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    if b.first()? != &b'*' {
        // Inline commands are not used by redis clients; skip the line.
        let (_, used) = line(b)?;
        return Some((Vec::new(), used));
    }
    let (head, mut at) = line(b)?;
    let n = num(&head[1..])?;
    let mut args = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let (h, used) = line(&b[at..])?;
        at += used;
        let len = num(h.get(1..)?)? as usize;
        if b.len() < at + len + 2 {
            return None;
        }
        args.push(b[at..at + len].to_vec());
        at += len + 2;
    }
    Some((args, at))
}

/// The length of one complete reply at the start of `b` (RESP2, and RESP3's simple types).
fn reply_len(b: &[u8]) -> Option<usize> {
    let t = *b.first()?;
    let (head, used) = line(b)?;
    match t {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(used),
        b'$' | b'=' | b'!' => {
            let len = num(&head[1..])?;
            if len < 0 {
                return Some(used);
            }
            let total = used + len as usize + 2;
            (b.len() >= total).then_some(total)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let mut n = num(&head[1..])?;
            if n < 0 {
                return Some(used);
            }
            if t == b'%' {
                n *= 2;
            }
            let mut at = used;
            for _ in 0..n {
                at += reply_len(&b[at..])?;
            }
            Some(at)
        }
        _ => Some(used),
    }
}
