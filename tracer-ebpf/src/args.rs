//! Syscall arguments saved at entry for the matching exit.

/// Where the syscall's bytes are in user memory.
pub mod src {
    /// A plain buffer: `ptr`, `len`.
    pub const BUF: u8 = 0;
    /// An iovec array: `ptr`, `len` entries.
    pub const IOV: u8 = 1;
    /// A `struct user_msghdr` at `ptr`.
    pub const MSG: u8 = 2;
    /// No bytes visible (sendfile) or not a data syscall (connect).
    pub const NONE: u8 = 3;
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Args {
    pub ts_enter: u64,
    pub ptr: u64,
    pub len: u64,
    pub fd: i32,
    /// One of [`src`].
    pub src: u8,
    /// `tracer_common::data::syscall`.
    pub syscall: u8,
    /// `tracer_common::data::direction`.
    pub direction: u8,
    pub _pad: u8,
}
