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
