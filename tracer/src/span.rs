//! Span records, built directly (like OpenTelemetry's `SpanData`) from parsed exchanges, and
//! the hints only the linker reads, kept apart.

use std::{net::IpAddr, sync::Arc};

use crate::{
    clock::Clock,
    conn::ConnMeta,
    context::RemoteContext,
    process::ProcessInfo,
    protocol::{ExchangeInfo, Role},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Error { message: String },
}

/// Text of an attribute value or summary: static, shared (an address formatted once per
/// connection, a request's method and path referenced by span, attributes and summary), or made
/// for one span alone. Compares as the text it holds.
#[derive(Debug, Clone)]
pub enum Text {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Static(s) => s,
            Self::Shared(s) => s,
            Self::Owned(s) => s,
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Self::Static("")
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for Text {
    fn from(v: &'static str) -> Self {
        Self::Static(v)
    }
}
impl From<String> for Text {
    fn from(v: String) -> Self {
        Self::Owned(v)
    }
}
impl From<Arc<str>> for Text {
    fn from(v: Arc<str>) -> Self {
        Self::Shared(v)
    }
}

/// An attribute value (the OpenTelemetry scalar types we produce).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Text),
    Int(i64),
    Bool(bool),
}

impl From<Text> for Value {
    fn from(v: Text) -> Self {
        Self::Str(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Str(Text::Owned(v))
    }
}
/// Borrowed text must be `'static` (copying any other is the caller's explicit choice).
impl From<&'static str> for Value {
    fn from(v: &'static str) -> Self {
        Self::Str(Text::Static(v))
    }
}
impl From<Arc<str>> for Value {
    fn from(v: Arc<str>) -> Self {
        Self::Str(Text::Shared(v))
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// A key (semantic-convention names are static) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: &'static str,
    pub value: Value,
}

impl KeyValue {
    pub fn new(key: &'static str, value: impl Into<Value>) -> Self {
        Self {
            key,
            value: value.into(),
        }
    }
}

/// How a span's parent was found (`tracer.link`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// No parent: the span starts a trace.
    Root,
    /// Parent from a context header in the request (traceparent, b3, ...).
    Header,
    /// Parent is the server span the same thread was serving.
    Thread,
    /// Parent is the client span at the other end of the same TCP connection.
    Connection,
    /// Parent from a traceparent header that tracer injected.
    Injected,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Header => "header",
            Self::Thread => "thread",
            Self::Connection => "connection",
            Self::Injected => "injected",
        }
    }
}

/// How the thread that read a server span's request served it, which decides whether the client
/// requests that thread started meanwhile may be its children (`thread` links).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThreadUse {
    /// Read and answered by one thread that served no other connection meanwhile (and every
    /// client span).
    #[default]
    Own,
    /// The thread moved server bytes of other connections meanwhile (an event loop, or tasks
    /// moving between threads).
    Shared,
    /// Answered by another thread than the one that read it: the process moves requests between
    /// threads, so no thread of it serves one request at a time.
    Moved,
}

/// Ids the kernel chose for an exchange (context injection on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelIds {
    /// A server request that came without a context: the trace the kernel started for it, which
    /// the requests its thread sends meanwhile carry.
    Trace([u8; 16]),
    /// A client request the kernel inserted `traceparent` into: the trace and span id it carries.
    Injected {
        trace_id: [u8; 16],
        span_id: [u8; 8],
    },
}

/// Both ends of the span's TCP connection, seen from the traced process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
}

/// Identity of one exchange: the connection and the exchange's id on it (see
/// [`crate::protocol::Started::id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ExchangeKey {
    pub conn_id: u64,
    pub id: u64,
}

/// Options of span building.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanOptions {
    /// Keep query-string and command argument values instead of redacting them.
    pub show_query_values: bool,
}

/// What a span is about, typed: what metrics and the text output read (never attribute
/// strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanSummary {
    Http {
        method: Text,
        /// The URL path, for the low-cardinality route of metrics.
        path: Text,
        /// None without a response.
        status_code: Option<u16>,
    },
    Db {
        /// `db.system.name`.
        system: &'static str,
        /// `db.operation.name`.
        operation: String,
        /// `error.type`, if the operation failed.
        error_type: Option<String>,
    },
}

/// One finished span, as exported.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub link: LinkKind,
    /// The sampled flag of the request's own context, when the parent came from it.
    pub parent_sampled: Option<bool>,
    pub name: String,
    pub kind: SpanKind,
    /// Unix-epoch nanoseconds.
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub status: SpanStatus,
    /// Semantic-convention attributes of the span (not of the process).
    pub attributes: Vec<KeyValue>,
    pub summary: SpanSummary,
    /// The traced process: the span's resource.
    pub process: Arc<ProcessInfo>,
    /// Thread that handled the request.
    pub tid: u32,
    pub endpoints: Endpoints,
}

impl SpanRecord {
    /// The span of exchange `info` on `conn`, before linking (no ids, no parent yet).
    pub fn new(
        info: &ExchangeInfo,
        conn: &ConnMeta,
        clock: &Clock,
        name: String,
        summary: SpanSummary,
    ) -> Self {
        let end = info.end_ns.max(info.start_ns);
        Self {
            trace_id: [0; 16],
            span_id: [0; 8],
            parent_span_id: None,
            link: LinkKind::Root,
            parent_sampled: None,
            name,
            kind: if info.role == Role::Client {
                SpanKind::Client
            } else {
                SpanKind::Server
            },
            start_unix_ns: clock.to_unix_ns(info.start_ns),
            end_unix_ns: clock.to_unix_ns(end),
            status: SpanStatus::Unset,
            attributes: Vec::with_capacity(16),
            summary,
            process: conn.process.clone(),
            tid: info.request_tid,
            endpoints: conn.endpoints,
        }
    }
}

/// What only the linker needs to know about a span (never exported).
#[derive(Debug, Clone, Default)]
pub struct LinkHints {
    /// This exchange.
    pub exchange: ExchangeKey,
    /// Monotonic ns, for linking windows.
    pub start_mono_ns: u64,
    pub end_mono_ns: u64,
    /// The context the request carried, if any.
    pub context: Option<RemoteContext>,
    /// The server exchange this thread was serving when this client request started (exactly
    /// one in flight on the thread), if any.
    pub thread_parent: Option<ExchangeKey>,
    /// The client exchange at the other end of this server span's connection (both ends traced
    /// on this host), if any.
    pub conn_parent: Option<ExchangeKey>,
    /// Server spans: how their thread served them.
    pub thread_use: ThreadUse,
    /// Ids the kernel chose, if any.
    pub kernel: Option<KernelIds>,
    /// Server spans: the request's traceparent was inserted by this tracer (on this host).
    pub via_injected: bool,
}

/// A span on its way to the linker, with its hints.
#[derive(Debug, Clone)]
pub struct Unlinked {
    pub span: SpanRecord,
    pub hints: LinkHints,
}

/// Lowercase hex of ids.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
