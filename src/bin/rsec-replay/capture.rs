//! Reading the input into SIP messages in capture order: a pcap or pcapng
//! file (the container read by `pcap-file`, the link, IP, UDP and TCP
//! headers by `etherparse`), or a plain SIP log.
//!
//! UDP: one datagram is one message. TCP: each flow's payload is
//! reassembled in capture order (retransmitted bytes dropped, a gap
//! counted and the stream picked up again at the next start line) and cut
//! into messages at the blank line plus Content-Length.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, PcapError, TsResolution};

use crate::sip::{self, Frame};

/// The input's format, told from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
    SipLog,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::PcapNg => "pcapng",
            Format::SipLog => "siplog",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
    /// From a SIP log: no transport recorded.
    Log,
}

/// One message as captured.
pub struct Message<'a> {
    /// Capture time, microseconds since the Unix epoch.
    pub ts_us: u64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub bytes: &'a [u8],
}

/// What was read, and what was left out.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Packets (or SIP-log entries) read.
    pub packets: u64,
    /// Messages handed on (SIP or not: the caller parses them).
    pub messages: u64,
    /// Of which carried by UDP, and by TCP.
    pub udp: u64,
    pub tcp: u64,
    /// UDP datagrams that are not SIP (RTP, DNS...; keep-alives aside).
    pub not_sip: u64,
    /// Packets that are neither IPv4/IPv6 nor UDP/TCP, or are malformed.
    pub undecodable: u64,
    /// IP fragments (not reassembled).
    pub fragments: u64,
    /// Holes in a TCP flow (a segment missing from the capture).
    pub tcp_gaps: u64,
    /// TCP messages given up on: headers or a body that never end.
    pub tcp_dropped: u64,
    /// Packets whose timestamp is earlier than the one before (read as
    /// the one before).
    pub out_of_order: u64,
    pub first_us: Option<u64>,
    pub last_us: u64,
}

/// An input that cannot be read, naming the file.
#[derive(Debug)]
pub struct InputError {
    pub path: String,
    pub what: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

/// Reads `path` and calls `on` with every message in capture order. `on`
/// may stop the reading with an error of its own.
pub fn read(
    path: &Path,
    on: &mut dyn FnMut(&Message) -> Result<(), String>,
) -> Result<(Format, Stats), InputError> {
    let fail = |what: String| InputError {
        path: path.display().to_string(),
        what,
    };
    let mut file = BufReader::new(File::open(path).map_err(|e| fail(e.to_string()))?);
    let head = file.fill_buf().map_err(|e| fail(e.to_string()))?;
    let format = match head.get(..4) {
        Some([0xa1, 0xb2, 0xc3, 0xd4] | [0xd4, 0xc3, 0xb2, 0xa1])
        | Some([0xa1, 0xb2, 0x3c, 0x4d] | [0x4d, 0x3c, 0xb2, 0xa1]) => Format::Pcap,
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => Format::PcapNg,
        _ if head.trim_ascii_start().starts_with(b"#") => Format::SipLog,
        _ if head.is_empty() => return Err(fail("empty file".into())),
        _ => {
            return Err(fail(
                "not a pcap, pcapng or SIP log file (a SIP log starts with a \
                 '# <unix-seconds.micros> <src-ip>:<port> -> <dst-ip>:<port>' line)"
                    .into(),
            ))
        }
    };
    let mut r = Reader {
        on,
        stats: Stats::default(),
        flows: HashMap::new(),
    };
    match format {
        Format::Pcap => r.pcap(file),
        Format::PcapNg => r.pcapng(file),
        Format::SipLog => r.siplog(file),
    }
    .map_err(fail)?;
    Ok((format, r.stats))
}

/// How a link type's frames are decoded.
#[derive(Clone, Copy, Debug)]
enum Link {
    Ethernet,
    Sll,
    Sll2,
    /// The IP header first.
    Raw,
    /// BSD loopback: a 4-byte address family, then IP.
    Null,
}

impl Link {
    fn of(dl: DataLink) -> Result<Link, String> {
        Ok(match dl {
            DataLink::ETHERNET => Link::Ethernet,
            DataLink::LINUX_SLL => Link::Sll,
            DataLink::LINUX_SLL2 => Link::Sll2,
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Link::Raw,
            DataLink::NULL | DataLink::LOOP => Link::Null,
            other => {
                return Err(format!(
                    "link type {} ({other:?}) is not supported (Ethernet, LINUX_SLL, \
                     LINUX_SLL2, RAW, IPV4, IPV6, NULL and LOOP are)",
                    u32::from(other)
                ))
            }
        })
    }
}

/// One direction of a TCP connection.
type FlowKey = (SocketAddr, SocketAddr);

#[derive(Default)]
struct Flow {
    /// The sequence number of the next byte expected.
    next: u32,
    /// Bytes not yet made into messages.
    buf: Vec<u8>,
    /// `buf` starts at a message's start line; until then (a flow met
    /// mid-stream, after a gap, or not SIP at all) bytes are dropped up
    /// to the next line that starts one.
    synced: bool,
}

/// Longest a flow's unread bytes may grow without making a message.
const MAX_FLOW_BUF: usize = 1 << 20;

struct Reader<'c> {
    on: &'c mut dyn FnMut(&Message) -> Result<(), String>,
    stats: Stats,
    flows: HashMap<FlowKey, Flow>,
}

impl Reader<'_> {
    /// The packet's time, never earlier than the previous packet's.
    fn clock(&mut self, ts_us: u64) -> u64 {
        self.stats.packets += 1;
        let first = *self.stats.first_us.get_or_insert(ts_us);
        let t = if ts_us < self.stats.last_us {
            self.stats.out_of_order += 1;
            self.stats.last_us
        } else {
            ts_us
        };
        self.stats.last_us = t.max(first);
        self.stats.last_us
    }

    fn pcap(&mut self, file: impl Read) -> Result<(), String> {
        let mut rd = PcapReader::new(file).map_err(|e| format!("bad pcap header: {}", why(e)))?;
        let header = rd.header();
        let link = Link::of(header.datalink)?;
        let nanos = header.ts_resolution == TsResolution::NanoSecond;
        let mut n = 0u64;
        while let Some(p) = rd.next_raw_packet() {
            n += 1;
            // Unvalidated on purpose: a packet cut at the snap length is
            // still worth its first bytes.
            let p = p.map_err(|e| format!("packet {n}: {}", why(e)))?;
            let frac = if nanos { p.ts_frac / 1000 } else { p.ts_frac };
            if frac >= 1_000_000 {
                return Err(format!(
                    "packet {n}: timestamp fraction {} out of range",
                    p.ts_frac
                ));
            }
            let ts = self.clock(p.ts_sec as u64 * 1_000_000 + frac as u64);
            self.frame(link, &p.data, ts)?;
        }
        Ok(())
    }

    fn pcapng(&mut self, file: impl Read) -> Result<(), String> {
        let mut rd = PcapNgReader::new(file)
            .map_err(|e| format!("bad pcapng section header: {}", why(e)))?;
        // Per interface of the current section: its link, its timestamp
        // unit and offset (pcap-file hands the raw 64-bit count over as
        // nanoseconds whatever if_tsresol says).
        let mut ifaces: Vec<(Result<Link, String>, u8, u64)> = Vec::new();
        let mut n = 0u64;
        while let Some(block) = rd.next_block() {
            n += 1;
            let block = block.map_err(|e| format!("block {n}: {}", why(e)))?;
            match block {
                Block::SectionHeader(_) => ifaces.clear(),
                Block::InterfaceDescription(idb) => {
                    let (mut resol, mut offset) = (6, 0);
                    for o in &idb.options {
                        match o {
                            InterfaceDescriptionOption::IfTsResol(r) => resol = *r,
                            InterfaceDescriptionOption::IfTsOffset(s) => offset = *s,
                            _ => {}
                        }
                    }
                    ifaces.push((Link::of(idb.linktype), resol, offset));
                }
                Block::EnhancedPacket(epb) => {
                    let Some((link, resol, offset)) = ifaces.get(epb.interface_id as usize) else {
                        return Err(format!(
                            "block {n}: packet on interface {} which was never described",
                            epb.interface_id
                        ));
                    };
                    let link = link.clone().map_err(|e| format!("block {n}: {e}"))?;
                    let us = scale_to_us(epb.timestamp.as_nanos(), *resol)
                        .and_then(|us| us.checked_add(offset.checked_mul(1_000_000)?))
                        .ok_or_else(|| format!("block {n}: timestamp out of range"))?;
                    let ts = self.clock(us);
                    self.frame(link, &epb.data, ts)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The plain SIP log: each message preceded by
    /// `# <unix-seconds.micros> <src-ip>:<port> -> <dst-ip>:<port>`.
    fn siplog(&mut self, mut file: impl BufRead) -> Result<(), String> {
        let mut cur: Option<(u64, SocketAddr, SocketAddr, Vec<u8>)> = None;
        let (mut line, mut lineno) = (Vec::new(), 0u64);
        loop {
            line.clear();
            let got = file
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("line {}: {e}", lineno + 1))?;
            lineno += 1;
            let header = if got == 0 {
                None
            } else {
                log_header(&line).map_err(|e| format!("line {lineno}: {e}"))?
            };
            if got == 0 || header.is_some() {
                if let Some((ts, src, dst, bytes)) = cur.take() {
                    let ts = self.clock(ts);
                    self.message(ts, src, dst, Transport::Log, &bytes)?;
                }
                match header {
                    Some((ts, src, dst)) => cur = Some((ts, src, dst, Vec::new())),
                    None => return Ok(()),
                }
                continue;
            }
            match &mut cur {
                Some((_, _, _, bytes)) => bytes.extend_from_slice(&line),
                None if line.trim_ascii().is_empty() || line.starts_with(b"#") => {}
                None => {
                    return Err(format!(
                        "line {lineno}: text before the first \
                         '# <unix-seconds.micros> <src-ip>:<port> -> <dst-ip>:<port>' line"
                    ))
                }
            }
        }
    }

    /// Decodes one captured frame down to UDP or TCP.
    fn frame(&mut self, link: Link, data: &[u8], ts: u64) -> Result<(), String> {
        let sliced = match link {
            Link::Ethernet => SlicedPacket::from_ethernet(data),
            // The protocol field read here rather than by etherparse,
            // which refuses ARPHRD_LOOPBACK: what `tcpdump -i any` records
            // for every packet on lo.
            Link::Sll | Link::Sll2 => {
                let (proto_at, len) = if matches!(link, Link::Sll) {
                    (14, 16)
                } else {
                    (0, 20)
                };
                match data.get(len..) {
                    Some(rest) => {
                        let proto = u16::from_be_bytes([data[proto_at], data[proto_at + 1]]);
                        SlicedPacket::from_ether_type(EtherType(proto), rest)
                    }
                    None => {
                        self.stats.undecodable += 1;
                        return Ok(());
                    }
                }
            }
            Link::Raw => SlicedPacket::from_ip(data),
            Link::Null => match data.get(4..) {
                Some(rest) => SlicedPacket::from_ip(rest),
                None => {
                    self.stats.undecodable += 1;
                    return Ok(());
                }
            },
        };
        let Ok(p) = sliced else {
            self.stats.undecodable += 1;
            return Ok(());
        };
        let (src, dst, fragmented) = match &p.net {
            Some(NetSlice::Ipv4(v4)) => (
                IpAddr::V4(v4.header().source_addr()),
                IpAddr::V4(v4.header().destination_addr()),
                v4.is_payload_fragmented(),
            ),
            Some(NetSlice::Ipv6(v6)) => (
                IpAddr::V6(v6.header().source_addr()),
                IpAddr::V6(v6.header().destination_addr()),
                v6.is_payload_fragmented(),
            ),
            _ => {
                self.stats.undecodable += 1;
                return Ok(());
            }
        };
        if fragmented {
            self.stats.fragments += 1;
            return Ok(());
        }
        match &p.transport {
            Some(TransportSlice::Udp(u)) => {
                let (s, d) = (
                    SocketAddr::new(src, u.source_port()),
                    SocketAddr::new(dst, u.destination_port()),
                );
                let payload = u.payload();
                match sip::starts_like_sip(payload) {
                    Some(true) => self.message(ts, s, d, Transport::Udp, payload),
                    // Keep-alives, RTP, DNS...
                    _ => {
                        if !payload.trim_ascii().is_empty() {
                            self.stats.not_sip += 1;
                        }
                        Ok(())
                    }
                }
            }
            Some(TransportSlice::Tcp(t)) => {
                let key = (
                    SocketAddr::new(src, t.source_port()),
                    SocketAddr::new(dst, t.destination_port()),
                );
                self.tcp(
                    key,
                    t.sequence_number(),
                    t.payload(),
                    t.fin() || t.rst(),
                    ts,
                )
            }
            _ => {
                self.stats.undecodable += 1;
                Ok(())
            }
        }
    }

    /// Adds a segment to its flow and hands on every message completed.
    fn tcp(
        &mut self,
        key: FlowKey,
        seq: u32,
        payload: &[u8],
        closing: bool,
        ts: u64,
    ) -> Result<(), String> {
        let mut flow = match self.flows.remove(&key) {
            Some(f) => f,
            None if payload.is_empty() => return Ok(()),
            None => Flow {
                next: seq,
                ..Flow::default()
            },
        };
        // Where this segment starts against the next byte expected.
        let ahead = seq.wrapping_sub(flow.next) as i32;
        let data = if ahead < 0 {
            // A retransmission, whole or in part.
            payload
                .get(ahead.unsigned_abs() as usize..)
                .unwrap_or_default()
        } else {
            if ahead > 0 && !payload.is_empty() {
                self.stats.tcp_gaps += 1;
                flow.buf.clear();
                flow.synced = false;
            }
            payload
        };
        if !data.is_empty() {
            flow.next = seq.wrapping_add(payload.len() as u32);
            flow.buf.extend_from_slice(data);
        }
        let r = self.drain(&mut flow, key, ts);
        if !closing {
            self.flows.insert(key, flow);
        }
        r
    }

    /// Hands on the complete messages at the start of a flow's buffer.
    fn drain(&mut self, flow: &mut Flow, (src, dst): FlowKey, ts: u64) -> Result<(), String> {
        if !flow.synced {
            // A flow met mid-stream, or after a gap: picked up at the
            // first line that starts a message.
            let mut off = 0;
            let at = flow.buf.split_inclusive(|&b| b == b'\n').find_map(|line| {
                let here = off;
                off += line.len();
                (sip::starts_like_sip(line) == Some(true)).then_some(here)
            });
            match at {
                Some(at) => {
                    flow.buf.drain(..at);
                    flow.synced = true;
                }
                None => {
                    // Keeps a partial last line that may yet become one.
                    let keep = flow
                        .buf
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1);
                    let keep = keep.max(flow.buf.len().saturating_sub(1024));
                    flow.buf.drain(..keep);
                    return Ok(());
                }
            }
        }
        let mut start = 0;
        loop {
            match sip::frame(&flow.buf[start..]) {
                Frame::Message(n) => {
                    let msg = flow.buf[start..start + n].to_vec();
                    start += n;
                    self.message(ts, src, dst, Transport::Tcp, &msg)?;
                }
                Frame::Skip(n) => start += n,
                Frame::Need if flow.buf.len() - start <= MAX_FLOW_BUF => break,
                Frame::Need | Frame::Bad => {
                    // Headers that never end, or a body that never comes:
                    // dropped, and the stream picked up again later.
                    self.stats.tcp_dropped += 1;
                    flow.buf.clear();
                    flow.synced = false;
                    return Ok(());
                }
            }
        }
        flow.buf.drain(..start);
        Ok(())
    }

    fn message(
        &mut self,
        ts_us: u64,
        src: SocketAddr,
        dst: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) -> Result<(), String> {
        self.stats.messages += 1;
        match transport {
            Transport::Udp => self.stats.udp += 1,
            Transport::Tcp => self.stats.tcp += 1,
            Transport::Log => {}
        }
        (self.on)(&Message {
            ts_us,
            src,
            dst,
            bytes,
        })
    }
}

/// pcap-file's error in words: its own for a read cut short is "Error
/// reading bytes".
fn why(e: PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "the file ends inside it (cut short?)".into(),
        PcapError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file ends inside it (cut short?)".into()
        }
        PcapError::IoError(io) => io.to_string(),
        e => e.to_string(),
    }
}

/// A pcapng timestamp count in microseconds: `resol` is if_tsresol
/// (a power of ten, or of two with the high bit set).
fn scale_to_us(count: u128, resol: u8) -> Option<u64> {
    let exp = u32::from(resol & 0x7f);
    let us = if resol & 0x80 == 0 {
        if exp <= 6 {
            count.checked_mul(10u128.checked_pow(6 - exp)?)?
        } else {
            count / 10u128.checked_pow(exp - 6)?
        }
    } else {
        count.checked_mul(1_000_000)? >> exp.min(127)
    };
    u64::try_from(us).ok()
}

/// A SIP log's message header line, `None` for any other line.
fn log_header(line: &[u8]) -> Result<Option<(u64, SocketAddr, SocketAddr)>, String> {
    let Some(rest) = line.strip_prefix(b"# ") else {
        return Ok(None);
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return Ok(None);
    };
    let words: Vec<&str> = rest.split_ascii_whitespace().collect();
    // Only a line of this shape is a header; any other '#' line inside a
    // message is the message's.
    if words.len() < 4 || words[2] != "->" || !words[0].starts_with(|c: char| c.is_ascii_digit()) {
        return Ok(None);
    }
    let ts = parse_time(words[0])?;
    let addr = |w: &str| {
        w.parse::<SocketAddr>()
            .map_err(|_| format!("'{w}' is not an address:port (write IPv6 as [2001:db8::1]:5060)"))
    };
    Ok(Some((ts, addr(words[1])?, addr(words[3])?)))
}

/// `1700000000.123456` in microseconds.
fn parse_time(w: &str) -> Result<u64, String> {
    let bad = || format!("'{w}' is not a time in <unix-seconds.micros>");
    let (s, frac) = w.split_once('.').unwrap_or((w, ""));
    if s.is_empty()
        || !s.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let secs: u64 = s.parse().map_err(|_| bad())?;
    let micros: u64 = format!("{:0<6}", &frac[..frac.len().min(6)])
        .parse()
        .map_err(|_| bad())?;
    secs.checked_mul(1_000_000)
        .and_then(|us| us.checked_add(micros))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_resolutions() {
        assert_eq!(scale_to_us(1_500_000, 6), Some(1_500_000));
        assert_eq!(scale_to_us(1_500_000_000, 9), Some(1_500_000));
        assert_eq!(scale_to_us(15, 1), Some(1_500_000));
        assert_eq!(scale_to_us(3 << 19, 0x80 | 20), Some(1_500_000));
    }

    #[test]
    fn log_headers() {
        let h = log_header(b"# 1700000000.25 192.0.2.1:5060 -> [2001:db8::1]:5062\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.0, 1_700_000_000_250_000);
        assert_eq!(h.1, "192.0.2.1:5060".parse().unwrap());
        assert_eq!(h.2, "[2001:db8::1]:5062".parse().unwrap());
        assert_eq!(log_header(b"# a comment\n").unwrap(), None);
        assert_eq!(log_header(b"OPTIONS sip:x SIP/2.0\n").unwrap(), None);
        assert!(log_header(b"# 17x 1.2.3.4:5 -> 1.2.3.4:6\n").is_err());
        assert!(log_header(b"# 17 1.2.3.4 -> 1.2.3.4:6\n").is_err());
    }
}
