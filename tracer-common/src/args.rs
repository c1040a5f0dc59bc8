//! Syscall arguments saved at entry for the matching exit (`ARGS`, keyed by pid_tgid).
//!
//! The agent also writes entries itself, for threads already blocked in a read when the programs
//! were attached (their entry was never seen).

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

/// Bits of [`Args::flags`].
pub mod flags {
    /// A recvmsg on an untraced fd with a control buffer: file descriptors may arrive
    /// (`SCM_RIGHTS`); the exit makes the fd cache forget the numbers they get.
    pub const FDS_MAY_ARRIVE: u8 = 1;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Args {
    /// CLOCK_MONOTONIC at entry (`bpf_ktime_get_ns`).
    pub ts_enter: u64,
    pub ptr: u64,
    pub len: u64,
    pub fd: i32,
    /// One of [`src`].
    pub src: u8,
    /// `crate::data::syscall`.
    pub syscall: u8,
    /// `crate::data::direction`.
    pub direction: u8,
    /// Bits of [`flags`].
    pub flags: u8,
    /// The connection (see `crate::conn::FdEntry::sock`), found at entry so the exit does not
    /// look it up again; 0 when unknown (entries written by the agent).
    pub sock: u64,
}
crate::assert_size!(Args, 40);

/// Slots of `ARG_SLOTS` (a power of two): a thread's entry goes to slot `tid % ARG_SLOTS`.
pub const ARG_SLOTS: u32 = 1 << 16;

/// One slot of `ARG_SLOTS`, the fast home of a thread's saved arguments: an array slot is
/// written and read in place, where a hash insert and delete per syscall cost more than the rest
/// of the capture. A slot that another thread holds (same `tid % ARG_SLOTS`, inside a syscall at
/// the same time) sends the entry to the `ARGS` hash instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ArgSlot {
    /// The thread whose syscall is under way; 0 when free.
    pub tid: u32,
    pub _pad: u32,
    pub args: Args,
}
crate::assert_size!(ArgSlot, 48);

/// Value of `ARG_SPILL` (one per slot of `ARG_SLOTS`): non-zero once an entry of a thread of
/// that slot went to the `ARGS` hash (the slot was taken, or the agent seeded it). An exit whose
/// thread does not hold its slot looks in the hash only then: most exits are of syscalls whose
/// entry saved nothing (files, untraced sockets), and a hash lookup that misses cost them more
/// than the rest of the exit. It is never cleared: clearing it races with the next entry that
/// spills (the kernel has no atomic read-modify-write here), and a slot that always looks costs
/// no more than every slot did.
pub const SPILLED: u8 = 1;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), every bit pattern valid.
    unsafe impl aya::Pod for super::Args {}
}
