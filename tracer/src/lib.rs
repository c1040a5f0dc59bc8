//! `tracer`: zero-instrumentation distributed tracing from eBPF socket capture.
//!
//! The agent is a one-way pipeline (see docs/pipeline.md): ring buffer -> connections
//! (reassembly and protocol parsing) -> span building -> trace linking -> export.

pub mod alloc;
pub mod app;
pub mod cli;
pub mod clock;
pub mod conn;
pub mod context;
pub mod ebpf;
pub mod export;
pub mod hash;
pub mod lean;
pub mod pipeline;
pub mod process;
pub mod protocol;
pub mod span;
pub mod stats;
