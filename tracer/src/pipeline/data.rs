//! The data thread: ring buffer -> conns -> spans -> link, one stage after the other on one
//! thread (records are parsed in the ring buffer's memory; each exchange parsed from a batch of
//! records is built into its span and linked at once); then the bounded `link_to_export` channel
//! to the export thread. Four tasks on a runtime cost a wake-up and a cache-cold hand-off per
//! batch and stage, and on a busy host those switches also took CPU from the traced programs.

use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use aya::maps::{MapData, RingBuf};
use rand::rngs::StdRng;
use tokio::sync::mpsc;

use super::{
    conns::ConnsStage,
    link::Linker,
    ringbuf, shed,
    spans::{self, SpanOptions},
    Parsed, SpanRef, BATCH,
};
use crate::{clock::Clock, span::SpanRecord, stats::Stats};

/// How often the conns stage looks for requests waiting too long and idle connections.
const CONNS_TICK_NS: u64 = 250_000_000;
/// How often the linker releases spans whose parent did not come in time.
const LINK_TICK_NS: u64 = 100_000_000;
/// After this long without records, the memory freed since the last burst goes back to the
/// system (see `alloc::trim`).
const QUIET_NS: u64 = 1_000_000_000;

/// Everything the data thread owns.
pub struct DataThread {
    pub ring: RingBuf<MapData>,
    /// The ring buffer's data bytes.
    pub ring_bytes: u64,
    /// How full the ring buffer is (set by `run`).
    pub fill: Option<ringbuf::Fill>,
    pub conns: ConnsStage,
    pub linker: Linker<StdRng>,
    pub clock: Clock,
    pub span_opts: SpanOptions,
    pub link_to_export: mpsc::Sender<Vec<SpanRef>>,
    pub stats: Arc<Stats>,
    /// Set by the agent to stop: what the kernel already wrote is drained first.
    pub stop: Arc<AtomicBool>,
}

/// Batches between the stages, reused across rounds.
#[derive(Default)]
struct Buffers {
    parsed: Vec<Parsed>,
    linked: Vec<SpanRecord>,
}

impl DataThread {
    /// Run until stopped; returns the requests still waiting for an answer at exit.
    pub fn run(mut self) -> u64 {
        let mut b = Buffers::default();
        let mut ring_reader = ringbuf::Reader::default();
        self.fill = match ringbuf::Fill::new(self.ring.as_raw_fd(), self.ring_bytes) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!("cannot watch the ring buffer's fill ({e}): no overload shedding");
                None
            }
        };
        let start = Clock::mono_now();
        let (mut conns_tick, mut link_tick) = (start, start);
        let (mut cpu_tick, mut cpu_then) = (start, process_cpu_ns());
        // Since when no record came, and whether memory was given back since.
        let (mut quiet_since, mut trimmed) = (start, true);
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            // Drain everything available (also on stop: what was captured is still reported).
            loop {
                let conns = &mut self.conns;
                let parsed = &mut b.parsed;
                let fill = &self.fill;
                let mut seen = 0;
                let n = ring_reader.drain(&mut self.ring, BATCH, &self.stats, |ev| {
                    conns.handle(ev, parsed);
                    seen += 1;
                    if seen % shed::FILL_EVERY == 0 {
                        if let Some(f) = fill {
                            conns.observe_fill(f.used(), Clock::mono_now());
                        }
                    }
                });
                if n == 0 {
                    break;
                }
                let now = Clock::mono_now();
                (quiet_since, trimmed) = (now, false);
                if !self.forward(&mut b, now) {
                    return 0;
                }
            }
            let now = Clock::mono_now();
            if now.saturating_sub(conns_tick) >= CONNS_TICK_NS {
                conns_tick = now;
                self.conns.tick(now, &mut b.parsed);
            }
            if now.saturating_sub(cpu_tick) >= shed::CPU_WINDOW_NS {
                let cpu = process_cpu_ns();
                let cores =
                    cpu.saturating_sub(cpu_then) as f64 / now.saturating_sub(cpu_tick) as f64;
                (cpu_tick, cpu_then) = (now, cpu);
                // Not in the first second: start-up work (the first reads of /proc, the
                // connections already open) is not what traffic costs.
                if now.saturating_sub(start) >= shed::CPU_SETTLE_NS {
                    self.conns.observe_cpu(cores, now);
                }
            }
            if now.saturating_sub(link_tick) >= LINK_TICK_NS {
                link_tick = now;
                self.linker.expire(now, &mut b.linked);
            }
            if !self.forward(&mut b, now) {
                return 0;
            }
            if !trimmed && now.saturating_sub(quiet_since) >= QUIET_NS {
                trimmed = true;
                crate::alloc::trim();
            }
            if stopping {
                break;
            }
            wait_readable(&self.ring);
        }
        self.linker.flush(&mut b.linked);
        self.stats.link_timeouts.set(self.linker.timed_out);
        self.export(&mut b.linked);
        self.conns.pending_at_exit()
    }

    /// Parsed exchanges to spans, spans through the linker, linked spans to the exporters.
    /// False once the export thread is gone.
    fn forward(&mut self, b: &mut Buffers, now: u64) -> bool {
        for p in b.parsed.drain(..) {
            let span = spans::build(&p, &self.clock, self.span_opts);
            self.linker.link(span, now, &mut b.linked);
        }
        self.stats.link_timeouts.set(self.linker.timed_out);
        self.export(&mut b.linked)
    }

    fn export(&mut self, linked: &mut Vec<SpanRecord>) -> bool {
        while !linked.is_empty() {
            let n = linked.len().min(BATCH);
            let refs: Vec<SpanRef> = linked.drain(..n).map(Arc::new).collect();
            // Back-pressure: a full channel holds this thread back, and meanwhile the ring
            // buffer fills: the overload shedding looks at it before the wait.
            match self.link_to_export.try_send(refs) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if let Some(f) = &self.fill {
                        self.conns.observe_fill(f.used(), Clock::mono_now());
                    }
                    if self.link_to_export.blocking_send(back).is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// CPU time used by the agent's threads so far, in ns.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: one valid timespec for the call to fill; the clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleep until the kernel wakes the ring buffer's readers (it does so only once enough data
/// waits: `tracer_common::event::WAKEUP_BYTES`) or the poll interval passes.
fn wait_readable(ring: &RingBuf<MapData>) {
    let mut pfd = libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call. An error (EINTR) just ends the
    // wait early, like the timeout.
    unsafe {
        libc::poll(
            &mut pfd,
            1,
            tracer_common::event::POLL_INTERVAL_MS as libc::c_int,
        )
    };
}
