//! HTTP/1.0 and HTTP/1.1 over captured syscall segments.
//!
//! One [`Http1Conn`] follows one connection. Each direction has its own small state machine
//! (idle at a message boundary, accumulating a head, counting a body, or resyncing after an
//! incident). Request heads go into a FIFO of pending requests when they are complete (not when
//! their body is), so a response that starts before the request body ends (`Expect:
//! 100-continue`, early error responses) still finds its request. Responses are matched to the
//! oldest pending request.
//!
//! Policies worth knowing (all bounded, none panics):
//! - Heads are buffered up to [`MAX_HEAD_BYTES`]; bodies are only counted, never buffered. A
//!   header line longer than [`MAX_HEADER_LINE_BYTES`], or one that no longer fits in the head
//!   buffer, is dropped: the head still parses, and its exchange is marked `truncated`.
//! - A head cut short by uncaptured bytes (larger than the capture) still makes its exchange,
//!   from the start line and the header lines captured before the cut, marked `truncated`; its
//!   body cannot be framed, so that direction skips segments quietly until one begins with a
//!   message (the response to a truncated request still pairs with it).
//! - Any token method starts a request (RFC 9110 §9.1). While in sync a token and a space are
//!   enough; where a message start is only guessed (detection, resync) a method outside
//!   [`COMMON_METHODS`] needs its whole request line (`token SP target SP HTTP/1.x`).
//! - Empty lines before a start line are skipped (RFC 9112 §2.2).
//! - The request target is split into path and query; a `#fragment` is dropped, and an
//!   absolute-form target (`http://user:pass@host/p?q`) keeps only its path (no credentials).
//! - A request that is dropped after its head was queued (its body desynced) stays in the FIFO as
//!   a silent placeholder so that later responses still pair with the right requests.
//! - A response that is abandoned (desync, loss, oversize head) consumes the oldest pending
//!   request without an exchange: its answer is gone, and keeping it would shift every later
//!   pairing by one. If other requests were waiting too (pipelining), the lost bytes may hold
//!   their responses as well, in a number that cannot be known: the connection then stops being
//!   parsed (`Unpaired`) rather than pair later responses with the wrong requests. The same
//!   holds for response bytes skipped while resyncing that may hold a response start.
//! - Pending requests keep their heads within [`MAX_PENDING`] requests and
//!   [`MAX_PENDING_BYTES`] of head text per connection. A request beyond that is kept as a
//!   placeholder (its framing flags only; runs of them are one entry) and `TooManyPending` is
//!   reported: it gives no exchange, and every later response still pairs with its own request.
//!   Past [`MAX_PENDING_ENTRIES`] entries the connection stops being parsed (reported once).
//! - `expire` does not time out a request whose response is in progress, nor one whose own body
//!   is still arriving (a slow upload is not a missing response).
//! - After `101 Switching Protocols` or a 2xx answer to `CONNECT` the connection is opaque: the
//!   parser ignores everything after it and reports nothing more. Between such a request and its
//!   answer, request-direction bytes that do not start a request are skipped without an error.
//! - Out of sync (garbage, loss, uncaptured bytes in a chunk-size line or before a start line is
//!   complete, oversize start line), a direction skips whole segments until one begins with a
//!   message start for that direction. One error is reported per incident.
//! - Interim (1xx) responses are skipped; they do set `response_tid` (the first response byte).
//! - `close` completes a close-delimited response; a response cut short by the close is reported
//!   `Closed` with its head and the body counted so far; other pending requests are `Closed`
//!   without a response. `Timeout` and `Closed` exchanges end at the expire/close time.
//! - A response with no pending request (sent before tracing started, or to a dropped request)
//!   is framed so parsing stays in sync, then discarded silently.

use std::{collections::VecDeque, sync::Arc};

use super::{
    ConnParser, Direction, ExchangeInfo, ExchangeRecord, ParseError, ParseOutput, Protocol, Role,
    Segment, Started,
};
use crate::{
    clock::Clock,
    conn::ConnMeta,
    context::{self, RemoteContext},
    span::{KeyValue, SpanOptions, SpanRecord, SpanStatus, SpanSummary, Text},
};

/// Most bytes buffered for one head (start line and header section), and for one trailer section.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Longest header line kept in a head; longer ones (huge cookies) are dropped from it.
pub const MAX_HEADER_LINE_BYTES: usize = 8 * 1024;
/// Header slots given to httparse; more headers than this is `TooLarge`.
pub const MAX_PARSED_HEADERS: usize = 64;
/// Most header text (name plus value bytes) a request head keeps ([`RequestHead::host`] and
/// [`RequestHead::user_agent`]); a header that does not fit is not kept.
pub const MAX_KEPT_HEADER_BYTES: usize = 8 * 1024;
/// Most requests waiting for a response on one connection that keep their heads.
pub const MAX_PENDING: usize = 1024;
/// Most head text (method, target, kept header values) of the requests waiting on one connection.
pub const MAX_PENDING_BYTES: usize = 64 * 1024;
/// Most entries (requests and placeholder runs) waiting on one connection: with the byte budget,
/// a connection holds at most 64 KiB of head text and this many small entries.
pub const MAX_PENDING_ENTRIES: usize = MAX_PENDING;
/// Longest chunk-size line (size, extensions, CRLF) of a chunked body.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Bytes reserved for a head when its first bytes come (at most what they are): most heads fit.
const HEAD_RESERVE: usize = 1024;
/// Longest method token considered (the longest registered method is 17 bytes).
const MAX_METHOD_BYTES: usize = 32;

/// Methods recognised from their first bytes alone (each followed by a space); other token
/// methods are recognised from a whole request line where a start is only guessed.
pub const COMMON_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// What every HTTP/1.x response starts with.
const RESPONSE_PREFIX: &[u8] = b"HTTP/1.";

/// A request head as seen on the wire: what spans need of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// Static for the [`COMMON_METHODS`]; shared with the span (attribute and summary).
    pub method: Text,
    /// Path of the request target, as sent: before `?` in origin form, the path alone in
    /// absolute form (no scheme, credentials or host), `*` or `host:port` in the other forms.
    /// Shared with the span.
    pub path: Text,
    /// Query of the request target (after `?`, without a `#fragment`), unredacted; redaction is
    /// the span builder's job.
    pub query: Option<String>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// The first `Host` header that fit in [`MAX_KEPT_HEADER_BYTES`], lossily decoded.
    pub host: Option<String>,
    /// The first `User-Agent` header that fit in [`MAX_KEPT_HEADER_BYTES`], lossily decoded;
    /// shared with the span.
    pub user_agent: Option<Arc<str>>,
    /// The trace context of its headers (any of them, whatever their size).
    pub context: Option<RemoteContext>,
}

/// A final (non-1xx) response head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version_minor: u8,
}

pub use super::Outcome;

/// One request with its response, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Resolved role of the traced process on this connection (never `Unknown`).
    pub role: Role,
    pub request: RequestHead,
    pub response: Option<ResponseHead>,
    /// Body bytes (after de-chunking for chunked bodies: the payload size).
    pub request_body_size: u64,
    pub response_body_size: u64,
    /// Monotonic ns: when the first request byte was seen and when the last response byte was.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Thread that moved the first request byte, and the first response byte (0 if none).
    pub request_tid: u32,
    pub response_tid: u32,
    pub outcome: Outcome,
    /// A head was not wholly seen (larger than the capture or the parser's caps): the exchange
    /// is built from its start line and the header lines that were.
    pub truncated: bool,
}

/// The HTTP/1.x protocol entry of the registry.
pub struct Http1;

impl Protocol for Http1 {
    fn name(&self) -> &'static str {
        "http1"
    }
    /// Direction-agnostic on purpose: the registry only asks "is this HTTP/1 at all"; which
    /// direction carries requests is settled by the parser.
    fn detect(&self, first: &[u8], _dir: Direction, _role: Role) -> bool {
        guess_start(first, None) == Start::Yes
    }
    fn parser(&self, role: Role) -> Box<dyn ConnParser> {
        Box::new(Http1Conn::new(role))
    }
}

// ---------------------------------------------------------------------------------------------
// Message starts

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

/// Whether some bytes begin a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Yes,
    /// The bytes are a proper prefix of a message start: more are needed to tell.
    NeedMore,
    No,
}

impl Start {
    fn either(self, other: Start) -> Start {
        match (self, other) {
            (Start::Yes, _) | (_, Start::Yes) => Start::Yes,
            (Start::NeedMore, _) | (_, Start::NeedMore) => Start::NeedMore,
            _ => Start::No,
        }
    }
}

fn match_prefix(bytes: &[u8], pattern: &[u8]) -> Start {
    if !bytes.iter().zip(pattern).all(|(a, b)| a == b) {
        Start::No
    } else if bytes.len() >= pattern.len() {
        Start::Yes
    } else {
        Start::NeedMore
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `bytes` begin a request: a common method and a space, or another token method and
/// a space (`whole_line`: and the rest of a request line up to its end).
fn request_start(bytes: &[u8], whole_line: bool) -> Start {
    let common = COMMON_METHODS
        .iter()
        .map(|m| match_prefix(bytes, m))
        .fold(Start::No, Start::either);
    if common == Start::Yes {
        return Start::Yes;
    }
    let method = bytes.iter().take_while(|&&b| is_tchar(b)).count();
    match bytes.get(method) {
        _ if method > MAX_METHOD_BYTES => Start::No,
        None => Start::NeedMore,
        Some(b' ') if method > 0 && !whole_line => Start::Yes,
        Some(b' ') if method > 0 => request_line_rest(bytes.get(method..).unwrap_or_default()),
        Some(_) => Start::No,
    }
}

/// Whether `rest` (after the method) continues a request line: spaces, a target, spaces,
/// `HTTP/1.x`, then the line end.
fn request_line_rest(rest: &[u8]) -> Start {
    let spaces = |b: &[u8]| b.iter().take_while(|&&c| c == b' ').count();
    let mut at = spaces(rest);
    let target = rest
        .get(at..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&c| c > b' ' && c != 0x7f)
        .count();
    if target == 0 {
        return if at == rest.len() {
            Start::NeedMore
        } else {
            Start::No
        };
    }
    at = at.saturating_add(target);
    let gap = spaces(rest.get(at..).unwrap_or_default());
    match rest.get(at) {
        None => return Start::NeedMore,
        Some(_) if gap == 0 => return Start::No,
        Some(_) => at = at.saturating_add(gap),
    }
    let tail = rest.get(at..).unwrap_or_default();
    let version = b"HTTP/1.";
    match match_prefix(tail, version) {
        Start::Yes => {}
        other => return other,
    }
    let after = tail.get(version.len()..).unwrap_or_default();
    match after {
        [] => Start::NeedMore,
        [d, ..] if !d.is_ascii_digit() => Start::No,
        [_] | [_, b'\r'] => Start::NeedMore,
        [_, b'\n', ..] | [_, b'\r', b'\n', ..] => Start::Yes,
        _ => Start::No,
    }
}

fn starts_kind(bytes: &[u8], kind: Kind, whole_line: bool) -> Start {
    match kind {
        Kind::Response => match_prefix(bytes, RESPONSE_PREFIX),
        Kind::Request => request_start(bytes, whole_line),
    }
}

/// `bytes` without the empty lines a message start may follow (RFC 9112 §2.2).
fn skip_empty_lines(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    bytes.get(n..).unwrap_or_default()
}

/// Whether `bytes` begin a message of kind `allowed` (either kind when `None`), in sync: a
/// token and a space start a request.
fn starts_message(bytes: &[u8], allowed: Option<Kind>) -> Start {
    starts_message_with(bytes, allowed, false)
}

/// Whether `bytes` surely begin a message where one is only guessed (detection, resync after
/// an incident): after any empty lines, a response start, a common method, or a whole request
/// line.
fn guess_start(bytes: &[u8], allowed: Option<Kind>) -> Start {
    starts_message_with(skip_empty_lines(bytes), allowed, true)
}

fn starts_message_with(bytes: &[u8], allowed: Option<Kind>, whole_line: bool) -> Start {
    match allowed {
        Some(kind) => starts_kind(bytes, kind, whole_line),
        None => starts_kind(bytes, Kind::Request, whole_line).either(starts_kind(
            bytes,
            Kind::Response,
            whole_line,
        )),
    }
}

/// The kind a recognised start is (only meaningful when `starts_message` said `Yes`).
fn kind_of_start(bytes: &[u8], allowed: Option<Kind>) -> Kind {
    match allowed {
        Some(kind) => kind,
        None if starts_kind(bytes, Kind::Response, false) == Start::Yes => Kind::Response,
        None => Kind::Request,
    }
}

/// Which kind of message travels in `dir` for `role` (`None` while the role is unknown).
fn expected_kind(role: Role, dir: Direction) -> Option<Kind> {
    match (role, dir) {
        (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress) => {
            Some(Kind::Request)
        }
        (Role::Server, Direction::Egress) | (Role::Client, Direction::Ingress) => {
            Some(Kind::Response)
        }
        (Role::Unknown, _) => None,
    }
}

/// The role implied by seeing a message of `kind` travel in `dir`.
fn role_from(kind: Kind, dir: Direction) -> Role {
    match (kind, dir) {
        (Kind::Request, Direction::Ingress) | (Kind::Response, Direction::Egress) => Role::Server,
        (Kind::Request, Direction::Egress) | (Kind::Response, Direction::Ingress) => Role::Client,
    }
}

/// When a segment's bytes were seen: a write has its bytes at entry, a (blocking) read only at exit.
fn seen_ns(seg: &Segment<'_>) -> u64 {
    match seg.dir {
        Direction::Egress => seg.ts_enter,
        Direction::Ingress => seg.ts_exit,
    }
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `min(limit, available)` as a usize, for taking `limit` body bytes out of a slice.
fn take_len(limit: u64, available: usize) -> usize {
    usize::try_from(limit).map_or(available, |l| l.min(available))
}

// ---------------------------------------------------------------------------------------------
// Heads

/// A head being accumulated across segments, line by line.
#[derive(Debug)]
struct HeadAcc {
    /// Known once the first bytes matched a message start.
    kind: Option<Kind>,
    buf: Vec<u8>,
    /// Where the line being accumulated starts in `buf` (0: the start line).
    line_start: usize,
    /// Dropping the rest of a header line that exceeded a cap.
    dropping_line: bool,
    /// Some of the head was not kept (dropped lines) or not captured.
    truncated: bool,
    start_ns: u64,
    tid: u32,
}

impl HeadAcc {
    fn new(seg: &Segment<'_>) -> Self {
        HeadAcc {
            kind: None,
            buf: Vec::new(),
            line_start: 0,
            dropping_line: false,
            truncated: false,
            start_ns: seen_ns(seg),
            tid: seg.tid,
        }
    }

    /// Takes head bytes from the start of `bytes`, up to the empty line that ends the head.
    /// Returns how many it used and whether the head ended. Header lines longer than
    /// [`MAX_HEADER_LINE_BYTES`], or that do not fit in [`MAX_HEAD_BYTES`] any more, are left
    /// out; a start line that does not fit is `TooLarge`.
    fn push(&mut self, bytes: &[u8]) -> Result<(usize, bool), ParseError> {
        if self.buf.capacity() == 0 && !bytes.is_empty() {
            // One allocation for a usual head, instead of one per doubling as lines come in.
            self.buf.reserve(bytes.len().min(HEAD_RESERVE));
        }
        let mut used = 0usize;
        while let Some(rest) = bytes.get(used..).filter(|r| !r.is_empty()) {
            let newline = rest.iter().position(|&b| b == b'\n');
            let chunk = match newline {
                Some(i) => rest.get(..=i).unwrap_or(rest),
                None => rest,
            };
            let line_end = newline.is_some();
            used = used.saturating_add(chunk.len());
            if self.dropping_line {
                self.dropping_line = !line_end;
                continue;
            }
            let line = self.buf.get(self.line_start..).unwrap_or_default();
            let empty = line_end && matches!((line, chunk), ([], b"\n" | b"\r\n") | (b"\r", b"\n"));
            if empty {
                self.buf.extend_from_slice(chunk);
                return Ok((used, true));
            }
            let line_len = line.len().saturating_add(chunk.len());
            // Two bytes stay free for the empty line that ends the head.
            let head_room = (MAX_HEAD_BYTES - 2).saturating_sub(self.line_start);
            let line_cap = if self.line_start == 0 {
                head_room
            } else {
                head_room.min(MAX_HEADER_LINE_BYTES)
            };
            if line_len <= line_cap {
                self.buf.extend_from_slice(chunk);
                if line_end {
                    self.line_start = self.buf.len();
                }
                continue;
            }
            if self.line_start == 0 {
                return Err(ParseError::TooLarge);
            }
            self.truncated = true;
            self.buf.truncate(self.line_start);
            self.dropping_line = !line_end;
        }
        Ok((used, false))
    }

    /// Keeps the start line and the whole header lines seen so far, closed by an empty line:
    /// what a head cut short by uncaptured bytes still tells. False before the start line is
    /// whole.
    fn cut_short(&mut self) -> bool {
        if self.line_start == 0 {
            return false;
        }
        self.truncated = true;
        self.buf.truncate(self.line_start);
        self.buf.extend_from_slice(b"\r\n");
        true
    }
}

/// Replaces each obs-fold (a line break before a space or tab continuing a header value) of a
/// request's header section with spaces, as RFC 9112 §5.2 allows; httparse has no such mode for
/// requests.
fn unfold(head: &mut [u8]) {
    let first_line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let mut i = first_line_end.saturating_add(1);
    while let Some(&b) = head.get(i) {
        let continued = b == b'\n' && matches!(head.get(i.saturating_add(1)), Some(b' ' | b'\t'));
        if continued {
            if let Some(x) = head.get_mut(i) {
                *x = b' ';
            }
            if let Some(cr) = i.checked_sub(1).and_then(|j| head.get_mut(j)) {
                if *cr == b'\r' {
                    *cr = b' ';
                }
            }
        }
        i = i.saturating_add(1);
    }
}

/// What the headers say about a body, read from every header (not only the kept ones).
#[derive(Debug)]
struct BodyHeaders {
    /// `Err` when Content-Length is malformed or contradicts itself.
    content_length: Result<Option<u64>, ()>,
    /// `Some(is_chunked)` when Transfer-Encoding is present: whether its last coding is chunked.
    transfer_chunked: Option<bool>,
    upgrade: bool,
}

fn parse_content_length(value: &[u8], seen: Option<u64>) -> Result<Option<u64>, ()> {
    // A list like "10, 10" is tolerated when all members agree (RFC 9110 §8.6).
    let mut length = seen;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n = part.iter().try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?
                .checked_add(u64::from(d.wrapping_sub(b'0')))
        });
        match (n, length) {
            (None, _) => return Err(()),
            (Some(n), Some(prev)) if n != prev => return Err(()),
            (Some(n), _) => length = Some(n),
        }
    }
    Ok(length)
}

fn body_headers(headers: &[httparse::Header<'_>]) -> BodyHeaders {
    let mut info = BodyHeaders {
        content_length: Ok(None),
        transfer_chunked: None,
        upgrade: false,
    };
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            info.content_length = info
                .content_length
                .and_then(|seen| parse_content_length(h.value, seen));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Codings accumulate over repeated headers; only the last one frames the body.
            if let Some(last) = h
                .value
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .rfind(|c| !c.is_empty())
            {
                info.transfer_chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            info.upgrade = true;
        }
    }
    info
}

/// What a request head keeps of its headers.
struct KeptHeaders {
    host: Option<String>,
    user_agent: Option<Arc<str>>,
    context: Option<RemoteContext>,
}

/// Host and User-Agent (the first of each that fits in [`MAX_KEPT_HEADER_BYTES`], lossily
/// decoded), and the trace context, read from every header: a huge cookie hides none of them.
fn keep_headers(headers: &[httparse::Header<'_>]) -> KeptHeaders {
    let mut host = None;
    let mut user_agent = None;
    let mut text = 0usize;
    for h in headers {
        let is_host = h.name.eq_ignore_ascii_case("host");
        let taken = if is_host {
            host.is_some()
        } else if h.name.eq_ignore_ascii_case("user-agent") {
            user_agent.is_some()
        } else {
            continue;
        };
        let size = h.name.len().saturating_add(h.value.len());
        if taken || text.saturating_add(size) > MAX_KEPT_HEADER_BYTES {
            continue;
        }
        text = text.saturating_add(size);
        let value = String::from_utf8_lossy(h.value);
        if is_host {
            host = Some(value.into_owned());
        } else {
            user_agent = Some(Arc::from(value.as_ref()));
        }
    }
    let context = context::extract(|name| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    });
    KeptHeaders {
        host,
        user_agent,
        context,
    }
}

/// A request method as text: the common ones need no allocation.
fn method_text(method: &str) -> Text {
    COMMON_METHODS
        .iter()
        .filter_map(|m| m.strip_suffix(b" "))
        .find(|m| *m == method.as_bytes())
        .and_then(|m| std::str::from_utf8(m).ok())
        .map_or_else(|| Text::Shared(Arc::from(method)), Text::Static)
}

/// A request or response head (by `kind`), parsed.
fn parse_head(
    kind: Kind,
    head: &[u8],
) -> Result<Result<ParsedRequest, ParsedResponse>, ParseError> {
    match kind {
        Kind::Request => parse_request(head).map(Ok),
        Kind::Response => parse_response(head).map(Err),
    }
}

/// The length, through its empty line, of a head that lies wholly at the start of `bytes` and
/// that [`HeadAcc::push`] would keep as it is: a non-empty start line, no header line over its
/// cap, no obsolete line folding to undo. None sends the bytes through `push`.
fn whole_head(bytes: &[u8]) -> Option<usize> {
    let mut start = 0usize;
    for newline in memchr::memchr_iter(b'\n', bytes) {
        let line = bytes.get(start..=newline)?;
        let empty = matches!(line, b"\n" | b"\r\n");
        if start == 0 {
            if empty {
                return None;
            }
        } else if empty {
            return Some(start.saturating_add(line.len()));
        } else if matches!(line.first(), Some(b' ' | b'\t')) {
            return None;
        }
        let room = (MAX_HEAD_BYTES - 2).saturating_sub(start);
        let cap = if start == 0 {
            room
        } else {
            room.min(MAX_HEADER_LINE_BYTES)
        };
        if line.len() > cap {
            return None;
        }
        start = newline.saturating_add(1);
    }
    None
}

/// A passive observer should accept what real peers accept, so httparse runs in its lenient modes.
fn parser_config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_requests(true)
        .ignore_invalid_headers_in_responses(true);
    config
}

fn head_error(e: httparse::Error) -> ParseError {
    match e {
        httparse::Error::TooManyHeaders => ParseError::TooLarge,
        _ => ParseError::Garbage,
    }
}

/// Whether a head parsed; `Partial` cannot be fixed by more bytes once the empty line is in.
fn complete(status: Result<httparse::Status<usize>, httparse::Error>) -> Result<(), ParseError> {
    match status {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        Ok(httparse::Status::Partial) => Err(ParseError::Garbage),
        Err(e) => Err(head_error(e)),
    }
}

/// Path and query of a request target (RFC 9112 §3.2). A `#fragment` is not part of either
/// (clients should not send one); an absolute-form target keeps only its path, so credentials
/// (`user:pass@`) and the host never reach a span; an authority-form target (`CONNECT`) keeps
/// its `host:port`.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    let (target, query) = match target.split_once('?') {
        Some((t, q)) => (t, Some(q)),
        None => (target, None),
    };
    if target.starts_with('/') || target == "*" {
        return (target, query);
    }
    let path = match after_scheme(target) {
        // The authority ends at the path (`?` and `#` are already cut off).
        Some(rest) => rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/"),
        None => target.rsplit_once('@').map_or(target, |(_, host)| host),
    };
    (path, query)
}

/// What follows `scheme://` in an absolute URI (RFC 3986 §3.1 scheme), if `target` is one.
fn after_scheme(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(rest)
}

struct ParsedRequest {
    head: RequestHead,
    body: BodyHeaders,
}

fn parse_request(buf: &[u8]) -> Result<ParsedRequest, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_PARSED_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    complete(parser_config().parse_request(&mut req, buf))?;
    let (path, query) = split_target(req.path.unwrap_or_default());
    let kept = keep_headers(req.headers);
    let head = RequestHead {
        method: method_text(req.method.unwrap_or_default()),
        path: Text::Shared(Arc::from(path)),
        query: query.map(str::to_owned),
        version_minor: req.version.unwrap_or(1),
        host: kept.host,
        user_agent: kept.user_agent,
        context: kept.context,
    };
    Ok(ParsedRequest {
        head,
        body: body_headers(req.headers),
    })
}

struct ParsedResponse {
    head: ResponseHead,
    body: BodyHeaders,
}

fn parse_response(buf: &[u8]) -> Result<ParsedResponse, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_PARSED_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    complete(parser_config().parse_response(&mut resp, buf))?;
    let head = ResponseHead {
        status: resp.code.unwrap_or_default(),
        version_minor: resp.version.unwrap_or(1),
    };
    Ok(ParsedResponse {
        head,
        body: body_headers(resp.headers),
    })
}

// ---------------------------------------------------------------------------------------------
// Bodies

/// How a body ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    /// Until the connection closes (responses only).
    UntilClose,
}

/// Where a chunked body is.
#[derive(Debug)]
enum Chunk {
    Size(SizeLine),
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd {
        saw_cr: bool,
    },
    /// Trailer fields after the last chunk, up to an empty line.
    Trailer {
        line_len: usize,
        total: usize,
    },
}

/// A chunk-size line read byte by byte: `hex [ws] [; extensions] CRLF`.
#[derive(Debug, Default)]
struct SizeLine {
    size: u64,
    digits: u8,
    /// Past the hex digits (whitespace or CR seen): more digits are an error.
    after_size: bool,
    in_ext: bool,
    len: usize,
}

impl SizeLine {
    /// Takes one byte; `Some(size)` when the line ended.
    fn push(&mut self, b: u8) -> Result<Option<u64>, ParseError> {
        self.len = self.len.saturating_add(1);
        if self.len > MAX_CHUNK_LINE_BYTES {
            return Err(ParseError::TooLarge);
        }
        match b {
            b'\n' if self.digits == 0 => Err(ParseError::Garbage),
            b'\n' => Ok(Some(self.size)),
            _ if self.in_ext => Ok(None),
            b';' if self.digits > 0 => {
                self.in_ext = true;
                Ok(None)
            }
            b' ' | b'\t' | b'\r' if self.digits > 0 => {
                self.after_size = true;
                Ok(None)
            }
            _ if self.after_size => Err(ParseError::Garbage),
            _ => {
                let digit = char::from(b).to_digit(16).ok_or(ParseError::Garbage)?;
                // 16 hex digits fill a u64; a longer size cannot be real.
                self.digits = self.digits.saturating_add(1);
                if self.digits > 16 {
                    return Err(ParseError::Garbage);
                }
                self.size = (self.size << 4) | u64::from(digit);
                Ok(None)
            }
        }
    }
}

/// What one call consumed from a body.
#[derive(Debug, Default)]
struct BodyProgress {
    /// Bytes of the input that belong to this body (payload and framing).
    consumed: usize,
    /// Payload bytes among them.
    payload: u64,
    done: bool,
}

fn consume_body(framing: &mut Framing, bytes: &[u8]) -> Result<BodyProgress, ParseError> {
    match framing {
        Framing::Length(remaining) => {
            let n = take_len(*remaining, bytes.len());
            *remaining = remaining.saturating_sub(len64(n));
            Ok(BodyProgress {
                consumed: n,
                payload: len64(n),
                done: *remaining == 0,
            })
        }
        Framing::UntilClose => Ok(BodyProgress {
            consumed: bytes.len(),
            payload: len64(bytes.len()),
            done: false,
        }),
        Framing::Chunked(chunk) => consume_chunked(chunk, bytes),
    }
}

fn consume_chunked(chunk: &mut Chunk, bytes: &[u8]) -> Result<BodyProgress, ParseError> {
    let mut progress = BodyProgress::default();
    while let Some(rest) = bytes.get(progress.consumed..).filter(|r| !r.is_empty()) {
        if let Chunk::Data(remaining) = chunk {
            // Data is skipped in bulk; everything else is framing, read byte by byte.
            let n = take_len(*remaining, rest.len());
            *remaining = remaining.saturating_sub(len64(n));
            progress.consumed = progress.consumed.saturating_add(n);
            progress.payload = progress.payload.saturating_add(len64(n));
            if *remaining == 0 {
                *chunk = Chunk::DataEnd { saw_cr: false };
            }
            continue;
        }
        let Some(&b) = rest.first() else { break };
        progress.consumed = progress.consumed.saturating_add(1);
        if chunk_framing_byte(chunk, b)? {
            progress.done = true;
            break;
        }
    }
    Ok(progress)
}

/// Feeds one framing byte to a chunked body outside chunk data; true when the body ended.
fn chunk_framing_byte(chunk: &mut Chunk, b: u8) -> Result<bool, ParseError> {
    match chunk {
        Chunk::Data(_) => {}
        Chunk::DataEnd { saw_cr } => match b {
            b'\r' if !*saw_cr => *saw_cr = true,
            b'\n' => *chunk = Chunk::Size(SizeLine::default()),
            _ => return Err(ParseError::Garbage),
        },
        Chunk::Size(line) => match line.push(b)? {
            None => {}
            Some(0) => {
                *chunk = Chunk::Trailer {
                    line_len: 0,
                    total: 0,
                }
            }
            Some(size) => *chunk = Chunk::Data(size),
        },
        Chunk::Trailer { line_len, total } => match b {
            b'\n' if *line_len == 0 => return Ok(true),
            b'\n' => *line_len = 0,
            b'\r' => {}
            _ => {
                *line_len = line_len.saturating_add(1);
                *total = total.saturating_add(1);
                if *total > MAX_HEAD_BYTES {
                    return Err(ParseError::TooLarge);
                }
            }
        },
    }
    Ok(false)
}

/// What skipping uncaptured bytes did to a body.
#[derive(Debug, Default)]
struct SkipProgress {
    payload: u64,
    done: bool,
    /// Missing bytes past the end of the body.
    leftover: u64,
}

/// Skips `missing` uncaptured bytes; only lengths known in advance can be skipped.
fn skip_body(framing: &mut Framing, missing: u64) -> Result<SkipProgress, ParseError> {
    match framing {
        Framing::Length(remaining) => {
            let n = missing.min(*remaining);
            *remaining -= n;
            Ok(SkipProgress {
                payload: n,
                done: *remaining == 0,
                leftover: missing - n,
            })
        }
        Framing::UntilClose => Ok(SkipProgress {
            payload: missing,
            ..SkipProgress::default()
        }),
        Framing::Chunked(chunk) => skip_chunked(chunk, missing),
    }
}

fn skip_chunked(chunk: &mut Chunk, mut missing: u64) -> Result<SkipProgress, ParseError> {
    let mut progress = SkipProgress::default();
    if let Chunk::Data(remaining) = chunk {
        let n = missing.min(*remaining);
        *remaining -= n;
        missing -= n;
        progress.payload = n;
        if *remaining == 0 {
            *chunk = Chunk::DataEnd { saw_cr: false };
        }
    }
    // The CRLF closing chunk data has a known length too (sendfile bodies often end at it).
    if let Chunk::DataEnd { saw_cr } = chunk {
        if missing > 0 {
            let need = if *saw_cr { 1 } else { 2 };
            let n = missing.min(need);
            missing -= n;
            *chunk = if n == need {
                Chunk::Size(SizeLine::default())
            } else {
                Chunk::DataEnd { saw_cr: true }
            };
        }
    }
    // Anything more would fall in a chunk-size line or the trailers: sizes we never saw.
    if missing > 0 {
        return Err(ParseError::Desync);
    }
    Ok(progress)
}

fn request_framing(method: &str, body: &BodyHeaders) -> Result<Option<Framing>, ParseError> {
    if method == "CONNECT" {
        // A CONNECT request has no content; what follows is the tunnel (or the next request).
        return Ok(None);
    }
    match (body.transfer_chunked, &body.content_length) {
        (Some(true), _) => Ok(Some(Framing::Chunked(Chunk::Size(SizeLine::default())))),
        // A request cannot be delimited by close: its length is unknowable.
        (Some(false), _) | (None, Err(())) => Err(ParseError::Garbage),
        (None, Ok(Some(n))) if *n > 0 => Ok(Some(Framing::Length(*n))),
        (None, Ok(_)) => Ok(None),
    }
}

/// RFC 9112 §6.3 for a final response (interim ones never have a body).
fn response_framing(
    status: u16,
    to_head: bool,
    body: &BodyHeaders,
) -> Result<Option<Framing>, ParseError> {
    if to_head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(None);
    }
    match (body.transfer_chunked, &body.content_length) {
        (Some(true), _) => Ok(Some(Framing::Chunked(Chunk::Size(SizeLine::default())))),
        (Some(false), _) => Ok(Some(Framing::UntilClose)),
        (None, Err(())) => Err(ParseError::Garbage),
        (None, Ok(Some(0))) => Ok(None),
        (None, Ok(Some(n))) => Ok(Some(Framing::Length(*n))),
        (None, Ok(None)) => Ok(Some(Framing::UntilClose)),
    }
}

// ---------------------------------------------------------------------------------------------
// Connection state

/// A request waiting for its response, or a run of placeholders for `count` consecutive ones.
#[derive(Debug, Clone)]
struct Pending {
    /// Sequence number of the (first) request.
    seq: u64,
    /// Requests this entry stands for: 1, or more for a run of placeholders.
    count: u64,
    role: Role,
    head: RequestHead,
    start_ns: u64,
    tid: u32,
    body_size: u64,
    body_done: bool,
    /// Placeholder (its body desynced, or no room was left for its head): keeps FIFO order,
    /// reported never.
    dropped: bool,
    /// Its head was not wholly seen.
    truncated: bool,
    /// Bytes of head text counted against [`MAX_PENDING_BYTES`] (0 for placeholders).
    cost: usize,
    /// Sets the framing of its response.
    is_head: bool,
    is_connect: bool,
    /// CONNECT or an `Upgrade` request: what follows it may be another protocol.
    switches: bool,
    /// Thread of the first response byte, set by an interim (1xx) response.
    response_tid: Option<u32>,
}

impl Pending {
    fn covers(&self, seq: u64) -> bool {
        seq.wrapping_sub(self.seq) < self.count
    }

    /// A placeholder of a run may stand for any request whose response is framed the usual way.
    fn mergeable(&self) -> bool {
        self.dropped && !self.is_head && !self.is_connect && !self.switches
    }
}

/// What a request head costs against [`MAX_PENDING_BYTES`].
fn head_cost(head: &RequestHead) -> usize {
    let text = head.method.len()
        + head.path.len()
        + head.query.as_ref().map_or(0, String::len)
        + head.host.as_ref().map_or(0, String::len)
        + head.user_agent.as_ref().map_or(0, |ua| ua.len());
    text.saturating_add(std::mem::size_of::<Pending>())
}

/// A final response whose body is being counted.
#[derive(Debug)]
struct ResponseProgress {
    /// The request it answers (`None` for a response with no request in view).
    for_seq: Option<u64>,
    head: ResponseHead,
    body_size: u64,
    tid: u32,
    /// `ts_exit` of the latest segment holding bytes of this response.
    last_ts: u64,
    /// Its head was not wholly seen.
    truncated: bool,
}

/// Who body bytes are counted for.
#[derive(Debug)]
enum Owner {
    Request(u64),
    Response(Box<ResponseProgress>),
}

#[derive(Debug, Default)]
enum State {
    /// At a message boundary, in sync.
    #[default]
    Idle,
    Head(HeadAcc),
    Body {
        framing: Framing,
        owner: Owner,
    },
    /// Out of sync: skipping until a segment begins with a message.
    Resync,
}

/// Incremental HTTP/1.x parser of one connection.
pub struct Http1Conn {
    role: Role,
    /// After a protocol switch or a tunnel: nothing more is HTTP/1.
    opaque: bool,
    egress: State,
    ingress: State,
    pending: VecDeque<Pending>,
    /// Entries of `pending` that keep a head, and the bytes those heads cost.
    pending_heads: usize,
    pending_bytes: usize,
    next_seq: u64,
}

impl ConnParser for Http1Conn {
    fn feed(&mut self, seg: &Segment<'_>, out: &mut ParseOutput) {
        if self.opaque {
            return;
        }
        if seg.lost_before {
            let state = self.take_state(seg.dir);
            self.fail(seg.dir, state, ParseError::Desync, out);
        }
        self.resync_at_boundary(seg);
        let mut offset = 0usize;
        let mut stalls = 0u8;
        while let Some(rest) = seg.bytes.get(offset..).filter(|r| !r.is_empty()) {
            if self.opaque {
                return;
            }
            let used = self.step(seg, rest, out);
            offset = offset.saturating_add(used);
            // Transitions without consuming are fine once (head -> body); never loop on them.
            stalls = if used == 0 {
                stalls.saturating_add(1)
            } else {
                0
            };
            if stalls > 2 {
                let state = self.take_state(seg.dir);
                self.fail(seg.dir, state, ParseError::Garbage, out);
                return;
            }
        }
        if seg.missing > 0 && !self.opaque {
            self.skip_missing(seg, out);
        }
    }

    fn close(&mut self, ts: u64, out: &mut ParseOutput) {
        if !self.opaque {
            self.finish_response_at_close(ts, out);
            for p in self.take_pending() {
                if !p.dropped {
                    let tid = p.response_tid.unwrap_or(0);
                    emit(out, exchange(p, None, 0, ts, tid, Outcome::Closed));
                }
            }
        }
        self.egress = State::Idle;
        self.ingress = State::Idle;
    }

    fn expire(&mut self, now: u64, timeout_ns: u64, out: &mut ParseOutput) {
        if self.opaque {
            return;
        }
        // Only the oldest can be answered next, so expiry proceeds from the front and stops at
        // the first request that is still live.
        while let Some(front) = self.pending.front() {
            let live = self.response_in_progress() || !front.body_done;
            if live || now.saturating_sub(front.start_ns) <= timeout_ns {
                break;
            }
            // A whole placeholder run goes at once: none of it is reported anyway.
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            crate::lean::settle(&mut self.pending);
            self.release(&p);
            if !p.dropped {
                let tid = p.response_tid.unwrap_or(0);
                emit(out, exchange(p, None, 0, now, tid, Outcome::Timeout));
            }
        }
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn pending_count(&self) -> usize {
        self.pending
            .iter()
            .filter(|p| !p.dropped)
            .map(|p| usize::try_from(p.count).unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add)
    }
}

fn emit(out: &mut ParseOutput, record: Record) {
    out.messages.push(Box::new(record));
}

fn exchange(
    p: Pending,
    response: Option<ResponseHead>,
    response_body_size: u64,
    end_ns: u64,
    response_tid: u32,
    outcome: Outcome,
) -> Record {
    Record {
        id: p.seq,
        exchange: Exchange {
            role: p.role,
            request: p.head,
            response,
            request_body_size: p.body_size,
            response_body_size,
            start_ns: p.start_ns,
            end_ns,
            request_tid: p.tid,
            response_tid,
            outcome,
            truncated: p.truncated,
        },
    }
}

/// `p` answered (wholly or up to a close) by `r`.
fn answered(p: Pending, r: ResponseProgress, end_ns: u64, outcome: Outcome) -> Record {
    let truncated = r.truncated;
    let mut x = exchange(p, Some(r.head), r.body_size, end_ns, r.tid, outcome);
    x.exchange.truncated |= truncated;
    x
}

impl Http1Conn {
    fn new(role: Role) -> Self {
        Http1Conn {
            role,
            opaque: false,
            egress: State::Idle,
            ingress: State::Idle,
            pending: VecDeque::new(),
            pending_heads: 0,
            pending_bytes: 0,
            next_seq: 0,
        }
    }

    fn state_mut(&mut self, dir: Direction) -> &mut State {
        match dir {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        }
    }

    /// Takes a direction's state out (leaving `Idle`); every path puts one back.
    fn take_state(&mut self, dir: Direction) -> State {
        std::mem::take(self.state_mut(dir))
    }

    fn put_state(&mut self, dir: Direction, state: State) {
        *self.state_mut(dir) = state;
    }

    fn allowed(&self, dir: Direction) -> Option<Kind> {
        expected_kind(self.role, dir)
    }

    fn response_dir(&self) -> Option<Direction> {
        [Direction::Egress, Direction::Ingress]
            .into_iter()
            .find(|&d| self.allowed(d) == Some(Kind::Response))
    }

    /// Whether the response to the oldest pending request has started (head or body).
    fn response_in_progress(&self) -> bool {
        let Some(dir) = self.response_dir() else {
            return false;
        };
        let state = match dir {
            Direction::Egress => &self.egress,
            Direction::Ingress => &self.ingress,
        };
        match state {
            State::Head(_) => true,
            State::Body {
                owner: Owner::Response(r),
                ..
            } => self.answers_front(r),
            _ => false,
        }
    }

    /// Messages start at syscall boundaries in practice, so that is where sync is regained.
    fn resync_at_boundary(&mut self, seg: &Segment<'_>) {
        let allowed = self.allowed(seg.dir);
        let state = self.state_mut(seg.dir);
        if matches!(state, State::Resync) && guess_start(seg.bytes, allowed) == Start::Yes {
            *state = State::Idle;
        }
    }

    /// Abandons whatever `abandoned` was parsing, reports `err` (once per incident) and resyncs.
    fn fail(&mut self, dir: Direction, abandoned: State, err: ParseError, out: &mut ParseOutput) {
        match abandoned {
            State::Resync => {}
            State::Head(HeadAcc {
                kind: Some(Kind::Response),
                ..
            }) => {
                out.errors.push(err);
                if self.response_dir() == Some(dir) {
                    self.drop_front();
                    if self.lose_pairing_if_waiting(out) {
                        return;
                    }
                }
            }
            State::Body {
                owner: Owner::Response(r),
                ..
            } => {
                out.errors.push(err);
                if self.answers_front(&r) {
                    self.drop_front();
                    if self.lose_pairing_if_waiting(out) {
                        return;
                    }
                }
            }
            State::Body {
                owner: Owner::Request(seq),
                ..
            } => {
                if let Some(p) = self.pending_mut(seq) {
                    p.dropped = true;
                    p.body_done = true;
                }
                out.errors.push(err);
            }
            State::Idle | State::Head(_) => out.errors.push(err),
        }
        self.put_state(dir, State::Resync);
    }

    /// The response stream lost bytes that may hold responses (a response was cut short, or a
    /// resync skips bytes): if requests are waiting, how many of their responses went with
    /// those bytes cannot be known, and pairing any later response would be a guess. Then the
    /// connection is no longer parsed (reported once); returns whether that happened.
    fn lose_pairing_if_waiting(&mut self, out: &mut ParseOutput) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        out.errors.push(ParseError::Unpaired);
        self.go_opaque();
        true
    }

    /// Whether `r` answers the oldest pending request (not an orphan, not an evicted one).
    fn answers_front(&self, r: &ResponseProgress) -> bool {
        r.for_seq.is_some() && r.for_seq == self.pending.front().map(|p| p.seq)
    }

    /// The oldest request lost its response: forget it so later responses pair correctly.
    fn drop_front(&mut self) {
        self.pop_front();
    }

    /// Queues a request; a placeholder joins the run of placeholders before it when it can.
    fn push_pending(&mut self, p: Pending) {
        if let Some(back) = self.pending.back_mut() {
            if back.mergeable() && p.mergeable() && back.seq.wrapping_add(back.count) == p.seq {
                back.count = back.count.saturating_add(1);
                back.body_done = p.body_done;
                return;
            }
        }
        if p.cost > 0 {
            self.pending_heads = self.pending_heads.saturating_add(1);
            self.pending_bytes = self.pending_bytes.saturating_add(p.cost);
        }
        crate::lean::push(&mut self.pending, p);
    }

    /// Takes the oldest pending request (one request of a placeholder run).
    fn pop_front(&mut self) -> Option<Pending> {
        let front = self.pending.front_mut()?;
        if front.count > 1 {
            let one = Pending {
                count: 1,
                cost: 0,
                ..front.clone()
            };
            front.count -= 1;
            front.seq = front.seq.wrapping_add(1);
            return Some(one);
        }
        let p = self.pending.pop_front()?;
        crate::lean::settle(&mut self.pending);
        self.release(&p);
        Some(p)
    }

    /// Every pending entry, leaving none.
    fn take_pending(&mut self) -> VecDeque<Pending> {
        self.pending_heads = 0;
        self.pending_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// Accounts for an entry that left the queue.
    fn release(&mut self, p: &Pending) {
        if p.cost > 0 {
            self.pending_heads = self.pending_heads.saturating_sub(1);
            self.pending_bytes = self.pending_bytes.saturating_sub(p.cost);
        }
    }

    /// The pending entry standing for request `seq`.
    fn pending_mut(&mut self, seq: u64) -> Option<&mut Pending> {
        self.pending.iter_mut().rev().find(|p| p.covers(seq))
    }

    /// Processes bytes at the start of `bytes` in the current state; returns how many it used.
    fn step(&mut self, seg: &Segment<'_>, bytes: &[u8], out: &mut ParseOutput) -> usize {
        match self.take_state(seg.dir) {
            State::Resync => {
                self.put_state(seg.dir, State::Resync);
                // A response starting inside a skipped segment would be lost.
                let hidden_response = self.response_dir() == Some(seg.dir)
                    && bytes
                        .windows(RESPONSE_PREFIX.len())
                        .any(|w| w == RESPONSE_PREFIX);
                if hidden_response {
                    self.lose_pairing_if_waiting(out);
                }
                bytes.len()
            }
            State::Idle => {
                // Empty lines before a start line are ignored (RFC 9112 §2.2).
                let blank = bytes
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                if blank > 0 {
                    return blank;
                }
                self.head_step(seg, HeadAcc::new(seg), bytes, out)
            }
            State::Head(acc) => self.head_step(seg, acc, bytes, out),
            State::Body { framing, owner } => self.body_step(seg, framing, owner, bytes, out),
        }
    }

    fn head_step(
        &mut self,
        seg: &Segment<'_>,
        mut acc: HeadAcc,
        bytes: &[u8],
        out: &mut ParseOutput,
    ) -> usize {
        if acc.buf.is_empty() && !acc.dropping_line {
            if let Some(end) = whole_head(bytes) {
                // The usual case: parsed where it lies, not copied first.
                let head = bytes.get(..end).unwrap_or_default();
                if let Start::Yes = starts_message(head, self.allowed(seg.dir)) {
                    let kind = kind_of_start(head, self.allowed(seg.dir));
                    acc.kind = Some(kind);
                    let parsed = parse_head(kind, head);
                    self.head_parsed(seg, acc, parsed, true, out);
                    return end;
                }
            }
        }
        let (used, ended) = match acc.push(bytes) {
            Ok(progress) => progress,
            Err(e) => {
                self.fail(seg.dir, State::Head(acc), e, out);
                return bytes.len();
            }
        };
        if acc.kind.is_none() {
            let allowed = self.allowed(seg.dir);
            match starts_message(&acc.buf, allowed) {
                Start::No => {
                    self.fail(seg.dir, State::Head(acc), ParseError::Garbage, out);
                    return bytes.len();
                }
                Start::NeedMore => {}
                Start::Yes => acc.kind = Some(kind_of_start(&acc.buf, allowed)),
            }
        }
        if ended {
            self.finish_head(seg, acc, true, out);
        } else {
            self.put_state(seg.dir, State::Head(acc));
        }
        used
    }

    /// Parses a head and starts its message: a whole head (`framed`), or one cut short by
    /// uncaptured bytes, whose body cannot be framed.
    fn finish_head(
        &mut self,
        seg: &Segment<'_>,
        mut acc: HeadAcc,
        framed: bool,
        out: &mut ParseOutput,
    ) {
        let parsed = match acc.kind {
            Some(kind) => {
                if kind == Kind::Request {
                    unfold(&mut acc.buf);
                }
                parse_head(kind, &acc.buf)
            }
            // Cannot happen: a head ends only after its start was told apart.
            None => Err(ParseError::Garbage),
        };
        self.head_parsed(seg, acc, parsed, framed, out);
    }

    /// Starts the message of a parsed head (see `finish_head`).
    fn head_parsed(
        &mut self,
        seg: &Segment<'_>,
        acc: HeadAcc,
        parsed: Result<Result<ParsedRequest, ParsedResponse>, ParseError>,
        framed: bool,
        out: &mut ParseOutput,
    ) {
        match parsed {
            Err(e) => {
                let e = if framed { e } else { ParseError::Desync };
                self.fail(seg.dir, State::Head(acc), e, out);
            }
            Ok(Ok(req)) => self.on_request_head(seg, &acc, req, framed, out),
            Ok(Err(resp)) => self.on_response_head(seg, &acc, resp, framed, out),
        }
    }

    /// Uncaptured bytes inside a head: its message is made from what was captured, provided
    /// the start line was (else it is a desync).
    fn head_cut_short(&mut self, seg: &Segment<'_>, mut acc: HeadAcc, out: &mut ParseOutput) {
        if acc.kind.is_some() && acc.cut_short() {
            self.finish_head(seg, acc, false, out);
        } else {
            self.fail(seg.dir, State::Head(acc), ParseError::Desync, out);
        }
    }

    /// Settles an unknown role from the first complete head; false if the head travels the
    /// wrong way for the (already settled) role.
    fn settle_role(&mut self, kind: Kind, dir: Direction) -> bool {
        if self.role == Role::Unknown {
            self.role = role_from(kind, dir);
        }
        self.allowed(dir) == Some(kind)
    }

    fn on_request_head(
        &mut self,
        seg: &Segment<'_>,
        acc: &HeadAcc,
        req: ParsedRequest,
        framed: bool,
        out: &mut ParseOutput,
    ) {
        if !self.settle_role(Kind::Request, seg.dir) {
            self.fail(seg.dir, State::Idle, ParseError::Garbage, out);
            return;
        }
        let framing = if framed {
            match request_framing(&req.head.method, &req.body) {
                Ok(framing) => framing,
                Err(e) => {
                    self.fail(seg.dir, State::Idle, e, out);
                    return;
                }
            }
        } else {
            None
        };
        let cost = head_cost(&req.head);
        let no_room = self.pending_heads >= MAX_PENDING
            || self.pending_bytes.saturating_add(cost) > MAX_PENDING_BYTES;
        if no_room {
            out.errors.push(ParseError::TooManyPending);
            if self.pending.len() >= MAX_PENDING_ENTRIES {
                // Not even placeholders fit: stop rather than pair answers with wrong requests.
                self.go_opaque();
                return;
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let is_connect = req.head.method == "CONNECT";
        let switches = is_connect || req.body.upgrade;
        // A head cut short has a body that cannot be counted: its declared length stands in.
        let body_size = match (framed, req.body.content_length) {
            (false, Ok(Some(n))) => n,
            _ => 0,
        };
        // A placeholder gives no span: nothing is remembered for it downstream.
        if !no_room {
            out.started.push(Started {
                id: seq,
                tid: acc.tid,
                ts: acc.start_ns,
            });
        }
        self.push_pending(Pending {
            seq,
            count: 1,
            role: self.role,
            is_head: req.head.method == "HEAD",
            is_connect,
            switches,
            cost: if no_room { 0 } else { cost },
            head: if no_room {
                RequestHead::default()
            } else {
                req.head
            },
            start_ns: acc.start_ns,
            tid: acc.tid,
            body_size,
            body_done: !framed,
            dropped: no_room,
            truncated: acc.truncated,
            response_tid: None,
        });
        match framing {
            _ if !framed => self.put_state(seg.dir, State::Resync),
            Some(framing) => self.put_state(
                seg.dir,
                State::Body {
                    framing,
                    owner: Owner::Request(seq),
                },
            ),
            None => self.request_done(seg.dir, seq, switches),
        }
    }

    /// The request `seq` ended. After a tunnel or upgrade request the client may speak the new
    /// protocol before the answer arrives: skip that quietly until a request starts a segment.
    fn request_done(&mut self, dir: Direction, seq: u64, switches: bool) {
        if let Some(p) = self.pending_mut(seq) {
            p.body_done = true;
        }
        self.put_state(dir, if switches { State::Resync } else { State::Idle });
    }

    fn on_response_head(
        &mut self,
        seg: &Segment<'_>,
        acc: &HeadAcc,
        resp: ParsedResponse,
        framed: bool,
        out: &mut ParseOutput,
    ) {
        if !self.settle_role(Kind::Response, seg.dir) {
            self.fail(seg.dir, State::Idle, ParseError::Garbage, out);
            return;
        }
        // After a head cut short, the direction waits for the next message start.
        let after = if framed { State::Idle } else { State::Resync };
        let status = resp.head.status;
        if (100..200).contains(&status) && status != 101 {
            // Interim: the request still waits for its final response.
            if let Some(front) = self.pending.front_mut() {
                front.response_tid.get_or_insert(acc.tid);
            }
            self.put_state(seg.dir, after);
            return;
        }
        let front = self.pending.front();
        let (to_head, to_connect) = front.map_or((false, false), |p| (p.is_head, p.is_connect));
        let mut progress = Box::new(ResponseProgress {
            for_seq: front.map(|p| p.seq),
            tid: front.and_then(|p| p.response_tid).unwrap_or(acc.tid),
            head: resp.head,
            body_size: 0,
            last_ts: seg.ts_exit,
            truncated: acc.truncated,
        });
        if status == 101 || (to_connect && (200..300).contains(&status)) {
            self.complete_response(progress, out);
            self.go_opaque();
            return;
        }
        let framing = response_framing(status, to_head, &resp.body);
        if !framed {
            // The body cannot be followed: the response ends here, its declared length stands in.
            if let Ok(Some(Framing::Length(n))) = framing {
                progress.body_size = n;
            }
            self.complete_response(progress, out);
            self.put_state(seg.dir, after);
            // The uncaptured rest may hold the responses of requests still waiting.
            self.lose_pairing_if_waiting(out);
            return;
        }
        match framing {
            Ok(Some(framing)) => self.put_state(
                seg.dir,
                State::Body {
                    framing,
                    owner: Owner::Response(progress),
                },
            ),
            Ok(None) => {
                self.complete_response(progress, out);
                self.put_state(seg.dir, State::Idle);
            }
            Err(e) => {
                let abandoned = State::Body {
                    framing: Framing::UntilClose,
                    owner: Owner::Response(progress),
                };
                self.fail(seg.dir, abandoned, e, out);
            }
        }
    }

    /// A whole response was seen: pair it with its request (if still there) and report.
    fn complete_response(&mut self, r: Box<ResponseProgress>, out: &mut ParseOutput) {
        if !self.answers_front(&r) {
            return;
        }
        if let Some(p) = self.pop_front().filter(|p| !p.dropped) {
            let end = r.last_ts;
            emit(out, answered(p, *r, end, Outcome::Complete));
        }
    }

    fn go_opaque(&mut self) {
        self.opaque = true;
        self.take_pending();
        self.egress = State::Idle;
        self.ingress = State::Idle;
    }

    fn body_step(
        &mut self,
        seg: &Segment<'_>,
        mut framing: Framing,
        mut owner: Owner,
        bytes: &[u8],
        out: &mut ParseOutput,
    ) -> usize {
        match consume_body(&mut framing, bytes) {
            Err(e) => {
                self.fail(seg.dir, State::Body { framing, owner }, e, out);
                bytes.len()
            }
            Ok(progress) => {
                self.count_body(seg, &mut owner, progress.payload);
                if progress.done {
                    self.finish_body(seg.dir, owner, out);
                } else {
                    self.put_state(seg.dir, State::Body { framing, owner });
                }
                progress.consumed
            }
        }
    }

    fn count_body(&mut self, seg: &Segment<'_>, owner: &mut Owner, payload: u64) {
        match owner {
            Owner::Request(seq) => {
                if let Some(p) = self.pending_mut(*seq) {
                    p.body_size = p.body_size.saturating_add(payload);
                }
            }
            Owner::Response(r) => {
                r.body_size = r.body_size.saturating_add(payload);
                r.last_ts = seg.ts_exit;
            }
        }
    }

    fn finish_body(&mut self, dir: Direction, owner: Owner, out: &mut ParseOutput) {
        match owner {
            Owner::Request(seq) => {
                let switches = self
                    .pending
                    .iter()
                    .find(|p| p.covers(seq))
                    .is_some_and(|p| p.switches);
                self.request_done(dir, seq, switches);
            }
            Owner::Response(r) => {
                self.complete_response(r, out);
                self.put_state(dir, State::Idle);
            }
        }
    }

    /// Uncaptured bytes after the captured ones: skippable only inside a body of known length.
    fn skip_missing(&mut self, seg: &Segment<'_>, out: &mut ParseOutput) {
        let mut missing = seg.missing;
        while missing > 0 && !self.opaque {
            match self.take_state(seg.dir) {
                State::Resync => {
                    self.put_state(seg.dir, State::Resync);
                    if self.response_dir() == Some(seg.dir) {
                        self.lose_pairing_if_waiting(out);
                    }
                    return;
                }
                State::Body {
                    mut framing,
                    mut owner,
                } => match skip_body(&mut framing, missing) {
                    Err(e) => {
                        self.fail(seg.dir, State::Body { framing, owner }, e, out);
                        return;
                    }
                    Ok(skip) => {
                        self.count_body(seg, &mut owner, skip.payload);
                        if !skip.done {
                            self.put_state(seg.dir, State::Body { framing, owner });
                            return;
                        }
                        self.finish_body(seg.dir, owner, out);
                        missing = skip.leftover;
                    }
                },
                State::Idle => {
                    // Unseen bytes where a message starts: in the response direction that is a
                    // response we cannot read, so its request goes with it (and any others
                    // waiting may have theirs in those bytes too).
                    let responses = self.response_dir() == Some(seg.dir);
                    if responses {
                        self.drop_front();
                    }
                    self.fail(seg.dir, State::Idle, ParseError::Desync, out);
                    if responses {
                        self.lose_pairing_if_waiting(out);
                    }
                    return;
                }
                State::Head(acc) => {
                    self.head_cut_short(seg, acc, out);
                    return;
                }
            }
        }
    }

    /// At close, a close-delimited response is complete; another partial one is `Closed`.
    fn finish_response_at_close(&mut self, ts: u64, out: &mut ParseOutput) {
        let Some(dir) = self.response_dir() else {
            return;
        };
        match self.take_state(dir) {
            State::Body {
                framing: Framing::UntilClose,
                owner: Owner::Response(r),
            } => {
                self.complete_response(r, out);
            }
            State::Body {
                owner: Owner::Response(r),
                ..
            } => {
                if !self.answers_front(&r) {
                    return;
                }
                if let Some(p) = self.pop_front().filter(|p| !p.dropped) {
                    emit(out, answered(p, *r, ts, Outcome::Closed));
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Spans

/// One finished exchange as the pipeline gets it: the exchange and its id on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub exchange: Exchange,
}

/// `a=1&b=2` -> `a=REDACTED&b=REDACTED`: query values often hold tokens.
pub fn redact_query(q: &str) -> String {
    const REDACTED: &str = "=REDACTED";
    let mut out = String::with_capacity(q.len() + REDACTED.len());
    for (i, kv) in q.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match kv.split_once('=') {
            Some((k, _)) => {
                out.push_str(k);
                out.push_str(REDACTED);
            }
            None => out.push_str(kv),
        }
    }
    out
}

/// Host and optional port of a Host header (`[v6]:port`, `name:port`, `name`).
fn split_host(h: &str) -> (&str, Option<u16>) {
    let h = h.trim();
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (h, None),
        },
        _ => (h, None),
    }
}

impl ExchangeRecord for Record {
    fn info(&self) -> ExchangeInfo {
        let x = &self.exchange;
        ExchangeInfo {
            id: self.id,
            role: x.role,
            start_ns: x.start_ns,
            end_ns: x.end_ns,
            request_tid: x.request_tid,
            response_tid: x.response_tid,
            outcome: x.outcome,
            truncated: x.truncated,
        }
    }

    fn context(&self) -> Option<RemoteContext> {
        self.exchange.request.context
    }

    /// Attribute names of the stable HTTP semantic conventions.
    fn to_span(&self, conn: &ConnMeta, clock: &Clock, opts: SpanOptions) -> SpanRecord {
        let ex = &self.exchange;
        let req = &ex.request;
        let summary = SpanSummary::Http {
            method: req.method.clone(),
            path: req.path.clone(),
            status_code: ex.response.as_ref().map(|r| r.status),
        };
        let mut name = String::with_capacity(req.method.len() + 1 + req.path.len());
        name.push_str(&req.method);
        name.push(' ');
        name.push_str(&req.path);
        let mut span = SpanRecord::new(&self.info(), conn, clock, name, summary);
        let server = ex.role != Role::Client;
        let a = &mut span.attributes;
        a.push(KeyValue::new("http.request.method", req.method.clone()));
        a.push(KeyValue::new("url.path", req.path.clone()));
        if let Some(q) = &req.query {
            let q = if opts.show_query_values {
                q.clone()
            } else {
                redact_query(q)
            };
            a.push(KeyValue::new("url.query", q));
        }
        let (local, remote) = (conn.endpoints.local, conn.endpoints.remote);
        let addresses = &conn.addresses;
        let host = req.host.as_deref().map(split_host);
        let host_addr = |(h, _): (&str, Option<u16>)| Text::Owned(h.to_owned());
        if server {
            let addr = host.map_or_else(|| Text::Shared(addresses.local.clone()), host_addr);
            a.push(KeyValue::new("server.address", addr));
            a.push(KeyValue::new(
                "server.port",
                host.and_then(|(_, p)| p).unwrap_or(local.1),
            ));
            a.push(KeyValue::new("client.address", addresses.remote.clone()));
            a.push(KeyValue::new("client.port", remote.1));
        } else {
            let addr = host.map_or_else(|| Text::Shared(addresses.remote.clone()), host_addr);
            a.push(KeyValue::new("server.address", addr));
            a.push(KeyValue::new("server.port", remote.1));
        }
        a.push(KeyValue::new(
            "network.peer.address",
            addresses.remote.clone(),
        ));
        a.push(KeyValue::new("network.peer.port", remote.1));
        a.push(KeyValue::new("network.protocol.name", "http"));
        a.push(KeyValue::new(
            "network.protocol.version",
            if req.version_minor == 0 { "1.0" } else { "1.1" },
        ));
        if let Some(ua) = &req.user_agent {
            a.push(KeyValue::new("user_agent.original", ua.clone()));
        }
        a.push(KeyValue::new(
            "http.request.body.size",
            ex.request_body_size,
        ));
        if ex.truncated {
            // Attributes from headers past the cut are missing; body sizes are the declared ones.
            a.push(KeyValue::new("tracer.truncated", true));
        }
        span.status = match (&ex.response, ex.outcome) {
            (Some(resp), _) => {
                a.push(KeyValue::new("http.response.status_code", resp.status));
                a.push(KeyValue::new(
                    "http.response.body.size",
                    ex.response_body_size,
                ));
                let failed = resp.status >= 500 || (!server && resp.status >= 400);
                if failed {
                    a.push(KeyValue::new("error.type", resp.status.to_string()));
                    SpanStatus::Error {
                        message: format!("HTTP {}", resp.status),
                    }
                } else {
                    SpanStatus::Unset
                }
            }
            (None, Outcome::Timeout) => {
                a.push(KeyValue::new("error.type", "timeout"));
                SpanStatus::Error {
                    message: "no response before the request timeout".into(),
                }
            }
            (None, _) => {
                a.push(KeyValue::new("error.type", "connection_closed"));
                SpanStatus::Error {
                    message: "connection closed before a response".into(),
                }
            }
        };
        span
    }
}

#[cfg(test)]
mod span_tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case("a=1&b=&c", "a=REDACTED&b=REDACTED&c")]
    #[case("token", "token")]
    fn redacts_values_only(#[case] q: &str, #[case] want: &str) {
        assert_eq!(redact_query(q), want);
    }

    #[rstest]
    #[case("example.com:8080", ("example.com", Some(8080)))]
    #[case("example.com", ("example.com", None))]
    #[case("[::1]:80", ("::1", Some(80)))]
    #[case("::1", ("::1", None))]
    #[case("h:notaport", ("h:notaport", None))]
    fn host_header_forms(#[case] h: &str, #[case] want: (&str, Option<u16>)) {
        assert_eq!(split_host(h), want);
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::whole(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nnext", Some(27))]
    #[case::bare_newlines(b"GET / HTTP/1.1\nHost: h\n\n", Some(24))]
    #[case::no_headers(b"HTTP/1.1 200 OK\r\n\r\n", Some(19))]
    #[case::unfinished(b"GET / HTTP/1.1\r\nHost: h\r\n", None)]
    #[case::leading_blank_line(b"\r\nGET / HTTP/1.1\r\n\r\n", None)]
    #[case::folded(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", None)]
    fn whole_heads_are_found_in_place(#[case] bytes: &[u8], #[case] want: Option<usize>) {
        assert_eq!(whole_head(bytes), want);
    }

    #[test]
    fn common_methods_need_no_allocation() {
        for m in COMMON_METHODS {
            let name = std::str::from_utf8(m).unwrap().trim_end();
            assert!(matches!(method_text(name), Text::Static(s) if s == name));
        }
        assert!(matches!(method_text("PURGE"), Text::Shared(s) if &*s == "PURGE"));
    }

    #[test]
    fn a_header_line_over_its_cap_is_not_parsed_in_place() {
        let mut head = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
        head.resize(head.len() + MAX_HEADER_LINE_BYTES, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(whole_head(&head), None);
    }
    use crate::protocol::testconn::TestConn;
    use Direction::{Egress, Ingress};

    /// One connection under test (see `testconn`) whose records are HTTP/1 exchanges.
    struct Conn(TestConn);

    impl std::ops::Deref for Conn {
        type Target = TestConn;
        fn deref(&self) -> &TestConn {
            &self.0
        }
    }

    impl std::ops::DerefMut for Conn {
        fn deref_mut(&mut self) -> &mut TestConn {
            &mut self.0
        }
    }

    impl Conn {
        fn new(role: Role) -> Self {
            Conn(TestConn::new(&Http1, role))
        }

        fn exchanges(&mut self) -> Vec<Exchange> {
            self.records::<Record>()
                .into_iter()
                .map(|r| r.exchange)
                .collect()
        }
    }

    fn http1_exchange(m: super::super::Message) -> Option<Exchange> {
        let any: Box<dyn std::any::Any> = m;
        any.downcast::<Record>().ok().map(|r| r.exchange)
    }

    /// `ts_enter` and `ts_exit` of the k-th segment.
    fn enter(k: u64) -> u64 {
        100 * k
    }
    fn exit(k: u64) -> u64 {
        100 * k + 5
    }

    /// The head of an HTTP/1.1 request with headers `hdrs` (names lowercase).
    fn req(method: &str, path: &str, query: Option<&str>, hdrs: &[(&str, &str)]) -> RequestHead {
        let get = |name: &str| hdrs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        RequestHead {
            method: method_text(method),
            path: Text::Owned(path.to_owned()),
            query: query.map(str::to_owned),
            version_minor: 1,
            host: get("host").map(str::to_owned),
            user_agent: get("user-agent").map(Arc::from),
            context: context::extract(get),
        }
    }

    fn resp(status: u16) -> ResponseHead {
        ResponseHead {
            status,
            version_minor: 1,
        }
    }

    /// A complete exchange; adjust the other fields with struct update syntax.
    fn done(role: Role, request: RequestHead, response: ResponseHead) -> Exchange {
        Exchange {
            role,
            request,
            response: Some(response),
            request_body_size: 0,
            response_body_size: 0,
            start_ns: 0,
            end_ns: 0,
            request_tid: 0,
            response_tid: 0,
            outcome: Outcome::Complete,
            truncated: false,
        }
    }

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").into_bytes()
    }

    fn ok_len(status: u16, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn statuses(xs: &[Exchange]) -> Vec<u16> {
        xs.iter()
            .map(|x| x.response.as_ref().map_or(0, |r| r.status))
            .collect()
    }

    fn paths(xs: &[Exchange]) -> Vec<&str> {
        xs.iter().map(|x| x.request.path.as_str()).collect()
    }

    // ---- detection -----------------------------------------------------------------------

    #[test]
    fn detect_known_methods_and_responses() {
        let d = |b: &[u8]| Http1.detect(b, Ingress, Role::Unknown);
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            assert!(d(format!("{m} / HTTP/1.1\r\n").as_bytes()), "{m}");
            assert!(d(format!("{m} ").as_bytes()), "{m} alone");
            assert!(!d(m.as_bytes()), "{m} without space cannot tell");
        }
        assert!(d(b"HTTP/1.1 200 OK\r\n"));
        assert!(d(b"HTTP/1.0 404"));
        assert!(d(b"HTTP/1."));
        assert!(
            Http1.detect(b"GET /", Egress, Role::Server),
            "direction-agnostic"
        );
        for no in [
            &b""[..],
            b"G",
            b"GE",
            b"HTTP/1",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"get / HTTP/1.1",
            b"PROPFIND / HTTP/1.1",
            b"FOO / HTTP/1.1",
            b"HTTP/2 200",
            b" GET / HTTP/1.1",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert!(!d(no), "{:?}", String::from_utf8_lossy(no));
        }
    }

    // ---- basic exchanges -----------------------------------------------------------------

    #[test]
    fn server_get_with_content_length_response() {
        let mut c = Conn::new(Role::Server);
        c.feed(
            Ingress,
            b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example\r\nUser-Agent: t\r\n\r\n",
        );
        assert!(c.parser.has_pending());
        c.feed(
            Egress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
        );
        let expected = Exchange {
            start_ns: exit(1),
            end_ns: exit(2),
            request_tid: 1,
            response_tid: 2,
            response_body_size: 5,
            ..done(
                Role::Server,
                req(
                    "GET",
                    "/a/b",
                    Some("x=1&y=2"),
                    &[("host", "example"), ("user-agent", "t")],
                ),
                resp(200),
            )
        };
        assert_eq!(c.exchanges(), vec![expected]);
        assert_eq!(c.errors(), vec![]);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn client_post_with_body() {
        let mut c = Conn::new(Role::Client);
        c.feed(
            Egress,
            b"POST /submit HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        );
        c.feed(
            Ingress,
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        );
        let expected = Exchange {
            start_ns: enter(1),
            end_ns: exit(2),
            request_tid: 1,
            response_tid: 2,
            request_body_size: 3,
            response_body_size: 2,
            ..done(
                Role::Client,
                req("POST", "/submit", None, &[("content-length", "3")]),
                resp(201),
            )
        };
        assert_eq!(c.exchanges(), vec![expected]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn request_body_in_later_segments() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, b"PUT /f HTTP/1.1\r\nContent-Length: 10\r\n\r\n");
        c.feed(Ingress, b"0123");
        c.feed(Ingress, b"456789");
        c.feed(Egress, &ok_len(200, ""));
        let x = c.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(
            (x[0].request_body_size, x[0].start_ns, x[0].end_ns),
            (10, exit(1), exit(4))
        );
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn head_split_at_every_byte_boundary() {
        let request = b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody";
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        let expected = Exchange {
            request_body_size: 4,
            response_body_size: 3,
            ..done(
                Role::Server,
                req(
                    "POST",
                    "/p",
                    Some("q=1"),
                    &[("host", "h"), ("content-length", "4")],
                ),
                resp(200),
            )
        };
        for i in 1..request.len() {
            let mut c = Conn::new(Role::Server);
            c.feed(Ingress, &request[..i]);
            c.feed(Ingress, &request[i..]);
            c.feed(Egress, response);
            let want = Exchange {
                start_ns: exit(1),
                end_ns: exit(3),
                request_tid: 1,
                response_tid: 3,
                ..expected.clone()
            };
            assert_eq!(c.exchanges(), vec![want], "request split at {i}");
            assert_eq!(c.errors(), vec![], "request split at {i}");
        }
        for i in 1..response.len() {
            let mut c = Conn::new(Role::Server);
            c.feed(Ingress, request);
            c.feed(Egress, &response[..i]);
            c.feed(Egress, &response[i..]);
            let want = Exchange {
                start_ns: exit(1),
                end_ns: exit(3),
                request_tid: 1,
                response_tid: 2,
                ..expected.clone()
            };
            assert_eq!(c.exchanges(), vec![want], "response split at {i}");
            assert_eq!(c.errors(), vec![], "response split at {i}");
        }
    }

    #[test]
    fn one_byte_segments_with_chunked_bodies() {
        let request = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;a=b\r\nwiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n";
        let response =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n";
        let mut c = Conn::new(Role::Client);
        for b in request.iter() {
            c.feed(Egress, std::slice::from_ref(b));
        }
        let n = u64::try_from(request.len()).unwrap();
        for b in response.iter() {
            c.feed(Ingress, std::slice::from_ref(b));
        }
        let m = u64::try_from(response.len()).unwrap();
        let expected = Exchange {
            start_ns: enter(1),
            end_ns: exit(n + m),
            request_tid: 1,
            response_tid: u32::try_from(n + 1).unwrap(),
            request_body_size: 9,
            response_body_size: 10,
            ..done(
                Role::Client,
                req("POST", "/c", None, &[("transfer-encoding", "chunked")]),
                resp(200),
            )
        };
        assert_eq!(c.exchanges(), vec![expected]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn keep_alive_reuse() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, &get("/1"));
        c.feed(Egress, &ok_len(200, "a"));
        c.feed(Ingress, &get("/2"));
        c.feed(Egress, &ok_len(404, "bb"));
        let x = c.exchanges();
        assert_eq!(paths(&x), ["/1", "/2"]);
        assert_eq!(statuses(&x), [200, 404]);
        assert_eq!(
            x.iter()
                .map(|x| (
                    x.start_ns,
                    x.end_ns,
                    x.request_tid,
                    x.response_tid,
                    x.response_body_size
                ))
                .collect::<Vec<_>>(),
            [(exit(1), exit(2), 1, 2, 1), (exit(3), exit(4), 3, 4, 2)]
        );
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn pipelined_requests_in_one_segment_and_two_responses_in_one() {
        let mut c = Conn::new(Role::Server);
        let mut reqs = get("/1");
        reqs.extend_from_slice(b"POST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        reqs.extend_from_slice(&get("/3"));
        c.feed(Ingress, &reqs);
        let mut two = ok_len(200, "a");
        two.extend_from_slice(&ok_len(201, "bb"));
        c.feed(Egress, &two);
        let mut x = c.exchanges();
        assert_eq!(x.len(), 2);
        assert!(c.parser.has_pending());
        c.feed(Egress, &ok_len(404, ""));
        x.extend(c.exchanges());
        assert_eq!(paths(&x), ["/1", "/2", "/3"]);
        assert_eq!(statuses(&x), [200, 201, 404]);
        assert_eq!(
            x.iter()
                .map(|x| (
                    x.start_ns,
                    x.end_ns,
                    x.request_tid,
                    x.response_tid,
                    x.request_body_size,
                    x.response_body_size
                ))
                .collect::<Vec<_>>(),
            [
                (exit(1), exit(2), 1, 2, 0, 1),
                (exit(1), exit(2), 1, 2, 3, 2),
                (exit(1), exit(3), 1, 3, 0, 0)
            ]
        );
        assert_eq!(c.errors(), vec![]);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn stray_crlf_between_messages_is_ignored() {
        let mut c = Conn::new(Role::Server);
        c.feed(
            Ingress,
            b"POST /1 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n",
        );
        c.feed(Ingress, &get("/2"));
        c.feed(Egress, &ok_len(200, ""));
        c.feed(Egress, &ok_len(200, ""));
        assert_eq!(paths(&c.exchanges()), ["/1", "/2"]);
        assert_eq!(c.errors(), vec![]);
    }

    // ---- chunked -------------------------------------------------------------------------

    #[test]
    fn chunked_with_extensions_and_trailers_split_across_segments() {
        let mut c = Conn::new(Role::Server);
        c.feed(
            Ingress,
            b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;na",
        );
        c.feed(Ingress, b"me=\"v;x\"\r");
        c.feed(Ingress, b"\nhel");
        c.feed(Ingress, b"lo\r");
        c.feed(
            Ingress,
            b"\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0;last\r\nX-Check",
        );
        c.feed(Ingress, b"sum: 1\r\nX-Other: 2\r");
        c.feed(Ingress, b"\n\r");
        assert!(c.exchanges().is_empty());
        c.feed(Ingress, b"\n");
        c.feed(
            Egress,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n",
        );
        c.feed(Egress, b"10 ; ext\r\n0123456789abcdef\r\n0\r\n");
        assert!(
            c.exchanges().is_empty(),
            "not done before the final empty line"
        );
        c.feed(Egress, b"\r\n");
        let expected = Exchange {
            start_ns: exit(1),
            end_ns: exit(11),
            request_tid: 1,
            response_tid: 9,
            request_body_size: 31,
            response_body_size: 19,
            ..done(
                Role::Server,
                req("POST", "/up", None, &[("transfer-encoding", "chunked")]),
                resp(200),
            )
        };
        assert_eq!(c.exchanges(), vec![expected]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn chunked_body_split_at_every_byte_boundary() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n2\r\nab\r\n0\r\nT: v\r\n\r\n";
        for i in 1..response.len() {
            let mut c = Conn::new(Role::Client);
            c.feed(Egress, &get("/"));
            c.feed(Ingress, &response[..i]);
            c.feed(Ingress, &response[i..]);
            let x = c.exchanges();
            assert_eq!(x.len(), 1, "split at {i}");
            assert_eq!(
                (x[0].response_body_size, x[0].end_ns, x[0].response_tid),
                (7, exit(3), 2),
                "split at {i}"
            );
            assert_eq!(c.errors(), vec![], "split at {i}");
        }
    }

    #[test]
    fn chunk_data_skipped_by_length_when_not_captured() {
        // sendfile: the chunk-size line is written, the data is not captured, then the CRLF.
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, &get("/file"));
        c.feed(
            Egress,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n",
        );
        c.feed_with(Egress, b"", 0x400, false);
        c.feed(Egress, b"\r\n0\r\n\r\n");
        // Same with the CRLF inside the missing bytes.
        c.feed(Ingress, &get("/file2"));
        c.feed(
            Egress,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123",
        );
        c.feed_with(Egress, b"", 12 + 2, false);
        c.feed(Egress, b"0\r\n\r\n");
        let x = c.exchanges();
        assert_eq!(paths(&x), ["/file", "/file2"]);
        assert_eq!(
            x.iter()
                .map(|x| (x.response_body_size, x.end_ns))
                .collect::<Vec<_>>(),
            [(1024, exit(4)), (16, exit(8))]
        );
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn invalid_chunk_size_drops_the_request_but_keeps_pairing() {
        let mut c = Conn::new(Role::Server);
        c.feed(
            Ingress,
            b"POST /bad HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        );
        assert_eq!(c.errors(), vec![ParseError::Garbage]);
        c.feed(Egress, &ok_len(400, ""));
        c.feed(Ingress, &get("/good"));
        c.feed(Egress, &ok_len(200, ""));
        let x = c.exchanges();
        assert_eq!(paths(&x), ["/good"]);
        assert_eq!(statuses(&x), [200]);
        assert_eq!(c.errors(), vec![]);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn oversized_chunk_size_line_is_too_large() {
        let mut c = Conn::new(Role::Server);
        let mut body = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;".to_vec();
        body.extend(std::iter::repeat_n(b'e', MAX_CHUNK_LINE_BYTES));
        c.feed(Ingress, &body);
        assert_eq!(c.errors(), vec![ParseError::TooLarge]);
        c.feed(Egress, &ok_len(400, ""));
        assert!(c.exchanges().is_empty());
    }

    // ---- truncation and loss -------------------------------------------------------------

    #[test]
    fn truncated_content_length_body_still_completes() {
        let mut c = Conn::new(Role::Server);
        c.feed(
            Ingress,
            b"POST /big HTTP/1.1\r\nContent-Length: 5000\r\n\r\n0123456789",
        );
        c.feed_with(Ingress, b"", 0, false);
        c.feed_with(Ingress, b"abc", 4987, false);
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        head.extend_from_slice(&[b'x'; 100]);
        c.feed_with(Egress, &head, 99_900, false);
        let expected = Exchange {
            start_ns: exit(1),
            end_ns: exit(4),
            request_tid: 1,
            response_tid: 4,
            request_body_size: 5000,
            response_body_size: 100_000,
            ..done(
                Role::Server,
                req("POST", "/big", None, &[("content-length", "5000")]),
                resp(200),
            )
        };
        assert_eq!(c.exchanges(), vec![expected]);
        assert_eq!(c.errors(), vec![]);
        // And the connection is still in sync.
        c.feed(Ingress, &get("/next"));
        c.feed(Egress, &ok_len(200, ""));
        assert_eq!(paths(&c.exchanges()), ["/next"]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn missing_bytes_past_a_body_end_are_a_desync() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, &get("/1"));
        c.feed(Egress, &get("/2"));
        // The response to /1 ends inside the missing bytes, which go on into the response to /2.
        c.feed_with(
            Ingress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01",
            50,
            false,
        );
        let x = c.exchanges();
        assert_eq!(paths(&x), ["/1"]);
        assert_eq!((x[0].response_body_size, x[0].end_ns), (10, exit(3)));
        assert_eq!(c.errors(), vec![ParseError::Desync]);
        // /2's response was unseen: /3 pairs with the next one.
        c.feed(Ingress, b"rest of the response to /2");
        c.feed(Egress, &get("/3"));
        c.feed(Ingress, &ok_len(203, ""));
        let x = c.exchanges();
        assert_eq!(paths(&x), ["/3"]);
        assert_eq!(statuses(&x), [203]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn lost_before_abandons_a_partial_request_once() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, b"GET /partial HTTP/1.1\r\nHost");
        c.feed_with(Ingress, b"er-Agent: x\r\n\r\n", 0, true);
        c.feed(Ingress, b"more junk");
        assert_eq!(c.errors(), vec![ParseError::Desync]);
        c.feed_with(Ingress, &get("/after"), 0, true);
        assert_eq!(c.errors(), vec![], "already resyncing: no second report");
        c.feed(Egress, &ok_len(200, ""));
        let x = c.exchanges();
        assert_eq!(paths(&x), ["/after"]);
        assert_eq!((x[0].start_ns, x[0].request_tid), (exit(4), 4));
    }

    #[test]
    fn lost_before_at_a_message_start_parses_that_message() {
        let mut c = Conn::new(Role::Server);
        c.feed_with(Ingress, &get("/x"), 0, true);
        assert_eq!(c.errors(), vec![ParseError::Desync]);
        c.feed(Egress, &ok_len(200, ""));
        assert_eq!(paths(&c.exchanges()), ["/x"]);
    }

    #[test]
    fn garbage_is_reported_once_and_gives_no_exchange() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
        c.feed(Ingress, b"more binary \x00\x01");
        c.feed(Ingress, b"GE");
        c.feed(Egress, b"\x17\x03\x03");
        assert_eq!(c.errors(), vec![ParseError::Garbage, ParseError::Garbage]);
        assert!(c.exchanges().is_empty());
        assert!(!c.parser.has_pending());
        c.feed(Ingress, &get("/ok"));
        c.feed(Egress, &ok_len(200, ""));
        assert_eq!(paths(&c.exchanges()), ["/ok"]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn bad_heads_are_garbage() {
        let bad: [&[u8]; 7] = [
            b"GET\t/x HTTP/1.1\r\n\r\n",
            b"G(ET /x HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/9.9\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
        ];
        for head in bad {
            let what = String::from_utf8_lossy(head);
            let mut c = Conn::new(Role::Server);
            c.feed(Ingress, head);
            assert_eq!(c.errors(), vec![ParseError::Garbage], "{what}");
            assert!(!c.parser.has_pending(), "{what}");
            c.feed(
                Ingress,
                b"GET /y HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
            );
            c.feed(Egress, &ok_len(200, ""));
            let x = c.exchanges();
            assert_eq!(
                (paths(&x), x[0].request_body_size),
                (vec!["/y"], 3),
                "{what}"
            );
            assert_eq!(c.errors(), vec![], "{what}");
        }
    }

    #[test]
    fn garbage_where_a_response_should_be() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, &get("/x"));
        c.feed(Ingress, b"SSH-2.0-OpenSSH\r\n");
        assert_eq!(c.errors(), vec![ParseError::Garbage]);
        assert!(c.exchanges().is_empty());
        c.close(9_000);
        let x = c.exchanges();
        assert_eq!(
            (paths(&x), x[0].outcome, x[0].response.is_none()),
            (vec!["/x"], Outcome::Closed, true)
        );
    }

    #[test]
    fn too_many_headers_is_too_large() {
        let mut c = Conn::new(Role::Server);
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_PARSED_HEADERS {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        c.feed(Ingress, &head);
        assert_eq!(c.errors(), vec![ParseError::TooLarge]);
        assert!(!c.parser.has_pending());
    }

    /// A valid W3C trace context header line.
    const TRACEPARENT: &str =
        "Traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n";

    /// The request head parsed from `headers` (header lines after the request line).
    fn head_with(headers: &[u8]) -> RequestHead {
        let mut c = Conn::new(Role::Server);
        let mut head = b"GET /h?a=1?b HTTP/1.0\r\n".to_vec();
        head.extend_from_slice(headers);
        head.extend_from_slice(b"\r\n");
        c.feed(Ingress, &head);
        c.feed(Egress, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(c.errors(), vec![]);
        let mut x = c.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].response.as_ref().map(|r| r.version_minor), Some(0));
        x.remove(0).request
    }

    #[rstest]
    #[case::lossy_any_case(
        b"USER-AGENT: V\xffal\r\nhOsT: h:81\r\n",
        Some("h:81"),
        Some("V\u{fffd}al"),
        false
    )]
    #[case::first_of_repeated(
        b"Host: a\r\nUser-Agent: u\r\nHost: b\r\nUser-Agent: v\r\n",
        Some("a"),
        Some("u"),
        false
    )]
    #[case::w3c_any_case(
        b"TRACEPARENT: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n",
        None,
        None,
        true
    )]
    #[case::b3_multi(
        b"X-B3-TraceId: 463ac35c9f6413ad\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\n",
        None,
        None,
        true
    )]
    #[case::malformed_context(b"traceparent: 00-abc-def-01\r\n", None, None, false)]
    #[case::none_kept(b"Accept: */*\r\n", None, None, false)]
    fn request_heads_keep_host_user_agent_and_context(
        #[case] headers: &[u8],
        #[case] host: Option<&str>,
        #[case] user_agent: Option<&str>,
        #[case] context: bool,
    ) {
        let r = head_with(headers);
        assert_eq!(
            (
                r.host.as_deref(),
                r.user_agent.as_deref(),
                r.context.is_some()
            ),
            (host, user_agent, context)
        );
    }

    #[test]
    fn huge_and_many_headers_hide_no_kept_one() {
        let mut headers = b"Cookie: ".to_vec();
        headers.extend(std::iter::repeat_n(b'c', MAX_HEADER_LINE_BYTES - 100));
        headers.extend_from_slice(b"\r\n");
        for i in 0..40 {
            headers.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        headers.extend_from_slice(b"Host: h\r\nUser-Agent: u\r\n");
        headers.extend_from_slice(TRACEPARENT.as_bytes());
        let r = head_with(&headers);
        assert_eq!(
            (
                r.method.as_str(),
                r.path.as_str(),
                r.query.as_deref(),
                r.version_minor
            ),
            ("GET", "/h", Some("a=1?b"), 0)
        );
        assert_eq!(
            (r.host.as_deref(), r.user_agent.as_deref()),
            (Some("h"), Some("u"))
        );
        assert!(r.context.is_some());
    }

    /// Host and User-Agent share [`MAX_KEPT_HEADER_BYTES`]: one that does not fit is not kept,
    /// and the trace context is still read.
    #[test]
    fn kept_header_text_is_capped() {
        let half = MAX_KEPT_HEADER_BYTES / 2;
        let host = "h".repeat(half);
        let headers = format!(
            "Host: {host}\r\nUser-Agent: {}\r\n{TRACEPARENT}",
            "u".repeat(half)
        );
        let r = head_with(headers.as_bytes());
        assert_eq!(
            (
                r.host.as_deref(),
                r.user_agent.as_deref(),
                r.context.is_some()
            ),
            (Some(host.as_str()), None, true)
        );
    }

    #[test]
    fn empty_query_is_some_empty() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, b"GET /p? HTTP/1.1\r\n\r\n");
        c.feed(Egress, &ok_len(200, ""));
        let x = c.exchanges();
        assert_eq!(
            (x[0].request.path.as_str(), x[0].request.query.as_deref()),
            ("/p", Some(""))
        );
    }

    // ---- interim responses, bodiless responses, upgrades -----------------------------------

    #[test]
    fn expect_100_continue() {
        let mut c = Conn::new(Role::Client);
        c.feed(
            Egress,
            b"POST /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        );
        c.feed(Ingress, b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(c.exchanges().is_empty());
        c.feed(Egress, b"data");
        c.feed(
            Ingress,
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        );
        let expected = Exchange {
            start_ns: enter(1),
            end_ns: exit(4),
            request_tid: 1,
            response_tid: 2,
            request_body_size: 4,
            ..done(
                Role::Client,
                req(
                    "POST",
                    "/u",
                    None,
                    &[("expect", "100-continue"), ("content-length", "4")],
                ),
                resp(201),
            )
        };
        assert_eq!(c.exchanges(), vec![expected]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn interim_and_final_response_in_one_segment() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, &get("/"));
        c.feed(Egress, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let x = c.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].response, Some(resp(200)));
        assert_eq!((x[0].response_body_size, x[0].response_tid), (2, 2));
    }

    #[test]
    fn head_204_304_responses_have_no_body() {
        let mut c = Conn::new(Role::Server);
        let mut reqs = b"HEAD /h HTTP/1.1\r\n\r\n".to_vec();
        reqs.extend_from_slice(&get("/n"));
        reqs.extend_from_slice(&get("/c"));
        reqs.extend_from_slice(&get("/last"));
        c.feed(Ingress, &reqs);
        c.feed(
            Egress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n\
              HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n\
              HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz",
        );
        let x = c.exchanges();
        assert_eq!(paths(&x), ["/h", "/n", "/c", "/last"]);
        assert_eq!(statuses(&x), [200, 204, 304, 200]);
        assert_eq!(
            x.iter().map(|x| x.response_body_size).collect::<Vec<_>>(),
            [0, 0, 0, 1]
        );
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn switching_protocols_makes_the_connection_opaque() {
        let mut c = Conn::new(Role::Server);
        c.feed(
            Ingress,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        );
        c.feed(
            Egress,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        );
        let expected = Exchange {
            start_ns: exit(1),
            end_ns: exit(2),
            request_tid: 1,
            response_tid: 2,
            ..done(
                Role::Server,
                req(
                    "GET",
                    "/ws",
                    None,
                    &[("upgrade", "websocket"), ("connection", "Upgrade")],
                ),
                resp(101),
            )
        };
        assert_eq!(c.exchanges(), vec![expected]);
        c.feed(Ingress, b"\x81\x85\x01\x02\x03\x04garbage");
        c.feed_with(Egress, b"\x81\x05hello", 100, true);
        c.feed(Ingress, &get("/not-http-anymore"));
        c.expire(u64::MAX, 0);
        c.close(u64::MAX);
        assert!(c.exchanges().is_empty());
        assert_eq!(c.errors(), vec![]);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn connect_with_2xx_is_a_tunnel() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, b"CONNECT db:443 HTTP/1.1\r\nHost: db:443\r\n\r\n");
        c.feed(Egress, b"\x16\x03\x01\x00\x05hello");
        c.feed(Ingress, b"HTTP/1.1 200 Connection established\r\n\r\n");
        let x = c.exchanges();
        assert_eq!(paths(&x), ["db:443"]);
        assert_eq!(
            (x[0].request.method.as_str(), statuses(&x)),
            ("CONNECT", vec![200])
        );
        c.feed(Ingress, b"\x16\x03\x03\x00\x10serverhello");
        c.feed(Egress, &get("/inside-tls"));
        c.close(1_000_000);
        assert!(c.exchanges().is_empty());
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn refused_connect_keeps_parsing() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, b"CONNECT db:443 HTTP/1.1\r\n\r\n");
        c.feed(
            Ingress,
            b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
        );
        c.feed(Egress, &get("/next"));
        c.feed(Ingress, &ok_len(200, ""));
        assert_eq!(statuses(&c.exchanges()), [407, 200]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn close_delimited_response_ends_at_close() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, &get("/stream"));
        c.feed(Egress, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
        c.feed(Egress, b"defg");
        c.feed_with(Egress, b"hij", 10, false);
        assert!(c.exchanges().is_empty());
        c.expire(1_000_000, 10);
        assert!(
            c.exchanges().is_empty(),
            "a response in progress does not expire"
        );
        c.close(900_000);
        let expected = Exchange {
            start_ns: exit(1),
            end_ns: exit(4),
            request_tid: 1,
            response_tid: 2,
            response_body_size: 20,
            ..done(
                Role::Server,
                req("GET", "/stream", None, &[("host", "h")]),
                resp(200),
            )
        };
        assert_eq!(c.exchanges(), vec![expected]);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn http10_response_without_length_ends_at_close() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, b"GET / HTTP/1.0\r\n\r\n");
        c.feed(
            Ingress,
            b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>",
        );
        c.close(5_000);
        let x = c.exchanges();
        assert_eq!(x.len(), 1);
        assert_eq!(
            (
                x[0].request.version_minor,
                x[0].outcome,
                x[0].end_ns,
                x[0].response_body_size
            ),
            (0, Outcome::Complete, exit(2), 6)
        );
        assert_eq!(x[0].response.as_ref().map(|r| r.version_minor), Some(0));
    }

    #[test]
    fn connection_close_with_length_completes_at_once() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, &get("/"));
        c.feed(
            Egress,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!(c.exchanges().len(), 1);
        c.close(5_000);
        assert!(c.exchanges().is_empty());
    }

    // ---- roles ---------------------------------------------------------------------------

    #[test]
    fn unknown_role_request_read_means_server() {
        let mut c = Conn::new(Role::Unknown);
        c.feed(Ingress, &get("/s"));
        c.feed(Egress, &ok_len(200, ""));
        let x = c.exchanges();
        assert_eq!(
            (x[0].role, x[0].start_ns, x[0].end_ns),
            (Role::Server, exit(1), exit(2))
        );
    }

    #[test]
    fn unknown_role_request_written_means_client() {
        let mut c = Conn::new(Role::Unknown);
        c.feed(Egress, b"GE");
        c.feed(Egress, b"T /c HTTP/1.1\r\n\r\n");
        c.feed(Ingress, &ok_len(200, ""));
        let x = c.exchanges();
        assert_eq!(
            (x[0].role, x[0].start_ns, x[0].end_ns, paths(&x)),
            (Role::Client, enter(1), exit(3), vec!["/c"])
        );
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn unknown_role_response_read_first_means_client() {
        let mut c = Conn::new(Role::Unknown);
        // The answer to a request sent before tracing started: framed, then ignored.
        c.feed(Ingress, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab");
        c.feed(Ingress, b"c");
        c.feed(Egress, &get("/c"));
        c.feed(Ingress, &ok_len(201, ""));
        let x = c.exchanges();
        assert_eq!(
            (x[0].role, paths(&x), statuses(&x)),
            (Role::Client, vec!["/c"], vec![201])
        );
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn unknown_role_response_written_first_means_server() {
        let mut c = Conn::new(Role::Unknown);
        c.feed(Egress, &ok_len(200, "x"));
        c.feed(Ingress, &get("/s"));
        c.feed(Egress, &ok_len(202, ""));
        let x = c.exchanges();
        assert_eq!(
            (x[0].role, paths(&x), statuses(&x)),
            (Role::Server, vec!["/s"], vec![202])
        );
        assert_eq!(c.errors(), vec![]);
    }

    // ---- timeouts, close, limits -----------------------------------------------------------

    #[test]
    fn request_without_response_times_out() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, &get("/slow"));
        c.expire(exit(1) + 1_000, 1_000);
        assert!(
            c.exchanges().is_empty(),
            "exactly the timeout is not older than it"
        );
        c.expire(exit(1) + 1_001, 1_000);
        let expected = Exchange {
            role: Role::Server,
            request: req("GET", "/slow", None, &[("host", "h")]),
            response: None,
            request_body_size: 0,
            response_body_size: 0,
            start_ns: exit(1),
            end_ns: exit(1) + 1_001,
            request_tid: 1,
            response_tid: 0,
            outcome: Outcome::Timeout,
            truncated: false,
        };
        assert_eq!(c.exchanges(), vec![expected]);
        assert!(!c.parser.has_pending());
        // A late answer has nothing to pair with.
        c.feed(Egress, &ok_len(200, ""));
        assert!(c.exchanges().is_empty());
    }

    #[test]
    fn expire_spares_responses_and_request_bodies_in_progress() {
        let mut c = Conn::new(Role::Server);
        c.feed(
            Ingress,
            b"POST /up HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234",
        );
        c.expire(1_000_000, 10);
        assert!(c.exchanges().is_empty(), "the upload is still arriving");
        c.feed(Ingress, b"56789");
        c.feed(Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab");
        c.expire(1_000_000, 10);
        assert!(c.exchanges().is_empty(), "the response has started");
        c.feed(Egress, b"cd");
        let x = c.exchanges();
        assert_eq!(
            (
                x[0].outcome,
                x[0].request_body_size,
                x[0].response_body_size
            ),
            (Outcome::Complete, 10, 4)
        );
    }

    #[test]
    fn expire_after_interim_response() {
        let mut c = Conn::new(Role::Client);
        c.feed(
            Egress,
            b"POST /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
        );
        c.feed(Ingress, b"HTTP/1.1 100 Continue\r\n\r\n");
        c.expire(10_000, 100);
        let x = c.exchanges();
        assert_eq!(
            (x[0].outcome, x[0].response_tid, x[0].end_ns),
            (Outcome::Timeout, 2, 10_000)
        );
    }

    #[test]
    fn close_reports_pending_requests_as_closed() {
        let mut c = Conn::new(Role::Server);
        let mut two = get("/1");
        two.extend_from_slice(&get("/2"));
        c.feed(Ingress, &two);
        c.feed(Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n012");
        c.close(5_000);
        let expected = vec![
            Exchange {
                start_ns: exit(1),
                end_ns: 5_000,
                request_tid: 1,
                response_tid: 2,
                response_body_size: 3,
                outcome: Outcome::Closed,
                ..done(
                    Role::Server,
                    req("GET", "/1", None, &[("host", "h")]),
                    resp(200),
                )
            },
            Exchange {
                role: Role::Server,
                request: req("GET", "/2", None, &[("host", "h")]),
                response: None,
                request_body_size: 0,
                response_body_size: 0,
                start_ns: exit(1),
                end_ns: 5_000,
                request_tid: 1,
                response_tid: 0,
                outcome: Outcome::Closed,
                truncated: false,
            },
        ];
        assert_eq!(c.exchanges(), expected);
        assert!(!c.parser.has_pending());
        c.close(6_000);
        assert!(c.exchanges().is_empty());
    }

    #[test]
    fn truncated_request_gives_no_exchange_at_close() {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, b"GET /never-finished HTTP/1.1\r\nHost: h\r\n");
        c.close(5_000);
        assert!(c.exchanges().is_empty());
        assert_eq!(c.errors(), vec![]);
    }

    // ---- methods, empty lines, targets -----------------------------------------------------

    #[rstest]
    #[case::propfind(b"PROPFIND /d HTTP/1.1\r\n", true)]
    #[case::m_search(b"M-SEARCH * HTTP/1.1\r\n", true)]
    #[case::purge_lf_only(b"PURGE /x HTTP/1.0\n", true)]
    #[case::query_with_headers(b"QUERY /q HTTP/1.1\r\nHost: h", true)]
    #[case::lowercase_token(b"get / HTTP/1.1\r\n", true)]
    #[case::spaces_around_target(b"REPORT  /r  HTTP/1.1\r\n", true)]
    #[case::empty_line_first(b"\r\nGET / HTTP/1.1\r\n", true)]
    #[case::empty_lines_then_a_token_method(b"\r\n\n\r\nREPORT /r HTTP/1.1\r\n", true)]
    #[case::common_method_alone(b"DELETE ", true)]
    #[case::response(b"HTTP/1.1 200 OK\r\n", true)]
    #[case::token_method_without_line_end(b"PROPFIND /x HTTP/1.1", false)]
    #[case::token_method_without_version(b"FOO /x\r\n", false)]
    #[case::other_protocol_version(b"FOO /x SMTP/1.0\r\n", false)]
    #[case::redis_inline_command(b"SET key value\r\n", false)]
    #[case::http2_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false)]
    #[case::leading_space(b" GET / HTTP/1.1\r\n", false)]
    #[case::only_empty_lines(b"\r\n\r\n", false)]
    #[case::method_too_long(b"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\n", false)]
    #[case::not_a_token(b"G(T / HTTP/1.1\r\n", false)]
    fn detects_any_token_method_from_a_whole_line(#[case] first: &[u8], #[case] http: bool) {
        assert_eq!(Http1.detect(first, Ingress, Role::Unknown), http);
    }

    #[rstest]
    #[case::webdav_propfind("PROPFIND", "/dav/", "Depth: 1\r\nContent-Length: 5\r\n\r\n<x/>\n", 5)]
    #[case::webdav_report("REPORT", "/cal", "Content-Length: 0\r\n\r\n", 0)]
    #[case::purge("PURGE", "/cached", "\r\n", 0)]
    #[case::query(
        "QUERY",
        "/search",
        "Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nq=1",
        3
    )]
    #[case::mkcol("MKCOL", "/new", "\r\n", 0)]
    #[case::ssdp_search("M-SEARCH", "*", "MAN: \"ssdp:discover\"\r\n\r\n", 0)]
    #[case::lowercase("get", "/x", "\r\n", 0)]
    fn token_methods_make_exchanges(
        #[case] method: &str,
        #[case] target: &str,
        #[case] rest: &str,
        #[case] body: u64,
        #[values(Role::Server, Role::Unknown)] role: Role,
    ) {
        let mut c = Conn::new(role);
        c.feed(Ingress, &get("/first"));
        c.feed(Egress, &ok_len(200, ""));
        c.feed(
            Ingress,
            format!("{method} {target} HTTP/1.1\r\nHost: h\r\n{rest}").as_bytes(),
        );
        c.feed(Egress, &ok_len(207, "multi"));
        let x = c.exchanges();
        let got: Vec<_> = x
            .iter()
            .map(|x| {
                (
                    x.request.method.as_str(),
                    x.request.path.as_str(),
                    x.request_body_size,
                )
            })
            .collect();
        assert_eq!(got, [("GET", "/first", 0), (method, target, body)]);
        assert_eq!(statuses(&x), [200, 207]);
        assert_eq!(c.errors(), vec![]);
    }

    #[rstest]
    #[case::one_empty_line_first(&[&b"\r\nGET /a HTTP/1.1\r\n\r\n"[..]])]
    #[case::lf_only(&[&b"\nGET /a HTTP/1.1\r\n\r\n"[..]])]
    #[case::several_empty_lines(&[&b"\r\n\r\n\r\nGET /a HTTP/1.1\r\n\r\n"[..]])]
    #[case::empty_line_alone_first(&[&b"\r\n"[..], b"GET /a HTTP/1.1\r\n\r\n"])]
    #[case::token_method_after_empty_line(&[&b"\r\nPURGE /a HTTP/1.1\r\n\r\n"[..]])]
    fn empty_lines_before_a_request_are_ignored(
        #[case] segments: &[&[u8]],
        #[values(Role::Server, Role::Unknown)] role: Role,
    ) {
        let mut c = Conn::new(role);
        for s in segments {
            c.feed(Ingress, s);
        }
        c.feed(Egress, &ok_len(200, ""));
        // And after an incident, a segment starting with an empty line resyncs too.
        c.feed(Ingress, b"\x16\x03\x01 not http");
        assert_eq!(c.errors(), vec![ParseError::Garbage]);
        c.feed(Ingress, b"\r\nGET /b HTTP/1.1\r\n\r\n");
        c.feed(Egress, &ok_len(404, ""));
        let x = c.exchanges();
        assert_eq!(paths(&x), ["/a", "/b"]);
        assert_eq!(statuses(&x), [200, 404]);
        assert_eq!(x[0].role, Role::Server);
        assert_eq!(c.errors(), vec![]);
    }

    #[rstest]
    #[case::origin("/a/b?x=1", "/a/b", Some("x=1"))]
    #[case::fragment_after_query("/a?x=1#frag", "/a", Some("x=1"))]
    #[case::fragment_without_query("/p#top", "/p", None)]
    #[case::question_mark_in_fragment("/p#a?b", "/p", None)]
    #[case::empty_query_and_fragment("/p?#f", "/p", Some(""))]
    #[case::absolute("http://example.com/x/y?q=2", "/x/y", Some("q=2"))]
    #[case::absolute_with_credentials(
        "http://user:pass@host:8080/private?q=1#f",
        "/private",
        Some("q=1")
    )]
    #[case::absolute_with_odd_credentials(
        "http://a%12:b!&*$@hypnotoad.org:1234/toto",
        "/toto",
        None
    )]
    #[case::absolute_without_path("http://hypnotoad.org:1234", "/", None)]
    #[case::absolute_query_without_path("http://hypnotoad.org?hail=all", "/", Some("hail=all"))]
    #[case::absolute_credentials_without_path("https://u:p@h", "/", None)]
    #[case::scheme_case("HTTPS://h/x", "/x", None)]
    #[case::asterisk("*", "*", None)]
    #[case::authority("db:443", "db:443", None)]
    #[case::authority_with_credentials("u:p@db:443", "db:443", None)]
    #[case::at_sign_in_origin_path("/users/@me", "/users/@me", None)]
    #[case::scheme_like_text_in_path("/go?to=http://u:p@x/", "/go", Some("to=http://u:p@x/"))]
    fn request_targets_split_into_path_and_query(
        #[case] target: &str,
        #[case] path: &str,
        #[case] query: Option<&str>,
    ) {
        assert_eq!(split_target(target), (path, query));
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
        c.feed(Ingress, &ok_len(200, ""));
        let x = c.exchanges();
        assert_eq!(
            (x[0].request.path.as_str(), x[0].request.query.as_deref()),
            (path, query)
        );
    }

    /// Valid requests of llhttp's test suite (test/request/*.md): each gives its exchanges.
    #[rstest]
    #[case::tab_before_value(
        "OPTIONS /url HTTP/1.1\r\nHeader1: Value1\r\nHeader2:\t Value2\r\n\r\n",
        &[("OPTIONS", "/url", None)]
    )]
    #[case::head("HEAD /url HTTP/1.1\r\n\r\n", &[("HEAD", "/url", None)])]
    #[case::dumbpack("GET /dumbpack HTTP/1.1\r\naaaaaaaaaaaaa:++++++++++\r\n\r\n", &[("GET", "/dumbpack", None)])]
    #[case::http10("GET /test HTTP/1.0\r\nHost: 0.0.0.0:5000\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n", &[("GET", "/test", None)])]
    #[case::prefix_newline("\r\nGET /test HTTP/1.1\r\n\r\n", &[("GET", "/test", None)])]
    #[case::line_folding(
        "GET / HTTP/1.1\r\nLine1:   abc\r\n\tdef\r\n ghi\r\n\t\tjkl\r\n  mno \r\n\t \tqrs\r\nLine2: \t line2\t\r\nLine3:\r\n line3\r\nLine4: \r\n \r\nConnection:\r\n close\r\n\r\n",
        &[("GET", "/", None)]
    )]
    #[case::folded_certificate(
        "GET / HTTP/1.1\r\nX-SSL-Nonsense:   -----BEGIN CERTIFICATE-----\r\n\tMIIFbTCCBFWgAwIBAgICH4cwDQYJKoZIhvcNAQEFBQAwcDELMAkGA1UEBhMCVUsx\r\n\tETAPBgNVBAoTCGVTY2llbmNlMRIwEAYDVQQLEwlBdXRob3JpdHkxCzAJBgNVBAMT\r\n\t-----END CERTIFICATE-----\r\n\r\n",
        &[("GET", "/", None)]
    )]
    #[case::utf8_value("GET / HTTP/1.1\r\nTest: Düsseldorf\r\n\r\n", &[("GET", "/", None)])]
    #[case::quotes_in_target(
        "GET /with_\"lovely\"_quotes?foo=\\\"bar\\\" HTTP/1.1\r\n\r\n",
        &[("GET", "/with_\"lovely\"_quotes", Some("foo=\\\"bar\\\""))]
    )]
    #[case::question_mark_in_query("GET /test.cgi?foo=bar?baz HTTP/1.1\r\n\r\n", &[("GET", "/test.cgi", Some("foo=bar?baz"))])]
    #[case::vertical_bar("GET /test.cgi?query=| HTTP/1.1\r\n\r\n", &[("GET", "/test.cgi", Some("query=|"))])]
    #[case::host_and_query("GET http://hypnotoad.org?hail=all HTTP/1.1\r\n\r\n", &[("GET", "/", Some("hail=all"))])]
    #[case::host_port_and_query("GET http://hypnotoad.org:1234?hail=all HTTP/1.1\r\n\r\n", &[("GET", "/", Some("hail=all"))])]
    #[case::host_port("GET http://hypnotoad.org:1234 HTTP/1.1\r\n\r\n", &[("GET", "/", None)])]
    #[case::basic_auth("GET http://a%12:b!&*$@hypnotoad.org:1234/toto HTTP/1.1\r\n\r\n", &[("GET", "/toto", None)])]
    #[case::fragment(
        "GET /forums/1/topics/2375?page=1#posts-17408 HTTP/1.1\r\n\r\n",
        &[("GET", "/forums/1/topics/2375", Some("page=1"))]
    )]
    #[case::report("REPORT /test HTTP/1.1\r\n\r\n", &[("REPORT", "/test", None)])]
    #[case::m_search(
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nST: \"ssdp:all\"\r\n\r\n",
        &[("M-SEARCH", "*", None)]
    )]
    #[case::patch(
        "PATCH /file.txt HTTP/1.1\r\nHost: www.example.com\r\nContent-Type: application/example\r\nIf-Match: \"e0023aa4e\"\r\nContent-Length: 10\r\n\r\ncccccccccc",
        &[("PATCH", "/file.txt", None)]
    )]
    #[case::purge("PURGE /file.txt HTTP/1.1\r\nHost: www.example.com\r\n\r\n", &[("PURGE", "/file.txt", None)])]
    #[case::search("SEARCH / HTTP/1.1\r\nHost: www.example.com\r\n\r\n", &[("SEARCH", "/", None)])]
    #[case::link(
        "LINK /images/my_dog.jpg HTTP/1.1\r\nHost: example.com\r\nLink: <http://example.com/profiles/joe>; rel=\"tag\"\r\n\r\n",
        &[("LINK", "/images/my_dog.jpg", None)]
    )]
    #[case::unlink("UNLINK /images/my_dog.jpg HTTP/1.1\r\nHost: example.com\r\n\r\n", &[("UNLINK", "/images/my_dog.jpg", None)])]
    #[case::source("SOURCE /music/sweet/music HTTP/1.1\r\nHost: example.com\r\n\r\n", &[("SOURCE", "/music/sweet/music", None)])]
    #[case::keep_alive_restart(
        "PUT /url HTTP/1.1\r\nConnection: keep-alive\r\n\r\nPUT /url HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
        &[("PUT", "/url", None), ("PUT", "/url", None)]
    )]
    #[case::crlf_between_requests(
        "POST / HTTP/1.1\r\nHost: www.example.com\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4\r\n\r\nq=42\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        &[("POST", "/", None), ("GET", "/", None)]
    )]
    #[case::connection_tokens("PUT /url HTTP/1.1\r\nConnection: close, token, upgrade, token, keep-alive\r\n\r\n", &[("PUT", "/url", None)])]
    #[case::folded_connection(
        "GET /demo HTTP/1.1\r\nHost: example.com\r\nConnection: Something,\r\n Upgrade, ,Keep-Alive\r\nSec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nUpgrade: WebSocket\r\nOrigin: http://example.com\r\n\r\n",
        &[("GET", "/demo", None)]
    )]
    #[case::connect_http10(
        "CONNECT home_0.netscape.com:443 HTTP/1.0\r\nUser-agent: Mozilla/1.1N\r\nProxy-authorization: basic aGVsbG86d29ybGQ=\r\n\r\n",
        &[("CONNECT", "home_0.netscape.com:443", None)]
    )]
    fn llhttp_valid_requests(#[case] raw: &str, #[case] want: &[(&str, &str, Option<&str>)]) {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, raw.as_bytes());
        for _ in want {
            c.feed(Egress, &ok_len(400, ""));
        }
        let x = c.exchanges();
        let got: Vec<_> = x
            .iter()
            .map(|x| {
                (
                    x.request.method.as_str(),
                    x.request.path.as_str(),
                    x.request.query.as_deref(),
                )
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn folded_header_values_are_joined() {
        let mut c = Conn::new(Role::Server);
        c.feed(
            Ingress,
            b"GET / HTTP/1.1\r\nUser-Agent: a\r\n b\r\n\tc\r\nHost: h\r\n\r\n",
        );
        c.feed(Egress, &ok_len(200, ""));
        let x = c.exchanges();
        assert_eq!(
            (
                x[0].request.user_agent.as_deref(),
                x[0].request.host.as_deref()
            ),
            (Some("a   b  \tc"), Some("h"))
        );
    }

    // ---- heads larger than the capture -----------------------------------------------------

    /// `GET path` with a `Cookie` of `cookie` bytes between a Host and a Traceparent header.
    fn big_request(path: &str, cookie: usize, tail: &str) -> Vec<u8> {
        let mut r = format!("GET {path} HTTP/1.1\r\nHost: h\r\nCookie: ").into_bytes();
        r.extend(std::iter::repeat_n(b'c', cookie));
        r.extend_from_slice(
            b"\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n",
        );
        r.extend_from_slice(tail.as_bytes());
        r.extend_from_slice(b"\r\n");
        r
    }

    /// Segments as syscalls of `sizes` bytes each moved them, captured up to `capture` bytes.
    fn captured(bytes: &[u8], sizes: &[usize], capture: usize) -> Vec<(Vec<u8>, u64)> {
        let mut at = 0;
        let mut segs = Vec::new();
        for &n in sizes {
            let end = (at + n).min(bytes.len());
            let kept = (end - at).min(capture);
            segs.push((bytes[at..at + kept].to_vec(), (end - at - kept) as u64));
            at = end;
        }
        assert_eq!(at, bytes.len(), "sizes cover the message");
        segs
    }

    #[rstest]
    #[case::cookie_6k_one_write(6_000, &[usize::MAX], 4096, 0, false)]
    #[case::cookie_6k_read_1k_then_rest(6_000, &[1024, usize::MAX], 4096, 0, false)]
    #[case::cookie_20k_one_write(20_000, &[usize::MAX], 4096, 0, false)]
    #[case::cookie_20k_read_1k_8k_rest(20_000, &[1024, 8192, usize::MAX], 4096, 0, false)]
    #[case::cookie_20k_all_captured(20_000, &[4096, 4096, 4096, 4096, 4096, usize::MAX], 4096, 0, true)]
    #[case::cookie_9k_all_captured_with_a_body(9_000, &[usize::MAX], 65536, 3, true)]
    fn oversized_request_heads_give_truncated_exchanges(
        #[case] cookie: usize,
        #[case] sizes: &[usize],
        #[case] capture: usize,
        #[case] body: u64,
        #[case] headers_after_cookie: bool,
        #[values(Role::Server, Role::Client, Role::Unknown)] role: Role,
    ) {
        let (req_dir, resp_dir) = if role == Role::Client {
            (Egress, Ingress)
        } else {
            (Ingress, Egress)
        };
        let tail = if body > 0 {
            "Content-Length: 3\r\n"
        } else {
            ""
        };
        let mut request = big_request("/big", cookie, tail);
        request.extend(std::iter::repeat_n(b'b', body as usize));
        let sizes: Vec<usize> = sizes
            .iter()
            .scan(0usize, |sent, &n| {
                let n = n.min(request.len() - *sent);
                *sent += n;
                Some(n)
            })
            .collect();
        let mut c = Conn::new(role);
        for (bytes, missing) in captured(&request, &sizes, capture) {
            c.feed_with(req_dir, &bytes, missing, false);
        }
        c.feed(resp_dir, &ok_len(200, "ok"));
        c.feed(req_dir, &get("/next"));
        c.feed(resp_dir, &ok_len(404, ""));
        let x = c.exchanges();
        assert_eq!(c.errors(), vec![]);
        assert_eq!(paths(&x), ["/big", "/next"]);
        assert_eq!(statuses(&x), [200, 404]);
        assert_eq!(
            x.iter().map(|x| x.truncated).collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(x[0].request_body_size, body);
        assert_eq!(x[0].request.host.as_deref(), Some("h"));
        // The trace context after the cookie is read when it was captured.
        assert_eq!(x[0].request.context.is_some(), headers_after_cookie);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn uncaptured_bytes_before_the_request_line_ends_are_a_desync() {
        let mut c = Conn::new(Role::Server);
        c.feed_with(Ingress, b"GET /very-long-pa", 9_000, false);
        assert_eq!(c.errors(), vec![ParseError::Desync]);
        assert!(!c.parser.has_pending());
        c.feed(Egress, &ok_len(414, ""));
        c.feed(Ingress, &get("/fine"));
        c.feed(Egress, &ok_len(200, "ok"));
        assert_eq!(paths(&c.exchanges()), ["/fine"]);
        assert_eq!(c.errors(), vec![]);
    }

    #[rstest]
    #[case::length("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: ", 200, 5)]
    #[case::chunked(
        "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Big: ",
        201,
        0
    )]
    #[case::no_body_for_204("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\nX-Big: ", 204, 0)]
    fn oversized_response_heads_give_truncated_exchanges(
        #[case] start: &str,
        #[case] status: u16,
        #[case] body: u64,
    ) {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, &get("/1"));
        let mut head = start.as_bytes().to_vec();
        head.extend(std::iter::repeat_n(b'x', 4096 - head.len()));
        // The rest of the head and the body were not captured, and come in later reads too.
        c.feed_with(Ingress, &head, 3000, false);
        c.feed(Ingress, b"xxxxxxxxxxxxxxxxxxxx\r\n\r\nhello");
        c.feed(Egress, &get("/2"));
        c.feed(Ingress, &ok_len(202, ""));
        let x = c.exchanges();
        assert_eq!(c.errors(), vec![]);
        assert_eq!(paths(&x), ["/1", "/2"]);
        assert_eq!(statuses(&x), [status, 202]);
        assert_eq!(
            x.iter()
                .map(|x| (x.truncated, x.response_body_size, x.end_ns))
                .collect::<Vec<_>>(),
            [(true, body, exit(2)), (false, 0, exit(5))]
        );
    }

    /// Ways a server's response bytes get lost while the oldest request waits for them.
    fn chunk_size_line_not_captured(c: &mut Conn) {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123";
        c.feed_with(Egress, chunked, 100, false);
        c.feed(Egress, b"0\r\n\r\n");
    }
    fn ring_buffer_loss_in_a_body(c: &mut Conn) {
        c.feed(Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n012");
        c.feed_with(Egress, b"789", 0, true);
    }
    fn response_start_not_captured(c: &mut Conn) {
        c.feed_with(Egress, b"", 300, false);
    }
    fn head_larger_than_the_capture(c: &mut Conn) {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'x', 4000));
        c.feed_with(Egress, &head, 3000, false);
    }
    fn garbage_then_a_response_inside_a_skipped_segment(c: &mut Conn) {
        c.feed(Egress, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokXX");
        c.feed(
            Egress,
            b"more garbage HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
    }

    /// With one request waiting, losing its response drops that exchange and pairing goes on.
    /// With more waiting, the lost bytes may hold their responses too, in a number that cannot
    /// be known: the connection stops being parsed instead of pairing answers with the wrong
    /// requests.
    #[rstest]
    #[case::chunk_size_line(chunk_size_line_not_captured as fn(&mut Conn), &[ParseError::Desync], &[])]
    #[case::ring_buffer_loss(ring_buffer_loss_in_a_body as fn(&mut Conn), &[ParseError::Desync], &[])]
    #[case::response_start(response_start_not_captured as fn(&mut Conn), &[ParseError::Desync], &[])]
    // A truncated head still answers the oldest request.
    #[case::truncated_head(head_larger_than_the_capture as fn(&mut Conn), &[], &[true])]
    #[case::skipped_segment(
        garbage_then_a_response_inside_a_skipped_segment as fn(&mut Conn),
        &[ParseError::Garbage],
        &[false]
    )]
    fn lost_responses_never_shift_pairing(
        #[case] incident: fn(&mut Conn),
        #[case] errors_alone: &[ParseError],
        #[case] answered_truncated: &[bool],
        #[values(1, 2, 10)] waiting: usize,
    ) {
        let mut c = Conn::new(Role::Server);
        for i in 0..waiting {
            c.feed(Ingress, &get(&format!("/{i}")));
        }
        incident(&mut c);
        let errors = c.errors();
        let early: Vec<_> = c.exchanges().iter().map(|x| x.truncated).collect();
        assert_eq!(early, answered_truncated);
        c.feed(Ingress, &get("/next"));
        c.feed(Egress, &ok_len(202, ""));
        let x = c.exchanges();
        if waiting == 1 {
            assert_eq!(errors, errors_alone);
            assert_eq!((paths(&x), statuses(&x)), (vec!["/next"], vec![202]));
        } else {
            assert_eq!(errors.last(), Some(&ParseError::Unpaired), "{errors:?}");
            assert_eq!(x, vec![]);
            c.close(u64::MAX);
            assert_eq!(c.exchanges(), vec![]);
        }
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn a_start_line_over_the_head_cap_is_too_large() {
        let mut c = Conn::new(Role::Server);
        let mut big = b"GET /".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 1000));
        for part in big.chunks(4096) {
            c.feed(Ingress, part);
        }
        c.feed(Ingress, b" HTTP/1.1\r\n\r\n");
        assert_eq!(c.errors(), vec![ParseError::TooLarge]);
        assert!(!c.parser.has_pending());
        c.feed(Ingress, &get("/small"));
        c.feed(Egress, &ok_len(200, ""));
        assert_eq!(paths(&c.exchanges()), ["/small"]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn many_long_header_lines_fill_the_head_and_later_short_ones_are_kept() {
        let mut c = Conn::new(Role::Server);
        let mut head = b"POST /many HTTP/1.1\r\n".to_vec();
        for i in 0..5 {
            head.extend_from_slice(format!("X-{i}: ").as_bytes());
            head.extend(std::iter::repeat_n(b'v', MAX_HEADER_LINE_BYTES / 2));
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
        for part in head.chunks(1000) {
            c.feed(Ingress, part);
        }
        c.feed(Egress, &ok_len(200, ""));
        let x = c.exchanges();
        assert_eq!(
            (paths(&x), x[0].truncated, x[0].request_body_size),
            (vec!["/many"], true, 2)
        );
        assert_eq!(c.errors(), vec![]);
    }

    // ---- pipelining limits ---------------------------------------------------------------

    /// `n` requests, alternating an existing and a missing path, answered 200 and 404.
    struct Pipeline {
        requests: Vec<Vec<u8>>,
        responses: Vec<Vec<u8>>,
        paths: Vec<String>,
        statuses: Vec<u16>,
    }

    fn pipeline(n: usize) -> Pipeline {
        let paths: Vec<String> = (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    format!("/index.html?{i}")
                } else {
                    format!("/missing-{i}")
                }
            })
            .collect();
        let statuses: Vec<u16> = (0..n).map(|i| if i % 2 == 0 { 200 } else { 404 }).collect();
        Pipeline {
            requests: paths.iter().map(|p| get(p)).collect(),
            responses: statuses.iter().map(|&s| ok_len(s, "x")).collect(),
            paths: paths
                .iter()
                .map(|p| p.split('?').next().unwrap().to_owned())
                .collect(),
            statuses,
        }
    }

    #[rstest]
    fn a_hundred_pipelined_requests_pair_in_order(
        #[values(Role::Server, Role::Client)] role: Role,
        #[values(true, false)] one_write: bool,
    ) {
        let (req_dir, resp_dir) = if role == Role::Client {
            (Egress, Ingress)
        } else {
            (Ingress, Egress)
        };
        let p = pipeline(100);
        let mut c = Conn::new(role);
        if one_write {
            c.feed(req_dir, &p.requests.concat());
        } else {
            for r in &p.requests {
                c.feed(req_dir, r);
            }
        }
        for r in &p.responses {
            c.feed(resp_dir, r);
        }
        let x = c.exchanges();
        assert_eq!(paths(&x), p.paths);
        assert_eq!(statuses(&x), p.statuses);
        assert_eq!(c.errors(), vec![]);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn requests_past_the_pending_budget_are_placeholders_and_never_shift_answers() {
        let mut c = Conn::new(Role::Server);
        // Heads keeping ~2 KB (a long User-Agent): the byte budget runs out long before the
        // count does.
        let pad = "p".repeat(2000);
        let n = 100;
        for i in 0..n {
            let method = if i == 70 { "HEAD" } else { "GET" };
            c.feed(
                Ingress,
                format!("{method} /{i} HTTP/1.1\r\nUser-Agent: {pad}\r\n\r\n").as_bytes(),
            );
        }
        let errors = c.errors();
        let kept = n - errors.len();
        assert!(kept > 10 && kept < 40, "{kept} heads kept");
        assert!(errors.iter().all(|e| *e == ParseError::TooManyPending));
        // Distinct statuses show any shift (none has a body: 204 cannot); the HEAD answer
        // declares a body it does not send.
        for i in 0..n {
            let status = 200 + i as u16;
            if i == 70 {
                c.feed(
                    Egress,
                    format!("HTTP/1.1 {status} X\r\nContent-Length: 1000\r\n\r\n").as_bytes(),
                );
            } else {
                c.feed(Egress, &ok_len(status, ""));
            }
        }
        let x = c.exchanges();
        let want: Vec<String> = (0..kept).map(|i| format!("/{i}")).collect();
        assert_eq!(paths(&x), want);
        assert_eq!(
            statuses(&x),
            (0..kept).map(|i| 200 + i as u16).collect::<Vec<_>>()
        );
        assert!(!c.parser.has_pending());
        // The budget is back: later requests pair as usual.
        c.feed(Ingress, &get("/after"));
        c.feed(Egress, &ok_len(299, ""));
        assert_eq!(statuses(&c.exchanges()), [299]);
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn placeholder_runs_are_one_entry_and_too_many_entries_stop_parsing() {
        let mut c = Conn::new(Role::Server);
        while c.errors().is_empty() {
            c.feed(Ingress, &get("/a"));
        }
        // A long run of plain placeholders (as large as the head that found no room) costs one
        // entry.
        for _ in 0..10 * MAX_PENDING_ENTRIES {
            c.feed(Ingress, &get("/b"));
        }
        assert_eq!(c.errors().len(), 10 * MAX_PENDING_ENTRIES);
        c.feed(Egress, &ok_len(200, ""));
        assert_eq!(paths(&c.exchanges()), ["/a"]);
        // HEAD requests cannot join a run (their answers have no body): one entry each, up to
        // the cap, where the connection stops being parsed rather than risk a wrong pairing.
        for _ in 0..MAX_PENDING_ENTRIES {
            c.feed(Ingress, b"HEAD /h HTTP/1.1\r\n\r\n");
            c.feed(Ingress, &get("/g"));
        }
        assert!(c.errors().iter().all(|e| *e == ParseError::TooManyPending));
        assert!(!c.parser.has_pending());
        c.feed(Ingress, &get("/ignored"));
        c.feed(Egress, &ok_len(200, ""));
        c.close(u64::MAX);
        assert!(c.exchanges().is_empty());
    }

    // ---- DeepFlow corpus (tracer/tests/data/deepflow, see SOURCE.md there) -------------------

    use crate::protocol::pcap::payloads as pcap_payloads;

    /// Replays a one-connection capture as the server (the first packet goes to the server),
    /// one segment per TCP payload, then closes.
    fn replay_as_server(pcap: &[u8]) -> (Vec<Exchange>, Vec<ParseError>) {
        let payloads = pcap_payloads(pcap);
        let server_port = payloads[0].0;
        let mut parser = Http1.parser(Role::Server);
        let mut out = ParseOutput::default();
        for (dst, ts, bytes) in &payloads {
            let dir = if *dst == server_port { Ingress } else { Egress };
            let seg = Segment {
                dir,
                bytes,
                missing: 0,
                lost_before: false,
                ts_enter: *ts,
                ts_exit: *ts,
                tid: 7,
            };
            parser.feed(&seg, &mut out);
        }
        parser.close(payloads.last().map_or(0, |p| p.1) + 1, &mut out);
        (
            out.messages
                .into_iter()
                .filter_map(http1_exchange)
                .collect(),
            out.errors,
        )
    }

    /// A field of a golden `HttpInfo { .. }` line, quotes stripped.
    fn golden_field<'a>(line: &'a str, key: &str) -> &'a str {
        let needle = format!(" {key}: ");
        let at = line
            .find(&needle)
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            + needle.len();
        line[at..].split(", ").next().unwrap().trim_matches('"')
    }

    #[test]
    fn deepflow_httpv1_matches_golden() {
        let (x, errors) =
            replay_as_server(include_bytes!("../../tests/data/deepflow/http/httpv1.pcap"));
        let golden = include_str!("../../tests/data/deepflow/http/httpv1.result");
        let lines: Vec<&str> = golden.lines().collect();
        assert_eq!(errors, vec![]);
        assert_eq!(x.len(), 1);
        let request = lines
            .iter()
            .find(|l| l.contains("msg_type: Request"))
            .unwrap();
        let response = lines
            .iter()
            .find(|l| l.contains("msg_type: Response"))
            .unwrap();
        let target = match &x[0].request.query {
            Some(q) => format!("{}?{q}", x[0].request.path),
            None => x[0].request.path.to_string(),
        };
        assert!(x[0]
            .request
            .method
            .eq_ignore_ascii_case(golden_field(request, "method")));
        assert_eq!(target, golden_field(request, "path"));
        assert_eq!(
            format!("Some({})", x[0].request_body_size),
            golden_field(request, "req_content_length")
        );
        let status = x[0].response.as_ref().map(|r| r.status);
        assert_eq!(format!("{status:?}"), golden_field(response, "status_code"));
        assert_eq!(
            format!("Some({})", x[0].response_body_size),
            golden_field(response, "resp_content_length")
        );
        assert_eq!(x[0].outcome, Outcome::Complete);
        // SOURCE.md: upstream measures an 84051 µs response time for this file.
        assert_eq!(x[0].end_ns - x[0].start_ns, 84_051_000);
    }

    #[test]
    fn deepflow_client_ip_truncated_head_gives_no_exchange() {
        // The capture holds only the first TCP segment of a request head (no blank line) and the
        // first segment of a chunked response. DeepFlow's golden shows the request line parsed
        // from that fragment; we report nothing rather than an exchange built on a partial head.
        let (x, errors) = replay_as_server(include_bytes!(
            "../../tests/data/deepflow/http/client-ip.pcap"
        ));
        let golden = include_str!("../../tests/data/deepflow/http/client-ip.result");
        assert!(golden.contains("method: Post") && golden.contains("status_code: Some(200)"));
        assert_eq!((x, errors), (vec![], vec![]));
    }

    // ---- robustness ----------------------------------------------------------------------

    #[test]
    fn random_fragments_never_panic() {
        let pieces: [&[u8]; 16] = [
            b"GET / HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 101 Switching\r\n\r\n",
            b"Content-Length: 5\r\n",
            b"Content-Length: 18446744073709551616\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"\r\n",
            b"5\r\nhello\r\n",
            b"ffffffffffffffff\r\n",
            b"0\r\n\r\n",
            b"CONNECT x:1 HTTP/1.1\r\n\r\n",
            b"HEAD / HTTP/1.1\r\n\r\n",
            b"\n",
            b"\xff\x00garbage",
            b"POST /p?q HTTP/1.0\r\nExpect: 100-continue\r\n",
        ];
        crate::protocol::testconn::shake(&Http1, &pieces, |m| {
            let x = crate::protocol::testconn::downcast::<Record>(m).exchange;
            assert_ne!(x.role, Role::Unknown);
            assert!(x.start_ns <= x.end_ns);
        });
    }
}
