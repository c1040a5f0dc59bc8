//! Load-time configuration of the kernel programs (a read-only global).

/// Bits of [`Config::filters`].
pub mod filter {
    pub const PID: u32 = 1;
    pub const COMM: u32 = 2;
    pub const CGROUP: u32 = 4;
    pub const PORT: u32 = 8;
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The agent's own process: never traced (its exports would trace themselves).
    pub self_tgid: u32,
    /// Bytes captured per syscall, at most [`crate::data::MAX_CAPTURE`].
    pub capture_bytes: u32,
    /// Which filter maps are active (bits of [`filter`]).
    pub filters: u32,
    /// Segments sniffed on a connection that predates the tracer before giving up.
    pub sniff_budget_existing: u32,
    /// Non-zero when trace context is injected into outgoing requests.
    pub inject: u32,
    /// Protocols whose connections are captured (bits of `crate::classify::Protocol::bit`);
    /// connections of other protocols cost one map lookup per syscall once classified.
    pub protocols: u32,
}
crate::assert_size!(Config, 24);

impl Config {
    pub const fn default_const() -> Self {
        Self {
            self_tgid: 0,
            capture_bytes: crate::data::DEFAULT_CAPTURE,
            filters: 0,
            sniff_budget_existing: 16,
            inject: 0,
            protocols: 0,
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, repr(C), every bit pattern valid.
    unsafe impl aya::Pod for super::Config {}
}
