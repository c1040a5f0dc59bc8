//! Application protocols. Each protocol is one module holding an incremental parser over
//! captured byte streams; adding a protocol is one module plus one line in [`PROTOCOLS`].

pub mod http1;

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

/// What a protocol parser hands to span building.
#[derive(Debug, Clone)]
pub enum Message {
    Http1(http1::Exchange),
}

/// Output sink of a parser: finished messages and errors met on the way.
#[derive(Debug, Default)]
pub struct ParseOutput {
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
    /// How many requests have started (head complete) and not yet been reported.
    fn pending_count(&self) -> usize {
        usize::from(self.has_pending())
    }
}

/// A protocol: recognises its first bytes and makes parsers.
pub trait Protocol: Sync {
    fn name(&self) -> &'static str;
    /// Whether `first` (the start of a segment, in direction `dir`) begins a message of this protocol.
    fn detect(&self, first: &[u8], dir: Direction, role: Role) -> bool;
    fn parser(&self, role: Role) -> Box<dyn ConnParser>;
}

/// Registered protocols, tried in order.
pub static PROTOCOLS: &[&dyn Protocol] = &[&http1::Http1];

/// The first protocol that recognises `first`.
pub fn detect(first: &[u8], dir: Direction, role: Role) -> Option<&'static dyn Protocol> {
    PROTOCOLS
        .iter()
        .copied()
        .find(|p| p.detect(first, dir, role))
}
