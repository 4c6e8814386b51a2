//! `MONITOR` on a test's Redis: every command the server runs, including the ones a Lua
//! script runs (source `lua`), as a list of argument vectors.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::Duration;

use super::RedisServer;

/// The command that tells the reader it has seen everything before it.
const END: &str = "pacup-test-monitor-end";

/// One command as MONITOR shows it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `lua` for a command a script ran, else the client's address.
    pub source: String,
    /// Command name and arguments.
    pub args: Vec<Vec<u8>>,
}

impl Seen {
    /// Argument `i` as text (lossy).
    pub fn arg(&self, i: usize) -> String {
        self.args
            .get(i)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default()
    }

    /// The command name, upper case.
    pub fn name(&self) -> String {
        self.arg(0).to_ascii_uppercase()
    }

    /// The command and its arguments as one line of text (lossy), for messages.
    pub fn line(&self) -> String {
        (0..self.args.len())
            .map(|i| self.arg(i))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A MONITOR connection read by a thread until [`Monitor::stop`].
pub struct Monitor {
    reader: JoinHandle<Vec<Seen>>,
    server_url: String,
}

impl Monitor {
    /// Starts monitoring `server` (plain TCP, no password); returns once MONITOR is on.
    pub fn start(server: &RedisServer) -> Monitor {
        let mut sock = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        sock.write_all(b"MONITOR\r\n").expect("MONITOR");
        let mut lines = BufReader::new(sock);
        let mut ok = String::new();
        lines.read_line(&mut ok).expect("MONITOR reply");
        assert_eq!(ok.trim_end(), "+OK", "MONITOR refused");
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut line = Vec::new();
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => panic!("MONITOR ended before its end marker"),
                    Ok(_) => {}
                }
                let seen = parse(&line).unwrap_or_else(|| {
                    panic!(
                        "unreadable MONITOR line {:?}",
                        String::from_utf8_lossy(&line)
                    )
                });
                if seen.name() == "ECHO" && seen.arg(1) == END {
                    return out;
                }
                out.push(seen);
            }
        });
        Monitor {
            reader,
            server_url: server.url(),
        }
    }

    /// Everything the server ran since [`Monitor::start`].
    pub fn stop(self) -> Vec<Seen> {
        let mut c = redis::Client::open(self.server_url.as_str())
            .and_then(|c| c.get_connection())
            .expect("connect");
        let _: String = redis::cmd("ECHO").arg(END).query(&mut c).expect("ECHO");
        self.reader.join().expect("MONITOR reader")
    }
}

/// `+1700000000.123456 [0 lua] "HGET" "key" "field"` into its source and arguments.
fn parse(line: &[u8]) -> Option<Seen> {
    let line = line.strip_prefix(b"+")?;
    let open = line.iter().position(|&b| b == b'[')?;
    let close = open + line[open..].iter().position(|&b| b == b']')?;
    let source = String::from_utf8_lossy(&line[open + 1..close]);
    let source = source.split_once(' ')?.1.to_string();
    let mut args = Vec::new();
    let mut rest = &line[close + 1..];
    loop {
        let start = rest.iter().position(|&b| b == b'"')?;
        rest = &rest[start + 1..];
        let mut arg = Vec::new();
        let mut i = 0;
        loop {
            match *rest.get(i)? {
                b'"' => break,
                b'\\' => {
                    let (b, used) = match *rest.get(i + 1)? {
                        b'n' => (b'\n', 2),
                        b'r' => (b'\r', 2),
                        b't' => (b'\t', 2),
                        b'a' => (7, 2),
                        b'b' => (8, 2),
                        b'x' => {
                            let hex = std::str::from_utf8(rest.get(i + 2..i + 4)?).ok()?;
                            (u8::from_str_radix(hex, 16).ok()?, 4)
                        }
                        other => (other, 2),
                    };
                    arg.push(b);
                    i += used;
                }
                b => {
                    arg.push(b);
                    i += 1;
                }
            }
        }
        args.push(arg);
        rest = &rest[i + 1..];
        if !rest.contains(&b'"') {
            return Some(Seen { source, args });
        }
    }
}

#[test]
fn monitor_lines_parse() {
    let s =
        parse(b"+1700000000.123456 [0 lua] \"HGET\" \"pac:{P}:meta\" \"a\\\"b\\x41\"\r\n").unwrap();
    assert_eq!(s.source, "lua");
    assert_eq!(s.name(), "HGET");
    assert_eq!(s.args[2], b"a\"bA");
    let s = parse(b"+1.2 [0 127.0.0.1:5000] \"PING\"\r\n").unwrap();
    assert_eq!((s.source.as_str(), s.args.len()), ("127.0.0.1:5000", 1));
}
