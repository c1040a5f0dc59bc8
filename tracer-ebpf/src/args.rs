//! Syscall arguments saved at entry for the matching exit (shared with the agent, which seeds
//! entries for reads already in flight at attach time).

pub use tracer_common::args::{src, ArgSlot, Args};
