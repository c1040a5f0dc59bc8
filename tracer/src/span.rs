//! Span records, built directly (like OpenTelemetry's `SpanData`) from parsed messages.

use std::{net::IpAddr, sync::Arc};

use crate::process::ProcessInfo;

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

/// An attribute value (the OpenTelemetry scalar types we produce).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Str(v.to_string())
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadUse {
    /// Read and answered by one thread that served no other connection meanwhile (and every
    /// client span).
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

/// Identity of one exchange: the connection and its position on it (0, 1, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ExchangeKey {
    pub conn_id: u64,
    pub seq: u64,
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub link: LinkKind,
    pub name: String,
    pub kind: SpanKind,
    /// Unix-epoch nanoseconds.
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub status: SpanStatus,
    /// Semantic-convention attributes of the span (not of the process).
    pub attributes: Vec<KeyValue>,
    /// The traced process: the span's resource.
    pub process: Arc<ProcessInfo>,
    /// Thread that handled the request.
    pub tid: u32,
    /// Agent-lifetime connection id (for linking; not exported).
    pub conn_id: u64,
    pub endpoints: Endpoints,
    /// Monotonic ns, for linking windows (not exported).
    pub start_mono_ns: u64,
    pub end_mono_ns: u64,
    /// Request headers that carry trace context (lowercase names), for linking.
    pub context_headers: Vec<(String, String)>,
    /// This exchange.
    pub exchange: ExchangeKey,
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

impl SpanRecord {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| &kv.value)
    }
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
