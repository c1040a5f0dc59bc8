//! The agent's own counters, shared by the stages (no global state: passed as `Arc<Stats>`).
//! Every drop is counted here and shown in the exit summary and on /metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::protocol::ParseError;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down (queue depth, table size).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Ring-buffer records read, by kind.
    pub events_data: Counter,
    pub events_conn_open: Counter,
    pub events_conn_close: Counter,
    pub events_malformed: Counter,
    pub bytes_captured: Counter,
    /// Data for a connection whose open record never arrived (lost or evicted).
    pub data_unknown_conn: Counter,
    pub spans: Counter,
    /// Parse errors by kind (index: position in `ParseError::ALL`).
    pub parse_errors: [Counter; ParseError::ALL.len()],
    /// Connections dropped from the table because it was full (LRU) or idle.
    pub conns_evicted_lru: Counter,
    pub conns_expired_idle: Counter,
    pub conns_active: Gauge,
    /// Requests reported without a response (timeout or close).
    pub requests_unanswered: Counter,
    /// Exchanges reported with a head not wholly seen (`tracer.truncated`).
    pub exchanges_truncated: Counter,
    /// Requests still waiting for their response when their connection was dropped from the
    /// table (LRU or idle): not reported (the connection is picked up again at its next syscall,
    /// so their answers were not missing).
    pub requests_dropped_evicted: Counter,
    /// Connections no longer captured because the agent fell behind the kernel
    /// (`pipeline::shed`), their records discarded on arrival, and their requests dropped
    /// while waiting; the overload level now (0: none shed).
    pub conns_shed: Counter,
    pub records_shed: Counter,
    pub requests_shed: Counter,
    pub shed_level: Gauge,
    /// Spans released without their expected parent (it never came within the hold bound).
    pub link_timeouts: Gauge,
    /// Kernel counters (ring-buffer losses...), refreshed periodically, by `tracer_common::stats` id.
    pub kernel: [Gauge; tracer_common::stats::COUNT as usize],
}

impl Stats {
    pub fn parse_error(&self, e: ParseError) -> &Counter {
        let i = ParseError::ALL.iter().position(|x| *x == e).unwrap_or(0);
        &self.parse_errors[i]
    }

    pub fn kernel(&self, id: u32) -> u64 {
        self.kernel.get(id as usize).map_or(0, Gauge::get)
    }
}
