//! Redis: RESP2 and RESP3 over captured syscall segments.
//!
//! One [`RedisConn`] follows one connection. Each direction has a streaming reader that walks
//! RESP values without buffering them: it keeps the current type line (capped), the bytes left
//! of a bulk payload, and the elements still expected by each open aggregate (nesting capped).
//! Of a command it keeps the first bytes of its first arguments (enough for the command name,
//! the `SELECT`ed index and a bounded query text); of a reply, its type and error line.
//!
//! Commands wait in a FIFO; each reply answers the oldest. What does not pair one to one:
//! - pushes: RESP3 `>` values, and in RESP2 the `message`/`pmessage`/`smessage` arrays a
//!   subscribed connection receives, are never taken for replies;
//! - `(P|S)SUBSCRIBE`/`(P|S)UNSUBSCRIBE` get one confirmation per channel: the command ends at
//!   the last one (or the first, when no channel is named);
//! - RESP3 attributes (`|`) are skipped as part of the reply they precede.
//!
//! `MULTI`/`EXEC` need nothing special: queued commands are answered `+QUEUED`, `EXEC` with an
//! array. Blocking commands simply answer late.
//!
//! Policies (all bounded, none panics):
//! - Bulk payloads are only counted: uncaptured bytes inside them are skipped exactly.
//! - Uncaptured or lost bytes anywhere else desynchronise the direction: one `Desync` is counted
//!   and the direction skips until a segment starts like a RESP value (in the command direction:
//!   a command array, or the first command start inside a segment, since a server's reads cut a
//!   pipeline anywhere; the command cut in two is followed untracked). A gap stands in for the
//!   commands not seen: it swallows replies until the client's next turn (it sends again after
//!   the server answered). Lost replies: the commands that waited are reported at that turn,
//!   their reply marked uncaptured (a client sends again once it has read its replies), ending
//!   at the last reply segment; without a turn, at close or expiry.
//! - More than [`MAX_PENDING`] commands (or [`MAX_PENDING_BYTES`] of their text) waiting: later
//!   ones are counted as `TooManyPending` and followed as untracked (their replies are consumed
//!   in order, without spans).
//! - A reply with no command waiting (its command predates the capture) is skipped silently.
//! - The connection's `SELECT`ed database is followed from successful `SELECT` replies.

use std::collections::VecDeque;

use super::{
    ConnParser, Direction, ExchangeInfo, ExchangeRecord, Outcome, ParseError, ParseOutput,
    Protocol, Role, Segment, Started,
};
use crate::{
    clock::Clock,
    conn::ConnMeta,
    span::{KeyValue, SpanOptions, SpanRecord, SpanStatus, SpanSummary},
};

/// Deepest nesting of aggregates.
pub const MAX_DEPTH: usize = 32;
/// Most elements one aggregate may announce.
pub const MAX_ELEMENTS: u64 = 1 << 24;
/// Longest bulk payload (Redis's own `proto-max-bulk-len` default).
pub const MAX_BULK: u64 = 512 << 20;
/// Longest type line kept (simple strings, errors, lengths); the rest of a longer line is skipped.
pub const MAX_LINE: usize = 512;
/// Longest inline command line.
pub const MAX_INLINE: usize = 64 * 1024;
/// Bytes kept of each command argument, and arguments kept per command.
pub const MAX_ARG_BYTES: usize = 64;
pub const MAX_KEPT_ARGS: usize = 16;
/// Commands waiting for replies on one connection, and the bytes they may hold.
pub const MAX_PENDING: usize = 16 * 1024;
pub const MAX_PENDING_BYTES: usize = 2 << 20;
/// Longest `error.type` taken from an error reply.
const MAX_ERROR_TYPE: usize = 32;

/// Commands whose first argument names a subcommand (`CLIENT SETNAME`).
const CONTAINERS: &[&str] = &[
    "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "FUNCTION", "LATENCY", "MEMORY", "MODULE",
    "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
];

/// The Redis protocol entry of the registry.
pub struct Redis;

impl Protocol for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }
    /// A command array (`*N\r\n$`), as clients send them; or, on a connection the agent found
    /// open, any RESP value start.
    fn detect(&self, first: &[u8], _dir: Direction, role: Role) -> bool {
        looks_command(first) || (role == Role::Unknown && looks_value(first))
    }
    fn parser(&self, role: Role) -> Box<dyn ConnParser> {
        Box::new(RedisConn::new(role))
    }
}

/// `*<digits>\r\n$`: the start of a command array (what every client sends).
pub fn looks_command(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"*") else {
        return false;
    };
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    (1..=8).contains(&digits) && rest.get(digits..digits + 3) == Some(b"\r\n$")
}

/// Where the first command array starts after a line end in `b` (resynchronising inside a
/// segment).
fn find_command(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = b.get(from..)?.windows(3).position(|w| w == b"\r\n*") {
        let at = from + i + 2;
        if looks_command(b.get(at..)?) {
            return Some(at);
        }
        from = at;
    }
    None
}

/// A RESP value's first byte followed by something plausible (a segment boundary to resync at).
fn looks_value(b: &[u8]) -> bool {
    match b.first() {
        Some(b'*' | b'>' | b'~' | b'%' | b'|' | b'$' | b'!' | b'=' | b':' | b'(') => {
            b.get(1).is_some_and(|c| c.is_ascii_digit() || *c == b'-')
        }
        Some(b'+' | b'-' | b',' | b'#' | b'_') => b.get(1).is_some_and(|c| *c != b'\n'),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Values

/// One complete top-level value of one direction, as much as is kept of it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Value {
    /// Type byte of the top-level value (`b' '` for an inline command).
    ty: u8,
    /// Monotonic ns and thread of its first byte, and ns of its last.
    start_ns: u64,
    tid: u32,
    end_ns: u64,
    /// Elements at depth 1 (arguments of a command; the value itself for a scalar).
    count: u64,
    /// First bytes of the first elements, concatenated; `ends[i]` closes element i.
    kept: Vec<u8>,
    ends: Vec<usize>,
    /// Every element at depth 1 is a bulk string (what a command is).
    all_bulk: bool,
    /// Some element bytes were not captured.
    truncated: bool,
    /// The integer at index 2 of the top-level aggregate (subscription count of a pub/sub
    /// confirmation).
    third_int: Option<i64>,
    /// Error text of an error reply (`-` line or `!` payload start).
    error: Option<Vec<u8>>,
}

impl Value {
    fn arg(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
        self.kept.get(start..end)
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_ARG_BYTES.saturating_sub(self.current_len());
        self.kept
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }

    fn current_len(&self) -> usize {
        self.kept.len() - self.ends.last().copied().unwrap_or(0)
    }

    /// Whether the value is a push or a reply to a command.
    fn is_command(&self) -> bool {
        (self.ty == b'*' && self.all_bulk && self.count > 0) || self.ty == b' '
    }
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Elements still expected.
    left: u64,
    /// A RESP3 attribute: it precedes an element and is not one itself.
    attribute: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// At a line (type line, or inline command).
    #[default]
    Line,
    /// Inside a bulk payload: bytes left, CRLF included.
    Bulk { left: u64 },
    /// Out of sync: skipping segments until one starts like a value.
    Resync,
}

/// What a reader reports from one chunk.
enum Event {
    Value(Value),
    Error(ParseError),
    /// Out of sync, a segment began inside a command (the rest of one whose start was lost)
    /// and reading resumed at the next command.
    Tail,
}

/// Streaming RESP reader of one direction.
#[derive(Debug, Default)]
struct Reader {
    state: ReadState,
    line: Vec<u8>,
    /// The line is longer than kept: skipping to its end.
    line_overflow: bool,
    stack: Vec<Frame>,
    /// The value being read, once its first byte was seen.
    value: Option<Value>,
    /// The current bulk is an element at depth 1 that is kept.
    keeping: bool,
}

fn parse_int(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

impl Reader {
    fn resync(&mut self) {
        *self = Reader {
            state: ReadState::Resync,
            ..Reader::default()
        };
    }

    /// Read `bytes` (captured, in order); complete values and errors go to `events`. Out of
    /// sync, reading resumes at a segment that starts like a value (a command array in the
    /// command direction), or at the first command start inside one (a server's reads cut a
    /// pipeline anywhere).
    fn read(
        &mut self,
        seg: &Segment<'_>,
        mut bytes: &[u8],
        commands: bool,
        events: &mut Vec<Event>,
    ) {
        if self.state == ReadState::Resync {
            // Never at an inline command: any text looks like one (a bulk value cut anywhere).
            if commands && !looks_command(bytes) {
                let Some(at) = find_command(bytes) else {
                    return;
                };
                events.push(Event::Tail);
                bytes = bytes.get(at..).unwrap_or_default();
            } else if !commands && !looks_value(bytes) {
                return;
            }
            self.state = ReadState::Line;
        }
        while !bytes.is_empty() {
            if self.state == ReadState::Resync {
                return;
            }
            let used = match self.state {
                ReadState::Bulk { left } => self.bulk(seg, bytes, left, events),
                _ => self.line_bytes(seg, bytes, events),
            };
            bytes = bytes.get(used.max(1)..).unwrap_or_default();
        }
    }

    /// `missing` bytes moved after the captured ones: skippable only inside a bulk payload.
    fn skip(&mut self, seg: &Segment<'_>, mut missing: u64, events: &mut Vec<Event>) {
        while missing > 0 {
            match self.state {
                ReadState::Resync => return,
                ReadState::Bulk { left } => {
                    let n = left.min(missing);
                    missing -= n;
                    if let Some(v) = self.value.as_mut() {
                        v.truncated = true;
                    }
                    if n == left {
                        self.state = ReadState::Line;
                        self.keeping = false;
                        self.element_done(seg, events);
                    } else {
                        self.state = ReadState::Bulk { left: left - n };
                    }
                }
                ReadState::Line => {
                    self.fail(ParseError::Desync, events);
                    return;
                }
            }
        }
    }

    fn fail(&mut self, e: ParseError, events: &mut Vec<Event>) {
        events.push(Event::Error(e));
        self.resync();
    }

    fn bulk(
        &mut self,
        seg: &Segment<'_>,
        bytes: &[u8],
        left: u64,
        events: &mut Vec<Event>,
    ) -> usize {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
        let part = bytes.get(..n).unwrap_or_default();
        // The payload is all but the last two bytes (CRLF).
        let payload_left = left.saturating_sub(2);
        let payload = part
            .get(
                ..usize::try_from(payload_left)
                    .unwrap_or(usize::MAX)
                    .min(part.len()),
            )
            .unwrap_or_default();
        if let Some(v) = self.value.as_mut() {
            if self.keeping {
                v.keep(payload);
            }
            if let Some(err) = v.error.as_mut().filter(|e| e.len() < MAX_LINE) {
                let room = MAX_LINE - err.len();
                err.extend_from_slice(payload.get(..room.min(payload.len())).unwrap_or_default());
            }
        }
        let rest = left - n as u64;
        if rest == 0 {
            self.state = ReadState::Line;
            self.keeping = false;
            self.element_done(seg, events);
        } else {
            self.state = ReadState::Bulk { left: rest };
        }
        n
    }

    /// Accumulate a line; at its end, act on it. Returns bytes used.
    fn line_bytes(&mut self, seg: &Segment<'_>, bytes: &[u8], events: &mut Vec<Event>) -> usize {
        let inline = self.value.as_ref().is_some_and(|v| v.ty == b' ')
            || (self.value.is_none() && self.line.is_empty() && looks_inline(bytes));
        if !inline && self.line.is_empty() && !bytes.first().is_some_and(|b| starts_line(*b)) {
            self.fail(ParseError::Garbage, events);
            return bytes.len();
        }
        let cap = if inline { MAX_INLINE } else { MAX_LINE };
        let (chunk, end) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (bytes.get(..i).unwrap_or_default(), Some(i + 1)),
            None => (bytes, None),
        };
        if self.value.is_none() {
            self.value = Some(Value {
                ty: if inline { b' ' } else { 0 },
                start_ns: seg_start(seg),
                tid: seg.tid,
                all_bulk: true,
                ..Value::default()
            });
        }
        let room = cap.saturating_sub(self.line.len());
        if chunk.len() > room {
            if inline {
                self.fail(ParseError::TooLarge, events);
                return bytes.len();
            }
            self.line_overflow = true;
        }
        self.line
            .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        let Some(end) = end else {
            return bytes.len();
        };
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        self.line_overflow = false;
        if inline {
            self.inline_line(seg, &line, events);
        } else {
            self.type_line(seg, &line, events);
        }
        self.line = line;
        self.line.clear();
        end
    }

    fn inline_line(&mut self, seg: &Segment<'_>, line: &[u8], events: &mut Vec<Event>) {
        let Some(mut v) = self.value.take() else {
            return;
        };
        for word in line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            if v.ends.len() < MAX_KEPT_ARGS {
                v.keep(word);
                v.ends.push(v.kept.len());
            }
            v.count += 1;
        }
        v.end_ns = seg.ts_exit;
        if v.count > 0 {
            events.push(Event::Value(v));
        }
    }

    fn type_line(&mut self, seg: &Segment<'_>, line: &[u8], events: &mut Vec<Event>) {
        let Some((&ty, rest)) = line.split_first() else {
            // A blank line between values (inline clients send them): nothing.
            if self.stack.is_empty() {
                self.value = None;
                return;
            }
            return self.fail(ParseError::Garbage, events);
        };
        let top = self.stack.is_empty();
        if let Some(v) = self.value.as_mut().filter(|v| top && v.ty == 0) {
            v.ty = ty;
        }
        match ty {
            b'*' | b'>' | b'~' | b'%' | b'|' => {
                let Some(n) = parse_int(rest) else {
                    return self.fail(ParseError::Garbage, events);
                };
                if n < 0 {
                    if let Some(v) = self.value.as_mut() {
                        v.all_bulk = false;
                    }
                    return self.scalar(seg, &[], events);
                }
                let n = n as u64;
                if n > MAX_ELEMENTS {
                    return self.fail(ParseError::TooLarge, events);
                }
                if self.stack.len() >= MAX_DEPTH {
                    return self.fail(ParseError::TooLarge, events);
                }
                if self.stack.len() == 1 {
                    if let Some(v) = self.value.as_mut() {
                        v.all_bulk = false;
                    }
                }
                let left = if matches!(ty, b'%' | b'|') { n * 2 } else { n };
                let attribute = ty == b'|';
                if top && attribute {
                    // Precedes the reply: the value's type is the next one's.
                    if let Some(v) = self.value.as_mut() {
                        v.ty = 0;
                    }
                }
                self.stack.push(Frame { left, attribute });
                if left == 0 {
                    self.stack.pop();
                    if !attribute {
                        self.element_done(seg, events);
                    }
                }
            }
            b'$' | b'!' | b'=' => {
                let Some(n) = parse_int(rest) else {
                    return self.fail(ParseError::Garbage, events);
                };
                if n < 0 {
                    return self.scalar(seg, &[], events);
                }
                if n as u64 > MAX_BULK {
                    return self.fail(ParseError::TooLarge, events);
                }
                let depth1 = self.stack.len() == 1 && !self.in_attribute();
                if let Some(v) = self.value.as_mut() {
                    if ty == b'!' && top {
                        v.error = Some(Vec::new());
                    }
                    self.keeping = depth1 && v.ends.len() < MAX_KEPT_ARGS;
                    if depth1 && ty != b'$' {
                        v.all_bulk = false;
                    }
                }
                self.state = ReadState::Bulk { left: n as u64 + 2 };
            }
            b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => {
                if ty == b'-' && top {
                    if let Some(v) = self.value.as_mut() {
                        v.error = Some(rest.to_vec());
                    }
                }
                if self.stack.len() == 1 {
                    if let Some(v) = self.value.as_mut() {
                        v.all_bulk = false;
                        if ty == b':' && v.count == 2 {
                            v.third_int = parse_int(rest);
                        }
                    }
                }
                self.scalar(seg, rest, events);
            }
            _ => self.fail(ParseError::Garbage, events),
        }
    }

    fn in_attribute(&self) -> bool {
        self.stack.iter().any(|f| f.attribute)
    }

    /// A scalar element (or a null) was read in full.
    fn scalar(&mut self, seg: &Segment<'_>, content: &[u8], events: &mut Vec<Event>) {
        let depth1 = self.stack.len() == 1 && !self.in_attribute();
        if let Some(v) = self.value.as_mut() {
            if (depth1 || self.stack.is_empty()) && v.ends.len() < MAX_KEPT_ARGS {
                v.keep(content);
            }
        }
        self.element_done(seg, events);
    }

    /// An element ended: close the aggregates it completes; a complete top-level value is
    /// reported.
    fn element_done(&mut self, seg: &Segment<'_>, events: &mut Vec<Event>) {
        let mut first = true;
        loop {
            let depth1 = self.stack.len() == 1 && !self.in_attribute();
            let scalar_top = first && self.stack.is_empty();
            if let Some(v) = self.value.as_mut().filter(|_| depth1 || scalar_top) {
                if v.ends.len() < MAX_KEPT_ARGS {
                    v.ends.push(v.kept.len());
                }
                v.count += 1;
            }
            let Some(top) = self.stack.last_mut() else {
                // A whole top-level value.
                if let Some(mut v) = self.value.take() {
                    v.end_ns = seg.ts_exit;
                    events.push(Event::Value(v));
                }
                return;
            };
            top.left = top.left.saturating_sub(1);
            if top.left > 0 {
                return;
            }
            let attribute = top.attribute;
            self.stack.pop();
            if attribute {
                // Not an element of its parent; at top level the reply follows.
                return;
            }
            // The closed aggregate is an element of its parent.
            first = false;
        }
    }
}

/// A byte that may start a type line (or end a blank one).
fn starts_line(b: u8) -> bool {
    matches!(
        b,
        b'*' | b'>'
            | b'~'
            | b'%'
            | b'|'
            | b'$'
            | b'!'
            | b'='
            | b'+'
            | b'-'
            | b':'
            | b','
            | b'#'
            | b'_'
            | b'('
            | b'\r'
            | b'\n'
    )
}

/// The first bytes of an inline command: a letter.
fn looks_inline(b: &[u8]) -> bool {
    b.first().is_some_and(u8::is_ascii_alphabetic)
}

fn seg_start(seg: &Segment<'_>) -> u64 {
    if seg.dir == Direction::Egress {
        seg.ts_enter
    } else {
        seg.ts_exit
    }
}

// ---------------------------------------------------------------------------------------------
// Commands and replies

/// What a command's reply completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PubSub {
    No,
    /// `(P|S)SUBSCRIBE`/`(P|S)UNSUBSCRIBE`: the confirmation word and how many more confirmations
    /// end the command.
    Confirm {
        word: &'static str,
        left: u64,
    },
}

/// A command waiting for its reply.
#[derive(Debug)]
enum Slot {
    Command(Box<Pending>),
    /// Commands followed without spans (past the caps), answered in order.
    Untracked(u64),
    /// Commands that were not seen (lost bytes): an unknown number of replies.
    Gap,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    value: Value,
    pubsub: PubSub,
    /// The database in effect when it was sent, and before it (`SELECT` may fail).
    db: Option<u32>,
    db_before: Option<u32>,
    bytes: usize,
}

/// One command with its reply, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: u64,
    pub role: Role,
    /// Upper-case command name, with the subcommand of container commands (`CLIENT SETNAME`).
    pub operation: String,
    /// Arguments after the operation: first bytes of the first ones, and how many there were.
    pub args: Vec<Vec<u8>>,
    pub arg_count: u64,
    /// Some argument bytes were not captured.
    pub truncated: bool,
    /// The reply was lost with uncaptured bytes (the command ended by then, see the module
    /// notes).
    pub reply_uncaptured: bool,
    /// The database index selected on the connection, when known.
    pub db: Option<u32>,
    /// The error reply's text, if the reply was an error.
    pub error: Option<String>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub request_tid: u32,
    pub response_tid: u32,
    pub outcome: Outcome,
}

/// Incremental RESP parser of one connection.
pub struct RedisConn {
    role: Role,
    egress: Reader,
    ingress: Reader,
    pending: VecDeque<Slot>,
    pending_bytes: usize,
    next_id: u64,
    /// `SELECT`ed database: 0 on a connection seen from its start, unknown on one found open
    /// until a `SELECT`.
    db: Option<u32>,
    /// A RESP2 subscriber: `message` arrays are pushes.
    subscribed: bool,
    /// A gap at the front of `pending` saw the server answer (a reply-direction segment ended
    /// with it at the front): the client's next turn ends it.
    gap_answered: bool,
    /// Commands that waited when replies were lost: answered within the lost bytes or soon
    /// after, as the client's next turn shows (reported then, their reply marked uncaptured).
    unanswered_at_gap: Vec<Pending>,
    /// Time and thread of the latest reply-direction segment.
    last_reply: (u64, u32),
    /// Events of the current segment (kept to reuse the allocation).
    events: Vec<Event>,
}

impl RedisConn {
    fn new(role: Role) -> Self {
        Self {
            role,
            egress: Reader::default(),
            ingress: Reader::default(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            next_id: 0,
            db: (role != Role::Unknown).then_some(0),
            subscribed: false,
            gap_answered: false,
            unanswered_at_gap: Vec::new(),
            last_reply: (0, 0),
            events: Vec::new(),
        }
    }

    fn request_dir(&self) -> Option<Direction> {
        match self.role {
            Role::Client => Some(Direction::Egress),
            Role::Server => Some(Direction::Ingress),
            Role::Unknown => None,
        }
    }

    fn reader(&mut self, dir: Direction) -> &mut Reader {
        match dir {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        }
    }

    /// The stream lost sync in `dir`: what waits can no longer be paired.
    fn desync(&mut self, dir: Direction) {
        let requests = self.request_dir().is_none_or(|d| d == dir);
        if !requests {
            // The lost bytes held replies of an unknown number of the waiting commands.
            if self.pending.is_empty() {
                return;
            }
            for slot in std::mem::take(&mut self.pending) {
                if let Slot::Command(p) = slot {
                    self.unanswered_at_gap.push(*p);
                }
            }
        }
        if !matches!(self.pending.back(), Some(Slot::Gap)) {
            self.pending.push_back(Slot::Gap);
            self.gap_answered = false;
        }
    }

    /// The client's turn (a command, or the tail of one) after a gap the server answered: the
    /// gap is over. Commands that waited when replies were lost were answered by now (a client
    /// sends again once it has read its replies): reported with their reply uncaptured.
    fn end_gap_at_turn(&mut self, out: &mut ParseOutput) {
        if !(self.gap_answered && matches!(self.pending.front(), Some(Slot::Gap))) {
            return;
        }
        if self.pending.len() == 1 {
            self.pending.clear();
            self.report_unanswered_at_gap(Outcome::Complete, self.last_reply.0, out);
        }
    }

    fn report_unanswered_at_gap(&mut self, outcome: Outcome, end: u64, out: &mut ParseOutput) {
        let tid = if outcome == Outcome::Complete {
            self.last_reply.1
        } else {
            0
        };
        for p in std::mem::take(&mut self.unanswered_at_gap) {
            self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
            let end = end.max(p.value.end_ns);
            self.complete_uncaptured(p, outcome, end, tid, out);
        }
    }

    fn on_command(&mut self, v: Value, out: &mut ParseOutput) {
        self.end_gap_at_turn(out);
        if matches!(self.pending.back(), Some(Slot::Gap)) {
            // Behind unseen commands: its reply cannot be told.
            return;
        }
        let name = upper(v.arg(0).unwrap_or_default());
        let pubsub = match name.as_str() {
            "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "UNSUBSCRIBE" | "PUNSUBSCRIBE"
            | "SUNSUBSCRIBE" => PubSub::Confirm {
                word: confirm_word(&name),
                left: v.count.saturating_sub(1).max(1),
            },
            _ => PubSub::No,
        };
        if name.ends_with("SUBSCRIBE") && !name.contains("UN") {
            self.subscribed = true;
        }
        let db_before = self.db;
        if name == "RESET" {
            self.subscribed = false;
            self.db = Some(0);
        }
        if name == "SELECT" && v.count == 2 {
            // Optimistic: commands pipelined after it run in the new database.
            if let Some(n) = v
                .arg(1)
                .and_then(|a| std::str::from_utf8(a).ok()?.parse().ok())
            {
                self.db = Some(n);
            }
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let bytes = v.kept.len() + std::mem::size_of::<Pending>() + v.ends.len() * 8;
        if self.pending.len() >= MAX_PENDING || self.pending_bytes + bytes > MAX_PENDING_BYTES {
            out.errors.push(ParseError::TooManyPending);
            match self.pending.back_mut() {
                Some(Slot::Untracked(n)) => *n += 1,
                _ => self.pending.push_back(Slot::Untracked(1)),
            }
            return;
        }
        out.started.push(Started {
            id,
            tid: v.tid,
            ts: v.start_ns,
        });
        self.pending_bytes += bytes;
        self.pending.push_back(Slot::Command(Box::new(Pending {
            id,
            value: v,
            pubsub,
            db: if name == "SELECT" { db_before } else { self.db },
            db_before,
            bytes,
        })));
    }

    fn on_reply(&mut self, v: Value, out: &mut ParseOutput) {
        let first = v.arg(0).map(lower).unwrap_or_default();
        let aggregate = matches!(v.ty, b'*' | b'>');
        let confirmation = aggregate && is_confirm_word(&first);
        // A confirmation left over from a (P|S)UNSUBSCRIBE that ended at its first one is not a
        // reply to what follows, also when it is the one that ends the subscriptions.
        let leftover = confirmation && self.subscribed;
        if confirmation {
            if let Some(n) = v.third_int {
                self.subscribed = n > 0;
            }
        }
        let push = v.ty == b'>' || (self.subscribed && aggregate && is_message_word(&first));
        match self.pending.front_mut() {
            None => {}
            Some(Slot::Gap) => self.gap_answered = true,
            Some(Slot::Untracked(n)) if !push => {
                *n -= 1;
                if *n == 0 {
                    self.pending.pop_front();
                }
            }
            Some(Slot::Untracked(_)) => {}
            Some(Slot::Command(p)) => {
                let answers = match &mut p.pubsub {
                    PubSub::Confirm { word, left } if confirmation && first == *word => {
                        *left -= 1;
                        if *left > 0 {
                            return;
                        }
                        true
                    }
                    PubSub::Confirm { .. } => !push && !confirmation,
                    PubSub::No => !(push || leftover),
                };
                if !answers {
                    return;
                }
                if let Some(Slot::Command(p)) = self.pending.pop_front() {
                    self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
                    self.complete(*p, Some(v), Outcome::Complete, 0, out);
                }
            }
        }
    }

    /// A command whose reply went missing with lost bytes.
    fn complete_uncaptured(
        &mut self,
        p: Pending,
        outcome: Outcome,
        end: u64,
        tid: u32,
        out: &mut ParseOutput,
    ) {
        self.complete(p, None, outcome, end, out);
        if let Some(c) = out.messages.last_mut() {
            let any: &mut dyn std::any::Any = c.as_mut();
            if let Some(c) = any.downcast_mut::<Command>() {
                c.reply_uncaptured = true;
                c.response_tid = tid;
            }
        }
    }

    fn complete(
        &mut self,
        p: Pending,
        reply: Option<Value>,
        outcome: Outcome,
        end: u64,
        out: &mut ParseOutput,
    ) {
        let v = p.value;
        let mut args: Vec<Vec<u8>> = (0..v.ends.len())
            .filter_map(|i| v.arg(i).map(<[u8]>::to_vec))
            .collect();
        let name = upper(args.first().map(Vec::as_slice).unwrap_or_default());
        let sub = CONTAINERS.contains(&name.as_str()) && args.len() > 1;
        let operation = if sub {
            format!("{name} {}", upper(&args[1]))
        } else {
            name
        };
        let skip = if sub { 2 } else { 1 };
        args.drain(..skip.min(args.len()));
        let arg_count = v.count.saturating_sub(skip as u64);
        let error = reply
            .as_ref()
            .and_then(|r| r.error.as_ref())
            .map(|e| String::from_utf8_lossy(e).into_owned());
        if error.is_some() && operation == "SELECT" {
            self.db = p.db_before;
        }
        let truncated = v.truncated;
        out.messages.push(Box::new(Command {
            id: p.id,
            role: self.role,
            operation,
            args,
            arg_count,
            truncated,
            reply_uncaptured: false,
            db: p.db,
            error,
            start_ns: v.start_ns,
            end_ns: reply.as_ref().map_or(end, |r| r.end_ns),
            request_tid: v.tid,
            response_tid: reply.as_ref().map_or(0, |r| r.tid),
            outcome,
        }));
    }

    /// Settle an unknown role from the first complete value: a command travels from the client.
    fn settle(&mut self, dir: Direction, v: &Value) {
        if self.role != Role::Unknown {
            return;
        }
        let command_dir = if v.is_command() { dir } else { other(dir) };
        self.role = if command_dir == Direction::Egress {
            Role::Client
        } else {
            Role::Server
        };
    }
}

fn other(d: Direction) -> Direction {
    match d {
        Direction::Egress => Direction::Ingress,
        Direction::Ingress => Direction::Egress,
    }
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

fn confirm_word(command: &str) -> &'static str {
    match command {
        "SUBSCRIBE" => "subscribe",
        "PSUBSCRIBE" => "psubscribe",
        "SSUBSCRIBE" => "ssubscribe",
        "UNSUBSCRIBE" => "unsubscribe",
        "PUNSUBSCRIBE" => "punsubscribe",
        _ => "sunsubscribe",
    }
}

fn is_confirm_word(w: &str) -> bool {
    matches!(
        w,
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe" | "sunsubscribe"
    )
}

fn is_message_word(w: &str) -> bool {
    matches!(w, "message" | "pmessage" | "smessage")
}

impl ConnParser for RedisConn {
    fn feed(&mut self, seg: &Segment<'_>, out: &mut ParseOutput) {
        let mut events = std::mem::take(&mut self.events);
        if seg.lost_before {
            self.reader(seg.dir).fail(ParseError::Desync, &mut events);
        }
        let replies = self.request_dir().is_some_and(|d| d != seg.dir);
        if replies {
            self.last_reply = (seg.ts_exit, seg.tid);
        }
        let reader = self.reader(seg.dir);
        reader.read(seg, seg.bytes, !replies, &mut events);
        if seg.missing > 0 {
            reader.skip(seg, seg.missing, &mut events);
        }
        for ev in events.drain(..) {
            match ev {
                Event::Error(e) => {
                    out.errors.push(e);
                    self.desync(seg.dir);
                }
                Event::Tail => {
                    // The rest of a command whose start was lost: answered before the next ones.
                    self.end_gap_at_turn(out);
                    match self.pending.back_mut() {
                        Some(Slot::Gap) => {}
                        Some(Slot::Untracked(n)) => *n += 1,
                        _ => self.pending.push_back(Slot::Untracked(1)),
                    }
                }
                Event::Value(v) => {
                    self.settle(seg.dir, &v);
                    if self.request_dir() == Some(seg.dir) {
                        if v.is_command() {
                            self.on_command(v, out);
                        } else {
                            out.errors.push(ParseError::Garbage);
                            self.reader(seg.dir).resync();
                            self.desync(seg.dir);
                        }
                    } else if v.ty == b' ' {
                        out.errors.push(ParseError::Garbage);
                        self.reader(seg.dir).resync();
                        self.desync(seg.dir);
                    } else {
                        self.on_reply(v, out);
                    }
                }
            }
        }
        if replies && matches!(self.pending.front(), Some(Slot::Gap)) {
            self.gap_answered = true;
        }
        self.events = events;
    }

    fn close(&mut self, ts: u64, out: &mut ParseOutput) {
        // Answered if the server spoke after the gap, else cut by the close.
        if self.gap_answered {
            self.report_unanswered_at_gap(Outcome::Complete, self.last_reply.0, out);
        } else {
            self.report_unanswered_at_gap(Outcome::Closed, ts, out);
        }
        while let Some(slot) = self.pending.pop_front() {
            if let Slot::Command(p) = slot {
                self.complete(*p, None, Outcome::Closed, ts, out);
            }
        }
        self.pending_bytes = 0;
        self.egress = Reader::default();
        self.ingress = Reader::default();
    }

    fn expire(&mut self, now: u64, timeout_ns: u64, out: &mut ParseOutput) {
        let oldest = self.unanswered_at_gap.first().map(|p| p.value.start_ns);
        if oldest.is_some_and(|t| now.saturating_sub(t) > timeout_ns) {
            if self.gap_answered {
                self.report_unanswered_at_gap(Outcome::Complete, self.last_reply.0, out);
            } else {
                self.report_unanswered_at_gap(Outcome::Timeout, now, out);
            }
        }
        // Only the oldest can be answered next: expire from the front, stop at a live one.
        while let Some(Slot::Command(p)) = self.pending.front() {
            if now.saturating_sub(p.value.start_ns) <= timeout_ns {
                break;
            }
            if let Some(Slot::Command(p)) = self.pending.pop_front() {
                self.pending_bytes = self.pending_bytes.saturating_sub(p.bytes);
                self.complete(*p, None, Outcome::Timeout, now, out);
            }
        }
    }

    fn has_pending(&self) -> bool {
        !self.unanswered_at_gap.is_empty()
            || self.pending.iter().any(|s| matches!(s, Slot::Command(_)))
    }

    fn pending_count(&self) -> usize {
        self.unanswered_at_gap.len()
            + self
                .pending
                .iter()
                .filter(|s| matches!(s, Slot::Command(_)))
                .count()
    }
}

// ---------------------------------------------------------------------------------------------
// Spans

/// The error type of an error reply: its first word (`ERR`, `WRONGTYPE`, `NOAUTH`...).
pub fn error_type(text: &str) -> String {
    let word: String = text
        .split_ascii_whitespace()
        .next()
        .unwrap_or_default()
        .chars()
        .take(MAX_ERROR_TYPE)
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .collect();
    if word.is_empty() {
        "ERR".into()
    } else {
        word
    }
}

impl Command {
    /// `db.query.text`: the operation, then each argument, or `?` for it unless values are shown.
    pub fn query_text(&self, show_values: bool) -> String {
        let mut q = self.operation.clone();
        for a in &self.args {
            q.push(' ');
            if show_values {
                q.push_str(&String::from_utf8_lossy(a));
                if a.len() >= MAX_ARG_BYTES {
                    q.push_str("...");
                }
            } else {
                q.push('?');
            }
        }
        if show_values && self.truncated && !q.ends_with("...") {
            // An argument was cut by the capture.
            q.push_str("...");
        }
        let shown = self.args.len() as u64;
        if self.arg_count > shown {
            q.push_str(&format!(" ... ({} more)", self.arg_count - shown));
        }
        q
    }
}

impl ExchangeRecord for Command {
    fn info(&self) -> ExchangeInfo {
        ExchangeInfo {
            id: self.id,
            role: self.role,
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            request_tid: self.request_tid,
            response_tid: self.response_tid,
            outcome: self.outcome,
            truncated: self.truncated || self.reply_uncaptured,
        }
    }

    /// Attribute names of the database semantic conventions (Redis).
    fn to_span(&self, conn: &ConnMeta, clock: &Clock, opts: SpanOptions) -> SpanRecord {
        let error_type = match (&self.error, self.outcome) {
            (Some(e), _) => Some(error_type(e)),
            (None, Outcome::Complete) => None,
            (None, Outcome::Timeout) => Some("timeout".to_string()),
            (None, Outcome::Closed) => Some("connection_closed".to_string()),
        };
        let summary = SpanSummary::Db {
            system: "redis",
            operation: self.operation.clone(),
            error_type: error_type.clone(),
        };
        let mut span = SpanRecord::new(&self.info(), conn, clock, self.operation.clone(), summary);
        let server = self.role != Role::Client;
        let (local, remote) = (conn.endpoints.local, conn.endpoints.remote);
        let a = &mut span.attributes;
        a.push(KeyValue::new("db.system.name", "redis"));
        a.push(KeyValue::new("db.operation.name", self.operation.clone()));
        a.push(KeyValue::new(
            "db.query.text",
            self.query_text(opts.show_query_values),
        ));
        if let Some(db) = self.db {
            a.push(KeyValue::new("db.namespace", db.to_string()));
        }
        let addresses = &conn.addresses;
        let (server_addr, server_port) = if server {
            (&addresses.local, local.1)
        } else {
            (&addresses.remote, remote.1)
        };
        a.push(KeyValue::new("server.address", server_addr.clone()));
        a.push(KeyValue::new("server.port", server_port));
        if server {
            a.push(KeyValue::new("client.address", addresses.remote.clone()));
            a.push(KeyValue::new("client.port", remote.1));
        }
        a.push(KeyValue::new(
            "network.peer.address",
            addresses.remote.clone(),
        ));
        a.push(KeyValue::new("network.peer.port", remote.1));
        if self.truncated || self.reply_uncaptured {
            a.push(KeyValue::new("tracer.truncated", true));
        }
        if let Some(t) = error_type {
            a.push(KeyValue::new("error.type", t));
            span.status = SpanStatus::Error {
                message: match (&self.error, self.outcome) {
                    (Some(e), _) => e.chars().take(256).collect(),
                    (None, Outcome::Timeout) => "no reply before the request timeout".into(),
                    _ => "connection closed before a reply".into(),
                },
            };
        }
        span
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use Direction::{Egress, Ingress};

    use super::*;
    use crate::protocol::testconn::TestConn;

    /// One connection under test (see `testconn`) whose records are Redis commands.
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
            Conn(TestConn::new(&Redis, role))
        }

        fn commands(&mut self) -> Vec<Command> {
            self.records()
        }
    }

    /// A command array of `args`.
    fn cmd(args: &[&str]) -> Vec<u8> {
        let mut b = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            b.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        b
    }

    /// Operation, redacted query text, and error type of each command.
    fn summary(c: &[Command]) -> Vec<(String, String, Option<String>)> {
        c.iter()
            .map(|c| {
                (
                    c.operation.clone(),
                    c.query_text(false),
                    c.error.as_deref().map(error_type),
                )
            })
            .collect()
    }

    #[rstest]
    #[case::get(cmd(&["GET", "k"]), b"$1\r\nv\r\n", "GET", "GET ?", None)]
    #[case::set(cmd(&["set", "k", "v"]), b"+OK\r\n", "SET", "SET ? ?", None)]
    #[case::subcommand(cmd(&["CLIENT", "SETNAME", "me"]), b"+OK\r\n", "CLIENT SETNAME", "CLIENT SETNAME ?", None)]
    #[case::inline(b"PING\r\n".to_vec(), b"+PONG\r\n", "PING", "PING", None)]
    #[case::error(cmd(&["INCR", "k"]), b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", "INCR", "INCR ?", Some("WRONGTYPE"))]
    #[case::unknown(cmd(&["NOPE"]), b"-ERR unknown command 'NOPE'\r\n", "NOPE", "NOPE", Some("ERR"))]
    #[case::bulk_error(cmd(&["FCALL", "f", "0"]), b"!21\r\nERR Function not found\r\n", "FCALL", "FCALL ? ?", Some("ERR"))]
    #[case::null(cmd(&["GET", "nokey"]), b"$-1\r\n", "GET", "GET ?", None)]
    #[case::nested(cmd(&["XRANGE", "s", "-", "+"]), b"*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n", "XRANGE", "XRANGE ? ? ?", None)]
    #[case::resp3_map(cmd(&["HGETALL", "h"]), b"%1\r\n$1\r\na\r\n$1\r\nb\r\n", "HGETALL", "HGETALL ?", None)]
    #[case::resp3_attribute(cmd(&["GET", "k"]), b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n", "GET", "GET ?", None)]
    #[case::resp3_scalars(cmd(&["DEBUG", "x"]), b"*5\r\n,1.5\r\n#t\r\n_\r\n(123\r\n=7\r\ntxt:abc\r\n", "DEBUG", "DEBUG ?", None)]
    #[case::empty_array(cmd(&["KEYS", "x*"]), b"*0\r\n", "KEYS", "KEYS ?", None)]
    fn one_command(
        #[case] request: Vec<u8>,
        #[case] reply: &[u8],
        #[case] op: &str,
        #[case] text: &str,
        #[case] error: Option<&str>,
        #[values(Role::Client, Role::Server)] role: Role,
        #[values(false, true)] bytewise: bool,
    ) {
        let mut c = Conn::new(role);
        let (req_dir, reply_dir) = if role == Role::Client {
            (Egress, Ingress)
        } else {
            (Ingress, Egress)
        };
        if bytewise {
            request.iter().for_each(|b| c.feed(req_dir, &[*b]));
            reply.iter().for_each(|b| c.feed(reply_dir, &[*b]));
        } else {
            c.feed(req_dir, &request);
            c.feed(reply_dir, reply);
        }
        assert_eq!(c.errors(), vec![]);
        assert_eq!(c.out.started.len(), 1);
        assert_eq!(c.out.started[0].id, 0);
        let got = c.commands();
        assert_eq!(
            summary(&got),
            vec![(op.to_string(), text.to_string(), error.map(str::to_string))]
        );
        let x = &got[0];
        assert_eq!(
            (x.role, x.outcome, x.id, x.db),
            (role, Outcome::Complete, 0, Some(0))
        );
        assert!(x.start_ns < x.end_ns);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn thousands_pipelined_in_one_segment_pair_in_order() {
        let mut c = Conn::new(Role::Client);
        let n = 5000;
        let mut all = Vec::new();
        let mut replies = Vec::new();
        for i in 0..n {
            all.extend_from_slice(&cmd(&["SET", &format!("k{i}"), "v"]));
            replies.extend_from_slice(format!(":{i}\r\n").as_bytes());
        }
        c.feed(Egress, &all);
        // Replies arrive in arbitrary chunks.
        for chunk in replies.chunks(777) {
            c.feed(Ingress, chunk);
        }
        assert_eq!(c.errors(), vec![]);
        let got = c.commands();
        assert_eq!(got.len(), n);
        for (i, x) in got.iter().enumerate() {
            assert_eq!(x.id, i as u64);
            assert_eq!(x.query_text(true), format!("SET k{i} v"));
        }
        let ids: Vec<u64> = c.out.started.iter().map(|s| s.id).collect();
        assert_eq!(ids, (0..n as u64).collect::<Vec<_>>());
    }

    #[test]
    fn multi_exec() {
        let mut c = Conn::new(Role::Client);
        let mut batch = cmd(&["MULTI"]);
        batch.extend(cmd(&["SET", "a", "1"]));
        batch.extend(cmd(&["INCR", "a"]));
        batch.extend(cmd(&["EXEC"]));
        c.feed(Egress, &batch);
        c.feed(Ingress, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n");
        let ops: Vec<String> = c.commands().into_iter().map(|x| x.operation).collect();
        assert_eq!(ops, ["MULTI", "SET", "INCR", "EXEC"]);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn resp2_pubsub_messages_are_never_replies() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, &cmd(&["SUBSCRIBE", "a", "b"]));
        c.feed(Ingress, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
        assert!(c.commands().is_empty(), "ends at the last confirmation");
        c.feed(Ingress, b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n");
        let sub = c.commands();
        assert_eq!(sub.len(), 1);
        assert_eq!(sub[0].end_ns, 100 * 3 + 5);
        c.feed(Egress, &cmd(&["PING"]));
        for _ in 0..3 {
            c.feed(Ingress, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
        }
        c.feed(Ingress, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        c.feed(Egress, &cmd(&["UNSUBSCRIBE"]));
        c.feed(
            Ingress,
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n",
        );
        // Back to normal: an array starting with "message" is a reply again.
        c.feed(Egress, &cmd(&["LRANGE", "l", "0", "-1"]));
        c.feed(Ingress, b"*1\r\n$7\r\nmessage\r\n");
        let got = c.commands();
        let ops: Vec<&str> = got.iter().map(|x| x.operation.as_str()).collect();
        assert_eq!(ops, ["PING", "UNSUBSCRIBE", "LRANGE"]);
        assert_eq!(got[0].end_ns, 100 * 8 + 5, "PING ends at its pong");
        assert!(!c.parser.has_pending());
        assert_eq!(c.errors(), vec![]);
    }

    #[test]
    fn leftover_unsubscribe_confirmations_are_not_replies() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, &cmd(&["SUBSCRIBE", "a", "b"]));
        c.feed(
            Ingress,
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
        );
        c.feed(
            Egress,
            &[cmd(&["UNSUBSCRIBE"]), cmd(&["GET", "k"])].concat(),
        );
        c.feed(
            Ingress,
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n$1\r\nv\r\n",
        );
        let got = c.commands();
        let ops: Vec<&str> = got.iter().map(|x| x.operation.as_str()).collect();
        assert_eq!(ops, ["SUBSCRIBE", "UNSUBSCRIBE", "GET"]);
        assert_eq!(
            got[2].end_ns, got[1].end_ns,
            "GET's reply is the bulk, in the same read"
        );
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn resp3_pushes_are_never_replies() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, &cmd(&["SUBSCRIBE", "ch"]));
        c.feed(Ingress, b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
        c.feed(Egress, &cmd(&["GET", "k"]));
        c.feed(
            Ingress,
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n$1\r\nv\r\n",
        );
        let got = c.commands();
        let ops: Vec<&str> = got.iter().map(|x| x.operation.as_str()).collect();
        assert_eq!(ops, ["SUBSCRIBE", "GET"]);
        assert!(!c.parser.has_pending());
    }

    #[test]
    fn blocking_command_lasts_until_its_reply() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, &cmd(&["BLPOP", "q", "0"]));
        for _ in 0..10 {
            c.feed(Egress, b"");
        }
        c.feed(Ingress, b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
        let got = c.commands();
        assert_eq!((got[0].start_ns, got[0].end_ns), (100, 100 * 12 + 5));
    }

    #[test]
    fn select_sets_the_namespace() {
        let mut c = Conn::new(Role::Client);
        let mut batch = cmd(&["SELECT", "2"]);
        batch.extend(cmd(&["GET", "k"]));
        batch.extend(cmd(&["SELECT", "99"]));
        batch.extend(cmd(&["GET", "k"]));
        c.feed(Egress, &batch);
        c.feed(
            Ingress,
            b"+OK\r\n$-1\r\n-ERR DB index is out of range\r\n$-1\r\n",
        );
        c.feed(Egress, &cmd(&["GET", "k"]));
        c.feed(Ingress, b"$-1\r\n");
        let dbs: Vec<Option<u32>> = c.commands().iter().map(|x| x.db).collect();
        // The failed SELECT's pipelined GET ran in the old database, but was sent believing
        // the new one; the next command knows better.
        assert_eq!(dbs, [Some(0), Some(2), Some(2), Some(99), Some(2)]);
    }

    #[test]
    fn uncaptured_bulk_payload_is_skipped() {
        let mut c = Conn::new(Role::Client);
        let value = "x".repeat(100_000);
        let full = cmd(&["SET", "k", &value]);
        c.feed_with(Egress, &full[..4096], (full.len() - 4096) as u64, false);
        c.feed(Ingress, b"+OK\r\n");
        c.feed(Egress, &cmd(&["GET", "k"]));
        c.feed(Ingress, b"$3\r\nabc\r\n");
        assert_eq!(c.errors(), vec![]);
        let got = c.commands();
        assert_eq!(summary(&got)[0].1, "SET ? ?");
        assert!(got[0].truncated);
        let shown = got[0].query_text(true);
        assert!(
            shown.starts_with("SET k xxx") && shown.ends_with("..."),
            "{shown}"
        );
        assert!(!got[1].truncated);
        assert_eq!(got[1].operation, "GET");
    }

    #[test]
    fn lost_commands_make_a_gap_until_the_next_turn() {
        let mut c = Conn::new(Role::Client);
        let mut batch = cmd(&["GET", "a"]);
        batch.extend(cmd(&["GET", "b"]));
        let seen = batch.len();
        for i in 0..50 {
            batch.extend(cmd(&["GET", &format!("k{i}")]));
        }
        // Only the first two commands were captured.
        c.feed_with(Egress, &batch[..seen], (batch.len() - seen) as u64, false);
        assert_eq!(c.errors(), vec![ParseError::Desync]);
        c.feed(Ingress, &b"$1\r\n1\r\n".repeat(52));
        c.feed(Egress, &cmd(&["DEL", "a"]));
        c.feed(Ingress, b":1\r\n");
        let ops: Vec<String> = c.commands().into_iter().map(|x| x.operation).collect();
        assert_eq!(ops, ["GET", "GET", "DEL"]);
        assert!(!c.parser.has_pending());
    }

    /// Replies lost (ring buffer, or a read longer than the capture): the commands that waited
    /// are reported at the client's next turn, their reply marked uncaptured, ending at the last
    /// reply segment; later ones pair again.
    #[rstest]
    #[case::lost_before(0, true)]
    #[case::read_cut_short(7, false)]
    fn lost_replies_are_marked_at_the_next_turn(#[case] missing: u64, #[case] lost: bool) {
        let mut c = Conn::new(Role::Client);
        c.feed(
            Egress,
            &[cmd(&["GET", "a"]), cmd(&["GET", "b"]), cmd(&["GET", "z"])].concat(),
        );
        if lost {
            c.feed_with(Ingress, b"", 0, true);
            c.feed(Ingress, b"$1\r\n2\r\n");
        } else {
            // The first reply captured, the others not.
            c.feed_with(Ingress, b"$1\r\n1\r\n", missing * 2, false);
        }
        let before: Vec<bool> = c.commands().iter().map(|x| x.reply_uncaptured).collect();
        c.feed(Egress, &cmd(&["GET", "c"]));
        c.feed(Ingress, b"$1\r\n3\r\n");
        let got = c.commands();
        let texts: Vec<(String, bool, Outcome)> = got
            .iter()
            .map(|x| (x.query_text(true), x.reply_uncaptured, x.outcome))
            .collect();
        let uncaptured = |t: &str| (t.to_string(), true, Outcome::Complete);
        let mut want = vec![];
        if !lost {
            assert_eq!(before, [false], "the captured reply pairs at once");
        }
        want.extend([uncaptured("GET b"), uncaptured("GET z")]);
        if lost {
            want.insert(0, uncaptured("GET a"));
        }
        want.push(("GET c".to_string(), false, Outcome::Complete));
        assert_eq!(texts, want);
        let reply_seg_end = 100 * (if lost { 3 } else { 2 }) + 5;
        assert!(got
            .iter()
            .filter(|x| x.reply_uncaptured)
            .all(|x| x.end_ns == reply_seg_end));
        assert_eq!(c.errors(), vec![ParseError::Desync]);
    }

    /// A server's reads cut a pipeline anywhere: after a read cut short, the next one starts
    /// inside a command. Reading resumes at the next command start; the cut command's reply
    /// (the first after that read) is skipped, the others pair.
    #[test]
    fn server_read_cut_inside_a_pipeline() {
        let mut c = Conn::new(Role::Server);
        let all: Vec<u8> = (0..6)
            .flat_map(|i| cmd(&["SET", &format!("k{i}"), "v"]))
            .collect();
        let one = cmd(&["SET", "k0", "v"]).len();
        // Read 1: commands 0 and 1 captured, then 2 and half of 3 uncaptured.
        let cut = one * 3 + one / 2;
        c.feed_with(Ingress, &all[..2 * one], (cut - 2 * one) as u64, false);
        assert_eq!(c.errors(), vec![ParseError::Desync]);
        // The server answers the 4 commands it read whole.
        c.feed(Egress, &b"+OK\r\n".repeat(4));
        // Read 2: the rest of command 3, then 4 and 5.
        c.feed(Ingress, &all[cut..]);
        c.feed(Egress, &b"+OK\r\n".repeat(3));
        c.feed(Ingress, &cmd(&["GET", "k5"]));
        c.feed(Egress, b"$1\r\nv\r\n");
        let texts: Vec<String> = c.commands().iter().map(|x| x.query_text(true)).collect();
        assert_eq!(
            texts,
            ["SET k0 v", "SET k1 v", "SET k4 v", "SET k5 v", "GET k5"]
        );
        assert!(!c.parser.has_pending());
        assert_eq!(c.errors(), vec![]);
    }

    #[rstest]
    #[case::garbage(b"\x16\x03\x01\x02\x00".to_vec(), ParseError::Garbage)]
    #[case::bad_length(b"*x\r\n".to_vec(), ParseError::Garbage)]
    #[case::too_many_elements(b"*99999999999\r\n".to_vec(), ParseError::TooLarge)]
    #[case::too_long_bulk(b"*1\r\n$99999999999\r\n".to_vec(), ParseError::TooLarge)]
    #[case::too_deep(b"*1\r\n".repeat(MAX_DEPTH + 1), ParseError::TooLarge)]
    #[case::not_a_command(b":1\r\n".to_vec(), ParseError::Garbage)]
    #[case::inline_too_long(vec![b'a'; MAX_INLINE + 1], ParseError::TooLarge)]
    fn bad_requests_are_counted(#[case] bytes: Vec<u8>, #[case] err: ParseError) {
        let mut c = Conn::new(Role::Server);
        c.feed(Ingress, &bytes);
        assert_eq!(c.errors(), vec![err]);
        assert!(c.commands().is_empty());
        // The next segment that starts a command resyncs.
        c.feed(Ingress, &cmd(&["PING"]));
        c.feed(Egress, b"+PONG\r\n");
        c.feed(Ingress, &cmd(&["PING"]));
        c.feed(Egress, b"+PONG\r\n");
        assert_eq!(c.commands().len(), 1, "the first one after the gap is lost");
    }

    /// Out of sync, a read that starts with an argument's text is not an inline command.
    #[test]
    fn resync_never_at_text() {
        let mut c = Conn::new(Role::Server);
        let all: Vec<u8> = (0..4)
            .flat_map(|i| cmd(&["SET", &format!("k{i}"), "v"]))
            .collect();
        let one = cmd(&["SET", "k0", "v"]).len();
        // Read 1: command 0, then command 1 up to its key, uncaptured.
        let key_at = one + b"*3\r\n$3\r\nSET\r\n$2\r\n".len();
        c.feed_with(Ingress, &all[..one], (key_at - one) as u64, false);
        c.feed(Egress, b"+OK\r\n");
        // Read 2 starts at "k1\r\n$1...": the rest of command 1, then 2 and 3.
        c.feed(Ingress, &all[key_at..]);
        c.feed(Egress, &b"+OK\r\n".repeat(3));
        let texts: Vec<String> = c.commands().iter().map(|x| x.query_text(true)).collect();
        assert_eq!(texts, ["SET k0 v", "SET k2 v", "SET k3 v"]);
        assert!(!c.parser.has_pending());
        assert_eq!(c.errors(), vec![ParseError::Desync]);
    }

    #[test]
    fn pending_beyond_the_cap_is_followed_untracked() {
        let mut c = Conn::new(Role::Client);
        let n = MAX_PENDING + 10;
        c.feed(Egress, &cmd(&["PING"]).repeat(n));
        // The count or the byte budget, whichever comes first.
        let tracked = c.out.started.len();
        assert!(tracked > 1000 && tracked <= MAX_PENDING, "{tracked}");
        assert!(c.errors().contains(&ParseError::TooManyPending));
        c.feed(Ingress, &b"+PONG\r\n".repeat(n));
        c.feed(Egress, &cmd(&["GET", "k"]));
        c.feed(Ingress, b"$1\r\nv\r\n");
        let got = c.commands();
        assert_eq!(got.len(), tracked + 1);
        assert_eq!(got.last().unwrap().operation, "GET");
    }

    #[test]
    fn close_and_expire_report_what_waits() {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, &[cmd(&["GET", "a"]), cmd(&["GET", "b"])].concat());
        c.expire(1_000, 2_000);
        assert!(c.commands().is_empty());
        c.expire(10_000, 2_000);
        c.close(20_000);
        let got = c.commands();
        let outcomes: Vec<(Outcome, u64)> = got.iter().map(|x| (x.outcome, x.end_ns)).collect();
        assert_eq!(
            outcomes,
            [(Outcome::Timeout, 10_000), (Outcome::Timeout, 10_000)]
        );
        assert!(!c.parser.has_pending());
    }

    #[rstest]
    #[case::command_ingress(Ingress, Role::Server)]
    #[case::command_egress(Egress, Role::Client)]
    fn unknown_role_is_settled_by_the_first_command(#[case] dir: Direction, #[case] role: Role) {
        let mut c = Conn::new(Role::Unknown);
        c.feed(dir, &cmd(&["GET", "k"]));
        c.feed(other(dir), b"$1\r\nv\r\n");
        let got = c.commands();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].role, role);
        assert_eq!(
            got[0].db, None,
            "a connection found open: its database is unknown"
        );
    }

    #[rstest]
    #[case(b"*1\r\n$4\r\nPING\r\n", Role::Client, true)]
    #[case(b"*12\r\n$3", Role::Server, true)]
    #[case(b"+OK\r\n", Role::Client, false)]
    #[case(b"+OK\r\n", Role::Unknown, true)]
    #[case(b"GET / HTTP/1.1\r\n", Role::Unknown, false)]
    #[case(b"*", Role::Client, false)]
    fn detection(#[case] first: &[u8], #[case] role: Role, #[case] yes: bool) {
        assert_eq!(Redis.detect(first, Egress, role), yes);
    }

    #[rstest]
    #[case(false, "SET ? ?")]
    #[case(true, "SET k v")]
    fn query_values_are_redacted_unless_asked(#[case] show: bool, #[case] want: &str) {
        let mut c = Conn::new(Role::Client);
        c.feed(Egress, &cmd(&["SET", "k", "v"]));
        c.feed(Ingress, b"+OK\r\n");
        assert_eq!(c.commands()[0].query_text(show), want);
    }

    #[test]
    fn long_argument_lists_are_capped() {
        let mut c = Conn::new(Role::Client);
        let args: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
        let mut all = vec!["DEL"];
        all.extend(args.iter().map(String::as_str));
        c.feed(Egress, &cmd(&all));
        c.feed(Ingress, b":40\r\n");
        let x = &c.commands()[0];
        assert_eq!(x.arg_count, 40);
        let text = x.query_text(false);
        assert!(text.ends_with("? ... (25 more)"), "{text}");
    }

    #[rstest]
    #[case("ERR unknown command", "ERR")]
    #[case("WRONGTYPE Operation", "WRONGTYPE")]
    #[case("", "ERR")]
    #[case("NOAUTH Authentication required.", "NOAUTH")]
    fn error_types(#[case] text: &str, #[case] want: &str) {
        assert_eq!(error_type(text), want);
    }

    /// Replays a corpus capture (the first packet goes to the server).
    fn replay_as_server(pcap: &[u8]) -> (Vec<Command>, Vec<ParseError>) {
        let payloads = crate::protocol::pcap::payloads(pcap);
        let server_port = payloads[0].0;
        let mut c = Conn::new(Role::Server);
        for (dst, _, bytes) in &payloads {
            c.feed(if *dst == server_port { Ingress } else { Egress }, bytes);
        }
        c.close(u64::MAX);
        (c.commands(), c.errors())
    }

    #[test]
    fn corpus_lrange_with_array_reply() {
        let (got, errors) = replay_as_server(include_bytes!(
            "../../tests/data/deepflow/redis/redis-debug.pcap"
        ));
        assert_eq!(errors, vec![]);
        assert_eq!(
            summary(&got),
            [("LRANGE".into(), "LRANGE ? ? ?".into(), None)]
        );
        assert_eq!(got[0].query_text(true), "LRANGE mylist 0 299");
        assert_eq!(got[0].outcome, Outcome::Complete);
    }

    #[test]
    fn corpus_error_reply() {
        let (got, errors) = replay_as_server(include_bytes!(
            "../../tests/data/deepflow/redis/redis-error.pcap"
        ));
        assert_eq!(errors, vec![]);
        assert_eq!(
            summary(&got),
            [("GET".into(), "GET ?".into(), Some("NOAUTH".into()))]
        );
        assert_eq!(
            got[0].error.as_deref(),
            Some("NOAUTH Authentication required.")
        );
    }

    /// Random slices of RESP fed in random pieces: no panic, nothing left pending after close.
    #[test]
    fn random_input_never_panics() {
        let pieces: &[&[u8]] = &[
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            b"+OK\r\n",
            b"-ERR x\r\n",
            b">3\r\n$7\r\nmessage\r\n",
            b"|1\r\n",
            b"%1\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"PING\r\n",
            b"\r\n",
            b"\xff\x00",
            b"$5\r\nab",
        ];
        crate::protocol::testconn::shake(&Redis, pieces, |m| {
            let x = crate::protocol::testconn::downcast::<Command>(m);
            assert_ne!(x.role, Role::Unknown);
            assert!(x.start_ns <= x.end_ns);
        });
    }
}
