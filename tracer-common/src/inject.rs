//! Trace-context injection: the kernel inserts a W3C `traceparent` header into outgoing HTTP/1.x
//! requests of traced processes (sock_ops puts their client sockets in a sockhash; an sk_msg
//! program on that sockhash edits request heads before TCP sees them).
//!
//! The kernel also keeps, per thread, the trace of the one server request it is serving, so that
//! the header it injects continues that trace; it tells the agent which ids it chose through
//! fields of the data records (see [`crate::data::flags`]).

/// Bytes of the header inserted: `traceparent: 00-<32 hex>-<16 hex>-<2 hex>\r\n`.
pub const HEADER_LEN: usize = 70;
/// Request heads are only edited when they end within this many bytes of the message.
pub const SCAN_WINDOW: usize = 2048;
/// Server requests remembered per thread; more in flight at once means no injection.
pub const ACTIVE_SLOTS: usize = 4;
/// A server request still unanswered after this long no longer counts as in flight on its thread
/// (it was answered by another thread, or its connection died).
pub const ACTIVE_STALE_NS: u64 = 30_000_000_000;

/// Key of a socket in the sockhash and the socket state map: its addresses as sock_ops and
/// sk_msg both see them (ports and addresses in the kernel's byte orders, unchanged), and its
/// network namespace cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub family: u32,
    pub local_port: u32,
    pub remote_port: u32,
    pub _pad: u32,
    pub local: [u32; 4],
    pub remote: [u32; 4],
    pub netns_cookie: u64,
}
crate::assert_size!(SockKey, 56);

/// Where the next byte written on a socket falls in its HTTP/1.x request stream.
pub mod sock_mode {
    /// At the start of a request head: the only place a header may be inserted.
    pub const BOUNDARY: u8 = 0;
    /// Inside a request body of known length (`remaining` bytes left).
    pub const BODY: u8 = 1;
    /// Position unknown (chunked or unparsed body, pipelining, split head, not HTTP): never
    /// edited again.
    pub const LOST: u8 = 2;
}

/// Per-socket state of the sk_msg program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockState {
    pub remaining: u64,
    /// One of [`sock_mode`].
    pub mode: u8,
    pub _pad: [u8; 7],
}
crate::assert_size!(SockState, 16);

/// Per-thread context: the server requests the thread is serving, and the trace of the last one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadCtx {
    pub trace_id: [u8; 16],
    /// Parent id of the request's own traceparent (zero when the kernel started the trace): an
    /// outgoing request carrying that same traceparent forwards it unchanged.
    pub parent_id: [u8; 8],
    /// Connection ids of server requests read and not yet answered by this thread (0: free).
    pub active: [u64; ACTIVE_SLOTS],
    /// Monotonic ns each was read at.
    pub active_ts: [u64; ACTIVE_SLOTS],
    /// W3C trace flags to propagate.
    pub trace_flags: u8,
    /// Non-zero when `trace_id` may be injected (one request in flight, context understood).
    pub usable: u8,
    /// Non-zero when the part of the head read so far had a traceparent (now in `trace_id`).
    pub has_traceparent: u8,
    pub _pad: [u8; 5],
    /// Connection whose request head this thread has read only up to a line boundary (0: none):
    /// its next read continues the head. Senders split heads (a proxy, or an injected header on
    /// the client side, goes out as a segment of its own).
    pub partial_head: u64,
}
crate::assert_size!(ThreadCtx, 104);

/// Responses a process must have written on the thread that read their request, and none on
/// another, before the requests it sends carry the context of the request a thread serves. Until
/// then (and forever once a response came from another thread: tasks move between threads, as in
/// Go, tokio or .NET) a thread's one request in flight says nothing about who sends.
pub const PROVEN_ANSWERS: u32 = 4;

/// How a process serves requests, as the kernel has seen it answer them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcModel {
    /// Responses written by the thread that read the request.
    pub same_thread: u32,
    /// Non-zero once a response was written by another thread than the one that read its request.
    pub moved: u32,
}
crate::assert_size!(ProcModel, 8);

/// What the sk_msg program injected during a thread's current send, taken by the syscall exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Injected {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Monotonic ns of the injection: older than the syscall's entry means another syscall's.
    pub ts_ns: u64,
}
crate::assert_size!(Injected, 32);

/// What a scan of a request head found (kernel scratch; offsets into the scanned bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadInfo {
    /// Just after the request line's `\n`; 0 if not found.
    pub line1_end: u32,
    /// Just after the blank line ending the head; 0 if the head does not end in the bytes.
    pub head_end: u32,
    /// Offset of the value of `traceparent:` (0: absent).
    pub traceparent_at: u32,
    /// Offset of the value of `content-length:` (0: absent).
    pub content_length_at: u32,
    pub content_lengths: u32,
    /// Non-zero when a context header other than traceparent is there (b3, x-b3-*, uber-trace-id,
    /// x-datadog-*, tracestate alone).
    pub other_context: u32,
    /// Non-zero when `transfer-encoding:` is there (body length unknown to the kernel).
    pub transfer_encoding: u32,
    /// Non-zero when `upgrade:` is there (the stream may stop being HTTP).
    pub upgrade: u32,
}
crate::assert_size!(HeadInfo, 32);

/// Scratch of the sk_msg program: the head bytes (with room for masked reads past the window)
/// and the header to insert.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MsgScratch {
    pub info: HeadInfo,
    pub header: [u8; HEADER_LEN + 2],
    pub _pad: [u8; 8],
    pub data: [u8; 2 * SCAN_WINDOW + 64],
}
crate::assert_size!(MsgScratch, 32 + 72 + 8 + 2 * SCAN_WINDOW + 64);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::SockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadCtx {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Injected {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcModel {}
}
