#![no_std]
// The programs live in the `tracer-probes` binary; this library only lets the agent's build
// script depend on this crate so that cargo rebuilds it on change.
