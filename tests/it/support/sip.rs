//! The one SIP load generator of the tests and benchmarks: OPTIONS over UDP
//! from a chosen loopback source address, each reply matched to its request
//! and timed.
//!
//! * [`OptionsClient`] sends numbered requests from one socket and reads
//!   their replies: [`ask`](OptionsClient::ask) for one request at a time,
//!   [`send`](OptionsClient::send) and [`recv`](OptionsClient::recv) for
//!   several in flight (from two threads if need be).
//! * [`options`] is one request from a fresh socket, for a status code.
//! * [`Pace`] spaces the sends of a loop evenly.
//!
//! Tests send only to 127.0.0.1, from 127.0.0.0/8 source addresses.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A UDP socket bound to `src:0` that sends `OPTIONS sip:user@127.0.0.1:port`.
/// Requests are numbered from 0; request `n` has the Call-ID
/// `<tag>-<n>@<src>`, where the tag names this process and socket, so a
/// reply is matched to its request by its Call-ID alone.
pub struct OptionsClient {
    sock: UdpSocket,
    src: Ipv4Addr,
    lport: u16,
    port: u16,
    /// The Request-URI user (what the test configs dispatch on), if any.
    user: Option<String>,
    tag: String,
    /// When each request was sent, by number.
    sent: Mutex<Vec<Instant>>,
}

/// The reply to request `n`: its status code and how long after the send it
/// arrived.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub n: u32,
    pub code: u16,
    pub latency: Duration,
}

impl OptionsClient {
    /// A client sending from `src` (an IPv4 loopback address) to
    /// `sip:user@127.0.0.1:port`, or `sip:127.0.0.1:port` when `user` is None.
    pub fn new(src: &str, port: u16, user: Option<&str>) -> OptionsClient {
        let ip: Ipv4Addr = src.parse().unwrap_or_else(|e| panic!("source {src}: {e}"));
        assert!(ip.is_loopback(), "loopback sources only, not {src}");
        let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {src}:0: {e}"));
        let lport = sock.local_addr().unwrap().port();
        OptionsClient {
            sock,
            src: ip,
            lport,
            port,
            user: user.map(str::to_string),
            tag: format!("rsec-{}-{lport}", std::process::id()),
            sent: Mutex::new(Vec::new()),
        }
    }

    fn request(&self, n: u32) -> String {
        let (src, lport, port, tag) = (self.src, self.lport, self.port, &self.tag);
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        format!(
            "OPTIONS sip:{user}127.0.0.1:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bK-{tag}-{n}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:rsec-test@{src}:{lport}>;tag={tag}-{n}\r\n\
             To: <sip:{user}127.0.0.1:{port}>\r\n\
             Call-ID: {tag}-{n}@{src}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    /// Sends the next request without waiting for its reply; its number.
    pub fn send(&self) -> u32 {
        let mut sent = self.sent.lock().unwrap();
        let n = sent.len() as u32;
        // Timed from just before the send: a reply can be read (by another
        // thread) before send_to returns.
        sent.push(Instant::now());
        // Only ever to the test's own OpenSIPS on loopback.
        self.sock
            .send_to(self.request(n).as_bytes(), ("127.0.0.1", self.port))
            .unwrap();
        n
    }

    /// How many requests were sent.
    pub fn sent(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    /// The next datagram within `wait`: the answer to one of this client's
    /// requests, or Err with the first line of anything else (an unknown
    /// Call-ID, no status code); None when nothing came.
    pub fn recv(&self, wait: Duration) -> Option<Result<Answer, String>> {
        let mut buf = [0u8; 4096];
        self.sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .unwrap();
        let len = self.sock.recv(&mut buf).ok()?;
        let at = Instant::now();
        let text = String::from_utf8_lossy(&buf[..len]);
        let code = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse::<u16>().ok());
        let prefix = format!("{}-", self.tag);
        let suffix = format!("@{}", self.src);
        let n = text
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(h, _)| h.trim().eq_ignore_ascii_case("Call-ID"))
                    .map(|(_, v)| v.trim())
            })
            .and_then(|c| {
                c.strip_prefix(prefix.as_str())?
                    .strip_suffix(suffix.as_str())?
                    .parse::<u32>()
                    .ok()
            });
        let sent = n.and_then(|n| self.sent.lock().unwrap().get(n as usize).copied());
        match (n, code, sent) {
            (Some(n), Some(code), Some(t)) => Some(Ok(Answer {
                n,
                code,
                latency: at - t,
            })),
            _ => Some(Err(text.lines().next().unwrap_or("").to_string())),
        }
    }

    /// Sends a request and waits up to `wait` for its answer (a late answer
    /// to an earlier request, or anything else, is passed over).
    pub fn ask(&self, wait: Duration) -> Option<Answer> {
        let n = self.send();
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())?;
            match self.recv(left)? {
                Ok(a) if a.n == n => return Some(a),
                _ => continue,
            }
        }
    }
}

/// One OPTIONS to `sip:user@127.0.0.1:port` from `src` (a fresh socket):
/// the status code of its answer, or None after `wait`.
pub fn options(src: &str, port: u16, user: &str, wait: Duration) -> Option<u16> {
    OptionsClient::new(src, port, Some(user))
        .ask(wait)
        .map(|a| a.code)
}

/// Evenly spaced ticks from a start: [`wait`](Pace::wait) sleeps until the
/// next one, `start + every * n` for its n-th call (the first at `start`),
/// so a slow iteration is caught up on rather than shifting the rest.
pub struct Pace {
    start: Instant,
    every: Duration,
    n: u32,
}

impl Pace {
    /// Ticks from now.
    pub fn new(every: Duration) -> Pace {
        Pace::starting(Instant::now(), every)
    }

    /// Ticks from `start`.
    pub fn starting(start: Instant, every: Duration) -> Pace {
        Pace { start, every, n: 0 }
    }

    pub fn wait(&mut self) {
        let due = self.start + self.every * self.n;
        self.n += 1;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
}
