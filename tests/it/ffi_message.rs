//! Call's message accessors (src/ffi/script.rs) on sip_msg images laid out
//! with the declarations of src/ffi/sys.rs, this test binary standing in
//! for the core's parse_headers_aux. The declarations themselves are held
//! to the real headers by src/ffi/layout.rs and `make check-abi`; this
//! checks what the accessors read through them and what they ask the
//! parser for.

use std::ffi::{c_char, c_int, CStr};

use rsec::engine::scanner::ScannerPatterns;
use rsec::ffi::script::Call;
use rsec::ffi::sys::{
    HdrField, HdrFlags, SipMsg, SipMsgHead, Str, HDR_EOH_F, HDR_OTHER_T, HDR_SHORTCUT_USER_AGENT,
    HDR_USERAGENT_F, HDR_USERAGENT_T, SIP_REPLY, SIP_REQUEST,
};

const NAME: &CStr = c"test_function";

/// A message: the leading fields OpenSIPS's sip_msg starts with, then what
/// the stand-in parser works from. `head` must stay first: the parser gets
/// a pointer to it and finds the rest behind it.
#[repr(C)]
// Boxed: headers are linked by address and move from one list to the other.
#[allow(clippy::vec_box)]
struct FakeMsg {
    head: SipMsgHead,
    /// Headers the parser has not reached yet, in message order.
    unparsed: Vec<Box<HdrField>>,
    /// Headers already linked into `head.headers`, kept alive here.
    parsed: Vec<Box<HdrField>>,
    /// Every parser call: (flags, next, sip_well_known_parse).
    calls: Vec<(HdrFlags, c_int, c_int)>,
    /// The parser fails (a malformed header) instead of parsing.
    malformed: bool,
    /// Owns every byte the `str`s point at.
    _text: Vec<Box<[u8]>>,
}

/// The core's parser, as rsec calls it: parses headers one by one, linking
/// each and setting its type's bit, until every bit of `flags` is set or
/// the headers end (which sets every bit, as HDR_EOH_F does).
#[no_mangle]
pub unsafe extern "C" fn parse_headers_aux(
    msg: *mut SipMsg,
    flags: HdrFlags,
    next: c_int,
    sip_well_known_parse: c_int,
) -> c_int {
    let m = &mut *(msg as *mut FakeMsg);
    m.calls.push((flags, next, sip_well_known_parse));
    if m.malformed {
        return -1;
    }
    while m.head.parsed_flag & flags != flags {
        if m.unparsed.is_empty() {
            m.head.parsed_flag = HDR_EOH_F;
            break;
        }
        let mut h = m.unparsed.remove(0);
        let p: *mut HdrField = &mut *h;
        if m.head.headers.is_null() {
            m.head.headers = p;
        } else {
            (*m.head.last_header).next = p;
        }
        m.head.last_header = p;
        m.head.parsed_flag |= 1 << h.type_;
        if h.type_ == HDR_USERAGENT_T && m.head.hdr_shortcuts[HDR_SHORTCUT_USER_AGENT].is_null() {
            m.head.hdr_shortcuts[HDR_SHORTCUT_USER_AGENT] = p;
        }
        m.parsed.push(h);
    }
    0
}

/// 3.4's parser, which rsec calls there instead: the same, as well-known
/// headers are always parsed.
#[cfg(opensips_abi = "3.4")]
#[no_mangle]
pub unsafe extern "C" fn parse_headers(msg: *mut SipMsg, flags: HdrFlags, next: c_int) -> c_int {
    parse_headers_aux(msg, flags, next, 1)
}

struct Builder {
    text: Vec<Box<[u8]>>,
}

impl Builder {
    fn str(&mut self, s: &[u8]) -> Str {
        let b: Box<[u8]> = s.into();
        let st = Str {
            s: b.as_ptr() as *mut c_char,
            len: b.len() as c_int,
        };
        self.text.push(b);
        st
    }
}

/// A message of `kind` whose first line's first token is `first` (the
/// method, or the version of a reply), with `headers` as (type, name,
/// value), none parsed yet.
fn message(kind: c_int, first: &str, headers: &[(c_int, &str, &str)]) -> Box<FakeMsg> {
    let mut b = Builder { text: Vec::new() };
    // SAFETY: SipMsgHead is integers and raw pointers; all-zero is a valid
    // value of each (0, NULL), as OpenSIPS's own zeroed messages are.
    let mut head: SipMsgHead = unsafe { std::mem::zeroed() };
    head.first_line.type_ = kind;
    let word = b.str(first.as_bytes());
    if kind == SIP_REQUEST {
        head.first_line.u.request.method = word;
        head.first_line.u.request.uri = b.str(b"sip:100@192.0.2.1");
        head.first_line.u.request.version = b.str(b"SIP/2.0");
    } else {
        head.first_line.u.reply.version = word;
        head.first_line.u.reply.status = b.str(b"200");
        head.first_line.u.reply.reason = b.str(b"OK");
        head.first_line.u.reply.statuscode = 200;
    }
    let unparsed = headers
        .iter()
        .map(|&(type_, name, value)| {
            Box::new(HdrField {
                type_,
                name: b.str(name.as_bytes()),
                body: b.str(value.as_bytes()),
                len: (name.len() + 2 + value.len() + 2) as c_int,
                parsed: std::ptr::null_mut(),
                next: std::ptr::null_mut(),
                sibling: std::ptr::null_mut(),
            })
        })
        .collect();
    Box::new(FakeMsg {
        head,
        unparsed,
        parsed: Vec::new(),
        calls: Vec::new(),
        malformed: false,
        _text: b.text,
    })
}

fn call(m: &mut FakeMsg) -> Call {
    // SAFETY: `m` outlives every use of the Call in these tests.
    unsafe { Call::new(NAME, m as *mut FakeMsg as *mut SipMsg) }
}

const VIA: c_int = 1;
const FROM: c_int = 4;
const CSEQ: c_int = 5;
const CONTACT: c_int = 7;

fn invite_headers(ua: &str) -> Vec<(c_int, &str, &str)> {
    vec![
        (VIA, "Via", "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-1"),
        (FROM, "From", "<sip:100@192.0.2.1>;tag=1"),
        (HDR_USERAGENT_T, "User-Agent", ua),
        (CONTACT, "Contact", "<sip:100@192.0.2.9>"),
        (CSEQ, "CSeq", "1 INVITE"),
    ]
}

#[test]
fn a_request_has_its_method_and_is_a_request() {
    for method in ["INVITE", "REGISTER", "OPTIONS", "X-CUSTOM"] {
        let mut m = message(SIP_REQUEST, method, &[]);
        let c = call(&mut m);
        assert!(c.is_request());
        assert_eq!(c.method(), Some(method.as_bytes()));
    }
}

#[test]
fn a_reply_has_no_method() {
    let mut m = message(SIP_REPLY, "SIP/2.0", &[]);
    let c = call(&mut m);
    assert!(!c.is_request());
    assert_eq!(c.method(), None);
}

#[test]
fn without_a_message_there_is_nothing_to_read() {
    // NULL outside message routes, and the core's FAKED_REPLY marker.
    for p in [std::ptr::null_mut(), usize::MAX as *mut SipMsg] {
        // SAFETY: both are values OpenSIPS may pass; neither is read.
        let c = unsafe { Call::new(NAME, p) };
        assert!(!c.is_request());
        assert_eq!(c.method(), None);
        assert_eq!(c.user_agent(), None);
        assert_eq!(c.source(), None);
    }
}

#[test]
fn a_requests_user_agent_is_parsed_up_to_and_read() {
    let mut m = message(SIP_REQUEST, "INVITE", &invite_headers("friendly-scanner"));
    assert_eq!(call(&mut m).user_agent(), Some(&b"friendly-scanner"[..]));
    assert_eq!(
        m.calls,
        vec![(HDR_USERAGENT_F, 0, 1)],
        "parse_headers(msg, HDR_USERAGENT_F, 0)"
    );
    assert_eq!(HDR_USERAGENT_F, 1 << 27);
    assert_eq!(m.unparsed.len(), 2, "parsing stopped at the User-Agent");
    // Asked again: the header is there already, the parser is not called.
    let c = call(&mut m);
    let ua = c.user_agent().unwrap();
    assert_eq!(ua, b"friendly-scanner");
    assert_eq!(
        ScannerPatterns::builtin().matches(ua),
        Some("friendly-scanner")
    );
    assert_eq!(m.calls.len(), 1);
}

#[test]
fn the_first_of_two_user_agents_is_read() {
    let mut h = invite_headers("Yealink SIP-T46S 66.86.0.15");
    h.push((HDR_USERAGENT_T, "User-Agent", "sipvicious"));
    let mut m = message(SIP_REQUEST, "REGISTER", &h);
    assert_eq!(
        call(&mut m).user_agent(),
        Some(&b"Yealink SIP-T46S 66.86.0.15"[..])
    );
}

#[test]
fn a_request_without_user_agent_has_none_after_parsing_every_header() {
    let h: Vec<_> = invite_headers("x")
        .into_iter()
        .filter(|h| h.0 != HDR_USERAGENT_T)
        .collect();
    let mut m = message(SIP_REQUEST, "OPTIONS", &h);
    assert_eq!(call(&mut m).user_agent(), None);
    assert!(m.unparsed.is_empty());
    assert_eq!(m.head.parsed_flag, HDR_EOH_F);
    // The end of the headers was reached: no second parse.
    assert_eq!(call(&mut m).user_agent(), None);
    assert_eq!(m.calls.len(), 1);
}

#[test]
fn a_parse_failure_gives_no_user_agent() {
    let mut m = message(SIP_REQUEST, "INVITE", &invite_headers("pplsip"));
    m.malformed = true;
    assert_eq!(call(&mut m).user_agent(), None);
    let mut r = message(SIP_REPLY, "SIP/2.0", &[(HDR_OTHER_T, "Server", "x")]);
    r.malformed = true;
    assert_eq!(call(&mut r).user_agent(), None);
}

#[test]
fn a_replys_server_header_is_found_by_name_ignoring_case() {
    let headers = [
        (VIA, "Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1"),
        (HDR_OTHER_T, "X-Server", "not this one"),
        (HDR_OTHER_T, "Servers", "nor this one"),
        (HDR_USERAGENT_T, "User-Agent", "nor a User-Agent in a reply"),
        (HDR_OTHER_T, "SERVER", "Asterisk PBX 18.9.0"),
        (HDR_OTHER_T, "Server", "the second Server"),
        (CSEQ, "CSeq", "1 OPTIONS"),
    ];
    let mut m = message(SIP_REPLY, "SIP/2.0", &headers);
    assert_eq!(call(&mut m).user_agent(), Some(&b"Asterisk PBX 18.9.0"[..]));
    assert_eq!(
        m.calls,
        vec![(HDR_EOH_F, 0, 1)],
        "Server has no flag: every header"
    );
}

#[test]
fn a_reply_without_server_has_none() {
    let headers = [
        (VIA, "Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1"),
        (HDR_USERAGENT_T, "User-Agent", "friendly-scanner"),
    ];
    let mut m = message(SIP_REPLY, "SIP/2.0", &headers);
    assert_eq!(call(&mut m).user_agent(), None);
    let mut m = message(SIP_REPLY, "SIP/2.0", &[]);
    assert_eq!(call(&mut m).user_agent(), None);
}
