//! The protocol classifier: which protocol a message is, from its first bytes and which way it
//! flows. One implementation for the kernel (which decides whether a connection is captured) and
//! the agent (which picks a parser), so the two never disagree.
//!
//! It reads at most [`PREFIX`] bytes, in bounded loops without slices, so the verifier accepts
//! it. Verdicts are stable: once bytes are classified, more bytes after them never change the
//! verdict, and [`Verdict::NeedMore`] is only given for fewer than [`PREFIX`] bytes, so a caller
//! that joins the first messages of a connection until a verdict always ends.
//!
//! Adding a protocol: a [`Protocol`] arm, its connection state in [`crate::conn::state`], and a
//! check in [`classify_prefix`] (in priority order).

use crate::conn::{role, state};
use crate::data::direction;

/// Bytes of a message the classifier looks at.
pub const PREFIX: usize = 32;

/// Which way a message travels on its TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// From the connecting end to the accepting end (requests).
    ToServer,
    /// From the accepting end to the connecting end (responses, greetings).
    ToClient,
    /// The traced process's role is unknown (connection open before the tracer).
    Unknown,
}

impl Flow {
    /// From the traced process's role ([`crate::conn::role`]) and the direction of its syscall
    /// ([`crate::data::direction`]).
    #[inline(always)]
    pub const fn of(conn_role: u8, dir: u8) -> Flow {
        match (conn_role, dir) {
            (role::CLIENT, direction::EGRESS) | (role::SERVER, direction::INGRESS) => {
                Flow::ToServer
            }
            (role::CLIENT, _) | (role::SERVER, _) => Flow::ToClient,
            _ => Flow::Unknown,
        }
    }
}

/// Protocols the classifier knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
    /// RESP2 and RESP3 (Redis, Valkey, KeyDB...).
    Redis,
    /// The server speaks first: recognised by its greeting.
    Mysql,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Http1,
        Protocol::Http2,
        Protocol::Redis,
        Protocol::Mysql,
    ];

    /// The kernel's connection state of a connection carrying this protocol.
    #[inline(always)]
    pub const fn state(self) -> u8 {
        match self {
            Protocol::Http1 => state::HTTP1,
            Protocol::Http2 => state::HTTP2,
            Protocol::Redis => state::REDIS,
            Protocol::Mysql => state::MYSQL,
        }
    }

    /// Bit of this protocol in [`crate::config::Config::protocols`].
    #[inline(always)]
    pub const fn bit(self) -> u32 {
        1 << self.state()
    }

    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Redis => "redis",
            Protocol::Mysql => "mysql",
        }
    }
}

/// What kind of message the bytes start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Request,
    Response,
    /// An HTTP/2 frame, as on a connection joined mid-stream (only looked for when the flow is
    /// unknown: new connections start with the preface).
    Frame,
    /// The server's first message on a protocol where the server speaks first.
    Greeting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No known protocol starts this way.
    Unknown,
    /// Too few bytes to tell: more bytes of the same direction may decide.
    NeedMore,
    Is(Protocol, Kind),
}

/// The first bytes of a message, as the classifier reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// How many of `bytes` are the message's (at most [`PREFIX`]); the others are zero.
    pub len: u32,
    pub bytes: [u8; PREFIX],
}
crate::assert_size!(Sample, 4 + PREFIX);

impl Sample {
    pub fn new(bytes: &[u8]) -> Self {
        let mut s = Sample::default();
        let len = bytes.len().min(PREFIX);
        s.bytes[..len].copy_from_slice(&bytes[..len]);
        s.len = len as u32;
        s
    }
}

/// Classify a message from its first bytes (any length; only [`PREFIX`] are read).
pub fn classify(bytes: &[u8], flow: Flow) -> Verdict {
    classify_sample(&Sample::new(bytes), flow)
}

/// Classify a sample. Candidates are tried in priority order and the first that is not
/// [`Verdict::Unknown`] decides: a candidate still waiting for bytes holds back those after it,
/// which keeps verdicts stable as bytes arrive.
///
/// For the verifier, every byte and the length are loaded afresh where they are used (nothing
/// one check learnt about them carries over to the next, so paths do not multiply from one
/// check to the next), and the length is only looked at where a check fails (a zero past the
/// length fails every check). The kernel keeps the sample in map memory for the same reason.
#[inline(always)]
pub fn classify_sample(s: &Sample, flow: Flow) -> Verdict {
    let v = http2_preface(s);
    if !matches!(v, Verdict::Unknown) {
        return v;
    }
    let v = http1_response(s);
    if !matches!(v, Verdict::Unknown) {
        return v;
    }
    let v = resp(s, flow);
    if !matches!(v, Verdict::Unknown) {
        return v;
    }
    let v = http1_request(s);
    if !matches!(v, Verdict::Unknown) {
        return v;
    }
    if !matches!(flow, Flow::ToServer) {
        let v = mysql_greeting(s);
        if !matches!(v, Verdict::Unknown) {
            return v;
        }
    }
    if matches!(flow, Flow::Unknown) {
        return http2_frame(s);
    }
    Verdict::Unknown
}

/// Byte `i` of the sample, 0 past its end (keeps every index provably in bounds).
#[inline(always)]
fn at(s: &Sample, i: usize) -> u8 {
    if i < PREFIX {
        // SAFETY: `i` is within the array; volatile: see `classify_sample`.
        unsafe { core::ptr::read_volatile(s.bytes.as_ptr().add(i)) }
    } else {
        0
    }
}

/// The sample's length (values past [`PREFIX`] mean all of it).
#[inline(always)]
fn len(s: &Sample) -> usize {
    // SAFETY: a plain field; volatile: see `classify_sample`. Masked, not compared, so that no
    // path is split here.
    (unsafe { core::ptr::read_volatile(&s.len) } as usize) & (2 * PREFIX - 1)
}

/// A check failed at byte `i`: for want of bytes (NeedMore) or on a byte that is there.
#[inline(always)]
fn fail_at(s: &Sample, i: usize) -> Verdict {
    let len = len(s);
    if i >= len && len < PREFIX {
        Verdict::NeedMore
    } else {
        Verdict::Unknown
    }
}

/// Whether the sample starts with `lit`: Ok, or the failing verdict.
#[inline(always)]
fn literal<const N: usize>(s: &Sample, lit: &[u8; N]) -> Result<(), Verdict> {
    let mut i = 0;
    while i < N {
        if at(s, i) != lit[i] {
            return Err(fail_at(s, i));
        }
        i += 1;
    }
    Ok(())
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4), up to its version.
#[inline(always)]
fn http2_preface(s: &Sample) -> Verdict {
    match literal(s, b"PRI * HTTP/2.0") {
        Ok(()) => Verdict::Is(Protocol::Http2, Kind::Request),
        Err(v) => v,
    }
}

/// `HTTP/1.` and a digit: a status line.
#[inline(always)]
fn http1_response(s: &Sample) -> Verdict {
    if let Err(v) = literal(s, b"HTTP/1.") {
        return v;
    }
    if at(s, 7).is_ascii_digit() {
        Verdict::Is(Protocol::Http1, Kind::Response)
    } else {
        fail_at(s, 7)
    }
}

/// RFC 9110 `tchar`.
#[inline(always)]
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// A request line: any token method, a space, the start of a target. Empty lines before it are
/// skipped (RFC 9112 §2.2).
#[inline(always)]
fn http1_request(s: &Sample) -> Verdict {
    // 0: blank lines, 1: in the method (one tchar seen), 2: after the space.
    let mut phase = 0u8;
    let mut i = 0;
    while i < PREFIX {
        let b = at(s, i);
        let next = match phase {
            0 if b == b'\r' || b == b'\n' => 0,
            0 | 1 if tchar(b) => 1,
            1 if b == b' ' => 2,
            2 if b > b' ' && b < 0x7f => return Verdict::Is(Protocol::Http1, Kind::Request),
            _ => return fail_at(s, i),
        };
        phase = next;
        i += 1;
    }
    Verdict::Unknown
}

/// What may follow a RESP type byte up to its CRLF.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Printable text (simple strings, errors).
    Text,
    /// A length or count: digits, or `-1` (null).
    Length,
    /// An integer: optional sign and digits.
    Integer,
    /// A double: digits, sign, `.`, `e`, `inf`, `nan`.
    Double,
    /// `t` or `f`.
    Boolean,
    /// Nothing (RESP3 null `_`).
    Empty,
}

#[inline(always)]
fn line_byte(line: Line, b: u8, first: bool) -> bool {
    match line {
        Line::Text => (b' '..0x7f).contains(&b) || b == b'\t' || b >= 0x80,
        Line::Length => b.is_ascii_digit() || (b == b'-' && first),
        Line::Integer => b.is_ascii_digit() || ((b == b'-' || b == b'+') && first),
        Line::Double => {
            b.is_ascii_digit()
                || matches!(
                    b,
                    b'-' | b'+' | b'.' | b'e' | b'E' | b'i' | b'n' | b'f' | b'a'
                )
        }
        Line::Boolean => (b == b't' || b == b'f') && first,
        Line::Empty => false,
    }
}

/// Whether `b` starts a RESP value.
#[inline(always)]
fn resp_type(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b':'
            | b'$'
            | b'*'
            | b'_'
            | b','
            | b'#'
            | b'%'
            | b'~'
            | b'>'
            | b'('
            | b'='
            | b'!'
            | b'|'
    )
}

/// A RESP value: a client command (an array of bulk strings) travelling to the server, or a
/// reply of any RESP2/RESP3 type travelling to the client.
#[inline(always)]
fn resp(s: &Sample, flow: Flow) -> Verdict {
    let t = at(s, 0);
    let line = match t {
        b'+' | b'-' => Line::Text,
        b'$' | b'*' | b'%' | b'~' | b'>' | b'=' | b'!' | b'|' => Line::Length,
        b':' | b'(' => Line::Integer,
        b',' => Line::Double,
        b'#' => Line::Boolean,
        b'_' => Line::Empty,
        _ => return fail_at(s, 0),
    };
    // Commands are arrays: `*N\r\n$`.
    let command = t == b'*';
    if !command && matches!(flow, Flow::ToServer) {
        return Verdict::Unknown;
    }
    // The line up to its `\r`, at `cr`.
    let mut cr = PREFIX;
    let mut i = 1;
    while i < PREFIX {
        let b = at(s, i);
        if b == b'\r' {
            cr = i;
            break;
        }
        if !line_byte(line, b, i == 1) {
            return fail_at(s, i);
        }
        i += 1;
    }
    if cr >= PREFIX {
        // Text longer than the prefix, all printable: as good as it gets.
        return if line == Line::Text {
            reply(flow)
        } else {
            Verdict::Unknown
        };
    }
    let last = at(s, cr - 1);
    let ok = match line {
        Line::Length | Line::Integer => last.is_ascii_digit(),
        Line::Double => cr > 1,
        Line::Boolean => cr == 2,
        Line::Text | Line::Empty => true,
    };
    if !ok {
        return Verdict::Unknown;
    }
    if at(s, cr + 1) != b'\n' {
        return fail_at(s, cr + 1);
    }
    if !command || at(s, 1) == b'-' {
        return reply(flow);
    }
    // `*N\r\n`: a command when a bulk string follows (an array reply travelling to the client).
    let next = at(s, cr + 2);
    match flow {
        _ if !resp_type(next) => fail_at(s, cr + 2),
        Flow::ToClient => reply(flow),
        _ if next == b'$' => Verdict::Is(Protocol::Redis, Kind::Request),
        Flow::ToServer => Verdict::Unknown,
        Flow::Unknown => reply(flow),
    }
}

#[inline(always)]
fn reply(flow: Flow) -> Verdict {
    match flow {
        Flow::ToServer => Verdict::Unknown,
        _ => Verdict::Is(Protocol::Redis, Kind::Response),
    }
}

/// The MySQL/MariaDB initial handshake (protocol 10): a packet of sequence 0 whose payload
/// starts with byte 10 and the server version (`5.7.x`, `8.0.x`, `10.x-MariaDB`...).
#[inline(always)]
fn mysql_greeting(s: &Sample) -> Verdict {
    let len = len(s);
    if len < 6 {
        // Too short to tell, unless what is there already rules it out.
        let bad = (len >= 3 && at(s, 2) != 0)
            || (len >= 4 && at(s, 3) != 0)
            || (len >= 5 && at(s, 4) != 10);
        return if bad {
            Verdict::Unknown
        } else {
            fail_at(s, len)
        };
    }
    let payload = at(s, 0) as usize | (at(s, 1) as usize) << 8 | (at(s, 2) as usize) << 16;
    if (32..=1024).contains(&payload)
        && at(s, 3) == 0
        && at(s, 4) == 10
        && at(s, 5).is_ascii_digit()
    {
        Verdict::Is(Protocol::Mysql, Kind::Greeting)
    } else {
        Verdict::Unknown
    }
}

/// A plausible HTTP/2 frame header (RFC 9113 §4.1, §6): known type, only that type's flags,
/// stream id and length as the type requires, length within the default maximum frame size.
#[inline(always)]
fn http2_frame(s: &Sample) -> Verdict {
    if len(s) < 9 {
        return fail_at(s, 9);
    }
    let length = (at(s, 0) as u32) << 16 | (at(s, 1) as u32) << 8 | at(s, 2) as u32;
    let ty = at(s, 3);
    let flags = at(s, 4);
    let s0 = at(s, 5);
    if s0 & 0x80 != 0 || length > 16384 {
        return Verdict::Unknown;
    }
    let stream =
        (s0 as u32) << 24 | (at(s, 6) as u32) << 16 | (at(s, 7) as u32) << 8 | at(s, 8) as u32;
    let ok = match ty {
        // DATA: END_STREAM, PADDED.
        0 => stream != 0 && flags & !0x09 == 0,
        // HEADERS: END_STREAM, END_HEADERS, PADDED, PRIORITY.
        1 => stream != 0 && flags & !0x2d == 0 && length > 0,
        // PRIORITY.
        2 => stream != 0 && flags == 0 && length == 5,
        // RST_STREAM.
        3 => stream != 0 && flags == 0 && length == 4,
        // SETTINGS: ACK (empty).
        4 => stream == 0 && (flags == 0 && length.is_multiple_of(6) || flags == 1 && length == 0),
        // PUSH_PROMISE: END_HEADERS, PADDED.
        5 => stream != 0 && flags & !0x0c == 0 && length >= 4,
        // PING: ACK.
        6 => stream == 0 && flags & !0x01 == 0 && length == 8,
        // GOAWAY.
        7 => stream == 0 && flags == 0 && length >= 8,
        // WINDOW_UPDATE.
        8 => flags == 0 && length == 4,
        // CONTINUATION: END_HEADERS.
        9 => stream != 0 && flags & !0x04 == 0,
        _ => false,
    };
    if ok {
        Verdict::Is(Protocol::Http2, Kind::Frame)
    } else {
        Verdict::Unknown
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use rstest::rstest;

    use super::*;

    const H1_REQ: Verdict = Verdict::Is(Protocol::Http1, Kind::Request);
    const H1_RESP: Verdict = Verdict::Is(Protocol::Http1, Kind::Response);
    const H2: Verdict = Verdict::Is(Protocol::Http2, Kind::Request);
    const H2_FRAME: Verdict = Verdict::Is(Protocol::Http2, Kind::Frame);
    const REDIS_CMD: Verdict = Verdict::Is(Protocol::Redis, Kind::Request);
    const REDIS_REPLY: Verdict = Verdict::Is(Protocol::Redis, Kind::Response);
    const MYSQL: Verdict = Verdict::Is(Protocol::Mysql, Kind::Greeting);
    use Flow::{ToClient, ToServer, Unknown as Either};
    use Verdict::{NeedMore, Unknown};

    #[rstest]
    // HTTP/1 requests: any token method, leading empty lines skipped.
    #[case(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", ToServer, H1_REQ)]
    #[case(b"PROPFIND /dav HTTP/1.1\r\n", ToServer, H1_REQ)]
    #[case(b"M-SEARCH * HTTP/1.1\r\n", ToServer, H1_REQ)]
    #[case(b"QUERY /q HTTP/1.1\r\n", Either, H1_REQ)]
    #[case(b"PURGE /x HTTP/1.1\r\n", ToServer, H1_REQ)]
    #[case(b"\r\n\r\nGET / HTTP/1.1\r\n", ToServer, H1_REQ)]
    #[case(b"\nGET / HTTP/1.1\r\n", ToServer, H1_REQ)]
    #[case(b"CONNECT a.example:443 HTTP/1.1\r\n", ToServer, H1_REQ)]
    #[case(b"GET http://u:p@h/ HTTP/1.1\r\n", ToServer, H1_REQ)]
    // Cut short: more bytes may decide.
    #[case(b"", ToServer, NeedMore)]
    #[case(b"G", ToServer, NeedMore)]
    #[case(b"GE", ToServer, NeedMore)]
    #[case(b"GET", ToServer, NeedMore)]
    #[case(b"GET ", ToServer, NeedMore)]
    #[case(b"\r\n", ToServer, NeedMore)]
    #[case(b"PRI * HTTP/2", ToServer, NeedMore)]
    #[case(b"HTTP/1", ToClient, NeedMore)]
    // Not a request line.
    #[case(b"GET  / HTTP/1.1\r\n", ToServer, Unknown)]
    #[case(b" GET / HTTP/1.1\r\n", ToServer, Unknown)]
    #[case(b"GET\t/ HTTP/1.1\r\n", ToServer, Unknown)]
    #[case(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", ToServer, Unknown)]
    #[case(b"SSH-2.0-OpenSSH_9.2\r\n", ToServer, Unknown)]
    #[case(
        b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1",
        ToServer,
        Unknown
    )]
    // HTTP/1 responses.
    #[case(b"HTTP/1.1 200 OK\r\n", ToClient, H1_RESP)]
    #[case(b"HTTP/1.0 404 Not Found\r\n", Either, H1_RESP)]
    #[case(b"HTTP/2 200\r\n", ToClient, Unknown)]
    // HTTP/2: the preface, or frames when joined mid-stream.
    #[case(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ToServer, H2)]
    #[case(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00", Either, H2_FRAME)]
    #[case(
        b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64",
        Either,
        H2_FRAME
    )]
    #[case(
        b"\x00\x00\x08\x06\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08",
        Either,
        H2_FRAME
    )]
    #[case(
        b"\x00\x00\x05\x01\x04\x00\x00\x00\x01\x82\x86\x84\x41\x8a",
        Either,
        H2_FRAME
    )]
    #[case(
        b"\x00\x00\x05\x01\x04\x00\x00\x00\x01\x82\x86\x84\x41\x8a",
        ToServer,
        Unknown
    )]
    #[case(b"\x00\x00\x08\x06\x00\x00\x00\x00\x01", Either, Unknown)]
    #[case(b"\x00\x00\x05\x0a\x00\x00\x00\x00\x01", Either, Unknown)]
    #[case(b"\x00\x00\x00", Either, NeedMore)]
    // RESP commands (arrays of bulk strings) and replies of every type.
    #[case(b"*1\r\n$4\r\nPING\r\n", ToServer, REDIS_CMD)]
    #[case(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", Either, REDIS_CMD)]
    #[case(b"*12\r\n$", ToServer, REDIS_CMD)]
    #[case(b"*1\r\n$4\r\nPING\r\n", ToClient, REDIS_REPLY)]
    #[case(b"*", ToServer, NeedMore)]
    #[case(b"*1\r", ToServer, NeedMore)]
    #[case(b"*1\r\n", ToServer, NeedMore)]
    #[case(b"*1\r\n:1\r\n", ToServer, Unknown)]
    #[case(b"*x\r\n$4\r\n", ToServer, Unknown)]
    #[case(b"+OK\r\n", ToClient, REDIS_REPLY)]
    #[case(b"+OK\r\n", ToServer, Unknown)]
    #[case(b"-ERR unknown command 'x'\r\n", ToClient, REDIS_REPLY)]
    #[case(
        b"-WRONGTYPE Operation against a key holding the wrong kind",
        ToClient,
        REDIS_REPLY
    )]
    #[case(b":1000\r\n", ToClient, REDIS_REPLY)]
    #[case(b":-3\r\n", ToClient, REDIS_REPLY)]
    #[case(b"$5\r\nhello\r\n", ToClient, REDIS_REPLY)]
    #[case(b"$-1\r\n", ToClient, REDIS_REPLY)]
    #[case(b"*-1\r\n", ToClient, REDIS_REPLY)]
    #[case(b"*2\r\n:1\r\n:2\r\n", ToClient, REDIS_REPLY)]
    #[case(b"_\r\n", ToClient, REDIS_REPLY)]
    #[case(b"#t\r\n", ToClient, REDIS_REPLY)]
    #[case(b",3.14\r\n", ToClient, REDIS_REPLY)]
    #[case(b",inf\r\n", ToClient, REDIS_REPLY)]
    #[case(b"(3492890328409238509324850943850943825024385\r\n", ToClient, Unknown)]
    #[case(b"(34928\r\n", ToClient, REDIS_REPLY)]
    #[case(b"%1\r\n+a\r\n:1\r\n", ToClient, REDIS_REPLY)]
    #[case(b"~2\r\n", ToClient, REDIS_REPLY)]
    #[case(b">3\r\n$7\r\nmessage\r\n", ToClient, REDIS_REPLY)]
    #[case(b"=15\r\ntxt:Some string\r\n", ToClient, REDIS_REPLY)]
    #[case(b"!21\r\nSYNTAX invalid syntax\r\n", ToClient, REDIS_REPLY)]
    #[case(b"$\r\n", ToClient, Unknown)]
    #[case(b"#x\r\n", ToClient, Unknown)]
    #[case(b":12a\r\n", ToClient, Unknown)]
    #[case(b"+OK\rX", ToClient, Unknown)]
    // Server speaks first: MySQL's greeting.
    #[case(b"\x4a\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00", ToClient, MYSQL)]
    #[case(b"\x5b\x00\x00\x00\x0a5.5.5-10.11.6-MariaDB\x00", Either, MYSQL)]
    #[case(b"\x4a\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00", ToServer, Unknown)]
    #[case(b"\x4a\x00\x00", ToClient, NeedMore)]
    #[case(b"\x4a\x00\x00\x01\x0a8.0", ToClient, Unknown)]
    fn classifies(#[case] bytes: &[u8], #[case] flow: Flow, #[case] want: Verdict) {
        assert_eq!(
            classify(bytes, flow),
            want,
            "{:?}",
            std::string::String::from_utf8_lossy(bytes)
        );
    }

    /// A verdict never changes as bytes are added; NeedMore only below the prefix.
    #[rstest]
    #[case(b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n".as_slice())]
    #[case(b"\r\nPROPFIND / HTTP/1.1\r\n".as_slice())]
    #[case(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice())]
    #[case(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n".as_slice())]
    #[case(b"+a very long simple string reply that goes on\r\n".as_slice())]
    #[case(b"HTTP/1.1 204 No Content\r\n\r\n".as_slice())]
    #[case(b"\x4a\x00\x00\x00\x0a8.0.36\x00".as_slice())]
    #[case(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08".as_slice())]
    fn verdicts_are_stable(#[case] msg: &[u8]) {
        for flow in [ToServer, ToClient, Either] {
            let verdicts: Vec<Verdict> =
                (0..=msg.len()).map(|n| classify(&msg[..n], flow)).collect();
            let first = verdicts.iter().position(|v| *v != NeedMore);
            if let Some(k) = first {
                assert!(
                    verdicts[k..].iter().all(|v| *v == verdicts[k]),
                    "{flow:?}: {verdicts:?}"
                );
            }
            assert!(verdicts.iter().skip(PREFIX).all(|v| *v != NeedMore));
        }
    }

    /// The fuzz target's properties over pseudo-random inputs built from protocol fragments.
    #[test]
    fn random_inputs_keep_the_properties() {
        const PIECES: &[&[u8]] = &[
            b"GET",
            b" ",
            b"/",
            b"\r\n",
            b"HTTP/1.",
            b"1",
            b"*",
            b"$",
            b"+",
            b"-",
            b":",
            b"PRI * HTTP/2.0",
            b"\x00",
            b"\x04",
            b"\x0a",
            b"#",
            b"t",
            b"_",
            b"8",
            b"\xff",
            b",",
            b"e",
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let mut msg = Vec::new();
            while msg.len() < PREFIX + 2 {
                let r = next();
                if r % 3 == 0 {
                    msg.push((r >> 8) as u8);
                } else {
                    msg.extend_from_slice(PIECES[(r >> 8) as usize % PIECES.len()]);
                }
            }
            for flow in [ToServer, ToClient, Either] {
                let mut decided = None;
                for n in 0..=msg.len() {
                    let v = classify(&msg[..n], flow);
                    assert!(n < PREFIX || v != NeedMore, "{msg:?}");
                    match decided {
                        Some(d) => assert_eq!(v, d, "{flow:?} {n} {msg:?}"),
                        None if v != NeedMore => decided = Some(v),
                        None => {}
                    }
                }
            }
        }
    }

    #[rstest]
    #[case(role::CLIENT, direction::EGRESS, ToServer)]
    #[case(role::CLIENT, direction::INGRESS, ToClient)]
    #[case(role::SERVER, direction::INGRESS, ToServer)]
    #[case(role::SERVER, direction::EGRESS, ToClient)]
    #[case(role::UNKNOWN, direction::EGRESS, Either)]
    fn flow_of_role_and_direction(#[case] r: u8, #[case] d: u8, #[case] want: Flow) {
        assert_eq!(Flow::of(r, d), want);
    }

    #[test]
    fn protocols_have_distinct_captured_states() {
        for (i, a) in Protocol::ALL.iter().enumerate() {
            assert!(state::captured(a.state()), "{a:?}");
            for b in &Protocol::ALL[i + 1..] {
                assert_ne!(a.bit(), b.bit());
            }
        }
    }
}
