//! Data records: the bytes of one data syscall on a traced connection.

use crate::event::EventHeader;

/// Largest capture per syscall the kernel programs support; the configured size is at most this.
pub const MAX_CAPTURE: usize = 8192;
/// Default capture per syscall.
pub const DEFAULT_CAPTURE: u32 = 4096;
/// Most iovec entries gathered from one readv/writev/recvmsg/sendmsg.
pub const MAX_IOV: usize = 8;

pub mod direction {
    /// Written by the traced process.
    pub const EGRESS: u8 = 0;
    /// Read by the traced process.
    pub const INGRESS: u8 = 1;
}

pub mod flags {
    /// Fewer bytes were captured than the syscall moved.
    pub const TRUNCATED: u8 = 1;
    /// A record of this connection was lost before this one.
    pub const LOST_BEFORE: u8 = 2;
    /// The syscall moves bytes the program cannot see (sendfile): only the count is known.
    pub const NO_PAYLOAD: u8 = 4;
    /// A request head read on a server connection while injection is on: `trace_id` is the
    /// trace the kernel started for it (all zero when it chose none: the request carried its own
    /// context, or several requests were in flight on the thread).
    pub const KERNEL_TRACE: u8 = 8;
    /// The kernel inserted a `traceparent` into these bytes on their way out: `trace_id` and
    /// `span_id` are the ones it carries (the client span's).
    pub const INJECTED: u8 = 16;
}

/// Which syscall produced a record (for diagnostics and stats).
pub mod syscall {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const READV: u8 = 2;
    pub const WRITEV: u8 = 3;
    pub const RECVFROM: u8 = 4;
    pub const SENDTO: u8 = 5;
    pub const RECVMSG: u8 = 6;
    pub const SENDMSG: u8 = 7;
    pub const SENDFILE: u8 = 8;
}

/// Header of a [`crate::event::kind::DATA`] record; `cap_len` captured bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DataHeader {
    pub header: EventHeader,
    /// Monotonic ns at syscall entry and exit.
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    pub conn_id: u64,
    /// Bytes the syscall really moved (its return value).
    pub ret_len: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// Bytes captured after this header.
    pub cap_len: u32,
    /// One of [`direction`].
    pub direction: u8,
    /// One of [`syscall`].
    pub syscall: u8,
    /// Bits of [`flags`].
    pub flags: u8,
    pub _pad: [u8; 5],
    /// See [`flags::KERNEL_TRACE`] and [`flags::INJECTED`]; zero otherwise.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}
crate::assert_size!(DataHeader, 88);

/// Scratch record the kernel fills before copying `header + cap_len` bytes to the ring buffer.
/// Twice the capture size (plus the bytes held while a connection is classified, which go
/// first) so that masked offsets keep every write in bounds for the verifier.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataRecord {
    pub header: DataHeader,
    pub data: [u8; MAX_CAPTURE * 2 + crate::classify::PREFIX],
}
crate::assert_size!(DataRecord, 88 + MAX_CAPTURE * 2 + crate::classify::PREFIX);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::DataHeader {}
}
