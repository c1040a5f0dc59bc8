//! Connections: identity, role and addresses of a traced TCP socket.

use crate::event::EventHeader;

/// Key of the kernel's connection table: a file descriptor of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: i32,
}
crate::assert_size!(ConnKey, 8);

/// Role of the traced process on a connection.
pub mod role {
    /// Open before the tracer started: the traffic decides.
    pub const UNKNOWN: u8 = 0;
    /// The process called connect().
    pub const CLIENT: u8 = 1;
    /// The process got it from accept().
    pub const SERVER: u8 = 2;
}

/// What the kernel does with a connection's data syscalls.
pub mod state {
    /// Not traced: not a TCP socket, filtered out, or not a protocol we parse.
    pub const IGNORED: u8 = 0;
    /// Traced TCP socket whose protocol is not known yet: the first bytes are sniffed.
    pub const SNIFFING: u8 = 1;
    /// HTTP/1.x: data is captured.
    pub const HTTP1: u8 = 2;
    /// HTTP/2 (recognised by its preface): data is captured.
    pub const HTTP2: u8 = 3;
    /// Redis (RESP: the first message is a command array): data is captured.
    pub const REDIS: u8 = 4;

    /// Whether a connection in state `s` is captured (its open and close are reported).
    pub const fn captured(s: u8) -> bool {
        matches!(s, HTTP1 | HTTP2 | REDIS)
    }
}

/// Address families as in `<sys/socket.h>`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Kernel-side per-connection state (value of the connection table).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnState {
    /// Unique for the agent's lifetime (fd reuse gets a new id); 0 for ignored fds.
    pub conn_id: u64,
    /// One of [`state`].
    pub state: u8,
    /// One of [`role`].
    pub role: u8,
    /// How many more segments may be sniffed before giving up.
    pub sniff_budget: u8,
    /// Non-zero when a record of this connection was lost (ring buffer full).
    pub lost: u8,
    pub _pad: [u8; 4],
}
crate::assert_size!(ConnState, 16);

/// Record for [`crate::event::kind::CONN_OPEN`] and [`crate::event::kind::CONN_CLOSE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnEvent {
    pub header: EventHeader,
    /// Monotonic ns.
    pub ts_ns: u64,
    pub conn_id: u64,
    pub tgid: u32,
    pub tid: u32,
    pub fd: i32,
    /// [`AF_INET`] or [`AF_INET6`]; IPv4 addresses sit in the first 4 bytes.
    pub family: u16,
    /// Host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    /// One of [`role`].
    pub role: u8,
    pub _pad: u8,
    /// Inode number of the socket's network namespace (`ls -i /proc/PID/ns/net`); 0 if unknown.
    pub netns: u32,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// Executable name (task comm), NUL padded.
    pub comm: [u8; 16],
}
crate::assert_size!(ConnEvent, 104);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnState {}
    unsafe impl aya::Pod for super::ConnEvent {}
}
