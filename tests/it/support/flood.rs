//! A load generator for many source addresses from one UDP socket: OPTIONS
//! requests whose source address is chosen per datagram anywhere in
//! 127.0.0.0/8, and a reader thread that counts the replies.
//!
//! Binding one socket per source (what [`super::sip::OptionsClient`] does)
//! stops being practical at thousands of sources and impossible at a
//! million. Instead the socket is bound to `0.0.0.0` and each datagram
//! carries an `IP_PKTINFO` control message whose `ipi_spec_dst` is the
//! source address wanted: the whole of 127/8 is local, so the kernel sends
//! from it, and the reply (to that address and our port) lands on the same
//! socket.
//!
//! Every request's Call-ID is `<tag>-<class>-<ms>-<seq>`: `class` is the
//! caller's label for a stream (attacker, legit, ...) and `ms` the send
//! time since the flood started, so a reply is counted by class, status
//! code and the interval in which its request was sent, without any shared
//! table between the sending and the reading thread.
//!
//! Sends go only to 127.0.0.1.

use std::collections::BTreeMap;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sip::Pace;

/// Most datagrams handed to one sendmmsg(2).
const BATCH: usize = 64;

/// What the reader saw: replies by class and status code, and by class,
/// send interval and status code.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub by_class: BTreeMap<u8, BTreeMap<u16, u64>>,
    /// (class, interval index) → status code → replies, the interval being
    /// the one in which the request was sent ([`Flood::interval`] wide).
    pub timeline: BTreeMap<(u8, u32), BTreeMap<u16, u64>>,
    /// Datagrams that were not a reply to this flood.
    pub strays: u64,
}

impl Tally {
    /// Replies to requests of `class` with status `code`.
    pub fn count(&self, class: u8, code: u16) -> u64 {
        self.by_class
            .get(&class)
            .and_then(|m| m.get(&code))
            .copied()
            .unwrap_or(0)
    }

    /// Replies to requests of `class`, any status.
    pub fn answered(&self, class: u8) -> u64 {
        self.by_class.get(&class).map_or(0, |m| m.values().sum())
    }
}

/// Everything a flood did, once it is [`finish`](Flood::finish)ed.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Requests sent, by class.
    pub sent: BTreeMap<u8, u64>,
    /// (class, interval index) → requests sent in it.
    pub sent_timeline: BTreeMap<(u8, u32), u64>,
    /// sendmmsg calls refused for a full local queue (ENOBUFS), each
    /// retried after a pause: a sign the sender outran the kernel.
    pub send_errors: u64,
    pub tally: Tally,
    /// From the first send to the end of [`Flood::finish`]'s drain.
    pub elapsed: Duration,
}

impl Report {
    pub fn sent_total(&self) -> u64 {
        self.sent.values().sum()
    }

    pub fn answered_total(&self) -> u64 {
        self.tally.by_class.values().flat_map(|m| m.values()).sum()
    }

    /// Replies of every class with status `code`.
    pub fn code_total(&self, code: u16) -> u64 {
        self.tally
            .by_class
            .keys()
            .map(|c| self.tally.count(*c, code))
            .sum()
    }

    /// "N×200 M×403 ..." over every class.
    pub fn codes(&self) -> String {
        let mut all: BTreeMap<u16, u64> = BTreeMap::new();
        for m in self.tally.by_class.values() {
            for (c, n) in m {
                *all.entry(*c).or_default() += n;
            }
        }
        all.iter()
            .map(|(c, n)| format!("{n}x{c}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One socket, many sources; see the module documentation.
pub struct Flood {
    sock: Arc<UdpSocket>,
    dst: SocketAddrV4,
    lport: u16,
    tag: String,
    start: Instant,
    interval: Duration,
    seq: u64,
    sent: BTreeMap<u8, u64>,
    sent_timeline: BTreeMap<(u8, u32), u64>,
    send_errors: u64,
    answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Tally>>,
    /// Reused datagram buffers, one per batch slot.
    bufs: Vec<Vec<u8>>,
}

impl Flood {
    /// A flood towards `sip:bench@127.0.0.1:port`, counting replies per
    /// `interval` of send time (for time series; any width will do when
    /// only totals matter).
    pub fn new(port: u16, interval: Duration) -> io::Result<Flood> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        let lport = sock.local_addr()?.port();
        // Bursts of replies must not be dropped before the reader gets to
        // them, nor our own bursts refused with ENOBUFS; ignore a refusal
        // (the kernel caps these at rmem_max/wmem_max unless root).
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            let size: libc::c_int = 8 << 20;
            // SAFETY: setsockopt with a valid fd and an int-sized value.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let sock = Arc::new(sock);
        let tag = format!("fl{}x{lport}", std::process::id());
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let reader = {
            let (sock, tag, answered, stop) =
                (sock.clone(), tag.clone(), answered.clone(), stop.clone());
            let every = interval.as_millis().max(1) as u64;
            std::thread::Builder::new()
                .name("flood-reader".into())
                .spawn(move || read_replies(&sock, &tag, every, &answered, &stop))?
        };
        Ok(Flood {
            sock,
            dst: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            lport,
            tag,
            start,
            interval,
            seq: 0,
            sent: BTreeMap::new(),
            sent_timeline: BTreeMap::new(),
            send_errors: 0,
            answered,
            stop,
            reader: Some(reader),
            bufs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
        })
    }

    /// The width of the timeline's intervals.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn sent_total(&self) -> u64 {
        self.sent.values().sum()
    }

    /// Replies read so far (any class, any status).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Sends one request per entry of `reqs`, `(source, class)`, with as
    /// few system calls as possible.
    pub fn send(&mut self, reqs: &[(Ipv4Addr, u8)]) {
        for chunk in reqs.chunks(BATCH) {
            self.send_batch(chunk);
        }
    }

    fn send_batch(&mut self, reqs: &[(Ipv4Addr, u8)]) {
        let ms = self.start.elapsed().as_millis() as u64;
        let slot = (ms / self.interval.as_millis().max(1) as u64) as u32;
        for (i, (src, class)) in reqs.iter().enumerate() {
            assert!(src.is_loopback(), "loopback sources only, not {src}");
            let seq = self.seq + i as u64;
            write_request(
                &mut self.bufs[i],
                &self.tag,
                *src,
                self.lport,
                self.dst.port(),
                *class,
                ms,
                seq,
            );
        }
        let n = reqs.len();
        let dst = sockaddr(self.dst);
        // One in_pktinfo control message per datagram; u64 storage keeps
        // the cmsghdr aligned.
        const CMSG_WORDS: usize = 8;
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32) };
        assert!(space as usize <= CMSG_WORDS * 8);
        let mut cmsgs = [[0u64; CMSG_WORDS]; BATCH];
        // SAFETY: all-zero iovecs and msghdrs are valid (null pointers,
        // zero lengths).
        let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.bufs[i].len(),
            };
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&dst as *const libc::sockaddr_in).cast_mut().cast();
            h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = cmsgs[i].as_mut_ptr().cast();
            h.msg_controllen = space as usize;
            // SAFETY: msg_control points at `space` zeroed, aligned bytes,
            // enough for one cmsghdr carrying an in_pktinfo.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as usize;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(reqs[i].0).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
            }
        }
        let mut done = 0usize;
        while done < n {
            // SAFETY: msgs[done..n] are fully initialised above and every
            // pointer in them outlives the call.
            let r = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (n - done) as u32,
                    0,
                )
            };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == io::ErrorKind::WouldBlock
                {
                    // The local queue is full: give the receiver a moment
                    // rather than dropping the datagrams.
                    std::thread::sleep(Duration::from_micros(200));
                    self.send_errors += 1;
                    continue;
                }
                panic!("sendmmsg to {}: {e}", self.dst);
            }
            for (_, class) in &reqs[done..done + r as usize] {
                *self.sent.entry(*class).or_default() += 1;
                *self.sent_timeline.entry((*class, slot)).or_default() += 1;
            }
            done += r as usize;
        }
        self.seq += n as u64;
    }

    /// `total` requests at `rate` per second, a 1 ms tick's worth at a
    /// time (caught up if a tick runs late); `pick(i)` gives the i-th
    /// request's source and class.
    pub fn paced(&mut self, rate: u64, total: u64, mut pick: impl FnMut(u64) -> (Ipv4Addr, u8)) {
        let tick = Duration::from_millis(1);
        let t0 = Instant::now();
        let mut pace = Pace::starting(t0, tick);
        let mut i = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        while i < total {
            pace.wait();
            // How many should have gone by now: this keeps the rate exact
            // whatever the tick's real length.
            let due = ((t0.elapsed().as_micros() as u64 * rate) / 1_000_000 + 1).min(total);
            while i < due {
                batch.clear();
                while i < due && batch.len() < BATCH {
                    batch.push(pick(i));
                    i += 1;
                }
                self.send(&batch);
            }
        }
    }

    /// As fast as the receiver keeps up: at most `window` requests
    /// unanswered at any time, for `dur` (a closed loop, so the server's
    /// socket buffer never overflows and what is measured is its own speed).
    pub fn saturate(
        &mut self,
        window: u64,
        dur: Duration,
        mut pick: impl FnMut(u64) -> (Ipv4Addr, u8),
    ) {
        let t0 = Instant::now();
        let mut i = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        while t0.elapsed() < dur {
            let outstanding = self.sent_total().saturating_sub(self.answered());
            let room = window.saturating_sub(outstanding).min(BATCH as u64);
            if room < (BATCH as u64).min(window / 4).max(1) {
                // Sleeping, not spinning: the server may need this core.
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            batch.clear();
            for _ in 0..room {
                batch.push(pick(i));
                i += 1;
            }
            self.send(&batch);
        }
    }

    /// Waits until every request sent has been answered, or no reply came
    /// for `quiet`; the replies missing.
    pub fn drain(&self, quiet: Duration) -> u64 {
        let mut last = self.answered();
        let mut since = Instant::now();
        loop {
            let now = self.answered();
            if now >= self.sent_total() {
                return 0;
            }
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return self.sent_total() - now;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Drains (for up to `quiet` without a reply), stops the reader and
    /// reports.
    pub fn finish(mut self, quiet: Duration) -> Report {
        self.drain(quiet);
        let elapsed = self.start.elapsed();
        self.stop.store(true, Ordering::Relaxed);
        let tally = self
            .reader
            .take()
            .expect("finish runs once")
            .join()
            .expect("the reply reader panicked");
        Report {
            sent: mem::take(&mut self.sent),
            sent_timeline: mem::take(&mut self.sent_timeline),
            send_errors: self.send_errors,
            tally,
            elapsed,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

#[allow(clippy::too_many_arguments)]
fn write_request(
    buf: &mut Vec<u8>,
    tag: &str,
    src: Ipv4Addr,
    lport: u16,
    port: u16,
    class: u8,
    ms: u64,
    seq: u64,
) {
    use std::io::Write;
    buf.clear();
    // rport: replies go back to the port the request came from, whatever
    // the Via says.
    let _ = write!(
        buf,
        "OPTIONS sip:bench@127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {src}:{lport};rport;branch=z9hG4bK-{tag}-{seq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:flood@{src}>;tag={tag}\r\n\
         To: <sip:bench@127.0.0.1:{port}>\r\n\
         Call-ID: {tag}-{class}-{ms}-{seq}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
}

/// The reader thread: counts replies until `stop`.
fn read_replies(
    sock: &UdpSocket,
    tag: &str,
    every_ms: u64,
    answered: &AtomicU64,
    stop: &AtomicBool,
) -> Tally {
    let mut t = Tally::default();
    let mut buf = vec![0u8; 65536];
    let prefix = format!("{tag}-");
    while !stop.load(Ordering::Relaxed) {
        let len = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // ICMP port unreachable after OpenSIPS stopped, and the like.
            Err(_) => continue,
        };
        match parse_reply(&buf[..len], &prefix) {
            Some((code, class, ms)) => {
                *t.by_class
                    .entry(class)
                    .or_default()
                    .entry(code)
                    .or_default() += 1;
                let slot = (ms / every_ms) as u32;
                *t.timeline
                    .entry((class, slot))
                    .or_default()
                    .entry(code)
                    .or_default() += 1;
                answered.fetch_add(1, Ordering::Relaxed);
            }
            None => t.strays += 1,
        }
    }
    t
}

/// Status code, class and send time of a reply to one of our requests.
fn parse_reply(d: &[u8], prefix: &str) -> Option<(u16, u8, u64)> {
    let code = std::str::from_utf8(d.strip_prefix(b"SIP/2.0 ")?.get(..3)?)
        .ok()?
        .parse()
        .ok()?;
    let at = find(d, b"\nCall-ID:")? + "\nCall-ID:".len();
    let rest = &d[at..];
    let start = find(rest, prefix.as_bytes())? + prefix.len();
    let end = rest[start..].iter().position(|b| *b == b'\r')? + start;
    let mut f = std::str::from_utf8(&rest[start..end]).ok()?.split('-');
    let class = f.next()?.parse().ok()?;
    let ms = f.next()?.parse().ok()?;
    Some((code, class, ms))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `i`-th of `n` consecutive addresses from `base` (wrapping at `n`),
/// for spreading requests over many sources.
pub fn nth_source(base: Ipv4Addr, n: u32, i: u64) -> Ipv4Addr {
    let ip = Ipv4Addr::from(u32::from(base) + (i % n as u64) as u32);
    debug_assert!(ip.is_loopback());
    ip
}
