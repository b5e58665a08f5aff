//! Just enough SIP: what a message is (request and method, or reply and
//! status), the few headers the emulated script reads, and where one
//! message ends in a TCP stream (the blank line, then Content-Length).

/// A request's method or a reply's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    Request(&'a [u8]),
    Reply(u16),
}

/// One parsed message: its start line and the headers the replay uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sip<'a> {
    pub kind: Kind<'a>,
    /// The user part of the To URI (`alice` of `<sip:alice@example.com>`).
    pub to_user: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub call_id: Option<&'a [u8]>,
    pub cseq: Option<&'a [u8]>,
    /// A request's Request-URI host (`example.com` of
    /// `INVITE sip:bob@example.com:5060 SIP/2.0`): `$rd` in the script.
    pub ruri_host: Option<&'a [u8]>,
}

/// Longest start line or header block looked at before giving up on a
/// stream that never ends its headers.
pub const MAX_HEADERS: usize = 64 * 1024;

/// The first line of `buf` (without its CR LF), if it is complete.
fn first_line(buf: &[u8]) -> Option<&[u8]> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    Some(trim_cr(&buf[..end]))
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_token(b: &[u8]) -> bool {
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(c))
}

/// The start line's kind: `METHOD uri SIP/2.0` or `SIP/2.0 200 OK`.
fn start_line(line: &[u8]) -> Option<Kind<'_>> {
    if let Some(rest) = line.strip_prefix(b"SIP/2.0 ") {
        let code = rest.get(..3)?;
        if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&c| c != b' ') {
            return None;
        }
        let status = std::str::from_utf8(code).ok()?.parse().ok()?;
        return (100..700).contains(&status).then_some(Kind::Reply(status));
    }
    let mut parts = line.split(|&b| b == b' ');
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && is_token(method) && !uri.is_empty() && version == b"SIP/2.0")
        .then_some(Kind::Request(method))
}

/// Whether a stream or datagram starting with `buf` carries SIP: `None`
/// while its first line is incomplete. Leading CR LF (keep-alives) are
/// skipped.
pub fn starts_like_sip(buf: &[u8]) -> Option<bool> {
    let buf = skip_keepalive(buf);
    match first_line(buf) {
        Some(line) => Some(start_line(line).is_some()),
        None if buf.len() > 1024 => Some(false),
        None => None,
    }
}

fn skip_keepalive(buf: &[u8]) -> &[u8] {
    let n = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    &buf[n..]
}

/// Where the header block ends: the offset just past its blank line.
fn headers_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let next = i + nl + 1;
        match buf.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if buf.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            _ => i = next,
        }
    }
    None
}

/// The header lines between the start line and the blank line, as
/// (name, value) with the value's surrounding blanks trimmed.
fn headers(block: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    block
        .split(|&b| b == b'\n')
        .skip(1)
        .map(trim_cr)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            Some((l[..colon].trim_ascii(), l[colon + 1..].trim_ascii()))
        })
}

/// A header's value by its full or compact name.
fn header<'a>(block: &'a [u8], full: &str, compact: Option<&str>) -> Option<&'a [u8]> {
    headers(block)
        .find(|(n, _)| {
            n.eq_ignore_ascii_case(full.as_bytes())
                || compact.is_some_and(|c| n.eq_ignore_ascii_case(c.as_bytes()))
        })
        .map(|(_, v)| v)
}

/// What the start of a TCP stream's unread bytes holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A message ends this many bytes in.
    Message(usize),
    /// Keep-alive line ends to drop.
    Skip(usize),
    /// More bytes are needed.
    Need,
    /// No header block ends within [`MAX_HEADERS`]: not a SIP stream.
    Bad,
}

/// Finds the first message of a stream: headers up to the blank line,
/// then Content-Length bytes of body (none when it is absent).
pub fn frame(buf: &[u8]) -> Frame {
    let ka = buf.len() - skip_keepalive(buf).len();
    if ka > 0 {
        return Frame::Skip(ka);
    }
    let Some(end) = headers_end(buf) else {
        return if buf.len() > MAX_HEADERS {
            Frame::Bad
        } else {
            Frame::Need
        };
    };
    let body = header(&buf[..end], "Content-Length", Some("l"))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    match end.checked_add(body) {
        Some(total) if total <= buf.len() => Frame::Message(total),
        _ => Frame::Need,
    }
}

/// The user part of a To (or From) header's URI: `alice` in
/// `"Alice" <sip:alice@example.com>;tag=1` or `sip:alice@example.com`.
pub fn uri_user(value: &[u8]) -> Option<&[u8]> {
    let uri = match value.iter().position(|&b| b == b'<') {
        Some(lt) => {
            let rest = &value[lt + 1..];
            &rest[..rest.iter().position(|&b| b == b'>')?]
        }
        None => {
            let end = value.iter().position(|&b| b == b';').unwrap_or(value.len());
            &value[..end]
        }
    };
    let colon = uri.iter().position(|&b| b == b':')?;
    let (scheme, rest) = (&uri[..colon], &uri[colon + 1..]);
    if scheme.eq_ignore_ascii_case(b"tel") {
        let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
        return Some(&rest[..end]).filter(|u| !u.is_empty());
    }
    if !scheme.eq_ignore_ascii_case(b"sip") && !scheme.eq_ignore_ascii_case(b"sips") {
        return None;
    }
    let at = rest.iter().position(|&b| b == b'@')?;
    let userinfo = &rest[..at];
    let user = &userinfo[..userinfo
        .iter()
        .position(|&b| b == b':')
        .unwrap_or(userinfo.len())];
    Some(user).filter(|u| !u.is_empty())
}

/// The host of a SIP URI (`sip:user@host:port;params`), IPv6 references
/// with their brackets.
pub fn uri_host(uri: &[u8]) -> Option<&[u8]> {
    let colon = uri.iter().position(|&b| b == b':')?;
    let rest = &uri[colon + 1..];
    let rest = match rest.iter().position(|&b| b == b'@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let end = if rest.first() == Some(&b'[') {
        rest.iter().position(|&b| b == b']').map(|i| i + 1)?
    } else {
        rest.iter()
            .position(|&b| b == b':' || b == b';' || b == b'?' || b == b'>')
            .unwrap_or(rest.len())
    };
    Some(&rest[..end]).filter(|h| !h.is_empty())
}

/// Parses one message; `None` when it is not SIP.
pub fn parse(msg: &[u8]) -> Option<Sip<'_>> {
    let msg = skip_keepalive(msg);
    let kind = start_line(first_line(msg)?)?;
    let block = &msg[..headers_end(msg).unwrap_or(msg.len())];
    let ruri_host = match kind {
        Kind::Request(_) => first_line(msg)
            .and_then(|l| l.split(|&b| b == b' ').nth(1))
            .and_then(uri_host),
        Kind::Reply(_) => None,
    };
    Some(Sip {
        kind,
        ruri_host,
        to_user: header(block, "To", Some("t")).and_then(uri_user),
        user_agent: header(block, "User-Agent", None),
        call_id: header(block, "Call-ID", Some("i")),
        cseq: header(block, "CSeq", None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x\r\nTo: <sip:bob@example.com>\r\nUser-Agent: friendly-scanner\r\nCall-ID: 1@x\r\nCSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn request_and_headers() {
        let s = parse(OPTIONS).unwrap();
        assert_eq!(s.kind, Kind::Request(b"OPTIONS"));
        assert_eq!(s.to_user, Some(&b"bob"[..]));
        assert_eq!(s.user_agent, Some(&b"friendly-scanner"[..]));
        assert_eq!(s.call_id, Some(&b"1@x"[..]));
        assert_eq!(s.cseq, Some(&b"7 OPTIONS"[..]));
    }

    #[test]
    fn reply_compact_headers_and_lf_only() {
        let s = parse(
            b"SIP/2.0 403 Forbidden\nt: \"A\" <sip:alice:pw@x;transport=tcp>;tag=9\ni: c\n\n",
        )
        .unwrap();
        assert_eq!(s.kind, Kind::Reply(403));
        assert_eq!(s.to_user, Some(&b"alice"[..]));
        assert_eq!(s.call_id, Some(&b"c"[..]));
    }

    #[test]
    fn not_sip() {
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n").is_none());
        assert!(parse(b"\x80\x00\x12\x34rtp").is_none());
        assert!(parse(b"SIP/2.0 20 OK\r\n\r\n").is_none());
        assert_eq!(
            starts_like_sip(b"\r\n\r\nINVITE sip:x SIP/2.0\r\n"),
            Some(true)
        );
        assert_eq!(starts_like_sip(b"INVITE sip:x SI"), None);
        assert_eq!(starts_like_sip(b"GET / HTTP/1.1\r\n"), Some(false));
    }

    #[test]
    fn uri_users() {
        assert_eq!(
            uri_user(b"sip:alice@example.com;tag=1"),
            Some(&b"alice"[..])
        );
        assert_eq!(
            uri_user(b"<tel:+4930123;phone-context=x>"),
            Some(&b"+4930123"[..])
        );
        assert_eq!(uri_user(b"<sip:example.com>"), None);
        assert_eq!(uri_user(b"<http://x@y>"), None);
    }

    #[test]
    fn framing() {
        let two = [OPTIONS, OPTIONS].concat();
        assert_eq!(frame(&two), Frame::Message(OPTIONS.len()));
        assert_eq!(frame(&OPTIONS[..20]), Frame::Need);
        assert_eq!(frame(b"\r\n\r\nOPT"), Frame::Skip(4));
        let body = b"MESSAGE sip:a@b SIP/2.0\r\nl: 5\r\n\r\nhello+next";
        assert_eq!(frame(body), Frame::Message(body.len() - 5));
        assert_eq!(frame(&body[..body.len() - 7]), Frame::Need);
        assert_eq!(frame(&vec![b'x'; MAX_HEADERS + 1]), Frame::Bad);
    }
}
