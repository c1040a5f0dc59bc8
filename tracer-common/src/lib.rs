//! Types shared by the kernel programs (`tracer-ebpf`) and the agent (`tracer`).
//!
//! Everything that crosses the boundary is `#[repr(C)]`, `Copy`, explicitly padded, free of
//! `bool`/`Option`, and size-checked at compile time. Map, program and global names are consts
//! here so that neither side types them twice.
#![no_std]

pub mod args;
pub mod classify;
pub mod config;
pub mod conn;
pub mod data;
pub mod event;
pub mod inject;
pub mod names;
pub mod offsets;
pub mod stats;

/// Compile-time size check for boundary types.
#[macro_export]
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}
