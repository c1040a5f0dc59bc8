//! The header every ring-buffer record starts with.

/// Stable kind ids: never renumber, only add.
pub mod kind {
    pub const CONN_OPEN: u32 = 1;
    pub const CONN_CLOSE: u32 = 2;
    pub const DATA: u32 = 3;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    pub _pad: u32,
}
crate::assert_size!(EventHeader, 8);

/// When the agent is woken for new records. Waking the reader for every record cost more than
/// capturing it (an irq_work and a thread wake-up per syscall), so data records wake it once per
/// this many bytes written; the agent also polls every [`POLL_INTERVAL_MS`], which bounds the
/// delay of a trickle.
pub const WAKEUP_BYTES: u64 = 128 * 1024;
/// How often the agent drains the ring buffer without being woken.
pub const POLL_INTERVAL_MS: u64 = 20;
