//! Application protocols. Each protocol is one module holding an incremental parser over
//! captured byte streams and the typed record of a finished exchange; adding a protocol is one
//! module plus one line in [`PROTOCOLS`] (docs/pipeline.md lists every file it takes).
//!
//! The protocol owns exchange identity: its parser reports each exchange's start ([`Started`])
//! and its finished record ([`ExchangeRecord`]) under an id of its choosing; the rest of the
//! pipeline keys on that id and never looks inside a record.

pub mod http1;
#[cfg(test)]
pub(crate) mod pcap;
pub mod redis;
#[cfg(test)]
pub(crate) mod testconn;

use std::{any::Any, fmt};

use crate::{
    clock::Clock,
    conn::ConnMeta,
    context::RemoteContext,
    span::{SpanOptions, SpanRecord},
};

/// Which way bytes moved, seen from the traced process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Written by the traced process (write, send, sendfile...).
    Egress,
    /// Read by the traced process (read, recv...).
    Ingress,
}

/// Which end of the TCP connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process connected: it sends requests.
    Client,
    /// The process accepted: it receives requests.
    Server,
    /// The connection predates the tracer; the first parsed message decides.
    Unknown,
}

/// The bytes of one data syscall on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub dir: Direction,
    /// Captured bytes: a prefix of what the syscall moved.
    pub bytes: &'a [u8],
    /// Bytes the syscall moved after `bytes` that were not captured (truncation, sendfile).
    pub missing: u64,
    /// Bytes lost before this segment (ring buffer full): the stream is out of sync.
    pub lost_before: bool,
    /// Monotonic nanoseconds at syscall entry and exit.
    pub ts_enter: u64,
    pub ts_exit: u64,
    /// Thread that made the syscall.
    pub tid: u32,
}

/// Why a parser gave up on some bytes. Counted by the pipeline, logged once per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Bytes that are not this protocol where a message should start.
    Garbage,
    /// A header section or line longer than the parser's cap.
    TooLarge,
    /// Bytes were not captured where they were needed (header split by truncation or loss).
    Desync,
    /// Too many requests waiting for responses on one connection.
    TooManyPending,
    /// Responses were lost while several requests waited: which request a later response
    /// answers cannot be known, so the connection is no longer parsed.
    Unpaired,
}

impl ParseError {
    pub const ALL: [ParseError; 5] = [
        Self::Garbage,
        Self::TooLarge,
        Self::Desync,
        Self::TooManyPending,
        Self::Unpaired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Garbage => "garbage",
            Self::TooLarge => "too_large",
            Self::Desync => "desync",
            Self::TooManyPending => "too_many_pending",
            Self::Unpaired => "unpaired",
        }
    }
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A whole answer was seen.
    Complete,
    /// No answer came before the request timeout.
    Timeout,
    /// The connection closed before a (whole) answer.
    Closed,
}

/// An exchange whose request is complete: reported by the parser as soon as it knows, so the
/// connection stage can note what the thread was doing when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The exchange's identity on its connection, chosen by the protocol: the sequence number
    /// for in-order protocols (HTTP/1, RESP), the stream id for multiplexed ones. Both ends of a
    /// connection number alike, which is what pairs them.
    pub id: u64,
    /// Thread that moved the request's first byte.
    pub tid: u32,
    /// Monotonic ns of the request's first byte.
    pub ts: u64,
}

/// What every finished exchange tells the pipeline, whatever its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExchangeInfo {
    /// As in [`Started::id`].
    pub id: u64,
    /// Resolved role of the traced process (never `Unknown`).
    pub role: Role,
    /// Monotonic ns: the request's first byte and the answer's last one (or the timeout/close).
    pub start_ns: u64,
    pub end_ns: u64,
    /// Thread that moved the request's first byte, and the answer's first byte (0 if none).
    pub request_tid: u32,
    pub response_tid: u32,
    /// Part of the exchange was not captured (a head past the capture, a reply cut short): its
    /// span is marked `tracer.truncated` and counted.
    pub truncated: bool,
    pub outcome: Outcome,
}

/// A finished exchange of one protocol, typed: it knows how to become a span.
pub trait ExchangeRecord: Any + Send + fmt::Debug {
    fn info(&self) -> ExchangeInfo;
    /// Trace context the request carried (extracted once, at parse time).
    fn context(&self) -> Option<RemoteContext> {
        None
    }
    /// The exported span: name, attributes, status and typed summary; ids and parent are the
    /// linker's.
    fn to_span(&self, conn: &ConnMeta, clock: &Clock, opts: SpanOptions) -> SpanRecord;
}

/// What a protocol parser hands to span building.
pub type Message = Box<dyn ExchangeRecord>;

/// Output sink of a parser: exchanges started and finished, and errors met on the way.
#[derive(Debug, Default)]
pub struct ParseOutput {
    pub started: Vec<Started>,
    pub messages: Vec<Message>,
    pub errors: Vec<ParseError>,
}

/// Per-connection incremental parser of one protocol.
pub trait ConnParser: Send {
    /// Feed one segment in stream order.
    fn feed(&mut self, seg: &Segment<'_>, out: &mut ParseOutput);
    /// The connection closed at monotonic `ts`: finish what the close delimits, report the rest.
    fn close(&mut self, ts: u64, out: &mut ParseOutput);
    /// Report requests that have waited longer than `timeout_ns` at monotonic `now`.
    fn expire(&mut self, now: u64, timeout_ns: u64, out: &mut ParseOutput);
    /// Whether requests are still waiting for their responses.
    fn has_pending(&self) -> bool;
    /// How many requests are waiting for their responses (that would give spans).
    fn pending_count(&self) -> usize;
}

/// A protocol: recognises its first bytes and makes parsers.
pub trait Protocol: Sync {
    fn name(&self) -> &'static str;
    /// Whether `first` (the start of a segment, in direction `dir`) begins a message of this protocol.
    fn detect(&self, first: &[u8], dir: Direction, role: Role) -> bool;
    fn parser(&self, role: Role) -> Box<dyn ConnParser>;
}

/// Registered protocols, tried in order.
pub static PROTOCOLS: &[&dyn Protocol] = &[&http1::Http1, &redis::Redis];

/// The first protocol that recognises `first`.
pub fn detect(first: &[u8], dir: Direction, role: Role) -> Option<&'static dyn Protocol> {
    PROTOCOLS
        .iter()
        .copied()
        .find(|p| p.detect(first, dir, role))
}
